/* The test kernel of mbarrier_test.h: a producer warp and four consumer warps around a ring of
 * shared-memory stages, each with a full and an empty barrier (mbarrier.cuh). Run on the legacy
 * default stream with synchronous copies: a test path, not an op of the backend. */
#include <stdint.h>
#include <stdio.h>

#include "model/cuda/cp_async.cuh"
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/device_code_probe.cuh"
#include "model/cuda/mbarrier.cuh"
#include "model/cuda/mbarrier_test.h"

#define RING_ROWS 64
#define RING_COLS 32 /* floats: a row is 128 bytes */
#define RING_TILE (RING_ROWS * RING_COLS)
#define RING_CONSUMERS 4 /* warps */

__global__ void mbarrier_test_ring_kernel(float *out, const float *in, int n_tiles, int stages,
                                          int mode) {
    extern __shared__ uint4 ring_smem[];
    float *tiles = (float *)ring_smem; /* stages x tile */
    uint64_t *full = (uint64_t *)(tiles + (size_t)stages * RING_TILE), *empty = full + stages;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (threadIdx.x == 0) {
        for (int s = 0; s < stages; s++) {
            mbar_init(&full[s], mode == MBAR_TEST_CP_ASYNC ? 32 : 1);
            mbar_init(&empty[s], 32 * RING_CONSUMERS);
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (warp == 0) { /* the producer */
        for (int t = 0; t < n_tiles; t++) {
            const int s = t % stages, round = t / stages;
            if (round > 0)
                mbar_wait(&empty[s], (round - 1) & 1); /* the consumers are done */
            float *dst = tiles + (size_t)s * RING_TILE;
            const float *src = in + (size_t)t * RING_TILE;
            if (mode == MBAR_TEST_CP_ASYNC) {
                for (int c = lane; c < RING_TILE / 4; c += 32)
                    cp_async16(dst + 4 * c, src + 4 * c, 16);
                cp_async_mbar_arrive(&full[s]);
            } else {
                if (lane == 0)
                    mbar_arrive_expect_tx(&full[s], RING_TILE * sizeof(float));
                __syncwarp();
                for (int r = lane; r < RING_ROWS; r += 32)
                    bulk_copy_g2s(dst + r * RING_COLS, src + r * RING_COLS,
                                  RING_COLS * sizeof(float), &full[s]);
            }
        }
        return;
    }
    const int w = warp - 1; /* a consumer: rows 16w..16w+15, column lane */
    for (int t = 0; t < n_tiles; t++) {
        const int s = t % stages;
        if (mode != MBAR_TEST_NO_WAIT)
            mbar_wait(&full[s], (t / stages) & 1);
        const float *tile = tiles + (size_t)s * RING_TILE;
        float sum = 0.0f;
        for (int r = 16 * w; r < 16 * w + 16; r++)
            sum += tile[r * RING_COLS + lane];
        out[((size_t)t * RING_CONSUMERS + w) * 32 + lane] = sum;
        mbar_arrive(&empty[s]);
    }
}

/* 1 where the device code that runs was built for sm_90 or later (always under the emulator) */
__global__ void mbarrier_test_flag_kernel(int *flag) {
#if defined(DT_CUDA_EMULATOR) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
    *flag = 1;
#else
    *flag = 0;
#endif
}

extern "C" int cuda_mbarrier_test_supported(char *why, int len) {
    cudaDeviceProp p;
    if (!probe_device_props(&p, why, len)) return 0;
    if (p.major < 9) {
        snprintf(why, (size_t)len, "compute capability %d.%d: the bulk copies need 9.0", p.major,
                 p.minor);
        return 0;
    }
    const int flag = probe_device_flag(mbarrier_test_flag_kernel, why, len);
    if (flag == 0) snprintf(why, (size_t)len, "the build's device code is older than sm_90");
    return flag == 1;
}

extern "C" int cuda_mbarrier_test_ring(float *out, const float *in, int n_tiles, int stages,
                                       int mode) {
    if (n_tiles < 1 || stages < 1 || stages > 4 || mode < MBAR_TEST_BULK ||
        mode > MBAR_TEST_NO_WAIT)
        return -1;
    const size_t n_in = (size_t)n_tiles * RING_TILE, n_out = (size_t)n_tiles * RING_CONSUMERS * 32;
    const size_t smem = (size_t)stages * (RING_TILE * sizeof(float) + 2 * sizeof(uint64_t));
    float *d_in = NULL, *d_out = NULL;
    CUDA_CHECK(cudaMalloc(&d_in, n_in * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&d_out, n_out * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(d_in, in, n_in * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(d_out, 0xff, n_out * sizeof(float))); /* NaN: an unwritten sum fails */
    CUDA_CHECK(cudaFuncSetAttribute(mbarrier_test_ring_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    mbarrier_test_ring_kernel<<<1, 32 * (1 + RING_CONSUMERS), smem>>>(d_out, d_in, n_tiles, stages,
                                                                      mode);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(out, d_out, n_out * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(d_in));
    CUDA_CHECK(cudaFree(d_out));
    return 0;
}
