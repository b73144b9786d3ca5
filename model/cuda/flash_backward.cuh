/* The fused backward's per-element and per-row work, shared by its two sets of kernels
 * (flash_backward.cu on mma.sync, flash_backward_sm90.cu on wgmma): both hold a warp's 16 rows
 * (dq) or 16 keys (dk/dv) of every product in the m16n8 C-fragment layout (mma.cuh; wgmma's
 * accumulators are the same per warp), and map heads, rows and tiles alike, so this is the same
 * code. Internal to model/cuda. */
#ifndef DT_CUDA_FLASH_BACKWARD_CUH
#define DT_CUDA_FLASH_BACKWARD_CUH

#include "model/cuda/flash_core.cuh"
#include "model/cuda/rope.cuh"

/* ---- dq: a warp's rows row0 + g and row0 + g + 8 (g = lane >> 2) of q-head j ---- */

/* lse (in the log2 domain) and delta of the warp's two rows; 0 past T */
__device__ __forceinline__ void flash_dq_row_terms(float lse2[2], float dlt[2], const float *lse,
                                                   const float *delta, const attn_map &m, int b,
                                                   int j, int row0, int lane) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = row0 + (lane >> 2) + 8 * r;
        const size_t at = ((size_t)b * m.nq + j) * m.T + i;
        lse2[r] = i < m.T ? lse[at] * FLASH_LOG2E : 0.0f;
        dlt[r] = i < m.T ? delta[at] : 0.0f;
    }
}

/* flash_dq_ds's work, with the causal mask (MASK) or without */
template <bool MASK>
__device__ __forceinline__ void flash_dq_ds_tile(float (*ds)[4], const float (*s)[4],
                                                 const float (*dp)[4], const float lse2[2],
                                                 const float dlt[2], float scale_log2,
                                                 float dscale, int row0, int j0, int lane) {
    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int nt = 0; nt < FLASH_BC / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int r = e >> 1, i = row0 + g + 8 * r;
            const int key = j0 + 8 * nt + 2 * t4 + (e & 1);
            const float p =
                MASK && key > i ? 0.0f : flash_exp2(fmaf(s[nt][e], scale_log2, -lse2[r]));
            ds[nt][e] = p * (dscale * dp[nt][e] - dlt[r]);
        }
}

/* dS of one key tile (keys j0..j0+63) from S and dP: P (dscale dP - delta), P =
 * exp2(S scale - lse), 0 where the key is past the row (only the tiles that reach past the warp's
 * first row compare). ds may be s itself (element by element). */
__device__ __forceinline__ void flash_dq_ds(float (*ds)[4], const float (*s)[4],
                                            const float (*dp)[4], const float lse2[2],
                                            const float dlt[2], float scale_log2, float dscale,
                                            int row0, int j0, int lane) {
    if (j0 + FLASH_BC - 1 > row0) /* warp-uniform */
        flash_dq_ds_tile<true>(ds, s, dp, lse2, dlt, scale_log2, dscale, row0, j0, lane);
    else
        flash_dq_ds_tile<false>(ds, s, dp, lse2, dlt, scale_log2, dscale, row0, j0, lane);
}

/* acc (the warp's 16 rows x D) += dS K over a key tile: dS the fp32 ds (16 x 64, C fragments)
 * rounded to bf16 A fragments, K the tile's (BC, D) keys in shared memory (row stride ld) */
template <int D>
__device__ __forceinline__ void flash_dq_add_ds_k(float (*acc)[4], const float (*ds)[4],
                                                  const flash_bf16 *Ks, int ld, int lane) {
#pragma unroll
    for (int kk = 0; kk < FLASH_BC / 16; kk++) {
        uint32_t a[4];
        flash_c_to_a(a, ds, kk);
        flash_mma_b<D / 16>(acc, a, Ks, ld, 16 * kk, 0, lane);
    }
}

/* scale times the sums acc (W columns: W / 8 C fragments) of the warp's rows row0 + g,
 * row0 + g + 8 that are < T, columns c0.. of the head whose element (row 0, column 0) is at
 * head (rows rs elements apart, head width d): as fp32 pairs into x.f32, or rotated back through
 * RoPE into the operand x.rot (flash_qk_grad; a pair is two adjacent columns 2i, 2i + 1, the
 * row's position its index). */
