/* The fused (flash) attention on tensor cores, shared by its kernels: flash_forward.cu,
 * flash_backward.cu (dq and dk/dv) and flash_prep.cu (the backward's row terms). Internal to
 * model/cuda; the ops are declared in flash.h.
 *
 * Same math, head mapping (attn_map of attn_core.cuh: standard/GQA and DIFF V1) and contracts as
 * the tiled fp32 core, with the matrix products on bf16 tensor cores (mma.cuh):
 *   - q, k, v are bf16 dt_operands (the bf16 backend stores them so: written rounded to nearest
 *     even by the products and rope), and the output gradient G is rounded to bf16 once per op
 *     into a copy in the op's workspace (by the delta's pass over G, attn_delta; DIFF's G is
 *     written in bf16 by flash_diff_prep); the kernels stage these bf16 tensors into shared
 *     memory with cp.async, the next K/V (or Q/G) tile in flight while the current one is
 *     multiplied (two stages).
 *     The kernels also exist for fp32 inputs (Tin = float, rounded while staging; synchronous),
 *     the test path of flash_test.h (on q, k, v widened): both give the same bits;
 *   - the probabilities P and dS are rounded to bf16 as operands of the next product;
 *   - scores, the online-softmax statistics, lse, delta and every accumulator are fp32;
 *   - the ops' out (a dt_operand: the fused ops are the bf16 backend's, so it is bf16) is
 *     rounded from the fp32 result as the epilogue stores it; DIFF's o1, o2 stay fp32.
 *
 * Tiles: FLASH_BR = 64 query rows x FLASH_BC = 64 keys. A warp owns 16 rows (or keys) of a
 * product, i.e. whole m16 fragments; the score accumulator of 16 rows x 64 keys is 8 n8 tiles.
 * Shared-memory tiles are bf16 rows of W elements padded by FLASH_PAD, so the 8 row addresses of
 * an ldmatrix fall in 8 different 16-byte bank groups (row strides of 144, 208, 272, 400 and 528
 * bytes for W = 64, 96, 128, 192, 256).
 *
 * Causality and tails: key j is visible to row i iff j <= i. Rows and keys at or past T are
 * staged as zeros; a row i < T never sees a key >= T (that key is > i), the forward and dq never
 * write rows >= T, and dk/dv mask rows >= T explicitly. Scores are in the log2 domain
 * (scale * log2 e folded in), so a probability is exp2(s - m) (m: the forward's running
 * reference, flash_forward.cuh's FLASH_MAX_SLACK; the backward's lse); masked scores are the
 * finite FLASH_MASKED, never -inf, and every row < T sees key 0, so nothing is inf - inf or NaN.
 *
 * Determinism: every output element is accumulated by one thread (or one mma fragment position
 * of one warp) in a fixed order and written once; reductions across lanes use fixed shuffle
 * trees. No atomics: reruns are bit-identical. */
#ifndef DT_CUDA_FLASH_CORE_CUH
#define DT_CUDA_FLASH_CORE_CUH

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "model/cuda/attn_core.cuh"
#include "model/cuda/cp_async.cuh"
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/mma.cuh"
#include "model/cuda/operand.cuh"

#define FLASH_BR 64    /* query rows per tile */
#define FLASH_BC 64    /* keys per tile */
#define FLASH_WARPS 4  /* warps per 64 rows (or keys): 16 each */
#define FLASH_PAD 8    /* bf16 elements of padding per shared-memory row */
#define FLASH_MASKED (-1.0e30f)
#define FLASH_LOG2E 1.4426950408889634f
#define FLASH_LN2 0.6931471805599453f

typedef uint16_t flash_bf16; /* bf16 bits (shared-memory tiles, the ops' bf16 copies) */

/* Element type of the inputs in global memory, and how a 16-byte chunk of a shared-memory tile
 * (8 bf16) is staged from it:
 *   flash_bf16: bf16 tensors (q, k, v operands, the bf16 G): an asynchronous 16-byte copy
 *       (cp_async.cuh), zero-filled for a row past the tensor; the caller commits and waits;
 *   float: fp32 tensors, read by plain loads and rounded to bf16 in registers (the same round to
 *       nearest even as cuda_bf16_copies and the operands' stores: the tiles hold the same bits);
 *       synchronous, so the commits and waits around it have nothing to do. Used by the test
 *       path that checks the asynchronous staging against plain loads (flash_test.h).
 * src is 16-byte aligned; when !valid it is not read (but stays a valid address). */
