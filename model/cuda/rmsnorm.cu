/* RMSNorm on the CUDA backend: out = inp * rstd * weight, rstd = 1 / sqrt(mean(inp^2) + eps),
 * per row of C (the CPU oracle is model/cpu/rmsnorm.c). Row reductions are accumulated in
 * double as on the CPU, so rstd and out agree with it to the last bit in all but rare ties.
 * out is a dt_operand (operand.cuh): in bf16 mode the same fp32 values, rounded as stored; so is
 * the backward's copy of the accumulated dinp (dinp_operand), which the products read. */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"
#include "model/cuda/operand.cuh"

#define RMSNORM_THREADS 256

/* One block per row (grid-stride over rows); the sum of squares is reduced over the block
 * before any thread writes, so out may even equal inp (fp32 mode). With a != NULL (the fused
 * residual), each thread first writes x[i] = a[i] + b[i] for its own columns and reads back
 * only those, so x (= y) may alias a or b; the sums and products then see the same floats, in
 * the same order, as the unfused add and norm. */
template <typename TO>
__global__ void rmsnorm_forward_kernel(TO *out, float *rstd, float *y, const float *inp,
                                       const float *a, const float *b, const float *weight, int N,
                                       int C, float eps) {
    __shared__ double scratch[32];
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *x = a ? y + (size_t)n * C : inp + (size_t)n * C; /* (C) */
        TO *o = out + (size_t)n * C;                                  /* (C) */
        if (a)
            for (int i = threadIdx.x; i < C; i += blockDim.x)
                y[(size_t)n * C + i] = a[(size_t)n * C + i] + b[(size_t)n * C + i];
        double ss = 0.0;
        for (int i = threadIdx.x; i < C; i += blockDim.x) ss += (double)x[i] * x[i];
        ss = block_sum(ss, scratch);
        float r = (float)(1.0 / sqrt(ss / C + (double)eps));
        if (threadIdx.x == 0) rstd[n] = r;
        if (weight)
            for (int i = threadIdx.x; i < C; i += blockDim.x)
                operand_store(o, i, x[i] * r * weight[i]);
        else
            for (int i = threadIdx.x; i < C; i += blockDim.x) operand_store(o, i, x[i] * r);
    }
}

/* The same for rows of C = 4k floats, every row 16-byte aligned (out's 8-byte in bf16), when
 * blockDim.x threads of RMSNORM_VEC float4s each cover a row: each thread keeps its float4s of
 * the row in registers (columns 4f .. 4f + 3 for f = threadIdx.x + k blockDim.x), so the row is
 * read from memory once (a and b once each, with the residual), y and out are written from the
 * registers, and every access is 16 bytes. Fused or not, the sum of squares is added in the
 * same order (block_sum over the threads' sums in k order), so the residual path still gives
 * the add-then-norm bits. (The scalar kernel above reads x twice, and with the residual stores
 * y and reads it back: 8.7 ms of an 830M step, some 1.5x the bytes at bandwidth.) */
#define RMSNORM_VEC 4
/* weight[4f .. 4f + 3] (all 1 without a weight): a slice of the parameters, at any offset, so
 * loaded by the float (from cache after the first row) */
