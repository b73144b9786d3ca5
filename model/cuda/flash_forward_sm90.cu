/* Forward of the fused attention on sm_90 warpgroup products (wgmma.cuh): the same contract,
 * grid, head mapping, online softmax and epilogue as flash_forward.cu (whose header describes
 * them), with the two products per key tile issued by whole warpgroups, which read Q, K and V
 * straight from shared memory (no ldmatrix: a tile is read once per warpgroup, not once per
 * warp as mma.sync's B fragments are).
 *
 * Standard / GQA (NB = 1): one warpgroup (4 warps, 64 rows). DIFF V1 (NB = 2): two warpgroups on
 * the same 64 rows, warpgroup c running branch c + 1 (as the warps 4c..4c+3 of the mma.sync
 * kernel do), every K/V tile staged once for both. Per key tile each warpgroup computes
 *   S (64 x 64) = Q K^T: D/16 wgmma_ss (A = the Q tile, B = the K tile, both K-major),
 * then each warp runs the online softmax on its 16 rows (flash_forward.cuh), and
 *   O (64 x DV) += P V: 4 wgmma_rs (A = P rounded to bf16 in registers, B = the V tile read
 *   MN-major, i.e. as it lies: keys x DV),
 * Tiles are kept as core matrices (flash_sm90.cuh), staged by cp.async 16 bytes at a time into
 * three K/V stages: tile kt + 2's copies are issued once every warpgroup is past tile kt - 1's
 * products (the barrier that also says tile kt + 1 has landed), so they have a whole tile's time
 * to land. Each thread's copies reach the products (async proxy) through cp_async_wait,
 * fence.proxy.async and the barrier.
 *
 * The products of one tile overlap the softmax of the next (FlashAttention-3's intra-warpgroup
 * pipelining): with P_kt in registers, a warpgroup issues S_kt+1 = Q K_kt+1^T, then
 * O += P_kt V_kt, waits for the first group only, runs tile kt + 1's softmax while P V is
 * multiplied, then waits for P V before rescaling O and rounding P_kt+1 into the registers P_kt
 * held. The results are those of computing the tiles one after another: the same products, the
 * same order of accumulation.
 *
 * Only bf16 inputs (no fp32 test instance: flash_test.h's staging check covers the mma.sync
 * kernels). The host uses these kernels where flash_sm90_usable selects them (flash_ops.cu),
 * the mma.sync ones otherwise. */
#include "model/cuda/flash_forward.cuh"
#include "model/cuda/flash_sm90.cuh"

