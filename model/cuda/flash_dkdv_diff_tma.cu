/* dk and dv of DIFF V1, both branches of a head per query tile (flash_dkdv_diff.cu's kernel and
 * math), warp-specialised on sm_90: a producer warpgroup loads the tiles by TMA (tma.cuh) into
 * swizzled shared memory and two consumer warpgroups, one a branch, multiply on wgmma
 * (wgmma.cuh). The same products in the same order for every element as the mma.sync kernel,
 * so its bits: dk, dv and the stored dS tiles (test_cuda_flash).
 *
 * One block per (key tile of 64 keys, v-head g, b), 384 threads:
 *   warpgroup 0, the producer (24 registers a thread after setmaxnreg): one thread loads K_1,
 *     K_2 and V of the block's keys once, then per query tile (flash_kv_tiles' order: each pair
 *     of q-heads of the v-head, the row tiles from the diagonal on) Q_1, Q_2 and G into a ring
 *     of two stages, completing on the stage's `full` mbarrier by their bytes; its warp's lanes
 *     store the tile's row terms (lse, delta of both branches) beside them and arrive once more;
 *     a stage is refilled once both consumers have handed it back on its `empty` mbarrier;
 *   warpgroup 1 + c, branch c + 1 (240 registers), warp w the keys 16w..16w+15: per query tile
 *       S_c^T (64 keys x 64 rows) = K_c Q_c^T, and in branch 1 dP^T = V G^T, wgmma with both
 *         operands K-major in shared memory; branch 1 hands dP^T (2d wide: 2 d-wide products)
 *         to branch 2 through shared memory (X), 8 d-wide products a tile pair as in the
 *         mma.sync kernel, not 10;
 *       P_c and dS_c in registers (flash_dkdv_pds); Pc = P_1 - lambda P_2 from both: branch 2
 *         hands its fp32 -lambda P_2 to branch 1 through shared memory, which adds it to P_1
 *         (the mma.sync kernel's sum), rounds Pc into A fragments and hands those back;
 *       dV[:, c d..] += Pc^T G and dK_c += dS_c^T Q_c: wgmma with A (Pc^T, dS_c^T) from
 *         registers and B (G's column half c, Q_c) read N-major; dS_c^T's fragments also go to
 *         the stored tile for flash_dq_stored_kernel (STORE_DS) while those multiply.
 * Each consumer holds dV's columns c d.. and dK_c of its 64 keys: 2 x 64 d / 128 floats a thread.
 * At d = 64 and 96 a tile's dV and dK products are issued behind the next tile's S and dP, and
 * that tile's P and dS computed while they multiply (FlashAttention-3's overlap within a
 * warpgroup; flash_tma_bwd_consume, the schedule flash_dkdv_tma.cu's kernel shares); at d = 128
 * there are not the registers for two tiles (flash_tma_bwd_pipelined).
 * sm_90a: no spills, no serialised products (at d >= 96 V's descriptors are made each tile:
 * issue_s_dp).
 *
 * Why: the mma.sync kernel reads its operands from shared memory once per warp (ldmatrix: 168 a
 * warp and tile pair at d = 128, 688 KiB a block); here wgmma reads each once per warpgroup, and
 * P, dS never pass through shared memory as operands: 288 KiB a tile pair at d = 128 (the
 * K-major operands of both S and one dP, G's halves and Q_c, X (twice) and Y below) plus TMA's
 * 64 KiB of writes.
 *
 * Tiles as TMA writes them (flash_tma_box, flash_tma_bwd.cuh): boxes of 64 rows x BOX columns,
 * BOX 64 under the 128-byte swizzle (d = 64, 128) or 32 under the 64-byte one (d = 96, so that
 * G's column half d.. starts a box): the same tile serves as K-major operand (k16 steps 32
 * bytes apart in a box row) and N-major (LBO: the next box). Rows past T land as zeros; keys past
 * T are never stored, rows past T get zero row terms and are masked (flash_dkdv_pds). Shared
 * memory (KiB): K_1, K_2, V; two stages of Q_1, Q_2, G and the row terms (1); X (dP^T, then
 * -lambda P_2, fp32: 16) and Y (Pc's fragments: 8); 1 for the swizzles' alignment: 123, 171
 * and 219 at d = 64, 96, 128. One block per SM.
 *
 * Only bf16 inputs. flash_dkdv_diff runs it where flash_tma_bwd_usable says (flash_ops.cu:
 * DIFFTRAIN_FLASH_TMA_BWD=1 on an sm_90a build and an H100/H200). */
#include <math.h>

