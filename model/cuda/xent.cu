/* Cross-entropy over rows of V logits on the CUDA backend, plain and vocabulary-parallel (the
 * CPU oracle is model/cpu/xent.c). Target convention as there: t < 0 ignores the row (loss 0,
 * zero gradient); t >= V means "the target lies in another slice" (no target term).
 *
 * Row ops run one block per row (grid-stride over rows; V up to ~130k, so each thread walks a
 * few hundred strided, coalesced elements). The training step reads each row of fp32 logits
 * twice: once for its statistics (maximum and sum of exponentials in one pass, the sum
 * rescaled as the maximum grows) and once for its gradient, stored as an operand (bf16 in
 * bf16 mode) over the row's own logits for the classifier's product; the three passes this
 * replaced (maximum, sum, fp32 gradient) and the products' bf16 copy of that gradient took
 * about 15 ms of a 318 ms 830M step on an H100 (docs/gpu-performance.md). The exp sums are
 * accumulated in double and reduced in a fixed tree, the row maximum is exact, and the
 * logsumexp is formed in double: lse and the losses agree with the CPU to ~1 ulp (CUDA's expf
 * is within 2 ulp of glibc's). Row offsets are size_t: N * V reaches 8e8 and more. */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/operand.cuh"

#define XENT_THREADS 512
/* the backward's tile: 8 elements a thread (two float4 loads in flight per thread) */
#define XENT_PER_THREAD 8
#define XENT_TILE (XENT_THREADS * XENT_PER_THREAD)

/* The rows' float4 path: every row of logits starts 16-byte aligned (V a multiple of 4 and an
 * aligned base), so a thread loads four logits at once. */
static bool xent_vec4(const float *logits, int V) {
    return V % 4 == 0 && (uintptr_t)logits % 16 == 0;
}

/* One pass of online log-sum-exp: (m, s) holds the running maximum m of the values seen and
 * s = sum exp(value - m); a new maximum rescales s once (by exp(old m - new m)). The exponent of
 * every term is <= 0, so nothing overflows; s is a double, as the two-pass sum was. NaN
 * propagates into s (expf(NaN) is NaN). */
static __device__ __forceinline__ void lse_add(float &m, double &s, float hi, float x) {
    if (hi > m) {
        s *= (double)expf(m - hi); /* 0 while m is -inf: expf(-inf) */
        m = hi;
    }
    s += (double)expf(x - m);
}

/* The row's maximum and sum of exp(x - maximum), each thread's (m, s) from one read of the row
 * (float4 loads when vec4), combined over the block: every thread gets them (contains
 * __syncthreads). The block's sum is a fixed tree, so the result is deterministic. */
static __device__ void xent_row_stats(const float *x, int V, bool vec4, float *mx, double *sum,
                                      float *scratch_f, double *scratch_d) {
    float m = -INFINITY;
    double s = 0.0;
    int i = threadIdx.x;
    if (vec4) {
        for (; i < V / 4; i += blockDim.x) {
            const float4 q = reinterpret_cast<const float4 *>(x)[i];
            const float hi = fmaxf(fmaxf(q.x, q.y), fmaxf(q.z, q.w));
            lse_add(m, s, hi, q.x);
            s += (double)expf(q.y - m) + (double)expf(q.z - m) + (double)expf(q.w - m);
        }
    } else {
        for (; i < V; i += blockDim.x) lse_add(m, s, x[i], x[i]);
    }
    const float M = block_max(m, scratch_f);
    /* a thread's sum moved to the row's maximum (a thread that saw nothing adds 0) */
    *sum = block_sum(m == -INFINITY ? 0.0 : s * (double)expf(m - M), scratch_d);
    *mx = M;
}

