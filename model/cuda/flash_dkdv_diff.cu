/* dk and dv of DIFF V1 with both branches of a head per query tile (the fused backward's dk/dv
 * for DIFF; flash_backward.cu has the standard one and the dq kernels).
 *
 * Branch c of DIFF head h is q-head 2h + c with k-head 2g + c, and both read v-head g with the
 * same output gradient G, scaled by dscale_c (1, -lambda: attn_core.cuh). So dP_c = dscale_c
 * G V^T is one product for both branches, and dV = sum_c (dscale_c P_c)^T G =
 * (P_1 - lambda P_2)^T G another. Per tile pair of a head this kernel computes
 *   S_1^T = K_1 Q_1^T, S_2^T = K_2 Q_2^T, dP^T = V G^T (once), then
 *   dV += Pc^T G with Pc = P_1 - lambda P_2, dK_1 += dS_1^T Q_1, dK_2 += dS_2^T Q_2,
 * products of 8 d-wide units (dP and dV are 2d wide) where taking the branches one after the
 * other (flash_dkdv_kernel) computes dP^T and dV once per branch: 12. G is staged once per query
 * tile, not once per branch.
 *
 * One block per (key tile of 64 keys, v-head g, b), 8 warps: wk = warp % 4 owns keys
 * 16wk..16wk+15, wh = warp / 4 the rows 32wh..32wh+31 of the query tile in phase 1 (both
 * branches); phase 2 splits dV and dK between the warps as flash_dkdv_diff_phase2 says (every warp
 * 2d columns of fp32 sums: 32 keys of one d-wide product at d <= 96). It holds K_1, K_2 and V for
 * its keys and streams, for each pair of q-heads of the v-head (GQA) and each query tile from the
 * diagonal on, Q_1, Q_2 and G with the row terms (lse, delta) of both branches, over two stages
 * (one where two do not fit the device: an A100 at d = 96 and 128; flash_backward_plan). The tiles
 * that stay all along (K_1, K_2, V and the Pc^T, dS_1^T, dS_2^T tiles) are swizzled instead of
 * padded (flash_swz): at d = 128 that is what lets two stages fit, 224 KiB where the padding would
 * need 230 (one stage, so every tile's loads waited for the last tile's products: one block of 8
 * warps per SM).
 *
 * Rounding: dS_c^T and Pc^T are rounded to bf16 for phase 2, each element once (Pc from the fp32
 * P_1 - lambda P_2, where the per-branch kernel rounds P_1 and -lambda P_2 apart): dk and the
 * stored dS tiles have the per-branch kernel's bits (the same expressions on the same products),
 * dv agrees with its within bf16 rounding. STORE_DS: each dS_c^T tile also goes to ds_tiles
 * (flash_ds_tile_at) for flash_dq_stored_kernel. */
#include <math.h>

#include <type_traits>

#include "model/cuda/flash_backward.cuh"

/* Shared memory (bytes): K_1, K_2, V (swizzled); ns stages of Q_1, Q_2, G (padded); the Pc^T,
 * dS_1^T, dS_2^T tiles (swizzled); ns stages of lse and delta of both branches */
size_t flash_dkdv_diff_smem(int d, int ns) {
    return sizeof(flash_bf16) * ((size_t)FLASH_BC * 4 * d +
                                 (size_t)ns * FLASH_BR * (4 * d + 3 * FLASH_PAD) +
                                 3 * (size_t)FLASH_BC * FLASH_BR) +
           sizeof(float) * ns * 4 * FLASH_BR;
}

/* The fp32 values of a warp's 16 keys x 32 rows (C fragments of 4 n8 tiles) as bf16 pairs into
 * a swizzled (BC, BR) shared tile */
__device__ __forceinline__ void flash_tile_put(flash_bf16 *t, const float (*x)[4], int key0,
                                               int rl0, int lane) {
    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int r = 0; r < 2; r++)
            *reinterpret_cast<uint32_t *>(
                t + flash_swz<FLASH_BR>(key0 + g + 8 * r, rl0 + 8 * nt + 2 * t4)) =
                pack_bf16x2(x[nt][2 * r], x[nt][2 * r + 1]);
}

/* Phase 2 of a query tile, dV += Pc^T G and dK_c += dS_c^T Q_c over its 64 rows, split between
 * the 8 warps one of two ways, the same sums in the same order either way:
 *   PAIR_KEYS: warp w takes keys 32 (w & 1).. (two m16 fragments, acc[0] and acc[1]) of one of
 *       the four products, w >> 1: dV's columns 0..d-1, d..2d-1, dK_1, dK_2; every B fragment
 *       of G or Q it reads from shared memory feeds both fragments (flash_mma_b_x2): 32 ldmatrix
 *       a warp and tile at d = 96 where the other way takes 56 (of 128 with phase 1's);
 *   else: warp w takes keys 16 (w % 4).., dV's columns (w / 4) d.. in acc[0] and dK of branch
 *       w / 4 in acc[1]. At d = 128 the paired keys' two A fragments push ptxas past 255
 *       registers (32-44 bytes of spills in the loop), so that one keeps this way. */
