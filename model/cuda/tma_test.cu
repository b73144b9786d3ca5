/* The test kernels of tma_test.h: TMA loads (tma.cuh) into 1024-byte aligned shared memory, the
 * swizzled wgmma layouts that read them (wgmma.cuh) and an FA3-style warp-specialised pipeline
 * (warp_roles.cuh, mbarrier.cuh). Run on the legacy default stream with synchronous copies: a
 * test path, not an op of the backend. */
#include <stdint.h>
#include <stdio.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/mbarrier.cuh"
#include "model/cuda/tma.cuh"
#include "model/cuda/tma_test.h"
#include "model/cuda/warp_roles.cuh"
#include "model/cuda/wgmma.cuh"
#include "model/cuda/wgmma_test.h"
#include "model/cuda/wgmma_test_layout.cuh" /* store_d */

#define TMA_TEST_ALIGN 1024u /* the 128-byte swizzle's repeat */

/* one box, by thread 0, waited for by every warp; then the raw bytes out */
__global__ void tma_test_layout_kernel(uint16_t *out, const __grid_constant__ tma_map map,
                                       int rank, int c0, int c1, int c2, int elems) {
    extern __shared__ uint4 tma_test_smem[];
    __shared__ uint64_t bar[1];
    uint16_t *box = (uint16_t *)tma_smem_align(tma_test_smem, TMA_TEST_ALIGN);
    if (threadIdx.x == 0) {
        mbar_init(bar, 1);
        mbar_init_fence();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        mbar_arrive_expect_tx(bar, (unsigned)(2 * elems));
        if (rank == 2) tma_load_2d(box, &map, c0, c1, bar);
        else tma_load_3d(box, &map, c0, c1, c2, bar);
    }
    mbar_wait(bar, 0);
    for (int e = threadIdx.x; e < elems; e += blockDim.x) out[e] = box[e];
}

/* d = a b with swizzle S (tma_test.h): A's K = 64 is 128 / S boxes of S / 2 columns, each 64 rows
 * of S bytes; B K-major likewise with N rows, B N-major 2 N / S boxes of S / 2 columns, 64 rows */
