/* Self-test of the emulator's tensor-core instructions (emu_mma.cpp, reached through
 * model/cuda/mma.cuh as the fused attention reaches them), part of emu_selftest:
 *   - mma_bf16_16816 against a plain 16x16 by 16x8 product computed here, with the operands
 *     placed in registers by this file's own transcription of the PTX ISA's fragment tables
 *     (row/col formulas of "Matrix Fragments for mma.m16n8k16 with floating point type"); small
 *     integers, so every product and sum is exact and the comparison is exact;
 *   - that layout mistakes are caught: A's registers 1 and 2 swapped, B's two registers swapped,
 *     B loaded by A's rule (row from groupID, column from threadID): each must give a wrong
 *     product;
 *   - ldmatrix_x4 and ldmatrix_x4_trans: every lane's four registers against the ISA's rule, on
 *     distinct 16-bit codes;
 *   - pack_bf16x2: round to nearest even (ties both ways), the low half first;
 *   - misuse aborts: an mma reached by half a warp, an ldmatrix row address off 16 bytes or
 *     outside shared memory. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "emu_selftest_util.h"
#include "model/cuda/mma.cuh"

static int g_mma_fails;
#define MCHECK(cond, ...) EMU_CHECK(g_mma_fails, cond, __VA_ARGS__)

static uint16_t bf16_of_int(int x) { /* small integers are exact in bf16 */
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16);
}

enum { LAYOUT_RIGHT, LAYOUT_A_SWAP, LAYOUT_B_SWAP, LAYOUT_B_ROWS };

/* A (16 x 16) and B (16 x 8) as bf16 bits row-major, C, D (16 x 8) fp32 row-major; one warp. */
__global__ void mma_kernel(float *D, const uint16_t *A, const uint16_t *B, const float *C,
                           int layout) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    uint32_t a[4], b[2];
    float d[4];
    for (int i = 0; i < 8; i++) { /* element i of A: register i / 2, half i % 2 */
        const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
        const int col = i < 4 ? t * 2 + (i & 1) : t * 2 + (i & 1) + 8;
        const uint32_t h = A[row * 16 + col];
        if (i % 2 == 0) a[i / 2] = h;
        else a[i / 2] |= h << 16;
    }
    for (int i = 0; i < 4; i++) { /* element i of B; LAYOUT_B_ROWS: wrongly as A's rows */
        int row = i < 2 ? t * 2 + (i & 1) : t * 2 + (i & 1) + 8, col = g;
        if (layout == LAYOUT_B_ROWS) row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
        const uint32_t h = B[row * 8 + col];
        if (i % 2 == 0) b[i / 2] = h;
        else b[i / 2] |= h << 16;
    }
    for (int i = 0; i < 4; i++) d[i] = C[(i < 2 ? g : g + 8) * 8 + t * 2 + (i & 1)];
    if (layout == LAYOUT_A_SWAP) {
        const uint32_t x = a[1];
        a[1] = a[2];
        a[2] = x;
    }
    if (layout == LAYOUT_B_SWAP) {
        const uint32_t x = b[0];
        b[0] = b[1];
        b[1] = x;
    }
    mma_bf16_16816(d, a, b);
    for (int i = 0; i < 4; i++) D[(i < 2 ? g : g + 8) * 8 + t * 2 + (i & 1)] = d[i];
}

/* Number of the 128 elements of D that differ from A B + C. */
static int mma_case(int layout) {
    uint16_t A[256], B[128];
    float C[128], D[128];
    int Ai[256], Bi[128];
    unsigned s = 7u + (unsigned)layout;
    for (int i = 0; i < 256; i++) {
        s = s * 1103515245u + 12345u;
        Ai[i] = (int)((s >> 16) % 9) - 4;
        A[i] = bf16_of_int(Ai[i]);
    }
    for (int i = 0; i < 128; i++) {
        s = s * 1103515245u + 12345u;
        Bi[i] = (int)((s >> 16) % 9) - 4;
        B[i] = bf16_of_int(Bi[i]);
        C[i] = (float)(i % 11) - 5.0f;
    }
    uint16_t *dA = emu_upload(A, sizeof A), *dB = emu_upload(B, sizeof B);
    float *dC = emu_upload(C, sizeof C), *dD;
    cudaMalloc(&dD, sizeof D);
    mma_kernel<<<1, 32>>>(dD, dA, dB, dC, layout);
    cudaMemcpy(D, dD, sizeof D, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            long ref = (long)C[i * 8 + j];
            for (int k = 0; k < 16; k++) ref += (long)Ai[i * 16 + k] * Bi[k * 8 + j];
            bad += D[i * 8 + j] != (float)ref;
        }
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    cudaFree(dD);
    return bad;
}

/* Each lane gives the address of row lane % 8 of matrix lane / 8 of a 16 x 16 shared tile of
 * codes 1 + 16 r + c: matrix i is rows 8 (i & 1).., columns 8 (i >> 1)..; out (32 lanes x 4
 * registers) for .x4 and .x4.trans. */
__global__ void ldmatrix_kernel(uint32_t *out) {
    __shared__ uint4 tile_raw[32]; /* 16 x 16 uint16 */
    uint16_t *tile = (uint16_t *)tile_raw;
    const int lane = threadIdx.x;
    for (int e = lane; e < 256; e += 32) tile[e] = (uint16_t)(1 + e);
    __syncthreads();
    const int i = lane >> 3, r = lane & 7;
    const uint16_t *row = tile + (8 * (i & 1) + r) * 16 + 8 * (i >> 1);
    uint32_t x[4], y[4];
    ldmatrix_x4(x, row);
    ldmatrix_x4_trans(y, row);
    for (int k = 0; k < 4; k++) {
        out[lane * 8 + k] = x[k];
        out[lane * 8 + 4 + k] = y[k];
    }
}

