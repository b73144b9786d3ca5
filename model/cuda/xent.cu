/* Cross-entropy over rows of V logits on the CUDA backend, plain and vocabulary-parallel (the
 * CPU oracle is model/cpu/xent.c). Target convention as there: t < 0 ignores the row (loss 0,
 * zero gradient); t >= V means "the target lies in another slice" (no target term).
 *
 * Row ops run one block per row (grid-stride over rows; V up to ~130k, so each thread walks a
 * few hundred strided, coalesced elements). The exp sums are accumulated in double and reduced
 * in a fixed tree, the row maximum is exact, and the logsumexp is formed in double: lse and the
 * losses agree with the CPU to ~1 ulp (CUDA's expf is within 2 ulp of glibc's). Row offsets are
 * size_t: N * V reaches 8e8 and more. */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

#define XENT_THREADS 512

/* max over the row; every thread of the block gets it (block_max: contains __syncthreads) */
static __device__ float xent_row_max(const float *x, int V, float *scratch) {
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) mx = x[i] > mx ? x[i] : mx;
    return block_max(mx, scratch);
}

/* sum over the row of exp(x - mx), in double; every thread gets it */
static __device__ double xent_row_sumexp(const float *x, int V, float mx, double *scratch) {
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += (double)expf(x[i] - mx);
    return block_sum(s, scratch);
}

static __global__ void xent_forward_kernel(float *losses, float *lse, const float *logits,
                                           const int32_t *targets, int N, int V) {
    __shared__ float scratch_f[32];
    __shared__ double scratch_d[32];
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *x = logits + (size_t)n * V; /* (V) */
        float mx = xent_row_max(x, V, scratch_f);
        double sum = xent_row_sumexp(x, V, mx, scratch_d);
        if (threadIdx.x == 0) {
            double l = (double)mx + log(sum);
            /* lse is kept for every row, ignored or not (as on the CPU) */
            lse[n] = (float)l;
            int32_t t = targets[n];
            if (t < 0)
                losses[n] = 0.0f;
            else if (t >= V)
                losses[n] = (float)l;
            else
                losses[n] = (float)(l - x[t]);
        }
    }
}

/* dlogits may alias logits: each element is read and then written by the same thread, and the
 * target's -dloss is applied by that thread too. __fmul_rn keeps the product a separate
 * rounding, as on the CPU (which stores it before subtracting dloss), instead of letting the
 * compiler fuse it with the subtraction. */
static __global__ void xent_backward_kernel(float *dlogits, const float *logits, const float *lse,
                                            const int32_t *targets, float dloss, int N, int V) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        float *dx = dlogits + (size_t)n * V;     /* (V) */
        const float *x = logits + (size_t)n * V; /* (V) */
        int32_t t = targets[n];
        if (t < 0) {
            for (int i = threadIdx.x; i < V; i += blockDim.x) dx[i] = 0.0f;
            continue;
        }
        float l = lse[n];
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            float p = __fmul_rn(dloss, expf(x[i] - l));
            if (i == t) p -= dloss;
            dx[i] = p;
        }
    }
}

static __global__ void xent_vp_max_kernel(float *rowmax, const float *logits, int N, int V) {
    __shared__ float scratch[32];
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        float mx = xent_row_max(logits + (size_t)n * V, V, scratch);
        if (threadIdx.x == 0) rowmax[n] = mx;
    }
}

static __global__ void xent_vp_sums_kernel(float *sums, const float *logits, const float *rowmax,
                                           const int32_t *targets, int N, int V) {
    __shared__ double scratch[32];
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *x = logits + (size_t)n * V; /* (V) */
        double sum = xent_row_sumexp(x, V, rowmax[n], scratch);
        if (threadIdx.x == 0) {
            int32_t t = targets[n];
            sums[2 * (size_t)n] = (float)sum;
            sums[2 * (size_t)n + 1] = t >= 0 && t < V ? x[t] : 0.0f;
        }
    }
}

/* Elementwise over rows (one thread per row). */
static __global__ void xent_vp_finish_kernel(float *losses, float *lse, const float *rowmax,
                                             const float *sums, const int32_t *targets, int N) {
    for (int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; n < N;
         n += (int64_t)gridDim.x * blockDim.x) {
        double l = (double)rowmax[n] + log((double)sums[2 * (size_t)n]);
        lse[n] = (float)l;
        losses[n] = targets[n] < 0 ? 0.0f : (float)(l - sums[2 * (size_t)n + 1]);
    }
}

extern "C" void cuda_xent_forward(float *losses, float *lse, const float *logits,
                                  const int32_t *targets, int N, int V) {
    if (N <= 0) return;
    xent_forward_kernel<<<cuda_blocks((size_t)N, 1), XENT_THREADS, 0, cuda_stream()>>>(
        losses, lse, logits, targets, N, V);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_xent_backward(float *dlogits, const float *logits, const float *lse,
                                   const int32_t *targets, float dloss, int N, int V) {
    if (N <= 0 || V <= 0) return;
    xent_backward_kernel<<<cuda_blocks((size_t)N, 1), XENT_THREADS, 0, cuda_stream()>>>(
        dlogits, logits, lse, targets, dloss, N, V);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_xent_vp_max(float *rowmax, const float *logits, int N, int V) {
    if (N <= 0) return;
    xent_vp_max_kernel<<<cuda_blocks((size_t)N, 1), XENT_THREADS, 0, cuda_stream()>>>(rowmax,
                                                                                      logits, N, V);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_xent_vp_sums(float *sums, const float *logits, const float *rowmax,
                                  const int32_t *targets, int N, int V) {
    if (N <= 0) return;
    xent_vp_sums_kernel<<<cuda_blocks((size_t)N, 1), XENT_THREADS, 0, cuda_stream()>>>(
        sums, logits, rowmax, targets, N, V);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_xent_vp_finish(float *losses, float *lse, const float *rowmax,
                                    const float *sums, const int32_t *targets, int N) {
    if (N <= 0) return;
    xent_vp_finish_kernel<<<cuda_blocks((size_t)N, 256), 256, 0, cuda_stream()>>>(
        losses, lse, rowmax, sums, targets, N);
    CUDA_LAUNCH_CHECK();
}
