/* dk and dv of standard heads (the baseline, DIFF V2), warp-specialised on sm_90: the math of
 * flash_dkdv_kernel (flash_backward.cu), a producer warpgroup loading the tiles by TMA (tma.cuh)
 * into swizzled shared memory and two consumer warpgroups, one a key tile, multiplying on wgmma
 * (wgmma.cuh). The same products in the same order for every element as the mma.sync kernel,
 * so its bits: dk, dv and the stored dS tiles (test_cuda_flash).
 *
 * One block per (128 keys: key tiles j0 and j0 + 64, v-head g, b), 384 threads:
 *   warpgroup 0, the producer (24 registers a thread after setmaxnreg): one thread loads K and V
 *     of the block's keys once, then per query tile (flash_kv_tiles' order: each q-head that
 *     reads the v-head, the row tiles from j0 on) Q and G into a ring of two stages, completing
 *     on the stage's `full` mbarrier by their bytes; its warp's lanes store the tile's row terms
 *     (lse, delta) beside them and arrive once more; a stage is refilled once both consumers
 *     have handed it back on its `empty` mbarrier;
 *   warpgroup 1 + c, keys j0 + 64c.. (240 registers), warp w the keys 16w..16w+15 of them:
 *     per query tile S^T (64 keys x 64 rows) = K_c Q^T and dP^T = V_c G^T, wgmma with both
 *     operands K-major in shared memory; dscale P and dS in registers (flash_dkdv_pds);
 *     dV += (dscale P^T) G and dK += dS^T Q, wgmma with A from registers and B (G, Q) read
 *     N-major; the dS^T fragments also go to the stored tile for flash_dq_stored_kernel
 *     (STORE_DS) while those multiply.
 * Both consumers read the same Q, G tiles: loaded once for 128 keys, where the mma.sync kernel
 * loads them once for 64. The second key tile's walk starts a tile early (rows j0.., which see
 * none of its keys): P and dS are exactly 0 there, which adds nothing to dV and dK (so the bits
 * are the mma.sync kernel's, whose walk for those keys starts at j0 + 64), and that dS tile lies
 * above the diagonal and is not stored. Computing it rather than skipping it keeps every
 * product unconditional (a conditionally issued one makes ptxas serialise them all: C7514):
 * it gives the second consumer the first one's n_i tiles a q-head, so the block takes as long
 * as before, bar the tensor cores' share of them.
 * At d = 64 and 96 a tile's dV and dK products are issued behind the next tile's S and dP
 * (flash_tma_bwd_consume); at d = 128 one tile follows the other (registers).
 *
 * Tiles as flash_tma_box lays them out. Rows past T land as zeros; keys past T are never stored,
 * rows past T get zero row terms and are masked. Shared memory (KiB): K, V of 128 keys; two
 * stages of Q, G and the row terms (each stage on the swizzle's 1 KiB repeat); 1 for the
 * swizzles' alignment: 67, 99 and 131 at d = 64, 96, 128 (bytes()). One block per SM
 * (registers). sm_90a: up to R189/R220/R218 (d = 64/96/128) of 240, no spills, no serialised
 * products.
 *
 * Only bf16 inputs. flash_backward.cu runs it where flash_tma_bwd_usable says (flash_ops.cu:
 * DIFFTRAIN_FLASH_TMA_BWD=1 on an sm_90a build and an H100/H200). */
#include <math.h>

#include "model/cuda/flash_tma_bwd.cuh"
#include "model/cuda/warp_roles.cuh"

