/* Forward of the fused attention for standard / GQA heads (the baseline, DIFF V2) with 32 query
 * rows a warp: FlashAttention-2's layout. flash_forward.cu's kernel (16 rows a warp, 64 a block)
 * reads every B fragment of K and V from shared memory once per 16 rows; here a warp owns two m16
 * fragments, rows r0.. and r0 + 16.., and each B fragment it loads feeds both (flash_mma_abt_x2,
 * flash_mma_b_x2): half the ldmatrix traffic per product, and two independent accumulator chains
 * per loaded fragment. A block is 4 warps on 128 query rows, so each K/V tile is also staged
 * once per 128 rows instead of 64 (half the tile loads from L2).
 *
 * Same math, order and bits as flash_forward_kernel with NB = 1: per row the same key tiles (up
 * to the diagonal tile of the row's 64-row group; a warp skips the block's last tile when all of
 * it lies past the warp's rows), the same softmax of each tile (flash_softmax_tile), the same
 * k16 order in every product, the same epilogue (flash_forward_epilogue, called per fragment).
 * test_cuda_flash holds the two kernels to the same bits; which one runs is flash_fwd_rows32
 * (flash_ops.cu: DIFFTRAIN_FLASH_FWD_ROWS, or the test switch of flash_test.h).
 *
 * Registers: the O accumulators of 32 rows (d = 128: 128 per thread) and S of 32 rows x 64 keys
 * (64); the cost of the layout, paid in blocks per SM: ptxas (sm_90a) gives 168 / 246 / 254
 * registers at d = 64 / 96 / 128, no spills, so 3 / 2 / 2 blocks of 4 warps where the 16-row
 * kernel runs 4 / 4 / 3 (asking for 3 at d = 96 spills some 600 bytes). Two K/V stages
 * (flash_core.cuh's pipeline) for every d: 104 KiB of shared memory at d = 128. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/flash_forward.cuh"

#define FLASH_R32_BR (2 * FLASH_BR) /* query rows per block */