template <int D> constexpr bool flash_dkdv_diff_pair_keys(void) { return D <= 96; }

template <int D>
__device__ __forceinline__ void flash_dkdv_diff_phase2(float (*acc)[D / 8][4],
                                                       const flash_bf16 *Pc,
                                                       const flash_bf16 *dSs,
                                                       const flash_bf16 *Qs,
                                                       const flash_bf16 *Gs, int warp, int lane) {
    constexpr int LDQ = D + FLASH_PAD, LDV = 2 * D + FLASH_PAD, TP = FLASH_BC * FLASH_BR;
    if constexpr (flash_dkdv_diff_pair_keys<D>()) {
        const int kp = warp & 1, job = warp >> 1;
        const flash_bf16 *A = job < 2 ? Pc : dSs + (job - 2) * TP;
        const flash_bf16 *B = job < 2 ? Gs + job * D : Qs + (job - 2) * FLASH_BR * LDQ;
        const int ldb = job < 2 ? LDV : LDQ;
#pragma unroll
        for (int kk = 0; kk < FLASH_BR / 16; kk++) {
            uint32_t a0[4], a1[4];
            ldmatrix_x4(a0, flash_swz_a_row<FLASH_BR>(A, 32 * kp, 16 * kk, lane));
            ldmatrix_x4(a1, flash_swz_a_row<FLASH_BR>(A, 32 * kp + 16, 16 * kk, lane));
            flash_mma_b_x2<D / 16>(acc, a0, a1, B, ldb, 16 * kk, 0, lane);
        }
    } else {
        const int wk = warp % FLASH_WARPS, wh = warp / FLASH_WARPS;
        const flash_bf16 *dSw = dSs + wh * TP, *Qw = Qs + wh * FLASH_BR * LDQ;
#pragma unroll
        for (int kk = 0; kk < FLASH_BR / 16; kk++) {
            uint32_t a[4];
            ldmatrix_x4(a, flash_swz_a_row<FLASH_BR>(Pc, 16 * wk, 16 * kk, lane));
            flash_mma_b<D / 16>(acc[0], a, Gs, LDV, 16 * kk, wh * D, lane);
            ldmatrix_x4(a, flash_swz_a_row<FLASH_BR>(dSw, 16 * wk, 16 * kk, lane));
            flash_mma_b<D / 16>(acc[1], a, Qw, LDQ, 16 * kk, 0, lane);
        }
    }
}

/* dk and dv of the block's keys j0.. from flash_dkdv_diff_phase2's sums */
template <int D>
__device__ __forceinline__ void flash_dkdv_diff_store(const flash_qk_grad &dk, operand_bf16 *dv,
                                                      const float (*acc)[D / 8][4],
                                                      const attn_map &m, int b, int gv, int j0,
                                                      int warp, int lane, float scale) {
    if constexpr (flash_dkdv_diff_pair_keys<D>()) {
        const int kp = warp & 1, job = warp >> 1;
#pragma unroll
        for (int f = 0; f < 2; f++) {
            const int k0 = j0 + 32 * kp + 16 * f;
            if (job < 2)
                flash_dv_store<D>(dv, acc[f], m, b, gv, job * D, k0, lane);
            else
                flash_dk_store<D>(dk, acc[f], m, b, 2 * gv + job - 2, 0, k0, lane, scale);
        }
    } else {
        const int key0 = j0 + 16 * (warp % FLASH_WARPS), wh = warp / FLASH_WARPS;
        flash_dk_store<D>(dk, acc[1], m, b, 2 * gv + wh, 0, key0, lane, scale);
        flash_dv_store<D>(dv, acc[0], m, b, gv, wh * D, key0, lane);
    }
}

