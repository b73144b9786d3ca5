/* The fused attention's forward, warp-specialised on sm_90 (FlashAttention-3's shape): a
 * producer warpgroup loads the tiles by TMA (tma.cuh) into swizzled shared memory, and two
 * consumer warpgroups take turns at the tensor cores (wgmma.cuh, warp_roles.cuh). The same
 * contract, head mapping, online softmax and epilogue as flash_forward_sm90.cu (whose header
 * describes them), and the same products in the same order for every row: the same bits as
 * that kernel (test_cuda_flash). One kernel for both kinds of head:
 *   DIFF V1 (DIFF): a block takes 64 query rows of one DIFF head, consumer c runs branch c + 1
 *     (Q_c, K_c) on those rows; each V tile (64 keys x 2d) is loaded once for both branches;
 *   standard heads (the baseline, DIFF V2's, GQA): a block takes 128 query rows of one q-head,
 *     consumer c rows i0 + 64c..; each K and V tile is loaded once for both, which halves the
 *     K/V traffic of the 64-row kernels.
 *
 * 384 threads:
 *   warpgroup 0, the producer (24 registers a thread after setmaxnreg): one thread loads both
 *     consumers' Q tiles once, then per key tile the K tiles (DIFF: K_1 and K_2) into a ring of
 *     two K stages and V into a ring of two V stages, each stage's loads completing on its
 *     `full` mbarrier by their bytes; it refills a stage once the consumers have handed it back
 *     on its `empty` mbarrier;
 *   warpgroups 1 and 2, the consumers (240 registers): per key tile
 *       S (64 x 64) = Q K^T: D/16 wgmma_rs, A the warp's rows of Q in registers (read from
 *         shared memory once), B the K tile K-major (DIFF at d = 128, whose O takes 128
 *         registers a thread: Q's first 64 columns from registers, the rest by wgmma_ss from
 *         shared memory);
 *       the online softmax of each warp's 16 rows (flash_forward.cuh);
 *       O (64 x DV) += P V: 4 wgmma_rs, P rounded to bf16 in registers, V N-major.
 * The products of one tile overlap the softmax of the next within a warpgroup, as in
 * flash_forward_sm90.cu: S_kt+1 and P_kt V_kt are issued together, S_kt+1's softmax runs while
 * P V is multiplied. And the two warpgroups take turns issuing (named barriers 1 and 2:
 * consumer c waits on 1 + c for its turn, then hands it to the other), so that one's softmax
 * runs under the other's products (FlashAttention-3's ping-pong). A K stage goes back to the
 * producer when both consumers' S products on it are done, a V stage when both P V products
 * are: with the two rings separate, each tile's K is loaded a whole step before its S, and its
 * V a whole step before its P V. With standard heads consumer 1's rows reach one key tile
 * further than consumer 0's (the causal diagonal): consumer 0 takes that turn without products
 * and hands the tile's stages straight back.
 *
 * Why Q in registers: shared memory moves 128 bytes a cycle per SM, and an m64n64k16 product with
 * both operands there reads 4 KiB for its 32 cycles on the tensor cores (4,096 flops a cycle):
 * S alone takes all of it while it runs. Over a key tile, the consumers' reads (Q, K and V
 * each) were 67% (DIFF) or 75% (standard heads) of the products' cycles, 100% with TMA's writes
 * of K and V; without Q's reads 50%, and 83% or 75% with the writes; DIFF at d = 128, with half
 * of Q's, 58% and 92% (docs/gpu-performance.md).
 *
 * Tiles in shared memory as TMA writes them: a K-major tile (Q or K: 64 rows x d) is boxes of 64
 * columns under the 128-byte swizzle, at d = 96 then one box of 32 columns under the 64-byte
 * swizzle (flash_tma_tile); a V tile (64 keys x DV) boxes of 64 columns under the 128-byte
 * swizzle, or at DV = 96 (standard heads, d = 96) of 32 columns under the 64-byte one, read
 * N-major. The maps are 3-d (columns of all heads, T, B): rows past a sequence's end land as
 * zeros, as the other kernels stage them. Shared memory (1 KiB of it for the swizzles'
 * alignment): DIFF Q 2 tiles, K 2 x 2, V 2 of 2d: 81, 121 and 161 KiB at d = 64, 96, 128;
 * standard Q 2, K 2, V 2: 49, 73 and 97 KiB. DIFF's epilogue reuses the tiles for its O_2
 * exchange.
 *
 * Only bf16 inputs. The host runs it for the bf16 forward where flash_tma_usable says
 * (flash_ops.cu: DIFFTRAIN_FLASH_TMA=1 on an sm_90a build and an H100/H200). */
