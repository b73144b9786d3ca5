/* Differential attention V1 on the GPU (SPEC sections 2 and 3), matching cpu_diffattn_*.
 *
 * The two branches of every DIFF head are standard causal attention with the DIFF head mapping
 * of attn_core.cuh (q-head 2h + c, k-head 2g + c, v-head g of width 2d, g = h / (H / Hkv)), so
 * the forward is the core's forward into o1, o2, lse plus a combine kernel (O = o1 - lambda o2,
 * subln, (1 - lambda_init)), and the backward is a subln-backward kernel (dY -> dO, with the
 * dgamma / dlambda partial sums) plus the core's backward with G = dO and the branch scales
 * (1, -lambda): delta per branch, never from the combined O (SPEC trap).
 *
 * dgamma (2d) and dlambda sum over all B*T*H rows. Deterministically: the rows are cut into
 * fixed chunks of DIFF_ROWS_PER_CHUNK (the cut depends on the sizes only), each block sums its
 * chunk in double in a fixed order into a partial row of the workspace, and
 * diff_dgamma_dlambda_reduce adds the partials in a fixed order (in double, as the CPU oracle) to
 * dgamma and dlambda. o1, o2 are fp32 (the backward's inputs); out is a dt_operand, written in
 * the backend's format (operand.cuh) from the same fp32 values; q, k, v are dt_operands, read
 * in that format by the core (attn_core_forward / _backward's TI), and so is the backward's dv,
 * stored in it. */
#include <math.h>

#include "model/cuda/attn_core.cuh"
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

/* One warp per row n = (b*T + t)*H + h of O (2d wide): out = (1 - lambda_init) * subln(O) * gamma
 * (rstd (n) = 1/rms(O), written when non-NULL), or (1 - lambda_init) * O without gamma. */
template <typename TO>
__global__ void diff_combine_kernel(TO *out, float *rstd, const float *o1, const float *o2,
                                    const float *lambda, const float *gamma, float out_scale,
                                    float eps, size_t n_rows, int d2) {
    const size_t n_warps = ((size_t)gridDim.x * blockDim.x) >> 5;
    const int lane = threadIdx.x & 31;
    const float lam = *lambda;
    /* n is the same for the 32 lanes of a warp: the loop and the shuffles are warp-uniform */
    for (size_t n = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; n < n_rows;
         n += n_warps) {
        const float *a1 = o1 + n * d2, *a2 = o2 + n * d2; /* (2d) */
        TO *y = out + n * d2;                             /* (2d) */
        if (gamma) {
            double ss = 0.0;
            for (int e = lane; e < d2; e += 32) {
                const float oe = a1[e] - lam * a2[e];
                ss += (double)oe * oe;
            }
            ss = warp_sum(ss);
            const float rs = (float)(1.0 / sqrt(ss / d2 + (double)eps));
            if (rstd && lane == 0) rstd[n] = rs;
            for (int e = lane; e < d2; e += 32)
                operand_store(y, e, out_scale * ((a1[e] - lam * a2[e]) * rs) * gamma[e]);
        } else {
            for (int e = lane; e < d2; e += 32)
                operand_store(y, e, out_scale * (a1[e] - lam * a2[e]));
        }
    }
}

