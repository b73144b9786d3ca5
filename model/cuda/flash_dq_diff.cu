/* dq of DIFF V1 with both branches of a head per query tile (the fused backward's dq for DIFF
 * where it recomputes dS; flash_backward.cu has the standard one).
 *
 * Branch c of DIFF head h (q-head 2h + c, k-head 2g + c) has dP_c = dscale_c G V^T with the same
 * G and V for both branches (attn_core.cuh), so the product dP = G V^T is shared: per key tile
 * the branch-1 warps compute its first 32 keys, the branch-2 warps its last 32, and each warp
 * reads the whole row block back from shared memory. A warp's work per tile pair is S_c = Q_c
 * K_c^T (16 x 64 x d), half of dP (16 x 32 x 2d) and dq_c += dS_c K_c (16 x d x 64): 3 d-wide
 * product units where the per-branch dq kernel (flash_dq_kernel) computes the whole dP in each
 * branch's block: 4. G is staged once per query tile, not once per branch.
 *
 * One block per (query tile of 64 rows, DIFF head h, b), 8 warps: c = warp / 4 is the branch,
 * rw = warp % 4 the rows 16rw..16rw+15 (the forward's layout). It holds Q_1, Q_2 and G for its
 * rows and streams K_1, K_2 and V of each key tile up to the diagonal over two stages. dP keeps
 * the per-branch kernel's bits (the same products in the same order, whichever warp computes
 * them), and so do dS and dq. */
#include <math.h>

#include "model/cuda/flash_backward.cuh"

#define FLASH_LDX (FLASH_BC + 8) /* row stride (floats) of the shared dP blocks */

/* Shared memory (bytes): Q_1, Q_2, G; two stages of K_1, K_2, V; dP of the 4 row groups */
size_t flash_dq_diff_smem(int d) {
    return sizeof(flash_bf16) * (size_t)(FLASH_BR + 2 * FLASH_BC) * (4 * d + 3 * FLASH_PAD) +
           sizeof(float) * (size_t)FLASH_BR * FLASH_LDX;
}

