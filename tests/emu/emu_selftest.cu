/* Self-test of the CUDA host emulator (a test tool, see include/cuda_runtime.h), run by ctest as
 * emu_selftest: a CUDA source like those of model/cuda, rewritten by transform.py. Checks that
 *   - thread/block indices, static and dynamic shared memory and the shuffles give the values
 *     CUDA defines (exact: integers);
 *   - shared memory starts every block as NaN, and more than 48 KiB of it needs the opt-in;
 *   - the misuses the emulator promises to catch do abort the process (each in a child):
 *     __syncthreads not reached by every thread or at two call sites, a shuffle not reached by
 *     every lane, a full-mask shuffle in a partial warp, a host pointer passed to a kernel, a
 *     store past the end of a cudaMalloc buffer;
 *   - cublasGemmEx: all four transpose combinations with padded leading dimensions, beta 0 on a
 *     NaN-filled C and beta 1, against a double reference; with bf16 products, against a double
 *     reference on inputs rounded here by another method (frexp/nearbyint), and its ties; a bf16
 *     C (bf16 A, B): beta 0 on a NaN-filled C, beta 1 reading it, and the rounding's ties. The
 *     fp32 sums of 33 products of |x| < 1 (times alpha 1.5) round by at most 1.5 * 33 * 33 *
 *     2^-24 = 1e-4 (typically 1e-6): tolerance 2e-4 + 1e-4 |ref|;
 *   - the tensor-core instructions (mma, ldmatrix, bf16 packing): emu_selftest_mma.cu;
 *   - the asynchronous copies (cp.async, commit, wait): emu_selftest_cp_async.cu;
 *   - the warpgroup matrix products (wgmma, fence, commit, wait; the warpgroup scheduling and
 *     its misuses): emu_selftest_wgmma.cu. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "emu_selftest_util.h"

static int g_fails;
#define CHECK(cond, ...) EMU_CHECK(g_fails, cond, __VA_ARGS__)

/* ---- indices, shared memory, shuffles, votes: blocks of 96 threads (3 warps) on a 2 x 3 grid
 * ---- */
__global__ void shuffles_kernel(float *out, double *sums, unsigned *votes) {
    __shared__ float tile[96];
    extern __shared__ float dyn[]; /* 96 floats */
    const int t = threadIdx.x, lane = t & 31;
    const int g = blockIdx.x + gridDim.x * blockIdx.y;
    tile[t] = (float)(g * 1000 + t);
    dyn[blockDim.x - 1 - t] = (float)t;
    __syncthreads();
    const float bcast = __shfl_sync(0xffffffffu, tile[t], 5);
    double sum = lane;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float down = __shfl_down_sync(0xffffffffu, (float)lane, 3);
    const size_t i = (size_t)g * blockDim.x + t;
    /* lanes 3k vote; warp w also votes all-true (w = 0), all-false (w = 1) or lane 7 alone */
    const int w = t / 32, mine = w == 0 ? 1 : w == 1 ? 0 : lane == 7;
    votes[3 * i] = __ballot_sync(0xffffffffu, lane % 3 == 0);
    votes[3 * i + 1] = (unsigned)__all_sync(0xffffffffu, mine);
    votes[3 * i + 2] = (unsigned)__any_sync(0xffffffffu, mine);
    out[4 * i + 0] = bcast;
    out[4 * i + 1] = tile[blockDim.x - 1 - t]; /* written by another warp */
    out[4 * i + 2] = down;
    out[4 * i + 3] = dyn[t];
    sums[i] = sum;
}

