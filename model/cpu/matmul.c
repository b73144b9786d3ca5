/* Linear layers on the CPU: three sgemm calls from OpenBLAS. Weights are (O, I) row-major as in
 * nn.Linear, so the forward multiplies by w^T and the weight gradient is dout^T @ inp. */
#include <cblas.h>
#include <string.h>

/* OpenBLAS's cblas.h pulls in <complex.h>, whose macro I would rename our size argument. */
#undef I

#include "model/cpu/cpu_ops.h"

void cpu_matmul_forward(float *out, const float *inp, const float *w, int N, int I, int O,
                        int accumulate) {
    if (N <= 0 || O <= 0) return;
    if (I <= 0) {
        /* An empty inner dimension gives a zero product; BLAS would reject lda = 0. */
        if (!accumulate) memset(out, 0, (size_t)N * (size_t)O * sizeof(float));
        return;
    }
    /* out (N, O) = inp (N, I) @ w^T (I, O); beta = 0 makes BLAS ignore out's old contents
     * (even NaN), beta = 1 accumulates. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, I, 1.0f, inp, I, w, I,
                accumulate ? 1.0f : 0.0f, out, O);
}

/* dout's rows lie ldd >= O floats apart (the classifier's dlogits keep their logits' stride). */
void cpu_matmul_backward_ld(float *dinp, float *dw, const float *dout, int ldd, const float *inp,
                            const float *w, int N, int I, int O, int accumulate_dinp) {
    if (N <= 0 || I <= 0) return; /* dinp and dw are empty, or receive a zero sum (+= 0) */
    if (dinp) {
        if (O <= 0) {
            if (!accumulate_dinp) memset(dinp, 0, (size_t)N * (size_t)I * sizeof(float));
        } else {
            /* dinp (N, I) = dout (N, O) @ w (O, I) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, I, O, 1.0f, dout, ldd, w,
                        I, accumulate_dinp ? 1.0f : 0.0f, dinp, I);
        }
    }
    if (dw && O > 0) {
        /* dw (O, I) += dout^T (O, N) @ inp (N, I); weight gradients always accumulate so that
         * micro-batches add up. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, N, 1.0f, dout, ldd, inp, I,
                    1.0f, dw, I);
    }
}

void cpu_matmul_backward(float *dinp, float *dw, const float *dout, const float *inp,
                         const float *w, int N, int I, int O, int accumulate_dinp) {
    cpu_matmul_backward_ld(dinp, dw, dout, O, inp, w, N, I, O, accumulate_dinp);
}