template <typename Tin> struct flash_in;
template <> struct flash_in<float> {
    static __device__ __forceinline__ void stage16(flash_bf16 *dst, const float *src,
                                                   bool valid) {
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (valid) {
            const float4 a = *reinterpret_cast<const float4 *>(src);
            const float4 b = *reinterpret_cast<const float4 *>(src + 4);
            val = make_uint4(pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w),
                             pack_bf16x2(b.x, b.y), pack_bf16x2(b.z, b.w));
        }
        *reinterpret_cast<uint4 *>(dst) = val;
    }
};
template <> struct flash_in<flash_bf16> {
    static __device__ __forceinline__ void stage16(flash_bf16 *dst, const flash_bf16 *src,
                                                   bool valid) {
        cp_async16(dst, src, valid ? 16 : 0);
    }
};

/* The 16-byte chunks (row r, chunk column c) of a FLASH_BC-row tile of W columns that thread tid
 * of N stages, fn(r, c) for each, in the order idx = tid, tid + N, ...: idx / G is the index of
 * a G-row group's chunk (its chunk column idx / G % CH, its rows idx / G / CH * G..), idx % G
 * the row in the group. G = 1: consecutive threads take consecutive chunks of a row; G = 8: eight
 * consecutive threads take one chunk column of eight rows (a core matrix, flash_sm90.cuh). (r, c)
 * is stepped from chunk to chunk, not divided out of idx: a chunk costs a few adds. */
template <int W, int N, int G, typename Fn>
__device__ __forceinline__ void flash_tile_chunks(int tid, Fn fn) {
    constexpr int CH = W / 8, STEP = N / G; /* chunk columns; groups' chunks per step */
    static_assert(FLASH_BR == FLASH_BC && FLASH_BC * CH % N == 0 && N % G == 0,
                  "the block's threads split a tile's chunks evenly");
    const int rest = tid / G;
    int c = rest % CH, r = rest / CH * G + tid % G;
#pragma unroll 1 /* unrolled, the tile-invariant offsets are hoisted into many registers */
    for (int i = 0; i < FLASH_BC * CH / N; i++) {
        fn(r, c);
        c += STEP % CH;
        r += STEP / CH * G;
        if (c >= CH) { /* at most once: STEP % CH < CH */
            c -= CH;
            r += G;
        }
    }
}

/* ---- swizzled tiles: the same bank spread as the padding, no extra bytes. Row r of a W-column
 * tile starts at element r W, and its 16-byte chunk c lies at chunk (c & ~7) | ((c ^ r) & 7)
 * where rows are whole 128-byte lines (W a multiple of 64), at (c & ~3) | ((c ^ (r >> 1)) & 3)
 * where they are an odd number of half lines (W = 96: rows start in bank groups 0, 4, 0, 4, ..):
 * either way the 8 rows of an ldmatrix 8x8 matrix (consecutive rows, one chunk column) fall in 8
 * different bank groups, and a chunk stays in its row. For tiles that stay in shared memory all
 * along, where the padding's bytes decide whether a second stage fits (flash_dkdv_diff.cu). ---- */

/* The element offset of (row r, column col) */
template <int W> __device__ __forceinline__ int flash_swz(int r, int col) {
    static_assert(W % 32 == 0, "a swizzled tile's rows are whole groups of 4 chunks");
    const int c = col >> 3;
    const int p = W % 64 == 0 ? (c & ~7) | ((c ^ r) & 7) : (c & ~3) | ((c ^ (r >> 1)) & 3);
    return r * W + (p << 3) + (col & 7);
}

/* flash_stage's padded rows: the chunks' byte offsets in the view (from x0, its row r0) and in
 * the tile are stepped from chunk to chunk as 32-bit adds, in flash_tile_chunks's order (G = 1);
 * a chunk's row is compared through its tile offset unless FULL (every row valid), and the
 * thread's chunks end where that offset passes the tile (no counter: one register fewer) */
