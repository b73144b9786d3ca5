/* Backward of the fused attention on sm_90 warpgroup products (wgmma.cuh): flash_backward.cu's
 * two kernels (whose header gives the math, the grids and the determinism: each output element
 * summed by one thread in a fixed order, no atomics) with their products issued by warpgroups
 * that read the tiles from shared memory, kept as core matrices (wgmma_tile_at) and staged as
 * flash_forward_sm90.cu stages them (flash_sm90.cuh): a stored tile serves either way, read
 * K-major (its columns the reduction) or MN-major (its rows the reduction).
 *   dq: one warpgroup per (query tile, q-head, b); per key tile
 *       S = Q K^T (A = Q, B = K, K-major), dP = G V^T (A = G, B = V, K-major),
 *       dS from them in registers, dQ += dS K (A = dS in registers, B = K read MN-major),
 *       pipelined as the forward is (flash_forward_sm90.cu): tile kt + 1's S and dP are issued
 *       before tile kt's dS K and its dS computed while that is multiplied; three K/V stages;
 *   dk/dv: two warpgroups per (key tile, v-head, b); per query tile, phase 1: warpgroup h
 *       computes S^T and dP^T of the 64 keys x rows 32h..32h+31 (A = K, V; B = Q, G: K-major)
 *       and stores dscale P^T and dS^T as bf16 core matrices in shared memory; phase 2:
 *       warpgroup h adds column half h of dV += (dscale P^T) G and dK += dS^T Q (A = the stored
 *       P^T, dS^T, K-major; B = G, Q read MN-major); pipelined too: tile it + 1's phase 1 is
 *       issued before tile it's phase 2 and its P^T, dS^T stored while that is multiplied (three
 *       query-tile stages, two P^T/dS^T buffers).
 * Each thread's cp.async copies, and its stores of P^T and dS^T, reach the products (async
 * proxy) through fence.proxy.async and a barrier. */
#include <math.h>

#include "model/cuda/flash_backward.cuh"
#include "model/cuda/flash_sm90.cuh"

