/* Backward of the fused attention (flash_core.cuh), after the row terms (flash_prep.cu), in two
 * kernels that each own what they write (no atomics, deterministic):
 *   dq: one block per (query tile, q-head, b), 4 warps of 16 rows; per key tile up to the diagonal
 *       it recomputes S = Q K^T and P = exp2(S - lse), dP = G V^T, dS = P (dscale dP - delta) in
 *       fp32, and adds dS K with dS rounded to bf16 A fragments in registers;
 *   dk/dv: one block per (key tile, v-head, b), 8 warps; for each k-head that reads the v-head
 *       (one; two for DIFF: k-heads 2g, 2g+1) and each of its q-heads, the query tiles from the
 *       diagonal on: phase 1 computes S^T = K Q^T and dP^T = V G^T (warp: 16 keys x 32 rows) and
 *       stores dscale P^T and dS^T as bf16 in shared memory; phase 2 adds dV += (dscale P^T) G and
 *       dK += dS^T Q (warp: 16 keys x half of the columns). dV sums both DIFF branches (dO_2 =
 *       -lambda G: dscale), dK one branch. dq and dk are stored fp32, or rotated back through
 *       RoPE into bf16 operands (flash_qk_grad: RoPE's backward in the stores); dv is an operand
 *       (the fused ops are the bf16 mode's: bf16), accumulated in fp32 and rounded as stored.
 *       DIFF V1 runs flash_dkdv_diff.cu's kernel instead, which takes both branches of a head
 *       per query tile (dP^T and G once for both), and flash_dq_diff.cu's dq (dP = G V^T shared
 *       by the two branches' warps); the DIFF cases here remain to compare them with
 *       (flash_test.h: cuda_flash_test_diff_paired).
 * Both recompute P with the same expression from the same bf16 tiles. dq = scale dS K and
 * dK = scale dS^T Q with scale = 1/sqrt(d). The dq kernel recomputes S and dP that dk/dv also
 * compute (7 products per tile pair instead of FlashAttention-2's 5): the price of having no
 * atomics on dq. With a tile buffer (flash_ds_tiles_size; DIFFTRAIN_FLASH_DQ=auto or stored)
 * dk/dv runs first and also writes each dS^T tile it rounds to bf16 for phase 2, as it is, to
 * global memory (64 keys x 64 rows, 8 KiB: the causal lower triangle of tiles of each q-head),
 * and dq (flash_dq_stored_kernel) reads those tiles instead of recomputing them: 5 products per
 * tile pair, no atomics, the same determinism, for 2 bytes per score written and read back
 * once.
 * The dS values are those dq would have computed: the same expression on the same products
 * (S^T = K Q^T element by element is S = Q K^T's sum in the same order), rounded to bf16 as dq
 * rounds its own A fragments.
 * The streamed tiles (dq: K/V; dk/dv: Q/G) are staged by cp.async as in the forward: dk/dv
 * double-buffers (the copies of tile n + 1 are issued right after the barrier that makes tile n
 * visible, which also says every warp is done with tile n - 1, whose buffer they take, and land
 * during tile n's products); dq has NS stages, two only where that keeps its blocks per SM
 * (flash_dq_stages; dk/dv runs one block of 8 warps per SM either way, by its registers). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <type_traits>

#include "model/cuda/flash_backward.cuh"

/* ---- dq: grid (query tiles, nq, B) ---- */
template <typename Tin, int D, int DV, int NS>
__global__ void __launch_bounds__(FLASH_WARPS * 32)
flash_dq_kernel(flash_qk_grad dq, const Tin *G, const Tin *q, const Tin *k, const Tin *v,
                const float *lse, const float *delta, const float *lambda, attn_map m,
                float scale_log2, float scale) {
    extern __shared__ uint4 flash_smem[];
    constexpr int NT = FLASH_WARPS * 32; /* threads (the launch bounds) */
    constexpr int LDQ = D + FLASH_PAD, LDV = DV + FLASH_PAD;
    constexpr int STAGE = FLASH_BC * (LDQ + LDV); /* one K/V stage, elements */
    flash_bf16 *Qs = (flash_bf16 *)flash_smem; /* (BR, D) */
    flash_bf16 *Gs = Qs + FLASH_BR * LDQ;      /* (BR, DV) */
    flash_bf16 *KV = Gs + FLASH_BR * LDV;      /* NS stages: (BC, D) K, then (BC, DV) V */
    const int tid = threadIdx.x, lane = tid & 31, rw = tid >> 5;
    const int T = m.T, j = blockIdx.y, b = blockIdx.z;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * FLASH_BR, nr = min(FLASH_BR, T - i0);
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * DV;
    const size_t os = attn_o_stride(m);
    const float dscale = attn_dscale(m, j, lambda);

    flash_stage<Tin, D, NT>(Qs, q + (size_t)b * T * qs + (size_t)j * D, qs, i0, nr, tid);
    flash_stage<Tin, DV, NT>(Gs, G + (size_t)b * T * os + attn_o_col(m, j), os, i0, nr, tid);
    const Tin *kh = k + (size_t)b * T * ks + (size_t)attn_k_head(m, j) * D;
    const Tin *vh = v + (size_t)b * T * vs + (size_t)attn_v_head(m, j) * DV;
    auto stage_kv = [&](int kt, int st) { /* K/V tile kt into stage st */
        const int j0 = kt * FLASH_BC, nc = min(FLASH_BC, T - j0);
        flash_stage<Tin, D, NT>(KV + st * STAGE, kh, ks, j0, nc, tid);
        flash_stage<Tin, DV, NT>(KV + st * STAGE + FLASH_BC * LDQ, vh, vs, j0, nc, tid);
    };
    stage_kv(0, 0);
    cp_async_commit(); /* Q, G and tile 0 */
    float lse2[2], dlt[2]; /* rows g, g + 8: lse in the log2 domain, delta */
    flash_dq_row_terms(lse2, dlt, lse, delta, m, b, j, i0 + 16 * rw, lane);
    float acc[D / 8][4];
    flash_zero<D / 8>(acc);

    const int n_kt = (i0 + nr + FLASH_BC - 1) / FLASH_BC;
    for (int kt = 0; kt < n_kt; kt++) {
        const int j0 = kt * FLASH_BC;
        const int st = flash_pipeline_acquire<NS>(kt, n_kt, stage_kv);
        const flash_bf16 *Ks = KV + st * STAGE, *Vs = Ks + FLASH_BC * LDQ;

        float s[FLASH_BC / 8][4], dp[FLASH_BC / 8][4];
#pragma unroll
        for (int nt = 0; nt < FLASH_BC / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
        flash_mma_abt<D / 16, FLASH_BC / 8>(s, Qs, LDQ, 16 * rw, Ks, LDQ, 0, lane);
        flash_mma_abt<DV / 16, FLASH_BC / 8>(dp, Gs, LDV, 16 * rw, Vs, LDV, 0, lane);
        /* s becomes dS, 0 where masked */
        flash_dq_ds(s, s, dp, lse2, dlt, scale_log2, dscale, i0 + 16 * rw, j0, lane);
        flash_dq_add_ds_k<D>(acc, s, Ks, LDQ, lane);
        flash_pipeline_release<NS>(kt, n_kt, stage_kv);
    }

    flash_dq_store<D>(dq, acc, m, b, j, i0 + 16 * rw, lane, scale);
}

/* ---- dq from the stored dS tiles: grid (query tiles, nq, B), 4 warps, warp w on 32 rows
 * (32 (w / 2)..: two m16 fragments) and half of the columns ((w % 2) D / 2..); per key tile up to
 * the diagonal, acc += dS K with dS read as A fragments from its dS^T tile. Each B fragment of K
 * feeds both row fragments: per warp and k16 step 2 + D / 32 ldmatrix where 16 rows and all
 * columns take 1 + D / 16 (6 against 9 at d = 128), the same products ---- */
template <typename Tin, int D>
__global__ void __launch_bounds__(FLASH_WARPS * 32)
flash_dq_stored_kernel(flash_qk_grad dq, const flash_bf16 *ds_tiles, const Tin *k, attn_map m,
                       float scale) {
    extern __shared__ uint4 flash_smem[];
    constexpr int NT = FLASH_WARPS * 32; /* threads (the launch bounds) */
    constexpr int LDQ = D + FLASH_PAD, LDP = FLASH_BR + FLASH_PAD;
    constexpr int STAGE = FLASH_BC * (LDP + LDQ); /* one stage: (BC, BR) dS^T, then (BC, D) K */
    flash_bf16 *stages = (flash_bf16 *)flash_smem;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int r0 = 32 * (warp >> 1), c0 = (warp & 1) * (D / 2); /* the warp's rows, columns */
    const int T = m.T, j = blockIdx.y, b = blockIdx.z;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * FLASH_BR, nr = min(FLASH_BR, T - i0);
    const size_t ks = (size_t)m.nk * D;
    const Tin *kh = k + (size_t)b * T * ks + (size_t)attn_k_head(m, j) * D;
    auto stage = [&](int kt, int st) { /* dS^T and K of key tile kt into stage st */
        const int j0 = kt * FLASH_BC, nc = min(FLASH_BC, T - j0);
        flash_ds_tile_load<NT>(stages + st * STAGE, ds_tiles + flash_ds_tile_at(m, b, j, i0, j0),
                               tid);
        flash_stage<Tin, D, NT>(stages + st * STAGE + FLASH_BC * LDP, kh, ks, j0, nc, tid);
    };
    stage(0, 0);
    cp_async_commit();
    float acc[2][D / 16][4]; /* rows r0.. and r0 + 16.. */
    flash_zero<D / 16>(acc[0]);
    flash_zero<D / 16>(acc[1]);

    const int n_kt = (i0 + nr + FLASH_BC - 1) / FLASH_BC;
    for (int kt = 0; kt < n_kt; kt++) {
        const int st = flash_pipeline_acquire<2>(kt, n_kt, stage);
        const flash_bf16 *dSt = stages + st * STAGE, *Ks = dSt + FLASH_BC * LDP;
#pragma unroll
        for (int kk = 0; kk < FLASH_BC / 16; kk++) { /* acc += dS K */
            uint32_t a0[4], a1[4];
            ldmatrix_x4_trans(a0, flash_at_row(dSt, LDP, 16 * kk, r0, lane));
            ldmatrix_x4_trans(a1, flash_at_row(dSt, LDP, 16 * kk, r0 + 16, lane));
            flash_mma_b_x2<D / 32>(acc, a0, a1, Ks, LDQ, 16 * kk, c0, lane);
        }
    }

    const size_t qs = (size_t)m.nq * D, head = (size_t)b * T * qs + (size_t)j * D;
    for (int f = 0; f < 2; f++)
        flash_store_qk<D / 2>(dq, head, qs, D, c0, acc[f], T, i0 + r0 + 16 * f, lane, scale);
}

/* ---- dk, dv: grid (key tiles, nv, B); 8 warps: wk = warp % 4 owns keys 16wk..16wk+15,
 * wh = warp / 4 the rows 32wh..32wh+31 of phase 1 and the column half wh of phase 2 ---- */
constexpr size_t flash_dkdv_smem(int d, int dv) {
    return sizeof(flash_bf16) * ((size_t)(FLASH_BC + 2 * FLASH_BR) * (d + dv + 2 * FLASH_PAD) +
                                 2 * (size_t)FLASH_BC * (FLASH_BR + FLASH_PAD)) +
           sizeof(float) * 4 * FLASH_BR;
}
/* Blocks per SM the dk/dv kernel asks ptxas to keep: two where their shared memory fits an SM
 * (H100: 228 KiB, 1 KiB of it reserved per block), so that registers do not decide it alone
 * (d = 64 and the standard d = 96: left to itself ptxas took up to 164 registers, one block). */
template <int D, int DV> constexpr int flash_dkdv_min_blocks(void) {
    return 2 * (flash_dkdv_smem(D, DV) + 1024) <= 228 * 1024 ? 2 : 0; /* 0: no minimum */
}

/* STORE_DS: each dS^T tile also goes to ds_tiles (flash_ds_tile_at) for flash_dq_stored_kernel */
template <typename Tin, int D, int DV, bool STORE_DS>
__global__ void __launch_bounds__(2 * FLASH_WARPS * 32, (flash_dkdv_min_blocks<D, DV>()))
flash_dkdv_kernel(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles, const Tin *G,
                  const Tin *q, const Tin *k, const Tin *v, const float *lse, const float *delta,
                  const float *lambda, attn_map m, float scale_log2, float scale) {
    extern __shared__ uint4 flash_smem[];
    constexpr int NT = 2 * FLASH_WARPS * 32; /* threads (the launch bounds) */
    constexpr int LDQ = D + FLASH_PAD, LDV = DV + FLASH_PAD, LDP = FLASH_BR + FLASH_PAD;
    constexpr int STAGE = FLASH_BR * (LDQ + LDV); /* one Q/G stage, elements */
    flash_bf16 *Ks = (flash_bf16 *)flash_smem; /* (BC, D) */
    flash_bf16 *Vs = Ks + FLASH_BC * LDQ;      /* (BC, DV) */
    flash_bf16 *QG = Vs + FLASH_BC * LDV;      /* 2 stages: (BR, D) Q, then (BR, DV) G */
    flash_bf16 *Ps = QG + 2 * STAGE;           /* (BC, BR): dscale P^T */
    flash_bf16 *dSs = Ps + FLASH_BC * LDP;     /* (BC, BR): dS^T */
    float *lse_s = (float *)(dSs + FLASH_BC * LDP); /* 2 stages of (BR), log2 domain */
    float *dl_s = lse_s + 2 * FLASH_BR;              /* 2 stages of (BR) */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wk = warp % FLASH_WARPS, wh = warp / FLASH_WARPS;
    const int g = lane >> 2, t4 = lane & 3;
    const int T = m.T, gv = blockIdx.y, b = blockIdx.z;
    const int j0 = blockIdx.x * FLASH_BC, nc = min(FLASH_BC, T - j0);
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * DV;
    const size_t os = attn_o_stride(m);
    const int n_slot = m.diff ? 2 : 1;

    flash_stage<Tin, DV, NT>(Vs, v + (size_t)b * T * vs + (size_t)gv * DV, vs, j0, nc, tid);
    float accv[DV / 16][4]; /* keys 16wk.., columns wh*DV/2.. */
    flash_zero<DV / 16>(accv);

    for (int slot = 0; slot < n_slot; slot++) {
        const int kh = attn_k_head(m, gv * m.n_rep + slot);
        /* the slot's query tiles, in order: q-heads jq = gv*n_rep + t for t = slot, slot +
         * n_slot, ... (those of k-head kh), and for each the rows from j0 on (rows before j0
         * see none of the keys) */
        const flash_kv_tiles tiles(m, gv, slot, j0);
        const int n_it = tiles.n;
        auto stage_qg = [&](int it, int st) { /* Q, G, lse, delta of tile it into stage st */
            const int jq = tiles.q(it), i0 = tiles.i0(it), nr = min(FLASH_BR, T - i0);
            flash_stage<Tin, D, NT>(QG + st * STAGE, q + (size_t)b * T * qs + (size_t)jq * D, qs,
                                    i0, nr, tid);
            flash_stage<Tin, DV, NT>(QG + st * STAGE + FLASH_BR * LDQ,
                                     G + (size_t)b * T * os + attn_o_col(m, jq), os, i0, nr, tid);
            flash_stage_row_terms(lse_s + st * FLASH_BR, dl_s + st * FLASH_BR, lse, delta, m, b,
                                  jq, i0, tid);
        };
        float acck[D / 16][4]; /* keys 16wk.., columns wh*D/2.. */
        flash_zero<D / 16>(acck);
        __syncthreads(); /* the previous slot's K tile and query tiles are consumed */
        flash_stage<Tin, D, NT>(Ks, k + (size_t)b * T * ks + (size_t)kh * D, ks, j0, nc, tid);
        stage_qg(0, 0);
        cp_async_commit(); /* K (and V on the first slot) and query tile 0 */

        for (int it = 0; it < n_it; it++) {
            const int st = flash_pipeline_acquire<2>(it, n_it, stage_qg);
            const int i0 = tiles.i0(it), nr = min(FLASH_BR, T - i0);
            const float dscale = attn_dscale(m, tiles.q(it), lambda);
            const flash_bf16 *Qs = QG + st * STAGE, *Gs = Qs + FLASH_BR * LDQ;
            const float *lse_t = lse_s + st * FLASH_BR, *dl_t = dl_s + st * FLASH_BR;

            /* phase 1: S^T, dP^T of keys 16wk.. x rows 32wh.. */
            float s[4][4], dp[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
            flash_mma_abt<D / 16, 4>(s, Ks, LDQ, 16 * wk, Qs, LDQ, 32 * wh, lane);
            flash_mma_abt<DV / 16, 4>(dp, Vs, LDV, 16 * wk, Gs, LDV, 32 * wh, lane);
            flash_dkdv_pds(s, dp, s, dp, lse_t, dl_t, scale_log2, dscale, j0 + 16 * wk, 32 * wh,
                           i0, nr, lane);
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int at = (16 * wk + g + 8 * r) * LDP + 32 * wh + 8 * nt + 2 * t4;
                    *reinterpret_cast<uint32_t *>(Ps + at) =
                        pack_bf16x2(s[nt][2 * r], s[nt][2 * r + 1]);
                    *reinterpret_cast<uint32_t *>(dSs + at) =
                        pack_bf16x2(dp[nt][2 * r], dp[nt][2 * r + 1]);
                }
            }
            __syncthreads();
            if (STORE_DS)
                flash_ds_tile_store<NT>(ds_tiles + flash_ds_tile_at(m, b, tiles.q(it), i0, j0), dSs,
                                        tid);

            /* phase 2: dV += (dscale P^T) G, dK += dS^T Q over the tile's 64 rows */
#pragma unroll
            for (int kk = 0; kk < FLASH_BR / 16; kk++) {
                uint32_t a[4];
                ldmatrix_x4(a, flash_a_row(Ps, LDP, 16 * wk, 16 * kk, lane));
                flash_mma_b<DV / 32>(accv, a, Gs, LDV, 16 * kk, wh * (DV / 2), lane);
                ldmatrix_x4(a, flash_a_row(dSs, LDP, 16 * wk, 16 * kk, lane));
                flash_mma_b<D / 32>(acck, a, Qs, LDQ, 16 * kk, wh * (D / 2), lane);
            }
        }

        flash_dk_store<D / 2>(dk, acck, m, b, kh, wh * (D / 2), j0 + 16 * wk, lane, scale);
    }
    /* dv, an operand: each fp32 pair rounded to bf16 as stored (an even element offset from a
     * 16-byte aligned base: one 4-byte store) */
    flash_dv_store<DV / 2>(dv, accv, m, b, gv, wh * (DV / 2), j0 + 16 * wk, lane);
}

