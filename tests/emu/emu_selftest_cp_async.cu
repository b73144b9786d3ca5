/* Self-test of the emulated asynchronous copies (model/cuda/cp_async.cuh, reached as the fused
 * attention reaches them), part of emu_selftest:
 *   - cp_async16 with src-size 16 copies the 16 bytes, with src-size 0 zero-fills them (over
 *     shared memory first set to 0xff), after commit, wait and a barrier as a kernel uses them;
 *   - a two-stage loop like the flash kernels' (the next stage issued after the barrier that
 *     publishes the current one) moves every tile to the right place;
 *   - misuse aborts: a destination in device memory, a destination or a source off 16 bytes, a
 *     src-size other than 0 or 16;
 *   - the adversarial schedule (emu_set_schedule, cuda_runtime.h): copies land at the wait that
 *     retires their group, not before (two groups, wait_group 1 then 0), and a barrier phase's
 *     warps run last to first, so a read of another warp's write without a barrier between sees
 *     the write under one schedule and not under the other (the examples above pass under both);
 *     DT_EMU_SCHEDULE with a value it does not know aborts. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "emu_selftest_util.h"
#include "model/cuda/cp_async.cuh"

static int g_cp_fails;
#define CCHECK(cond, ...) EMU_CHECK(g_cp_fails, cond, __VA_ARGS__)

/* chunks [0, n_valid) of src to out through shared memory, the others as zero chunks */
__global__ void copy_kernel(uint4 *out, const uint4 *src, int n_valid) {
    __shared__ uint4 tile[64];
    const int i = threadIdx.x;
    tile[i] = make_uint4(~0u, ~0u, ~0u, ~0u);
    __syncthreads();
    cp_async16(&tile[i], i < n_valid ? src + i : src, i < n_valid ? 16 : 0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    out[i] = tile[63 - i]; /* another thread's chunk: visible after the barrier */
}

/* n_tiles tiles of 32 chunks through two stages; out[t*32 + i] = tile t's chunk i */
__global__ void stages_kernel(uint4 *out, const uint4 *src, int n_tiles) {
    __shared__ uint4 st[2][32];
    const int i = threadIdx.x;
    cp_async16(&st[0][i], src + i, 16);
    cp_async_commit();
    for (int t = 0; t < n_tiles; t++) {
        cp_async_wait<0>();
        __syncthreads();
        if (t + 1 < n_tiles) {
            cp_async16(&st[(t + 1) & 1][i], src + 32 * (t + 1) + i, 16);
            cp_async_commit();
        }
        out[32 * t + i] = st[t & 1][31 - i];
    }
}

static void test_copy(void) {
    uint4 h[64], got[64];
    for (int i = 0; i < 64; i++) h[i] = make_uint4(4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4);
    uint4 *src = emu_upload(h, sizeof h), *out;
    cudaMalloc(&out, sizeof got);
    copy_kernel<<<1, 64>>>(out, src, 40);
    cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int i = 0; i < 64; i++) {
        const int c = 63 - i;
        const uint4 want = c < 40 ? h[c] : make_uint4(0u, 0u, 0u, 0u);
        bad += memcmp(&got[i], &want, sizeof want) != 0;
    }
    CCHECK(bad == 0, "cp_async16: %d of 64 chunks wrong (40 copied, 24 zero-filled)", bad);
    cudaFree(src);
    cudaFree(out);
}

static void test_stages(void) {
    enum { TILES = 5, N = 32 * TILES };
    uint4 h[N], got[N];
    for (int i = 0; i < N; i++) h[i] = make_uint4(i, 7 * i, 13 * i, ~i);
    uint4 *src = emu_upload(h, sizeof h), *out;
    cudaMalloc(&out, sizeof got);
    stages_kernel<<<1, 32>>>(out, src, TILES);
    cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int t = 0; t < TILES; t++)
        for (int i = 0; i < 32; i++)
            bad += memcmp(&got[32 * t + i], &h[32 * t + 31 - i], sizeof(uint4)) != 0;
    CCHECK(bad == 0, "two-stage cp.async loop: %d of %d chunks wrong", bad, N);
    cudaFree(src);
    cudaFree(out);
}

/* Under the adversarial schedule: got[0..5] = the two chunks' first words before any wait, after
 * wait_group 1 (of two committed groups) and after wait_group 0, for the chunks of groups 1 and
 * 2; shared memory starts as 0xff bytes */