template <int W>
__device__ __forceinline__ void flash_store_qk(const flash_qk_grad &x, size_t head, size_t rs,
                                               int d, int c0, const float (*acc)[4], int T,
                                               int row0, int lane, float scale) {
    const int c = c0 + 2 * (lane & 3); /* the lane's first column; then every 8th */
    if (x.rot) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int i = row0 + (lane >> 2) + 8 * r;
            if (i >= T) continue;
            operand_bf16 *y = x.rot + head + (size_t)i * rs + c;
            const float2 *cs = x.cs + (size_t)i * (d / 2) + c / 2;
#pragma unroll
            for (int nt = 0; nt < W / 8; nt++) {
                float y0, y1;
                rope_rotate(scale * acc[nt][2 * r], scale * acc[nt][2 * r + 1], cs[4 * nt].x,
                            -cs[4 * nt].y, &y0, &y1);
                operand_store2(y, 8 * nt, y0, y1);
            }
        }
        return;
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = row0 + (lane >> 2) + 8 * r;
        if (i >= T) continue;
#pragma unroll
        for (int nt = 0; nt < W / 8; nt++)
            *reinterpret_cast<float2 *>(x.f32 + head + (size_t)i * rs + c + 8 * nt) =
                make_float2(scale * acc[nt][2 * r], scale * acc[nt][2 * r + 1]);
    }
}

/* dq of q-head j for the warp's rows < T: scale times the sums acc (D columns) */
template <int D>
__device__ __forceinline__ void flash_dq_store(const flash_qk_grad &dq, const float (*acc)[4],
                                               const attn_map &m, int b, int j, int row0,
                                               int lane, float scale) {
    const size_t qs = (size_t)m.nq * D;
    flash_store_qk<D>(dq, (size_t)b * m.T * qs + (size_t)j * D, qs, D, 0, acc, m.T, row0, lane,
                      scale);
}

/* ---- dk/dv: a warp's keys key0 + g and key0 + g + 8 ---- */

/* The query tiles a dk/dv block streams for one of its k-heads (slot): for the q-heads
 * jq = gv * n_rep + slot, + n_slot, ... (those that read k-head attn_k_head(m, gv * n_rep +
 * slot)), the row tiles from the block's first key j0 on (rows before j0 see none of its keys).
 * n tiles; tile it is q-head q(it), rows i0(it).. */
struct flash_kv_tiles {
    int first_q, n_slot, n_i, j0, n;
    __device__ flash_kv_tiles(const attn_map &m, int gv, int slot, int j0_)
        : first_q(gv * m.n_rep + slot), n_slot(m.diff ? 2 : 1),
          n_i((m.T - j0_ + FLASH_BR - 1) / FLASH_BR), j0(j0_),
          n((m.n_rep - slot + n_slot - 1) / n_slot * n_i) {}
    __device__ int q(int it) const { return first_q + n_slot * (it / n_i); }
    __device__ int i0(int it) const { return j0 + FLASH_BR * (it % n_i); }
};
/* The tiles of a flash_kv_tiles in order without its divisions (two a tile: some 40 instructions
 * in flash_dkdv_diff.cu's loop): q and i0 of the current tile, next() moves to the following one
 * (rows i0 + FLASH_BR, or the next q-head's from j0). Not in flash_dkdv_kernel: under its
 * 128-register cap (two blocks per SM) the two walks it would need spill. */
struct flash_kv_walk {
    int q, i0;
    const int n_slot, j0, T;
    __device__ flash_kv_walk(const flash_kv_tiles &t, int T_)
        : q(t.first_q), i0(t.j0), n_slot(t.n_slot), j0(t.j0), T(T_) {}
    __device__ void next(void) {
        i0 += FLASH_BR;
        if (i0 >= T) {
            i0 = j0;
            q += n_slot;
        }
    }
};

/* lse (log2 domain) and delta of rows i0.. of q-head jq (0 past T) into lse_s, dl_s (BR each),
 * by threads tid < BR */
__device__ __forceinline__ void flash_stage_row_terms(float *lse_s, float *dl_s, const float *lse,
                                                      const float *delta, const attn_map &m,
                                                      int b, int jq, int i0, int tid) {
    if (tid < FLASH_BR) {
        const int nr = min(FLASH_BR, m.T - i0);
        const size_t at = ((size_t)b * m.nq + jq) * m.T + i0 + tid;
        lse_s[tid] = tid < nr ? lse[at] * FLASH_LOG2E : 0.0f;
        dl_s[tid] = tid < nr ? delta[at] : 0.0f;
    }
}

/* flash_dkdv_pds's work, with the masks (MASK) or without */
template <bool MASK>
__device__ __forceinline__ void flash_dkdv_pds_tile(float (*ps)[4], float (*dss)[4],
                                                    const float (*s)[4], const float (*dp)[4],
                                                    const float *lse_t, const float *dl_t,
                                                    float scale_log2, float dscale, int key0,
                                                    int rl0, int i0, int nr, int lane) {
    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int key = key0 + g + 8 * (e >> 1);
            const int rl = rl0 + 8 * nt + 2 * t4 + (e & 1), i = i0 + rl;
            const bool vis = !MASK || (rl < nr && key <= i); /* rows >= T: the tail mask */
            const float p = vis ? flash_exp2(fmaf(s[nt][e], scale_log2, -lse_t[rl])) : 0.0f;
            const float ds = p * (dscale * dp[nt][e] - dl_t[rl]);
            ps[nt][e] = dscale * p;
            dss[nt][e] = ds;
        }
}

