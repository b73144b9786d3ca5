/* The test kernels of wgmma_test.h: operands staged in shared memory as the sm_90 kernels stage
 * them (wgmma_tile_at) or in padded layouts written by the PTX ISA's formula, one product per
 * warpgroup, the accumulators stored by the fragment layout wgmma.cuh documents. Run on the
 * legacy default stream with synchronous copies: a test path, not an op of the backend. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "model/cuda/cuda_common.cuh"
#include "model/cuda/device_code_probe.cuh"
#include "model/cuda/wgmma.cuh"
#include "model/cuda/wgmma_test.h"
#include "model/cuda/wgmma_test_layout.cuh"

/* a (64 x 16) and b (16 x MN) as their layouts place them in sa, sb, the gaps NaN; by the
 * warpgroup's thread i; the caller publishes them (fence, barrier) */
template <int N>
__device__ static void stage(uint16_t *sa, uint16_t *sb, const uint16_t *a, const uint16_t *b,
                             int trans_a, int trans_b, int padded, int i) {
    for (int e = i; e < stage_elems(64) + stage_elems(N); e += 128) sa[e] = 0xffffu;
    __syncthreads();
    for (int e = i; e < 64 * 16; e += 128) sa[stage_at<64>(trans_a, padded, e / 16, e % 16)] = a[e];
    for (int e = i; e < 16 * N; e += 128) sb[stage_at<N>(trans_b, padded, e % N, e / N)] = b[e];
}

/* warpgroup w: d_w = a_w b_w + (accumulate ? c_w : 0) (wgmma_test.h) */
template <int N, int A_SMEM, int TA, int TB>
__global__ void wgmma_test_product_kernel(float *d, const uint16_t *a, const uint16_t *b,
                                          const float *c, int padded_mask, int acc_mask) {
    extern __shared__ uint4 wgmma_test_smem[];
    const int w = threadIdx.x / 128, i = threadIdx.x % 128;
    const int padded = padded_mask >> w & 1, acc = acc_mask >> w & 1;
    uint16_t *sa = (uint16_t *)wgmma_test_smem + w * (stage_elems(64) + stage_elems(N));
    uint16_t *sb = sa + stage_elems(64);
    a += w * 64 * 16;
    b += w * 16 * N;
    c += w * 64 * N;
    d += w * 64 * N;
    stage<N>(sa, sb, a, b, TA, TB, padded, i);
    wgmma_fence_smem();
    __syncthreads();
    float acc_d[N / 8][4];
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc_d[nt][e] = NAN; /* accumulate 0 must not read it */
    if (acc) load_d<N>(acc_d, c, i);
    uint32_t ra[4];
    load_a_fragment(ra, a, i);
    const uint64_t db = wgmma_desc(sb, stage_lbo(N, TB, padded), stage_sbo(TB, padded));
    const uint64_t da = wgmma_desc(sa, stage_lbo(64, TA, padded), stage_sbo(TA, padded));
    wgmma_fence();
    if (A_SMEM) wgmma_ss<N, TA, TB>(acc_d, da, db, acc);
    else wgmma_rs<N, TB>(acc_d, ra, db, acc);
    wgmma_commit();
    wgmma_wait<0>();
    store_d<N>(d, acc_d, i);
}

/* DT_WGMMA_ASM of the device code that runs (1 under the emulator, whose wgmma is software) */
__global__ void wgmma_test_flag_kernel(int *flag) {
#if DT_WGMMA_ASM || defined(DT_CUDA_EMULATOR)
    *flag = 1;
#else
    *flag = 0;
#endif
}

extern "C" int cuda_wgmma_test_supported(char *why, int len) {
    cudaDeviceProp p;
    if (!probe_device_props(&p, why, len)) return 0;
    if (p.major != 9 || p.minor != 0) {
        snprintf(why, (size_t)len, "compute capability %d.%d: wgmma needs 9.0 (sm_90a)", p.major,
                 p.minor);
        return 0;
    }
    const int flag = probe_device_flag(wgmma_test_flag_kernel, why, len);
    if (flag == 0)
        snprintf(why, (size_t)len, "the build's device code for sm_90 lacks the sm_90a features "
                 "(wgmma): build with CMAKE_CUDA_ARCHITECTURES=90a");
    return flag == 1;
}

typedef void (*wgmma_test_fn)(float *, const uint16_t *, const uint16_t *, const float *, int,
                              int);

template <int N> static wgmma_test_fn product_for(int a_smem, int ta, int tb) {
    if (!a_smem) return tb ? wgmma_test_product_kernel<N, 0, 0, 1>
                           : wgmma_test_product_kernel<N, 0, 0, 0>;
    if (!ta) return tb ? wgmma_test_product_kernel<N, 1, 0, 1>
                       : wgmma_test_product_kernel<N, 1, 0, 0>;
    return tb ? wgmma_test_product_kernel<N, 1, 1, 1> : wgmma_test_product_kernel<N, 1, 1, 0>;
}

