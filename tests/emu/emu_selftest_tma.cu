/* Self-test of the emulated TMA loads (model/cuda/tma.cuh), named barriers and setmaxnreg
 * (model/cuda/warp_roles.cuh), part of emu_selftest (their layouts, the swizzled wgmma products
 * on them and a warp-specialised pipeline against host references are test_cuda_tma, which runs
 * on the emulator in every test run as emu_test_cuda_tma): the misuses that must abort:
 *   - a TMA load from a map that tma_encode_bf16 did not make, to a destination that is not
 *     aligned to the swizzle's repeat, of a map of another rank, and on an emulated A100;
 *   - tma_encode_bf16 refusing (not aborting on) a swizzled box row narrower than the swizzle;
 *   - two warps using one named barrier with different thread counts, a bar.arrive that no
 *     bar.sync meets before the block ends, a setmaxnreg of 20 registers, a setmaxnreg.inc
 *     below the count the warpgroup holds, and consumers asking for more registers than the
 *     producer gave back (24 / 248 / 248 at 384 threads: the .inc hangs on a GPU; 24 / 240 /
 *     240, the TMA kernels' split, runs);
 *   - a stage handed back to a producer warp before the wgmma reading it was waited for, and
 *     refilled by a bulk copy: caught in the in-order schedule (the copy lands when issued, the
 *     wait's products are performed once no other warp can run). */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cuda_runtime.h>

#include "emu_selftest_util.h"
#include "model/cuda/tma.cuh"
#include "model/cuda/warp_roles.cuh"
#include "model/cuda/wgmma.cuh"

static int g_tma_fails;
#define TCHECK(cond, ...) EMU_CHECK(g_tma_fails, cond, __VA_ARGS__)

/* one 2-d load of map (box 64 x 8 bf16, 1 KiB) at `offset` bytes past a 1024-byte boundary */
__global__ void load_kernel(const __grid_constant__ tma_map map, int offset, int rank3) {
    extern __shared__ uint4 sm[];
    __shared__ uint64_t bar[1];
    unsigned char *dst = tma_smem_align(sm, 1024) + offset;
    mbar_init(bar, 1);
    mbar_init_fence();
    mbar_arrive_expect_tx(bar, 1024);
    if (rank3) tma_load_3d(dst, &map, 0, 0, 0, bar);
    else tma_load_2d(dst, &map, 0, 0, bar);
    mbar_wait(bar, 0);
}
__global__ void counts_kernel(float *x) {
    (void)x;
    named_bar_sync(3, threadIdx.x < 32 ? 64 : 128); /* warp 0 says 64 threads, the others 128 */
}
__global__ void unmet_arrive_kernel(float *x) {
    (void)x;
    if (threadIdx.x < 32) named_bar_arrive(2, 64); /* and warp 1 never syncs */
}
__global__ void few_regs_kernel(float *x) {
    (void)x;
    setmaxnreg_dec<20>();
}
/* 384 threads (168 registers each): the producer gives back down to 24, the two consumers ask
 * for `consumer` each (240 fits the pool exactly, 248 does not) */
__global__ void regs_kernel(float *x, int consumer) {
    if (wgmma_warpgroup() == 0) {
        setmaxnreg_dec<24>();
    } else if (consumer == 248) {
        setmaxnreg_inc<248>();
    } else {
        setmaxnreg_inc<240>();
    }
    (void)x;
}
__global__ void inc_below_kernel(float *x) { /* 160 < the 168 each thread starts with */
    (void)x;
    setmaxnreg_inc<160>();
}
/* warpgroup 0 multiplies a tile and hands it back (empty) before its wait; warp 4 refills it */
__global__ void early_release_kernel(float *x) {
    __shared__ uint4 tile[64 * 16 / 8]; /* 64 x 16 bf16 */
    __shared__ uint64_t bar[2]; /* the tile handed back; the refill landed */
    if (threadIdx.x == 0) {
        mbar_init(&bar[0], 128);
        mbar_init(&bar[1], 1);
        mbar_init_fence();
    }
    __syncthreads();
    if (threadIdx.x >= 128) {
        if (threadIdx.x >= 160) return;
        mbar_wait(&bar[0], 0);
        if (threadIdx.x == 128) {
            mbar_arrive_expect_tx(&bar[1], 16);
            bulk_copy_g2s(tile, x, 16, &bar[1]);
        }
        mbar_wait(&bar[1], 0);
        return;
    }
    float acc[8][4];
    wgmma_fence();
    wgmma_ss<64, 0, 0>(acc, wgmma_desc(tile, 128, 256), wgmma_desc(tile, 128, 256), 0);
    wgmma_commit();
    mbar_arrive(&bar[0]); /* too early: before the wait */
    wgmma_wait<0>();
}