/* ---- dq: grid (query tiles, nq, B), 128 threads ---- */
template <int D, int DV>
__global__ void __launch_bounds__(128)
flash_dq_sm90_kernel(flash_qk_grad dq, const flash_bf16 *G, const flash_bf16 *q,
                     const flash_bf16 *k, const flash_bf16 *v, const float *lse,
                     const float *delta, const float *lambda, attn_map m, float scale_log2,
                     float scale) {
    extern __shared__ uint4 flash_smem[];
    constexpr int NT = 128;                    /* threads (the launch bounds) */
    constexpr int STAGE = FLASH_BC * (D + DV); /* one K/V stage, elements */
    flash_bf16 *Qs = (flash_bf16 *)flash_smem; /* (BR, D) */
    flash_bf16 *Gs = Qs + FLASH_BR * D;        /* (BR, DV) */
    flash_bf16 *KV = Gs + FLASH_BR * DV;       /* 3 stages: (BC, D) K, then (BC, DV) V */
    const int tid = threadIdx.x, lane = tid & 31, rw = tid >> 5;
    const int T = m.T, j = blockIdx.y, b = blockIdx.z;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * FLASH_BR, nr = min(FLASH_BR, T - i0);
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * DV;
    const size_t os = attn_o_stride(m);
    const float dscale = attn_dscale(m, j, lambda);

    flash_stage_cm<D, NT>(Qs, q + (size_t)b * T * qs + (size_t)j * D, qs, i0, nr, tid);
    flash_stage_cm<DV, NT>(Gs, G + (size_t)b * T * os + attn_o_col(m, j), os, i0, nr, tid);
    const flash_bf16 *kh = k + (size_t)b * T * ks + (size_t)attn_k_head(m, j) * D;
    const flash_bf16 *vh = v + (size_t)b * T * vs + (size_t)attn_v_head(m, j) * DV;
    auto stage_kv = [&](int kt, int st) { /* K/V tile kt into stage st */
        const int j0 = kt * FLASH_BC, nc = min(FLASH_BC, T - j0);
        flash_stage_cm<D, NT>(KV + st * STAGE, kh, ks, j0, nc, tid);
        flash_stage_cm<DV, NT>(KV + st * STAGE + FLASH_BC * D, vh, vs, j0, nc, tid);
    };
    stage_kv(0, 0);
    cp_async_commit(); /* Q, G and tile 0 */
    float lse2[2], dlt[2]; /* rows g, g + 8: lse in the log2 domain, delta */
    flash_dq_row_terms(lse2, dlt, lse, delta, m, b, j, i0 + 16 * rw, lane);
    float acc[D / 8][4];
    flash_zero<D / 8>(acc);
    const int n_kt = (i0 + nr + FLASH_BC - 1) / FLASH_BC;
    float s[FLASH_BC / 8][4], dp[FLASH_BC / 8][4];
    uint32_t a0[FLASH_BC / 16][4], a1[FLASH_BC / 16][4]; /* dS_kt, dS_kt+1: dQ's A fragments */
    auto issue_s_dp = [&](int kt) { /* S = Q K^T and dP = G V^T of tile kt (stage kt % 3) */
        const flash_bf16 *Ks = KV + (kt % 3) * STAGE, *Vs = Ks + FLASH_BC * D;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wgmma_ss<FLASH_BC, 0, 0>(s, flash_desc_k<D>(Qs, 0, kk), flash_desc_k<D>(Ks, 0, kk),
                                     kk > 0);
#pragma unroll
        for (int kk = 0; kk < DV / 16; kk++)
            wgmma_ss<FLASH_BC, 0, 0>(dp, flash_desc_k<DV>(Gs, 0, kk),
                                     flash_desc_k<DV>(Vs, 0, kk), kk > 0);
    };
    /* dS of tile kt from S and dP (0 where masked), rounded into the A fragments at; s and dp
     * are only read (they may belong to products in flight: see flash_forward.cuh) */
    auto ds = [&](int kt, uint32_t (*at)[4]) {
        float x[FLASH_BC / 8][4];
        flash_dq_ds(x, s, dp, lse2, dlt, scale_log2, dscale, i0 + 16 * rw, kt * FLASH_BC, lane);
#pragma unroll
        for (int kk = 0; kk < FLASH_BC / 16; kk++) flash_c_to_a(at[kk], x, kk);
    };
    /* tile kt's dQ += dS K with dS_kt in ac, overlapped with tile kt + 1's S, dP and dS into an
     * (flash_forward_sm90.cu's pipelining and three stages) */
    auto step = [&](int kt, uint32_t (*ac)[4], uint32_t (*an)[4]) {
        const bool next = kt + 1 < n_kt; /* block-uniform */
        if (next) {
            flash_sm90_tiles_landed(); /* tile kt + 1; tile kt - 1's stage is free */
            if (kt + 2 < n_kt) {
                stage_kv(kt + 2, (kt + 2) % 3);
                cp_async_commit();
            }
        }
        wgmma_fence(); /* s, dp read, ac written by the threads */
        if (next) {
            issue_s_dp(kt + 1);
            wgmma_commit();
        }
        const flash_bf16 *Ks = KV + (kt % 3) * STAGE;
#pragma unroll
        for (int kk = 0; kk < FLASH_BC / 16; kk++) /* acc += dS K */
            wgmma_rs<D, 1>(acc, ac[kk], flash_desc_mn<D>(Ks, 0, kk), 1);
        wgmma_commit();
        if (next) {
            wgmma_wait<1>(); /* tile kt + 1's S and dP; its dS runs while dS K is multiplied */
            ds(kt + 1, an);
            wgmma_wait<0>();
        } else { /* a wait<0> in each branch: ptxas serialises the products otherwise */
            wgmma_wait<0>();
        }
    };

    flash_sm90_tiles_landed(); /* Q, G and tile 0 */
    if (n_kt > 1) {
        stage_kv(1, 1);
        cp_async_commit();
    }
    wgmma_fence();
    issue_s_dp(0);
    wgmma_commit();
    wgmma_wait<0>();
    ds(0, a0);
    for (int kt = 0; kt < n_kt; kt += 2) { /* a0 and a1 swap roles without a copy */
        step(kt, a0, a1);
        if (kt + 1 < n_kt) step(kt + 1, a1, a0);
    }

    flash_dq_store<D>(dq, acc, m, b, j, i0 + 16 * rw, lane, scale);
}