template <bool FULL, typename Tin, int W, int N>
__device__ __forceinline__ void flash_stage_padded(flash_bf16 *dst, const Tin *x0, const Tin *x,
                                                   int gx, int n_valid, int tid) {
    constexpr int CH = W / 8, LD = W + FLASH_PAD, DR = N / CH, DC = N % CH;
    constexpr unsigned SZ = sizeof(Tin);
    static_assert(FLASH_BC * CH % N == 0, "the block's threads split a tile's chunks evenly");
    const char *g0 = (const char *)x0;
    char *s0 = (char *)dst;
    int c = tid % CH;
    unsigned go = (unsigned)((tid / CH) * gx + 8 * c) * SZ;
    unsigned so = (unsigned)((tid / CH) * LD + 8 * c) * 2u;
    const unsigned s_end = (unsigned)(n_valid * LD) * 2u; /* where the invalid rows start */
#pragma unroll 1
    while (so < (unsigned)(FLASH_BC * LD) * 2u) {
        const bool valid = FULL || so < s_end;
        flash_in<Tin>::stage16((flash_bf16 *)(s0 + so), valid ? (const Tin *)(g0 + go) : x, valid);
        c += DC;
        go += (unsigned)(DR * gx + 8 * DC) * SZ;
        so += (unsigned)(DR * LD + 8 * DC) * 2u;
        if (DC && c >= CH) { /* at most once: DC < CH */
            c -= CH;
            go += (unsigned)(gx - W) * SZ;
            so += (unsigned)(LD - W) * 2u;
        }
    }
}

/* Rows [r0, r0 + FLASH_BC) of a head view x (row stride xs elements, W columns) into dst (rows
 * of W + FLASH_PAD bf16, or swizzled rows of W when SWZ: flash_swz), rows at or past r0 + n_valid
 * as zeros (their source address is x's row 0, never read); by thread tid of the block's N. With
 * Tin = flash_bf16 the copies are in flight until the caller's cp_async_commit and cp_async_wait
 * (and a __syncthreads for the others'). The padded rows' offsets are 32-bit (FLASH_BC rows of
 * a view stay under 2^31 bytes: flash_forward.cu), and a whole tile skips the rows' compares. */
template <typename Tin, int W, int N, bool SWZ = false>
__device__ __forceinline__ void flash_stage(flash_bf16 *dst, const Tin *x, size_t xs, int r0,
                                            int n_valid, int tid) {
    const Tin *x0 = x + (size_t)r0 * xs;
    if (SWZ) {
        flash_tile_chunks<W, N, 1>(tid, [&](int r, int c) {
            const bool valid = r < n_valid;
            flash_in<Tin>::stage16(dst + flash_swz<W>(r, 8 * c),
                                   (valid ? x0 + (size_t)r * xs : x) + 8 * c, valid);
        });
    } else if (n_valid >= FLASH_BC) {
        flash_stage_padded<true, Tin, W, N>(dst, x0, x, (int)xs, n_valid, tid);
    } else {
        flash_stage_padded<false, Tin, W, N>(dst, x0, x, (int)xs, max(n_valid, 0), tid);
    }
}

/* flash_stage for a kernel that streams many tiles of one head view (the key loop's K and V)
 * and has registers to spare: the chunks this thread copies of each tile, their byte offsets
 * from the tile's first row in the view and in the shared tile, are worked out once, at
 * construction, and held in 2 NC registers, so that staging a whole tile costs a wide add and a
 * copy per chunk (some 4 instructions; flash_stage steps its offsets from chunk to chunk, some 11
 * to 18 with the loop, and keeps no registers). A tile with rows past the view's valid ones (the
 * last, where T is not a multiple of FLASH_BC) compares each chunk's shared offset against the
 * valid rows': a chunk stays in its row. Padded rows only, as the streamed tiles are; the same
 * copies, so the same tiles, as flash_stage<Tin, W, N>. */