static void test_shuffles(void) {
    const int nb = 6, nt = 96, n = nb * nt;
    float *out, host[4 * 6 * 96];
    double *sums, hs[6 * 96];
    unsigned *votes, hv[3 * 6 * 96];
    cudaMalloc(&out, sizeof host);
    cudaMalloc(&sums, sizeof hs);
    cudaMalloc(&votes, sizeof hv);
    shuffles_kernel<<<dim3(2, 3), nt, nt * sizeof(float)>>>(out, sums, votes);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    cudaMemcpy(host, out, sizeof host, cudaMemcpyDeviceToHost);
    cudaMemcpy(hs, sums, sizeof hs, cudaMemcpyDeviceToHost);
    cudaMemcpy(hv, votes, sizeof hv, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const int g = i / nt, t = i % nt, lane = t % 32, warp = t / 32;
        bad += host[4 * i] != (float)(g * 1000 + warp * 32 + 5);
        bad += host[4 * i + 1] != (float)(g * 1000 + nt - 1 - t);
        bad += host[4 * i + 2] != (float)(lane + 3 < 32 ? lane + 3 : lane);
        bad += host[4 * i + 3] != (float)(nt - 1 - t);
        bad += hs[i] != 496.0;
        bad += hv[3 * i] != 0x49249249u; /* bits 0, 3, ..., 30 */
        bad += hv[3 * i + 1] != (warp == 0 ? 1u : 0u);
        bad += hv[3 * i + 2] != (warp == 1 ? 0u : 1u);
    }
    CHECK(bad == 0, "indices/shared memory/shuffles/votes: %d wrong values", bad);
    cudaFree(out);
    cudaFree(sums);
    cudaFree(votes);
}

/* ---- shared memory is NaN at the start of every block; > 48 KiB needs the opt-in ---- */
__global__ void smem_kernel(float *nans, int n) {
    extern __shared__ float big[];
    int c = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) c += big[i] != big[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) big[i] = 1.0f; /* the next block's NaN? */
    nans[blockIdx.x * blockDim.x + threadIdx.x] = (float)c;
}

static void test_smem(void) {
    const int n = 16384, nt = 128; /* 64 KiB */
    float *nans, host[2 * 128];
    cudaMalloc(&nans, sizeof host);
    smem_kernel<<<2, nt, n * sizeof(float), 0>>>(nans, n);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue, "64 KiB without the opt-in must fail");
    CHECK(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               n * sizeof(float)) == cudaSuccess, "opt-in");
    smem_kernel<<<2, nt, n * sizeof(float), 0>>>(nans, n);
    CHECK(cudaGetLastError() == cudaSuccess, "64 KiB after the opt-in");
    cudaMemcpy(host, nans, sizeof host, cudaMemcpyDeviceToHost);
    double total = 0;
    for (int i = 0; i < 2 * nt; i++) total += host[i];
    CHECK(total == 2.0 * n, "NaN shared memory: %g of %d floats", total, 2 * n);
    cudaFree(nans);
}

/* ---- the GPU the devices stand for (emu_set_gpu, DT_EMU_GPU): its properties and its shared
 * memory, to which the opt-in and the launches are held ---- */
static void test_gpu_profiles(void) {
    const struct {
        const char *key;
        int major, minor;
        size_t optin;
    } gpus[] = {{"h100", 9, 0, 232448}, {"a100", 8, 0, 166912}, {"l40s", 8, 9, 101376}};
    float *nans;
    cudaMalloc(&nans, 2 * 128 * sizeof(float));
    for (size_t g = 0; g < sizeof gpus / sizeof gpus[0]; g++) {
        emu_set_gpu(gpus[g].key);
        cudaDeviceProp p;
        CHECK(cudaGetDeviceProperties(&p, 0) == cudaSuccess, "%s: properties", gpus[g].key);
        CHECK(p.major == gpus[g].major && p.minor == gpus[g].minor &&
                  p.sharedMemPerBlockOptin == gpus[g].optin,
              "%s: compute capability %d.%d, opt-in %zu", gpus[g].key, p.major, p.minor,
              p.sharedMemPerBlockOptin);
        const int n = (int)(gpus[g].optin / sizeof(float));
        CHECK(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)gpus[g].optin + 16) == cudaErrorInvalidValue,
              "%s: an opt-in past the limit must fail", gpus[g].key);
        cudaGetLastError();
        CHECK(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)gpus[g].optin) == cudaSuccess,
              "%s: the opt-in to the limit", gpus[g].key);
        smem_kernel<<<2, 128, gpus[g].optin, 0>>>(nans, n);
        CHECK(cudaGetLastError() == cudaSuccess, "%s: a launch with all of it", gpus[g].key);
        smem_kernel<<<2, 128, gpus[g].optin + 16, 0>>>(nans, n);
        CHECK(cudaGetLastError() == cudaErrorInvalidValue, "%s: a launch with more must fail",
              gpus[g].key);
    }
    emu_set_gpu(NULL);
    cudaFree(nans);
}