template <int D, int DV, int NB>
__global__ void __launch_bounds__(NB * 128)
flash_forward_sm90_kernel(operand_bf16 *out, float *o1, float *o2, float *lse,
                          const flash_bf16 *q, const flash_bf16 *k, const flash_bf16 *v,
                          attn_map m, float scale_log2, flash_diff_epi epi) {
    extern __shared__ uint4 flash_smem[];
    constexpr int NT = NB * 128;                                /* threads (the launch bounds) */
    constexpr int NTV = DV / 8;                                 /* n8 tiles of O */
    constexpr int STAGE = NB * FLASH_BC * D + FLASH_BC * DV;    /* one K/V stage, elements */
    flash_bf16 *Qs = (flash_bf16 *)flash_smem; /* NB x (BR, D) */
    flash_bf16 *KV = Qs + NB * FLASH_BR * D;   /* 3 stages: NB x (BC, D) K, then (BC, DV) V */
    const int tid = threadIdx.x, lane = tid & 31, warp = warp_index();
    const int c = warp / FLASH_WARPS, rw = warp % FLASH_WARPS; /* branch (warpgroup), rows */
    const int T = m.T, b = blockIdx.z, unit = blockIdx.y;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * FLASH_BR, nr = min(FLASH_BR, T - i0);
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * DV;
    const int j = NB == 2 ? 2 * unit + c : unit; /* this warpgroup's q-head */

    for (int cc = 0; cc < NB; cc++) {
        const int jc = NB == 2 ? 2 * unit + cc : unit;
        flash_stage_cm<D, NT>(Qs + cc * FLASH_BR * D, q + (size_t)b * T * qs + (size_t)jc * D, qs,
                              i0, nr, tid);
    }
    const flash_bf16 *kh[NB];
    for (int cc = 0; cc < NB; cc++) {
        const int jc = NB == 2 ? 2 * unit + cc : unit;
        kh[cc] = k + (size_t)b * T * ks + (size_t)attn_k_head(m, jc) * D;
    }
    const flash_bf16 *vh = v + (size_t)b * T * vs + (size_t)attn_v_head(m, j) * DV;
    auto stage_kv = [&](int kt, int st) { /* K/V tile kt into stage st, for both branches */
        const int j0 = kt * FLASH_BC, nc = min(FLASH_BC, T - j0);
        flash_bf16 *Ks = KV + st * STAGE;
        for (int cc = 0; cc < NB; cc++)
            flash_stage_cm<D, NT>(Ks + cc * FLASH_BC * D, kh[cc], ks, j0, nc, tid);
        flash_stage_cm<DV, NT>(Ks + NB * FLASH_BC * D, vh, vs, j0, nc, tid);
    };
    stage_kv(0, 0);
    cp_async_commit(); /* Q and tile 0 */

    float o[NTV][4];
    flash_zero<NTV>(o);
    float mrow[2] = {FLASH_MASKED, FLASH_MASKED}, lrow[2] = {0.0f, 0.0f}; /* rows g, g + 8 */
    const flash_bf16 *Qw = Qs + c * FLASH_BR * D;
    const int n_kt = (i0 + nr + FLASH_BC - 1) / FLASH_BC; /* up to the diagonal tile */
    float s[FLASH_BC / 8][4], corr[2];
    uint32_t p[FLASH_BC / 16][4], pn[FLASH_BC / 16][4]; /* P_kt, P_kt+1: P V's A fragments */
    /* S = Q K^T of tile kt (in stage kt % 3), issued (the caller fences and commits) */
    auto issue_s = [&](int kt) {
        const flash_bf16 *Kw = KV + (kt % 3) * STAGE + c * FLASH_BC * D;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wgmma_ss<FLASH_BC, 0, 0>(s, flash_desc_k<D>(Qw, 0, kk), flash_desc_k<D>(Kw, 0, kk),
                                     kk > 0);
    };
    /* the softmax of tile kt's S (its max's move in corr), P rounded into pt */
    auto softmax = [&](int kt, uint32_t (*pt)[4]) {
        const int j0 = kt * FLASH_BC;
        const bool diag = j0 + FLASH_BC - 1 > i0 + 16 * rw; /* keys past a row: mask */
        constexpr flash_row_sum SUM = NB == 2 ? FLASH_SUM_ROUNDED : FLASH_SUM_EXACT;
        flash_softmax_tile<SUM>(s, pt, mrow, lrow, corr, scale_log2, diag, i0 + 16 * rw, j0,
                                lane);
    };

    flash_sm90_tiles_landed(); /* Q and tile 0 */
    if (n_kt > 1) {
        stage_kv(1, 1);
        cp_async_commit();
    }
    wgmma_fence();
    issue_s(0);
    wgmma_commit();
    wgmma_wait<0>();
    softmax(0, p); /* o is still 0: no rescale */
    /* tile kt's P V with P_kt in pc, overlapped with tile kt + 1's S and softmax into pnext */
    auto step = [&](int kt, uint32_t (*pc)[4], uint32_t (*pnext)[4]) {
        const bool next = kt + 1 < n_kt; /* block-uniform */
        if (next) {
            /* tile kt + 1 landed; every warpgroup is past tile kt - 1's products, so its stage
             * takes tile kt + 2 */
            flash_sm90_tiles_landed();
            if (kt + 2 < n_kt) {
                stage_kv(kt + 2, (kt + 2) % 3);
                cp_async_commit();
            }
        }
        wgmma_fence(); /* s read, o rescaled, pc written by the threads */
        if (next) {
            issue_s(kt + 1);
            wgmma_commit();
        }
        const flash_bf16 *Vs = KV + (kt % 3) * STAGE + NB * FLASH_BC * D;
#pragma unroll
        for (int kk = 0; kk < FLASH_BC / 16; kk++) /* O += P V over keys 16kk..16kk+15 */
            wgmma_rs<DV, 1>(o, pc[kk], flash_desc_mn<DV>(Vs, 0, kk), 1);
        wgmma_commit();
        if (next) {
            wgmma_wait<1>(); /* tile kt + 1's S; its softmax runs while P V is multiplied */
            softmax(kt + 1, pnext);
            wgmma_wait<0>(); /* P V: o is free */
            flash_rescale<NTV>(o, corr);
        } else {
            wgmma_wait<0>();
        }
    };
    /* two tiles per pass, so P's two register sets swap roles without a copy (a copy into
     * registers a product in flight read makes ptxas serialise the products) */
    for (int kt = 0; kt < n_kt; kt += 2) {
        step(kt, p, pn);
        if (kt + 1 < n_kt) step(kt + 1, pn, p);
    }

    flash_forward_epilogue<NB, DV>(o, mrow, lrow, out, o1, o2, lse, m, epi, b, unit, i0, warp,
                                   lane, (float *)flash_smem);
}

/* ---- host side ---- */

template <int D, int DV, int NB> static size_t flash_forward_sm90_smem(void) {
    const size_t tiles = sizeof(flash_bf16) * ((size_t)NB * FLASH_BR * D +
                                               3 * ((size_t)NB * FLASH_BC * D +
                                                    (size_t)FLASH_BC * DV));
    const size_t xch = NB == 2 ? sizeof(float) * FLASH_WARPS * 32 * (DV / 2) : 0;
    return tiles > xch ? tiles : xch; /* d = 128 DIFF: 229,376 B of the 232,448 allowed */
}

template <int D, int DV, int NB>
static void flash_forward_sm90_launch(operand_bf16 *out, float *o1, float *o2, float *lse,
                                      const flash_bf16 *q, const flash_bf16 *k,
                                      const flash_bf16 *v, const attn_map &m,
                                      const flash_diff_epi &epi) {
    auto kernel = flash_forward_sm90_kernel<D, DV, NB>;
    const size_t smem = flash_forward_sm90_smem<D, DV, NB>();
    flash_smem_prepare((const void *)kernel, smem, "the sm_90 forward kernel");
    const dim3 grid((unsigned)((m.T + FLASH_BR - 1) / FLASH_BR), (unsigned)(m.nq / NB),
                    (unsigned)m.B);
    const float scale_log2 = FLASH_LOG2E / sqrtf((float)D);
    kernel<<<grid, NB * 128, smem, cuda_stream()>>>(out, o1, o2, lse, q, k, v, m, scale_log2,
                                                    epi);
    CUDA_LAUNCH_CHECK();
}

void flash_core_forward_sm90(operand_bf16 *out, float *o1, float *o2, float *lse,
                             const flash_bf16 *q, const flash_bf16 *k, const flash_bf16 *v,
                             const attn_map &m, const flash_diff_epi &epi) {
    flash_check(m);
    if (m.B == 0 || m.T <= 0) return;
#define FLASH_FWD(D, DV) flash_forward_sm90_launch<D, DV, DV / D>(out, o1, o2, lse, q, k, v, m, epi)
    FLASH_HEAD_DIMS_DISPATCH(m, FLASH_FWD)
#undef FLASH_FWD
}