static void test_ldmatrix(void) {
    uint32_t *d, h[256];
    cudaMalloc(&d, sizeof h);
    ldmatrix_kernel<<<1, 32>>>(d);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int lane = 0; lane < 32; lane++)
        for (int i = 0; i < 4; i++) {
            const int r0 = 8 * (i & 1), c0 = 8 * (i >> 1), g = lane / 4, t = lane % 4;
            /* M_i[g][2t], M_i[g][2t+1]; transposed: M_i[2t][g], M_i[2t+1][g] */
            const uint32_t want = (uint32_t)(1 + (r0 + g) * 16 + c0 + 2 * t) |
                                  (uint32_t)(1 + (r0 + g) * 16 + c0 + 2 * t + 1) << 16;
            const uint32_t want_t = (uint32_t)(1 + (r0 + 2 * t) * 16 + c0 + g) |
                                    (uint32_t)(1 + (r0 + 2 * t + 1) * 16 + c0 + g) << 16;
            bad += h[lane * 8 + i] != want;
            bad += h[lane * 8 + 4 + i] != want_t;
        }
    MCHECK(bad == 0, "ldmatrix: %d wrong registers", bad);
    cudaFree(d);
}

__global__ void pack_kernel(uint32_t *out, const float *in, int n) {
    if (threadIdx.x == 0)
        for (int i = 0; i + 1 < n; i += 2) out[i / 2] = pack_bf16x2(in[i], in[i + 1]);
}

static void test_pack(void) {
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7 (even: 1); 1 + 3 2^-8 halfway between 1 + 2^-7
     * and 1 + 2^-6 (even: 1 + 2^-6); -(1 + 2^-8 + 2^-20) just past a tie: away from zero */
    const float in[6] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -(1.0f + 0x1p-8f + 0x1p-20f),
                         0.5f, 3.0e38f, -0.0f};
    const uint32_t want[3] = {0x3f823f80u, 0x3f00bf81u, 0x80007f62u};
    float *din = emu_upload(in, sizeof in);
    uint32_t *dout, got[3];
    cudaMalloc(&dout, sizeof got);
    pack_kernel<<<1, 32>>>(dout, din, 6);
    cudaMemcpy(got, dout, sizeof got, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 3; i++)
        MCHECK(got[i] == want[i], "pack_bf16x2(%.9g, %.9g) = 0x%08x, expected 0x%08x",
               (double)in[2 * i], (double)in[2 * i + 1], got[i], want[i]);
    cudaFree(din);
    cudaFree(dout);
}

/* ---- misuses: each must abort in a child process ---- */
__global__ void mma_half_warp_kernel(float *x) {
    uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    float d[4] = {0, 0, 0, 0};
    if (threadIdx.x < 16) mma_bf16_16816(d, a, b);
    x[threadIdx.x] = d[0];
}
__global__ void ldmatrix_misaligned_kernel(float *x) {
    __shared__ uint4 tile[64];
    tile[threadIdx.x] = make_uint4(0u, 0u, 0u, 0u);
    tile[threadIdx.x + 32] = make_uint4(0u, 0u, 0u, 0u);
    __syncthreads();
    uint32_t r[4];
    ldmatrix_x4(r, (const char *)tile + 16 * threadIdx.x + (threadIdx.x == 5 ? 4 : 0));
    x[threadIdx.x] = (float)r[0];
}
__global__ void ldmatrix_global_kernel(float *x) {
    uint32_t r[4];
    ldmatrix_x4(r, x + 4 * threadIdx.x); /* device memory, not shared */
    x[threadIdx.x] = (float)r[0];
}
static void run_mma_half_warp(void *x) { mma_half_warp_kernel<<<1, 32>>>((float *)x); }
static void run_ldmatrix_misaligned(void *x) { ldmatrix_misaligned_kernel<<<1, 32>>>((float *)x); }
static void run_ldmatrix_global(void *x) { ldmatrix_global_kernel<<<1, 32>>>((float *)x); }

/* Runs the checks above; returns the number of failed checks. */
int emu_selftest_mma(void) {
    MCHECK(mma_case(LAYOUT_RIGHT) == 0, "mma: %d of 128 elements differ from A B + C",
           mma_case(LAYOUT_RIGHT));
    const int a_swap = mma_case(LAYOUT_A_SWAP), b_swap = mma_case(LAYOUT_B_SWAP);
    const int b_rows = mma_case(LAYOUT_B_ROWS);
    MCHECK(a_swap > 0, "mma with A's registers 1 and 2 swapped still gives A B + C");
    MCHECK(b_swap > 0, "mma with B's registers swapped still gives A B + C");
    MCHECK(b_rows > 0, "mma with B loaded by A's row rule still gives A B + C");
    printf("mma: wrong layouts give %d, %d, %d wrong elements of 128\n", a_swap, b_swap, b_rows);
    test_ldmatrix();
    test_pack();
    g_mma_fails += emu_expect_death("mma reached by half the warp", SIGABRT, run_mma_half_warp);
    g_mma_fails += emu_expect_death("ldmatrix row address not 16-byte aligned", SIGABRT,
                                    run_ldmatrix_misaligned);
    g_mma_fails += emu_expect_death("ldmatrix from device memory", SIGABRT, run_ldmatrix_global);
    return g_mma_fails;
}
