/* Forward of DIFF V1's fused attention with V's columns split between the two branch warps of a
 * row group. flash_forward.cu's kernel (NB = 2) gives warp w of branch c = w / 4 the whole O_c of
 * its 16 rows, 2d columns: every V tile is read from shared memory by all 8 warps, 2d columns
 * each, one m16 fragment per loaded B fragment. Here the warps w and w ^ 4 (branches 1 and 2 of
 * rows 16 (w % 4)..) each still compute their own branch's S = Q_c K_c^T and online softmax, then
 * hand their P (bf16 A fragments) and its rescale factors to each other through shared memory,
 * and warp c keeps O_1 and O_2 of columns cd..cd + d - 1: each V fragment it loads, of d columns
 * instead of 2d, feeds both branches' P (flash_mma_b_x2). Per 64-key tile and warp at d = 96:
 * 12 KiB of K and 12 of V read, 2 of P written and 2 read, against 12 + 24 KiB; the same
 * products, the same registers for O (2 x 16 x d fp32 either way).
 *
 * The exchange costs no barrier of its own: the V tiles are staged one tile behind the K tiles,
 * and tile kt's P V waits for the next tile's barrier. Iteration kt (after the barrier that
 * says K_kt and V_kt-1 have landed and every warp is past iteration kt - 1) issues the copies of
 * K_kt+1 and V_kt into the buffers K_kt-1 and V_kt-2 held, rescales O and adds P_kt-1 V_kt-1
 * (the partner's P_kt-1 published before that barrier), then computes S_kt and its softmax and
 * publishes P_kt (two exchange slots a warp, by tile parity). One barrier per tile as in
 * flash_forward.cu, one more for the last tile's P V; S_kt's products do not depend on the
 * P V products before them. Shared memory: the same two K/V stages and Q, plus 36 KiB of
 * exchange slots: 208 KiB at d = 128.
 *
 * Same bits as flash_forward_kernel (test_cuda_flash): each branch's softmax of each tile is
 * that warp's, O_c's rescale and P_c V products reach each accumulator element in the same
 * order (the n8 tiles of O are independent), and the epilogue (flash_forward_diff_epilogue)
 * evaluates the same expressions, the rms's sum of squares in the same order: warp c = 0 sums
 * its columns, warp c = 1 continues from that sum. Which kernel runs is flash_diff_fwd_split
 * (flash_ops.cu: DIFFTRAIN_FLASH_DIFF_FWD, or the test switch of flash_test.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/flash_forward.cuh"

/* One warp's exchange slot: its P of a tile (the 4 k16 A fragments, one uint4 a lane, lanes
 * consecutive) and the factors its softmax rescaled O's rows by */
struct flash_p_slot {
    uint4 p[FLASH_BC / 16][32];
    float corr[2][32];
};
/* The epilogue's exchange: each warp's row sums l, the rms's partial sums of squares (branch-1
 * warps) and the 1/rms (branch-2 warps), per lane */
struct flash_diff_epi_xch {
    float l[2 * FLASH_WARPS][2][32];
    float ss[FLASH_WARPS][2][32];
    float rs[FLASH_WARPS][2][32];
};

template <int D> struct flash_split_layout {
    static constexpr int LDQ = D + FLASH_PAD, LDV = 2 * D + FLASH_PAD;
    /* elements of bf16: Q_1, Q_2; two stages of K_1, K_2; two V buffers */
    static constexpr size_t Q = 2 * FLASH_BR * LDQ, K = 2 * 2 * FLASH_BC * LDQ,
                            V = 2 * FLASH_BC * LDV;
    static constexpr size_t bytes(void) {
        return sizeof(flash_bf16) * (Q + K + V) + 2 * 2 * FLASH_WARPS * sizeof(flash_p_slot) +
               sizeof(flash_diff_epi_xch);
    }
};

/* After the last tile: as flash_forward_epilogue<2, 2d> (flash_forward.cuh), for warp c's
 * columns cd..cd + d - 1 of o[0], its own branch's O, and o[1], its partner's: lse of its
 * branch, o1 and o2 normalised by each branch's row sum, and with out the subln epilogue on
 * O = O_1 - lambda O_2. Every thread of the block calls it (barriers). */
