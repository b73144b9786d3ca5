/* Test-only entry points to the TMA loads of tma.cuh, the swizzled wgmma layouts of wgmma.cuh
 * and the warp roles of warp_roles.cuh (test_cuda_tma), not for the backend: small kernels whose
 * results a test compares with a host reference on a GPU (and, built against tests/emu, on the
 * emulator). All arrays are host memory, row-major; bf16 values are their bits (uint16_t). */
#ifndef DT_CUDA_TMA_TEST_H
#define DT_CUDA_TMA_TEST_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the current device can run the kernels below: compute capability 9.0 and, in this
 * build, sm_90a device code (wgmma and setmaxnreg), which a kernel reports from the device;
 * 1 under the host emulator. Otherwise 0, with the reason in why (len bytes). */
int cuda_tma_test_supported(char *why, int len);

/* One TMA load of the box (box[0] x box[1] [x box[2]] elements) at coords of a dense tensor `in`
 * of rank 2 or 3 (dims innermost first) with a swizzle of 0, 32, 64 or 128 bytes, into shared
 * memory aligned to 1024 bytes; out receives the box's bytes as they lie there (box elements).
 * Returns 0, -1 (nothing run) for arguments tma_encode_bf16 refuses. */
int cuda_tma_test_layout(uint16_t *out, const uint16_t *in, int rank, const uint64_t *dims,
                         const uint32_t *box, const int *coords, int swizzle);

/* d (64 x n) = a (64 x 64) b (64 x n) by four wgmma_ss (k16 steps) on operands that TMA loads
 * with a swizzle of 32, 64 or 128 bytes: A K-major (from a), B K-major (trans_b 0: from bt,
 * n x 64, B's transpose) or N-major (trans_b 1: from b, 64 x n); n is 64 or 128. One
 * warpgroup. Returns 0, or -1 (nothing run) for other arguments. */
int cuda_tma_test_product(float *d, const uint16_t *a, const uint16_t *bt, const uint16_t *b,
                          int n, int swizzle, int trans_b);

/* The warp-specialised pipeline of an FA3-style kernel: a producer warpgroup (registers down to
 * 40 by setmaxnreg) whose one thread loads, per k tile of 64, a (128 x 64) and bt (64 x 64)
 * tiles by TMA (128-byte swizzle) into a ring of `stages` (1 to 4) shared-memory stages with a
 * full and an empty mbarrier each; two consumer warpgroups (registers up to 232), consumer c
 * computing rows 64c.. of d (128 x 64) = a (128 x 64 k_tiles) bt^T by wgmma_ss, taking turns
 * at issuing their products through two named barriers (consumer 0 first), handing each stage
 * back on its empty barrier. k_tiles 1 to 16. Returns 0, or -1 (nothing run) for other
 * arguments. */
int cuda_tma_test_pipeline(float *d, const uint16_t *a, const uint16_t *bt, int k_tiles,
                           int stages);

#ifdef __cplusplus
}
#endif

#endif
