/* Test-only entry points to the warpgroup matrix products of wgmma.cuh (test_cuda_wgmma), not
 * for the backend: small kernels that stage operands in shared memory, multiply them with
 * wgmma_rs / wgmma_ss and store the accumulators, so that a test can compare the products with
 * a host reference on a GPU (and, built against tests/emu, on the emulator). All arrays are
 * host memory, row-major; bf16 operands are their bits (uint16_t). */
#ifndef DT_CUDA_WGMMA_TEST_H
#define DT_CUDA_WGMMA_TEST_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the current device can run the kernels below: compute capability 9.0 and, in this
 * build, device code for it with the sm_90a features (wgmma; CMAKE_CUDA_ARCHITECTURES 90a),
 * which a kernel reports from the device (DT_WGMMA_ASM); 1 under the host emulator. Otherwise 0,
 * with the reason in why (len bytes). */
int cuda_wgmma_test_supported(char *why, int len);

/* nw (1 or 2) warpgroups in one block (128 nw threads), warpgroup w computing
 *   d_w (64 x n) = a_w (64 x 16) b_w (16 x n) + (bit w of acc_mask ? c_w : 0)
 * by one wgmma: wgmma_rs (a_smem 0: A from registers) or wgmma_ss (a_smem 1: A in shared memory,
 * K-major (trans_a 0) or M-major (1)), B in shared memory K-major (trans_b 0) or N-major (1).
 * The shared operands lie as wgmma_tile_at places them, with the LBO and SBO wgmma.cuh gives
 * for that layout, or (bit w of padded_mask) in a padded layout with other strides (K-major:
 * SBO 160 bytes, LBO n / 8 * 160 + 16; MN-major: SBO 144, LBO n / 8 * 144 + 32, n = 64 for A)
 * whose gaps hold NaN. a (nw x 64 x 16), b (nw x 16 x n), c, d (nw x 64 x n): warpgroup after
 * warpgroup; with accumulate 0 the accumulators start as NaN. n is 8, 16, 32, 48, 64, 96 or 256.
 * Returns 0, or -1 (nothing run) for other arguments. */
int cuda_wgmma_test_product(float *d, const uint16_t *a, const uint16_t *b, const float *c, int n,
                            int nw, int a_smem, int trans_a, int trans_b, int padded_mask,
                            int acc_mask);

/* Two groups in flight on one warpgroup (N = 64, wgmma_ss, tiles, K-major): d1 = a b1 + c and
 * d2 = a b2 + c (b: b1 then b2, 16 x 64 each), each product committed as its own group; d1 is
 * stored after wgmma_wait<1> (its group is then complete), d2 after wgmma_wait<0>. */
void cuda_wgmma_test_two_groups(float *d1, float *d2, const uint16_t *a, const uint16_t *b,
                                const float *c);

#ifdef __cplusplus
}
#endif

#endif