__global__ void late_kernel(unsigned *got, const uint4 *src) {
    __shared__ uint4 tile[2];
    cp_async16(&tile[0], src, 16);
    cp_async_commit();
    cp_async16(&tile[1], src + 1, 16);
    cp_async_commit();
    got[0] = tile[0].x;
    got[1] = tile[1].x;
    cp_async_wait<1>();
    got[2] = tile[0].x;
    got[3] = tile[1].x;
    cp_async_wait<0>();
    got[4] = tile[0].x;
    got[5] = tile[1].x;
}

/* Two warps, no barrier: warp 0 writes, warp 1 reads (a race on a GPU) */
__global__ void race_kernel(unsigned *got) {
    __shared__ unsigned x;
    if (threadIdx.x == 0) x = 7u;
    if (threadIdx.x == 32) got[0] = x;
}

static void test_schedules(void) {
    const uint4 h[2] = {make_uint4(11, 12, 13, 14), make_uint4(21, 22, 23, 24)};
    uint4 *src = emu_upload(h, sizeof h);
    unsigned *out, got[6];
    cudaMalloc(&out, sizeof got);
    emu_set_schedule(1);
    CCHECK(emu_schedule_adversarial() == 1, "emu_set_schedule(1): not adversarial");
    late_kernel<<<1, 1>>>(out, src);
    cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost);
    const unsigned want[6] = {~0u, ~0u, 11u, ~0u, 11u, 21u};
    CCHECK(memcmp(got, want, sizeof want) == 0,
           "adversarial cp.async: read %x %x, after wait_group 1 %x %x, after 0 %x %x (expected "
           "ffffffff ffffffff, b ffffffff, b 15)", got[0], got[1], got[2], got[3], got[4],
           got[5]);
    race_kernel<<<1, 64>>>(out);
    cudaMemcpy(got, out, sizeof(unsigned), cudaMemcpyDeviceToHost);
    CCHECK(got[0] == ~0u, "adversarial schedule: warp 1 read %x before warp 0 wrote", got[0]);
    test_copy(); /* the correct kernels give the same results */
    test_stages();
    emu_set_schedule(0);
    race_kernel<<<1, 64>>>(out);
    cudaMemcpy(got, out, sizeof(unsigned), cudaMemcpyDeviceToHost);
    CCHECK(got[0] == 7u, "in-order schedule: warp 1 read %x after warp 0 wrote 7", got[0]);
    emu_set_schedule(-1);
    cudaFree(src);
    cudaFree(out);
}

static void run_bad_schedule(void *x) {
    setenv("DT_EMU_SCHEDULE", "reverse", 1);
    emu_set_schedule(-1); /* read the environment again */
    race_kernel<<<1, 64>>>((unsigned *)x);
}

/* ---- misuses: each must abort in a child process ---- */
__global__ void cp_global_dst_kernel(uint4 *x) { cp_async16(x + 8, x, 16); }
__global__ void cp_misaligned_dst_kernel(uint4 *x) {
    __shared__ uint4 tile[4];
    cp_async16((char *)tile + 8, x, 16);
}
__global__ void cp_misaligned_src_kernel(uint4 *x) {
    __shared__ uint4 tile[4];
    cp_async16(tile, (const char *)x + 4, 16);
}
__global__ void cp_bad_size_kernel(uint4 *x) {
    __shared__ uint4 tile[4];
    cp_async16(tile, x, 8);
}
static void run_global_dst(void *x) { cp_global_dst_kernel<<<1, 1>>>((uint4 *)x); }
static void run_misaligned_dst(void *x) { cp_misaligned_dst_kernel<<<1, 1>>>((uint4 *)x); }
static void run_misaligned_src(void *x) { cp_misaligned_src_kernel<<<1, 1>>>((uint4 *)x); }
static void run_bad_size(void *x) { cp_bad_size_kernel<<<1, 1>>>((uint4 *)x); }

/* Runs the checks above; returns the number of failed checks. */
int emu_selftest_cp_async(void) {
    test_copy();
    test_stages();
    test_schedules();
    g_cp_fails += emu_expect_abort_saying("DT_EMU_SCHEDULE=reverse", "DT_EMU_SCHEDULE",
                                          run_bad_schedule);
    g_cp_fails += emu_expect_death("cp.async to device memory", SIGABRT, run_global_dst);
    g_cp_fails +=
        emu_expect_death("cp.async destination not 16-byte aligned", SIGABRT, run_misaligned_dst);
    g_cp_fails +=
        emu_expect_death("cp.async source not 16-byte aligned", SIGABRT, run_misaligned_src);
    g_cp_fails += emu_expect_death("cp.async src-size 8", SIGABRT, run_bad_size);
    return g_cp_fails;
}
