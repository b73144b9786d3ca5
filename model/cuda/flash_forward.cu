/* Forward of the fused attention (flash_core.cuh): one block per (query tile, head unit, b).
 *
 * Standard / GQA (NB = 1): 4 warps; the head unit is q-head j; warp w owns rows 16w..16w+15.
 * DIFF V1 (NB = 2; flash_forward_diff.cu's kernel runs instead unless DIFFTRAIN_FLASH_DIFF_FWD=
 * branch: flash_diff_fwd_split): 8 warps; the head unit is DIFF head h; warps 0-3 run branch 1
 * (q-head 2h, k-head 2g) and warps 4-7 branch 2 (q-head 2h+1, k-head 2g+1) on the same rows, and
 * every K/V tile is staged once for both: the two K tiles and the shared V tile of v-head g
 * (width 2d). Each branch keeps its own running max and sum, writes its o_c and lse, and the
 * block finishes with the subln epilogue of diffattn_forward: the branch-2 warps hand their O_2
 * fragments to the branch-1 warps through shared memory, which form O = O_1 - lambda O_2, its rms
 * per row (quad shuffles), and out = (1 - lambda_init) * O / rms * gamma. out (either kind's) is
 * stored in bf16, rounded from the fp32 values as they are written (operand.cuh).
 *
 * Per key tile a warp computes S (16 x 64) = Q K^T with its Q fragments and the K tile from shared
 * memory, updates the online softmax per row (each row sits on the 4 lanes of a quad: max and sum
 * over the quad by shuffles), rounds P to bf16 A fragments in registers and adds P V to its O
 * accumulator (16 x dv fp32). Query tiles run longest first (the causal work grows with the tile
 * index). K/V tiles are staged by cp.async (flash_core.cuh) into NS stages. NS = 2 (double
 * buffer): the copies of tile kt + 1 are issued right after the barrier that makes tile kt
 * visible, and land while tile kt is multiplied; that barrier also says every warp is done with
 * tile kt - 1, whose buffer tile kt + 1 takes: one __syncthreads per tile. NS = 1 (where two
 * stages would cost blocks per SM: the launch says which): tile kt + 1 is issued after a second
 * barrier at the end of tile kt. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/flash_forward.cuh"

template <typename Tin, int D, int DV, int NB, int NS>
__global__ void __launch_bounds__(NB *FLASH_WARPS * 32)
flash_forward_kernel(operand_bf16 *out, float *o1, float *o2, float *lse, const Tin *q,
                     const Tin *k, const Tin *v, attn_map m, float scale_log2,
                     flash_diff_epi epi) {
    extern __shared__ uint4 flash_smem[];
    constexpr int NT = NB * FLASH_WARPS * 32; /* threads (the launch bounds) */
    constexpr int LDQ = D + FLASH_PAD, LDV = DV + FLASH_PAD;
    constexpr int NTV = DV / 8; /* n8 tiles of the O accumulator */
    constexpr int STAGE = NB * FLASH_BC * LDQ + FLASH_BC * LDV; /* one K/V stage, elements */
    flash_bf16 *Qs = (flash_bf16 *)flash_smem;  /* NB x (BR, D) */
    flash_bf16 *KV = Qs + NB * FLASH_BR * LDQ;  /* NS stages: NB x (BC, D) K, then (BC, DV) V */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int c = warp / FLASH_WARPS, rw = warp % FLASH_WARPS; /* branch, row group */
    const int T = m.T, b = blockIdx.z, unit = blockIdx.y;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * FLASH_BR, nr = min(FLASH_BR, T - i0);
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * DV;
    const int j = NB == 2 ? 2 * unit + c : unit; /* this warp's q-head */

    for (int cc = 0; cc < NB; cc++) {
        const int jc = NB == 2 ? 2 * unit + cc : unit;
        flash_stage<Tin, D, NT>(Qs + cc * FLASH_BR * LDQ, q + (size_t)b * T * qs + (size_t)jc * D,
                                qs, i0, nr, tid);
    }
    const Tin *kh[NB];
    for (int cc = 0; cc < NB; cc++) {
        const int jc = NB == 2 ? 2 * unit + cc : unit;
        kh[cc] = k + (size_t)b * T * ks + (size_t)attn_k_head(m, jc) * D;
    }
    const Tin *vh = v + (size_t)b * T * vs + (size_t)attn_v_head(m, j) * DV;
    /* K/V tile kt into stage st (all threads issue, for both branches) */
    auto stage_kv = [&](int kt, int st) {
        const int j0 = kt * FLASH_BC, nc = min(FLASH_BC, T - j0);
        flash_bf16 *Ks = KV + st * STAGE;
        for (int cc = 0; cc < NB; cc++)
            flash_stage<Tin, D, NT>(Ks + cc * FLASH_BC * LDQ, kh[cc], ks, j0, nc, tid);
        flash_stage<Tin, DV, NT>(Ks + NB * FLASH_BC * LDQ, vh, vs, j0, nc, tid);
    };
    stage_kv(0, 0);
    cp_async_commit(); /* Q and tile 0 */

    float o[NTV][4];
    flash_zero<NTV>(o);
    float mrow[2] = {FLASH_MASKED, FLASH_MASKED}, lrow[2] = {0.0f, 0.0f}; /* rows g, g + 8 */
    float lsum[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* DIFF: the row sums (flash_row_sum_mma) */
    constexpr flash_row_sum SUM = NB == 2 ? FLASH_SUM_MMA : FLASH_SUM_EXACT;
    const flash_bf16 *Qw = Qs + c * FLASH_BR * LDQ;

    const int n_kt = (i0 + nr + FLASH_BC - 1) / FLASH_BC; /* up to the diagonal tile */
    for (int kt = 0; kt < n_kt; kt++) {
        const int j0 = kt * FLASH_BC;
        const int st = flash_pipeline_acquire<NS>(kt, n_kt, stage_kv);
        const flash_bf16 *Kw = KV + st * STAGE + c * FLASH_BC * LDQ;
        const flash_bf16 *Vs = KV + st * STAGE + NB * FLASH_BC * LDQ;

        float s[FLASH_BC / 8][4];
        flash_zero<FLASH_BC / 8>(s);
        flash_mma_abt<D / 16, FLASH_BC / 8>(s, Qw, LDQ, 16 * rw, Kw, LDQ, 0, lane);

        /* a key of this tile may lie past a row of this warp: mask (warp-uniform) */
        const bool diag = j0 + FLASH_BC - 1 > i0 + 16 * rw;
        float corr[2];
        uint32_t p[FLASH_BC / 16][4]; /* P as the A fragments of the 4 k16 steps */
        flash_softmax_tile<SUM>(s, p, mrow, lrow, corr, scale_log2, diag, i0 + 16 * rw, j0,
                                lane);
        if (SUM == FLASH_SUM_MMA) flash_row_sum_mma(lsum, p, corr);
        flash_rescale<NTV>(o, corr);
#pragma unroll
        for (int kk = 0; kk < FLASH_BC / 16; kk++) /* O += P V */
            flash_mma_b<DV / 16>(o, p[kk], Vs, LDV, 16 * kk, 0, lane);
        flash_pipeline_release<NS>(kt, n_kt, stage_kv);
    }

    if (SUM == FLASH_SUM_MMA) flash_row_sum_parts(lrow, lsum);
    flash_forward_epilogue<NB, DV>(o, mrow, lrow, out, o1, o2, lse, m, epi, b, unit, i0, warp,
                                   lane, (float *)flash_smem);
}

