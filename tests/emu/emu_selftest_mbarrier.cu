/* Self-test of the emulated mbarriers and bulk copies (model/cuda/mbarrier.cuh), part of
 * emu_selftest (the producer/consumer ring of model/cuda/mbarrier_test.cu against the host's
 * sums is test_cuda_mbarrier, which runs on the emulator in every test run as
 * emu_test_cuda_mbarrier):
 *   - a phase completes with all its arrivals and bytes: a barrier of count 2 after its two
 *     arrivals, one that expects bytes once its copy has landed, which the wait makes happen
 *     (and one still missing an arrival never does: below);
 *   - a consumer that reads a stage without waiting for it (the ring's NO_WAIT mode) does not
 *     get away with it, and misuse aborts: a barrier used before mbarrier.init, a bulk copy
 *     completing on a barrier whose mbarrier.init was not fenced (mbar_init_fence), a bulk
 *     copy of a size that is not a multiple of 16 or into device memory, more bytes landing
 *     than the phase expects, a bulk copy landing on bytes a thread wrote without a
 *     fence.proxy.async (and, fenced, the copy's bytes win), the lanes of a warp waiting on
 *     different barriers, a wait that can never complete, a block that ends with copies in
 *     flight (the first and the last under the adversarial schedule, where copies land late). */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cuda_runtime.h>

#include "emu_selftest_util.h"
#include "model/cuda/mbarrier.cuh"
#include "model/cuda/mbarrier_test.h"
#include "model/cuda/wgmma.cuh" /* wgmma_fence_smem: fence.proxy.async */

static int g_mb_fails;
#define MCHECK(cond, ...) EMU_CHECK(g_mb_fails, cond, __VA_ARGS__)

/* phases: out[0] = 1 once the second arrival completes phase 0 (waited for by every thread);
 * out[1] = the copied value, read after the byte-counting phase completed (NaN, as the block's
 * shared memory starts, had it not landed; no thread writes the stage: the copy's write and a
 * thread's are unordered without a fence.proxy.async) */
__global__ void phases_kernel(float *out, const float *src) {
    __shared__ uint64_t bar[2];
    __shared__ float4 stage;
    if (threadIdx.x == 0) {
        mbar_init(&bar[0], 2);
        mbar_init(&bar[1], 1);
        mbar_init_fence();
    }
    __syncthreads();
    if (threadIdx.x / 32 == 1) { /* warp 1: both arrivals on bar[0], then the copy */
        if (threadIdx.x == 32) {
            mbar_arrive(&bar[0]);
            mbar_arrive(&bar[0]);
            mbar_arrive_expect_tx(&bar[1], 16);
            bulk_copy_g2s(&stage, src, 16, &bar[1]);
        }
        return;
    }
    mbar_wait(&bar[0], 0);
    mbar_wait(&bar[1], 0);
    if (threadIdx.x == 0) {
        out[0] = 1.0f;
        out[1] = stage.x;
    }
}

static void test_phases(void) {
    const float h[4] = {42.0f, 0.0f, 0.0f, 0.0f};
    float *src = (float *)emu_upload(h, sizeof h), *out, got[2] = {0.0f, 0.0f};
    cudaMalloc(&out, sizeof got);
    phases_kernel<<<1, 64>>>(out, src);
    cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost);
    MCHECK(got[0] == 1.0f && got[1] == 42.0f, "mbarrier phases: got %g and %g, want 1 and 42",
           (double)got[0], (double)got[1]);
    cudaFree(src);
    cudaFree(out);
}

/* a bulk copy into a stage the thread wrote: fenced (fence 1) or not */
__global__ void overwrite_kernel(float *x, int fence) {
    __shared__ uint64_t bar;
    __shared__ float4 stage;
    stage = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (fence) wgmma_fence_smem();
    mbar_init(&bar, 1);
    mbar_init_fence();
    mbar_arrive_expect_tx(&bar, 16);
    bulk_copy_g2s(&stage, x, 16, &bar);
    mbar_wait(&bar, 0);
    x[4] = stage.x;
}