__device__ __forceinline__ float4 rmsnorm_weight4(const float *weight, int f) {
    if (!weight) return make_float4(1.0f, 1.0f, 1.0f, 1.0f);
    const float *w = weight + 4 * (size_t)f;
    return make_float4(w[0], w[1], w[2], w[3]);
}
template <typename TO>
__global__ void __launch_bounds__(1024)
    rmsnorm_forward_vec_kernel(TO *out, float *rstd, float *y, const float *inp, const float *a,
                               const float *b, const float *weight, int N, int C, float eps) {
    __shared__ double scratch[32];
    const int C4 = C / 4;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const size_t row = (size_t)n * C;
        float4 x[RMSNORM_VEC], q[RMSNORM_VEC];
        /* the row's loads first, then y's stores: a store between them (y may alias a or b,
         * for all the compiler knows) would hold each next load back until it is done */
#pragma unroll
        for (int k = 0; k < RMSNORM_VEC; k++) {
            const int f = threadIdx.x + k * blockDim.x;
            if (f >= C4) break;
            x[k] = reinterpret_cast<const float4 *>(a ? a + row : inp + row)[f];
            if (a) q[k] = reinterpret_cast<const float4 *>(b + row)[f];
        }
        if (a) {
#pragma unroll
            for (int k = 0; k < RMSNORM_VEC; k++) {
                const int f = threadIdx.x + k * blockDim.x;
                if (f >= C4) break;
                x[k] = make_float4(x[k].x + q[k].x, x[k].y + q[k].y, x[k].z + q[k].z,
                                   x[k].w + q[k].w);
                reinterpret_cast<float4 *>(y + row)[f] = x[k];
            }
        }
        double ss = 0.0;
#pragma unroll
        for (int k = 0; k < RMSNORM_VEC; k++) {
            if ((int)(threadIdx.x + k * blockDim.x) >= C4) break;
            ss += (double)x[k].x * x[k].x;
            ss += (double)x[k].y * x[k].y;
            ss += (double)x[k].z * x[k].z;
            ss += (double)x[k].w * x[k].w;
        }
        ss = block_sum(ss, scratch);
        const float r = (float)(1.0 / sqrt(ss / C + (double)eps));
        if (threadIdx.x == 0) rstd[n] = r;
#pragma unroll
        for (int k = 0; k < RMSNORM_VEC; k++) {
            const int f = threadIdx.x + k * blockDim.x;
            if (f >= C4) break;
            const float4 w = rmsnorm_weight4(weight, f); /* x * r * 1 without one: exact */
            operand_store4(out, row + 4 * (size_t)f,
                           make_float4(x[k].x * r * w.x, x[k].y * r * w.y, x[k].z * r * w.z,
                                       x[k].w * r * w.w));
        }
    }
}

/* Threads per row for a float4 kernel: the fewest whole warps that take the row's float4s at
 * RMSNORM_VEC each; 0 when it does not apply (C not a multiple of 4, a pointer not aligned, or
 * a row wider than max_threads take). rows: the fp32 arrays of C per row (NULL: not used). */
static int rmsnorm_vec_threads(int C, int max_threads, size_t out_bytes, const void *out,
                               const float *const *rows, int nrows) {
    if (C % 4 != 0 || (uintptr_t)out % (4 * out_bytes) != 0) return 0;
    for (int i = 0; i < nrows; i++)
        if (rows[i] && (uintptr_t)rows[i] % 16 != 0) return 0;
    const int per_thread = (C / 4 + RMSNORM_VEC - 1) / RMSNORM_VEC;
    const int threads = (per_thread + 31) / 32 * 32;
    return threads <= max_threads ? threads : 0;
}

template <typename TO>
static void rmsnorm_forward_launch(TO *out, float *rstd, float *y, const float *inp,
                                   const float *a, const float *b, const float *weight, int N,
                                   int C, float eps) {
    const float *rows[4] = {y, inp, a, b};
    const int vec_threads = rmsnorm_vec_threads(C, 1024, sizeof(TO), out, rows, 4);
    if (vec_threads) {
        auto kernel = rmsnorm_forward_vec_kernel<TO>;
        kernel<<<cuda_blocks((size_t)N, 1), vec_threads, 0, cuda_stream()>>>(out, rstd, y, inp, a,
                                                                              b, weight, N, C, eps);
    } else {
        auto kernel = rmsnorm_forward_kernel<TO>;
        kernel<<<cuda_blocks((size_t)N, 1), RMSNORM_THREADS, 0, cuda_stream()>>>(
            out, rstd, y, inp, a, b, weight, N, C, eps);
    }
    CUDA_LAUNCH_CHECK();
}

/* The fused residual when a != NULL (then y, b too), the plain norm of inp otherwise. */
static void rmsnorm_forward_any(dt_operand *out, float *rstd, float *y, const float *inp,
                                const float *a, const float *b, const float *weight, int N, int C,
                                float eps) {
    if (N <= 0 || C <= 0) return;
    if (cuda_operand_bf16())
        rmsnorm_forward_launch((operand_bf16 *)out, rstd, y, inp, a, b, weight, N, C, eps);
    else
        rmsnorm_forward_launch((float *)out, rstd, y, inp, a, b, weight, N, C, eps);
}

