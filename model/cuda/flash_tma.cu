/* The tensor maps of the fused attention's warp-specialised kernels (flash_tma.cuh) */
#include <stdio.h>
#include <stdlib.h>

#include "model/cuda/flash_tma.cuh"

void flash_tma_map(tma_map *map, const flash_bf16 *x, const char *name, const attn_map &m,
                   int cols, int box_cols) {
    const uint64_t dims[3] = {(uint64_t)cols, (uint64_t)m.T, (uint64_t)m.B};
    const uint64_t strides[2] = {2ull * cols, 2ull * cols * m.T};
    const uint32_t box[3] = {(uint32_t)box_cols, FLASH_BC, 1};
    char why[256];
    if (tma_encode_bf16(map, x, 3, dims, strides, box, 2 * box_cols, why, (int)sizeof why)) {
        fprintf(stderr, "difftrain: error: CUDA fused attention: no TMA map of %s (B %d, T %d, "
                "%d columns): %s\n", name, m.B, m.T, cols, why);
        fflush(stderr);
        abort();
    }
}