/* ---- host side ---- */

/* Dynamic shared memory (dk/dv: the streamed tiles twice). d = 128 DIFF (dv = 256), one dq
 * stage: dq 102,400 B, dk/dv 173,056 B; dq from stored tiles at d = 128: 53,248 B. */
static size_t flash_dq_smem(int d, int dv, int ns) {
    return sizeof(flash_bf16) * (size_t)(FLASH_BR + ns * FLASH_BC) * (d + dv + 2 * FLASH_PAD);
}
static size_t flash_dq_stored_smem(int d) {
    return sizeof(flash_bf16) * 2 * (size_t)FLASH_BC * (FLASH_BR + d + 2 * FLASH_PAD);
}
/* dq's K/V stages: two where that keeps the blocks per SM of one stage on H100 (228 KiB shared
 * memory, 64 Ki registers per SM; registers from ptxas -v): d = 64 (4) and d = 128 standard (2,
 * by registers); the others would drop (3 -> 2, 4 -> 2, 2 -> 1, 2 -> 1) and keep one stage. */
constexpr int flash_dq_stages(int d, bool diff) { return !diff && (d == 64 || d == 128) ? 2 : 1; }

/* The kernels each backward runs, the first of each list that fits flash_smem_limit(): dq from
 * the stored dS tiles where asked for (flash_dq_stored), else DIFF's paired dq where asked for
 * (flash_diff_paired), else dq per q-head; DIFF's paired dk/dv where asked for with two stages
 * of its streamed tiles, or one (an A100 at d = 96 and 128), else dk/dv per head. The paired and
 * per-branch kernels give the same dq and dk bits, so any mix is the same backward. ok: both
 * found (a GPU with less shared memory than an A100 has none for DIFF at d = 96 and 128). */