extern "C" void cuda_rmsnorm_forward(dt_operand *out, float *rstd, const float *inp,
                                     const float *weight, int N, int C, float eps) {
    rmsnorm_forward_any(out, rstd, NULL, inp, NULL, NULL, weight, N, C, eps);
}

extern "C" void cuda_residual_rmsnorm_forward(float *y, dt_operand *out, float *rstd,
                                              const float *a, const float *b, const float *weight,
                                              int N, int C, float eps) {
    rmsnorm_forward_any(out, rstd, y, NULL, a, b, weight, N, C, eps);
}

/* dinp: with xhat = x * r and g = dout * weight, dx = r * (g - xhat * mean(g * xhat)), i.e.
 * dx += r * (g - x * coef) with coef = (sum_i g_i x_i) * r^2 / C. One block per row.
 * rmsnorm_dinp_term is that addend for column i, in double, rounded once. */
static __device__ __forceinline__ float rmsnorm_dinp_addend(float dy, float x, float w, double r,
                                                            double coef) {
    double g = (double)dy * w;
    return (float)(r * (g - x * coef));
}
static __device__ __forceinline__ float rmsnorm_dinp_term(const float *dy, const float *x,
                                                          const float *weight, int i, double r,
                                                          double coef) {
    return rmsnorm_dinp_addend(dy[i], x[i], weight ? weight[i] : 1.0f, r, coef);
}

/* dinp_operand (unless NULL) gets the accumulated dinp as an operand of type TD: the very float
 * stored in dinp, rounded by the store in bf16 mode. With pairs != 0 (C even, dinp and
 * dinp_operand 8-byte aligned) each thread takes two adjacent columns: one 8-byte load and store
 * of dinp and one operand_store2 (4 bytes in bf16) instead of two of each.
 * With dw_partial != NULL the kernel also sums dweight's terms dout * x * r (in double, the
 * partial kernel's expression) over the rows its block takes, column by column in C doubles of
 * dynamic shared memory, and writes them to dw_partial[block] (C): the rows it reads anyway, so
 * dweight costs no second pass over dout and inp. Each thread owns the same columns in every
 * row (and in the final write), so the sums need no barrier; gridDim (fixed by N) and the
 * grid-stride order of rows fix the order of every addition. */
template <typename TD>
__global__ void rmsnorm_backward_dinp_kernel(float *dinp, TD *dinp_operand, double *dw_partial,
                                             const float *dout, const float *inp,
                                             const float *weight, const float *rstd, int N, int C,
                                             int pairs) {
    __shared__ double scratch[32];
    extern __shared__ double dw_sum[]; /* (C) with dw_partial */
    const int first = pairs ? 2 * threadIdx.x : threadIdx.x, step = (pairs ? 2 : 1) * blockDim.x;
    if (dw_partial)
        for (int i = first; i < C; i += step) {
            dw_sum[i] = 0.0;
            if (pairs) dw_sum[i + 1] = 0.0;
        }
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const size_t row = (size_t)n * C;
        const float *x = inp + row;   /* (C) */
        const float *dy = dout + row; /* (C) */
        float *dx = dinp + row;       /* (C) */
        double r = rstd[n];
        double dot = 0.0;
        for (int i = threadIdx.x; i < C; i += blockDim.x)
            dot += (double)dy[i] * (weight ? weight[i] : 1.0f) * x[i];
        dot = block_sum(dot, scratch);
        double coef = dot * r * r / C;
        /* dweight's terms in the same loops as dinp's, each element's before its dinp is written
         * (by the same thread): dweight sees the unmodified dout even where dinp aliases it */
        if (pairs) {
            for (int i = first; i < C; i += step) {
                if (dw_partial) {
                    dw_sum[i] += (double)dy[i] * x[i] * r;
                    dw_sum[i + 1] += (double)dy[i + 1] * x[i + 1] * r;
                }
                float2 v = *reinterpret_cast<const float2 *>(dx + i);
                v.x += rmsnorm_dinp_term(dy, x, weight, i, r, coef);
                v.y += rmsnorm_dinp_term(dy, x, weight, i + 1, r, coef);
                *reinterpret_cast<float2 *>(dx + i) = v;
                if (dinp_operand) operand_store2(dinp_operand, row + i, v.x, v.y);
            }
        } else {
            for (int i = first; i < C; i += step) {
                if (dw_partial) dw_sum[i] += (double)dy[i] * x[i] * r;
                const float v = dx[i] + rmsnorm_dinp_term(dy, x, weight, i, r, coef);
                dx[i] = v;
                if (dinp_operand) operand_store(dinp_operand, row + i, v);
            }
        }
    }
    if (dw_partial)
        for (int i = first; i < C; i += step) {
            dw_partial[(size_t)blockIdx.x * C + i] = dw_sum[i];
            if (pairs) dw_partial[(size_t)blockIdx.x * C + i + 1] = dw_sum[i + 1];
        }
}