#include "model/cuda/flash_forward.cuh"
#include "model/cuda/flash_sm90.cuh"
#include "model/cuda/flash_tma.cuh"
#include "model/cuda/mbarrier.cuh"
#include "model/cuda/tma.cuh"
#include "model/cuda/warp_roles.cuh"

#define TMA_FWD_ALIGN 1024u /* the 128-byte swizzle's repeat */
#define TMA_FWD_TURN 1      /* named barriers 1 + c: branch c's turn to issue products */
#define TMA_FWD_EPI 3       /* named barrier of the consumers' epilogue */
#define TMA_FWD_CONSUMERS 256

/* A K-major tile of 64 rows x D columns as TMA loads it: D / 64 boxes of 64 columns (128-byte
 * rows, 128-byte swizzle, 8 KiB each), then (d = 96) one of 32 columns (64-byte rows and
 * swizzle, 4 KiB). */
template <int D> struct flash_tma_tile {
    static constexpr int FULL = D / 64, TAIL = D % 64; /* full boxes; the last box's columns */
    static constexpr unsigned BYTES = 64u * D * 2;
    static_assert(TAIL == 0 || TAIL == 32, "d is 64, 96 or 128");
    /* the descriptor of k16 step kk (columns 16kk..16kk+15) of the tile at t */
    __device__ static __forceinline__ uint64_t desc(const unsigned char *t, int kk) {
        const int box = kk / 4, s = box < FULL ? 128 : 64; /* a full box holds 4 k16 steps */
        return wgmma_desc_swizzled(t + box * 64 * 128 + 32 * (kk % 4), 16, 8 * s, s);
    }
    /* The m16n8k16 A fragments a[kk] (k16 steps kk < STEPS) of the tile's rows r0..r0 + 15,
     * from the swizzled layout by ldmatrix (by the warp): lane l gives the address of row
     * r0 + l % 16 at column 16 kk + 8 (l / 16), whose 16-byte chunk the swizzle moves by bits
     * 7.. of its offset in the 1024-byte aligned box (the row's low 3 bits at 128 bytes a row,
     * bits 1-2 at 64). */
    template <int STEPS>
    __device__ static __forceinline__ void fragments(uint32_t (*a)[4], const unsigned char *t,
                                                     int r0, int lane) {
        const int r = r0 + (lane & 15), half = lane >> 4;
#pragma unroll
        for (int kk = 0; kk < STEPS; kk++) {
            const int box = kk / 4, s = box < FULL ? 128 : 64;
            const int chunk = 2 * (kk % 4) + half, x = s == 128 ? (r & 7) : ((r >> 1) & 3);
            ldmatrix_x4(a[kk], t + box * 64 * 128 + r * s + 16 * (chunk ^ x));
        }
    }
    /* rows r0.. of sequence b, columns c0.. (one head's) into t; by one thread */
    __device__ static __forceinline__ void load(unsigned char *t, const tma_map *full,
                                                const tma_map *tail, int c0, int r0, int b,
                                                uint64_t *bar) {
#pragma unroll
        for (int j = 0; j < FULL; j++) tma_load_3d(t + j * 64 * 128, full, c0 + 64 * j, r0, b, bar);
        if (TAIL) tma_load_3d(t + FULL * 64 * 128, tail, c0 + 64 * FULL, r0, b, bar);
    }
};

