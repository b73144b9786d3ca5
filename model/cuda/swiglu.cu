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

/* The element math of both kernels, one function each, so that the 8-wide and the scalar loops
 * compute the very same expressions. */
static __device__ __forceinline__ float swiglu_h(float x, float up) {
    return x * swiglu_sigmoid(x) * up;
}
/* d silu(x)/dx = s (1 + x (1 - s)), s = sigmoid(x) */
static __device__ __forceinline__ void swiglu_grads(float *dg, float *du, float d, float x,
                                                    float up) {
    const float s = swiglu_sigmoid(x);
    *dg = d * up * s * (1.0f + x * (1.0f - s));
    *du = d * x * s;
}

/* Both kernels take 8 elements a thread at a time where every buffer is 16-byte aligned (vec8:
 * one 16-byte load or store per bf16 operand, two per fp32 one), then the last n % 8 one by
 * one. A thread reads its elements into locals before it writes any, so an output may alias an
 * input elementwise (same element type; no __restrict__). */
template <typename TX>
__global__ void swiglu_forward_kernel(TX *h, const TX *g, const TX *u, size_t n, bool vec8) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t i = tid;
    if (vec8) {
        for (size_t v = tid; v < n / 8; v += stride) {
            float x[8], up[8], out[8];
            operand_load8(g, 8 * v, x);
            operand_load8(u, 8 * v, up);
#pragma unroll
            for (int e = 0; e < 8; e++) out[e] = swiglu_h(x[e], up[e]);
            operand_store8(h, 8 * v, out);
        }
        i = 8 * (n / 8) + tid;
    }
    for (; i < n; i += stride) operand_store(h, i, swiglu_h(operand_load(g, i), operand_load(u, i)));
}

/* 16-byte alignment of every buffer of an op (NULL counts as aligned) */
static bool swiglu_aligned16(const void *a, const void *b, const void *c, const void *d,
                             const void *e) {
    return ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d | (uintptr_t)e) % 16 == 0;
}

template <typename TX> static void swiglu_forward_launch(TX *h, const TX *g, const TX *u,
                                                         size_t n) {
    const bool vec8 = swiglu_aligned16(h, g, u, NULL, NULL);
    auto kernel = swiglu_forward_kernel<TX>;
    kernel<<<swiglu_blocks(vec8 ? n / 8 + 8 : n), SWIGLU_THREADS, 0, cuda_stream()>>>(h, g, u, n,
                                                                                   vec8);
    CUDA_LAUNCH_CHECK();
}

/* dg and du are of the operand type TX: the fp32 values fp32 mode stores, rounded by the store
 * in bf16 mode; dh is fp32 (in fp32 mode dg or du may alias it too). */
template <typename TX>
__global__ void swiglu_backward_kernel(TX *dg, TX *du, const float *dh, const TX *g, const TX *u,
                                       size_t n, bool vec8) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t i = tid;
    if (vec8) {
        for (size_t v = tid; v < n / 8; v += stride) {
            float x[8], up[8], d[8], og[8], ou[8];
            operand_load8(g, 8 * v, x);
            operand_load8(u, 8 * v, up);
            operand_load8(dh, 8 * v, d);
#pragma unroll
            for (int e = 0; e < 8; e++) swiglu_grads(&og[e], &ou[e], d[e], x[e], up[e]);
            operand_store8(dg, 8 * v, og);
            operand_store8(du, 8 * v, ou);
        }
        i = 8 * (n / 8) + tid;
    }
    for (; i < n; i += stride) {
        float og, ou;
        swiglu_grads(&og, &ou, dh[i], operand_load(g, i), operand_load(u, i));
        operand_store(dg, i, og);
        operand_store(du, i, ou);
    }
}

template <typename TX>
static void swiglu_backward_launch(TX *dg, TX *du, const float *dh, const TX *g, const TX *u,
                                   size_t n) {
    const bool vec8 = swiglu_aligned16(dg, du, dh, g, u);
    auto kernel = swiglu_backward_kernel<TX>;
    kernel<<<swiglu_blocks(vec8 ? n / 8 + 8 : n), SWIGLU_THREADS, 0, cuda_stream()>>>(
        dg, du, dh, g, u, n, vec8);
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