template <int D>
__device__ __forceinline__ void flash_forward_diff_epilogue(
    float (*o)[D / 8][4], const float mrow[2], const float lrow[2], operand_bf16 *out, float *o1,
    float *o2, float *lse, const attn_map &m, const flash_diff_epi &epi, int b, int unit, int i0,
    int warp, int lane, flash_diff_epi_xch *x) {
    constexpr int NTH = D / 8, DV = 2 * D;
    const int c = warp / FLASH_WARPS, rw = warp % FLASH_WARPS, g = lane >> 2, t4 = lane & 3;
    const int T = m.T, j = 2 * unit + c, row0 = i0 + 16 * rw;
    const size_t os = attn_o_stride(m);
    const size_t o_at = (size_t)b * T * os + attn_o_col(m, j) + (size_t)c * D;
    float l[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = row0 + g + 8 * r;
        l[r] = flash_quad_sum(lrow[r]);
        x->l[warp][r][lane] = l[r];
        if (i < T && t4 == 0)
            lse[((size_t)b * m.nq + j) * T + i] = (mrow[r] + log2f(l[r])) * FLASH_LN2;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const float lp = x->l[warp ^ FLASH_WARPS][r][lane]; /* the other branch's */
        const float inv = 1.0f / l[r], invp = 1.0f / lp;
        const int i = row0 + g + 8 * r;
#pragma unroll
        for (int nt = 0; nt < NTH; nt++) {
            o[0][nt][2 * r] *= inv;
            o[0][nt][2 * r + 1] *= inv;
            o[1][nt][2 * r] *= invp;
            o[1][nt][2 * r + 1] *= invp;
        }
        if (i < T) {
            float *own = c == 0 ? o1 : o2, *other = c == 0 ? o2 : o1;
#pragma unroll
            for (int nt = 0; nt < NTH; nt++) {
                const size_t at = o_at + (size_t)i * os + 8 * nt + 2 * t4;
                operand_store2(own, at, o[0][nt][2 * r], o[0][nt][2 * r + 1]);
                operand_store2(other, at, o[1][nt][2 * r], o[1][nt][2 * r + 1]);
            }
        }
    }
    if (!out) return; /* block-uniform */

    const float lam = *epi.lambda;
    float ss[2] = {0.0f, 0.0f}, rs[2] = {1.0f, 1.0f};
    auto combine = [&](void) { /* O = O_1 - lambda O_2 into o[0], and its sum of squares */
#pragma unroll
        for (int nt = 0; nt < NTH; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float v = c == 0 ? o[0][nt][e] - lam * o[1][nt][e]
                                       : o[1][nt][e] - lam * o[0][nt][e];
                o[0][nt][e] = v;
                ss[e >> 1] += v * v;
            }
    };
    if (epi.gamma) { /* block-uniform: warp c = 1 continues warp c = 0's sums (same order) */
        if (c == 0) {
            combine();
            x->ss[rw][0][lane] = ss[0];
            x->ss[rw][1][lane] = ss[1];
        }
        __syncthreads();
        if (c == 1) {
            ss[0] = x->ss[rw][0][lane];
            ss[1] = x->ss[rw][1][lane];
            combine();
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int i = row0 + g + 8 * r;
                rs[r] = 1.0f / sqrtf(flash_quad_sum(ss[r]) / DV + epi.eps);
                x->rs[rw][r][lane] = rs[r];
                if (epi.rstd && i < T && t4 == 0) /* rstd (B, T, H) */
                    epi.rstd[((size_t)b * T + i) * (m.nq / 2) + unit] = rs[r];
            }
        }
        __syncthreads();
        if (c == 0) {
            rs[0] = x->rs[rw][0][lane];
            rs[1] = x->rs[rw][1][lane];
        }
    } else {
        combine();
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = row0 + g + 8 * r;
        if (i >= T) continue;
#pragma unroll
        for (int nt = 0; nt < NTH; nt++) {
            const int col = c * D + 8 * nt + 2 * t4;
            const float g0 = epi.gamma ? epi.gamma[col] : 1.0f;
            const float g1 = epi.gamma ? epi.gamma[col + 1] : 1.0f;
            operand_store2(out, o_at + (size_t)i * os + 8 * nt + 2 * t4,
                           epi.out_scale * (o[0][nt][2 * r] * rs[r]) * g0,
                           epi.out_scale * (o[0][nt][2 * r + 1] * rs[r]) * g1);
        }
    }
}