#include "model/cuda/flash_tma_bwd.cuh"
#include "model/cuda/warp_roles.cuh"

#define TMA_BWD_X_FULL 1 /* named barrier: branch 2's -lambda P_2 is in X */
#define TMA_BWD_Y_FULL 2 /* named barrier: Pc's A fragments are in Y */
#define TMA_BWD_DP_FULL 3 /* named barrier: branch 1's dP^T is in X */


/* The block's shared memory at head dim D (offsets from the 1024-byte aligned base) and its
 * tiles' descriptors */
template <int D> struct flash_tma_bwd_layout : flash_tma_box<D> {
    typedef flash_tma_box<D> Box;
    static constexpr int DV = 2 * D;
    static constexpr unsigned QT = Box::QT, VT = 2 * QT; /* a Q or K tile; V or G */
    static constexpr unsigned KV_BYTES = 2 * QT + VT;   /* K_1, K_2, V: loaded once */
    static constexpr unsigned LOADS = 2 * QT + VT;      /* a stage's TMA loads: Q_1, Q_2, G */
    static constexpr unsigned TERMS = 4 * FLASH_BR * 4; /* lse_1, delta_1, lse_2, delta_2 */
    static constexpr unsigned STAGE = LOADS + TERMS;
    static constexpr unsigned XB = 128 * 32 * 4, YB = 128 * 16 * 4; /* X, Y */
    static constexpr size_t K = 0, V = 2 * QT, S = KV_BYTES, X = S + 2 * STAGE, Y = X + XB;
    static constexpr size_t bytes(void) { return TMA_BWD_ALIGN + Y + YB; }
    /* the stage of query tile it (base: the aligned shared memory) */
    __device__ static __forceinline__ unsigned char *stage_at(unsigned char *base, int it) {
        return base + S + (it & 1) * STAGE;
    }
    /* in the stage at st: branch c's Q tile, the G tile, branch c's row terms (lse, then
     * delta: FLASH_BR each) */
    __device__ static __forceinline__ unsigned char *q_at(unsigned char *st, int c) {
        return st + c * QT;
    }
    __device__ static __forceinline__ unsigned char *g_at(unsigned char *st) {
        return st + 2 * QT;
    }
    __device__ static __forceinline__ float *terms_at(unsigned char *st, int c) {
        return (float *)(st + LOADS) + 2 * FLASH_BR * c;
    }
};