template <typename Tin, int D>
__global__ void __launch_bounds__(FLASH_WARPS * 32)
flash_forward_rows32_kernel(operand_bf16 *out, float *lse, const Tin *q, const Tin *k,
                            const Tin *v, attn_map m, float scale_log2) {
    extern __shared__ uint4 flash_smem[];
    constexpr int NT = FLASH_WARPS * 32, LD = D + FLASH_PAD, NTD = D / 8;
    constexpr int STAGE = 2 * FLASH_BC * LD;   /* one K/V stage: K, then V */
    flash_bf16 *Qs = (flash_bf16 *)flash_smem; /* (FLASH_R32_BR, D) */
    flash_bf16 *KV = Qs + FLASH_R32_BR * LD;   /* 2 stages */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int T = m.T, b = blockIdx.z, j = blockIdx.y; /* j: the q-head */
    const int i0 = (gridDim.x - 1 - blockIdx.x) * FLASH_R32_BR, nr = min(FLASH_R32_BR, T - i0);
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * D;

    const Tin *qh = q + (size_t)b * T * qs + (size_t)j * D;
    flash_stage<Tin, D, NT>(Qs, qh, qs, i0, min(nr, FLASH_BR), tid);
    flash_stage<Tin, D, NT>(Qs + FLASH_BR * LD, qh, qs, i0 + FLASH_BR, nr - FLASH_BR, tid);
    const Tin *kh = k + (size_t)b * T * ks + (size_t)attn_k_head(m, j) * D;
    const Tin *vh = v + (size_t)b * T * vs + (size_t)attn_v_head(m, j) * D;
    auto stage_kv = [&](int kt, int st) { /* K/V tile kt into stage st */
        const int j0 = kt * FLASH_BC, nc = min(FLASH_BC, T - j0);
        flash_bf16 *Ks = KV + st * STAGE;
        flash_stage<Tin, D, NT>(Ks, kh, ks, j0, nc, tid);
        flash_stage<Tin, D, NT>(Ks + FLASH_BC * LD, vh, vs, j0, nc, tid);
    };
    stage_kv(0, 0);
    cp_async_commit(); /* Q and tile 0 */

    float o[2][NTD][4]; /* [fragment] */
    flash_zero<NTD>(o[0]);
    flash_zero<NTD>(o[1]);
    float mrow[2][2] = {{FLASH_MASKED, FLASH_MASKED}, {FLASH_MASKED, FLASH_MASKED}};
    float lrow[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
    const int r0 = i0 + 32 * warp; /* fragment f: rows r0 + 16 f.. */

    const int n_kt = (i0 + nr + FLASH_BC - 1) / FLASH_BC; /* up to the block's diagonal tile */
    for (int kt = 0; kt < n_kt; kt++) {
        const int j0 = kt * FLASH_BC;
        const int st = flash_pipeline_acquire<2>(kt, n_kt, stage_kv);
        /* warp-uniform: a tile that starts past the warp's last row (the block's last tile, for
         * its first two warps) is skipped, as the 16-row kernel's blocks never reach it; so is
         * everything of a warp whose rows are all at or past T */
        if (j0 <= r0 + 31 && r0 < T) {
            const flash_bf16 *Ks = KV + st * STAGE, *Vs = Ks + FLASH_BC * LD;
            float s[2][FLASH_BC / 8][4];
            flash_zero<FLASH_BC / 8>(s[0]);
            flash_zero<FLASH_BC / 8>(s[1]);
            flash_mma_abt_x2<D / 16, FLASH_BC / 8>(s, Qs, LD, 32 * warp, Ks, LD, 0, lane);
            uint32_t p[2][FLASH_BC / 16][4]; /* P as the A fragments of the 4 k16 steps */
#pragma unroll
            for (int f = 0; f < 2; f++) {
                const int rf = r0 + 16 * f;
                float corr[2];
                flash_softmax_tile<FLASH_SUM_EXACT>(s[f], p[f], mrow[f], lrow[f], corr,
                                                    scale_log2, j0 + FLASH_BC - 1 > rf, rf, j0,
                                                    lane);
                flash_rescale<NTD>(o[f], corr);
            }
#pragma unroll
            for (int kk = 0; kk < FLASH_BC / 16; kk++) /* O += P V */
                flash_mma_b_x2<D / 16>(o, p[0][kk], p[1][kk], Vs, LD, 16 * kk, 0, lane);
        }
    }

    const flash_diff_epi none = {NULL, NULL, NULL, 0.0f, 0.0f};
#pragma unroll
    for (int f = 0; f < 2; f++) /* as the 16-row kernel's warp 0 of a block at row r0 + 16 f */
        flash_forward_epilogue<1, D>(o[f], mrow[f], lrow[f], out, NULL, NULL, lse, m, none, b, j,
                                     r0 + 16 * f, 0, lane, NULL);
}

/* ---- host side ---- */

size_t flash_forward_rows32_smem(int d) { /* Q, then two K/V stages */
    return sizeof(flash_bf16) * (size_t)(d + FLASH_PAD) * (FLASH_R32_BR + 2 * 2 * FLASH_BC);
}

template <typename Tin, int D>
static void flash_forward_rows32_launch(operand_bf16 *out, float *lse, const Tin *q,
                                        const Tin *k, const Tin *v, const attn_map &m) {
    auto kernel = flash_forward_rows32_kernel<Tin, D>;
    const size_t smem = flash_forward_rows32_smem(D);
    flash_smem_prepare((const void *)kernel, smem, "the 32-row forward kernel");
    const dim3 grid((unsigned)((m.T + FLASH_R32_BR - 1) / FLASH_R32_BR), (unsigned)m.nq,
                    (unsigned)m.B);
    const float scale_log2 = FLASH_LOG2E / sqrtf((float)D);
    kernel<<<grid, FLASH_WARPS * 32, smem, cuda_stream()>>>(out, lse, q, k, v, m, scale_log2);
    CUDA_LAUNCH_CHECK();
}

/* flash_core_forward's branch for standard heads: m passed its flash_check, B and T > 0 */
template <typename Tin>
void flash_forward_rows32(operand_bf16 *out, float *lse, const Tin *q, const Tin *k,
                          const Tin *v, const attn_map &m) {
    if (m.diff) {
        fprintf(stderr, "difftrain: error: CUDA fused attention: the 32-row forward is for "
                "standard heads, not DIFF V1\n");
        fflush(stderr);
        abort();
    }
    switch (m.d) {
    case 64: flash_forward_rows32_launch<Tin, 64>(out, lse, q, k, v, m); break;
    case 96: flash_forward_rows32_launch<Tin, 96>(out, lse, q, k, v, m); break;
    case 128: flash_forward_rows32_launch<Tin, 128>(out, lse, q, k, v, m); break;
    }
}
template void flash_forward_rows32<flash_bf16>(operand_bf16 *, float *, const flash_bf16 *,
                                               const flash_bf16 *, const flash_bf16 *,
                                               const attn_map &);
template void flash_forward_rows32<float>(operand_bf16 *, float *, const float *, const float *,
                                          const float *, const attn_map &);