/* ---- dk, dv: grid (key tiles, nv, B), 256 threads: warpgroup wh = warp / 4, wk = warp % 4; in
 * both phases warp (wh, wk) holds keys 16wk..16wk+15 of the accumulators ---- */
template <int D, int DV>
__global__ void __launch_bounds__(256)
flash_dkdv_sm90_kernel(flash_qk_grad dk, operand_bf16 *dv, const flash_bf16 *G, const flash_bf16 *q,
                       const flash_bf16 *k, const flash_bf16 *v, const float *lse,
                       const float *delta, const float *lambda, attn_map m, float scale_log2,
                       float scale) {
    extern __shared__ uint4 flash_smem[];
    constexpr int NT = 256;                    /* threads (the launch bounds) */
    constexpr int STAGE = FLASH_BR * (D + DV); /* one Q/G stage, elements */
    flash_bf16 *Ks = (flash_bf16 *)flash_smem; /* (BC, D) */
    flash_bf16 *Vs = Ks + FLASH_BC * D;        /* (BC, DV) */
    flash_bf16 *QG = Vs + FLASH_BC * DV;       /* 3 stages: (BR, D) Q, then (BR, DV) G */
    flash_bf16 *PS = QG + 3 * STAGE; /* 2 buffers: (BC, BR) dscale P^T, then (BC, BR) dS^T */
    float *lse_s = (float *)(PS + 4 * FLASH_BC * FLASH_BR); /* 3 stages of (BR), log2 domain */
    float *dl_s = lse_s + 3 * FLASH_BR;                      /* 3 stages of (BR) */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wk = warp % FLASH_WARPS, wh = warp / FLASH_WARPS;
    const int g = lane >> 2, t4 = lane & 3;
    const int T = m.T, gv = blockIdx.y, b = blockIdx.z;
    const int j0 = blockIdx.x * FLASH_BC, nc = min(FLASH_BC, T - j0);
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * DV;
    const size_t os = attn_o_stride(m);
    const int n_slot = m.diff ? 2 : 1;

    flash_stage_cm<DV, NT>(Vs, v + (size_t)b * T * vs + (size_t)gv * DV, vs, j0, nc, tid);
    float accv[DV / 16][4]; /* keys 16wk.., columns wh*DV/2.. */
    flash_zero<DV / 16>(accv);

    for (int slot = 0; slot < n_slot; slot++) {
        const int kh = attn_k_head(m, gv * m.n_rep + slot);
        /* the slot's query tiles as in flash_backward.cu: q-heads gv*n_rep + slot, + n_slot, ...,
         * each from row j0 on */
        const flash_kv_tiles tiles(m, gv, slot, j0);
        const int n_it = tiles.n;
        auto stage_qg = [&](int it, int st) { /* Q, G, lse, delta of tile it into stage st */
            const int jq = tiles.q(it), i0 = tiles.i0(it), nr = min(FLASH_BR, T - i0);
            flash_stage_cm<D, NT>(QG + st * STAGE, q + (size_t)b * T * qs + (size_t)jq * D, qs, i0,
                                  nr, tid);
            flash_stage_cm<DV, NT>(QG + st * STAGE + FLASH_BR * D,
                                   G + (size_t)b * T * os + attn_o_col(m, jq), os, i0, nr, tid);
            flash_stage_row_terms(lse_s + st * FLASH_BR, dl_s + st * FLASH_BR, lse, delta, m, b,
                                  jq, i0, tid);
        };
        float acck[D / 16][4]; /* keys 16wk.., columns wh*D/2.. */
        flash_zero<D / 16>(acck);
        /* phase 1 of tile it (stage it % 3): S^T, dP^T of the 64 keys x rows 32wh.., issued */
        float s[4][4], dp[4][4];
        auto issue_phase1 = [&](int it) {
            const flash_bf16 *Qs = QG + (it % 3) * STAGE, *Gs = Qs + FLASH_BR * D;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wgmma_ss<32, 0, 0>(s, flash_desc_k<D>(Ks, 0, kk),
                                   flash_desc_k<D>(Qs, 32 * wh, kk), kk > 0);
#pragma unroll
            for (int kk = 0; kk < DV / 16; kk++)
                wgmma_ss<32, 0, 0>(dp, flash_desc_k<DV>(Vs, 0, kk),
                                   flash_desc_k<DV>(Gs, 32 * wh, kk), kk > 0);
        };
        /* tile it's dscale P^T and dS^T from S^T and dP^T (only read: they may belong to
         * products in flight, see flash_forward.cuh), stored in bf16 into buffer it % 2 */
        auto store_pds = [&](int it) {
            const int st = it % 3, i0 = tiles.i0(it), nr = min(FLASH_BR, T - i0);
            flash_bf16 *Ps = PS + (it & 1) * 2 * FLASH_BC * FLASH_BR;
            flash_bf16 *dSs = Ps + FLASH_BC * FLASH_BR;
            float ps[4][4], dss[4][4];
            flash_dkdv_pds(ps, dss, s, dp, lse_s + st * FLASH_BR, dl_s + st * FLASH_BR,
                           scale_log2, attn_dscale(m, tiles.q(it), lambda), j0 + 16 * wk,
                           32 * wh, i0, nr, lane);
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int at = wgmma_tile_at<FLASH_BR>(16 * wk + g + 8 * r,
                                                           32 * wh + 8 * nt + 2 * t4);
                    *reinterpret_cast<uint32_t *>(Ps + at) =
                        pack_bf16x2(ps[nt][2 * r], ps[nt][2 * r + 1]);
                    *reinterpret_cast<uint32_t *>(dSs + at) =
                        pack_bf16x2(dss[nt][2 * r], dss[nt][2 * r + 1]);
                }
            wgmma_fence_smem(); /* for the products of phase 2, after a barrier */
        };
        /* phase 2 of tile it: dV += (dscale P^T) G, dK += dS^T Q over the tile's 64 rows,
         * columns of half wh, issued */
        auto issue_phase2 = [&](int it) {
            const flash_bf16 *Qs = QG + (it % 3) * STAGE, *Gs = Qs + FLASH_BR * D;
            const flash_bf16 *Ps = PS + (it & 1) * 2 * FLASH_BC * FLASH_BR;
            const flash_bf16 *dSs = Ps + FLASH_BC * FLASH_BR;
#pragma unroll
            for (int kk = 0; kk < FLASH_BR / 16; kk++) {
                wgmma_ss<DV / 2, 0, 1>(accv, flash_desc_k<FLASH_BR>(Ps, 0, kk),
                                       flash_desc_mn<DV>(Gs, wh * (DV / 2), kk), 1);
                wgmma_ss<D / 2, 0, 1>(acck, flash_desc_k<FLASH_BR>(dSs, 0, kk),
                                      flash_desc_mn<D>(Qs, wh * (D / 2), kk), 1);
            }
        };

        __syncthreads(); /* the previous slot's K tile and query tiles are consumed */
        flash_stage_cm<D, NT>(Ks, k + (size_t)b * T * ks + (size_t)kh * D, ks, j0, nc, tid);
        stage_qg(0, 0);
        cp_async_commit(); /* K (and V on the first slot) and query tile 0 */
        flash_sm90_tiles_landed();
        if (n_it > 1) {
            stage_qg(1, 1);
            cp_async_commit();
        }
        wgmma_fence();
        issue_phase1(0);
        wgmma_commit();
        wgmma_wait<0>();
        store_pds(0);
        /* Per tile it: tile it + 1's phase 1 is issued before tile it's phase 2, and its P^T,
         * dS^T are computed and stored while phase 2 is multiplied (the forward's pipelining);
         * query tiles in three stages, P^T and dS^T in two buffers. The barrier at the top of
         * tile it says tile it + 1 has landed, tile it's P^T and dS^T are stored (both
         * warpgroups' rows), and both warpgroups are past tile it - 1's phase 2, whose stage
         * takes tile it + 2 and whose buffer tile it + 1's P^T and dS^T. */
        for (int it = 0; it < n_it; it++) {
            const bool next = it + 1 < n_it; /* block-uniform */
            flash_sm90_tiles_landed();
            if (it + 2 < n_it) {
                stage_qg(it + 2, (it + 2) % 3);
                cp_async_commit();
            }
            wgmma_fence();
            if (next) {
                issue_phase1(it + 1);
                wgmma_commit();
            }
            issue_phase2(it);
            wgmma_commit();
            if (next) {
                wgmma_wait<1>(); /* phase 1 of tile it + 1 */
                store_pds(it + 1);
                wgmma_wait<0>(); /* phase 2 of tile it */
            } else {
                wgmma_wait<0>();
            }
        }

        flash_dk_store<D / 2>(dk, acck, m, b, kh, wh * (D / 2), j0 + 16 * wk, lane, scale);
    }
    flash_dv_store<DV / 2>(dv, accv, m, b, gv, wh * (DV / 2), j0 + 16 * wk, lane);
}

