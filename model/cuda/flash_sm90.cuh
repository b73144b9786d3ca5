/* The sm_90 (wgmma) kernels of the fused attention, shared by flash_forward_sm90.cu and
 * flash_backward_sm90.cu: their tile staging and product descriptors, and the ops' entry points.
 * Internal to model/cuda.
 *
 * Tiles are kept in shared memory as core matrices (wgmma_tile_at, wgmma.cuh), whatever their
 * use: the same R x W tile is read K-major (its columns are the reduction: flash_desc_k) or
 * MN-major (its rows are: flash_desc_mn). */
#ifndef DT_CUDA_FLASH_SM90_CUH
#define DT_CUDA_FLASH_SM90_CUH

#include "model/cuda/flash_core.cuh"
#include "model/cuda/wgmma.cuh"

/* Rows [r0, r0 + FLASH_BC) of a head view x (bf16, row stride xs elements, W columns) into dst
 * as core matrices (wgmma_tile_at<W>), rows at or past r0 + n_valid as zeros; by thread tid of
 * the block's N, in flight until the caller's commit and wait. Eight consecutive threads fill one
 * core matrix (128 contiguous bytes: no bank conflicts), and a warp reads 4 x 16 contiguous
 * bytes of each of 8 rows. */
template <int W, int N>
__device__ __forceinline__ void flash_stage_cm(flash_bf16 *dst, const flash_bf16 *x, size_t xs,
                                               int r0, int n_valid, int tid) {
    const flash_bf16 *x0 = x + (size_t)r0 * xs;
    flash_tile_chunks<W, N, 8>(tid, [&](int r, int c) {
        const bool valid = r < n_valid;
        cp_async16(dst + wgmma_tile_at<W>(r, 8 * c), (valid ? x0 + (size_t)r * xs : x) + 8 * c,
                   valid ? 16 : 0);
    });
}

/* The descriptor of the k16 step kk of a tile of W columns read K-major (rows = M or N; the step
 * covers columns 16kk..16kk+15), from row r0 (a multiple of 8) */
template <int W>
__device__ __forceinline__ uint64_t flash_desc_k(const flash_bf16 *tile, int r0, int kk) {
    return wgmma_desc(tile + wgmma_tile_at<W>(r0, 16 * kk), 128, 16 * W);
}
/* ... read MN-major (rows = the reduction: the step covers rows 16kk..16kk+15), from column c0
 * (a multiple of 8) */
template <int W>
__device__ __forceinline__ uint64_t flash_desc_mn(const flash_bf16 *tile, int c0, int kk) {
    return wgmma_desc(tile + wgmma_tile_at<W>(16 * kk, c0), 16 * W, 128);
}

/* The streamed tile this thread staged has landed: waits for its copies, hands them to the
 * async proxy (the products read shared memory through it), then the block barrier (everyone's
 * copies; every warp is done with the previous tile). */
__device__ __forceinline__ void flash_sm90_tiles_landed(void) {
    cp_async_wait<0>();
    wgmma_fence_smem();
    __syncthreads();
}

/* flash_core_forward and flash_core_backward's bf16 instances on warpgroup products: the same
 * contracts and results up to the products' summation order. Only where flash_sm90_usable()
 * (flash_core.cuh) says. */
void flash_core_forward_sm90(operand_bf16 *out, float *o1, float *o2, float *lse,
                             const flash_bf16 *q, const flash_bf16 *k, const flash_bf16 *v,
                             const attn_map &m, const flash_diff_epi &epi);
void flash_core_backward_sm90(flash_qk_grad dq, flash_qk_grad dk, operand_bf16 *dv,
                              const flash_bf16 *G, const float *delta, const flash_bf16 *q,
                              const flash_bf16 *k, const flash_bf16 *v, const float *lse,
                              const float *lambda, const attn_map &m);

#endif