template <typename Tin, int D, int NS, bool STORE_DS>
__global__ void __launch_bounds__(2 * FLASH_WARPS * 32)
flash_dkdv_diff_kernel(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles, const Tin *G,
                       const Tin *q, const Tin *k, const Tin *v, const float *lse,
                       const float *delta, const float *lambda, attn_map m, float scale_log2,
                       float scale) {
    extern __shared__ uint4 flash_smem[];
    constexpr int DV = 2 * D, NT = 2 * FLASH_WARPS * 32; /* threads (the launch bounds) */
    constexpr int LDQ = D + FLASH_PAD, LDV = DV + FLASH_PAD, TP = FLASH_BC * FLASH_BR;
    constexpr int STAGE = FLASH_BR * (2 * LDQ + LDV); /* one stage: Q_1, Q_2, G (elements) */
    flash_bf16 *Ks = (flash_bf16 *)flash_smem; /* 2 x (BC, D): K_1, K_2, swizzled */
    flash_bf16 *Vs = Ks + 2 * FLASH_BC * D;    /* (BC, DV), swizzled */
    flash_bf16 *QG = Vs + FLASH_BC * DV;       /* NS stages: 2 x (BR, D) Q_1, Q_2, (BR, DV) G */
    flash_bf16 *Pc = QG + NS * STAGE;          /* (BC, BR): (P_1 - lambda P_2)^T, swizzled */
    flash_bf16 *dSs = Pc + TP;                 /* 2 x (BC, BR): dS_1^T, dS_2^T, swizzled */
    float *lse_s = (float *)(dSs + 2 * TP);    /* NS stages of 2 x (BR), log2 domain */
    float *dl_s = lse_s + NS * 2 * FLASH_BR;            /* NS stages of 2 x (BR) */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wk = warp % FLASH_WARPS, wh = warp / FLASH_WARPS;
    const int T = m.T, gv = blockIdx.y, b = blockIdx.z;
    const int j0 = blockIdx.x * FLASH_BC, nc = min(FLASH_BC, T - j0), key0 = j0 + 16 * wk;
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * DV;
    const size_t os = attn_o_stride(m);
    const float dscale2 = attn_dscale(m, 1, lambda); /* -lambda: branch 2's */

    /* the query tiles of branch 1's q-heads gv*n_rep, +2, ... (branch 2: each + 1) */
    const flash_kv_tiles tiles(m, gv, 0, j0);
    const int n_it = tiles.n;
    flash_kv_walk staged(tiles, T), cur(tiles, T); /* the next tile to stage; tile it */
    /* Q_1, Q_2, G, row terms of tile it (the pipeline stages them in order) into stage st */
    auto stage_qg = [&](int it, int st) {
        (void)it;
        const int jq = staged.q, i0 = staged.i0, nr = min(FLASH_BR, T - i0);
        staged.next();
        flash_bf16 *Q = QG + st * STAGE;
        for (int c = 0; c < 2; c++)
            flash_stage<Tin, D, NT>(Q + c * FLASH_BR * LDQ,
                                    q + (size_t)b * T * qs + (size_t)(jq + c) * D, qs, i0, nr,
                                    tid);
        flash_stage<Tin, DV, NT>(Q + 2 * FLASH_BR * LDQ, G + (size_t)b * T * os + attn_o_col(m, jq),
                                 os, i0, nr, tid);
        const int c = tid / FLASH_BR; /* branch c's terms by threads c*BR.. */
        if (c < 2)
            flash_stage_row_terms(lse_s + (st * 2 + c) * FLASH_BR, dl_s + (st * 2 + c) * FLASH_BR,
                                  lse, delta, m, b, jq + c, i0, tid - c * FLASH_BR);
    };
    for (int c = 0; c < 2; c++)
        flash_stage<Tin, D, NT, true>(Ks + c * FLASH_BC * D,
                                k + (size_t)b * T * ks + (size_t)(2 * gv + c) * D, ks, j0, nc,
                                tid);
    flash_stage<Tin, DV, NT, true>(Vs, v + (size_t)b * T * vs + (size_t)gv * DV, vs, j0, nc, tid);
    stage_qg(0, 0);
    cp_async_commit(); /* K_1, K_2, V and query tile 0 */

    float acc[2][D / 8][4]; /* flash_dkdv_diff_phase2's sums */
    flash_zero<D / 8>(acc[0]);
    flash_zero<D / 8>(acc[1]);
    for (int it = 0; it < n_it; it++) {
        const int st = flash_pipeline_acquire<NS>(it, n_it, stage_qg);
        const int i0 = cur.i0, jq = cur.q, nr = min(FLASH_BR, T - i0);
        cur.next();
        const flash_bf16 *Qs = QG + st * STAGE, *Gs = Qs + 2 * FLASH_BR * LDQ;
        const float *lse_t = lse_s + st * 2 * FLASH_BR, *dl_t = dl_s + st * 2 * FLASH_BR;

        /* phase 1 (keys 16wk.. x rows 32wh..): dP^T once, then each branch's S^T, P and dS */
        float dp[4][4], s[4][4], pc[4][4];
        flash_zero<4>(dp);
        flash_mma_swz_abt<DV / 16, 4, DV>(dp, Vs, 16 * wk, Gs, LDV, 32 * wh, lane);
        flash_zero<4>(s);
        flash_mma_swz_abt<D / 16, 4, D>(s, Ks, 16 * wk, Qs, LDQ, 32 * wh, lane);
        flash_dkdv_pds(pc, s, s, dp, lse_t, dl_t, scale_log2, 1.0f, key0, 32 * wh, i0, nr, lane);
        flash_tile_put(dSs, s, 16 * wk, 32 * wh, lane);
        flash_zero<4>(s);
        flash_mma_swz_abt<D / 16, 4, D>(s, Ks + FLASH_BC * D, 16 * wk, Qs + FLASH_BR * LDQ, LDQ,
                                        32 * wh, lane);
        float p2[4][4]; /* -lambda P_2^T */
        flash_dkdv_pds(p2, s, s, dp, lse_t + FLASH_BR, dl_t + FLASH_BR, scale_log2, dscale2, key0,
                       32 * wh, i0, nr, lane);
        flash_tile_put(dSs + TP, s, 16 * wk, 32 * wh, lane);
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) pc[nt][e] += p2[nt][e];
        flash_tile_put(Pc, pc, 16 * wk, 32 * wh, lane);
        __syncthreads();
        if (STORE_DS)
            for (int c = 0; c < 2; c++)
                flash_ds_tile_store<NT, true>(
                    ds_tiles + flash_ds_tile_at(m, b, jq + c, i0, j0), dSs + c * TP, tid);

        /* phase 2 over the tile's 64 rows */
        flash_dkdv_diff_phase2<D>(acc, Pc, dSs, Qs, Gs, warp, lane);
        flash_pipeline_release<NS>(it, n_it, stage_qg);
    }

    flash_dkdv_diff_store<D>(dk, dv, acc, m, b, gv, j0, warp, lane, scale);
}