/* the mbarriers: Q's, then per stage s of the K ring and of the V ring full[s] and empty[s] */
enum { TMA_BAR_Q, TMA_BAR_K_FULL, TMA_BAR_K_EMPTY = 3, TMA_BAR_V_FULL = 5, TMA_BAR_V_EMPTY = 7,
       TMA_BARS = 9 };

/* The block's shape and shared memory for head dim D, DIFF V1's heads or standard ones (offsets
 * from the 1024-byte aligned base) */
template <int D, bool DIFF> struct flash_tma_layout {
    typedef flash_tma_tile<D> tile;
    static constexpr int DV = DIFF ? 2 * D : D;            /* V's columns */
    static constexpr int ROWS = DIFF ? 64 : 128;           /* query rows a block */
    static constexpr int K_TILES = DIFF ? 2 : 1;           /* K tiles a stage: one a branch */
    static constexpr int V_BOX = DV % 64 == 0 ? 64 : 32;   /* V's box columns */
    static constexpr int V_SWIZZLE = 2 * V_BOX;            /* its rows' bytes and swizzle */
    static constexpr unsigned K_BYTES = K_TILES * tile::BYTES; /* one K stage */
    static constexpr unsigned V_BYTES = 64u * DV * 2;          /* one V stage */
    /* S's A operand, a consumer warp's 16 rows of Q, from registers for the first Q_STEPS k16
     * steps (4 a step, loaded once), from shared memory for the rest: all of them but in DIFF's
     * d = 128 kernel, whose O takes 128 registers a thread (32 for all of Q: past 240, ptxas
     * serialises the products) */
    static constexpr int Q_STEPS = DIFF && D == 128 ? D / 32 : D / 16;
    static constexpr size_t Q = 0, K = 2 * tile::BYTES, V = K + 2 * K_BYTES; /* offsets */
    static constexpr size_t bytes(void) { return TMA_FWD_ALIGN + V + 2 * V_BYTES; }
    /* the descriptor of P V's k16 step kk (keys 16kk..) of the V tile at t, read N-major: rows of
     * V_BOX columns, V_SWIZZLE bytes apart; the next V_BOX columns are the next box */
    __device__ static __forceinline__ uint64_t v_desc(const unsigned char *t, int kk) {
        return wgmma_desc_swizzled(t + 16 * kk * V_SWIZZLE, 64 * V_SWIZZLE, 8 * V_SWIZZLE,
                                   V_SWIZZLE);
    }
};

