/* What the warp-specialised dk/dv kernels share (flash_dkdv_diff_tma.cu: DIFF V1, a consumer
 * warpgroup a branch; flash_dkdv_tma.cu: standard heads, a consumer warpgroup a key tile): the
 * tiles as TMA writes them and wgmma reads them, the stored dS^T tile from registers, and the
 * consumers' schedule over the query tiles. Internal to model/cuda. */
#ifndef DT_CUDA_FLASH_TMA_BWD_CUH
#define DT_CUDA_FLASH_TMA_BWD_CUH

#include "model/cuda/flash_backward.cuh"
#include "model/cuda/flash_tma.cuh"
#include "model/cuda/mbarrier.cuh"
#include "model/cuda/warp_roles.cuh"
#include "model/cuda/wgmma.cuh"

#define TMA_BWD_ALIGN 1024u  /* the 128-byte swizzle's repeat */
#define TMA_BWD_CONSUMERS 256

/* Tiles of 64 rows at head dim D in boxes of 64 rows x BOX columns: BOX 64 under the 128-byte
 * swizzle (D = 64, 128) or 32 under the 64-byte one (D = 96, so that DIFF's G column half D..
 * starts a box). The same tile serves as K-major operand (k16 steps 32 bytes apart in a box row)
 * and N-major (LBO: the next box). */
template <int D> struct flash_tma_box {
    static constexpr int BOX = D % 64 == 0 ? 64 : 32; /* a box's columns */
    static constexpr int SW = 2 * BOX;                /* its rows' bytes and swizzle */
    static constexpr unsigned BOX_BYTES = 64u * SW;
    static constexpr unsigned QT = 64u * D * 2; /* a tile of 64 rows x D (Q, K, or V, G of D) */
    /* k16 step kk (columns 16kk..) of a tile at t read K-major (64 rows: M or N) */
    __device__ static __forceinline__ uint64_t kdesc(const unsigned char *t, int kk) {
        constexpr int STEPS = BOX / 16; /* k16 steps a box */
        return wgmma_desc_swizzled(t + (kk / STEPS) * BOX_BYTES + 32 * (kk % STEPS), 16, 8 * SW,
                                   SW);
    }
    /* rows 16kk.. (the reduction) of a tile at t read N-major from column c0 (a box's first) */
    __device__ static __forceinline__ uint64_t ndesc(const unsigned char *t, int c0, int kk) {
        return wgmma_desc_swizzled(t + (c0 / BOX) * BOX_BYTES + 16 * kk * SW, BOX_BYTES, 8 * SW,
                                   SW);
    }
    /* rows r0.. of sequence b, columns c0..c0 + COLS - 1 of map into t; by one thread */
    template <int COLS>
    __device__ static __forceinline__ void load(unsigned char *t, const tma_map *map, int c0,
                                                int r0, int b, uint64_t *bar) {
#pragma unroll
        for (int j = 0; j < COLS / BOX; j++)
            tma_load_3d(t + j * BOX_BYTES, map, c0 + BOX * j, r0, b, bar);
    }
    /* S^T = K Q^T (D wide) and dP^T = V G^T (DV wide; none where DV is 0) of a tile (64 keys x
     * 64 rows), both operands K-major in shared memory; committed (the caller fenced) */
    template <int DV>
    __device__ static __forceinline__ void issue_s_dp(float (*sc)[4], float (*dp)[4],
                                                      const unsigned char *Ks,
                                                      const unsigned char *Qs,
                                                      const unsigned char *Vs,
                                                      const unsigned char *Gs) {
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wgmma_ss<FLASH_BR, 0, 0>(sc, kdesc(Ks, kk), kdesc(Qs, kk), kk > 0);
#pragma unroll
        for (int kk = 0; kk < DV / 16; kk++)
            wgmma_ss<FLASH_BR, 0, 0>(dp, kdesc(Vs, kk), kdesc(Gs, kk), kk > 0);
        wgmma_commit();
    }
    /* dV += P^T G (G's columns g0..g0 + D - 1) and dK += dS^T Q over a tile's 64 rows (16kk.. a
     * step), A (pa: P^T, da: dS^T) from registers, G and Q read N-major; committed */
    __device__ static __forceinline__ void issue_dv_dk(float (*accv)[4], float (*acck)[4],
                                                       const uint32_t (*pa)[4],
                                                       const uint32_t (*da)[4],
                                                       const unsigned char *Gs, int g0,
                                                       const unsigned char *Qs) {
#pragma unroll
        for (int kk = 0; kk < FLASH_BR / 16; kk++)
            wgmma_rs<D, 1>(accv, pa[kk], ndesc(Gs, g0, kk), 1);
#pragma unroll
        for (int kk = 0; kk < FLASH_BR / 16; kk++)
            wgmma_rs<D, 1>(acck, da[kk], ndesc(Qs, 0, kk), 1);
        wgmma_commit();
    }
};