template <typename Tin, int W, int N> struct flash_tile_stager {
    static constexpr int CH = W / 8, NC = FLASH_BC * CH / N, LD = W + FLASH_PAD;
    static_assert(FLASH_BC * CH % N == 0, "the block's threads split a tile's chunks evenly");
    unsigned gofs[NC], sofs[NC]; /* bytes: unsigned, so that an address is one wide add */

    __device__ __forceinline__ flash_tile_stager(size_t xs, int tid) {
#pragma unroll
        for (int i = 0; i < NC; i++) { /* flash_tile_chunks's order, G = 1 */
            const int r = (tid + i * N) / CH, c = (tid + i * N) % CH;
            gofs[i] = (unsigned)(r * (int)xs + 8 * c) * (unsigned)sizeof(Tin);
            sofs[i] = (unsigned)(r * LD + 8 * c) * 2u;
        }
    }
    /* flash_stage(dst, x, xs, r0, n_valid, tid) with the xs and tid of the construction */
    __device__ __forceinline__ void stage(flash_bf16 *dst, const Tin *x, size_t xs, int r0,
                                          int n_valid) const {
        const char *x0 = (const char *)(x + (size_t)r0 * xs);
        char *d = (char *)dst;
        if (n_valid >= FLASH_BC) { /* block-uniform but for the last tile */
#pragma unroll
            for (int i = 0; i < NC; i++)
                flash_in<Tin>::stage16((flash_bf16 *)(d + sofs[i]), (const Tin *)(x0 + gofs[i]),
                                       true);
        } else {
#pragma unroll
            for (int i = 0; i < NC; i++) {
                const bool valid = (int)sofs[i] < n_valid * LD * 2; /* its row < n_valid */
                flash_in<Tin>::stage16((flash_bf16 *)(d + sofs[i]),
                                       valid ? (const Tin *)(x0 + gofs[i]) : x, valid);
            }
        }
    }
};

/* ---- the streamed-tile pipeline of the kernels: NS (1 or 2) stages of the tiles a block streams,
 * stage(t, st) issuing tile t's cp.async copies into stage st ---- */

/* At the top of iteration t of n: waits for tile t (this thread's copies, the only group in
 * flight, then the barrier for everyone's, which also says every warp is done with tile t - 1);
 * with two stages, issues tile t + 1's copies into the stage tile t - 1 held, to land during
 * tile t's products. Returns tile t's stage. Block-uniform. */
template <int NS, typename StageFn>
__device__ __forceinline__ int flash_pipeline_acquire(int t, int n, StageFn stage) {
    cp_async_wait<0>();
    __syncthreads();
    if (NS == 2 && t + 1 < n) {
        stage(t + 1, (t + 1) & 1);
        cp_async_commit();
    }
    return NS == 2 ? t & 1 : 0;
}

/* At the end of iteration t of n with one stage: once every warp is done with it, reloads it
 * with tile t + 1. Block-uniform. */
template <int NS, typename StageFn>
__device__ __forceinline__ void flash_pipeline_release(int t, int n, StageFn stage) {
    if (NS == 1 && t + 1 < n) {
        __syncthreads();
        stage(t + 1, 0);
        cp_async_commit();
    }
}

/* ---- fragment addresses: the row this lane gives to an ldmatrix.x4 ---- */