template <int D, bool DIFF>
__global__ void __launch_bounds__(WS_THREADS, 1)
flash_forward_tma_kernel(operand_bf16 *out, float *o1, float *o2, float *lse,
                         const __grid_constant__ tma_map q_map,
                         const __grid_constant__ tma_map q_tail,
                         const __grid_constant__ tma_map k_map,
                         const __grid_constant__ tma_map k_tail,
                         const __grid_constant__ tma_map v_map, attn_map m, float scale_log2,
                         flash_diff_epi epi) {
    typedef flash_tma_layout<D, DIFF> L;
    typedef flash_tma_tile<D> tile;
    constexpr int DV = L::DV, NTV = DV / 8;
    extern __shared__ uint4 flash_smem[];
    __shared__ uint64_t bar[TMA_BARS];
    unsigned char *base = tma_smem_align(flash_smem, TMA_FWD_ALIGN);
    unsigned char *Qs = base + L::Q, *Ks = base + L::K, *Vs = base + L::V;
    const int tid = threadIdx.x, lane = tid & 31, warp = warp_index();
    const int wg = wgmma_warpgroup(); /* the role */
    const int T = m.T, b = blockIdx.z, unit = blockIdx.y; /* unit: a DIFF head, or a q-head */
    const int i0 = (gridDim.x - 1 - blockIdx.x) * L::ROWS, nr = min(L::ROWS, T - i0);
    const int n_kt = (i0 + nr + FLASH_BC - 1) / FLASH_BC; /* up to the last row's diagonal */
    /* consumer c's q-head and first row (DIFF: branch c + 1 of the block's rows) */
    auto q_head = [&](int c) { return DIFF ? 2 * unit + c : unit; };
    auto row0 = [&](int c) { return DIFF ? i0 : i0 + FLASH_BR * c; };
    if (tid == 0) {
        mbar_init(&bar[TMA_BAR_Q], 1);
        for (int s = 0; s < 2; s++) {
            mbar_init(&bar[TMA_BAR_K_FULL + s], 1);
            mbar_init(&bar[TMA_BAR_V_FULL + s], 1);
            mbar_init(&bar[TMA_BAR_K_EMPTY + s], TMA_FWD_CONSUMERS);
            mbar_init(&bar[TMA_BAR_V_EMPTY + s], TMA_FWD_CONSUMERS);
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (wg == 0) { /* the producer: warp 0 waits for the stages, its lane 0 issues the loads */
        setmaxnreg_dec<WS_PRODUCER_REGS>();
        if (warp != 0) return;
        const int vc = attn_v_head(m, q_head(0)) * DV;
        if (lane == 0) {
            mbar_arrive_expect_tx(&bar[TMA_BAR_Q], 2 * tile::BYTES);
            /* rows wholly past T (consumer 1's, never stored) load consumer 0's instead: no box
             * lies wholly outside the tensor */
            for (int c = 0; c < 2; c++)
                tile::load(Qs + c * tile::BYTES, &q_map, &q_tail, q_head(c) * D,
                           row0(c) < T ? row0(c) : i0, b, &bar[TMA_BAR_Q]);
        }
        for (int kt = 0; kt < n_kt; kt++) {
            const int s = kt & 1, round = kt >> 1, j0 = kt * FLASH_BC;
            if (round > 0) mbar_wait(&bar[TMA_BAR_K_EMPTY + s], (round - 1) & 1);
            if (lane == 0) {
                mbar_arrive_expect_tx(&bar[TMA_BAR_K_FULL + s], L::K_BYTES);
                for (int c = 0; c < L::K_TILES; c++)
                    tile::load(Ks + s * L::K_BYTES + c * tile::BYTES, &k_map, &k_tail,
                               attn_k_head(m, q_head(c)) * D, j0, b, &bar[TMA_BAR_K_FULL + s]);
            }
            __syncwarp();
            if (round > 0) mbar_wait(&bar[TMA_BAR_V_EMPTY + s], (round - 1) & 1);
            if (lane == 0) {
                mbar_arrive_expect_tx(&bar[TMA_BAR_V_FULL + s], L::V_BYTES);
#pragma unroll
                for (int j = 0; j < DV / L::V_BOX; j++)
                    tma_load_3d(Vs + s * L::V_BYTES + j * 64 * L::V_SWIZZLE, &v_map,
                                vc + L::V_BOX * j, j0, b, &bar[TMA_BAR_V_FULL + s]);
            }
            __syncwarp();
        }
        return;
    }

    setmaxnreg_inc<WS_CONSUMER_REGS>();
    const int c = wg - 1, rw = warp % 4; /* consumer c; the warp's rows ri0 + 16 rw.. */
    const int ri0 = row0(c);
    const int n_mine = min(n_kt, ri0 / FLASH_BC + 1); /* the key tiles of c's rows */
    const unsigned char *Qc = Qs + c * tile::BYTES;
    float o[NTV][4];
    flash_zero<NTV>(o);
    float mrow[2] = {FLASH_MASKED, FLASH_MASKED}, lrow[2] = {0.0f, 0.0f}; /* rows g, g + 8 */
    float s[FLASH_BC / 8][4], corr[2];
    uint32_t p[FLASH_BC / 16][4], pn[FLASH_BC / 16][4]; /* P_kt, P_kt+1: P V's A fragments */
    auto wait_stage = [&](int ring, int kt) { mbar_wait(&bar[ring + (kt & 1)], (kt >> 1) & 1); };
    auto free_stage = [&](int ring, int kt) { mbar_arrive(&bar[ring + (kt & 1)]); };
    /* c's turn to issue, and after its products the other's (whose last turn came) */
    auto my_turn = [&](void) { named_bar_sync(TMA_FWD_TURN + c, TMA_FWD_CONSUMERS); };
    auto pass_turn = [&](bool more) {
        if (c == 0 || more) named_bar_arrive(TMA_FWD_TURN + 1 - c, TMA_FWD_CONSUMERS);
    };
    /* the warp's rows of Q, its first L::Q_STEPS k16 steps, in registers once Q has landed */
    uint32_t qf[L::Q_STEPS][4];
    /* S = Q K^T of tile kt, issued (the caller fences and commits) */
    auto issue_s = [&](int kt) {
        const unsigned char *Kc = Ks + (kt & 1) * L::K_BYTES + (DIFF ? c : 0) * tile::BYTES;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            if (kk < L::Q_STEPS)
                wgmma_rs<FLASH_BC, 0>(s, qf[kk], tile::desc(Kc, kk), kk > 0);
            else
                wgmma_ss<FLASH_BC, 0, 0>(s, tile::desc(Qc, kk), tile::desc(Kc, kk), kk > 0);
    };
    /* the softmax of tile kt's S (its max's move in corr), P rounded into pt */
    auto softmax = [&](int kt, uint32_t (*pt)[4]) {
        const int j0 = kt * FLASH_BC;
        const bool diag = j0 + FLASH_BC - 1 > ri0 + 16 * rw; /* keys past a row: mask */
        constexpr flash_row_sum SUM = DIFF ? FLASH_SUM_ROUNDED : FLASH_SUM_EXACT;
        flash_softmax_tile<SUM>(s, pt, mrow, lrow, corr, scale_log2, diag, ri0 + 16 * rw, j0,
                                lane);
    };

    if (c == 1) named_bar_arrive(TMA_FWD_TURN, TMA_FWD_CONSUMERS); /* consumer 0 issues first */
    mbar_wait(&bar[TMA_BAR_Q], 0);
    tile::template fragments<L::Q_STEPS>(qf, Qc, 16 * rw, lane);
    wait_stage(TMA_BAR_K_FULL, 0);
    my_turn();
    wgmma_fence();
    issue_s(0);
    wgmma_commit();
    pass_turn(true);
    wgmma_wait<0>();
    free_stage(TMA_BAR_K_EMPTY, 0);
    softmax(0, p); /* o is still 0: no rescale */
    /* tile kt's P V with P_kt in pc, overlapped with tile kt + 1's S and softmax into pnext */
    auto step = [&](int kt, uint32_t (*pc)[4], uint32_t (*pnext)[4]) {
        const bool next = kt + 1 < n_mine; /* warpgroup-uniform */
        if (next) wait_stage(TMA_BAR_K_FULL, kt + 1);
        wait_stage(TMA_BAR_V_FULL, kt);
        my_turn();
        wgmma_fence(); /* s read, o rescaled, pc written by the threads */
        if (next) {
            issue_s(kt + 1);
            wgmma_commit();
        }
        const unsigned char *Vt = Vs + (kt & 1) * L::V_BYTES;
#pragma unroll
        for (int kk = 0; kk < FLASH_BC / 16; kk++) /* O += P V over keys 16kk..16kk+15 */
            wgmma_rs<DV, 1>(o, pc[kk], L::v_desc(Vt, kk), 1);
        wgmma_commit();
        pass_turn(next);
        if (next) {
            wgmma_wait<1>(); /* tile kt + 1's S; its softmax runs while P V is multiplied */
            free_stage(TMA_BAR_K_EMPTY, kt + 1);
            softmax(kt + 1, pnext);
            wgmma_wait<0>(); /* P V: o is free */
            free_stage(TMA_BAR_V_EMPTY, kt);
            flash_rescale<NTV>(o, corr);
        } else {
            wgmma_wait<0>();
            free_stage(TMA_BAR_V_EMPTY, kt);
        }
    };
    /* two tiles per pass, so P's two register sets swap roles without a copy */
    for (int kt = 0; kt < n_mine; kt += 2) {
        step(kt, p, pn);
        if (kt + 1 < n_mine) step(kt + 1, pn, p);
    }
    /* standard heads: the tile past consumer 0's rows (consumer 1's diagonal) is consumer 0's
     * turn without products, so that the turns still alternate; its stages go straight back
     * (once loaded: an arrival before would count towards the stage's previous use) */
    for (int kt = n_mine; kt < n_kt; kt++) {
        wait_stage(TMA_BAR_K_FULL, kt);
        free_stage(TMA_BAR_K_EMPTY, kt);
        wait_stage(TMA_BAR_V_FULL, kt);
        free_stage(TMA_BAR_V_EMPTY, kt);
        my_turn();
        pass_turn(true);
    }

    /* every load landed and was read by both consumers' products (each waited): the tiles are
     * free for DIFF's epilogue exchange (256 D bytes) */
    auto consumers_sync = [](void) { named_bar_sync(TMA_FWD_EPI, TMA_FWD_CONSUMERS); };
    if (DIFF)
        flash_forward_epilogue<2, DV>(o, mrow, lrow, out, o1, o2, lse, m, epi, b, unit, i0,
                                      warp - 4, lane, (float *)base, consumers_sync);
    else /* no exchange: the rows of warp rw of consumer c */
        flash_forward_epilogue<1, DV>(o, mrow, lrow, out, o1, o2, lse, m, epi, b, unit, ri0, rw,
                                      lane, (float *)base, consumers_sync);
}

/* ---- host side ---- */

template <int D> static size_t flash_tma_bytes(bool diff) {
    return diff ? flash_tma_layout<D, true>::bytes() : flash_tma_layout<D, false>::bytes();
}

size_t flash_forward_tma_smem(int d, bool diff) {
    switch (d) {
    case 64: return flash_tma_bytes<64>(diff);
    case 96: return flash_tma_bytes<96>(diff);
    case 128: return flash_tma_bytes<128>(diff);
    }
    return (size_t)-1; /* no such kernel: fits nothing */
}

template <int D, bool DIFF>
static void flash_forward_tma_launch(operand_bf16 *out, float *o1, float *o2, float *lse,
                                     const flash_bf16 *q, const flash_bf16 *k,
                                     const flash_bf16 *v, const attn_map &m,
                                     const flash_diff_epi &epi) {
    typedef flash_tma_layout<D, DIFF> L;
    constexpr int TAIL = flash_tma_tile<D>::TAIL;
    tma_map qm, qt, km, kt, vm;
    flash_tma_map(&qm, q, "q", m, m.nq * D, 64);
    flash_tma_map(&km, k, "k", m, m.nk * D, 64);
    flash_tma_map(&vm, v, "v", m, m.nv * L::DV, L::V_BOX);
    if (TAIL) {
        flash_tma_map(&qt, q, "q", m, m.nq * D, TAIL);
        flash_tma_map(&kt, k, "k", m, m.nk * D, TAIL);
    } else { /* unused */
        qt = qm;
        kt = km;
    }
    auto kernel = flash_forward_tma_kernel<D, DIFF>;
    const size_t smem = L::bytes();
    flash_smem_prepare((const void *)kernel, smem, "the TMA forward kernel");
    const dim3 grid((unsigned)((m.T + L::ROWS - 1) / L::ROWS), (unsigned)(DIFF ? m.nq / 2 : m.nq),
                    (unsigned)m.B);
    const float scale_log2 = FLASH_LOG2E / sqrtf((float)D);
    kernel<<<grid, WS_THREADS, smem, cuda_stream()>>>(out, o1, o2, lse, qm, qt, km, kt, vm,
                                                      m, scale_log2, epi);
    CUDA_LAUNCH_CHECK();
}

void flash_forward_tma(operand_bf16 *out, float *o1, float *o2, float *lse, const flash_bf16 *q,
                       const flash_bf16 *k, const flash_bf16 *v, const attn_map &m,
                       const flash_diff_epi &epi) {
    flash_check(m);
    if (m.B == 0 || m.T <= 0) return;
#define FLASH_FWD(D, DV) flash_forward_tma_launch<D, DV == 2 * D>(out, o1, o2, lse, q, k, v, m, epi)
    FLASH_HEAD_DIMS_DISPATCH(m, FLASH_FWD)
#undef FLASH_FWD
}