template <int D, bool STORE_DS>
__global__ void __launch_bounds__(WS_THREADS, 1)
flash_dkdv_diff_tma_kernel(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles,
                           const __grid_constant__ tma_map q_map,
                           const __grid_constant__ tma_map k_map,
                           const __grid_constant__ tma_map v_map,
                           const __grid_constant__ tma_map g_map, const float *lse,
                           const float *delta, const float *lambda, attn_map m, float scale_log2,
                           float scale) {
    typedef flash_tma_bwd_layout<D> L;
    constexpr int DV = L::DV;
    extern __shared__ uint4 flash_smem[];
    __shared__ uint64_t bar[TMA_BWD_BARS];
    unsigned char *base = tma_smem_align(flash_smem, TMA_BWD_ALIGN);
    const int tid = threadIdx.x, lane = tid & 31, warp = warp_index();
    const int wg = wgmma_warpgroup(); /* the role */
    const int T = m.T, gv = blockIdx.y, b = blockIdx.z, j0 = blockIdx.x * FLASH_BC;
    /* the query tiles of branch 1's q-heads gv*n_rep, +2, ... (branch 2: each + 1) */
    const flash_kv_tiles tiles(m, gv, 0, j0);
    if (tid == 0) flash_tma_bwd_init_bars(bar);
    __syncthreads();

    if (wg == 0) { /* the producer */
        flash_tma_bwd_produce(
            tiles, T, bar, L::KV_BYTES, L::LOADS, warp, lane,
            [&](uint64_t *kv) { /* K_1, K_2 and V of the key tile */
                for (int c = 0; c < 2; c++)
                    L::template load<D>(base + L::K + c * L::QT, &k_map, (2 * gv + c) * D, j0, b,
                                        kv);
                L::template load<DV>(base + L::V, &v_map, gv * DV, j0, b, kv);
            },
            [&](int it, const flash_kv_walk &w, uint64_t *full) {
                unsigned char *st = L::stage_at(base, it);
                for (int c = 0; c < 2; c++)
                    L::template load<D>(L::q_at(st, c), &q_map, (w.q + c) * D, w.i0, b, full);
                L::template load<DV>(L::g_at(st), &g_map, (int)attn_o_col(m, w.q), w.i0, b,
                                     full);
            },
            [&](int it, const flash_kv_walk &w) {
                unsigned char *st = L::stage_at(base, it);
                for (int c = 0; c < 2; c++)
                    for (int h = 0; h < 2; h++)
                        flash_stage_row_terms(L::terms_at(st, c), L::terms_at(st, c) + FLASH_BR,
                                              lse, delta, m, b, w.q + c, w.i0, lane + 32 * h);
            });
        return;
    }

    setmaxnreg_inc<WS_CONSUMER_REGS>();
    const int c = wg - 1, rw = warp % 4, t = tid - 128 * wg; /* branch c + 1; thread t of it */
    const int key0 = j0 + 16 * rw;                           /* the warp's keys */
    const unsigned char *Kc = base + L::K + c * L::QT, *Vs = base + L::V;
    float4 *X = (float4 *)(base + L::X);
    uint4 *Y = (uint4 *)(base + L::Y);
    const float dscale = attn_dscale(m, c, lambda); /* 1, -lambda */
    float accv[D / 8][4], acck[D / 8][4];           /* dV's columns c D.., dK_c */
    flash_zero<D / 8>(accv);
    flash_zero<D / 8>(acck);
    float sc[FLASH_BR / 8][4], dp[FLASH_BR / 8][4];      /* S_c^T, dP^T */
    uint32_t pa[FLASH_BR / 16][4], da[FLASH_BR / 16][4]; /* Pc^T, dS_c^T: A fragments */
    auto stage = [&](int it) { return L::stage_at(base, it); };
    /* S_c^T and dP^T of tile it, issued (its stage landed; the caller fences); S_c^T alone
     * (branch 2) */
    auto issue_s_dp = [&](int it) {
        /* V's descriptors made anew each tile at d >= 96 (opaque_ptr): hoisted out of the loop
         * (V does not move), the 12 at d = 96 did not fit beside two tiles' registers and
         * ptxas spilled them. At d = 128 this also shortens the loop by 20 instructions; at
         * d = 64, where they fit, it would lengthen it by 38 */
        const unsigned char *v = D >= 96 ? opaque_ptr(Vs) : Vs;
        L::template issue_s_dp<DV>(sc, dp, Kc, L::q_at(stage(it), c), v, L::g_at(stage(it)));
    };
    auto issue_s = [&](int it) {
        L::template issue_s_dp<0>(sc, dp, Kc, L::q_at(stage(it), c), Vs, L::g_at(stage(it)));
    };
    /* branch 1's dP^T of the tile to branch 2 through X (each thread its own elements; X is
     * free: branch 1 has read branch 2's last -lambda P_2 from it), instead of both computing
     * it: 8 d-wide products a tile pair instead of 10, and branch 2's K-major reads of V and
     * G (2 x 64 x 2d bf16) traded for X's 64 x 64 floats written and read */
    auto share_dp = [&](void) {
        if (c == 0) {
#pragma unroll
            for (int nt = 0; nt < FLASH_BR / 8; nt++)
                X[nt * 128 + t] = make_float4(dp[nt][0], dp[nt][1], dp[nt][2], dp[nt][3]);
            named_bar_arrive(TMA_BWD_DP_FULL, TMA_BWD_CONSUMERS);
        } else {
            named_bar_sync(TMA_BWD_DP_FULL, TMA_BWD_CONSUMERS);
#pragma unroll
            for (int nt = 0; nt < FLASH_BR / 8; nt++) {
                const float4 x = X[nt * 128 + t];
                dp[nt][0] = x.x, dp[nt][1] = x.y, dp[nt][2] = x.z, dp[nt][3] = x.w;
            }
        }
    };
    /* sc becomes dscale_c P_c^T and dp dS_c^T of tile it at rows i0.. */
    auto pds = [&](int it, int i0) {
        share_dp();
        flash_tma_bwd_pds(sc, dp, L::terms_at(stage(it), c), scale_log2, dscale, key0, i0, T,
                          lane);
    };
    /* da from dp; Pc = P_1 + (-lambda P_2), as the mma.sync kernel sums it, into pa: X carries
     * branch 2's half to branch 1, Y the rounded fragments back (each thread its own elements) */
    auto fragments = [&](void) {
#pragma unroll
        for (int kk = 0; kk < FLASH_BR / 16; kk++) flash_c_to_a(da[kk], dp, kk);
        if (c == 1) {
#pragma unroll
            for (int nt = 0; nt < FLASH_BR / 8; nt++)
                X[nt * 128 + t] = make_float4(sc[nt][0], sc[nt][1], sc[nt][2], sc[nt][3]);
            named_bar_arrive(TMA_BWD_X_FULL, TMA_BWD_CONSUMERS);
            named_bar_sync(TMA_BWD_Y_FULL, TMA_BWD_CONSUMERS);
#pragma unroll
            for (int kk = 0; kk < FLASH_BR / 16; kk++) {
                const uint4 y = Y[kk * 128 + t];
                pa[kk][0] = y.x, pa[kk][1] = y.y, pa[kk][2] = y.z, pa[kk][3] = y.w;
            }
        } else {
            named_bar_sync(TMA_BWD_X_FULL, TMA_BWD_CONSUMERS);
#pragma unroll
            for (int nt = 0; nt < FLASH_BR / 8; nt++) {
                const float4 x = X[nt * 128 + t];
                sc[nt][0] += x.x, sc[nt][1] += x.y, sc[nt][2] += x.z, sc[nt][3] += x.w;
            }
#pragma unroll
            for (int kk = 0; kk < FLASH_BR / 16; kk++) {
                flash_c_to_a(pa[kk], sc, kk);
                Y[kk * 128 + t] = make_uint4(pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3]);
            }
            named_bar_arrive(TMA_BWD_Y_FULL, TMA_BWD_CONSUMERS);
        }
    };
    /* the bf16 dS_c^T tile of branch c's q-head (branch 1's: q1) rows i0.. */
    auto store_ds = [&](int q1, int i0) {
        if (STORE_DS)
            flash_tma_store_ds(ds_tiles + flash_ds_tile_at(m, b, q1 + c, i0, j0), da, rw, lane);
    };

    /* dV += Pc^T G and dK_c += dS_c^T Q_c over tile it's rows (16kk.. a step), committed */
    auto issue_dv_dk = [&](int it) {
        L::issue_dv_dk(accv, acck, pa, da, L::g_at(stage(it)), c * D, L::q_at(stage(it), c));
    };

    constexpr bool PIPELINED = flash_tma_bwd_pipelined<D>();
    if (c == 0) /* each branch its own loop: no product issued conditionally (C7515) */
        flash_tma_bwd_consume<PIPELINED>(tiles, T, bar, issue_s_dp, pds, fragments, issue_dv_dk,
                                         store_ds);
    else
        flash_tma_bwd_consume<PIPELINED>(tiles, T, bar, issue_s, pds, fragments, issue_dv_dk,
                                         store_ds);

    flash_dk_store<D>(dk, acck, m, b, 2 * gv + c, 0, key0, lane, scale);
    flash_dv_store<D>(dv, accv, m, b, gv, c * D, key0, lane);
}

