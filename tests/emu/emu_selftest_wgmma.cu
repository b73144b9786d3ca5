/* Self-test of the emulator's warpgroup matrix products (emu_wgmma.cpp, reached through
 * model/cuda/wgmma.cuh as the sm_90 kernels reach them), part of emu_selftest:
 *   - wgmma_rs and wgmma_ss against a plain (64 x 16) by (16 x N) product computed here, for
 *     N in {8, 64, 96, 256}, B K-major and N-major, A (ss) K-major and M-major, accumulate 0
 *     (over NaN accumulators) and 1, with the operands staged in shared memory
 *       - as wgmma_tile_at<W> places them, described with the LBO and SBO wgmma.cuh gives for
 *         that layout, and
 *       - in padded layouts with other strides (K-major: SBO 160 bytes, LBO past all the
 *         MN core matrices + 16; MN-major: SBO 144, LBO past them + 32), written by the
 *         ISA's formula, so a descriptor whose fields are misread reads the wrong elements or
 *         the NaN gaps;
 *     in blocks of one warpgroup and of two doing different products; small integers, so the
 *     comparison is exact. The products run the GPU test's kernel (model/cuda/wgmma_test.cu,
 *     with the layouts and fragment maps of wgmma_test_layout.cuh) on the emulator, here for
 *     every mode and N, against this file's plain product;
 *   - the asynchrony: two groups in flight: an accumulator read before the wait sees its old
 *     value, wgmma_wait<1> performs the first group and not the second, a staged tile changed
 *     after the issue and before the wait is what the product reads, a product issued but not
 *     committed is not performed by a wait (only after its commit); operands in static shared
 *     memory;
 *   - shared-window addresses: static and dynamic shared memory at 226 KiB of dynamic memory,
 *     disjoint, below 2^18, each region contiguous;
 *   - misuse aborts, each with its own message: a wgmma without a fence, a wgmma reading a
 *     byte the threads wrote without a fence.proxy.async (wgmma_fence_smem), a block that is not
 *     whole warpgroups, a warpgroup collective reached by part of a warp or of a warpgroup (the
 *     rest at __syncthreads or at another site), a block ending with products not committed or
 *     not waited for, base-offset descriptors, an operand outside shared memory,
 *     the shared address of device memory, N = 12, descriptors that differ within the
 *     warpgroup. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "emu_selftest_util.h"
#include "model/cuda/wgmma.cuh"
#include "model/cuda/wgmma_test.h"
#include "model/cuda/wgmma_test_layout.cuh"

static int g_wg_fails;
#define WCHECK(cond, ...) EMU_CHECK(g_wg_fails, cond, __VA_ARGS__)

static uint16_t bf16_of_int(int x) { /* small integers are exact in bf16 */
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16);
}
static int small_int(unsigned *s) { /* in [-4, 4] */
    *s = *s * 1103515245u + 12345u;
    return (int)((*s >> 16) % 9) - 4;
}

/* Runs nw warpgroups (case bits: padded, accumulate of each) on fresh operands; returns the
 * number of elements of the nw products that differ from A B + (accumulate ? C : 0). */
static int product_case(int n, int a_smem, int ta, int tb, int nw, int padded_mask,
                        int acc_mask, unsigned seed) {
    const size_t na = 64 * 16 * nw, nb = 16 * (size_t)n * nw, nd = 64 * (size_t)n * nw;
    int *Ai = (int *)malloc(na * sizeof(int)), *Bi = (int *)malloc(nb * sizeof(int));
    uint16_t *A = (uint16_t *)malloc(na * 2), *B = (uint16_t *)malloc(nb * 2);
    float *C = (float *)malloc(nd * 4), *D = (float *)malloc(nd * 4);
    unsigned s = seed;
    for (size_t e = 0; e < na; e++) A[e] = bf16_of_int(Ai[e] = small_int(&s));
    for (size_t e = 0; e < nb; e++) B[e] = bf16_of_int(Bi[e] = small_int(&s));
    for (size_t e = 0; e < nd; e++) C[e] = (float)(small_int(&s) * 3);
    /* the GPU test's kernel (model/cuda/wgmma_test.cu) on the emulator; nonzero: nothing ran */
    const int ran =
        cuda_wgmma_test_product(D, A, B, C, n, nw, a_smem, ta, tb, padded_mask, acc_mask) == 0;
    int bad = !ran;
    for (int w = 0; ran && w < nw; w++)
        for (int m = 0; m < 64; m++)
            for (int j = 0; j < n; j++) {
                const size_t at = (size_t)w * 64 * n + (size_t)m * n + j;
                long ref = (acc_mask >> w & 1) ? (long)C[at] : 0;
                for (int k = 0; k < 16; k++)
                    ref += (long)Ai[w * 1024 + m * 16 + k] * Bi[(size_t)w * 16 * n + k * n + j];
                bad += D[at] != (float)ref;
            }
    free(Ai);
    free(Bi);
    free(A);
    free(B);
    free(C);
    free(D);
    return bad;
}