template <typename Tin, int D>
__global__ void __launch_bounds__(2 * FLASH_WARPS * 32)
flash_dq_diff_kernel(flash_qk_grad dq, const Tin *G, const Tin *q, const Tin *k, const Tin *v,
                     const float *lse, const float *delta, const float *lambda, attn_map m,
                     float scale_log2, float scale) {
    extern __shared__ uint4 flash_smem[];
    constexpr int DV = 2 * D, NT = 2 * FLASH_WARPS * 32; /* threads (the launch bounds) */
    constexpr int LDQ = D + FLASH_PAD, LDV = DV + FLASH_PAD;
    constexpr int STAGE = FLASH_BC * (2 * LDQ + LDV); /* one stage: K_1, K_2, V (elements) */
    flash_bf16 *Qs = (flash_bf16 *)flash_smem; /* 2 x (BR, D): Q_1, Q_2 */
    flash_bf16 *Gs = Qs + 2 * FLASH_BR * LDQ;  /* (BR, DV) */
    flash_bf16 *KV = Gs + FLASH_BR * LDV;      /* 2 stages: 2 x (BC, D) K_1, K_2, (BC, DV) V */
    float *dPs = (float *)(KV + 2 * STAGE);    /* (BR, BC) fp32, rows of FLASH_LDX */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int c = warp / FLASH_WARPS, rw = warp % FLASH_WARPS, g = lane >> 2, t4 = lane & 3;
    const int T = m.T, h = blockIdx.y, b = blockIdx.z, j = 2 * h + c; /* this warp's q-head */
    const int i0 = (gridDim.x - 1 - blockIdx.x) * FLASH_BR, nr = min(FLASH_BR, T - i0);
    const size_t qs = (size_t)m.nq * D, ks = (size_t)m.nk * D, vs = (size_t)m.nv * DV;
    const size_t os = attn_o_stride(m);
    const float dscale = attn_dscale(m, j, lambda);

    for (int cc = 0; cc < 2; cc++)
        flash_stage<Tin, D, NT>(Qs + cc * FLASH_BR * LDQ,
                                q + (size_t)b * T * qs + (size_t)(2 * h + cc) * D, qs, i0, nr, tid);
    flash_stage<Tin, DV, NT>(Gs, G + (size_t)b * T * os + attn_o_col(m, 2 * h), os, i0, nr, tid);
    const Tin *kb = k + (size_t)b * T * ks;
    const Tin *vh = v + (size_t)b * T * vs + (size_t)attn_v_head(m, 2 * h) * DV;
    const Tin *kh[2] = {kb + (size_t)attn_k_head(m, 2 * h) * D,
                        kb + (size_t)attn_k_head(m, 2 * h + 1) * D};
    const flash_tile_stager<Tin, D, NT> k_stager(ks, tid); /* one block per SM: registers */
    const flash_tile_stager<Tin, DV, NT> v_stager(vs, tid);
    auto stage_kv = [&](int kt, int st) { /* K_1, K_2, V of key tile kt into stage st */
        const int j0 = kt * FLASH_BC, nc = min(FLASH_BC, T - j0);
#pragma unroll
        for (int cc = 0; cc < 2; cc++)
            k_stager.stage(KV + st * STAGE + cc * FLASH_BC * LDQ, kh[cc], ks, j0, nc);
        v_stager.stage(KV + st * STAGE + 2 * FLASH_BC * LDQ, vh, vs, j0, nc);
    };
    stage_kv(0, 0);
    cp_async_commit(); /* Q_1, Q_2, G and tile 0 */
    float lse2[2], dlt[2]; /* rows g, g + 8: lse in the log2 domain, delta */
    flash_dq_row_terms(lse2, dlt, lse, delta, m, b, j, i0 + 16 * rw, lane);
    float acc[D / 8][4];
    flash_zero<D / 8>(acc);
    const flash_bf16 *Qc = Qs + c * FLASH_BR * LDQ;
    float *dPw = dPs + 16 * rw * FLASH_LDX; /* the warp's rows of dP */

    const int n_kt = (i0 + nr + FLASH_BC - 1) / FLASH_BC;
    for (int kt = 0; kt < n_kt; kt++) {
        const int j0 = kt * FLASH_BC;
        const int st = flash_pipeline_acquire<2>(kt, n_kt, stage_kv);
        const flash_bf16 *Kc = KV + st * STAGE + c * FLASH_BC * LDQ;
        const flash_bf16 *Vs = KV + st * STAGE + 2 * FLASH_BC * LDQ;

        float dp[FLASH_BC / 8][4]; /* first: this branch's half of dP (keys 32c..) */
        flash_zero<4>(dp);
        flash_mma_abt<DV / 16, 4>(dp, Gs, LDV, 16 * rw, Vs, LDV, 32 * c, lane);
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int r = 0; r < 2; r++)
                *reinterpret_cast<float2 *>(dPw + (g + 8 * r) * FLASH_LDX + 32 * c + 8 * nt +
                                            2 * t4) = make_float2(dp[nt][2 * r], dp[nt][2 * r + 1]);
        float s[FLASH_BC / 8][4];
        flash_zero<FLASH_BC / 8>(s);
        flash_mma_abt<D / 16, FLASH_BC / 8>(s, Qc, LDQ, 16 * rw, Kc, LDQ, 0, lane);
        __syncthreads(); /* both halves of dP are in */
#pragma unroll
        for (int nt = 0; nt < FLASH_BC / 8; nt++)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const float2 x = *reinterpret_cast<const float2 *>(dPw + (g + 8 * r) * FLASH_LDX +
                                                                   8 * nt + 2 * t4);
                dp[nt][2 * r] = x.x;
                dp[nt][2 * r + 1] = x.y;
            }
        /* s becomes dS, 0 where masked */
        flash_dq_ds(s, s, dp, lse2, dlt, scale_log2, dscale, i0 + 16 * rw, j0, lane);
        flash_dq_add_ds_k<D>(acc, s, Kc, LDQ, lane);
    }

    flash_dq_store<D>(dq, acc, m, b, j, i0 + 16 * rw, lane, scale);
}

template <typename Tin, int D>
void flash_dq_diff(flash_qk_grad dq, const Tin *G, const Tin *q, const Tin *k, const Tin *v,
                   const float *lse, const float *delta, const float *lambda, const attn_map &m) {
    auto kernel = flash_dq_diff_kernel<Tin, D>;
    const size_t smem = flash_dq_diff_smem(D);
    flash_smem_prepare((const void *)kernel, smem, "the paired DIFF dq kernel");
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = FLASH_LOG2E * scale;
    const dim3 grid((unsigned)((m.T + FLASH_BR - 1) / FLASH_BR), (unsigned)(m.nq / 2),
                    (unsigned)m.B); /* query tiles x DIFF heads x b */
    kernel<<<grid, 2 * FLASH_WARPS * 32, smem, cuda_stream()>>>(dq, G, q, k, v, lse, delta, lambda,
                                                                 m, scale_log2, scale);
    CUDA_LAUNCH_CHECK();
}

#define FLASH_DQ_DIFF(Tin, D)                                                                     \
    template void flash_dq_diff<Tin, D>(flash_qk_grad, const Tin *, const Tin *, const Tin *,     \
                                        const Tin *, const float *, const float *, const float *, \
                                        const attn_map &);
FLASH_DQ_DIFF(flash_bf16, 64)
FLASH_DQ_DIFF(flash_bf16, 96)
FLASH_DQ_DIFF(flash_bf16, 128)
FLASH_DQ_DIFF(float, 64)
FLASH_DQ_DIFF(float, 96)
FLASH_DQ_DIFF(float, 128)
#undef FLASH_DQ_DIFF