/* Blocks of the fused dweight sums (at most; fewer when N is smaller): enough rows in flight for
 * the memory system, and few partial rows (C doubles each) for the final sum. A constant, so the
 * order of the additions depends only on N. */
#define RMSNORM_DW_BLOCKS 1024
/* The fused sums keep C doubles in shared memory: beside the block sum's 32 doubles, up to the
 * default 48 KiB in all (C <= 6112); wider rows take the two-kernel path below. */
#define RMSNORM_DW_FUSED_MAX_C ((48 * 1024 - 32 * (int)sizeof(double)) / (int)sizeof(double))

/* The same for rows of C = 4k floats (the forward's float4 kernel's conditions): each thread
 * keeps its float4s of dout and inp in registers, so each row is read from memory once, with
 * 16-byte accesses. dweight's sums: thread f owns columns 4f .. 4f + 3 in every row, kept at
 * dw_sum[c C/4 + f] (component c) so that a warp's shared accesses are consecutive doubles. At
 * most 512 threads (C <= 8192), so that ptxas may give a thread the 32 registers of those
 * float4s and more without spilling (1024 caps it at 64). */
#define RMSNORM_BWD_VEC_THREADS 512
template <typename TD>
__global__ void __launch_bounds__(RMSNORM_BWD_VEC_THREADS)
    rmsnorm_backward_dinp_vec_kernel(float *dinp, TD *dinp_operand, double *dw_partial,
                                     const float *dout, const float *inp, const float *weight,
                                     const float *rstd, int N, int C) {
    __shared__ double scratch[32];
    extern __shared__ double dw_sum[]; /* (4, C / 4) with dw_partial */
    const int C4 = C / 4;
    if (dw_partial)
        for (int f = threadIdx.x; f < C4; f += blockDim.x)
            for (int c = 0; c < 4; c++) dw_sum[c * C4 + f] = 0.0;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const size_t row = (size_t)n * C;
        float4 dy[RMSNORM_VEC], x[RMSNORM_VEC];
        double dot = 0.0;
#pragma unroll
        for (int k = 0; k < RMSNORM_VEC; k++) {
            const int f = threadIdx.x + k * blockDim.x;
            if (f >= C4) break;
            dy[k] = reinterpret_cast<const float4 *>(dout + row)[f];
            x[k] = reinterpret_cast<const float4 *>(inp + row)[f];
        }
#pragma unroll
        for (int k = 0; k < RMSNORM_VEC; k++) {
            const int f = threadIdx.x + k * blockDim.x;
            if (f >= C4) break;
            const float4 w = rmsnorm_weight4(weight, f);
            dot += (double)dy[k].x * w.x * x[k].x;
            dot += (double)dy[k].y * w.y * x[k].y;
            dot += (double)dy[k].z * w.z * x[k].z;
            dot += (double)dy[k].w * w.w * x[k].w;
        }
        dot = block_sum(dot, scratch);
        const double r = rstd[n], coef = dot * r * r / C;
#pragma unroll
        for (int k = 0; k < RMSNORM_VEC; k++) {
            const int f = threadIdx.x + k * blockDim.x;
            if (f >= C4) break;
            /* dweight's terms before dinp's store: dout may alias dinp (read above anyway) */
            if (dw_partial) {
                dw_sum[f] += (double)dy[k].x * x[k].x * r;
                dw_sum[C4 + f] += (double)dy[k].y * x[k].y * r;
                dw_sum[2 * C4 + f] += (double)dy[k].z * x[k].z * r;
                dw_sum[3 * C4 + f] += (double)dy[k].w * x[k].w * r;
            }
            const float4 w = rmsnorm_weight4(weight, f);
            float4 v = reinterpret_cast<const float4 *>(dinp + row)[f];
            v.x += rmsnorm_dinp_addend(dy[k].x, x[k].x, w.x, r, coef);
            v.y += rmsnorm_dinp_addend(dy[k].y, x[k].y, w.y, r, coef);
            v.z += rmsnorm_dinp_addend(dy[k].z, x[k].z, w.z, r, coef);
            v.w += rmsnorm_dinp_addend(dy[k].w, x[k].w, w.w, r, coef);
            reinterpret_cast<float4 *>(dinp + row)[f] = v;
            if (dinp_operand) operand_store4(dinp_operand, row + 4 * (size_t)f, v);
        }
    }
    if (dw_partial)
        for (int f = threadIdx.x; f < C4; f += blockDim.x)
            for (int c = 0; c < 4; c++)
                dw_partial[(size_t)blockIdx.x * C + 4 * f + c] = dw_sum[c * C4 + f];
}