static void test_products(void) {
    const int ns[4] = {8, 64, 96, 256};
    const char *modes[6] = {"rs B K-major", "rs B N-major", "ss A K B K", "ss A K B N",
                            "ss A M B K", "ss A M B N"};
    int runs = 0;
    for (int in = 0; in < 4; in++)
        for (int mode = 0; mode < 6; mode++) {
            const int a_smem = mode >= 2, ta = mode >= 4, tb = a_smem ? mode % 2 : mode;
            const unsigned seed = 1000u * (unsigned)ns[in] + 10u * (unsigned)mode;
            for (int c = 0; c < 4; c++) { /* one warpgroup: each (padded, accumulate) */
                const int bad = product_case(ns[in], a_smem, ta, tb, 1, c & 1, c >> 1, seed + c);
                WCHECK(bad == 0, "wgmma N=%d %s padded=%d accumulate=%d: %d of %d wrong",
                       ns[in], modes[mode], c & 1, c >> 1, bad, 64 * ns[in]);
                runs++;
            }
            /* two warpgroups, different products: (tile, 0) with (padded, 1), and the reverse */
            for (int c = 0; c < 2; c++) {
                const int bad = product_case(ns[in], a_smem, ta, tb, 2, c ? 1 : 2, c ? 1 : 2,
                                             seed + 5 + c);
                WCHECK(bad == 0, "wgmma N=%d %s, two warpgroups (%d): %d of %d wrong", ns[in],
                       modes[mode], c, bad, 2 * 64 * ns[in]);
                runs++;
            }
        }
    printf("wgmma: %d product runs against plain products\n", runs);
}

/* ---- asynchrony: one warpgroup, N = 64, operands in static shared memory (tiles) ---- */
enum { AN = 64, AMAT = 64 * AN };

/* out: 6 matrices (64 x 64): d1 before any wait; d1 and d2 after wait<1>; d2 and d3 after a
 * wait<0> with d3's product issued but not committed; d3 after its commit and wait<0>. B holds
 * B1, B2, B3 (16 x 64 each); B2 is staged, its product issued, then B3 written over it. */
__global__ void async_kernel(float *out, const uint16_t *A, const uint16_t *B, const float *C) {
    __shared__ uint4 sa_raw[64 * 16 / 8];
    __shared__ uint4 sb1_raw[16 * AN / 8];
    __shared__ uint4 sb2_raw[16 * AN / 8];
    uint16_t *sa = (uint16_t *)sa_raw, *sb1 = (uint16_t *)sb1_raw, *sb2 = (uint16_t *)sb2_raw;
    const int i = threadIdx.x;
    for (int e = i; e < 64 * 16; e += 128) sa[wgmma_tile_at<16>(e / 16, e % 16)] = A[e];
    for (int e = i; e < 16 * AN; e += 128) {
        sb1[wgmma_tile_at<16>(e % AN, e / AN)] = B[e];
        sb2[wgmma_tile_at<16>(e % AN, e / AN)] = B[16 * AN + e];
    }
    wgmma_fence_smem();
    __syncthreads();
    const uint64_t da = wgmma_desc(sa, 128, 256), db1 = wgmma_desc(sb1, 128, 256);
    const uint64_t db2 = wgmma_desc(sb2, 128, 256);
    float d1[AN / 8][4], d2[AN / 8][4], d3[AN / 8][4];
    load_d<AN>(d1, C, i);
    load_d<AN>(d2, C, i);
    load_d<AN>(d3, C, i);
    wgmma_fence();
    wgmma_ss<AN, 0, 0>(d1, da, db1, 1);
    wgmma_commit();
    wgmma_ss<AN, 0, 0>(d2, da, db2, 1);
    wgmma_commit();
    store_d<AN>(out, d1, i); /* too early: the old value */
    for (int e = i; e < 16 * AN; e += 128) sb2[wgmma_tile_at<16>(e % AN, e / AN)] = B[32 * AN + e];
    wgmma_fence_smem();
    __syncthreads();
    wgmma_wait<1>();
    store_d<AN>(out + AMAT, d1, i);
    store_d<AN>(out + 2 * AMAT, d2, i);
    wgmma_fence();
    wgmma_ss<AN, 0, 0>(d3, da, db1, 1);
    wgmma_wait<0>();
    store_d<AN>(out + 3 * AMAT, d2, i);
    store_d<AN>(out + 4 * AMAT, d3, i);
    wgmma_commit();
    wgmma_wait<0>();
    store_d<AN>(out + 5 * AMAT, d3, i);
}

