/* Tensor memory accelerator (TMA) loads (cp.async.bulk.tensor, sm_90): the producer side of a
 * warp-specialised kernel, which copies a tile (a box of a 2-d to 5-d tensor) from global into
 * shared memory with one instruction issued by one thread, completing on an mbarrier
 * (mbarrier.cuh) by its bytes, in the swizzled layout that wgmma reads (wgmma.cuh,
 * wgmma_desc_swizzled). Internal to model/cuda.
 *
 *   tma_map: the 128-byte tensor map (CUDA's CUtensorMap), made on the host by tma_encode_bf16
 *       (tma.cu) and passed to the kernel as a `const __grid_constant__ tma_map` parameter (the
 *       instruction reads it from the kernel's parameter space);
 *   tma_load_2d / 3d(dst, map, c0, c1[, c2], bar): the box whose first element has coordinates
 *       (c0, c1, ...) (elements, innermost first; negative or past the end allowed: those
 *       elements are zeros) into shared memory from dst on, box row after box row, each 16-byte
 *       chunk where the swizzle puts it (bits 4.. of the shared-window address XOR bits 7..:
 *       1, 2 or 3 bits for the 32, 64 and 128-byte swizzles); the whole box's bytes count on
 *       bar's phase, out-of-bounds ones included (mbar_arrive_expect_tx beforehand). dst is
 *       128-byte aligned, and for a swizzled map aligned to 8 times the swizzle's width (1024
 *       bytes for 128), so that the pattern is the one wgmma's descriptors assume;
 *   tma_smem_align(p, align): p moved up to the next multiple of align in the shared window (a
 *       kernel's dynamic shared memory is only 16-byte aligned there).
 *
 * Under the host emulator (tests/emu, DT_CUDA_EMULATOR) the map is the emulator's own and each
 * load a call into it (tests/emu/emu_tma.cpp): it checks the map, the rank, the alignment and
 * the destination, and lands the box (read from global memory then) when the phase completes,
 * as a bulk copy. Elsewhere than sm_90 and later device code the loads trap. test_cuda_tma
 * checks the layouts, swizzled wgmma products on them and a warp-specialised pipeline on a GPU
 * and on the emulator. */
#ifndef DT_CUDA_TMA_CUH
#define DT_CUDA_TMA_CUH

#include <stdint.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/mbarrier.cuh"

/* CUtensorMap's size and alignment (cuda.h), without cuda.h in every kernel's file */
struct __align__(128) tma_map {
    uint64_t opaque[16];
};

/* Encodes in *map a tiled map of a row-major bf16 tensor at base (device memory, 16-byte
 * aligned) of `rank` (2 to 5) dimensions: dims[i] elements along dimension i (0 the innermost,
 * contiguous), strides[i - 1] bytes between consecutive indices of dimension i >= 1 (multiples
 * of 16), boxes of box[i] elements (1 to 256; box[0] x 2 bytes a multiple of 16, and with a
 * swizzle (32, 64 or 128 bytes; 0 for none) equal to it). Zero fill out of bounds, no L2
 * promotion. Returns 0, or -1 with the reason in why (len bytes): bad arguments, no driver
 * entry point, or the driver's refusal. Host code. */
int tma_encode_bf16(tma_map *map, const void *base, int rank, const uint64_t *dims,
                    const uint64_t *strides, const uint32_t *box, int swizzle, char *why,
                    int len);

#ifdef DT_CUDA_EMULATOR

__device__ __forceinline__ void tma_load_2d(void *dst, const tma_map *map, int c0, int c1,
                                            uint64_t *bar, const char *file = __builtin_FILE(),
                                            int line = __builtin_LINE()) {
    const int c[2] = {c0, c1};
    emu_tma_load(dst, map, 2, c, bar, file, line);
}
__device__ __forceinline__ void tma_load_3d(void *dst, const tma_map *map, int c0, int c1, int c2,
                                            uint64_t *bar, const char *file = __builtin_FILE(),
                                            int line = __builtin_LINE()) {
    const int c[3] = {c0, c1, c2};
    emu_tma_load(dst, map, 3, c, bar, file, line);
}

#else

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define DT_TMA_ASM(...) asm volatile(__VA_ARGS__)
#else
#define DT_TMA_ASM(...) __trap()
#endif

__device__ __forceinline__ void tma_load_2d(void *dst, const tma_map *map, int c0, int c1,
                                            uint64_t *bar) {
    DT_TMA_ASM("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
               " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_addr(dst)),
               "l"((uint64_t)(uintptr_t)map), "r"(c0), "r"(c1), "r"(smem_addr(bar))
               : "memory");
}
__device__ __forceinline__ void tma_load_3d(void *dst, const tma_map *map, int c0, int c1, int c2,
                                            uint64_t *bar) {
    DT_TMA_ASM("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
               " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(smem_addr(dst)),
               "l"((uint64_t)(uintptr_t)map), "r"(c0), "r"(c1), "r"(c2),
               "r"(smem_addr(bar))
               : "memory");
}
#undef DT_TMA_ASM

#endif

__device__ __forceinline__ unsigned char *tma_smem_align(void *p, uint32_t align) {
    const uint32_t a = smem_addr(p);
    return (unsigned char *)p + (align - a % align) % align;
}

#endif