/* From S^T and dP^T (keys key0.. x rows rl0..rl0+31 of the tile at i0, C fragments of 4 n8
 * tiles): dscale P^T into ps and dS^T into dss; rows at or past T (nr rows valid) and keys past
 * a row give 0 (compared only where the warp's keys and rows have such pairs). lse_t, dl_t: the
 * tile's staged row terms. ps and dss may be s and dp. */
__device__ __forceinline__ void flash_dkdv_pds(float (*ps)[4], float (*dss)[4],
                                               const float (*s)[4], const float (*dp)[4],
                                               const float *lse_t, const float *dl_t,
                                               float scale_log2, float dscale, int key0, int rl0,
                                               int i0, int nr, int lane) {
    if (rl0 + 31 >= nr || key0 + 15 > i0 + rl0) /* warp-uniform */
        flash_dkdv_pds_tile<true>(ps, dss, s, dp, lse_t, dl_t, scale_log2, dscale, key0, rl0,
                                  i0, nr, lane);
    else
        flash_dkdv_pds_tile<false>(ps, dss, s, dp, lse_t, dl_t, scale_log2, dscale, key0, rl0,
                                   i0, nr, lane);
}

/* dk of k-head h (scale times acck, as flash_qk_grad says) or dv of v-head h (an operand: bf16,
 * each pair rounded as stored) for the warp's keys < T: W columns from the head's column c0 on */
template <int W>
__device__ __forceinline__ void flash_dk_store(const flash_qk_grad &dk, const float (*acck)[4],
                                               const attn_map &m, int b, int h, int c0, int key0,
                                               int lane, float scale) {
    const size_t ks = (size_t)m.nk * m.d;
    flash_store_qk<W>(dk, (size_t)b * m.T * ks + (size_t)h * m.d, ks, m.d, c0, acck, m.T, key0,
                      lane, scale);
}
template <int W>
__device__ __forceinline__ void flash_dv_store(operand_bf16 *dv, const float (*accv)[4],
                                               const attn_map &m, int b, int h, int c0, int key0,
                                               int lane) {
    const size_t vs = (size_t)m.nv * m.dv;
    operand_bf16 *dvh = dv + (size_t)b * m.T * vs + (size_t)h * m.dv + c0;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int key = key0 + (lane >> 2) + 8 * r;
        if (key >= m.T) continue;
#pragma unroll
        for (int nt = 0; nt < W / 8; nt++)
            operand_store2(dvh, (size_t)key * vs + 8 * nt + 2 * (lane & 3), accv[nt][2 * r],
                           accv[nt][2 * r + 1]);
    }
}

/* ---- DIFF V1 with both branches of a head per query tile (d = D, dv = 2D): dk and dv
 * (flash_dkdv_diff.cu), with the arguments of flash_core_backward but dq (ds_tiles NULL: none
 * stored) and ns, the stages of its streamed tiles (flash_backward_plan) ---- */
template <typename Tin, int D>
void flash_dkdv_diff(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles, const Tin *G,
                     const Tin *q, const Tin *k, const Tin *v, const float *lse,
                     const float *delta, const float *lambda, const attn_map &m, int ns);
/* its shared memory (bytes) at head dim d with ns (1 or 2) stages of its streamed tiles */
size_t flash_dkdv_diff_smem(int d, int ns);
/* The same on the warp-specialised sm_90 kernel (flash_dkdv_diff_tma.cu: TMA loads, a consumer
 * warpgroup a branch; the bits of flash_dkdv_diff), bf16 only, where
 * flash_tma_bwd_usable(d, true) says (flash_dkdv_diff runs it then); and its shared memory */
template <int D>
void flash_dkdv_diff_tma(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles,
                         const flash_bf16 *G, const flash_bf16 *q, const flash_bf16 *k,
                         const flash_bf16 *v, const float *lse, const float *delta,
                         const float *lambda, const attn_map &m);
size_t flash_dkdv_diff_tma_smem(int d);
/* ... and dk/dv of standard heads (the baseline, DIFF V2: dv = d) on such a kernel
 * (flash_dkdv_tma.cu: a consumer warpgroup a key tile; the bits of flash_dkdv_kernel), run by
 * flash_core_backward where flash_tma_bwd_usable(d, false) says; and its shared memory */
template <int D>
void flash_dkdv_tma(flash_qk_grad dk, operand_bf16 *dv, flash_bf16 *ds_tiles, const flash_bf16 *G,
                    const flash_bf16 *q, const flash_bf16 *k, const flash_bf16 *v,
                    const float *lse, const float *delta, const attn_map &m);