/* a device copy of `bytes` of host memory */
static void *upload(const void *host, size_t bytes) {
    void *dev = NULL;
    CUDA_CHECK(cudaMalloc(&dev, bytes));
    CUDA_CHECK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    return dev;
}

extern "C" int cuda_wgmma_test_product(float *d, const uint16_t *a, const uint16_t *b,
                                       const float *c, int n, int nw, int a_smem, int trans_a,
                                       int trans_b, int padded_mask, int acc_mask) {
    wgmma_test_fn kern = NULL;
    const int ta = trans_a != 0, tb = trans_b != 0;
    switch (n) {
    case 8: kern = product_for<8>(a_smem, ta, tb); break;
    case 16: kern = product_for<16>(a_smem, ta, tb); break;
    case 32: kern = product_for<32>(a_smem, ta, tb); break;
    case 48: kern = product_for<48>(a_smem, ta, tb); break;
    case 64: kern = product_for<64>(a_smem, ta, tb); break;
    case 96: kern = product_for<96>(a_smem, ta, tb); break;
    case 256: kern = product_for<256>(a_smem, ta, tb); break;
    default: return -1;
    }
    if (nw < 1 || nw > 2) return -1;
    const size_t na = (size_t)nw * 64 * 16, nb = (size_t)nw * 16 * n, nd = (size_t)nw * 64 * n;
    uint16_t *da = (uint16_t *)upload(a, na * sizeof(uint16_t));
    uint16_t *db = (uint16_t *)upload(b, nb * sizeof(uint16_t));
    float *dc = (float *)upload(c, nd * sizeof(float)), *dd = NULL;
    CUDA_CHECK(cudaMalloc(&dd, nd * sizeof(float)));
    const size_t smem = (size_t)nw * (stage_elems(64) + stage_elems(n)) * sizeof(uint16_t);
    kern<<<1, 128 * nw, smem>>>(dd, da, db, dc, padded_mask, acc_mask);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaMemcpy(d, dd, nd * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(da));
    CUDA_CHECK(cudaFree(db));
    CUDA_CHECK(cudaFree(dc));
    CUDA_CHECK(cudaFree(dd));
    return 0;
}

/* d1 = a b1 + c, d2 = a b2 + c as two groups; d1 stored after wait<1>, d2 after wait<0> */
__global__ void wgmma_test_two_groups_kernel(float *d1, float *d2, const uint16_t *a,
                                             const uint16_t *b, const float *c) {
    __shared__ uint4 sa_raw[64 * 16 / 8];
    __shared__ uint4 sb_raw[2 * 16 * 64 / 8];
    uint16_t *sa = (uint16_t *)sa_raw, *sb = (uint16_t *)sb_raw;
    const int i = threadIdx.x;
    for (int e = i; e < 64 * 16; e += 128) sa[wgmma_tile_at<16>(e / 16, e % 16)] = a[e];
    for (int e = i; e < 2 * 16 * 64; e += 128) /* b2's tile after b1's */
        sb[e / 1024 * 1024 + wgmma_tile_at<16>(e % 64, e % 1024 / 64)] = b[e];
    wgmma_fence_smem();
    __syncthreads();
    float x1[8][4], x2[8][4];
    load_d<64>(x1, c, i);
    load_d<64>(x2, c, i);
    const uint64_t da = wgmma_desc(sa, 128, 256);
    wgmma_fence();
    wgmma_ss<64, 0, 0>(x1, da, wgmma_desc(sb, 128, 256), 1);
    wgmma_commit();
    wgmma_ss<64, 0, 0>(x2, da, wgmma_desc(sb + 1024, 128, 256), 1);
    wgmma_commit();
    wgmma_wait<1>();
    store_d<64>(d1, x1, i);
    wgmma_wait<0>();
    store_d<64>(d2, x2, i);
}

extern "C" void cuda_wgmma_test_two_groups(float *d1, float *d2, const uint16_t *a,
                                           const uint16_t *b, const float *c) {
    const size_t nd = 64 * 64;
    uint16_t *da = (uint16_t *)upload(a, 64 * 16 * sizeof(uint16_t));
    uint16_t *db = (uint16_t *)upload(b, 2 * 16 * 64 * sizeof(uint16_t));
    float *dc = (float *)upload(c, nd * sizeof(float)), *dd1 = NULL, *dd2 = NULL;
    CUDA_CHECK(cudaMalloc(&dd1, nd * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&dd2, nd * sizeof(float)));
    wgmma_test_two_groups_kernel<<<1, 128>>>(dd1, dd2, da, db, dc);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaMemcpy(d1, dd1, nd * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(d2, dd2, nd * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(da));
    CUDA_CHECK(cudaFree(db));
    CUDA_CHECK(cudaFree(dc));
    CUDA_CHECK(cudaFree(dd1));
    CUDA_CHECK(cudaFree(dd2));
}
