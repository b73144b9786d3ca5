/* The DIFF V2 combine on the CUDA backend (SPEC section 4; the CPU oracle is
 * model/cpu/diffv2.c): out_h = attn_{2h} - sigmoid(l_h) attn_{2h+1} per token row. out and attn
 * are dt_operands (operand.cuh), read and written in the backend's format; the math is fp32. */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/operand.cuh"

#define DIFFV2_THREADS 256
#define DIFFV2_MAX_BLOCKS 65536u

/* sigmoid without overflow: exp only ever sees a non-positive argument (as the CPU). */
static __device__ __forceinline__ float diffv2_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* Elementwise over the N*H*d outputs, grid-stride; element (n, h, e) reads attn_{2h}[e] and
 * attn_{2h+1}[e] of row n. */
template <typename TO>
__global__ void diffv2_combine_forward_kernel(TO *out, const TO *attn, const float *lam_logit,
                                              int N, int H, int d) {
    size_t total = (size_t)N * H * d;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        size_t e = idx % (size_t)d;
        size_t nh = idx / (size_t)d; /* n * H + h */
        size_t n = nh / (size_t)H, h = nh % (size_t)H;
        const TO *a0 = attn + n * 2 * H * d + 2 * h * d; /* (d) */
        const TO *a1 = a0 + d;                           /* (d) */
        float lam = diffv2_sigmoid(lam_logit[nh]);
        operand_store(out, idx, operand_load(a0, e) - lam * operand_load(a1, e));
    }
}

/* One warp per (row, head) pair: lanes stride over the d channels, writing dattn and summing
 * dout . attn_odd in double, then a warp reduction (fixed order) gives dlam_logit. The pair loop
 * bound is the same for all 32 lanes, so every lane reaches the full-mask shuffle. Each lane
 * reads attn_odd[e] before writing dattn_odd[e], so dattn may even equal attn (fp32 mode). */
#define DIFFV2_WARPS (DIFFV2_THREADS / 32)

template <typename TI>
__global__ void diffv2_combine_backward_kernel(float *dattn, float *dlam_logit, const float *dout,
                                               const TI *attn, const float *lam_logit, int N,
                                               int H, int d) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    size_t pairs = (size_t)N * H;
    size_t nwarps = (size_t)gridDim.x * DIFFV2_WARPS;
    for (size_t nh = (size_t)blockIdx.x * DIFFV2_WARPS + warp; nh < pairs; nh += nwarps) {
        size_t n = nh / (size_t)H, h = nh % (size_t)H;
        const TI *a1 = attn + n * 2 * H * d + (2 * h + 1) * d;    /* (d) */
        const float *dy = dout + nh * d;                          /* (d) */
        float *da0 = dattn + n * 2 * H * d + 2 * h * d;           /* (d) */
        float *da1 = da0 + d;                                     /* (d) */
        float lam = diffv2_sigmoid(lam_logit[nh]);
        double dot = 0.0; /* dout . attn_odd */
        for (int e = lane; e < d; e += 32) {
            float g = dy[e];
            dot += (double)g * operand_load(a1, e);
            da0[e] = g;
            da1[e] = -lam * g;
        }
        dot = warp_sum(dot);
        if (lane == 0) dlam_logit[nh] = (float)(-(double)lam * (1.0 - lam) * dot);
    }
}

static unsigned diffv2_blocks(size_t n, int per_block) {
    unsigned b = cuda_blocks(n, per_block);
    return b < DIFFV2_MAX_BLOCKS ? b : DIFFV2_MAX_BLOCKS;
}

template <typename TO>
static void diffv2_combine_forward_launch(TO *out, const TO *attn, const float *lam_logit, int N,
                                          int H, int d) {
    size_t total = (size_t)N * H * d;
    auto kernel = diffv2_combine_forward_kernel<TO>;
    kernel<<<diffv2_blocks(total, DIFFV2_THREADS), DIFFV2_THREADS, 0, cuda_stream()>>>(
        out, attn, lam_logit, N, H, d);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_diffv2_combine_forward(dt_operand *out, const dt_operand *attn,
                                            const float *lam_logit, int N, int H, int d) {
    if (N <= 0 || H <= 0 || d <= 0) return;
    if (cuda_operand_bf16())
        diffv2_combine_forward_launch((operand_bf16 *)out, (const operand_bf16 *)attn, lam_logit,
                                      N, H, d);
    else
        diffv2_combine_forward_launch((float *)out, (const float *)attn, lam_logit, N, H, d);
}

template <typename TI>
static void diffv2_combine_backward_launch(float *dattn, float *dlam_logit, const float *dout,
                                           const TI *attn, const float *lam_logit, int N, int H,
                                           int d) {
    size_t pairs = (size_t)N * H;
    auto kernel = diffv2_combine_backward_kernel<TI>;
    kernel<<<diffv2_blocks(pairs, DIFFV2_WARPS), DIFFV2_THREADS, 0, cuda_stream()>>>(
        dattn, dlam_logit, dout, attn, lam_logit, N, H, d);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_diffv2_combine_backward(float *dattn, float *dlam_logit, const float *dout,
                                             const dt_operand *attn, const float *lam_logit,
                                             int N, int H, int d) {
    if (N <= 0 || H <= 0) return;
    if (cuda_operand_bf16())
        diffv2_combine_backward_launch(dattn, dlam_logit, dout, (const operand_bf16 *)attn,
                                       lam_logit, N, H, d);
    else
        diffv2_combine_backward_launch(dattn, dlam_logit, dout, (const float *)attn, lam_logit, N,
                                       H, d);
}
