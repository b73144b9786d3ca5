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

template <typename TO>
static void rmsnorm_forward_launch(TO *out, float *rstd, float *y, const float *inp,
                                   const float *a, const float *b, const float *weight, int N,
                                   int C, float eps) {
    auto kernel = rmsnorm_forward_kernel<TO>;
    kernel<<<cuda_blocks((size_t)N, 1), RMSNORM_THREADS, 0, cuda_stream()>>>(out, rstd, y, inp, a,
                                                                              b, weight, N, C, eps);
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
static __device__ __forceinline__ float rmsnorm_dinp_term(const float *dy, const float *x,
                                                          const float *weight, int i, double r,
                                                          double coef) {
    double g = (double)dy[i] * (weight ? weight[i] : 1.0f);
    return (float)(r * (g - x[i] * coef));
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

template <typename TD>
static void rmsnorm_backward_dinp_launch(float *dinp, TD *dinp_operand, double *dw_partial,
                                         unsigned blocks, const float *dout, const float *inp,
                                         const float *weight, const float *rstd, int N, int C) {
    const int pairs = C % 2 == 0 && (uintptr_t)dinp % 8 == 0 && (uintptr_t)dinp_operand % 8 == 0;
    const size_t smem = dw_partial ? (size_t)C * sizeof(double) : 0;
    auto kernel = rmsnorm_backward_dinp_kernel<TD>;
    kernel<<<blocks, RMSNORM_THREADS, smem, cuda_stream()>>>(dinp, dinp_operand, dw_partial, dout,
                                                            inp, weight, rstd, N, C, pairs);
    CUDA_LAUNCH_CHECK();
}

/* Rows wider than RMSNORM_DW_FUSED_MAX_C: dweight (C) += sum over rows of dout * x * r, in a
 * pass of its own, reduced deterministically without atomics: stage 1 cuts the rows into chunks (their number depends only on N); thread j of block
 * (column block, chunk c) sums column j over the rows of chunk c in order, in double, into
 * partial (nchunks, C). Stage 2: thread j adds partial[0..nchunks)[j] in order and adds the
 * total to dweight[j] once. Both stages read and write consecutive j: coalesced. */
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

static __global__ void rmsnorm_backward_dweight_final_kernel(float *dweight, const double *partial,
                                                             int nchunks, int C) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    double acc = 0.0;
    for (int c = 0; c < nchunks; c++) acc += partial[(size_t)c * C + j];
    dweight[j] += (float)acc;
}

/* dweight (C) += the column sums of partial (nparts, C), each in order */
static void rmsnorm_backward_dweight_final(float *dweight, const double *partial, int nparts,
                                           int C) {
    rmsnorm_backward_dweight_final_kernel<<<cuda_blocks((size_t)C, RMSNORM_THREADS),
                                            RMSNORM_THREADS, 0, cuda_stream()>>>(dweight, partial,
                                                                                 nparts, C);
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
