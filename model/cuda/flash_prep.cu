/* The row terms of the fused attention's backward (flash_core.cuh), before its dq and dk/dv
 * kernels (flash_backward.cu). delta = sum_j P_ij dP_ij must match the dP those kernels form
 * from bf16 tiles: G is used rounded to bf16 here too (G . o_i = sum_j P_ij G . v_j then holds
 * up to the rounding of P; with fp32 G, a row of a single key, where dS = 0 exactly, would get
 * dS ~ u |G| |v|):
 *   standard / GQA: delta (B, nq, T) = bf16(G_i) . o_i per q-head and row (attn_delta of the
 *       tiled backward, with g_bf16);
 *   DIFF V1: the subln backward of diffattn_backward, fused with the per-branch delta: per row
 *       n = (b, t, h) of O (2d wide), G = dO (the gradient of O = o1 - lambda o2; stored rounded
 *       to bf16, the later kernels' input: as bf16 bits, or as floats for their fp32 test
 *       path), then
 *       delta_1 = G . o1 and delta_2 = -lambda (G . o2), each branch from its own output (SPEC
 *       trap: never from the combined O), and the partial sums of dgamma and of
 *       dlambda = -sum G . o2 (with the fp32 G: a sum over all rows, where cancellation is
 *       common).
 * dgamma and dlambda sum over all B*T*H rows deterministically: the rows are cut into fixed
 * chunks of 64 (by the sizes only), a block sums its chunk in double in a fixed order into a row
 * of partials, and diff_dgamma_dlambda_reduce adds the partials in a fixed order. */
#include <math.h>

#include "model/cuda/flash_core.cuh"

/* ---- DIFF: the chunks, rows and G = dO of the tiled backward's subln step
 * (diff_subln_row_backward, attn_core.cuh); then per row G stored rounded, the per-branch deltas,
 * and -G . o2 for dlambda; part[ch] (2d + 1 doubles) = {the chunk's sum of (1 - li) dY Ohat,
 * -sum of G . o2} (diff_chunk_partials) ---- */
/* G's element: the bf16 bits, or the rounded value as a float */
__device__ __forceinline__ void prep_store(flash_bf16 *p, float x) {
    *p = (flash_bf16)(pack_bf16x2(x, 0.0f) & 0xffffu);
}
__device__ __forceinline__ void prep_store(float *p, float x) { *p = round_bf16(x); }

template <typename TG, int U>
__global__ void __launch_bounds__(DIFF_WARPS * 32)
flash_diff_prep_kernel(TG *G, float *delta, double *part, const float *dout, const float *o1,
                       const float *o2, const float *rstd, const float *lambda,
                       const float *gamma, float out_scale, int T, int H, size_t n_rows, int d2) {
    __shared__ double sg[DIFF_WARPS][ATTN_CU_MAX_DV];
    __shared__ double sdl[DIFF_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t ch = blockIdx.x;
    const size_t first = ch * DIFF_ROWS_PER_CHUNK + (size_t)warp * DIFF_ROWS_PER_WARP;
    const size_t left = first < n_rows ? n_rows - first : 0;
    const int rows = left < DIFF_ROWS_PER_WARP ? (int)left : DIFF_ROWS_PER_WARP;
    const float lam = *lambda;
    const float *rs = gamma ? rstd : NULL;
    double gp[U], dl = 0.0;
    float gm[U];
#pragma unroll
    for (int u = 0; u < U; u++) gp[u] = 0.0;
    diff_gamma_load<U>(gm, gamma, d2, lane);

    /* Each row's loads all issued at once, into registers (diff_row_load): one trip to memory
     * a row. Loading each column where it is used, behind its column's guard and after the
     * previous column's G store (which the compiler must assume may alias o1 and o2), made
     * one trip a column: ncu measured 51% of DRAM bandwidth (205 us a call at 830M). One row's
     * registers at a time (78 at d = 96: three blocks of 8 warps an SM). */
    diff_row<U> cur;
#pragma unroll 1
    for (int rr = 0; rr < rows; rr++) { /* warp-uniform */
        const size_t n = first + rr;
        diff_row_load(cur, o1, o2, dout, rs, n, d2, lane);
        float go[U]; /* G of the row */
        diff_subln_row_backward(go, gp, cur, lam, gamma != NULL, gm, out_scale, d2, lane);
        double dot1 = 0.0, dot2 = 0.0, dlr = 0.0; /* G~ . o1, G~ . o2 (G~ = bf16(G)), G . o2 */
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = lane + 32 * u;
            if (e >= d2) continue;
            const float gr = round_bf16(go[u]);
            prep_store(G + n * d2 + e, go[u]);
            dot1 += (double)gr * cur.a1[u];
            dot2 += (double)gr * cur.a2[u];
            dlr += (double)go[u] * cur.a2[u];
        }
        dot1 = warp_sum(dot1);
        dot2 = warp_sum(dot2);
        dl -= warp_sum(dlr);
        if (lane == 0) { /* row n = (b*T + t)*H + h -> lse rows 2h, 2h + 1 of b */
            const size_t h = n % H, bt = n / H, t = bt % T, b = bt / T;
            const size_t l1 = (b * 2 * H + 2 * h) * T + t;
            delta[l1] = (float)dot1;
            delta[l1 + T] = (float)((double)(-lam) * dot2);
        }
    }

    diff_chunk_partials<U>(part, ch, sg, sdl, gp, dl, d2);
}

/* ---- host side ---- */

template <typename TG>
void flash_diff_prep(TG *G, float *delta, double *part, float *dgamma, float *dlambda,
                     const float *dout, const float *o1, const float *o2, const float *rstd,
                     const float *lambda, const float *gamma, float lambda_init,
                     const attn_map &m) {
    const int H = m.nq / 2, d2 = m.dv;
    const size_t n_rows = (size_t)m.B * m.T * H;
    if (n_rows == 0) return;
    const size_t n_chunks = diff_chunks(n_rows);
    /* columns per lane: the head dims of the fused kernels (d2 = 2d: 128, 192, 256) exactly,
     * others (attn_check's d2 <= ATTN_CU_MAX_DV) with the most */
    auto prep = d2 == 128 ? flash_diff_prep_kernel<TG, 4>
              : d2 == 192 ? flash_diff_prep_kernel<TG, 6>
                          : flash_diff_prep_kernel<TG, DIFF_U>;
    prep<<<(unsigned)n_chunks, DIFF_WARPS * 32, 0, cuda_stream()>>>(
        G, delta, part, dout, o1, o2, rstd, lambda, gamma, 1.0f - lambda_init, m.T, H, n_rows,
        d2);
    CUDA_LAUNCH_CHECK();
    diff_dgamma_dlambda_reduce(gamma ? dgamma : NULL, dlambda, part, n_chunks, d2);
}
template void flash_diff_prep<flash_bf16>(flash_bf16 *, float *, double *, float *, float *,
                                          const float *, const float *, const float *,
                                          const float *, const float *, const float *, float,
                                          const attn_map &);
template void flash_diff_prep<float>(float *, float *, double *, float *, float *, const float *,
                                     const float *, const float *, const float *, const float *,
                                     const float *, float, const attn_map &);
