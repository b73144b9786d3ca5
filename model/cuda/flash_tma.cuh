/* What the fused attention's warp-specialised sm_90 kernels share (flash_forward_tma.cu,
 * flash_dkdv_diff_tma.cu): the tensor maps of their inputs. Internal to model/cuda. */
#ifndef DT_CUDA_FLASH_TMA_CUH
#define DT_CUDA_FLASH_TMA_CUH

#include "model/cuda/flash_core.cuh"
#include "model/cuda/tma.cuh"

/* The map of x (B, T, cols: all heads' columns of a row) in boxes of box_cols columns x 64 rows
 * under the swizzle of the box's rows (2 box_cols bytes); aborts naming the tensor (name) when
 * the driver refuses it (flash_tma.cu) */
void flash_tma_map(tma_map *map, const flash_bf16 *x, const char *name, const attn_map &m,
                   int cols, int box_cols);

#endif