/* ---- misuses: each must abort (or fault) in a child process ---- */
__global__ void sync_divergent_kernel(float *x) {
    if (threadIdx.x < 64) __syncthreads();
    x[threadIdx.x] = 1.0f;
}
__global__ void sync_two_sites_kernel(float *x) {
    if (threadIdx.x < 32)
        __syncthreads();
    else
        __syncthreads();
    x[threadIdx.x] = 1.0f;
}
__global__ void shfl_divergent_kernel(float *x) {
    float v = x[threadIdx.x];
    if (threadIdx.x & 1) v = __shfl_xor_sync(0xffffffffu, v, 1);
    x[threadIdx.x] = v;
}
__global__ void shfl_partial_kernel(float *x) {
    x[threadIdx.x] = __shfl_sync(0xffffffffu, x[threadIdx.x], 0);
}
__global__ void store_kernel(float *x, int offset) { x[offset + threadIdx.x] = 1.0f; }

static void run_sync_divergent(void *x) { sync_divergent_kernel<<<1, 128>>>((float *)x); }
static void run_sync_two_sites(void *x) { sync_two_sites_kernel<<<1, 128>>>((float *)x); }
static void run_shfl_divergent(void *x) { shfl_divergent_kernel<<<1, 64>>>((float *)x); }
static void run_shfl_partial(void *x) { shfl_partial_kernel<<<1, 48>>>((float *)x); }
static void run_host_pointer(void *x) {
    float host[128];
    (void)x;
    store_kernel<<<1, 32>>>(host, 0);
}
static void run_overrun(void *x) { store_kernel<<<1, 32>>>((float *)x, 128); }

/* ---- cuBLAS shim ---- */
static double bf16_ref(double x) { /* round to 8 significant bits, ties to even */
    int e;
    double m = frexp(x, &e);
    return ldexp(nearbyint(ldexp(m, 8)), e - 8);
}

static float uniform(unsigned *s) { /* in [-1, 1) */
    *s = *s * 1103515245u + 12345u;
    return (float)(*s >> 8) / 8388608.0f - 1.0f;
}

static void gemm_case(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, float beta,
                      int bf16) {
    const int m = 5, n = 7, k = 33, pad = 3;
    const int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    const int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    const int lda = ar + pad, ldb = br + pad, ldc = m + pad;
    float A[(33 + 3) * 33], B[(33 + 3) * 33], C[(5 + 3) * 7], R[(5 + 3) * 7];
    unsigned s = 12345u + (unsigned)(ta * 4 + tb * 2 + bf16);
    for (int i = 0; i < lda * ac; i++) A[i] = uniform(&s);
    for (int i = 0; i < ldb * bc; i++) B[i] = uniform(&s);
    for (int i = 0; i < ldc * n; i++) C[i] = 0.25f * (float)(i % 7);
    float *dA = emu_upload(A, sizeof(float) * lda * ac);
    float *dB = emu_upload(B, sizeof(float) * ldb * bc);
    float *dC;
    cudaMalloc(&dC, sizeof(float) * ldc * n); /* NaN-filled: beta 0 must not read it */
    if (beta != 0.0f) cudaMemcpy(dC, C, sizeof(float) * ldc * n, cudaMemcpyHostToDevice);
    const float alpha = 1.5f;
    cublasStatus_t st = cublasGemmEx(h, ta, tb, m, n, k, &alpha, dA, CUDA_R_32F, lda, dB,
                                     CUDA_R_32F, ldb, &beta, dC, CUDA_R_32F, ldc,
                                     bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT);
    CHECK(st == CUBLAS_STATUS_SUCCESS, "cublasGemmEx: %s", cublasGetStatusString(st));
    cudaMemcpy(R, dC, sizeof(float) * ldc * n, cudaMemcpyDeviceToHost);
    double worst = 0, moved = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double acc = 0, exact = 0;
            for (int l = 0; l < k; l++) {
                double a = ta == CUBLAS_OP_N ? A[i + l * lda] : A[l + i * lda];
                double b = tb == CUBLAS_OP_N ? B[l + j * ldb] : B[j + l * ldb];
                acc += bf16 ? bf16_ref(a) * bf16_ref(b) : a * b;
                exact += a * b;
            }
            const double ref = alpha * acc + (beta != 0.0f ? beta * C[i + j * ldc] : 0.0);
            worst = fmax(worst, fabs(R[i + j * ldc] - ref) / (2e-4 + 1e-4 * fabs(ref)));
            moved = fmax(moved, fabs(alpha * (exact - acc)));
        }
    CHECK(worst <= 1.0, "gemm ta=%d tb=%d beta=%g bf16=%d: %g of tolerance", ta, tb, beta, bf16,
          worst);
    if (bf16) CHECK(moved > 1e-3, "bf16 rounding changed the products by only %g", moved);
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
}