template <typename TO>
static void diff_combine_launch(TO *out, float *rstd, const float *o1, const float *o2,
                                const float *lambda, const float *gamma, float out_scale,
                                float eps, size_t n_rows, int d2) {
    auto kernel = diff_combine_kernel<TO>;
    kernel<<<cuda_blocks(n_rows * 32, 256), 256, 0, cuda_stream()>>>(
        out, rstd, o1, o2, lambda, gamma, out_scale, eps, n_rows, d2);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_diffattn_forward(dt_operand *out, float *o1, float *o2, float *lse,
                                      float *rstd, const dt_operand *q, const dt_operand *k,
                                      const dt_operand *v, const float *lambda,
                                      const float *gamma, float lambda_init, float eps, int B,
                                      int T, int H, int Hkv, int d) {
    const attn_map m = attn_map_diff(B, T, H, Hkv, d);
    typedef operand_bf16 bf;
    if (cuda_operand_bf16())
        attn_core_forward(o1, o2, lse, (const bf *)q, (const bf *)k, (const bf *)v, m);
    else
        attn_core_forward(o1, o2, lse, (const float *)q, (const float *)k, (const float *)v, m);
    const size_t n_rows = (size_t)B * T * H;
    if (n_rows == 0) return;
    if (cuda_operand_bf16())
        diff_combine_launch((operand_bf16 *)out, rstd, o1, o2, lambda, gamma, 1.0f - lambda_init,
                            eps, n_rows, 2 * d);
    else
        diff_combine_launch((float *)out, rstd, o1, o2, lambda, gamma, 1.0f - lambda_init, eps,
                            n_rows, 2 * d);
}

/* Block ch handles rows [ch*64, (ch+1)*64), a warp DIFF_ROWS_PER_WARP consecutive ones; per row
 * dO (diff_subln_row_backward, attn_core.cuh), written to dO (n, 2d); part[ch] (2d + 1 doubles)
 * = {sum over the chunk's rows of (1 - li) dY Ohat (dgamma), -sum of dO . o2 (dlambda)}: each
 * lane sums its columns over its warp's rows in row order, then thread e sums the 8 warps in warp
 * order (diff_chunk_partials). */
__global__ void __launch_bounds__(DIFF_WARPS * 32)
diff_subln_backward_kernel(float *dO, double *part, const float *dout, const float *o1,
                           const float *o2, const float *rstd, const float *lambda,
                           const float *gamma, float out_scale, size_t n_rows, int d2) {
    __shared__ double sg[DIFF_WARPS][ATTN_CU_MAX_DV];
    __shared__ double sdl[DIFF_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t ch = blockIdx.x;
    const float lam = *lambda;
    double gp[DIFF_U], dl = 0.0;
    float gm[DIFF_U];
#pragma unroll
    for (int u = 0; u < DIFF_U; u++) gp[u] = 0.0;
    diff_gamma_load<DIFF_U>(gm, gamma, d2, lane);

    for (int rr = 0; rr < DIFF_ROWS_PER_WARP; rr++) {
        const size_t n = ch * DIFF_ROWS_PER_CHUNK + (size_t)warp * DIFF_ROWS_PER_WARP + rr;
        if (n >= n_rows) break; /* warp-uniform */
        diff_row<DIFF_U> r;
        diff_row_load(r, o1, o2, dout, gamma ? rstd : NULL, n, d2, lane);
        float go[DIFF_U]; /* dO of the row */
        diff_subln_row_backward(go, gp, r, lam, gamma != NULL, gm, out_scale, d2, lane);
        double rowdl = 0.0;
#pragma unroll
        for (int u = 0; u < DIFF_U; u++) {
            const int e = lane + 32 * u;
            if (e >= d2) continue;
            dO[n * d2 + e] = go[u];
            rowdl += (double)go[u] * r.a2[u];
        }
        dl -= warp_sum(rowdl);
    }
    diff_chunk_partials<DIFF_U>(part, ch, sg, sdl, gp, dl, d2);
}

/* dgamma[e] += sum over chunks of part[ch][e] (e < 2d, when dgamma is non-NULL); *dlambda +=
 * the same of part[ch][2d]. One block per column e: thread t sums chunks t, t + 256, ... in
 * order, then block_sum adds the 256 partial sums (deterministic: the order depends on the
 * sizes only). One block for all columns, each summing every chunk serially, took
 * 0.11 ms per call at 830M (5 ms of an H100 training step). */
#define DIFF_REDUCE_THREADS 256
static __global__ void __launch_bounds__(DIFF_REDUCE_THREADS)
diff_reduce_kernel(float *dgamma, float *dlambda, const double *part, size_t n_chunks, int d2) {
    __shared__ double scratch[32];
    const int e = blockIdx.x, t = threadIdx.x;
    double acc = 0.0;
    for (size_t ch = (size_t)t; ch < n_chunks; ch += DIFF_REDUCE_THREADS)
        acc += part[ch * (size_t)(d2 + 1) + e];
    acc = block_sum(acc, scratch);
    if (t != 0) return;
    if (e < d2) {
        if (dgamma) dgamma[e] += (float)acc;
    } else if (dlambda) {
        dlambda[0] += (float)acc;
    }
}

void diff_dgamma_dlambda_reduce(float *dgamma, float *dlambda, const double *part,
                                size_t n_chunks, int d2) {
    diff_reduce_kernel<<<(unsigned)(d2 + 1), DIFF_REDUCE_THREADS, 0, cuda_stream()>>>(
        dgamma, dlambda, part, n_chunks, d2);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_diffattn_backward(float *dq, float *dk, dt_operand *dv, float *dgamma,
                                       float *dlambda, const float *dout, const dt_operand *q,
                                       const dt_operand *k, const dt_operand *v, const float *o1,
                                       const float *o2, const float *lse, const float *rstd,
                                       const float *lambda, const float *gamma,
                                       float lambda_init, int B, int T, int H, int Hkv, int d) {
    const attn_map m = attn_map_diff(B, T, H, Hkv, d);
    attn_check(m);
    const int d2 = 2 * d;
    const size_t n_rows = (size_t)B * T * H;
    if (n_rows == 0) return;
    const size_t n_chunks = diff_chunks(n_rows);

    /* workspace: part (n_chunks, 2d + 1) doubles | dO (B, T, H*2d) | delta (B, 2H, T) */
    const size_t part_bytes = attn_ws_align(n_chunks * (size_t)(d2 + 1) * sizeof(double));
    const size_t dO_bytes = attn_ws_align(n_rows * (size_t)d2 * sizeof(float));
    const size_t delta_bytes = (size_t)B * 2 * H * T * sizeof(float);
    char *ws = (char *)cuda_workspace(part_bytes + dO_bytes + delta_bytes);
    double *part = (double *)ws;
    float *dO = (float *)(ws + part_bytes);
    float *delta = (float *)(ws + part_bytes + dO_bytes);

    diff_subln_backward_kernel<<<(unsigned)n_chunks, DIFF_WARPS * 32, 0, cuda_stream()>>>(
        dO, part, dout, o1, o2, rstd, lambda, gamma, 1.0f - lambda_init, n_rows, d2);
    CUDA_LAUNCH_CHECK();
    diff_dgamma_dlambda_reduce(gamma ? dgamma : NULL, dlambda, part, n_chunks, d2);
    typedef operand_bf16 bf;
    if (cuda_operand_bf16())
        attn_core_backward(dq, dk, (bf *)dv, delta, dO, o1, o2, (const bf *)q, (const bf *)k,
                           (const bf *)v, lse, lambda, m);
    else
        attn_core_backward(dq, dk, (float *)dv, delta, dO, o1, o2, (const float *)q,
                           (const float *)k, (const float *)v, lse, lambda, m);
}