template <typename Tin, int D, int NS>
static void flash_dkdv_diff_launch(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles,
                                   const Tin *G, const Tin *q, const Tin *k, const Tin *v,
                                   const float *lse, const float *delta, const float *lambda,
                                   const attn_map &m) {
    auto kernel = ds_tiles ? flash_dkdv_diff_kernel<Tin, D, NS, true>
                           : flash_dkdv_diff_kernel<Tin, D, NS, false>;
    const size_t smem = flash_dkdv_diff_smem(D, NS);
    flash_smem_prepare((const void *)kernel, smem, "the paired DIFF dk/dv kernel");
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = FLASH_LOG2E * scale;
    const dim3 grid((unsigned)((m.T + FLASH_BC - 1) / FLASH_BC), (unsigned)m.nv, (unsigned)m.B);
    kernel<<<grid, 2 * FLASH_WARPS * 32, smem, cuda_stream()>>>(
        dk, dv, ds_tiles, G, q, k, v, lse, delta, lambda, m, scale_log2, scale);
    CUDA_LAUNCH_CHECK();
}

template <typename Tin, int D>
void flash_dkdv_diff(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles, const Tin *G,
                     const Tin *q, const Tin *k, const Tin *v, const float *lse,
                     const float *delta, const float *lambda, const attn_map &m, int ns) {
    if constexpr (std::is_same<Tin, flash_bf16>::value)
        if (flash_tma_bwd_usable(D, true)) {
            flash_dkdv_diff_tma<D>(dk, dv, ds_tiles, G, q, k, v, lse, delta, lambda, m);
            return;
        }
    if (ns == 2)
        flash_dkdv_diff_launch<Tin, D, 2>(dk, dv, ds_tiles, G, q, k, v, lse, delta, lambda, m);
    else
        flash_dkdv_diff_launch<Tin, D, 1>(dk, dv, ds_tiles, G, q, k, v, lse, delta, lambda, m);
}

#define FLASH_DKDV_DIFF(Tin, D)                                                                   \
    template void flash_dkdv_diff<Tin, D>(flash_qk_grad, operand_bf16 *, flash_bf16 *,            \
                                          const Tin *, const Tin *, const Tin *, const Tin *,     \
                                          const float *, const float *, const float *,            \
                                          const attn_map &, int);
FLASH_DKDV_DIFF(flash_bf16, 64)
FLASH_DKDV_DIFF(flash_bf16, 96)
FLASH_DKDV_DIFF(flash_bf16, 128)
FLASH_DKDV_DIFF(float, 64)
FLASH_DKDV_DIFF(float, 96)
FLASH_DKDV_DIFF(float, 128)
#undef FLASH_DKDV_DIFF
