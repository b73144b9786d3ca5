/* Matrix products with cuBLAS, row-major as model/backend.h states them. cuBLAS is column-major:
 * a row-major (R, C) matrix is a column-major C x R matrix with leading dimension C, so
 *   out (N, O) = inp (N, I) @ w (O, I)^T   is   out_cm (O x N) = w_cm^T (O x I) . inp_cm (I x N)
 *   dinp (N, I) = dout (N, O) @ w (O, I)    is   dinp_cm (I x N) = w_cm (I x O) . dout_cm (O x N)
 *   dw (O, I) += dout^T @ inp               is   dw_cm (I x O) += inp_cm (I x N) . dout_cm^T
 * Storage is fp32 throughout; the compute type is fp32 (CUBLAS_COMPUTE_32F: no TF32) or, with
 * train.precision bf16, CUBLAS_COMPUTE_32F_FAST_16BF: inputs rounded to bf16 on the tensor
 * cores, products accumulated in fp32. */
#include <cublas_v2.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

static cublasHandle_t g_cublas;
static cublasComputeType_t g_compute = CUBLAS_COMPUTE_32F;

static void cublas_check(cublasStatus_t s, const char *what, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    fprintf(stderr, "difftrain: error: cuBLAS: %s failed at %s:%d: %s (%d)\n", what, file, line,
            cublasGetStatusString(s), (int)s);
    fflush(stderr);
    abort();
}
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)

int cuda_matmul_init(int bf16) {
    g_compute = bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
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
    CUBLAS_CHECK(cublasGemmEx(g_cublas, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F,
                              ldb, &beta, C, CUDA_R_32F, ldc, g_compute, CUBLAS_GEMM_DEFAULT));
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