/* A fragment (16 x 16) at rows m0.., columns k0.. of a row-major [m][k] tile (ld elements) */
__device__ __forceinline__ const flash_bf16 *flash_a_row(const flash_bf16 *s, int ld, int m0,
                                                         int k0, int lane) {
    return s + (m0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * ld + k0 + 8 * (lane >> 4);
}
/* B fragments of two n8 tiles (n0..n0+15) x k16 (k0..) from a tile stored [n][k] (plain
 * ldmatrix): regs 0, 1 = tile n0, regs 2, 3 = tile n0 + 8 */
__device__ __forceinline__ const flash_bf16 *flash_bt_row(const flash_bf16 *s, int ld, int n0,
                                                          int k0, int lane) {
    return s + (n0 + (lane & 7) + 8 * (lane >> 4)) * ld + k0 + 8 * ((lane >> 3) & 1);
}
/* the same from a tile stored [k][n] (ldmatrix .trans) */
__device__ __forceinline__ const flash_bf16 *flash_b_row(const flash_bf16 *s, int ld, int k0,
                                                         int n0, int lane) {
    return s + (k0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * ld + n0 + 8 * (lane >> 4);
}

/* A fragment (16 x 16) at rows m0.., columns k0.. of a tile stored transposed, [k][m]
 * (ldmatrix .trans) */
__device__ __forceinline__ const flash_bf16 *flash_at_row(const flash_bf16 *s, int ld, int k0,
                                                          int m0, int lane) {
    return s + (k0 + (lane & 7) + 8 * (lane >> 4)) * ld + m0 + 8 * ((lane >> 3) & 1);
}

/* flash_a_row in a swizzled tile of W columns */
template <int W>
__device__ __forceinline__ const flash_bf16 *flash_swz_a_row(const flash_bf16 *s, int m0, int k0,
                                                             int lane) {
    return s + flash_swz<W>(m0 + (lane & 7) + 8 * ((lane >> 3) & 1), k0 + 8 * (lane >> 4));
}

/* ---- warp products ---- */

/* acc (16 x 16*NP, NP pairs of n8 tiles) += a (one k16 step) * B, B^T stored [n][k] from n0 */
template <int NP>
__device__ __forceinline__ void flash_mma_bt(float (*acc)[4], const uint32_t a[4],
                                             const flash_bf16 *Bs, int ld, int n0, int k0,
                                             int lane) {
#pragma unroll
    for (int np = 0; np < NP; np++) {
        uint32_t b[4];
        ldmatrix_x4(b, flash_bt_row(Bs, ld, n0 + 16 * np, k0, lane));
        mma_bf16_16816(acc[2 * np], a, b);
        mma_bf16_16816(acc[2 * np + 1], a, b + 2);
    }
}
/* the same with B stored [k][n] */
template <int NP>
__device__ __forceinline__ void flash_mma_b(float (*acc)[4], const uint32_t a[4],
                                            const flash_bf16 *Bs, int ld, int k0, int n0,
                                            int lane) {
#pragma unroll
    for (int np = 0; np < NP; np++) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, flash_b_row(Bs, ld, k0, n0 + 16 * np, lane));
        mma_bf16_16816(acc[2 * np], a, b);
        mma_bf16_16816(acc[2 * np + 1], a, b + 2);
    }
}
/* acc (16 x 8*NT) += A (16 x 16*KS, row-major tile at m0) * B, B^T stored [n][k] from n0 */
template <int KS, int NT>
__device__ __forceinline__ void flash_mma_abt(float (*acc)[4], const flash_bf16 *As, int lda,
                                              int m0, const flash_bf16 *Bs, int ldb, int n0,
                                              int lane) {
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        uint32_t a[4];
        ldmatrix_x4(a, flash_a_row(As, lda, m0, 16 * kk, lane));
        flash_mma_bt<NT / 2>(acc, a, Bs, ldb, n0, 16 * kk, lane);
    }
}
/* flash_mma_abt with A in a swizzled tile of WA columns */
template <int KS, int NT, int WA>
__device__ __forceinline__ void flash_mma_swz_abt(float (*acc)[4], const flash_bf16 *As, int m0,
                                                  const flash_bf16 *Bs, int ldb, int n0,
                                                  int lane) {
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        uint32_t a[4];
        ldmatrix_x4(a, flash_swz_a_row<WA>(As, m0, 16 * kk, lane));
        flash_mma_bt<NT / 2>(acc, a, Bs, ldb, n0, 16 * kk, lane);
    }
}
/* flash_mma_abt for two m16 fragments of A, rows m0.. and m0 + 16..: acc[f] += (A's rows
 * m0 + 16 f..) * B, each B fragment read from shared memory once for both. Each accumulator
 * element sums its k16 steps in flash_mma_abt's order: the same bits. */
template <int KS, int NT>
__device__ __forceinline__ void flash_mma_abt_x2(float (*acc)[NT][4], const flash_bf16 *As,
                                                 int lda, int m0, const flash_bf16 *Bs, int ldb,
                                                 int n0, int lane) {
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        uint32_t a0[4], a1[4];
        ldmatrix_x4(a0, flash_a_row(As, lda, m0, 16 * kk, lane));
        ldmatrix_x4(a1, flash_a_row(As, lda, m0 + 16, 16 * kk, lane));
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t b[4];
            ldmatrix_x4(b, flash_bt_row(Bs, ldb, n0 + 16 * np, 16 * kk, lane));
            mma_bf16_16816(acc[0][2 * np], a0, b);
            mma_bf16_16816(acc[0][2 * np + 1], a0, b + 2);
            mma_bf16_16816(acc[1][2 * np], a1, b);
            mma_bf16_16816(acc[1][2 * np + 1], a1, b + 2);
        }
    }
}
/* flash_mma_b for two m16 fragments: acc[f] (16 x 16*NP) += a[f] (one k16 step) * B, B stored
 * [k][n] from n0, each B fragment read once for both */