size_t flash_dkdv_tma_smem(int d);
/* 1 where the warp-specialised dk/dv is asked for (DIFFTRAIN_FLASH_TMA_BWD=1, or the test switch
 * of flash_test.h), the build and device have the sm_90 kernels and its block (DIFF V1's where
 * diff, else the standard heads') fits flash_smem_limit() (flash_ops.cu) */
bool flash_tma_bwd_usable(int d, bool diff);

/* ... and dq where it recomputes dS (flash_dq_diff.cu), and its shared memory */
template <typename Tin, int D>
void flash_dq_diff(flash_qk_grad dq, const Tin *G, const Tin *q, const Tin *k, const Tin *v,
                   const float *lse, const float *delta, const float *lambda, const attn_map &m);
size_t flash_dq_diff_smem(int d);

/* ---- the stored dS (flash_backward.cu, DIFFTRAIN_FLASH_DQ=auto, stored): per (b, q-head j) the
 * causal lower triangle of 64 x 64 tiles, tile (row tile r, key tile c <= r) at r (r + 1) / 2 + c,
 * each FLASH_BC keys x FLASH_BR rows of bf16, key after key: dS^T as dk/dv holds it ---- */

/* the offset (elements) of the tile of q-head j's rows i0.. and keys j0.. (multiples of 64) */
__host__ __device__ __forceinline__ size_t flash_ds_tile_at(const attn_map &m, int b, int j,
                                                            int i0, int j0) {
    const size_t nt = (size_t)(m.T + FLASH_BR - 1) / FLASH_BR;
    const size_t r = (size_t)(i0 / FLASH_BR), c = (size_t)(j0 / FLASH_BC);
    return (((size_t)b * m.nq + j) * (nt * (nt + 1) / 2) + r * (r + 1) / 2 + c) *
           (FLASH_BC * FLASH_BR);
}
/* the buffer's size in bytes: every tile of every (b, q-head), i.e. the offset of batch row B's
 * first tile */
__host__ __forceinline__ size_t flash_ds_tiles_size(const attn_map &m) {
    return m.T > 0 ? flash_ds_tile_at(m, m.B, 0, 0, 0) * sizeof(flash_bf16) : 0;
}

/* The 16-byte chunks of a dS^T tile (FLASH_BC rows of FLASH_BR) that thread tid of NT moves, in
 * flash_tile_chunks's order: chunk column c = tid % 8 of rows tid / 8 + i DR, fn(i, r, c) for
 * each. The rows are 8 chunks wide, so a thread's chunks step by whole rows (DR, a multiple of 8:
 * a swizzled row's chunk order repeats every 8 rows) and unrolled their offsets are immediates. */
template <int NT, typename Fn>
__device__ __forceinline__ void flash_ds_tile_chunks(int tid, Fn fn) {
    constexpr int CH = FLASH_BR / 8, DR = NT / CH;
    static_assert(NT % CH == 0 && DR % 8 == 0 && FLASH_BC % DR == 0,
                  "a thread's chunks of a dS^T tile are whole rows apart, 8 rows at a time");
#pragma unroll
    for (int i = 0; i < FLASH_BC / DR; i++) fn(i, tid / CH + i * DR, tid % CH);
}

/* A shared-memory dS^T tile (rows of FLASH_BR + FLASH_PAD, or swizzled: flash_swz) out to its
 * place dst in the buffer, by thread tid of NT, 16 bytes at a time */
template <int NT, bool SWZ = false>
__device__ __forceinline__ void flash_ds_tile_store(flash_bf16 *dst, const flash_bf16 *dSs,
                                                    int tid) {
    constexpr int LD = SWZ ? FLASH_BR : FLASH_BR + FLASH_PAD, DR = NT / (FLASH_BR / 8);
    const int r0 = tid / (FLASH_BR / 8), c = tid % (FLASH_BR / 8);
    const int at0 = SWZ ? flash_swz<FLASH_BR>(r0, 8 * c) : r0 * LD + 8 * c;
    flash_ds_tile_chunks<NT>(tid, [&](int i, int r, int cc) {
        *reinterpret_cast<uint4 *>(dst + r * FLASH_BR + 8 * cc) =
            *reinterpret_cast<const uint4 *>(dSs + at0 + i * DR * LD);
    });
}
/* ... and back in (cp.async, in flight until the caller's commit and wait) */
template <int NT>
__device__ __forceinline__ void flash_ds_tile_load(flash_bf16 *dSs, const flash_bf16 *src,
                                                   int tid) {
    flash_ds_tile_chunks<NT>(tid, [&](int, int r, int c) {
        cp_async16(dSs + r * (FLASH_BR + FLASH_PAD) + 8 * c, src + r * FLASH_BR + 8 * c, 16);
    });
}

#endif