template <int N, int TB>
__global__ void tma_test_product_kernel(float *d, const __grid_constant__ tma_map map_a,
                                        const __grid_constant__ tma_map map_b, int swizzle) {
    extern __shared__ uint4 tma_test_smem[];
    __shared__ uint64_t bar[1];
    unsigned char *sa = tma_smem_align(tma_test_smem, TMA_TEST_ALIGN), *sb = sa + 64 * 128;
    const int S = swizzle, W = S / 2, i = threadIdx.x;
    if (i == 0) {
        mbar_init(bar, 1);
        mbar_init_fence();
    }
    __syncthreads();
    if (i == 0) {
        mbar_arrive_expect_tx(bar, 2u * 64 * (64 + N));
        for (int j = 0; j < 64 / W; j++) tma_load_2d(sa + j * 64 * S, &map_a, j * W, 0, bar);
        if (TB)
            for (int j = 0; j < N / W; j++) tma_load_2d(sb + j * 64 * S, &map_b, j * W, 0, bar);
        else
            for (int j = 0; j < 64 / W; j++) tma_load_2d(sb + j * N * S, &map_b, j * W, 0, bar);
    }
    mbar_wait(bar, 0);
    float acc[N / 8][4];
    wgmma_fence();
    for (int kk = 0; kk < 4; kk++) {
        const int j = 32 * kk / S, in_row = 32 * kk % S; /* the k16 step's box, its bytes in */
        const uint64_t da = wgmma_desc_swizzled(sa + j * 64 * S + in_row, 16, 8 * S, S);
        const uint64_t db = TB ? wgmma_desc_swizzled(sb + 16 * kk * S, 64 * S, 8 * S, S)
                               : wgmma_desc_swizzled(sb + j * N * S + in_row, 16, 8 * S, S);
        wgmma_ss<N, 0, TB>(acc, da, db, kk > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    store_d<N>(d, acc, i);
}

#define PIPE_A_BYTES (128 * 128) /* a's tile: 128 rows x 64 k */
#define PIPE_STAGE (PIPE_A_BYTES + 64 * 128)
#define PIPE_TURN 1 /* named barriers PIPE_TURN + c: consumer c's turn to issue */

__global__ void __launch_bounds__(384, 1)
tma_test_pipeline_kernel(float *d, const __grid_constant__ tma_map map_a,
                         const __grid_constant__ tma_map map_bt, int k_tiles, int stages) {
    extern __shared__ uint4 tma_test_smem[];
    unsigned char *ring = tma_smem_align(tma_test_smem, TMA_TEST_ALIGN);
    uint64_t *full = (uint64_t *)(ring + stages * PIPE_STAGE), *empty = full + stages;
    const int wg = threadIdx.x / 128, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (threadIdx.x == 0) {
        for (int s = 0; s < stages; s++) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], 256); /* every consumer thread hands the stage back */
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (wg == 0) { /* the producer: one warp, one thread issuing */
        setmaxnreg_dec<40>();
        if (warp != 0) return;
        for (int t = 0; t < k_tiles; t++) {
            const int s = t % stages, round = t / stages;
            if (round > 0) mbar_wait(&empty[s], (round - 1) & 1);
            if (lane == 0) {
                unsigned char *st = ring + s * PIPE_STAGE;
                mbar_arrive_expect_tx(&full[s], PIPE_STAGE);
                tma_load_2d(st, &map_a, 64 * t, 0, &full[s]);
                tma_load_2d(st + PIPE_A_BYTES, &map_bt, 64 * t, 0, &full[s]);
            }
            __syncwarp();
        }
        return;
    }

    setmaxnreg_inc<232>();
    const int c = wg - 1;
    float acc[8][4];
    if (c == 1) named_bar_arrive(PIPE_TURN, 256); /* consumer 0 issues first */
    for (int t = 0; t < k_tiles; t++) {
        const int s = t % stages;
        mbar_wait(&full[s], (t / stages) & 1);
        const unsigned char *st = ring + s * PIPE_STAGE;
        named_bar_sync(PIPE_TURN + c, 256);
        wgmma_fence();
        for (int kk = 0; kk < 4; kk++) {
            const uint64_t da = wgmma_desc_swizzled(st + c * 64 * 128 + 32 * kk, 16, 1024, 128);
            const uint64_t db = wgmma_desc_swizzled(st + PIPE_A_BYTES + 32 * kk, 16, 1024, 128);
            wgmma_ss<64, 0, 0>(acc, da, db, t > 0 || kk > 0);
        }
        wgmma_commit();
        if (c == 0 || t + 1 < k_tiles) /* the other's turn; the last one has no taker */
            named_bar_arrive(PIPE_TURN + 1 - c, 256);
        wgmma_wait<0>();
        mbar_arrive(&empty[s]);
    }
    store_d<64>(d + c * 64 * 64, acc, threadIdx.x % 128);
}

/* the same device and build as the wgmma test kernels need: sm_90a code (wgmma, setmaxnreg) on
 * a compute capability 9.0 device */
extern "C" int cuda_tma_test_supported(char *why, int len) {
    return cuda_wgmma_test_supported(why, len);
}

/* a device copy of n bf16 values */
static uint16_t *upload(const uint16_t *h, size_t n) {
    uint16_t *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, n * sizeof(uint16_t)));
    CUDA_CHECK(cudaMemcpy(p, h, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    return p;
}

/* a map of a dense rows x cols bf16 matrix, boxes of box_cols x box_rows */
static int matrix_map(tma_map *m, const uint16_t *dev, int rows, int cols, int box_cols,
                      int box_rows, int swizzle) {
    const uint64_t dims[2] = {(uint64_t)cols, (uint64_t)rows}, strides[1] = {2ull * cols};
    const uint32_t box[2] = {(uint32_t)box_cols, (uint32_t)box_rows};
    char why[256];
    if (tma_encode_bf16(m, dev, 2, dims, strides, box, swizzle, why, (int)sizeof why)) {
        fprintf(stderr, "tma_test: %s\n", why);
        return -1;
    }
    return 0;
}

template <typename K> static void allow_smem(K kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)bytes));
}

