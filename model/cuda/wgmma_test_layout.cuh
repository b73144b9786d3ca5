/* The operand layouts and fragment maps of the wgmma tests: model/cuda/wgmma_test.cu's kernels
 * (the GPU test, test_cuda_wgmma) and the emulator's self-test (tests/emu/emu_selftest_wgmma.cu),
 * so both stage and read the operands alike; tma_test.cu stores its products with store_d.
 * Internal to those tests. */
#ifndef DT_CUDA_WGMMA_TEST_LAYOUT_CUH
#define DT_CUDA_WGMMA_TEST_LAYOUT_CUH

#include <stdint.h>

#include "model/cuda/wgmma.cuh"

/* ---- staging layouts of an MN x 16 operand (MN = 64 for A, N for B) ---- */

/* the strides in bytes: wgmma.cuh's for its tiles (K-major: rows = MN, W = 16; MN-major:
 * rows = K, W = MN), or the padded layout's (wgmma_test.h) */
__device__ inline int stage_lbo(int mn, int trans, int padded) {
    if (!padded) return trans ? 16 * mn : 128;
    return trans ? mn / 8 * 144 + 32 : mn / 8 * 160 + 16;
}
__device__ inline int stage_sbo(int trans, int padded) {
    if (!padded) return trans ? 128 : 16 * 16;
    return trans ? 144 : 160;
}
/* elements an operand's region takes in any of these layouts (a multiple of 8: 16 bytes): the
 * K-major padded layout's two K halves, LBO bytes = LBO / 2 elements apart */
__host__ __device__ inline int stage_elems(int mn) { return mn / 8 * 160 + 16; }

/* the element offset of (mn, k): wgmma_tile_at, or the ISA's formula with the padded strides */
template <int MN> __device__ inline int stage_at(int trans, int padded, int mn, int k) {
    if (!padded) return trans ? wgmma_tile_at<MN>(k, mn) : wgmma_tile_at<16>(mn, k);
    const int lbo = stage_lbo(MN, trans, 1) / 2, sbo = stage_sbo(trans, 1) / 2;
    return trans ? mn % 8 + mn / 8 * sbo + k % 8 * 8 + k / 8 * lbo
                 : mn % 8 * 8 + mn / 8 * sbo + k % 8 + k / 8 * lbo;
}

/* A's registers for thread i of the warpgroup: the m16n8k16 A fragment of warp i / 32's rows */
__device__ inline void load_a_fragment(uint32_t r[4], const uint16_t *a, int i) {
    const int row = 16 * (i / 32) + (i % 32) / 4, col = 2 * (i % 4);
#pragma unroll
    for (int j = 0; j < 4; j++) { /* r[1]: 8 rows down, r[2]: 8 columns right */
        const int at = (row + (j % 2) * 8) * 16 + col + (j / 2) * 8;
        r[j] = (uint32_t)a[at] | (uint32_t)a[at + 1] << 16;
    }
}
/* where accumulator d[nt][e] of thread i lies in the row-major 64 x N matrix */
template <int N> __device__ inline int d_at(int i, int nt, int e) {
    return (16 * (i / 32) + (i % 32) / 4 + (e / 2) * 8) * N + 8 * nt + 2 * (i % 4) + e % 2;
}
template <int N> __device__ inline void load_d(float (*d)[4], const float *m, int i) {
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) d[nt][e] = m[d_at<N>(i, nt, e)];
}
template <int N> __device__ inline void store_d(float *m, const float (*d)[4], int i) {
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) m[d_at<N>(i, nt, e)] = d[nt][e];
}

#endif