static void test_async(void) {
    static int Ai[64 * 16], Bi[3 * 16 * AN];
    static uint16_t A[64 * 16], B[3 * 16 * AN];
    static float C[AMAT], out[6 * AMAT], prod[3][AMAT];
    unsigned s = 4242u;
    for (int e = 0; e < 64 * 16; e++) A[e] = bf16_of_int(Ai[e] = small_int(&s));
    for (int e = 0; e < 3 * 16 * AN; e++) B[e] = bf16_of_int(Bi[e] = small_int(&s));
    for (int e = 0; e < AMAT; e++) C[e] = (float)small_int(&s);
    for (int b = 0; b < 3; b++) /* C + A B_b */
        for (int m = 0; m < 64; m++)
            for (int j = 0; j < AN; j++) {
                long r = (long)C[m * AN + j];
                for (int k = 0; k < 16; k++)
                    r += (long)Ai[m * 16 + k] * Bi[b * 16 * AN + k * AN + j];
                prod[b][m * AN + j] = (float)r;
            }
    uint16_t *dA = emu_upload(A, sizeof A), *dB = emu_upload(B, sizeof B);
    float *dC = emu_upload(C, sizeof C), *dout;
    cudaMalloc(&dout, sizeof out);
    async_kernel<<<1, 128>>>(dout, dA, dB, dC);
    cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost);
    /* what each of the 6 matrices must hold: C (not yet performed) or a product */
    const float *want[6] = {C, prod[0], C, prod[2], C, prod[0]};
    const char *what[6] = {"d1 read before any wait (old value)", "d1 after wait<1> (done)",
                           "d2 after wait<1> (not yet done)",
                           "d2 after wait<0> (with the tile written after its issue)",
                           "d3 after wait<0> while not committed (not done)",
                           "d3 after its commit and wait<0> (done)"};
    for (int x = 0; x < 6; x++) {
        int bad = 0;
        for (int e = 0; e < AMAT; e++) bad += out[x * AMAT + e] != want[x][e];
        WCHECK(bad == 0, "wgmma asynchrony: %s: %d of %d wrong", what[x], bad, AMAT);
    }
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    cudaFree(dout);
}

/* ---- shared-window addresses ---- */
__global__ void address_kernel(uint32_t *out, int dyn_bytes) {
    __shared__ uint4 st[64];
    extern __shared__ uint4 dyn[];
    st[threadIdx.x] = make_uint4(0u, 0u, 0u, 0u);
    if (threadIdx.x == 0) {
        out[0] = smem_addr(&st[0]);
        out[1] = smem_addr(&st[63]);
        out[2] = smem_addr(&dyn[0]);
        out[3] = smem_addr(&dyn[dyn_bytes / 16 - 1]);
    }
}

static void test_addresses(void) {
    const int dyn = 226 * 1024; /* with 1 KiB static: the H100's 227 KiB */
    uint32_t *d, h[4];
    cudaMalloc(&d, sizeof h);
    cudaFuncSetAttribute(address_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn);
    address_kernel<<<1, 64, dyn>>>(d, dyn);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    WCHECK(h[1] - h[0] == 63 * 16 && h[3] - h[2] == (uint32_t)dyn - 16,
           "shared addresses: regions not contiguous (static 0x%x..0x%x, dynamic 0x%x..0x%x)",
           h[0], h[1], h[2], h[3]);
    WCHECK(h[1] + 16 <= h[2] || h[3] + 16 <= h[0], "shared addresses: static 0x%x..0x%x and "
           "dynamic 0x%x..0x%x overlap", h[0], h[1], h[2], h[3]);
    WCHECK(h[0] % 16 == 0 && h[2] % 16 == 0 && h[1] < (1u << 18) && h[3] < (1u << 18),
           "shared addresses: not 16-byte aligned or not below 2^18 (0x%x, 0x%x)", h[1], h[3]);
    cudaFree(d);
}