extern "C" int cuda_tma_test_layout(uint16_t *out, const uint16_t *in, int rank,
                                    const uint64_t *dims, const uint32_t *box, const int *coords,
                                    int swizzle) {
    if (rank != 2 && rank != 3) return -1;
    size_t n = 1, elems = 1;
    uint64_t strides[2];
    for (int i = 0; i < rank; i++) {
        if (i > 0) strides[i - 1] = 2 * n;
        n *= dims[i];
        elems *= box[i];
    }
    uint16_t *d_in = upload(in, n), *d_out = NULL;
    tma_map map;
    char why[256];
    if (tma_encode_bf16(&map, d_in, rank, dims, strides, box, swizzle, why, (int)sizeof why)) {
        CUDA_CHECK(cudaFree(d_in));
        return -1;
    }
    CUDA_CHECK(cudaMalloc(&d_out, elems * sizeof(uint16_t)));
    const size_t smem = 2 * elems + TMA_TEST_ALIGN;
    allow_smem(tma_test_layout_kernel, smem);
    tma_test_layout_kernel<<<1, 128, smem>>>(d_out, map, rank, coords[0], coords[1],
                                             rank == 3 ? coords[2] : 0, (int)elems);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(out, d_out, elems * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(d_in));
    CUDA_CHECK(cudaFree(d_out));
    return 0;
}

template <int N, int TB>
static void product_launch(float *d, const tma_map &ma, const tma_map &mb, int swizzle) {
    const size_t smem = 2 * 64 * (64 + N) + TMA_TEST_ALIGN;
    auto kernel = tma_test_product_kernel<N, TB>;
    allow_smem(kernel, smem);
    kernel<<<1, 128, smem>>>(d, ma, mb, swizzle);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" int cuda_tma_test_product(float *d, const uint16_t *a, const uint16_t *bt,
                                     const uint16_t *b, int n, int swizzle, int trans_b) {
    if ((n != 64 && n != 128) || (swizzle != 32 && swizzle != 64 && swizzle != 128)) return -1;
    const int w = swizzle / 2;
    uint16_t *d_a = upload(a, 64 * 64), *d_b = upload(trans_b ? b : bt, 64 * (size_t)n);
    tma_map ma, mb;
    int rc = matrix_map(&ma, d_a, 64, 64, w, 64, swizzle);
    if (!rc) rc = trans_b ? matrix_map(&mb, d_b, 64, n, w, 64, swizzle)
                          : matrix_map(&mb, d_b, n, 64, w, n, swizzle);
    float *d_d = NULL;
    if (!rc) {
        CUDA_CHECK(cudaMalloc(&d_d, sizeof(float) * 64 * n));
        if (n == 64 && trans_b) product_launch<64, 1>(d_d, ma, mb, swizzle);
        else if (n == 64) product_launch<64, 0>(d_d, ma, mb, swizzle);
        else if (trans_b) product_launch<128, 1>(d_d, ma, mb, swizzle);
        else product_launch<128, 0>(d_d, ma, mb, swizzle);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(d, d_d, sizeof(float) * 64 * n, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaFree(d_d));
    }
    CUDA_CHECK(cudaFree(d_a));
    CUDA_CHECK(cudaFree(d_b));
    return rc;
}

extern "C" int cuda_tma_test_pipeline(float *d, const uint16_t *a, const uint16_t *bt,
                                      int k_tiles, int stages) {
    if (k_tiles < 1 || k_tiles > 16 || stages < 1 || stages > 4) return -1;
    const int k = 64 * k_tiles;
    uint16_t *d_a = upload(a, 128 * (size_t)k), *d_bt = upload(bt, 64 * (size_t)k);
    tma_map ma, mb;
    int rc = matrix_map(&ma, d_a, 128, k, 64, 128, 128);
    if (!rc) rc = matrix_map(&mb, d_bt, 64, k, 64, 64, 128);
    float *d_d = NULL;
    if (!rc) {
        const size_t smem = (size_t)stages * (PIPE_STAGE + 16) + TMA_TEST_ALIGN;
        CUDA_CHECK(cudaMalloc(&d_d, sizeof(float) * 128 * 64));
        allow_smem(tma_test_pipeline_kernel, smem);
        tma_test_pipeline_kernel<<<1, 384, smem>>>(d_d, ma, mb, k_tiles, stages);
        CUDA_CHECK(cudaGetLastError());
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(d, d_d, sizeof(float) * 128 * 64, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaFree(d_d));
    }
    CUDA_CHECK(cudaFree(d_a));
    CUDA_CHECK(cudaFree(d_bt));
    return rc;
}
