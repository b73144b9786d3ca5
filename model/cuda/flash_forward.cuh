/* The fused forward's per-row work, shared by its two kernels (flash_forward.cu on mma.sync,
 * flash_forward_sm90.cu on wgmma): both keep a warp's 16 rows of S and O in the m16n8 C-fragment
 * layout (mma.cuh; wgmma's accumulators are the same per warp), so the online softmax of a key
 * tile and the epilogue are the same code. Internal to model/cuda. */
#ifndef DT_CUDA_FLASH_FORWARD_CUH
#define DT_CUDA_FLASH_FORWARD_CUH

#include <math.h>

#include "model/cuda/flash_core.cuh"

/* flash_softmax_tile's work, with the causal mask (MASK) or without: the row maximum is taken
 * over the raw scores (scaling by scale_log2 > 0 keeps the order) and each probability is
 * exp2(fma(s, scale_log2, -max)), one fused multiply-add per score. */
template <bool MASK>
__device__ __forceinline__ void flash_softmax_rows(const float (*s)[4], float (*pr)[4],
                                                   float mrow[2], float lrow[2], float corr[2],
                                                   float scale_log2, int row0, int j0, int lane) {
    const int g = lane >> 2, t4 = lane & 3;
    auto masked = [&](int nt, int r, int e) {
        return MASK && j0 + 8 * nt + 2 * t4 + e > row0 + g + 8 * r;
    };
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float raw = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < FLASH_BC / 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++)
                if (!masked(nt, r, e)) raw = fmaxf(raw, s[nt][2 * r + e]);
        const float mx = fmaxf(mrow[r], flash_quad_max(raw) * scale_log2);
        corr[r] = flash_exp2(mrow[r] - mx); /* 0 on the first tile, 1 if unmoved */
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < FLASH_BC / 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float pe = masked(nt, r, e)
                                     ? 0.0f
                                     : flash_exp2(fmaf(s[nt][2 * r + e], scale_log2, -mx));
                pr[nt][2 * r + e] = pe;
                sum += pe;
            }
        mrow[r] = mx;
        lrow[r] = lrow[r] * corr[r] + sum; /* this lane's part of the row sum */
    }
}

/* One key tile's online softmax for the warp's rows row0 + g and row0 + g + 8 (g = lane >> 2):
 * the scores s (16 x 64, C fragments), in the log2 domain once scaled by scale_log2 and masked
 * past each row when diag (the tile reaches past the warp's first row; warp-uniform: the other
 * tiles skip the mask's compares), become probabilities exp2(s - max), rounded to bf16 into p,
 * the A fragments of the 4 k16 steps of P V; the running max mrow (scaled) and this lane's part
 * of the sum lrow are updated, and corr[r] is the factor by which the max's move rescales O's
 * row r (flash_rescale). s is only read: the sm_90 kernel runs this while s's registers belong
 * to a product in flight (ptxas serialises the products when other instructions write an
 * accumulator then). */
__device__ __forceinline__ void flash_softmax_tile(const float (*s)[4], uint32_t (*p)[4],
                                                   float mrow[2], float lrow[2], float corr[2],
                                                   float scale_log2, bool diag, int row0, int j0,
                                                   int lane) {
    float pr[FLASH_BC / 8][4]; /* the probabilities, fp32 */
    if (diag)
        flash_softmax_rows<true>(s, pr, mrow, lrow, corr, scale_log2, row0, j0, lane);
    else
        flash_softmax_rows<false>(s, pr, mrow, lrow, corr, scale_log2, row0, j0, lane);
#pragma unroll
    for (int kk = 0; kk < FLASH_BC / 16; kk++) flash_c_to_a(p[kk], pr, kk);
}

/* O's rows g and g + 8 (NTV n8 tiles) times corr[0] and corr[1]; nothing when no row of the
 * warp moved its max (every factor 1: the product would be O itself) */
template <int NTV>
__device__ __forceinline__ void flash_rescale(float (*o)[4], const float corr[2]) {
    if (__all_sync(0xffffffffu, corr[0] == 1.0f && corr[1] == 1.0f)) return;
#pragma unroll
    for (int nt = 0; nt < NTV; nt++) {
        o[nt][0] *= corr[0];
        o[nt][1] *= corr[0];
        o[nt][2] *= corr[1];
        o[nt][3] *= corr[1];
    }
}

/* The block-wide barrier, flash_forward_epilogue's default */
struct flash_block_sync {
    __device__ __forceinline__ void operator()(void) const { __syncthreads(); }
};

