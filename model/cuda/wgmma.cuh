/* Warpgroup matrix products (wgmma.mma_async, sm_90a: H100/H200), for the fused attention's
 * sm_90 kernels. Internal to model/cuda. One device function per PTX instruction, as mma.cuh.
 *
 * A warpgroup is 4 consecutive warps (warps 4w..4w+3 of a block). wgmma_rs / wgmma_ss compute
 *   D (64 x N, fp32) = A (64 x 16, bf16) * B (16 x N, bf16) + (accumulate ? D : 0)
 * for the whole warpgroup; warp w of the group holds rows 16w..16w+15 of A (when A is in
 * registers) and of D, in exactly mma.sync.m16n8k16's layouts (mma.cuh), repeated along N:
 *   D: d[nt][0..3] is the C fragment of the n8 tile nt (columns 8nt..8nt+7): d[nt][0],
 *      d[nt][1] = D[g][8nt + 2t, +1], d[nt][2], d[nt][3] = D[g + 8][8nt + 2t, +1]
 *      (g = lane >> 2, t = lane % 4);
 *   A in registers (wgmma_rs): the m16n8k16 A fragment of the warp's 16 rows.
 * B (and A in wgmma_ss) lies in shared memory, named by a matrix descriptor (wgmma_desc).
 *
 * Shared-memory layout: the PTX ISA's no-swizzle ("interleaved") canonical layouts (wgmma_desc),
 * and the swizzled ones that TMA loads write (wgmma_desc_swizzled, at the end). The unit of the
 * no-swizzle layouts is the core matrix: 8 rows of 16 bytes (8 bf16), 128 contiguous bytes. For a
 * matrix X (MN x K: M or N rows, K the reduction),
 *   K-major  (trans 0; K contiguous in rows of 8):
 *       element (mn, k) at (mn % 8) * 8 + (mn / 8) * SBO + (k % 8) + (k / 8) * LBO  (elements);
 *   MN-major (trans 1; MN contiguous in rows of 8):
 *       element (mn, k) at (mn % 8) + (mn / 8) * SBO + (k % 8) * 8 + (k / 8) * LBO.
 * (The ISA's canonical layouts ((8,m),(T,2k)):((1T,SBO),(1,LBO)) and
 * ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)) with T = 8 bf16.) The descriptor holds the start
 * address, LBO and SBO in bytes, each >> 4.
 *
 * The kernels keep a tile of R rows x W columns (a row-major tensor's rows, W a multiple of 8)
 * as wgmma_tile_at says: core matrix (r / 8, c / 8) at ((r / 8) * (W / 8) + c / 8) * 64
 * elements. Read as K-major (rows = MN, columns = K: q, k tiles for Q K^T) its LBO is 128 bytes
 * and SBO 16 W bytes; read as MN-major (rows = K, columns = MN: v for P V) its SBO is 128 bytes
 * and LBO 16 W bytes. A 16-byte chunk of a row is one core-matrix row: cp.async stages it as is.
 *
 * Ordering (the ISA's rules, which the kernels follow and the emulator checks in part):
 *   - wgmma_fence() by the whole warpgroup before the first wgmma of a group of products and
 *     whenever the accumulator or A registers were touched by other instructions since;
 *   - wgmma_commit() closes the products issued since the last commit into a group;
 *     wgmma_wait<N>() waits until at most N groups are pending: only then are D's registers
 *     (and A's, and the shared memory read) free to read or change;
 *   - shared memory written by the threads (st.shared or cp.async) and then read by wgmma needs
 *     wgmma_fence_smem() (fence.proxy.async) by the writers before the barrier that publishes it.
 *
 * Under the host emulator (tests/emu, DT_CUDA_EMULATOR) each function is a warpgroup-collective
 * software version (tests/emu/emu_wgmma.cpp): a product is queued when its group's 128 threads
 * reach it and performed, from the shared memory and registers as they are then, by the
 * wgmma_wait that retires its group. So a kernel that reads D early, or changes a staged tile
 * before the wait, computes a wrong result there too; a product that reads bytes the threads
 * wrote after the block's last wgmma_fence_smem aborts (emu_proxy.cpp). emu_selftest checks the
 * layouts against plain products, and test_cuda_wgmma checks the same products on a GPU. */
#ifndef DT_CUDA_WGMMA_CUH
#define DT_CUDA_WGMMA_CUH

#include <stdint.h>

#include "model/cuda/cuda_common.cuh"

/* the element offset of (r, c) in a tile of W columns kept as core matrices (see above) */
template <int W> __host__ __device__ __forceinline__ int wgmma_tile_at(int r, int c) {
    return ((r >> 3) * (W >> 3) + (c >> 3)) * 64 + (r & 7) * 8 + (c & 7);
}

/* DT_WGMMA_ASM: 1 in device code for sm_90a, the only code with the wgmma instructions. The
 * functions below exist in every compilation; elsewhere they trap, and the host launches a wgmma
 * kernel only where the build has sm_90a code for the device (flash_sm90_usable). */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DT_WGMMA_ASM 1
#else
#define DT_WGMMA_ASM 0
#endif

#ifdef DT_CUDA_EMULATOR

/* wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16, A from registers */
template <int N, int TRANS_B>
__device__ __forceinline__ void wgmma_rs(float (*d)[4], const uint32_t a[4], uint64_t desc_b,
                                         int accumulate, const char *file = __builtin_FILE(),
                                         int line = __builtin_LINE()) {
    emu_wgmma_bf16(&d[0][0], N, a, 0, desc_b, 0, TRANS_B, accumulate, file, line);
}
/* the same with A from shared memory */
template <int N, int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_ss(float (*d)[4], uint64_t desc_a, uint64_t desc_b,
                                         int accumulate, const char *file = __builtin_FILE(),
                                         int line = __builtin_LINE()) {
    emu_wgmma_bf16(&d[0][0], N, NULL, desc_a, desc_b, TRANS_A, TRANS_B, accumulate, file, line);
}
__device__ __forceinline__ void wgmma_fence(const char *file = __builtin_FILE(),
                                            int line = __builtin_LINE()) {
    emu_wgmma_fence(file, line);
}
__device__ __forceinline__ void wgmma_commit(const char *file = __builtin_FILE(),
                                             int line = __builtin_LINE()) {
    emu_wgmma_commit(file, line);
}
template <int N>
__device__ __forceinline__ void wgmma_wait(const char *file = __builtin_FILE(),
                                           int line = __builtin_LINE()) {
    emu_wgmma_wait(N, file, line);
}
__device__ __forceinline__ void wgmma_fence_smem(const char *file = __builtin_FILE(),
                                                 int line = __builtin_LINE()) {
    emu_proxy_fence(file, line);
}

#else

#include "model/cuda/wgmma_asm.cuh" /* wgmma_rs, wgmma_ss: generated, one per shape */
#if DT_WGMMA_ASM
#define DT_WGMMA_INSN(text) asm volatile(text ::: "memory")
#else
#define DT_WGMMA_INSN(text) __trap()
#endif
__device__ __forceinline__ void wgmma_fence(void) {
    DT_WGMMA_INSN("wgmma.fence.sync.aligned;\n");
}
__device__ __forceinline__ void wgmma_commit(void) {
    DT_WGMMA_INSN("wgmma.commit_group.sync.aligned;\n");
}
template <int N> __device__ __forceinline__ void wgmma_wait(void) {
#if DT_WGMMA_ASM
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#else
    __trap();
#endif
}
__device__ __forceinline__ void wgmma_fence_smem(void) {
    DT_WGMMA_INSN("fence.proxy.async.shared::cta;\n");
}
#undef DT_WGMMA_INSN

#endif

/* The calling thread's warpgroup, threadIdx.x / 128, provably uniform across its warp as
 * warp_index() (cuda_common.cuh) is: without that, ptxas serialises the wgmma products in
 * branches on it (C7520). Every lane of the warp calls it. */
__device__ __forceinline__ int wgmma_warpgroup(void) { return warp_index() / 4; }

/* The descriptor of a bf16 matrix at p (shared, 16-byte aligned) in a no-swizzle layout with
 * leading and stride byte offsets lbo, sbo (multiples of 16, below 256 KiB). */
__device__ __forceinline__ uint64_t wgmma_desc(const void *p, uint32_t lbo, uint32_t sbo) {
    const uint64_t start = (smem_addr(p) & 0x3ffffu) >> 4;
    return start | (uint64_t)((lbo & 0x3ffffu) >> 4) << 16 |
           (uint64_t)((sbo & 0x3ffffu) >> 4) << 32; /* base offset 0, swizzle 0: none */
}

/* The descriptor of a bf16 matrix at p in the layout of swizzle S (32, 64 or 128 bytes; W = S / 2
 * elements), as a TMA load with that swizzle writes a tile whose box rows are S bytes (tma.cuh):
 *   K-major  (trans 0): rows of W elements along K, S bytes apart, 8 of them a swizzle atom;
 *       element (mn, k) at (mn % 8) * W + (mn / 8) * SBO + k (the ISA's
 *       ((8,m),(T,2k)):((W,SBO),(1,T))): SBO is 8 S for atoms one after another; the 16 k of an
 *       instruction lie in one row, so the k16 steps of a W-wide tile start 32 bytes apart and
 *       LBO is unused (a K wider than W is the next box's atoms: another start);
 *   MN-major (trans 1): rows of W elements along MN, one per k, S bytes apart: element (mn, k)
 *       at (mn % W) + (mn / W) * LBO + (k % 8) * W + (k / 8) * SBO (((T,W/8,m),(8,k)):
 *       ((1,T,LBO),(W,SBO))): SBO is 8 S for the next 8 k, LBO the distance to the next W
 *       columns (the next box);
 * then each byte address a is swizzled: bits 4.. of a XOR bits 7.. (1, 2, 3 bits for S = 32,
 * 64, 128). The pattern follows the shared-window address, so a tile starts at a multiple of
 * 8 S (the swizzle's repeat) and the base offset field stays 0. */
__device__ __forceinline__ uint64_t wgmma_desc_swizzled(const void *p, uint32_t lbo, uint32_t sbo,
                                                        int swizzle) {
    const uint64_t mode = swizzle == 128 ? 1 : swizzle == 64 ? 2 : 3; /* 32 bytes: 3 */
    return wgmma_desc(p, lbo, sbo) | mode << 62;
}

#endif
