/* Matrix products with cuBLAS, row-major as model/backend.h states them. cuBLAS is column-major:
 * a row-major (R, C) matrix is a column-major C x R matrix with leading dimension C, so
 *   out (N, O) = inp (N, I) @ w (O, I)^T   is   out_cm (O x N) = w_cm^T (O x I) . inp_cm (I x N)
 *   dinp (N, I) = dout (N, O) @ w (O, I)    is   dinp_cm (I x N) = w_cm (I x O) . dout_cm (O x N)
 *   dw (O, I) += dout^T @ inp               is   dw_cm (I x O) += inp_cm (I x N) . dout_cm^T
 * Storage is fp32 throughout. fp32 products use CUBLAS_COMPUTE_32F (no TF32). Under
 * train.precision bf16 both operands are first rounded to bf16 (round to nearest even) into the
 * CUDA_WS_GEMM workspace, and cuBLAS multiplies the bf16 copies on the tensor cores with fp32
 * accumulation and an fp32 result. (CUBLAS_COMPUTE_32F_FAST_16BF on the fp32 buffers, which this
 * replaced, ran TF32 kernels on an H100: half the bf16 rate, and not the rounding it names.) The
 * copies cost a read of each operand and a write of half its size, small beside the product. */
#include <cublas_v2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/mma.cuh"

static cublasHandle_t g_cublas;
static int g_bf16; /* products of bf16 copies of the operands */

static void cublas_check(cublasStatus_t s, const char *what, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    fprintf(stderr, "difftrain: error: cuBLAS: %s failed at %s:%d: %s (%d)\n", what, file, line,
            cublasGetStatusString(s), (int)s);
    fflush(stderr);
    abort();
}
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)

int cuda_matmul_init(int bf16) {
    g_bf16 = bf16 != 0;
    if (g_cublas) return 0;
    cublasStatus_t s = cublasCreate(&g_cublas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(g_cublas, cuda_stream());
    /* fp32 products stay fp32: no silent TF32 */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(g_cublas, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "difftrain: error: cuBLAS: cannot create a handle: %s\n",
                cublasGetStatusString(s));
        if (g_cublas) cublasDestroy(g_cublas);
        g_cublas = NULL;
        return -1;
    }
    return 0;
}

void cuda_matmul_shutdown(void) {
    if (g_cublas) cublasDestroy(g_cublas);
    g_cublas = NULL;
}

/* dst[i] = bf16(src[i]) for i < n; four elements a thread where src is 16-byte aligned (dst, a
 * workspace offset of a multiple of 8 bytes, then is too). */
__global__ void to_bf16_kernel(uint16_t *dst, const float *src, size_t n, int vec4) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec4) {
        for (; i < n / 4; i += stride) {
            const float4 x = reinterpret_cast<const float4 *>(src)[i];
            reinterpret_cast<uint2 *>(dst)[i] =
                make_uint2(pack_bf16x2(x.x, x.y), pack_bf16x2(x.z, x.w));
        }
        i = 4 * (n / 4) + (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    }
    for (; i < n; i += stride) dst[i] = (uint16_t)(pack_bf16x2(src[i], 0.0f) & 0xffffu);
}

static void to_bf16(uint16_t *dst, const float *src, size_t n) {
    const int vec4 = (uintptr_t)src % 16 == 0 && (uintptr_t)dst % 8 == 0;
    to_bf16_kernel<<<cuda_blocks(vec4 ? n / 4 + 1 : n, 256), 256, 0, cuda_stream()>>>(dst, src, n,
                                                                                     vec4);
    CUDA_LAUNCH_CHECK();
}

/* Elements spanned by a column-major rows x cols matrix with leading dimension ld. */
static size_t span(int rows, int cols, int ld) {
    return rows && cols ? (size_t)(cols - 1) * (size_t)ld + (size_t)rows : 0;
}

static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    const float one = 1.0f;
    if (m == 0 || n == 0) return;
    if (k == 0) { /* C = beta C: cuBLAS handles it, but keep the rule explicit */
        if (beta == 0.0f) CUDA_CHECK(cudaMemset2DAsync(C, (size_t)ldc * sizeof(float), 0,
                                                       (size_t)m * sizeof(float), (size_t)n,
                                                       cuda_stream()));
        return;
    }
    if (!g_bf16) {
        CUBLAS_CHECK(cublasGemmEx(g_cublas, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B,
                                  CUDA_R_32F, ldb, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
        return;
    }
    /* stored shapes: A is m x k (N) or k x m (T), B is k x n (N) or n x k (T) */
    const size_t na = ta == CUBLAS_OP_N ? span(m, k, lda) : span(k, m, lda);
    const size_t nb = tb == CUBLAS_OP_N ? span(k, n, ldb) : span(n, k, ldb);
    const size_t a_bytes = (na * sizeof(uint16_t) + 255) / 256 * 256;
    char *ws = (char *)cuda_workspace_slot(CUDA_WS_GEMM, a_bytes + nb * sizeof(uint16_t));
    uint16_t *A16 = (uint16_t *)ws, *B16 = (uint16_t *)(ws + a_bytes);
    to_bf16(A16, A, na);
    to_bf16(B16, B, nb);
    CUBLAS_CHECK(cublasGemmEx(g_cublas, ta, tb, m, n, k, &one, A16, CUDA_R_16BF, lda, B16,
                              CUDA_R_16BF, ldb, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

void cuda_matmul_forward(float *out, const float *inp, const float *w, int N, int I, int O,
                         int accumulate) {
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w, I, inp, I, accumulate ? 1.0f : 0.0f, out, O);
}

void cuda_matmul_backward(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, int N, int I, int O, int accumulate_dinp) {
    if (dinp)
        gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w, I, dout, O, accumulate_dinp ? 1.0f : 0.0f,
             dinp, I);
    if (dw) gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, inp, I, dout, O, 1.0f, dw, I);
}
