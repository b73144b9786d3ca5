/* AdamW with decoupled weight decay on the CUDA backend, elementwise over n contiguous elements
 * (the CPU oracle is model/cpu/adamw.c, the formula is in model/backend.h).
 *
 * The kernel reproduces the CPU's float arithmetic operation by operation. The CPU build
 * (-march=native, GCC's default -ffp-contract=fast for GNU C) fuses three multiply-adds of
 * model/cpu/adamw.c into FMAs: beta1 * m + (...), beta2 * v + (...), weight_decay * p + (...),
 * and the final p - lr * (...) (read off the disassembly of adamw.c). The kernel spells each
 * rounding out with the _rn intrinsics, which the compiler never fuses or reorders, so on a host
 * with FMA the two backends agree bit for bit; against a CPU build without FMA they differ by
 * about 1 ulp per step. Division and sqrt are IEEE round-to-nearest on both sides. */
#include <math.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

#define ADAMW_THREADS 256
#define ADAMW_MAX_BLOCKS 65536u

/* bc1 = 1 - beta1^t, bc2 = 1 - beta2^t, computed on the host exactly as the CPU does. */
/* grad_scale is read on the device (clip_scale wrote it: no read-back); a non-finite one is a
 * refused step and leaves params, m and v as they are. */
static __global__ void adamw_kernel(float *params, float *m, float *v, const float *grads, size_t n,
                                    float lr, float beta1, float beta2, float eps,
                                    float weight_decay, const float *grad_scale_p, float bc1,
                                    float bc2) {
    const float grad_scale = *grad_scale_p;
    if (!isfinite(grad_scale)) return;
    const float one_minus_beta1 = 1.0f - beta1, one_minus_beta2 = 1.0f - beta2;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float g = __fmul_rn(grads[i], grad_scale);
        /* mi = beta1 m + (1 - beta1) g;  vi = beta2 v + (1 - beta2) g g */
        float mi = __fmaf_rn(beta1, m[i], __fmul_rn(one_minus_beta1, g));
        float vi = __fmaf_rn(beta2, v[i], __fmul_rn(__fmul_rn(one_minus_beta2, g), g));
        m[i] = mi;
        v[i] = vi;
        float mhat = __fdiv_rn(mi, bc1);
        float vhat = __fdiv_rn(vi, bc2);
        float p = params[i];
        /* p - lr (mhat / (sqrt(vhat) + eps) + wd p): decay uses the parameter before the step */
        float step = __fmaf_rn(weight_decay, p, __fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), eps)));
        params[i] = __fmaf_rn(-lr, step, p);
    }
}

extern "C" void cuda_adamw_update(float *params, float *m, float *v, const float *grads, size_t n,
                                  float lr, float beta1, float beta2, float eps, float weight_decay,
                                  const float *grad_scale, int t) {
    if (n == 0) return;
    cuda_weights_written(params, n * sizeof(float));
    /* Bias corrections in double, once per call, exactly as model/cpu/adamw.c. */
    float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    unsigned blocks = cuda_blocks(n, ADAMW_THREADS);
    if (blocks > ADAMW_MAX_BLOCKS) blocks = ADAMW_MAX_BLOCKS;
    adamw_kernel<<<blocks, ADAMW_THREADS, 0, cuda_stream()>>>(
        params, m, v, grads, n, lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2);
    CUDA_LAUNCH_CHECK();
}
