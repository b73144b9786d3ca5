/* The DIFF V1 lambda reparameterisation on the CUDA backend (SPEC sections 2 and 3; the CPU
 * oracle is model/cpu/difflambda.c): lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init.
 * One scalar per layer from vectors of length d (a head width, <= 256), so each op is a single
 * block; lambda and dlambda stay in device memory (no host round trip). The dot products are
 * accumulated in double, as on the CPU (the exp amplifies any error of the exponent). */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

#define DIFFLAMBDA_THREADS 256

/* a . b over the block, in double; every thread gets it. Any d works (strided loop). */
static __device__ double difflambda_dot(const float *a, const float *b, int d, double *scratch) {
    double s = 0.0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += (double)a[i] * b[i];
    return block_sum(s, scratch);
}

static __global__ void difflambda_forward_kernel(float *lambda, const float *lq1, const float *lk1,
                                                 const float *lq2, const float *lk2,
                                                 float lambda_init, int d) {
    __shared__ double scratch[32];
    double a1 = difflambda_dot(lq1, lk1, d, scratch);
    double a2 = difflambda_dot(lq2, lk2, d, scratch);
    if (threadIdx.x == 0) *lambda = (float)(exp(a1) - exp(a2) + (double)lambda_init);
}

/* dlambda/da1 = e^{a1}, dlambda/da2 = -e^{a2}; da1/dlq1 = lk1, and so on. */
static __global__ void difflambda_backward_kernel(float *dlq1, float *dlk1, float *dlq2,
                                                  float *dlk2, const float *dlambda,
                                                  const float *lq1, const float *lk1,
                                                  const float *lq2, const float *lk2, int d) {
    __shared__ double scratch[32];
    double dl = *dlambda;
    double g1 = dl * exp(difflambda_dot(lq1, lk1, d, scratch));
    double g2 = -dl * exp(difflambda_dot(lq2, lk2, d, scratch));
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        dlq1[i] += (float)(g1 * lk1[i]);
        dlk1[i] += (float)(g1 * lq1[i]);
        dlq2[i] += (float)(g2 * lk2[i]);
        dlk2[i] += (float)(g2 * lq2[i]);
    }
}

extern "C" void cuda_difflambda_forward(float *lambda, const float *lq1, const float *lk1,
                                        const float *lq2, const float *lk2, float lambda_init,
                                        int d) {
    difflambda_forward_kernel<<<1, DIFFLAMBDA_THREADS, 0, cuda_stream()>>>(lambda, lq1, lk1, lq2,
                                                                           lk2, lambda_init, d);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_difflambda_backward(float *dlq1, float *dlk1, float *dlq2, float *dlk2,
                                         const float *dlambda, const float *lq1, const float *lk1,
                                         const float *lq2, const float *lk2, int d) {
    if (d <= 0) return;
    difflambda_backward_kernel<<<1, DIFFLAMBDA_THREADS, 0, cuda_stream()>>>(
        dlq1, dlk1, dlq2, dlk2, dlambda, lq1, lk1, lq2, lk2, d);
    CUDA_LAUNCH_CHECK();
}