/* The block's shared memory at head dim D (offsets from the 1024-byte aligned base) */
template <int D> struct flash_tma_std_layout : flash_tma_box<D> {
    typedef flash_tma_box<D> Box;
    static constexpr unsigned QT = Box::QT;          /* a tile of 64 rows: Q, G, K_c or V_c */
    static constexpr unsigned KV_BYTES = 4 * QT;     /* K_0, K_1, V_0, V_1: loaded once */
    static constexpr unsigned LOADS = 2 * QT;        /* a stage's TMA loads: Q, G */
    static constexpr unsigned TERMS = 2 * FLASH_BR * 4; /* lse, delta */
    /* a stage, the next one on the swizzle's repeat */
    static constexpr unsigned STAGE = (LOADS + TERMS + TMA_BWD_ALIGN - 1) / TMA_BWD_ALIGN *
                                      TMA_BWD_ALIGN;
    static constexpr size_t K = 0, V = 2 * QT, S = KV_BYTES;
    static constexpr size_t bytes(void) { return TMA_BWD_ALIGN + S + 2 * STAGE; }
    __device__ static __forceinline__ unsigned char *stage_at(unsigned char *base, int it) {
        return base + S + (it & 1) * STAGE;
    }
    /* in the stage at st: the Q tile, the G tile, the row terms (lse, then delta) */
    __device__ static __forceinline__ unsigned char *q_at(unsigned char *st) { return st; }
    __device__ static __forceinline__ unsigned char *g_at(unsigned char *st) { return st + QT; }
    __device__ static __forceinline__ float *terms_at(unsigned char *st) {
        return (float *)(st + LOADS);
    }
};

template <int D, bool STORE_DS>
__global__ void __launch_bounds__(WS_THREADS, 1)
flash_dkdv_tma_kernel(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles,
                      const __grid_constant__ tma_map q_map, const __grid_constant__ tma_map k_map,
                      const __grid_constant__ tma_map v_map, const __grid_constant__ tma_map g_map,
                      const float *lse, const float *delta, attn_map m, float scale_log2,
                      float scale) {
    typedef flash_tma_std_layout<D> L;
    extern __shared__ uint4 flash_smem[];
    __shared__ uint64_t bar[TMA_BWD_BARS];
    unsigned char *base = tma_smem_align(flash_smem, TMA_BWD_ALIGN);
    const int tid = threadIdx.x, lane = tid & 31, warp = warp_index();
    const int wg = wgmma_warpgroup(); /* the role */
    const int T = m.T, gv = blockIdx.y, b = blockIdx.z, j0 = blockIdx.x * 2 * FLASH_BC;
    const int kh = attn_k_head(m, gv * m.n_rep);
    /* the query tiles: q-heads gv*n_rep.. of k-head kh, the rows from j0 on */
    const flash_kv_tiles tiles(m, gv, 0, j0);
    if (tid == 0) flash_tma_bwd_init_bars(bar);
    __syncthreads();

    if (wg == 0) { /* the producer */
        flash_tma_bwd_produce(
            tiles, T, bar, L::KV_BYTES, L::LOADS, warp, lane,
            [&](uint64_t *kv) { /* K and V of both key tiles */
                for (int c = 0; c < 2; c++) {
                    const int r0 = j0 + c * FLASH_BC;
                    L::template load<D>(base + L::K + c * L::QT, &k_map, kh * D, r0, b, kv);
                    L::template load<D>(base + L::V + c * L::QT, &v_map, gv * D, r0, b, kv);
                }
            },
            [&](int it, const flash_kv_walk &w, uint64_t *full) {
                unsigned char *st = L::stage_at(base, it);
                L::template load<D>(L::q_at(st), &q_map, w.q * D, w.i0, b, full);
                L::template load<D>(L::g_at(st), &g_map, (int)attn_o_col(m, w.q), w.i0, b, full);
            },
            [&](int it, const flash_kv_walk &w) {
                float *terms = L::terms_at(L::stage_at(base, it));
                for (int h = 0; h < 2; h++)
                    flash_stage_row_terms(terms, terms + FLASH_BR, lse, delta, m, b, w.q, w.i0,
                                          lane + 32 * h);
            });
        return;
    }

    setmaxnreg_inc<WS_CONSUMER_REGS>();
    const int c = wg - 1, rw = warp % 4; /* key tile c; warp rw of it */
    const int jc = j0 + c * FLASH_BC, key0 = jc + 16 * rw;
    const unsigned char *Kc = base + L::K + c * L::QT, *Vc = base + L::V + c * L::QT;
    float accv[D / 8][4], acck[D / 8][4]; /* dV, dK of the warp's keys */
    flash_zero<D / 8>(accv);
    flash_zero<D / 8>(acck);
    float sc[FLASH_BR / 8][4], dp[FLASH_BR / 8][4];      /* S^T, dP^T */
    uint32_t pa[FLASH_BR / 16][4], da[FLASH_BR / 16][4]; /* P^T, dS^T: A fragments */
    const float dscale = 1.0f; /* standard heads: attn_dscale's for every q-head */
    auto stage = [&](int it) { return L::stage_at(base, it); };
    auto issue_s_dp = [&](int it) {
        L::template issue_s_dp<D>(sc, dp, Kc, L::q_at(stage(it)), Vc, L::g_at(stage(it)));
    };
    auto pds = [&](int it, int i0) {
        flash_tma_bwd_pds(sc, dp, L::terms_at(stage(it)), scale_log2, dscale, key0, i0, T, lane);
    };
    auto fragments = [&](void) {
#pragma unroll
        for (int kk = 0; kk < FLASH_BR / 16; kk++) {
            flash_c_to_a(pa[kk], sc, kk);
            flash_c_to_a(da[kk], dp, kk);
        }
    };
    /* the bf16 dS^T tile of q-head jq's rows i0..: only those on or below the diagonal */
    auto store_ds = [&](int jq, int i0) {
        if (STORE_DS && jc <= i0)
            flash_tma_store_ds(ds_tiles + flash_ds_tile_at(m, b, jq, i0, jc), da, rw, lane);
    };
    auto issue_dv_dk = [&](int it) {
        L::issue_dv_dk(accv, acck, pa, da, L::g_at(stage(it)), 0, L::q_at(stage(it)));
    };

    flash_tma_bwd_consume<flash_tma_bwd_pipelined<D>()>(tiles, T, bar, issue_s_dp, pds, fragments,
                                                        issue_dv_dk, store_ds);

    flash_dk_store<D>(dk, acck, m, b, kh, 0, key0, lane, scale);
    flash_dv_store<D>(dv, accv, m, b, gv, 0, key0, lane);
}