struct flash_bwd_plan {
    bool ok, dq_paired, dkdv_paired;
    int dkdv_ns;
};

static flash_bwd_plan flash_backward_plan(int d, bool diff, bool ds_stored) {
    const size_t limit = flash_smem_limit();
    const int dv = diff ? 2 * d : d;
    const bool paired = diff && flash_diff_paired();
    flash_bwd_plan plan = {false, false, false, 0};
    bool dq_ok;
    if (ds_stored) {
        dq_ok = flash_dq_stored_smem(d) <= limit;
    } else {
        plan.dq_paired = paired && flash_dq_diff_smem(d) <= limit;
        dq_ok = plan.dq_paired || flash_dq_smem(d, dv, flash_dq_stages(d, diff)) <= limit;
    }
    for (int ns = 2; paired && ns >= 1 && !plan.dkdv_paired; ns--)
        if (flash_dkdv_diff_smem(d, ns) <= limit) plan.dkdv_paired = true, plan.dkdv_ns = ns;
    plan.ok = dq_ok && (plan.dkdv_paired || flash_dkdv_smem(d, dv) <= limit);
    return plan;
}

bool flash_backward_fits(int d, bool diff, bool ds_stored) {
    return flash_backward_plan(d, diff, ds_stored).ok;
}

template <typename Tin, int D, int DV, int NS>
static void flash_backward_launch(const flash_bwd_plan &plan, flash_qk_grad dq, flash_qk_grad dk,
                                  operand_bf16 *dv, flash_bf16 *ds_tiles, const Tin *G,
                                  const float *delta, const Tin *q, const Tin *k, const Tin *v,
                                  const float *lse, const float *lambda, const attn_map &m) {
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = FLASH_LOG2E * scale;
    const unsigned tiles = (unsigned)((m.T + FLASH_BR - 1) / FLASH_BR);
    const dim3 grid_q(tiles, (unsigned)m.nq, (unsigned)m.B); /* query tiles x q-heads x b */
    const dim3 grid_kv(tiles, (unsigned)m.nv, (unsigned)m.B); /* key tiles x v-heads x b */
    const size_t smem_kv = flash_dkdv_smem(D, DV);
    /* dk/dv first where it writes the dS tiles that dq then reads; DIFF's paired kernels in
     * flash_dkdv_diff.cu and flash_dq_diff.cu, the standard heads' warp-specialised dk/dv in
     * flash_dkdv_tma.cu */
    auto run_dkdv = [&](flash_bf16 *tiles_out) {
        if (plan.dkdv_paired) {
            flash_dkdv_diff<Tin, D>(dk, dv, tiles_out, G, q, k, v, lse, delta, lambda, m,
                                    plan.dkdv_ns);
            return;
        }
        if constexpr (std::is_same<Tin, flash_bf16>::value && DV == D)
            if (flash_tma_bwd_usable(D, false)) {
                flash_dkdv_tma<D>(dk, dv, tiles_out, G, q, k, v, lse, delta, m);
                return;
            }
        auto kernel = tiles_out ? flash_dkdv_kernel<Tin, D, DV, true>
                                : flash_dkdv_kernel<Tin, D, DV, false>;
        flash_smem_prepare((const void *)kernel, smem_kv, "the dk/dv kernel");
        kernel<<<grid_kv, 2 * FLASH_WARPS * 32, smem_kv, cuda_stream()>>>(
            dk, dv, tiles_out, G, q, k, v, lse, delta, lambda, m, scale_log2, scale);
        CUDA_LAUNCH_CHECK();
    };
    if (ds_tiles) {
        run_dkdv(ds_tiles);
        auto kernel = flash_dq_stored_kernel<Tin, D>;
        const size_t smem = flash_dq_stored_smem(D);
        flash_smem_prepare((const void *)kernel, smem, "the dq kernel on stored dS tiles");
        kernel<<<grid_q, FLASH_WARPS * 32, smem, cuda_stream()>>>(dq, ds_tiles, k, m, scale);
        CUDA_LAUNCH_CHECK();
        return;
    }
    if (plan.dq_paired) {
        flash_dq_diff<Tin, D>(dq, G, q, k, v, lse, delta, lambda, m);
    } else {
        auto kernel = flash_dq_kernel<Tin, D, DV, NS>;
        const size_t smem = flash_dq_smem(D, DV, NS);
        flash_smem_prepare((const void *)kernel, smem, "the dq kernel");
        kernel<<<grid_q, FLASH_WARPS * 32, smem, cuda_stream()>>>(dq, G, q, k, v, lse, delta,
                                                                   lambda, m, scale_log2, scale);
        CUDA_LAUNCH_CHECK();
    }
    run_dkdv(NULL);
}