/* ---- misuses: each must abort in a child process, with its own message ---- */
/* a zero K-major 64 x 16 tile in static shared memory, for A and B (N = 64) */
__device__ static uint16_t *misuse_tile(void) {
    __shared__ uint4 tile[64 * 16 / 8];
    for (int e = threadIdx.x; e < 64 * 16 / 8; e += blockDim.x)
        tile[e] = make_uint4(0u, 0u, 0u, 0u);
    wgmma_fence_smem();
    __syncthreads();
    return (uint16_t *)tile;
}
#define MISUSE_TILE                                                                                \
    uint16_t *tile = misuse_tile();                                                                \
    float d[8][4] = {};                                                                            \
    const uint64_t desc = wgmma_desc(tile, 128, 256)

__global__ void no_fence_kernel(float *x) {
    MISUSE_TILE;
    wgmma_ss<64, 0, 0>(d, desc, desc, 0);
    wgmma_commit();
    wgmma_wait<0>();
    x[threadIdx.x] = d[0][0];
}
__global__ void fence_after_wait_missing_kernel(float *x) {
    MISUSE_TILE;
    wgmma_fence();
    wgmma_ss<64, 0, 0>(d, desc, desc, 0);
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_ss<64, 0, 0>(d, desc, desc, 1); /* a fence is needed again after the wait */
    wgmma_commit();
    wgmma_wait<0>();
    x[threadIdx.x] = d[0][0];
}
__global__ void no_proxy_fence_kernel(float *x) { /* the tile rewritten, not fenced */
    MISUSE_TILE;
    tile[5 * 16 + 3] = 0x3f80; /* 1.0 */
    __syncthreads();
    wgmma_fence();
    wgmma_ss<64, 0, 0>(d, desc, desc, 0);
    wgmma_commit();
    wgmma_wait<0>();
    x[threadIdx.x] = d[0][0];
}
__global__ void partial_group_kernel(float *x) { /* 96 threads */
    wgmma_fence();
    x[threadIdx.x] = 1.0f;
}
__global__ void half_warp_kernel(float *x) {
    if (threadIdx.x % 32 < 16) wgmma_fence();
    x[threadIdx.x] = 1.0f;
}
__global__ void group_vs_barrier_kernel(float *x) {
    if (threadIdx.x < 96) wgmma_fence();
    else __syncthreads();
    x[threadIdx.x] = 1.0f;
}
__global__ void group_two_sites_kernel(float *x) {
    if (threadIdx.x < 32) wgmma_fence();
    else wgmma_fence();
    x[threadIdx.x] = 1.0f;
}
__global__ void not_waited_kernel(float *x) {
    MISUSE_TILE;
    wgmma_fence();
    wgmma_ss<64, 0, 0>(d, desc, desc, 0);
    wgmma_commit();
    x[threadIdx.x] = 1.0f;
}
__global__ void not_committed_kernel(float *x) {
    MISUSE_TILE;
    wgmma_fence();
    wgmma_ss<64, 0, 0>(d, desc, desc, 0);
    wgmma_wait<0>();
    x[threadIdx.x] = 1.0f;
}
__global__ void desc_bits_kernel(float *x, uint64_t bits) {
    MISUSE_TILE;
    wgmma_fence();
    wgmma_ss<64, 0, 0>(d, desc, desc | bits, 0);
    wgmma_commit();
    wgmma_wait<0>();
    x[threadIdx.x] = d[0][0];
}
__global__ void outside_kernel(float *x) { /* B's second K half 32 KiB past the tile */
    MISUSE_TILE;
    wgmma_fence();
    wgmma_ss<64, 0, 0>(d, desc, wgmma_desc(tile, 32768, 256), 0);
    wgmma_commit();
    wgmma_wait<0>();
    x[threadIdx.x] = d[0][0];
}
__global__ void global_address_kernel(float *x) { x[threadIdx.x] = (float)smem_addr(x); }
__global__ void bad_n_kernel(float *x) {
    MISUSE_TILE;
    uint32_t a[4] = {0, 0, 0, 0};
    wgmma_fence();
    wgmma_rs<12, 0>(d, a, desc, 0);
    wgmma_commit();
    wgmma_wait<0>();
    x[threadIdx.x] = d[0][0];
}
__global__ void divergent_desc_kernel(float *x) {
    MISUSE_TILE;
    wgmma_fence();
    wgmma_ss<64, 0, 0>(d, desc, threadIdx.x == 77 ? desc + 1 : desc, 0);
    wgmma_commit();
    wgmma_wait<0>();
    x[threadIdx.x] = d[0][0];
}
static void run_no_fence(void *x) { no_fence_kernel<<<1, 128>>>((float *)x); }
static void run_no_fence_again(void *x) { fence_after_wait_missing_kernel<<<1, 128>>>((float *)x); }
static void run_no_proxy_fence(void *x) { no_proxy_fence_kernel<<<1, 128>>>((float *)x); }
static void run_partial_group(void *x) { partial_group_kernel<<<1, 96>>>((float *)x); }
static void run_half_warp(void *x) { half_warp_kernel<<<1, 128>>>((float *)x); }
static void run_group_vs_barrier(void *x) { group_vs_barrier_kernel<<<1, 128>>>((float *)x); }
static void run_group_two_sites(void *x) { group_two_sites_kernel<<<1, 128>>>((float *)x); }
static void run_not_waited(void *x) { not_waited_kernel<<<1, 128>>>((float *)x); }
static void run_not_committed(void *x) { not_committed_kernel<<<1, 128>>>((float *)x); }
static void run_base_offset(void *x) { desc_bits_kernel<<<1, 128>>>((float *)x, 1ull << 49); }
static void run_outside(void *x) { outside_kernel<<<1, 128>>>((float *)x); }
static void run_global_address(void *x) { global_address_kernel<<<1, 128>>>((float *)x); }
static void run_bad_n(void *x) { bad_n_kernel<<<1, 128>>>((float *)x); }
static void run_divergent_desc(void *x) { divergent_desc_kernel<<<1, 256>>>((float *)x); }
__global__ void fence_only_kernel(float *x) { /* no tile: the first sm_90 instruction a wgmma */
    wgmma_fence();
    x[threadIdx.x] = 1.0f;
}
static void run_on_a100(void *x) { /* a valid wgmma.fence, on a compute capability 8.0 device */
    emu_set_gpu("a100");
    fence_only_kernel<<<1, 128>>>((float *)x);
}
static void run_proxy_fence_on_a100(void *x) { /* the tile's fence.proxy.async */
    emu_set_gpu("a100");
    desc_bits_kernel<<<1, 128>>>((float *)x, 0);
}