template <typename TD>
static void rmsnorm_backward_dinp_launch(float *dinp, TD *dinp_operand, double *dw_partial,
                                         unsigned blocks, const float *dout, const float *inp,
                                         const float *weight, const float *rstd, int N, int C) {
    const size_t smem = dw_partial ? (size_t)C * sizeof(double) : 0;
    const float *rows[3] = {dinp, dout, inp};
    const int vec_threads =
        rmsnorm_vec_threads(C, RMSNORM_BWD_VEC_THREADS, sizeof(TD), dinp_operand, rows, 3);
    if (vec_threads) {
        auto kernel = rmsnorm_backward_dinp_vec_kernel<TD>;
        kernel<<<blocks, vec_threads, smem, cuda_stream()>>>(dinp, dinp_operand, dw_partial, dout,
                                                             inp, weight, rstd, N, C);
        CUDA_LAUNCH_CHECK();
        return;
    }
    const int pairs = C % 2 == 0 && (uintptr_t)dinp % 8 == 0 && (uintptr_t)dinp_operand % 8 == 0;
    auto kernel = rmsnorm_backward_dinp_kernel<TD>;
    kernel<<<blocks, RMSNORM_THREADS, smem, cuda_stream()>>>(dinp, dinp_operand, dw_partial, dout,
                                                            inp, weight, rstd, N, C, pairs);
    CUDA_LAUNCH_CHECK();
}

/* Rows wider than RMSNORM_DW_FUSED_MAX_C: dweight (C) += sum over rows of dout * x * r, in a
 * pass of its own, reduced deterministically without atomics: stage 1 cuts the rows into chunks
 * (their number depends only on N); thread j of block (column block, chunk c) sums column j over
 * the rows of chunk c in order, in double, into partial (nchunks, C). Stage 2 is
 * rmsnorm_backward_dweight_final, as for the fused sums. Both stages read and write consecutive
 * j: coalesced. */
#define RMSNORM_DW_MAX_CHUNKS 128
#define RMSNORM_DW_MIN_ROWS 16

static __global__ void rmsnorm_backward_dweight_partial_kernel(double *partial, const float *dout,
                                                               const float *inp, const float *rstd,
                                                               int N, int C, int rows_per_chunk) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int chunk = blockIdx.y;
    if (j >= C) return; /* no block-wide synchronisation here */
    int n0 = chunk * rows_per_chunk;
    int n1 = n0 + rows_per_chunk < N ? n0 + rows_per_chunk : N;
    double acc = 0.0;
    for (int n = n0; n < n1; n++) {
        size_t at = (size_t)n * C + j;
        double r = rstd[n];
        acc += (double)dout[at] * inp[at] * r;
    }
    partial[(size_t)chunk * C + j] = acc;
}

/* dweight (C) += the column sums of partial (nparts, C). Each block takes RMSNORM_FINAL_COLS
 * columns with RMSNORM_FINAL_SLICES warps: warp s sums parts s, s + SLICES, ... of its lane's
 * column in order (each part a coalesced row of 32 doubles across the warp), then one warp adds
 * the slices' sums in slice order. The order depends only on nparts: deterministic. (One thread
 * per column over all parts, as before, left a handful of blocks each waiting on 1024 loads in
 * turn: 3.2 ms of an 830M step for 0.6 GB.) */