/* After the last key tile: normalises O; writes out (standard) or o_c (DIFF), and lse, of the
 * rows < T; for DIFF with out, the subln epilogue of diffattn_forward (flash_forward.cu's header):
 * the branch-2 warps hand O_2 to the branch-1 warps through xch (shared memory of 4 x 32 x DV/2
 * floats, free to overwrite: the caller's tiles are consumed; two barriers, sync(), so every
 * thread that sync() waits for calls this: the block's, or a warp-specialised kernel's consumer
 * warps on a named barrier). As in the kernels: the block's head unit (a q-head, or a DIFF
 * head), its first row i0, and warp w (of the warps computing O) runs branch w / 4 on rows
 * i0 + 16 (w % 4).. + 15. */
template <int NB, int DV, typename Sync = flash_block_sync>
__device__ __forceinline__ void flash_forward_epilogue(float (*o)[4], const float mrow[2],
                                                       const float lrow[2], operand_bf16 *out,
                                                       float *o1, float *o2, float *lse,
                                                       const attn_map &m,
                                                       const flash_diff_epi &epi, int b, int unit,
                                                       int i0, int warp, int lane, float *xch,
                                                       Sync sync = Sync()) {
    constexpr int NTV = DV / 8;
    const int c = warp / FLASH_WARPS, rw = warp % FLASH_WARPS, g = lane >> 2, t4 = lane & 3;
    const int T = m.T, j = NB == 2 ? 2 * unit + c : unit; /* this warp's q-head */
    const size_t os = attn_o_stride(m);
    const size_t o_at = (size_t)b * T * os + attn_o_col(m, j); /* row 0 of this head's columns */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = i0 + 16 * rw + g + 8 * r;
        const float l = flash_quad_sum(lrow[r]);
        const float inv = 1.0f / l; /* l >= 1: the row max contributes exp2(0) */
#pragma unroll
        for (int nt = 0; nt < NTV; nt++) {
            o[nt][2 * r] *= inv;
            o[nt][2 * r + 1] *= inv;
        }
        if (i < T) {
#pragma unroll
            for (int nt = 0; nt < NTV; nt++) {
                const size_t at = o_at + (size_t)i * os + 8 * nt + 2 * t4;
                if (NB == 1)
                    operand_store2(out, at, o[nt][2 * r], o[nt][2 * r + 1]);
                else
                    operand_store2(attn_o_buf(m, j) ? o2 : o1, at, o[nt][2 * r], o[nt][2 * r + 1]);
            }
            if (t4 == 0) lse[((size_t)b * m.nq + j) * T + i] = (mrow[r] + log2f(l)) * FLASH_LN2;
        }
    }
    if (NB == 1 || !out) return; /* block-uniform */

    /* DIFF epilogue: branch 2 hands O_2 over in fragment order (one float per lane and slot,
     * lanes consecutive: no bank conflicts), branch 1 combines; xch: (4 warps, NTV * 4, 32
     * lanes) */
    sync();
    if (c == 1) {
#pragma unroll
        for (int nt = 0; nt < NTV; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) xch[((rw * NTV + nt) * 4 + e) * 32 + lane] = o[nt][e];
    }
    sync();
    if (c == 1) return; /* warp-uniform; no barrier follows */
    const float lam = *epi.lambda;
    float ss[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < NTV; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float x = o[nt][e] - lam * xch[((rw * NTV + nt) * 4 + e) * 32 + lane];
            o[nt][e] = x;
            ss[e >> 1] += x * x;
        }
    const size_t out_at = o_at; /* out has o1's layout */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = i0 + 16 * rw + g + 8 * r;
        const float rs = epi.gamma ? 1.0f / sqrtf(flash_quad_sum(ss[r]) / DV + epi.eps) : 1.0f;
        if (i >= T) continue;
        if (epi.gamma && epi.rstd && t4 == 0) /* rstd (B, T, H) */
            epi.rstd[((size_t)b * T + i) * (m.nq / 2) + unit] = rs;
#pragma unroll
        for (int nt = 0; nt < NTV; nt++) {
            const int col = 8 * nt + 2 * t4;
            const float g0 = epi.gamma ? epi.gamma[col] : 1.0f;
            const float g1 = epi.gamma ? epi.gamma[col + 1] : 1.0f;
            operand_store2(out, out_at + (size_t)i * os + col,
                           epi.out_scale * (o[nt][2 * r] * rs) * g0,
                           epi.out_scale * (o[nt][2 * r + 1] * rs) * g1);
        }
    }
}

#endif