template <typename Tin>
void flash_core_backward(flash_qk_grad dq, flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles,
                         const Tin *G, const float *delta, const Tin *q, const Tin *k,
                         const Tin *v, const float *lse, const float *lambda, const attn_map &m) {
    flash_check(m);
    if (m.B == 0 || m.T <= 0) return;
    const flash_bwd_plan plan = flash_backward_plan(m.d, m.diff != 0, ds_tiles != NULL);
    if (!plan.ok) {
        fprintf(stderr, "difftrain: error: CUDA fused attention: no backward kernels for d=%d%s "
                "fit the device's %zu bytes of shared memory a block (cuda_flash_usable tells "
                "where they do)\n", m.d, m.diff ? " (DIFF)" : "", flash_smem_limit());
        fflush(stderr);
        abort();
    }
#define FLASH_BWD(D, DV)                                                                          \
    flash_backward_launch<Tin, D, DV, flash_dq_stages(D, DV == 2 * D)>(                           \
        plan, dq, dk, dv, ds_tiles, G, delta, q, k, v, lse, lambda, m)
    FLASH_HEAD_DIMS_DISPATCH(m, FLASH_BWD)
#undef FLASH_BWD
}
template void flash_core_backward<flash_bf16>(flash_qk_grad, flash_qk_grad, operand_bf16 *,
                                              flash_bf16 *, const flash_bf16 *, const float *,
                                              const flash_bf16 *, const flash_bf16 *,
                                              const flash_bf16 *, const float *, const float *,
                                              const attn_map &);
template void flash_core_backward<float>(flash_qk_grad, flash_qk_grad, operand_bf16 *,
                                         flash_bf16 *, const float *, const float *,
                                         const float *, const float *, const float *,
                                         const float *, const float *, const attn_map &);