/* a thread's write, its fence.proxy.async, then a bulk copy over it: the copy's bytes */
static void test_fenced_overwrite(void) {
    const float h[8] = {7.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float *x = (float *)emu_upload(h, sizeof h), got = 0.0f;
    overwrite_kernel<<<1, 1>>>(x, 1);
    cudaMemcpy(&got, x + 4, sizeof got, cudaMemcpyDeviceToHost);
    MCHECK(got == 7.0f, "a fenced stage overwritten by a bulk copy: got %g, want 7", (double)got);
    cudaFree(x);
}

/* ---- misuses: each must abort in a child process ---- */
static float g_ring_out[128 * 4];
static float g_ring_in[64 * 32 * 4];
static void run_no_wait(void *x) { /* bulk copies land late only under the adversarial order */
    (void)x;
    emu_set_schedule(1);
    cuda_mbarrier_test_ring(g_ring_out, g_ring_in, 4, 2, MBAR_TEST_NO_WAIT);
}
__global__ void uninit_kernel(float *x) {
    __shared__ uint64_t bar;
    (void)x;
    mbar_arrive(&bar);
}
__global__ void bad_copy_kernel(float *x, int bytes, int to_global) {
    __shared__ uint64_t bar;
    __shared__ float4 stage[4];
    mbar_init(&bar, 1);
    mbar_init_fence();
    mbar_arrive_expect_tx(&bar, (unsigned)bytes);
    bulk_copy_g2s(to_global ? (void *)(x + 64) : (void *)stage, x, (unsigned)bytes, &bar);
    mbar_wait(&bar, 0);
}
__global__ void extra_bytes_kernel(float *x) {
    __shared__ uint64_t bar;
    __shared__ float4 stage[4];
    mbar_init(&bar, 1);
    mbar_init_fence();
    mbar_arrive_expect_tx(&bar, 16);
    bulk_copy_g2s(stage, x, 32, &bar);
    mbar_wait(&bar, 0);
}
__global__ void split_wait_kernel(float *x) {
    __shared__ uint64_t bar[2];
    (void)x;
    if (threadIdx.x == 0) {
        mbar_init(&bar[0], 1);
        mbar_init(&bar[1], 1);
    }
    __syncthreads();
    mbar_wait(&bar[threadIdx.x & 1], 0);
}
__global__ void never_kernel(float *x) {
    __shared__ uint64_t bar;
    (void)x;
    if (threadIdx.x == 0) mbar_init(&bar, 33);
    __syncthreads();
    if (threadIdx.x >= 32) { /* warp 1: 32 of the 33 arrivals */
        mbar_arrive(&bar);
        return;
    }
    mbar_wait(&bar, 0);
}
__global__ void in_flight_kernel(float *x) {
    __shared__ uint64_t bar;
    __shared__ float4 stage;
    mbar_init(&bar, 1);
    mbar_init_fence();
    mbar_arrive_expect_tx(&bar, 16);
    bulk_copy_g2s(&stage, x, 16, &bar); /* and never waited for */
}
__global__ void unpublished_kernel(float *x) { /* mbarrier.init without its fence */
    __shared__ uint64_t bar;
    __shared__ float4 stage;
    mbar_init(&bar, 1);
    mbar_arrive_expect_tx(&bar, 16);
    bulk_copy_g2s(&stage, x, 16, &bar);
    mbar_wait(&bar, 0);
}
static void run_uninit(void *x) { uninit_kernel<<<1, 1>>>((float *)x); }
static void run_bad_size(void *x) { bad_copy_kernel<<<1, 1>>>((float *)x, 24, 0); }
static void run_to_global(void *x) { bad_copy_kernel<<<1, 1>>>((float *)x, 16, 1); }
static void run_extra_bytes(void *x) { extra_bytes_kernel<<<1, 1>>>((float *)x); }
static void run_split_wait(void *x) { split_wait_kernel<<<1, 32>>>((float *)x); }
static void run_never(void *x) { never_kernel<<<1, 64>>>((float *)x); }
static void run_unpublished(void *x) { unpublished_kernel<<<1, 1>>>((float *)x); }
static void run_overwrite(void *x) { overwrite_kernel<<<1, 1>>>((float *)x, 0); }
static void run_in_flight(void *x) {
    emu_set_schedule(1); /* in order, the copy lands at once */
    in_flight_kernel<<<1, 1>>>((float *)x);
}
static void run_bulk_on_a100(void *x) { /* a valid copy, on a compute capability 8.0 device */
    emu_set_gpu("a100");
    bad_copy_kernel<<<1, 1>>>((float *)x, 16, 0);
}

/* Runs the checks above; returns the number of failed checks. */
int emu_selftest_mbarrier(void) {
    test_phases();
    test_fenced_overwrite();
    g_mb_fails += emu_expect_abort_saying("consumers reading stages without waiting", "mbarrier",
                                          run_no_wait);
    g_mb_fails += emu_expect_abort_saying("mbarrier arrive before mbarrier.init",
                                          "which no mbarrier.init", run_uninit);
    g_mb_fails += emu_expect_abort_saying("bulk copy of 24 bytes", "cp.async.bulk", run_bad_size);
    g_mb_fails +=
        emu_expect_abort_saying("bulk copy into device memory", "cp.async.bulk", run_to_global);
    g_mb_fails += emu_expect_abort_saying("32 bytes landing on a phase that expects 16",
                                          "more landed than its phase expected", run_extra_bytes);
    g_mb_fails += emu_expect_abort_saying("lanes of a warp waiting on two barriers",
                                          "different mbarrier phases", run_split_wait);
    g_mb_fails += emu_expect_abort_saying("a wait with an arrival missing for ever",
                                          "never completes", run_never);
    g_mb_fails += emu_expect_abort_saying("a block ending with a bulk copy in flight",
                                          "bulk copies in flight", run_in_flight);
    g_mb_fails += emu_expect_abort_saying("a bulk copy on a barrier whose init was not fenced",
                                          "has not published to the async proxy",
                                          run_unpublished);
    g_mb_fails += emu_expect_abort_saying("a bulk copy onto bytes a thread wrote, not fenced",
                                          "after the block's last fence.proxy.async",
                                          run_overwrite);
    g_mb_fails += emu_expect_abort_saying("a bulk copy on an emulated A100",
                                          "an sm_90 instruction", run_bulk_on_a100);
    return g_mb_fails;
}
