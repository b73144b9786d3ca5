/* SwiGLU gate on the CUDA backend: h = silu(g) * u = g * sigmoid(g) * u, elementwise (the CPU
 * oracle is model/cpu/swiglu.c, whose expressions are mirrored term by term), over rows x cols
 * with g and u (and their gradients) rows ld apart: the two halves of the rows of the model's
 * one gate-and-up product. h, g and u are dt_operands (operand.cuh): g and u are read widened,
 * the math is fp32, and h is in bf16 mode the same fp32 value rounded as stored. Of the gradients, dh is fp32 and dg, du are operands
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

/* The shape of an op: h and dh are (rows, cols) dense, g, u, dg and du have their rows ld
 * elements apart (model/backend.h). The kernels walk chunks of w consecutive columns of a row:
 * w = 8 where every buffer is 16-byte aligned and cols and ld are multiples of 8 (vec8: one
 * 16-byte load or store per bf16 operand, two per fp32 one), else w = 1; the grid's y blocks
 * step over the rows and its x threads over a row's chunks (no index division). Dense rows
 * (ld == cols) are walked as one row of rows x cols elements, so vec8 needs only that count to
 * be a multiple of 8. A thread reads its elements into locals before it writes any, so dg and
 * du may be g and u (same element type; no __restrict__). */
struct swiglu_shape {
    size_t rows, cols, ld; /* as walked: one row of everything where ld == cols */
    size_t per_row;        /* chunks a row */
    bool vec8;
};

static swiglu_shape swiglu_shape_of(size_t rows, size_t cols, size_t ld, bool aligned16) {
    swiglu_shape s;
    if (ld == cols) {
        cols *= rows;
        ld = cols;
        rows = 1;
    }
    s.rows = rows;
    s.cols = cols;
    s.ld = ld;
    s.vec8 = aligned16 && cols % 8 == 0 && ld % 8 == 0;
    s.per_row = cols / (s.vec8 ? 8 : 1);
    return s;
}

/* Up to SWIGLU_MAX_BLOCKS blocks: x enough for a row's chunks (capped), y the rest, over rows */
static dim3 swiglu_grid(const swiglu_shape &s) {
    const unsigned x = swiglu_blocks(s.per_row);
    const size_t want = (size_t)SWIGLU_MAX_BLOCKS / x, y = s.rows < want ? s.rows : want;
    return dim3(x, (unsigned)(y < 65535 ? (y > 0 ? y : 1) : 65535));
}

/* Runs body(dense, strided) for each chunk of the calling thread: its first element's index in
 * h and dh, and in g, u, dg and du. */
template <typename F>
static __device__ __forceinline__ void swiglu_for_chunks(const swiglu_shape &s, F body) {
    const size_t w = s.vec8 ? 8 : 1, cstride = (size_t)gridDim.x * blockDim.x;
    for (size_t r = blockIdx.y; r < s.rows; r += gridDim.y)
        for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < s.per_row;
             k += cstride)
            body(r * s.cols + k * w, r * s.ld + k * w);
}

template <typename TX>
__global__ void swiglu_forward_kernel(TX *h, const TX *g, const TX *u, swiglu_shape s) {
    swiglu_for_chunks(s, [&](size_t o, size_t i) {
        if (s.vec8) {
            float x[8], up[8], out[8];
            operand_load8(g, i, x);
            operand_load8(u, i, up);
#pragma unroll
            for (int e = 0; e < 8; e++) out[e] = swiglu_h(x[e], up[e]);
            operand_store8(h, o, out);
        } else {
            operand_store(h, o, swiglu_h(operand_load(g, i), operand_load(u, i)));
        }
    });
}

/* 16-byte alignment of every buffer of an op (NULL counts as aligned) */
static bool swiglu_aligned16(const void *a, const void *b, const void *c, const void *d,
                             const void *e) {
    return ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d | (uintptr_t)e) % 16 == 0;
}

template <typename TX> static void swiglu_forward_launch(TX *h, const TX *g, const TX *u,
                                                         size_t rows, size_t cols, size_t ld) {
    const swiglu_shape s = swiglu_shape_of(rows, cols, ld, swiglu_aligned16(h, g, u, NULL, NULL));
    auto kernel = swiglu_forward_kernel<TX>;
    kernel<<<swiglu_grid(s), SWIGLU_THREADS, 0, cuda_stream()>>>(h, g, u, s);
    CUDA_LAUNCH_CHECK();
}

/* dg and du are of the operand type TX: the fp32 values fp32 mode stores, rounded by the store
 * in bf16 mode; dh is fp32. */
template <typename TX>
__global__ void swiglu_backward_kernel(TX *dg, TX *du, const float *dh, const TX *g, const TX *u,
                                       swiglu_shape s) {
    swiglu_for_chunks(s, [&](size_t o, size_t i) {
        if (s.vec8) {
            float x[8], up[8], d[8], og[8], ou[8];
            operand_load8(g, i, x);
            operand_load8(u, i, up);
            operand_load8(dh, o, d);
#pragma unroll
            for (int e = 0; e < 8; e++) swiglu_grads(&og[e], &ou[e], d[e], x[e], up[e]);
            operand_store8(dg, i, og);
            operand_store8(du, i, ou);
        } else {
            float og, ou;
            swiglu_grads(&og, &ou, dh[o], operand_load(g, i), operand_load(u, i));
            operand_store(dg, i, og);
            operand_store(du, i, ou);
        }
    });
}

template <typename TX>
static void swiglu_backward_launch(TX *dg, TX *du, const float *dh, const TX *g, const TX *u,
                                   size_t rows, size_t cols, size_t ld) {
    const swiglu_shape s = swiglu_shape_of(rows, cols, ld, swiglu_aligned16(dg, du, dh, g, u));
    auto kernel = swiglu_backward_kernel<TX>;
    kernel<<<swiglu_grid(s), SWIGLU_THREADS, 0, cuda_stream()>>>(dg, du, dh, g, u, s);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_swiglu_forward(dt_operand *h, const dt_operand *g, const dt_operand *u,
                                    size_t rows, size_t cols, size_t ld) {
    if (rows == 0 || cols == 0) return;
    if (cuda_operand_bf16())
        swiglu_forward_launch((operand_bf16 *)h, (const operand_bf16 *)g,
                              (const operand_bf16 *)u, rows, cols, ld);
    else
        swiglu_forward_launch((float *)h, (const float *)g, (const float *)u, rows, cols, ld);
}

extern "C" void cuda_swiglu_backward(dt_operand *dg, dt_operand *du, const float *dh,
                                     const dt_operand *g, const dt_operand *u, size_t rows,
                                     size_t cols, size_t ld) {
    if (rows == 0 || cols == 0) return;
    if (cuda_operand_bf16())
        swiglu_backward_launch((operand_bf16 *)dg, (operand_bf16 *)du, dh,
                               (const operand_bf16 *)g, (const operand_bf16 *)u, rows, cols, ld);
    else
        swiglu_backward_launch((float *)dg, (float *)du, dh, (const float *)g, (const float *)u,
                               rows, cols, ld);
}