static void test_gemm(void) {
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bf16 = 0; bf16 < 2; bf16++)
                for (int b = 0; b < 2; b++)
                    gemm_case(h, (cublasOperation_t)ta, (cublasOperation_t)tb, (float)b, bf16);
    /* bf16 ties: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 (even: 1), 1 + 3 2^-8 halfway
     * between 1 + 2^-7 and 1 + 2^-6 (even: 1 + 2^-6); just above a tie rounds up */
    const float in[3] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f};
    const float want[3] = {1.0f, 1.0f + 0x1p-6f, 1.0f + 0x1p-7f};
    float *d, one = 1.0f, zero = 0.0f, got[3];
    cudaMalloc(&d, 4 * sizeof(float));
    for (int i = 0; i < 3; i++) {
        cudaMemcpy(d, &in[i], sizeof(float), cudaMemcpyHostToDevice);
        cudaMemcpy(d + 1, &one, sizeof(float), cudaMemcpyHostToDevice);
        cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, d, CUDA_R_32F, 1, d + 1,
                     CUDA_R_32F, 1, &zero, d + 2, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F_FAST_16BF,
                     CUBLAS_GEMM_DEFAULT);
        cudaMemcpy(&got[i], d + 2, sizeof(float), cudaMemcpyDeviceToHost);
        CHECK(got[i] == want[i], "bf16 rounding of %.9g: %.9g, expected %.9g", in[i], got[i],
              want[i]);
    }
    cudaFree(d);
    cublasDestroy(h);
}

/* The bf16 bits of x rounded as bf16_ref rounds it. */
static unsigned short bf16_bits(float x) {
    const float r = (float)bf16_ref(x);
    unsigned u;
    memcpy(&u, &r, sizeof u);
    return (unsigned short)(u >> 16);
}

/* C (M x N, column-major) = A^T B + beta C with A stored K x M and B stored K x N, of the given
 * element types: the shape of every product these self-tests ask cuBLAS for */
static cublasStatus_t gemm_at_b(cublasHandle_t h, int M, int N, int K, const void *A,
                                cudaDataType ta, const void *B, cudaDataType tb, float beta,
                                void *C, cudaDataType tc, cublasComputeType_t ct) {
    const float one = 1.0f;
    return cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, A, ta, K, B, tb, K, &beta, C,
                        tc, M, ct, CUBLAS_GEMM_DEFAULT);
}

/* bf16 A and B (CUDA_R_16BF, CUBLAS_COMPUTE_32F) give exactly the FAST_16BF product of the fp32
 * matrices they round; mixed operand types are refused */