/* The mbarriers: K and V's (K_1, K_2 and V for DIFF), loaded once; then per stage s of the ring
 * of two full[s] (the producer's: its loads' bytes and its arrival after the row terms) and
 * empty[s] (every consumer thread's arrival) */
enum { TMA_BWD_BAR_KV, TMA_BWD_BAR_FULL, TMA_BWD_BAR_EMPTY = 3, TMA_BWD_BARS = 5 };

/* by thread 0, before the __syncthreads that publishes them */
__device__ __forceinline__ void flash_tma_bwd_init_bars(uint64_t *bar) {
    mbar_init(&bar[TMA_BWD_BAR_KV], 1);
    for (int s = 0; s < 2; s++) {
        mbar_init(&bar[TMA_BWD_BAR_FULL + s], 2);
        mbar_init(&bar[TMA_BWD_BAR_EMPTY + s], TMA_BWD_CONSUMERS);
    }
    mbar_init_fence();
}

/* The producer warpgroup (warp: the block's warp index, lane: its lane): it gives its registers
 * to the consumers (warp_roles.cuh), and its warp 0 works. Lane 0 arms the K/V mbarrier with
 * kv_bytes and issues load_kv(that mbarrier): the block's keys, loaded once. Then the walk over
 * the query tiles (w: flash_kv_walk, the tile's q-head and rows): once both consumers have
 * handed back its stage, lane 0 arms the stage's full mbarrier with the loads' bytes and issues
 * load(it, w, full); the warp's lanes store the tile's row terms (terms(it, w)), and lane 0's
 * arrival publishes them. */
template <typename LoadKV, typename Load, typename Terms>
__device__ __forceinline__ void flash_tma_bwd_produce(const flash_kv_tiles &tiles, int T,
                                                      uint64_t *bar, unsigned kv_bytes,
                                                      unsigned bytes, int warp, int lane,
                                                      LoadKV load_kv, Load load, Terms terms) {
    setmaxnreg_dec<WS_PRODUCER_REGS>();
    if (warp != 0) return;
    if (lane == 0) {
        mbar_arrive_expect_tx(&bar[TMA_BWD_BAR_KV], kv_bytes);
        load_kv(&bar[TMA_BWD_BAR_KV]);
    }
    flash_kv_walk w(tiles, T);
    for (int it = 0; it < tiles.n; it++, w.next()) {
        const int s = it & 1, round = it >> 1;
        uint64_t *full = &bar[TMA_BWD_BAR_FULL + s];
        if (round > 0) mbar_wait(&bar[TMA_BWD_BAR_EMPTY + s], (round - 1) & 1);
        if (lane == 0) {
            mbar_arrive_expect_tx(full, bytes);
            load(it, w, full);
        }
        terms(it, w);
        __syncwarp(); /* the lanes' stores, then lane 0's arrival publishes them */
        if (lane == 0) mbar_arrive(full);
    }
}

/* The maps of both kernels' inputs, in boxes of box columns: q, k, v (m.dv wide v-heads) and the
 * output gradient G (host side) */
struct flash_tma_bwd_maps {
    tma_map q, k, v, g;
};
static inline void flash_tma_bwd_maps_of(flash_tma_bwd_maps *t, const flash_bf16 *q,
                                         const flash_bf16 *k, const flash_bf16 *v,
                                         const flash_bf16 *G, const attn_map &m, int box) {
    flash_tma_map(&t->q, q, "q", m, m.nq * m.d, box);
    flash_tma_map(&t->k, k, "k", m, m.nk * m.d, box);
    flash_tma_map(&t->v, v, "v", m, m.nv * m.dv, box);
    flash_tma_map(&t->g, G, "the output gradient G", m, (int)attn_o_stride(m), box);
}

/* Whether the consumers overlap a tile's element-wise work with the previous tile's products:
 * at d = 128 the two tiles' registers (dV and dK 128 a thread, S, dP and the fragments 96)
 * exceed 240 (ptxas spills and serialises the products, C7512), so there one tile follows the
 * other */
template <int D> constexpr bool flash_tma_bwd_pipelined(void) { return D <= 96; }

/* A consumer warp's S^T and dP^T (its keys key0.., the tile's rows i0..; terms: the tile's lse,
 * then delta) become dscale P^T in sc and dS^T in dp, 32 rows at a time (flash_dkdv_pds) */