static void test_misuses(void) {
    const emu_abort_case cases[] = {
        {"wgmma without a wgmma_fence", "without a wgmma_fence", run_no_fence},
        {"wgmma after a wait without a new fence", "without a wgmma_fence", run_no_fence_again},
        {"wgmma reading what the threads wrote without a fence.proxy.async",
         "which the threads wrote (st.shared or cp.async) after", run_no_proxy_fence},
        {"warpgroup collective in a block of 96 threads", "whole warpgroups", run_partial_group},
        {"warpgroup collective reached by half a warp", "reached by 16 of the 32 lanes",
         run_half_warp},
        {"warpgroup collective while a warp of it waits at __syncthreads", "(a deadlock)",
         run_group_vs_barrier},
        {"warps of a warpgroup at different wgmma_fence sites", "different warpgroup collectives",
         run_group_two_sites},
        {"block ending with products not waited for", "not waited for", run_not_waited},
        {"block ending with products not committed", "not committed", run_not_committed},
        {"descriptor with a base offset", "base offset 1", run_base_offset},
        {"operand outside shared memory", "outside the block's shared memory", run_outside},
        {"shared address of device memory", "not in the block's shared memory",
         run_global_address},
        {"wgmma with N = 12", "N = 12", run_bad_n},
        {"descriptors that differ within the warpgroup", "thread 77 of warpgroup 0",
         run_divergent_desc},
        {"wgmma on an emulated A100", "an sm_90 instruction", run_on_a100},
        {"fence.proxy.async on an emulated A100", "fence.proxy.async at", run_proxy_fence_on_a100},
    };
    g_wg_fails += emu_expect_aborts(cases, sizeof cases / sizeof cases[0]);
}

/* Runs the checks above; returns the number of failed checks. */
int emu_selftest_wgmma(void) {
    test_products();
    test_async();
    test_addresses();
    test_misuses();
    return g_wg_fails;
}
