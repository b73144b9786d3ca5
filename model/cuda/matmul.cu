/* Matrix products with cuBLAS, row-major as model/backend.h states them. cuBLAS is column-major:
 * a row-major (R, C) matrix is a column-major C x R matrix with leading dimension C, so
 *   out (N, O) = inp (N, I) @ w (O, I)^T   is   out_cm (O x N) = w_cm^T (O x I) . inp_cm (I x N)
 *   dinp (N, I) = dout (N, O) @ w (O, I)    is   dinp_cm (I x N) = w_cm (I x O) . dout_cm (O x N)
 *   dw (O, I) += dout^T @ inp               is   dw_cm (I x O) += inp_cm (I x N) . dout_cm^T
 * Outputs are fp32, except cuda_matmul_forward_operand's, a dt_operand: in bf16 mode cuBLAS
 * writes it in bf16 itself (a CUDA_R_16BF C: the fp32 accumulation rounded once to nearest even,
 * no fp32 round trip through memory). fp32 products use CUBLAS_COMPUTE_32F (no TF32). Under
 * train.precision bf16 cuBLAS multiplies bf16 operands on the tensor cores with fp32
 * accumulation: the activation input `inp` is a dt_operand, already stored in bf16 in that mode
 * (operand.cuh), and is read as it is; the weights w are read from their bf16 copies prepared
 * for the forward (weight_copies.cu) where there is one; otherwise w, and the fp32 output
 * gradient dout, are rounded to bf16 (round to nearest even) into the CUDA_WS_GEMM workspace
 * first (the same bits: both round to nearest even), except cuda_matmul_backward_operand's
 * dout, an operand that its producer stored (the classifier's dlogits, the residual gradient's
 * copy, SwiGLU's dg and du, RoPE's dq and dk, the attention's dv), read as it is too.
 * (CUBLAS_COMPUTE_32F_FAST_16BF on the fp32 buffers, which this replaced, ran TF32 kernels on an
 * H100: half the bf16 rate, and not the rounding it names.) Those copies cost a read of each
 * operand and a write of half its size, at memory bandwidth; with the activations' copies they
 * took 43 ms of a 359 ms 830M step on an H100, beside 125 ms of products
 * (docs/gpu-performance.md). */
#include <cublas_v2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

extern "C" {
#include "model/params.h" /* param_product_copy_size */
}

static cublasHandle_t g_cublas;
/* cuBLAS's scratch memory, owned here rather than drawn from its pool on demand: a product
 * captured into a CUDA graph (graph.cu) must not allocate. 32 MiB is what cuBLAS recommends on
 * Hopper, more than enough before it. */
#define CUBLAS_WORKSPACE_BYTES (32u << 20)
static void *g_cublas_ws;
static int g_bf16; /* bf16 products: bf16 operands (inp), bf16 copies of w and dout */

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
    cuda_weights_drop(); /* the mode may change: none are left from the other */
    if (g_cublas) return 0;
    cublasStatus_t s = cublasCreate(&g_cublas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(g_cublas, cuda_stream());
    /* fp32 products stay fp32: no silent TF32 */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(g_cublas, CUBLAS_DEFAULT_MATH);
    /* after cublasSetStream, which resets the workspace to the pool */
    if (s == CUBLAS_STATUS_SUCCESS) { /* cuBLAS's own memory: not the backend's count */
        if (cudaMalloc(&g_cublas_ws, CUBLAS_WORKSPACE_BYTES) != cudaSuccess) {
            (void)cudaGetLastError();
            g_cublas_ws = NULL;
        }
        s = g_cublas_ws ? cublasSetWorkspace(g_cublas, g_cublas_ws, CUBLAS_WORKSPACE_BYTES)
                        : CUBLAS_STATUS_ALLOC_FAILED;
    }
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "difftrain: error: cuBLAS: cannot create a handle: %s\n",
                cublasGetStatusString(s));
        if (g_cublas) cublasDestroy(g_cublas);
        g_cublas = NULL;
        if (g_cublas_ws) (void)cudaFree(g_cublas_ws);
        g_cublas_ws = NULL;
        return -1;
    }
    return 0;
}

void cuda_matmul_shutdown(void) {
    if (g_cublas) cublasDestroy(g_cublas);
    g_cublas = NULL;
    if (g_cublas_ws) (void)cudaFree(g_cublas_ws); /* after the device is idle (backend_cuda) */
    g_cublas_ws = NULL;
}

/* Elements spanned by a column-major rows x cols matrix with leading dimension ld. */
static size_t span(int rows, int cols, int ld) {
    return rows && cols ? (size_t)(cols - 1) * (size_t)ld + (size_t)rows : 0;
}

/* bf16 copies of the n <= MATMUL_MAX_OPERANDS operands x[i] (counts[i] elements each; NULL or 0:
 * none), side by side in the CUDA_WS_GEMM workspace at 256-byte offsets: out[i]. */
#define MATMUL_MAX_OPERANDS 2
static void to_bf16_operands(uint16_t **out, const float *const *x, const size_t *counts, int n) {
    size_t off[MATMUL_MAX_OPERANDS], total = 0;
    for (int i = 0; i < n; i++) {
        off[i] = total;
        total += param_product_copy_size(counts[i]); /* as the prepared copies lie */
    }
    char *ws = (char *)cuda_workspace_slot(CUDA_WS_GEMM, total);
    for (int i = 0; i < n; i++) out[i] = (uint16_t *)(ws + off[i]);
    if (!cuda_bf16_copies(out, x, counts, n)) { /* 4e12 elements: no product is that large */
        fprintf(stderr, "difftrain: error: CUDA: a product operand too large to round to bf16\n");
        abort();
    }
}