static void test_gemm_bf16_operands(void) {
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
    enum { M = 6, N = 5, K = 19 };
    float A[K * M], B[K * N], R1[M * N], R2[M * N];
    unsigned short A16[K * M], B16[K * N];
    unsigned s = 777u;
    for (int i = 0; i < K * M; i++) A[i] = uniform(&s);
    for (int i = 0; i < K * N; i++) B[i] = uniform(&s);
    for (int i = 0; i < K * M; i++) A16[i] = bf16_bits(A[i]);
    for (int i = 0; i < K * N; i++) B16[i] = bf16_bits(B[i]);
    float *dA = emu_upload(A, sizeof A), *dB = emu_upload(B, sizeof B), *dC;
    unsigned short *dA16 = emu_upload(A16, sizeof A16), *dB16 = emu_upload(B16, sizeof B16);
    cudaMalloc(&dC, sizeof R1);
    CHECK(gemm_at_b(h, M, N, K, dA, CUDA_R_32F, dB, CUDA_R_32F, 0.0f, dC, CUDA_R_32F,
                    CUBLAS_COMPUTE_32F_FAST_16BF) == CUBLAS_STATUS_SUCCESS,
          "fp32 operands, FAST_16BF");
    cudaMemcpy(R1, dC, sizeof R1, cudaMemcpyDeviceToHost);
    CHECK(gemm_at_b(h, M, N, K, dA16, CUDA_R_16BF, dB16, CUDA_R_16BF, 0.0f, dC, CUDA_R_32F,
                    CUBLAS_COMPUTE_32F) == CUBLAS_STATUS_SUCCESS,
          "bf16 operands");
    cudaMemcpy(R2, dC, sizeof R2, cudaMemcpyDeviceToHost);
    CHECK(memcmp(R1, R2, sizeof R1) == 0, "bf16 operands differ from the FAST_16BF product");
    CHECK(gemm_at_b(h, M, N, K, dA16, CUDA_R_16BF, dB, CUDA_R_32F, 0.0f, dC, CUDA_R_32F,
                    CUBLAS_COMPUTE_32F) == CUBLAS_STATUS_NOT_SUPPORTED,
          "bf16 A with fp32 B accepted");
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    cudaFree(dA16);
    cudaFree(dB16);
    cublasDestroy(h);
}

/* bf16 C (with bf16 A and B): the fp32 result alpha A B + beta C (C widened) stored rounded to
 * nearest even, as bf16_ref rounds it; ties go to the even bf16; a bf16 C with fp32 A, B is
 * refused */
static void test_gemm_bf16_c(void) {
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
    enum { M = 6, N = 5, K = 19 };
    unsigned short A16[K * M], B16[K * N], C0[M * N], C16[M * N];
    float R[M * N];
    unsigned s = 4242u;
    for (int i = 0; i < K * M; i++) A16[i] = bf16_bits(uniform(&s));
    for (int i = 0; i < K * N; i++) B16[i] = bf16_bits(uniform(&s));
    for (int i = 0; i < M * N; i++) C0[i] = bf16_bits(uniform(&s));
    float *dC;
    unsigned short *dA16 = emu_upload(A16, sizeof A16), *dB16 = emu_upload(B16, sizeof B16), *dC16;
    cudaMalloc(&dC, sizeof R);
    cudaMalloc(&dC16, sizeof C16); /* NaN-filled: beta 0 must not read it */
    const float one = 1.0f, zero = 0.0f;
    /* the fp32 C of the same product: what the bf16 C must be the rounding of */
    CHECK(gemm_at_b(h, M, N, K, dA16, CUDA_R_16BF, dB16, CUDA_R_16BF, 0.0f, dC, CUDA_R_32F,
                    CUBLAS_COMPUTE_32F) == CUBLAS_STATUS_SUCCESS,
          "bf16 A, B, fp32 C");
    cudaMemcpy(R, dC, sizeof R, cudaMemcpyDeviceToHost);
    CHECK(gemm_at_b(h, M, N, K, dA16, CUDA_R_16BF, dB16, CUDA_R_16BF, 0.0f, dC16, CUDA_R_16BF,
                    CUBLAS_COMPUTE_32F) == CUBLAS_STATUS_SUCCESS,
          "bf16 C, beta 0");
    cudaMemcpy(C16, dC16, sizeof C16, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int i = 0; i < M * N; i++) bad += C16[i] != bf16_bits(R[i]);
    CHECK(bad == 0, "bf16 C, beta 0: %d of %d elements are not the rounded fp32 C", bad, M * N);
    cudaMemcpy(dC16, C0, sizeof C0, cudaMemcpyHostToDevice);
    CHECK(gemm_at_b(h, M, N, K, dA16, CUDA_R_16BF, dB16, CUDA_R_16BF, 1.0f, dC16, CUDA_R_16BF,
                    CUBLAS_COMPUTE_32F) == CUBLAS_STATUS_SUCCESS,
          "bf16 C, beta 1");
    cudaMemcpy(C16, dC16, sizeof C16, cudaMemcpyDeviceToHost);
    bad = 0;
    for (int i = 0; i < M * N; i++) {
        const unsigned u = (unsigned)C0[i] << 16;
        float c;
        memcpy(&c, &u, sizeof c);
        bad += C16[i] != bf16_bits(R[i] + c);
    }
    CHECK(bad == 0, "bf16 C, beta 1: %d of %d elements are not the rounded fp32 R + C", bad,
          M * N);
    /* ties: C (1 x 2) = [1 1] . [[1, 1], [2^-8, 3 * 2^-8]] = 1 + 2^-8 and 1 + 3 * 2^-8, each
     * halfway between two bf16: to the even ones, 1 (0x3f80) and 1 + 2^-6 (0x3f82); truncation
     * would give 0x3f81 for the second, rounding half up 0x3f81 for the first */
    const unsigned short tA[2] = {0x3f80, 0x3f80}, tB[4] = {0x3f80, 0x3b80, 0x3f80, 0x3c40};
    cudaMemcpy(dA16, tA, sizeof tA, cudaMemcpyHostToDevice);
    cudaMemcpy(dB16, tB, sizeof tB, cudaMemcpyHostToDevice);
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 2, 2, &one, dA16, CUDA_R_16BF, 1, dB16,
                       CUDA_R_16BF, 2, &zero, dC16, CUDA_R_16BF, 1, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS, "bf16 C ties");
    cudaMemcpy(C16, dC16, 2 * sizeof C16[0], cudaMemcpyDeviceToHost);
    CHECK(C16[0] == 0x3f80 && C16[1] == 0x3f82, "bf16 C ties: 0x%04x 0x%04x, want 0x3f80 0x3f82",
          C16[0], C16[1]);
    CHECK(gemm_at_b(h, M, N, K, dC, CUDA_R_32F, dC, CUDA_R_32F, 0.0f, dC16, CUDA_R_16BF,
                    CUBLAS_COMPUTE_32F) == CUBLAS_STATUS_NOT_SUPPORTED,
          "bf16 C with fp32 A, B accepted");
    cudaFree(dC);
    cudaFree(dA16);
    cudaFree(dB16);
    cudaFree(dC16);
    cublasDestroy(h);
}