/* ---- host side ---- */

size_t flash_dkdv_diff_tma_smem(int d) { return flash_layout_smem<flash_tma_bwd_layout>(d); }

template <int D>
void flash_dkdv_diff_tma(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles,
                         const flash_bf16 *G, const flash_bf16 *q, const flash_bf16 *k,
                         const flash_bf16 *v, const float *lse, const float *delta,
                         const float *lambda, const attn_map &m) {
    typedef flash_tma_bwd_layout<D> L;
    flash_tma_bwd_maps t;
    flash_tma_bwd_maps_of(&t, q, k, v, G, m, L::BOX);
    auto kernel = ds_tiles ? flash_dkdv_diff_tma_kernel<D, true>
                           : flash_dkdv_diff_tma_kernel<D, false>;
    const size_t smem = L::bytes();
    flash_smem_prepare((const void *)kernel, smem, "DIFF V1's TMA dk/dv kernel");
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = FLASH_LOG2E * scale;
    const dim3 grid((unsigned)((m.T + FLASH_BC - 1) / FLASH_BC), (unsigned)m.nv, (unsigned)m.B);
    kernel<<<grid, WS_THREADS, smem, cuda_stream()>>>(
        dk, dv, ds_tiles, t.q, t.k, t.v, t.g, lse, delta, lambda, m, scale_log2, scale);
    CUDA_LAUNCH_CHECK();
}

#define FLASH_DKDV_DIFF_TMA(D)                                                                    \
    template void flash_dkdv_diff_tma<D>(flash_qk_grad, operand_bf16 *, flash_bf16 *,             \
                                         const flash_bf16 *, const flash_bf16 *,                  \
                                         const flash_bf16 *, const flash_bf16 *, const float *,   \
                                         const float *, const float *, const attn_map &);
FLASH_DKDV_DIFF_TMA(64)
FLASH_DKDV_DIFF_TMA(96)
FLASH_DKDV_DIFF_TMA(128)
#undef FLASH_DKDV_DIFF_TMA