/* C (m x n, ldc) = op(A) op(B) + beta C, column-major, A and B of element type `type` (fp32
 * with fp32 products, or the bf16 copies), C of element type ctype (CUDA_R_32F, or CUDA_R_16BF
 * for a bf16 operand: only with bf16 A and B, and beta 0) */
static void gemm_c(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A,
                   int lda, const void *B, int ldb, float beta, void *C, cudaDataType ctype,
                   int ldc) {
    const float one = 1.0f;
    if (m == 0 || n == 0) return;
    const size_t c_bytes = ctype == CUDA_R_16BF ? sizeof(uint16_t) : sizeof(float);
    if (k == 0) { /* C = beta C: cuBLAS handles it, but keep the rule explicit */
        if (beta == 0.0f) CUDA_CHECK(cudaMemset2DAsync(C, (size_t)ldc * c_bytes, 0,
                                                       (size_t)m * c_bytes, (size_t)n,
                                                       cuda_stream()));
        return;
    }
    const cudaDataType type = g_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    CUBLAS_CHECK(cublasGemmEx(g_cublas, ta, tb, m, n, k, &one, A, type, lda, B, type, ldb, &beta,
                              C, ctype, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A,
                 int lda, const void *B, int ldb, float beta, float *C, int ldc) {
    gemm_c(ta, tb, m, n, k, A, lda, B, ldb, beta, C, CUDA_R_32F, ldc);
}

/* The operands as the products read them: the fp32 buffers themselves, or (bf16 products) inp
 * as it is (a bf16 operand), w's prepared copy or a bf16 copy made here, and a bf16 copy of
 * dout, each converted once per call even when two products read it. forward_weight: w as a
 * forward product reads it. */
static const void *forward_weight(const float *w, int N, int I, int O) {
    if (!g_bf16 || N <= 0 || O <= 0 || I <= 0) return w;
    const void *prepared = cuda_weights_bf16(w, span(I, O, I));
    if (prepared) return prepared;
    uint16_t *c[1];
    const float *x[1] = {w};
    const size_t n[1] = {span(I, O, I)};
    to_bf16_operands(c, x, n, 1);
    return c[0];
}

void cuda_matmul_forward(float *out, const dt_operand *inp, const float *w, int N, int I, int O,
                         int accumulate) {
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, forward_weight(w, N, I, O), I, inp, I,
         accumulate ? 1.0f : 0.0f, out, O);
}

/* The same product stored as an operand: fp32 mode, the fp32 product; bf16 mode, C in bf16
 * (cuBLAS rounds the fp32 accumulation once, to nearest even): no fp32 copy of the product is
 * written or read back. */
void cuda_matmul_forward_operand(dt_operand *out, const dt_operand *inp, const float *w, int N,
                                 int I, int O) {
    gemm_c(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, forward_weight(w, N, I, O), I, inp, I, 0.0f, out,
           g_bf16 ? CUDA_R_16BF : CUDA_R_32F, O);
}

/* The backward's two products. dout is DY as the products read it (fp32, or a bf16 operand in
 * bf16 mode; its rows ldy elements apart), or, when dout_f32 is not NULL (dense, ldy = O), that
 * fp32 dout's bf16 copy in bf16 mode. In bf16 mode the dinp product also reads a bf16 copy of w:
 * the prepared one, else one made here; copies made here come from one to_bf16_operands call,
 * as they share its workspace. */
static void backward_products(float *dinp, float *dw, const float *dout_f32, const void *DY,
                              int ldy, const dt_operand *inp, const float *w, int N, int I, int O,
                              int accumulate_dinp) {
    const void *W = w;
    if (g_bf16 && N > 0 && O > 0 && I > 0) {
        const void *prepared = dinp ? cuda_weights_bf16(w, span(I, O, I)) : NULL;
        const bool copy_w = dinp && !prepared;
        uint16_t *c[2];
        const float *x[2] = {dout_f32, copy_w ? w : NULL};
        const size_t n[2] = {dout_f32 ? span(O, N, O) : 0, copy_w ? span(I, O, I) : 0};
        if (dout_f32 || copy_w) to_bf16_operands(c, x, n, 2);
        if (dout_f32) DY = c[0];
        if (dinp) W = copy_w ? c[1] : prepared;
    }
    if (dinp)
        gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, DY, ldy, accumulate_dinp ? 1.0f : 0.0f,
             dinp, I);
    if (dw) gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, inp, I, DY, ldy, 1.0f, dw, I);
}

void cuda_matmul_backward(float *dinp, float *dw, const float *dout, const dt_operand *inp,
                          const float *w, int N, int I, int O, int accumulate_dinp) {
    backward_products(dinp, dw, dout, dout, O, inp, w, N, I, O, accumulate_dinp);
}

/* The same with dout an operand (rows ldd elements apart): in bf16 mode it is already the bf16
 * that the products read (the rounding cuda_matmul_backward makes of an fp32 dout), so no copy
 * of it is made; in fp32 mode it is the fp32 dout itself. */
void cuda_matmul_backward_operand(float *dinp, float *dw, const dt_operand *dout, int ldd,
                                  const dt_operand *inp, const float *w, int N, int I, int O,
                                  int accumulate_dinp) {
    backward_products(dinp, dw, NULL, dout, ldd, inp, w, N, I, O, accumulate_dinp);
}