/* ---- host side ---- */

/* flash_stage steps through FLASH_BC rows of a view with 32-bit byte offsets. attn_check and
 * the head dims above bound a row: at most 65535 q-heads of d <= 128, and a DIFF V1 head of
 * dv = 2d per two q-heads; so FLASH_BC rows of fp32 (the test path) stay below 2^31 bytes. */
static_assert(65535ull * 128 * FLASH_BC * sizeof(float) < (1ull << 31),
              "the widest view's tile offsets fit 32 bits");

void flash_check(const attn_map &m) {
    attn_check(m);
    const bool dims = (m.d == 64 || m.d == 96 || m.d == 128) && m.dv == (m.diff ? 2 : 1) * m.d;
    if (!dims) {
        fprintf(stderr,
                "difftrain: error: CUDA fused attention: head dims d=%d dv=%d not supported "
                "(d in 64, 96, 128; dv = d, or 2d for DIFF)\n", m.d, m.dv);
        fflush(stderr);
        abort();
    }
}

template <typename Tin, int D, int DV, int NB, int NS>
static void flash_forward_launch(operand_bf16 *out, float *o1, float *o2, float *lse,
                                 const Tin *q, const Tin *k, const Tin *v, const attn_map &m,
                                 const flash_diff_epi &epi) {
    auto flash_forward = flash_forward_kernel<Tin, D, DV, NB, NS>;
    const size_t smem = flash_forward_smem(D, DV, NB, NS);
    flash_smem_prepare((const void *)flash_forward, smem, "the forward kernel");
    const dim3 grid((unsigned)((m.T + FLASH_BR - 1) / FLASH_BR), (unsigned)(m.nq / NB),
                    (unsigned)m.B);
    const float scale_log2 = FLASH_LOG2E / sqrtf((float)D);
    flash_forward<<<grid, NB * FLASH_WARPS * 32, smem, cuda_stream()>>>(out, o1, o2, lse, q, k, v,
                                                                        m, scale_log2, epi);
    CUDA_LAUNCH_CHECK();
}