#define RMSNORM_FINAL_COLS 32
#define RMSNORM_FINAL_SLICES 32
static __global__ void __launch_bounds__(RMSNORM_FINAL_COLS *RMSNORM_FINAL_SLICES)
    rmsnorm_backward_dweight_final_kernel(float *dweight, const double *partial, int nparts,
                                          int C) {
    __shared__ double slice_sum[RMSNORM_FINAL_SLICES][RMSNORM_FINAL_COLS + 1];
    const int lane = threadIdx.x % RMSNORM_FINAL_COLS, slice = threadIdx.x / RMSNORM_FINAL_COLS;
    const int j = blockIdx.x * RMSNORM_FINAL_COLS + lane;
    double acc = 0.0;
    if (j < C)
        for (int p = slice; p < nparts; p += RMSNORM_FINAL_SLICES)
            acc += partial[(size_t)p * C + j];
    slice_sum[slice][lane] = acc;
    __syncthreads();
    if (slice != 0 || j >= C) return;
    double total = 0.0;
    for (int s = 0; s < RMSNORM_FINAL_SLICES; s++) total += slice_sum[s][lane];
    dweight[j] += (float)total;
}

/* dweight (C) += the column sums of partial (nparts, C), each in a fixed order */
static void rmsnorm_backward_dweight_final(float *dweight, const double *partial, int nparts,
                                           int C) {
    rmsnorm_backward_dweight_final_kernel<<<cuda_blocks((size_t)C, RMSNORM_FINAL_COLS),
                                            RMSNORM_FINAL_COLS * RMSNORM_FINAL_SLICES, 0,
                                            cuda_stream()>>>(dweight, partial, nparts, C);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_rmsnorm_backward(float *dinp, dt_operand *dinp_operand, float *dweight,
                                      const float *dout, const float *inp, const float *weight,
                                      const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    unsigned blocks = cuda_blocks((size_t)N, 1); /* a block per row */
    double *fused = NULL;                         /* dweight's partial sums from the dinp kernel */
    if (dweight && C <= RMSNORM_DW_FUSED_MAX_C) {
        blocks = N < RMSNORM_DW_BLOCKS ? (unsigned)N : RMSNORM_DW_BLOCKS;
        fused = (double *)cuda_workspace((size_t)blocks * C * sizeof(double)); /* (blocks, C) */
    } else if (dweight) {
        /* dweight first: it reads only dout, inp and rstd, so the order cannot matter unless
         * dinp aliases dout, and then this order is the one that reads dout unmodified */
        int rows_per_chunk = (N + RMSNORM_DW_MAX_CHUNKS - 1) / RMSNORM_DW_MAX_CHUNKS;
        if (rows_per_chunk < RMSNORM_DW_MIN_ROWS) rows_per_chunk = RMSNORM_DW_MIN_ROWS;
        int nchunks = (N + rows_per_chunk - 1) / rows_per_chunk; /* <= RMSNORM_DW_MAX_CHUNKS */
        double *partial =
            (double *)cuda_workspace((size_t)nchunks * C * sizeof(double)); /* (nchunks, C) */
        dim3 grid(cuda_blocks((size_t)C, RMSNORM_THREADS), (unsigned)nchunks);
        rmsnorm_backward_dweight_partial_kernel<<<grid, RMSNORM_THREADS, 0, cuda_stream()>>>(
            partial, dout, inp, rstd, N, C, rows_per_chunk);
        CUDA_LAUNCH_CHECK();
        rmsnorm_backward_dweight_final(dweight, partial, nchunks, C);
    }
    if (cuda_operand_bf16())
        rmsnorm_backward_dinp_launch(dinp, (operand_bf16 *)dinp_operand, fused, blocks, dout, inp,
                                     weight, rstd, N, C);
    else
        rmsnorm_backward_dinp_launch(dinp, (float *)dinp_operand, fused, blocks, dout, inp,
                                     weight, rstd, N, C);
    if (fused) rmsnorm_backward_dweight_final(dweight, fused, (int)blocks, C);
}