/* ---- host side ---- */

/* Dynamic shared memory: d = 128 DIFF (dv = 256): dq 196,608 B, dk/dv 230,912 B (of the
 * 232,448 a block may have). */
template <int D, int DV> static size_t flash_dq_sm90_smem(void) {
    return sizeof(flash_bf16) * (size_t)(FLASH_BR + 3 * FLASH_BC) * (D + DV);
}
template <int D, int DV> static size_t flash_dkdv_sm90_smem(void) {
    return sizeof(flash_bf16) * ((size_t)(FLASH_BC + 3 * FLASH_BR) * (D + DV) +
                                 4 * (size_t)FLASH_BC * FLASH_BR) +
           sizeof(float) * 6 * FLASH_BR;
}

template <int D, int DV>
static void flash_backward_sm90_launch(flash_qk_grad dq, flash_qk_grad dk, operand_bf16 *dv,
                                       const flash_bf16 *G, const float *delta,
                                       const flash_bf16 *q, const flash_bf16 *k,
                                       const flash_bf16 *v, const float *lse,
                                       const float *lambda, const attn_map &m) {
    auto flash_dq = flash_dq_sm90_kernel<D, DV>;
    auto flash_dkdv = flash_dkdv_sm90_kernel<D, DV>;
    const size_t smem_dq = flash_dq_sm90_smem<D, DV>(), smem_kv = flash_dkdv_sm90_smem<D, DV>();
    flash_smem_prepare((const void *)flash_dq, smem_dq, "the sm_90 dq kernel");
    flash_smem_prepare((const void *)flash_dkdv, smem_kv, "the sm_90 dk/dv kernel");
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = FLASH_LOG2E * scale;
    const unsigned tiles = (unsigned)((m.T + FLASH_BR - 1) / FLASH_BR);
    flash_dq<<<dim3(tiles, (unsigned)m.nq, (unsigned)m.B), 128, smem_dq, cuda_stream()>>>(
        dq, G, q, k, v, lse, delta, lambda, m, scale_log2, scale);
    CUDA_LAUNCH_CHECK();
    flash_dkdv<<<dim3(tiles, (unsigned)m.nv, (unsigned)m.B), 256, smem_kv, cuda_stream()>>>(
        dk, dv, G, q, k, v, lse, delta, lambda, m, scale_log2, scale);
    CUDA_LAUNCH_CHECK();
}

void flash_core_backward_sm90(flash_qk_grad dq, flash_qk_grad dk, operand_bf16 *dv,
                              const flash_bf16 *G, const float *delta, const flash_bf16 *q,
                              const flash_bf16 *k, const flash_bf16 *v, const float *lse,
                              const float *lambda, const attn_map &m) {
    flash_check(m);
    if (m.B == 0 || m.T <= 0) return;
#define FLASH_BWD(D, DV)                                                                          \
    flash_backward_sm90_launch<D, DV>(dq, dk, dv, G, delta, q, k, v, lse, lambda, m)
    FLASH_HEAD_DIMS_DISPATCH(m, FLASH_BWD)
#undef FLASH_BWD
}