int emu_selftest_mma(void); /* emu_selftest_mma.cu: the tensor-core instructions */
int emu_selftest_cp_async(void); /* emu_selftest_cp_async.cu: the asynchronous copies */
int emu_selftest_wgmma(void);    /* emu_selftest_wgmma.cu: the warpgroup matrix products */
int emu_selftest_mbarrier(void); /* emu_selftest_mbarrier.cu: mbarriers and bulk copies */
int emu_selftest_tma(void); /* emu_selftest_tma.cu: TMA loads, named barriers, setmaxnreg */

int main(void) {
    test_shuffles();
    test_smem();
    test_gpu_profiles();
    g_fails +=
        emu_expect_death("__syncthreads reached by half the block", SIGABRT, run_sync_divergent);
    g_fails += emu_expect_death("__syncthreads at two call sites", SIGABRT, run_sync_two_sites);
    g_fails += emu_expect_death("shuffle reached by half the warp", SIGABRT, run_shfl_divergent);
    g_fails +=
        emu_expect_death("full-mask shuffle in a warp of 16 threads", SIGABRT, run_shfl_partial);
    g_fails += emu_expect_death("host pointer passed to a kernel", SIGABRT, run_host_pointer);
    g_fails += emu_expect_death("store past the end of a cudaMalloc buffer", SIGSEGV, run_overrun);
    test_gemm();
    test_gemm_bf16_operands();
    test_gemm_bf16_c();
    g_fails += emu_selftest_mma();
    g_fails += emu_selftest_cp_async();
    g_fails += emu_selftest_wgmma();
    g_fails += emu_selftest_mbarrier();
    g_fails += emu_selftest_tma();
    printf("%s: %d failed checks\n", g_fails ? "FAILED" : "PASSED", g_fails);
    return g_fails ? 1 : 0;
}