__device__ __forceinline__ void flash_tma_bwd_pds(float (*sc)[4], float (*dp)[4],
                                                  const float *terms, float scale_log2,
                                                  float dscale, int key0, int i0, int T,
                                                  int lane) {
    const int nr = min(FLASH_BR, T - i0);
#pragma unroll
    for (int h = 0; h < 2; h++)
        flash_dkdv_pds(sc + 4 * h, dp + 4 * h, sc + 4 * h, dp + 4 * h, terms, terms + FLASH_BR,
                       scale_log2, dscale, key0, 32 * h, i0, nr, lane);
}

/* A consumer warp's dS^T fragments da (its 16 keys, warp rw of the warpgroup, x the tile's 64
 * rows: A fragments) into the bf16 dS^T tile at tile, key after key (flash_ds_tile_at) */
__device__ __forceinline__ void flash_tma_store_ds(flash_bf16 *tile,
                                                   const uint32_t (*da)[4], int rw, int lane) {
    const int g = lane >> 2, col = 2 * (lane & 3);
#pragma unroll
    for (int kk = 0; kk < FLASH_BR / 16; kk++)
#pragma unroll
        for (int e = 0; e < 4; e++) /* keys g (e even), g + 8; rows 16kk + 8 (e / 2) */
            *reinterpret_cast<uint32_t *>(tile + (16 * rw + g + 8 * (e & 1)) * FLASH_BR +
                                          16 * kk + 8 * (e >> 1) + col) = da[kk][e];
}

/* A consumer warpgroup's work: once K and V have landed, its walk over the query tiles
 * (flash_kv_walk), each with
 *   issue_s_dp(it): issue S^T and dP^T of tile it, committed (its stage landed, the caller
 *       fenced);
 *   pds(it, i0): P and dS of tile it (rows i0..) in registers;
 *   fragments(): the A fragments of both from them;
 *   issue_dv_dk(it): issue dV's and dK's products of tile it, committed;
 *   store(q, i0): the stored dS^T tile of q-head q, rows i0.., while those multiply;
 * and the stage handed back once they are done.
 * PIPELINED: tile it's dV and dK products are issued behind tile it + 1's S and dP, whose P and
 * dS are computed while the former multiply; the last tile after the loop, so that no product
 * is issued conditionally (ptxas then serialises them all: C7514). Else one tile after the
 * other. */
template <bool PIPELINED, typename IssueSdp, typename Pds, typename Fragments,
          typename IssueDvDk, typename Store>
__device__ __forceinline__ void flash_tma_bwd_consume(const flash_kv_tiles &tiles, int T,
                                                      uint64_t *bar, IssueSdp issue_s_dp,
                                                      Pds pds, Fragments fragments,
                                                      IssueDvDk issue_dv_dk, Store store) {
    auto landed = [&](int it) { mbar_wait(&bar[TMA_BWD_BAR_FULL + (it & 1)], (it >> 1) & 1); };
    auto hand_back = [&](int it) { mbar_arrive(&bar[TMA_BWD_BAR_EMPTY + (it & 1)]); };
    mbar_wait(&bar[TMA_BWD_BAR_KV], 0);
    const int n_it = tiles.n;
    flash_kv_walk cur(tiles, T); /* tile it */
    if constexpr (PIPELINED) {
        flash_kv_walk nxt(tiles, T); /* tile it + 1 */
        nxt.next();
        landed(0);
        wgmma_fence();
        issue_s_dp(0);
        wgmma_wait<0>();
        pds(0, cur.i0);
        fragments();
        for (int it = 0; it + 1 < n_it; it++, cur.next(), nxt.next()) {
            landed(it + 1);
            wgmma_fence(); /* S, dP read and the fragments written by the threads */
            issue_s_dp(it + 1);
            issue_dv_dk(it);
            store(cur.q, cur.i0); /* while those multiply */
            wgmma_wait<1>();      /* tile it + 1's S and dP */
            pds(it + 1, nxt.i0);
            wgmma_wait<0>(); /* tile it's dV and dK: the fragments and the stage are free */
            hand_back(it);
            fragments();
        }
        wgmma_fence();
        issue_dv_dk(n_it - 1);
        store(cur.q, cur.i0);
        wgmma_wait<0>();
        hand_back(n_it - 1);
    } else {
        for (int it = 0; it < n_it; it++, cur.next()) {
            landed(it);
            wgmma_fence();
            issue_s_dp(it);
            wgmma_wait<0>();
            pds(it, cur.i0);
            fragments();
            wgmma_fence();
            issue_dv_dk(it);
            store(cur.q, cur.i0);
            wgmma_wait<0>();
            hand_back(it);
        }
    }
}

#endif
