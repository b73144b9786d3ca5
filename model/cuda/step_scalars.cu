/* The training step's scalars on the CUDA backend (model/backend.h; the CPU oracle is
 * model/cpu/step_scalars.c): a micro-batch's mean loss added into the step's device double, and
 * the clipping factor computed from the reduced sums on the device, so that the step never reads
 * them back before its end. */
#include <math.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

/* One block: each thread sums a fixed stride of rows in double, then the block's fixed tree
 * (block_sum); the order depends only on N, so reruns give the same bits. The CPU sums the rows
 * in order instead: the two agree to the double rounding of N terms, far below the float
 * rounding of the mean. */
#define LOSS_THREADS 256

static __global__ void loss_accumulate_kernel(double *acc, const float *losses, int N,
                                              const int32_t *n_targets_p) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) s += losses[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        const int n_targets = *n_targets_p;
        float mean = n_targets ? (float)(s / n_targets) : 0.0f;
        *acc += (double)mean;
    }
}

extern "C" void cuda_loss_accumulate(double *acc, const float *losses, int N,
                                     const int32_t *n_targets) {
    if (N <= 0) return;
    loss_accumulate_kernel<<<1, LOSS_THREADS, 0, cuda_stream()>>>(acc, losses, N, n_targets);
    CUDA_LAUNCH_CHECK();
}

/* One thread: IEEE double sqrt and division, so the factor is the CPU's to the bit for the same
 * sums. NaN marks a refused step (adamw_kernel skips it). */
static __global__ void clip_scale_kernel(float *grad_scale, const double *sumsq,
                                         const double *loss_sum, double max_norm) {
    double ss = *sumsq, ls = *loss_sum;
    if (!isfinite(ss) || !isfinite(ls)) {
        *grad_scale = NAN;
        return;
    }
    double norm = sqrt(ss);
    *grad_scale = max_norm > 0 && norm > max_norm ? (float)(max_norm / norm) : 1.0f;
}

extern "C" void cuda_clip_scale(float *grad_scale, const double *sumsq, const double *loss_sum,
                                double max_norm) {
    clip_scale_kernel<<<1, 1, 0, cuda_stream()>>>(grad_scale, sumsq, loss_sum, max_norm);
    CUDA_LAUNCH_CHECK();
}