template <typename Tin, int D>
__global__ void __launch_bounds__(2 * FLASH_WARPS * 32)
flash_forward_diff_split_kernel(operand_bf16 *out, float *o1, float *o2, float *lse, const Tin *q,
                                const Tin *k, const Tin *v, attn_map m, float scale_log2,
                                flash_diff_epi epi) {
    typedef flash_split_layout<D> L;
    extern __shared__ uint4 flash_smem[];
    constexpr int NT = 2 * FLASH_WARPS * 32, NTH = D / 8, DV = 2 * D;
    flash_bf16 *Qs = (flash_bf16 *)flash_smem; /* 2 x (BR, D): Q_1, Q_2 */
    flash_bf16 *Kb = Qs + L::Q;                /* 2 buffers of 2 x (BC, D): K_1, K_2 */
    flash_bf16 *Vb = Kb + L::K;                /* 2 buffers of (BC, 2d) */
    flash_p_slot *X = (flash_p_slot *)(Vb + L::V); /* [tile parity][warp] */
    flash_diff_epi_xch *E = (flash_diff_epi_xch *)(X + 2 * 2 * FLASH_WARPS);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int c = warp / FLASH_WARPS, rw = warp % FLASH_WARPS; /* branch, row group */
    const int T = m.T, b = blockIdx.z, unit = blockIdx.y;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * FLASH_BR, nr = min(FLASH_BR, T - i0);
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * DV;

    const Tin *kh[2];
    for (int cc = 0; cc < 2; cc++) {
        flash_stage<Tin, D, NT>(Qs + cc * FLASH_BR * L::LDQ,
                                q + (size_t)b * T * qs + (size_t)(2 * unit + cc) * D, qs, i0, nr,
                                tid);
        kh[cc] = k + (size_t)b * T * ks + (size_t)attn_k_head(m, 2 * unit + cc) * D;
    }
    const Tin *vh = v + (size_t)b * T * vs + (size_t)attn_v_head(m, 2 * unit) * DV;
    const flash_tile_stager<Tin, D, NT> k_stager(ks, tid);
    const flash_tile_stager<Tin, DV, NT> v_stager(vs, tid);
    auto stage_k = [&](int kt) { /* K_1, K_2 of tile kt into buffer kt & 1 */
        const int j0 = kt * FLASH_BC, nc = min(FLASH_BC, T - j0);
#pragma unroll
        for (int cc = 0; cc < 2; cc++)
            k_stager.stage(Kb + ((kt & 1) * 2 + cc) * FLASH_BC * L::LDQ, kh[cc], ks, j0, nc);
    };
    auto stage_v = [&](int kt) { /* V of tile kt into buffer kt & 1 */
        const int j0 = kt * FLASH_BC;
        v_stager.stage(Vb + (kt & 1) * FLASH_BC * L::LDV, vh, vs, j0, min(FLASH_BC, T - j0));
    };
    stage_k(0);
    cp_async_commit(); /* Q and K_0 */

    float o[2][NTH][4]; /* O of this warp's branch, then of the partner's; columns cd.. */
    flash_zero<NTH>(o[0]);
    flash_zero<NTH>(o[1]);
    float mrow[2] = {FLASH_MASKED, FLASH_MASKED}, lrow[2]; /* rows g, g + 8 */
    float lsum[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* the row sums (flash_row_sum_mma) */
    uint32_t p[FLASH_BC / 16][4] = {}; /* this warp's P of the last tile, and its rescale */
    float corr[2] = {1.0f, 1.0f};
    const flash_bf16 *Qw = Qs + c * FLASH_BR * L::LDQ;
    const int partner = warp ^ FLASH_WARPS;
    /* d <= 96: the warp's Q fragments stay in registers (the same for every key tile; at d = 128
     * they would not fit beside O) */
    constexpr bool QREG = D <= 96;
    uint32_t qa[QREG ? D / 16 : 1][4];
    if constexpr (QREG) {
        cp_async_wait<0>(); /* Q and K_0 */
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            ldmatrix_x4(qa[kk], flash_a_row(Qw, L::LDQ, 16 * rw, 16 * kk, lane));
    }

    /* O = O * corr + P V for tile t: this warp's P and corr, the partner's from slot t & 1 */
    auto pv = [&](int t) {
        const flash_p_slot *xs = X + (t & 1) * 2 * FLASH_WARPS + partner;
        const float cp[2] = {xs->corr[0][lane], xs->corr[1][lane]};
        flash_rescale<NTH>(o[0], corr);
        flash_rescale<NTH>(o[1], cp);
        const flash_bf16 *Vs = Vb + (t & 1) * FLASH_BC * L::LDV;
#pragma unroll
        for (int kk = 0; kk < FLASH_BC / 16; kk++) {
            const uint4 w = xs->p[kk][lane]; /* the partner's P of keys 16kk.. */
            const uint32_t q4[4] = {w.x, w.y, w.z, w.w};
            flash_mma_b_x2<D / 16>(o, p[kk], q4, Vs, L::LDV, 16 * kk, c * D, lane);
        }
    };

    const int n_kt = (i0 + nr + FLASH_BC - 1) / FLASH_BC; /* up to the diagonal tile */
    for (int kt = 0; kt < n_kt; kt++) {
        const int j0 = kt * FLASH_BC;
        cp_async_wait<0>(); /* K_kt and V_kt-1 */
        __syncthreads();
        if (kt + 1 < n_kt) stage_k(kt + 1);
        stage_v(kt);
        cp_async_commit();
        if (kt > 0) pv(kt - 1);

        float s[FLASH_BC / 8][4];
        flash_zero<FLASH_BC / 8>(s);
        const flash_bf16 *Ks = Kb + ((kt & 1) * 2 + c) * FLASH_BC * L::LDQ;
        if constexpr (QREG) { /* flash_mma_abt's order */
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                flash_mma_bt<FLASH_BC / 16>(s, qa[kk], Ks, L::LDQ, 0, 16 * kk, lane);
        } else {
            flash_mma_abt<D / 16, FLASH_BC / 8>(s, Qw, L::LDQ, 16 * rw, Ks, L::LDQ, 0, lane);
        }
        const bool diag = j0 + FLASH_BC - 1 > i0 + 16 * rw; /* keys past a row: mask */
        flash_softmax_tile<FLASH_SUM_MMA>(s, p, mrow, lrow, corr, scale_log2, diag, i0 + 16 * rw,
                                          j0, lane);
        flash_row_sum_mma(lsum, p, corr);
        flash_p_slot *mine = X + (kt & 1) * 2 * FLASH_WARPS + warp;
#pragma unroll
        for (int kk = 0; kk < FLASH_BC / 16; kk++)
            mine->p[kk][lane] = make_uint4(p[kk][0], p[kk][1], p[kk][2], p[kk][3]);
        mine->corr[0][lane] = corr[0];
        mine->corr[1][lane] = corr[1];
    }
    cp_async_wait<0>(); /* V of the last tile */
    __syncthreads();
    pv(n_kt - 1);

    flash_row_sum_parts(lrow, lsum);
    flash_forward_diff_epilogue<D>(o, mrow, lrow, out, o1, o2, lse, m, epi, b, unit, i0, warp,
                                   lane, E);
}

/* ---- host side ---- */

size_t flash_forward_diff_split_smem(int d) { return flash_layout_smem<flash_split_layout>(d); }

template <typename Tin, int D>
static void flash_forward_diff_split_launch(operand_bf16 *out, float *o1, float *o2, float *lse,
                                            const Tin *q, const Tin *k, const Tin *v,
                                            const attn_map &m, const flash_diff_epi &epi) {
    auto kernel = flash_forward_diff_split_kernel<Tin, D>;
    const size_t smem = flash_split_layout<D>::bytes();
    flash_smem_prepare((const void *)kernel, smem, "the split DIFF forward kernel");
    const dim3 grid((unsigned)((m.T + FLASH_BR - 1) / FLASH_BR), (unsigned)(m.nq / 2),
                    (unsigned)m.B);
    const float scale_log2 = FLASH_LOG2E / sqrtf((float)D);
    kernel<<<grid, 2 * FLASH_WARPS * 32, smem, cuda_stream()>>>(out, o1, o2, lse, q, k, v, m,
                                                                scale_log2, epi);
    CUDA_LAUNCH_CHECK();
}

/* flash_core_forward's branch for DIFF V1: m passed its flash_check, B and T > 0 */
template <typename Tin>
void flash_forward_diff_split(operand_bf16 *out, float *o1, float *o2, float *lse, const Tin *q,
                              const Tin *k, const Tin *v, const attn_map &m,
                              const flash_diff_epi &epi) {
    if (!m.diff) {
        fprintf(stderr, "difftrain: error: CUDA fused attention: the split-V forward is for DIFF "
                "V1, not standard heads\n");
        fflush(stderr);
        abort();
    }
    switch (m.d) {
    case 64: flash_forward_diff_split_launch<Tin, 64>(out, o1, o2, lse, q, k, v, m, epi); break;
    case 96: flash_forward_diff_split_launch<Tin, 96>(out, o1, o2, lse, q, k, v, m, epi); break;
    case 128: flash_forward_diff_split_launch<Tin, 128>(out, o1, o2, lse, q, k, v, m, epi); break;
    }
}
template void flash_forward_diff_split<flash_bf16>(operand_bf16 *, float *, float *, float *,
                                                   const flash_bf16 *, const flash_bf16 *,
                                                   const flash_bf16 *, const attn_map &,
                                                   const flash_diff_epi &);
template void flash_forward_diff_split<float>(operand_bf16 *, float *, float *, float *,
                                              const float *, const float *, const float *,
                                              const attn_map &, const flash_diff_epi &);