/* ---- host side ---- */

size_t flash_dkdv_tma_smem(int d) { return flash_layout_smem<flash_tma_std_layout>(d); }

template <int D>
void flash_dkdv_tma(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles, const flash_bf16 *G,
                    const flash_bf16 *q, const flash_bf16 *k, const flash_bf16 *v,
                    const float *lse, const float *delta, const attn_map &m) {
    typedef flash_tma_std_layout<D> L;
    flash_tma_bwd_maps t;
    flash_tma_bwd_maps_of(&t, q, k, v, G, m, L::BOX);
    auto kernel = ds_tiles ? flash_dkdv_tma_kernel<D, true> : flash_dkdv_tma_kernel<D, false>;
    const size_t smem = L::bytes();
    flash_smem_prepare((const void *)kernel, smem, "the standard heads' TMA dk/dv kernel");
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = FLASH_LOG2E * scale;
    const dim3 grid((unsigned)((m.T + 2 * FLASH_BC - 1) / (2 * FLASH_BC)), (unsigned)m.nv,
                    (unsigned)m.B);
    kernel<<<grid, WS_THREADS, smem, cuda_stream()>>>(dk, dv, ds_tiles, t.q, t.k, t.v, t.g,
                                                      lse, delta, m, scale_log2, scale);
    CUDA_LAUNCH_CHECK();
}

#define FLASH_DKDV_TMA(D)                                                                         \
    template void flash_dkdv_tma<D>(flash_qk_grad, operand_bf16 *, flash_bf16 *,                  \
                                    const flash_bf16 *, const flash_bf16 *, const flash_bf16 *,   \
                                    const flash_bf16 *, const float *, const float *,             \
                                    const attn_map &);
FLASH_DKDV_TMA(64)
FLASH_DKDV_TMA(96)
FLASH_DKDV_TMA(128)
#undef FLASH_DKDV_TMA
