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

/* The step's constants. bc1 = 1 - beta1^t, bc2 = 1 - beta2^t, computed on the host exactly as
 * the CPU does. */
typedef struct adamw_consts {
    float lr, beta1, beta2, eps, weight_decay, bc1, bc2, one_minus_beta1, one_minus_beta2;
} adamw_consts;

/* One element: p, m, v updated in place from the raw gradient g and the clipping factor. */
__device__ __forceinline__ void adamw_element(float *p, float *m, float *v, float g_raw,
                                              float grad_scale, const adamw_consts &c) {
    const float g = __fmul_rn(g_raw, grad_scale);
    /* mi = beta1 m + (1 - beta1) g;  vi = beta2 v + (1 - beta2) g g */
    const float mi = __fmaf_rn(c.beta1, *m, __fmul_rn(c.one_minus_beta1, g));
    const float vi = __fmaf_rn(c.beta2, *v, __fmul_rn(__fmul_rn(c.one_minus_beta2, g), g));
    *m = mi;
    *v = vi;
    const float mhat = __fdiv_rn(mi, c.bc1);
    const float vhat = __fdiv_rn(vi, c.bc2);
    const float p0 = *p;
    /* p - lr (mhat / (sqrt(vhat) + eps) + wd p): decay uses the parameter before the step */
    const float step =
        __fmaf_rn(c.weight_decay, p0, __fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), c.eps)));
    *p = __fmaf_rn(-c.lr, step, p0);
}

/* grad_scale is read on the device (clip_scale wrote it: no read-back); a non-finite one is a
 * refused step and leaves params, m and v as they are. The n elements are cut into `head`
 * scalar ones (up to the first 16-byte boundary, which the four arrays share), n4 chunks of 4
 * moved as float4s, and the scalar tail; one work item per chunk or scalar element, chunks
 * first (grid-stride). Every element takes the same operations either way. */
static __global__ void adamw_kernel(float *params, float *m, float *v, const float *grads, size_t n,
                                    size_t head, size_t n4, adamw_consts c,
                                    const float *grad_scale_p) {
    const float grad_scale = *grad_scale_p;
    if (!isfinite(grad_scale)) return;
    const size_t items = n - 3 * n4, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < items; w += stride) {
        if (w < n4) {
            const size_t i = head + 4 * w;
            float4 p4 = *reinterpret_cast<const float4 *>(params + i);
            float4 m4 = *reinterpret_cast<const float4 *>(m + i);
            float4 v4 = *reinterpret_cast<const float4 *>(v + i);
            const float4 g4 = *reinterpret_cast<const float4 *>(grads + i);
            adamw_element(&p4.x, &m4.x, &v4.x, g4.x, grad_scale, c);
            adamw_element(&p4.y, &m4.y, &v4.y, g4.y, grad_scale, c);
            adamw_element(&p4.z, &m4.z, &v4.z, g4.z, grad_scale, c);
            adamw_element(&p4.w, &m4.w, &v4.w, g4.w, grad_scale, c);
            *reinterpret_cast<float4 *>(params + i) = p4;
            *reinterpret_cast<float4 *>(m + i) = m4;
            *reinterpret_cast<float4 *>(v + i) = v4;
        } else {
            const size_t k = w - n4, i = k < head ? k : 4 * n4 + k; /* head, then the tail */
            adamw_element(&params[i], &m[i], &v[i], grads[i], grad_scale, c);
        }
    }
}

extern "C" void cuda_adamw_update(float *params, float *m, float *v, const float *grads, size_t n,
                                  float lr, float beta1, float beta2, float eps, float weight_decay,
                                  const float *grad_scale, int t) {
    if (n == 0) return;
    cuda_weights_written(params, n * sizeof(float));
    /* Bias corrections in double, once per call, exactly as model/cpu/adamw.c. */
    adamw_consts c;
    c.lr = lr, c.beta1 = beta1, c.beta2 = beta2, c.eps = eps, c.weight_decay = weight_decay;
    c.bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    c.bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    c.one_minus_beta1 = 1.0f - beta1, c.one_minus_beta2 = 1.0f - beta2;
    /* float4 chunks where the four arrays lie alike against 16 bytes (a model's: offsets into
     * buffers of the same layout), from the first boundary on */
    const uintptr_t mis = (uintptr_t)params % 16;
    size_t head = n, n4 = 0;
    if (mis % 4 == 0 && (uintptr_t)m % 16 == mis && (uintptr_t)v % 16 == mis &&
        (uintptr_t)grads % 16 == mis) {
        head = (16 - mis) % 16 / 4;
        if (head > n) head = n;
        n4 = (n - head) / 4;
    }
    unsigned blocks = cuda_blocks(n - 3 * n4, ADAMW_THREADS);
    if (blocks > ADAMW_MAX_BLOCKS) blocks = ADAMW_MAX_BLOCKS;
    adamw_kernel<<<blocks, ADAMW_THREADS, 0, cuda_stream()>>>(params, m, v, grads, n, head, n4, c,
                                                              grad_scale);
    CUDA_LAUNCH_CHECK();
}