static tma_map g_map; /* of the 512-byte buffer x: 4 rows of 64 bf16, boxes 64 x 8 */
static int make_map(void *x, int swizzle) {
    const uint64_t dims[2] = {64, 4}, strides[1] = {128};
    const uint32_t box[2] = {64, 8};
    char why[256];
    return tma_encode_bf16(&g_map, x, 2, dims, strides, box, swizzle, why, (int)sizeof why);
}
static void launch(int offset, int rank3) {
    cudaFuncSetAttribute(load_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 4096);
    load_kernel<<<1, 32, 4096>>>(g_map, offset, rank3);
}
static void run_not_a_map(void *x) {
    (void)x;
    memset(&g_map, 0, sizeof g_map);
    launch(0, 0);
}
static void run_misaligned(void *x) {
    if (make_map(x, 128)) return;
    launch(128, 0); /* 128-byte aligned, not 1024 */
}
static void run_rank(void *x) {
    if (make_map(x, 128)) return;
    launch(0, 1);
}
static void run_on_a100(void *x) {
    if (make_map(x, 0)) return;
    emu_set_gpu("a100");
    launch(0, 0);
}
static void run_counts(void *x) { counts_kernel<<<1, 128>>>((float *)x); }
static void run_unmet_arrive(void *x) { unmet_arrive_kernel<<<1, 64>>>((float *)x); }
static void run_over_ask(void *x) { regs_kernel<<<1, 384>>>((float *)x, 248); }
static void run_inc_below(void *x) { inc_below_kernel<<<1, 384>>>((float *)x); }
static void run_few_regs(void *x) { few_regs_kernel<<<1, 128>>>((float *)x); }
static void run_early_release(void *x) {
    emu_set_schedule(0);
    early_release_kernel<<<1, 256>>>((float *)x);
}

/* Runs the checks above; returns the number of failed checks. */
int emu_selftest_tma(void) {
    void *x = NULL;
    cudaMalloc(&x, 512);
    const uint64_t dims[2] = {64, 4}, strides[1] = {128};
    const uint32_t narrow[2] = {32, 8}; /* 64-byte rows */
    char why[256] = "";
    TCHECK(tma_encode_bf16(&g_map, x, 2, dims, strides, narrow, 128, why, (int)sizeof why) == -1 &&
               strstr(why, "swizzle"),
           "a 64-byte box row under the 128-byte swizzle: refused (%s)", why);
    TCHECK(make_map(x, 128) == 0, "a valid map refused");
    regs_kernel<<<1, 384>>>((float *)x, 240); /* the TMA kernels' split: fits, runs */
    TCHECK(cudaDeviceSynchronize() == cudaSuccess, "setmaxnreg 24 / 240 / 240 at 384 threads");
    cudaFree(x);
    const emu_abort_case cases[] = {
        {"a TMA load from a map never encoded", "holds no tensor map", run_not_a_map},
        {"a swizzled TMA load 128 bytes past a 1024 boundary", "aligned for the 128-byte swizzle",
         run_misaligned},
        {"a 3-d load of a 2-d map", "with a tensor map of rank", run_rank},
        {"a TMA load on an emulated A100", "an sm_90 instruction", run_on_a100},
        {"one named barrier, two thread counts", "where its phase was begun with", run_counts},
        {"a bar.arrive no bar.sync meets", "no bar.sync met", run_unmet_arrive},
        {"setmaxnreg.dec 20", "24 to 256 registers", run_few_regs},
        {"consumers asking for more registers than the producer gave back", "waits for ever",
         run_over_ask},
        {"a setmaxnreg.inc below the current count", "may only raise", run_inc_below},
        {"a tile refilled before the wgmma reading it was waited for",
         "no wgmma_wait has retired yet", run_early_release},
    };
    g_tma_fails += emu_expect_aborts(cases, sizeof cases / sizeof cases[0]);
    return g_tma_fails;
}
