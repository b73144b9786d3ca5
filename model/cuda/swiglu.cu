/* SwiGLU gate on the CUDA backend: h = silu(g) * u = g * sigmoid(g) * u, elementwise (the CPU
 * oracle is model/cpu/swiglu.c, whose expressions are mirrored term by term). h, g and u are
 * dt_operands (operand.cuh): g and u are read widened, the math is fp32, and h is in bf16 mode
 * the same fp32 value rounded as stored. Of the gradients, dh is fp32 and dg, du are operands
 * too (only the gate and up products' backwards read them), rounded the same way as stored. */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/operand.cuh"

#define SWIGLU_THREADS 256
#define SWIGLU_MAX_BLOCKS 65536u

/* 1 / (1 + exp(-x)) is safe at both ends in float: exp(-x) overflows to inf for x < -88,
 * giving exactly 0, and underflows to 0 for large x, giving 1. expf, not __expf: the fast
 * intrinsic loses several bits for large |x|. */
static __device__ __forceinline__ float swiglu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

static unsigned swiglu_blocks(size_t n) {
    unsigned b = cuda_blocks(n, SWIGLU_THREADS);
    return b < SWIGLU_MAX_BLOCKS ? b : SWIGLU_MAX_BLOCKS;
}

template <typename TX>
__global__ void swiglu_forward_kernel(TX *h, const TX *g, const TX *u, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float x = operand_load(g, i);
        operand_store(h, i, x * swiglu_sigmoid(x) * operand_load(u, i));
    }
}

template <typename TX> static void swiglu_forward_launch(TX *h, const TX *g, const TX *u,
                                                         size_t n) {
    auto kernel = swiglu_forward_kernel<TX>;
    kernel<<<swiglu_blocks(n), SWIGLU_THREADS, 0, cuda_stream()>>>(h, g, u, n);
    CUDA_LAUNCH_CHECK();
}

/* d silu(x)/dx = s (1 + x (1 - s)), s = sigmoid(x). Inputs are read into locals before any
 * write, so dg or du may alias g or u elementwise (same element type; no __restrict__), or in
 * fp32 mode dh. dg and du are of the operand type TX: the fp32 values fp32 mode stores, rounded
 * by the store in bf16 mode. */
template <typename TX>
__global__ void swiglu_backward_kernel(TX *dg, TX *du, const float *dh, const TX *g, const TX *u,
                                       size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float x = operand_load(g, i), up = operand_load(u, i), d = dh[i];
        float s = swiglu_sigmoid(x);
        operand_store(dg, i, d * up * s * (1.0f + x * (1.0f - s)));
        operand_store(du, i, d * x * s);
    }
}

template <typename TX>
static void swiglu_backward_launch(TX *dg, TX *du, const float *dh, const TX *g, const TX *u,
                                   size_t n) {
    auto kernel = swiglu_backward_kernel<TX>;
    kernel<<<swiglu_blocks(n), SWIGLU_THREADS, 0, cuda_stream()>>>(dg, du, dh, g, u, n);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_swiglu_forward(dt_operand *h, const dt_operand *g, const dt_operand *u,
                                    size_t n) {
    if (n == 0) return;
    if (cuda_operand_bf16())
        swiglu_forward_launch((operand_bf16 *)h, (const operand_bf16 *)g,
                              (const operand_bf16 *)u, n);
    else
        swiglu_forward_launch((float *)h, (const float *)g, (const float *)u, n);
}

extern "C" void cuda_swiglu_backward(dt_operand *dg, dt_operand *du, const float *dh,
                                     const dt_operand *g, const dt_operand *u, size_t n) {
    if (n == 0) return;
    if (cuda_operand_bf16())
        swiglu_backward_launch((operand_bf16 *)dg, (operand_bf16 *)du, dh,
                               (const operand_bf16 *)g, (const operand_bf16 *)u, n);
    else
        swiglu_backward_launch((float *)dg, (float *)du, dh, (const float *)g, (const float *)u,
                               n);
}