template <int NP>
__device__ __forceinline__ void flash_mma_b_x2(float (*acc)[2 * NP][4], const uint32_t a0[4],
                                               const uint32_t a1[4], const flash_bf16 *Bs,
                                               int ld, int k0, int n0, int lane) {
#pragma unroll
    for (int np = 0; np < NP; np++) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, flash_b_row(Bs, ld, k0, n0 + 16 * np, lane));
        mma_bf16_16816(acc[0][2 * np], a0, b);
        mma_bf16_16816(acc[0][2 * np + 1], a0, b + 2);
        mma_bf16_16816(acc[1][2 * np], a1, b);
        mma_bf16_16816(acc[1][2 * np + 1], a1, b + 2);
    }
}
/* The A fragment (16 rows x keys 16kk..16kk+15) of the bf16-rounded accumulator c (16 x 8NT):
 * n8 tiles 2kk and 2kk + 1 side by side (mma.cuh: same lane and row, columns 2t, 2t+1). */
__device__ __forceinline__ void flash_c_to_a(uint32_t a[4], const float (*c)[4], int kk) {
    a[0] = pack_bf16x2(c[2 * kk][0], c[2 * kk][1]);
    a[1] = pack_bf16x2(c[2 * kk][2], c[2 * kk][3]);
    a[2] = pack_bf16x2(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[3] = pack_bf16x2(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

/* 2^x for the probabilities and the softmax's rescale factors: one MUFU.EX2 (ex2.approx.ftz.f32).
 * exp2f is the same instruction wrapped for subnormal results (a compare and two conditional
 * multiplies each: a tenth of the DIFF forward's key-loop instructions at d = 96); a result below
 * 2^-126 is 0 here instead, which no sum or product of the kernels can tell (the row maximum
 * contributes 1, and P is rounded to bf16). The emulator flushes libm's exp2f the same way. */
__device__ __forceinline__ float flash_exp2(float x) {
#ifdef DT_CUDA_EMULATOR
    const float y = exp2f(x);
    return y < 1.17549435e-38f ? 0.0f : y; /* FLT_MIN */
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#endif
}

/* An accumulator of NT n8 tiles (C fragments) set to 0 */
template <int NT> __device__ __forceinline__ void flash_zero(float (*acc)[4]) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
}

/* The sum or max over the 4 lanes of a quad (the lanes that hold one accumulator row). */
__device__ __forceinline__ float flash_quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float flash_quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

/* ---- host side ---- */

/* The dynamic shared memory a block may have on the current device after the opt-in (its
 * sharedMemPerBlockOptin, asked once per device), or the test cap of flash_test.h where lower
 * (flash_smem.cu). The plans below choose the kernels and stages that fit it. */
size_t flash_smem_limit(void);
/* Before each launch of kernel (name: for the error) with `bytes` of dynamic shared memory (a
 * kernel always asks for the same: its tiles are template constants): aborts when bytes exceed
 * flash_smem_limit(), else sets the kernel's limit on this device where it needs more than the
 * default 48 KiB (once per device and kernel). */
void flash_smem_prepare(const void *kernel, size_t bytes, const char *name);
/* The dynamic shared memory of a kernel whose block at head dim D is Layout<D> (its bytes()), for
 * head dim d; (size_t)-1, which fits nothing, where there is no such kernel */
template <template <int> class Layout> size_t flash_layout_smem(int d) {
    switch (d) {
    case 64: return Layout<64>::bytes();
    case 96: return Layout<96>::bytes();
    case 128: return Layout<128>::bytes();
    }
    return (size_t)-1;
}

/* Aborts with the sizes unless the fused kernels handle m: d in {64, 96, 128}, dv = d
 * (standard) or 2d (DIFF V1), head counts as attn_check. */
void flash_check(const attn_map &m);

/* CALL(D, DV) with the head dims of m, one of the six instantiations every fused op has (after
 * flash_check: d in {64, 96, 128}; DV = d standard, 2d DIFF V1) */
#define FLASH_HEAD_DIMS_DISPATCH(m, CALL)                                                         \
    switch ((m).d * 2 + (m).diff) {                                                               \
    case 128: CALL(64, 64); break;                                                                \
    case 192: CALL(96, 96); break;                                                                \
    case 256: CALL(128, 128); break;                                                              \
    case 129: CALL(64, 128); break;                                                               \
    case 193: CALL(96, 192); break;                                                               \
    case 257: CALL(128, 256); break;                                                              \
    }

/* From q, k, v (Tin = flash_bf16: the bf16 operands; float: fp32 tensors, rounded while
 * staging), as attn_core_forward: lse, and for standard attention out (B, T, Hq*dv) in bf16; for
 * DIFF the branch outputs o1, o2 (fp32) and, when out is non-NULL, the subln epilogue of
 * diffattn_forward: out (B, T, H*2d) in bf16 and rstd (epi). */
struct flash_diff_epi {
    float *rstd;                 /* (B, T, H) */
    const float *lambda, *gamma; /* device scalar; (2d) or NULL (subln off) */
    float out_scale, eps;        /* 1 - lambda_init; the subln epsilon */
};
template <typename Tin>
void flash_core_forward(operand_bf16 *out, float *o1, float *o2, float *lse, const Tin *q,
                        const Tin *k, const Tin *v, const attn_map &m,
                        const flash_diff_epi &epi);

/* flash_core_forward for standard / GQA heads (not DIFF V1) on the kernel with 32 query rows a
 * warp (flash_forward_rows32.cu): the same results, bit for bit. Called by flash_core_forward
 * after its checks (flash_check, nothing to do for B = 0 or T = 0). */
template <typename Tin>
void flash_forward_rows32(operand_bf16 *out, float *lse, const Tin *q, const Tin *k,
                          const Tin *v, const attn_map &m);

/* flash_core_forward for DIFF V1 on the kernel that splits V's columns between the two branch
 * warps of a row group (flash_forward_diff.cu): the same results, bit for bit. Called by
 * flash_core_forward after its checks. */
template <typename Tin>
void flash_forward_diff_split(operand_bf16 *out, float *o1, float *o2, float *lse, const Tin *q,
                              const Tin *k, const Tin *v, const attn_map &m,
                              const flash_diff_epi &epi);

/* The shared memory of the forward kernels (flash_forward.cu, flash_forward_rows32.cu,
 * flash_forward_diff.cu): with nb branches (2: DIFF V1, both branches of a head per block) and
 * ns K/V stages, of the 32-row kernel at head dim d, of the split DIFF kernel at head dim d */
constexpr size_t flash_forward_smem(int d, int dv, int nb, int ns) {
    /* Q, then ns K/V stages; DIFF's epilogue exchanges O's halves through the same memory */
    const size_t tiles = sizeof(flash_bf16) * ((size_t)nb * FLASH_BR * (d + FLASH_PAD) +
                                               ns * ((size_t)nb * FLASH_BC * (d + FLASH_PAD) +
                                                     (size_t)FLASH_BC * (dv + FLASH_PAD)));
    const size_t xch = nb == 2 ? sizeof(float) * FLASH_WARPS * 32 * (dv / 2) : 0;
    return tiles > xch ? tiles : xch; /* d = 128 DIFF, two stages: 172,032 B */
}
size_t flash_forward_rows32_smem(int d);
size_t flash_forward_diff_split_smem(int d);

/* 1 when flash_core_forward has kernels for head dim d (DIFF V1 when diff) that fit
 * flash_smem_limit() (flash_forward.cu) */
bool flash_forward_fits(int d, bool diff);

/* Whether flash_core_forward runs DIFF V1 on flash_forward_diff_split (the default) or on its own
 * kernel (each branch's warps multiply all 2d columns of V): the environment
 * (DIFFTRAIN_FLASH_DIFF_FWD=split or branch) or the test switch of flash_test.h (flash_ops.cu). */
bool flash_diff_fwd_split(void);

/* Whether flash_core_forward runs standard heads on flash_forward_rows32 (32 rows a warp, the
 * default) or on its own kernel (16 rows a warp): the environment (DIFFTRAIN_FLASH_FWD_ROWS=32 or
 * 16) or the test switch of flash_test.h (flash_ops.cu). */
bool flash_fwd_rows32(void);

/* The forward on the warp-specialised sm_90 kernel (flash_forward_tma.cu: TMA loads by a
 * producer warpgroup, two consumer warpgroups: DIFF V1's two branches, or 128 rows of a
 * standard head): the results, bit for bit, of flash_core_forward_sm90. Only where
 * flash_tma_usable() says. Its shared memory at head dim d (flash_forward_tma_smem). */
void flash_forward_tma(operand_bf16 *out, float *o1, float *o2, float *lse, const flash_bf16 *q,
                       const flash_bf16 *k, const flash_bf16 *v, const attn_map &m,
                       const flash_diff_epi &epi);
size_t flash_forward_tma_smem(int d, bool diff);

/* 1 where the bf16 forward of head dim d (DIFF V1's when diff) runs on flash_forward_tma: it is
 * asked for (DIFFTRAIN_FLASH_TMA=1, or the test switch of flash_test.h), the build and device
 * have the sm_90 kernels (as flash_sm90_usable, whether those are asked for or not) and its
 * block fits flash_smem_limit() (flash_ops.cu). */
bool flash_tma_usable(int d, bool diff);

/* 1 where the build has sm_90a device code (CMake defines DT_CUDA_SM90A when
 * CMAKE_CUDA_ARCHITECTURES names 90a; always under the host emulator), the device is compute
 * capability 9.0 (H100, H200), and the wgmma kernels are asked for: by the environment
 * (DIFFTRAIN_FLASH_SM90=1; they measured slower than the mma.sync ones on an H100) or the test
 * switch (flash_test.h) (flash_ops.cu). Then the bf16 ops run flash_sm90.cuh's kernels, else
 * flash_core_forward and flash_core_backward. */
bool flash_sm90_usable(void);

/* Whether the mma.sync backward takes DIFF V1's two branches of a head together per query tile
 * (flash_dkdv_diff.cu, flash_dq_diff.cu; the default) or each on its own (flash_dkdv_kernel,
 * flash_dq_kernel): the test switch of flash_test.h (flash_ops.cu). */
bool flash_diff_paired(void);

/* dst[i] (n[i] floats) = src[i] (n[i] bf16) widened, for i < count (flash_convert.cu): the
 * fp32 copies of q, k, v for the test path (flash_test.h). */
void flash_to_f32(float *const *dst, const flash_bf16 *const *src, const size_t *n, int count);

/* DIFF V1 (flash_prep.cu): G (B, T, H*2d) = dO from dout by the subln backward, rounded to bf16
 * (TG = flash_bf16: the bits; float: the rounded values), delta (B, 2H, T) per branch, and
 * dgamma (2d, skipped when gamma is NULL) and *dlambda accumulated; part is scratch of
 * diff_chunks(B*T*H) * (2d + 1) doubles (attn_core.cuh). */
template <typename TG>
void flash_diff_prep(TG *G, float *delta, double *part, float *dgamma, float *dlambda,
                     const float *dout, const float *o1, const float *o2, const float *rstd,
                     const float *lambda, const float *gamma, float lambda_init,
                     const attn_map &m);

/* 1 when flash_core_backward has kernels for head dim d (DIFF V1 when diff; dq from stored dS
 * tiles when ds_stored) that fit flash_smem_limit() (flash_backward.cu) */
bool flash_backward_fits(int d, bool diff, bool ds_stored);

/* Where the backward puts dq or dk (B, T, heads*d): f32, the fp32 gradient of the q or k that
 * the attention read (rot NULL); or rot, an operand (bf16), the gradient of the q or k before
 * RoPE: RoPE's backward taken into the store (flash_backward.cuh), with cs its cos/sin table
 * (cuda_rope_table, rope.cuh; positions from 0), giving the bits that cuda_rope_backward makes
 * of the fp32 gradient, and no fp32 gradient written. */
struct flash_qk_grad {
    float *f32;
    operand_bf16 *rot;
    const float2 *cs;
};

/* dq, dk, dv (overwritten) from G (the output gradient in the output buffers' layout) and delta
 * (B, nq, T) = dscale_j * (G_i . o_i) per q-head (flash_prep.cu), as attn_core_backward; Tin as
 * flash_core_forward, for G, q, k and v alike. dq, dk as flash_qk_grad says; dv an operand, so
 * bf16 (rounded from the fp32 sums as stored), whatever Tin. ds_tiles NULL: the dq kernel
 * recomputes dS; else scratch of flash_ds_tiles_size(m) bytes (flash_backward.cuh), 16-byte
 * aligned, into which dk/dv stores dS for dq to read (flash_backward.cu). */
template <typename Tin>
void flash_core_backward(flash_qk_grad dq, flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles,
                         const Tin *G, const float *delta, const Tin *q, const Tin *k,
                         const Tin *v, const float *lse, const float *lambda, const attn_map &m);

#endif