/* The kernel each forward runs: the 32-row one (standard heads) or the split one (DIFF V1) where
 * asked for, else the 16-row one with ns K/V stages; none when nothing fits. */
enum flash_fwd_kind { FLASH_FWD_NONE, FLASH_FWD_ROWS16, FLASH_FWD_ROWS32, FLASH_FWD_SPLIT };
struct flash_fwd_plan {
    flash_fwd_kind kind;
    int ns;
};

/* The first of these that fits flash_smem_limit(): the kernel the switches ask for, then the
 * 16-row kernel with its stages. Those (ns) are two where that keeps the blocks per SM the
 * single stage allows on H100 (228 KiB of shared memory, 64 Ki registers per SM; registers
 * from ptxas -v): standard d = 96 and 128 would drop from 4 to 3 and from 3 to 2 blocks, and
 * keep one stage (their loads overlap other blocks' products). DIFF runs 1 block of 8 warps
 * either way, and takes one stage where two do not fit (an A100 at d = 96 and 128); the
 * standard kernels' largest, 52 KiB, fits every GPU with bf16 mma.sync. */
static flash_fwd_plan flash_forward_plan(int d, bool diff) {
    const size_t limit = flash_smem_limit();
    if (!diff && flash_fwd_rows32() && flash_forward_rows32_smem(d) <= limit)
        return {FLASH_FWD_ROWS32, 2};
    if (diff && flash_diff_fwd_split() && flash_forward_diff_split_smem(d) <= limit)
        return {FLASH_FWD_SPLIT, 2};
    const int nb = diff ? 2 : 1, dv = nb * d, first = diff || d == 64 ? 2 : 1;
    for (int ns = first; ns >= (diff ? 1 : first); ns--)
        if (flash_forward_smem(d, dv, nb, ns) <= limit) return {FLASH_FWD_ROWS16, ns};
    return {FLASH_FWD_NONE, 0};
}

bool flash_forward_fits(int d, bool diff) {
    return flash_forward_plan(d, diff).kind != FLASH_FWD_NONE;
}

/* The 16-row kernel for head dims D, DV: DIFF V1 (DV = 2D) with the plan's ns K/V stages; the
 * standard kernel with two at d = 64 and one at 96 and 128 */
template <typename Tin, int D, int DV>
static void flash_forward_rows16(int ns, operand_bf16 *out, float *o1, float *o2, float *lse,
                                 const Tin *q, const Tin *k, const Tin *v, const attn_map &m,
                                 const flash_diff_epi &epi) {
    if constexpr (DV == D)
        flash_forward_launch<Tin, D, DV, 1, D == 64 ? 2 : 1>(out, o1, o2, lse, q, k, v, m, epi);
    else if (ns == 2)
        flash_forward_launch<Tin, D, DV, 2, 2>(out, o1, o2, lse, q, k, v, m, epi);
    else
        flash_forward_launch<Tin, D, DV, 2, 1>(out, o1, o2, lse, q, k, v, m, epi);
}

template <typename Tin>
void flash_core_forward(operand_bf16 *out, float *o1, float *o2, float *lse, const Tin *q,
                        const Tin *k, const Tin *v, const attn_map &m,
                        const flash_diff_epi &epi) {
    flash_check(m);
    if (m.B == 0 || m.T <= 0) return;
    const flash_fwd_plan plan = flash_forward_plan(m.d, m.diff != 0);
    switch (plan.kind) {
    case FLASH_FWD_NONE:
        fprintf(stderr, "difftrain: error: CUDA fused attention: no forward kernel for d=%d%s "
                "fits the device's %zu bytes of shared memory a block (cuda_flash_usable tells "
                "where they do)\n", m.d, m.diff ? " (DIFF)" : "", flash_smem_limit());
        fflush(stderr);
        abort();
    case FLASH_FWD_ROWS32: flash_forward_rows32<Tin>(out, lse, q, k, v, m); return;
    case FLASH_FWD_SPLIT: flash_forward_diff_split<Tin>(out, o1, o2, lse, q, k, v, m, epi); return;
    case FLASH_FWD_ROWS16: break;
    }
#define FLASH_FWD(D, DV)                                                                          \
    flash_forward_rows16<Tin, D, DV>(plan.ns, out, o1, o2, lse, q, k, v, m, epi)
    FLASH_HEAD_DIMS_DISPATCH(m, FLASH_FWD)
#undef FLASH_FWD
}
template void flash_core_forward<flash_bf16>(operand_bf16 *, float *, float *, float *,
                                             const flash_bf16 *, const flash_bf16 *,
                                             const flash_bf16 *, const attn_map &,
                                             const flash_diff_epi &);
template void flash_core_forward<float>(operand_bf16 *, float *, float *, float *, const float *,
                                        const float *, const float *, const attn_map &,
                                        const flash_diff_epi &);