static __global__ void xent_forward_kernel(float *losses, float *lse, const float *logits,
                                           const int32_t *targets, int N, int V, bool vec4) {
    __shared__ float scratch_f[32];
    __shared__ double scratch_d[32];
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *x = logits + (size_t)n * V; /* (V) */
        float mx;
        double sum;
        xent_row_stats(x, V, vec4, &mx, &sum, scratch_f, scratch_d);
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

/* One row's gradient element: dloss * softmax (- dloss at the target). __fmul_rn keeps the
 * product a separate rounding, as on the CPU (which stores it before subtracting dloss), instead
 * of letting the compiler fuse it with the subtraction. */
static __device__ __forceinline__ float xent_grad(float x, float l, float dloss, int i, int t) {
    float p = __fmul_rn(dloss, expf(x - l));
    return i == t ? p - dloss : p;
}

/* dlogits (rows ldd elements apart) from the logits, tile by tile along each row: every thread
 * loads its XENT_PER_THREAD logits of the tile, then stores their gradients. When dlogits is
 * the logits buffer itself in bf16 (ldd = 2V), row n's gradients overwrite the front half of
 * row n's own logits: element i's 2 bytes lie in logit i/2, which another thread may load, but
 * i/2 <= i, so only logits of this tile or earlier ones are overwritten. The barrier between
 * the loads and the stores of a tile (once every thread has loaded the tile, any may store)
 * makes that safe; fp32 gradients overwrite their own logit and need none. Rows with an
 * ignored target get zeros. */
template <typename T>
static __global__ void xent_backward_kernel(T *dlogits, int ldd, const float *logits,
                                            const float *lse, const int32_t *targets,
                                            float dloss_scale, const int32_t *n_targets, int N,
                                            int V, bool vec4) {
    /* IEEE division, as the host divided before: the same bits */
    const float dloss = *n_targets > 0 ? dloss_scale / (float)*n_targets : 0.0f;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        T *dx = dlogits + (size_t)n * ldd;       /* (V) */
        const float *x = logits + (size_t)n * V; /* (V) */
        const int32_t t = targets[n];
        const float l = lse[n];
        for (int base = 0; base < V; base += XENT_TILE) {
            float v[XENT_PER_THREAD];
            if (vec4) { /* thread j: elements base + 4 (j + u blockDim) .. + 3, u = 0, 1 */
#pragma unroll
                for (int u = 0; u < XENT_PER_THREAD / 4; u++) {
                    const int i = base + 4 * (threadIdx.x + u * blockDim.x);
                    const float4 q = i < V && t >= 0
                                         ? reinterpret_cast<const float4 *>(x + i)[0]
                                         : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    v[4 * u] = q.x, v[4 * u + 1] = q.y, v[4 * u + 2] = q.z, v[4 * u + 3] = q.w;
                }
            } else { /* thread j: elements base + j + u blockDim */
#pragma unroll
                for (int u = 0; u < XENT_PER_THREAD; u++) {
                    const int i = base + threadIdx.x + u * blockDim.x;
                    v[u] = i < V && t >= 0 ? x[i] : 0.0f;
                }
            }
            if (sizeof(T) < sizeof(float)) __syncthreads();
            if (vec4) {
#pragma unroll
                for (int u = 0; u < XENT_PER_THREAD / 4; u++) {
                    const int i = base + 4 * (threadIdx.x + u * blockDim.x);
                    if (i >= V) break;
                    float g[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                    for (int e = 0; e < 4 && t >= 0; e++)
                        g[e] = xent_grad(v[4 * u + e], l, dloss, i + e, t);
                    operand_store2(dx, i, g[0], g[1]);
                    operand_store2(dx, i + 2, g[2], g[3]);
                }
            } else {
#pragma unroll
                for (int u = 0; u < XENT_PER_THREAD; u++) {
                    const int i = base + threadIdx.x + u * blockDim.x;
                    if (i < V) operand_store(dx, i, t >= 0 ? xent_grad(v[u], l, dloss, i, t) : 0.f);
                }
            }
        }
    }
}

static __global__ void xent_vp_stats_kernel(float *rowmax, float *sums, const float *logits,
                                            const int32_t *targets, int N, int V, bool vec4) {
    __shared__ float scratch_f[32];
    __shared__ double scratch_d[32];
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *x = logits + (size_t)n * V; /* (V) */
        float mx;
        double sum;
        xent_row_stats(x, V, vec4, &mx, &sum, scratch_f, scratch_d);
        if (threadIdx.x == 0) {
            int32_t t = targets[n];
            rowmax[n] = mx;
            sums[2 * (size_t)n] = (float)sum;
            sums[2 * (size_t)n + 1] = t >= 0 && t < V ? x[t] : 0.0f;
        }
    }
}

/* Elementwise over rows (one thread per row), as the CPU's: the product rounded once. */
static __global__ void xent_vp_rescale_kernel(float *sums, const float *rowmax, const float *gmax,
                                              int N) {
    for (int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; n < N;
         n += (int64_t)gridDim.x * blockDim.x)
        sums[2 * (size_t)n] = __fmul_rn(sums[2 * (size_t)n], expf(rowmax[n] - gmax[n]));
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
        losses, lse, logits, targets, N, V, xent_vec4(logits, V));
    CUDA_LAUNCH_CHECK();
}

template <typename T>
static void xent_backward_launch(T *dlogits, int ldd, const float *logits, const float *lse,
                                 const int32_t *targets, float dloss_scale,
                                 const int32_t *n_targets, int N, int V, bool vec4) {
    auto kernel = xent_backward_kernel<T>;
    kernel<<<cuda_blocks((size_t)N, 1), XENT_THREADS, 0, cuda_stream()>>>(
        dlogits, ldd, logits, lse, targets, dloss_scale, n_targets, N, V, vec4);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_xent_backward(dt_operand *dlogits, int ldd, const float *logits,
                                   const float *lse, const int32_t *targets, float dloss_scale,
                                   const int32_t *n_targets, int N, int V) {
    if (N <= 0 || V <= 0) return;
    const size_t ob = cuda_operand_bytes();
    /* the float4 path also stores four gradients as two aligned pairs */
    const bool vec4 = xent_vec4(logits, V) && ldd % 4 == 0 && (uintptr_t)dlogits % (4 * ob) == 0;
    if (cuda_operand_bf16())
        xent_backward_launch((operand_bf16 *)dlogits, ldd, logits, lse, targets, dloss_scale,
                             n_targets, N, V, vec4);
    else
        xent_backward_launch((float *)dlogits, ldd, logits, lse, targets, dloss_scale, n_targets,
                             N, V, vec4);
}

extern "C" void cuda_xent_vp_stats(float *rowmax, float *sums, const float *logits,
                                   const int32_t *targets, int N, int V) {
    if (N <= 0) return;
    xent_vp_stats_kernel<<<cuda_blocks((size_t)N, 1), XENT_THREADS, 0, cuda_stream()>>>(
        rowmax, sums, logits, targets, N, V, xent_vec4(logits, V));
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_xent_vp_rescale(float *sums, const float *rowmax, const float *gmax, int N) {
    if (N <= 0) return;
    xent_vp_rescale_kernel<<<cuda_blocks((size_t)N, 256), 256, 0, cuda_stream()>>>(sums, rowmax,
                                                                                   gmax, N);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_xent_vp_finish(float *losses, float *lse, const float *rowmax,
                                    const float *sums, const int32_t *targets, int N) {
    if (N <= 0) return;
    xent_vp_finish_kernel<<<cuda_blocks((size_t)N, 256), 256, 0, cuda_stream()>>>(
        losses, lse, rowmax, sums, targets, N);
    CUDA_LAUNCH_CHECK();
}
