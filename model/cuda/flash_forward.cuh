/* The fused forward's per-row work, shared by its two kernels (flash_forward.cu on mma.sync,
 * flash_forward_sm90.cu on wgmma): both keep a warp's 16 rows of S and O in the m16n8 C-fragment
 * layout (mma.cuh; wgmma's accumulators are the same per warp), so the online softmax of a key
 * tile and the epilogue are the same code. Internal to model/cuda. */
#ifndef DT_CUDA_FLASH_FORWARD_CUH
#define DT_CUDA_FLASH_FORWARD_CUH

#include <math.h>

#include "model/cuda/flash_core.cuh"

/* How far (log2 units) a tile's row maximum may pass the running one before the running one
 * moves and O is rescaled. Softmax gives the same O = sum_j 2^(s_j - m) v_j / sum_j 2^(s_j - m)
 * and lse = m + log2 sum_j 2^(s_j - m) for any reference m: the kernels keep m within this of
 * the true maximum, so each probability is at most 2^8 (exact in bf16, whose relative precision
 * does not depend on the magnitude; the row sums at most 2^8 T in fp32) and O's rescale, 2 x d
 * multiplies a thread per tile, runs only when some row's scores jump that far past every key
 * before them. A running maximum that moves with every larger score (FlashAttention-2's rule)
 * rescaled 57-72% of the key tiles of uniformly random q, k at T = 2048-4096 (a warp's 16 rows
 * rarely all keep their maxima through a tile); with the slack none after the first. The same
 * rule as FlashAttention-4's. */
#define FLASH_MAX_SLACK 8.0f

/* How the row sums l are kept. The largest probability of a row is no longer exactly 1
 * (FLASH_MAX_SLACK), so its bf16 rounding in P V moves O by up to 2^-8 of v where one key
 * dominates, unless l sums the same rounded values: O / l then weighs the values by P's rounded
 * probabilities normalised to sum to 1, and that rounding cancels. DIFF V1 needs it (its fp32
 * o1 and o2 cancel in O_1 - lambda O_2 and subln divides by what is left: with sums of the
 * unrounded probabilities the worst error of its out against the oracle on test_cuda_flash's
 * spiked inputs tripled); the standard heads' out is stored in bf16, a rounding of that size.
 *   FLASH_SUM_EXACT: each lane adds its probabilities as computed (the standard heads);
 *   FLASH_SUM_ROUNDED: each lane adds the bf16 values of its pairs (two more instructions a
 *       pair: the sm_90 DIFF forwards, whose P V is a warpgroup product);
 *   FLASH_SUM_MMA: the rounded sums on the tensor cores, P times a column of ones (4 products a
 *       tile instead of 32 additions a lane: flash_row_sum_mma; the mma.sync DIFF forwards). */
enum flash_row_sum { FLASH_SUM_EXACT, FLASH_SUM_ROUNDED, FLASH_SUM_MMA };

/* flash_softmax_tile's work, with the causal mask (MASK) or without: the row maximum is taken
 * over the raw scores (scaling by scale_log2 > 0 keeps the order); the running maximum mrow
 * takes it only when it is more than FLASH_MAX_SLACK above (always on a row's first tile: mrow
 * starts at FLASH_MASKED); each probability is exp2(fma(s, scale_log2, -mrow)), one fused
 * multiply-add per score, rounded to bf16 in pairs straight into the A fragments (p[kk] holds
 * the n8 tiles 2 kk and 2 kk + 1, rows g then g + 8); lrow as SUM says. */
template <bool MASK, flash_row_sum SUM>
__device__ __forceinline__ void flash_softmax_rows(const float (*s)[4], uint32_t (*p)[4],
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
        const float tile = flash_quad_max(raw) * scale_log2; /* -inf: every score masked */
        const float mx = tile > mrow[r] + FLASH_MAX_SLACK ? tile : mrow[r];
        corr[r] = flash_exp2(mrow[r] - mx); /* 0 on the first tile, exactly 1 if unmoved */
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < FLASH_BC / 8; nt++) {
            float pe[2];
#pragma unroll
            for (int e = 0; e < 2; e++)
                pe[e] = masked(nt, r, e) ? 0.0f
                                         : flash_exp2(fmaf(s[nt][2 * r + e], scale_log2, -mx));
            const uint32_t pair = pack_bf16x2(pe[0], pe[1]);
            p[nt >> 1][2 * (nt & 1) + r] = pair;
            if (SUM == FLASH_SUM_EXACT) sum += pe[0] + pe[1];
            if (SUM == FLASH_SUM_ROUNDED) sum += bf16x2_lo(pair) + bf16x2_hi(pair);
        }
        mrow[r] = mx;
        if (SUM != FLASH_SUM_MMA) lrow[r] = lrow[r] * corr[r] + sum; /* this lane's part */
    }
}

/* FLASH_SUM_MMA's row sums, after flash_softmax_tile: l = l corr + P 1 on the tensor cores
 * (l: a C fragment, rows g (l[0], l[1]) and g + 8 (l[2], l[3]), every column the row's sum;
 * all 32 lanes call it). */
__device__ __forceinline__ void flash_row_sum_mma(float l[4], const uint32_t (*p)[4],
                                                  const float corr[2]) {
    const uint32_t ones[2] = {0x3f803f80u, 0x3f803f80u}; /* bf16 1.0 pairs */
    l[0] *= corr[0];
    l[1] *= corr[0];
    l[2] *= corr[1];
    l[3] *= corr[1];
#pragma unroll
    for (int kk = 0; kk < FLASH_BC / 16; kk++) mma_bf16_16816(l, p[kk], ones);
}
/* The lane parts the epilogues' quad sums take (lrow): a quarter of each row's sum, whose four
 * copies add up to it exactly (l >= 1: the running max's key contributes at least 1). */
__device__ __forceinline__ void flash_row_sum_parts(float lrow[2], const float l[4]) {
    lrow[0] = 0.25f * l[0];
    lrow[1] = 0.25f * l[2];
}

/* One key tile's online softmax for the warp's rows row0 + g and row0 + g + 8 (g = lane >> 2):
 * the scores s (16 x 64, C fragments), in the log2 domain once scaled by scale_log2 and masked
 * past each row when diag (the tile reaches past the warp's first row; warp-uniform: the other
 * tiles skip the mask's compares), become probabilities exp2(s - max), rounded to bf16 into p,
 * the A fragments of the 4 k16 steps of P V; the running max mrow (scaled; within
 * FLASH_MAX_SLACK of the row's maximum so far) and, as SUM says, this lane's part of the sum
 * lrow are updated, and corr[r] is the factor by which the max's move rescales O's row r
 * (flash_rescale). s is only read: the sm_90 kernel runs this while s's registers belong to a
 * product in flight (ptxas serialises the products when other instructions write an
 * accumulator then). */
template <flash_row_sum SUM>
__device__ __forceinline__ void flash_softmax_tile(const float (*s)[4], uint32_t (*p)[4],
                                                   float mrow[2], float lrow[2], float corr[2],
                                                   float scale_log2, bool diag, int row0, int j0,
                                                   int lane) {
    if (diag)
        flash_softmax_rows<true, SUM>(s, p, mrow, lrow, corr, scale_log2, row0, j0, lane);
    else
        flash_softmax_rows<false, SUM>(s, p, mrow, lrow, corr, scale_log2, row0, j0, lane);
}

/* O's rows g and g + 8 (NTV n8 tiles) times corr[0] and corr[1]; nothing when no row of the
 * warp moved its running max (every factor 1: the product would be O itself), which with
 * FLASH_MAX_SLACK is most tiles after the first */
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
