/* Token embedding lookup over a vocabulary slice [v0, v0 + nv) on the CUDA backend (the CPU
 * oracle is model/cpu/embedding.c). */
#include "model/cuda/cuda_common.cuh"
#include "model/cuda/cuda_ops.h"

#define EMBEDDING_THREADS 256

/* One block per token row (grid-stride over rows), threads over the D columns: coalesced. */
static __global__ void embedding_forward_kernel(float *out, const int32_t *tokens, const float *wte,
                                                int N, int D, int v0, int nv) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        float *o = out + (size_t)n * D; /* (D) */
        /* 64-bit difference: tokens[n] - v0 must not overflow for any int32 token */
        int64_t row = (int64_t)tokens[n] - v0;
        if (row >= 0 && row < nv) {
            const float *w = wte + (size_t)row * D; /* (D) */
            for (int j = threadIdx.x; j < D; j += blockDim.x) o[j] = w[j];
        } else {
            for (int j = threadIdx.x; j < D; j += blockDim.x) o[j] = 0.0f;
        }
    }
}

extern "C" void cuda_embedding_forward(float *out, const int32_t *tokens, const float *wte, int N,
                                       int D, int v0, int nv) {
    if (N <= 0 || D <= 0) return;
    embedding_forward_kernel<<<cuda_blocks((size_t)N, 1), EMBEDDING_THREADS, 0, cuda_stream()>>>(
        out, tokens, wte, N, D, v0, nv);
    CUDA_LAUNCH_CHECK();
}

/* Backward without atomics. Tokens of a batch repeat, so threads that own tokens would race on
 * a vocabulary row; instead each thread owns one column j of dwte and walks the tokens in
 * order, which is race-free and adds in exactly the CPU's order (bit-identical to it).
 *
 * A plain loop would serialise one global load-add-store round trip per token (the next load
 * may hit the row just stored). So tokens are taken EMBEDDING_GROUP at a time: the first
 * occurrence of each row in the group owns it, loads it once, adds the group's gradients of
 * that row in token order, and stores it once. All loads of a group are issued before any
 * store, so a group costs about two memory latencies instead of EMBEDDING_GROUP of them. The
 * additions stay in token order: dwte + g[k] + g[m1] + g[m2] ... for k < m1 < m2. */
#define EMBEDDING_BWD_THREADS 128
#define EMBEDDING_GROUP 8

static __global__ void embedding_backward_kernel(float *dwte, const float *dout,
                                                 const int32_t *tokens, int N, int D, int v0,
                                                 int nv) {
    int j = blockIdx.x * blockDim.x + threadIdx.x; /* this thread's column */
    if (j >= D) return;                            /* no block-wide synchronisation below */
    for (int n0 = 0; n0 < N; n0 += EMBEDDING_GROUP) {
        /* the group's tokens first (independent loads), then its gradients, then dwte */
        int32_t tok[EMBEDDING_GROUP];
#pragma unroll
        for (int k = 0; k < EMBEDDING_GROUP; k++) tok[k] = n0 + k < N ? tokens[n0 + k] : 0;
        int64_t row[EMBEDDING_GROUP]; /* vocabulary row of the slice, -1 outside it or past N */
        float g[EMBEDDING_GROUP];     /* dout[n0 + k, j] */
#pragma unroll
        for (int k = 0; k < EMBEDDING_GROUP; k++) {
            int n = n0 + k;
            int64_t r = (int64_t)tok[k] - v0;
            if (n >= N || r < 0 || r >= nv) r = -1;
            row[k] = r;
            g[k] = r >= 0 ? dout[(size_t)n * D + j] : 0.0f;
        }
        bool owner[EMBEDDING_GROUP]; /* first occurrence of its row in the group */
#pragma unroll
        for (int k = 0; k < EMBEDDING_GROUP; k++) {
            bool first = row[k] >= 0;
#pragma unroll
            for (int m = 0; m < k; m++)
                if (row[m] == row[k]) first = false;
            owner[k] = first;
        }
        float acc[EMBEDDING_GROUP];
#pragma unroll
        for (int k = 0; k < EMBEDDING_GROUP; k++)
            acc[k] = owner[k] ? dwte[(size_t)row[k] * D + j] : 0.0f;
#pragma unroll
        for (int k = 0; k < EMBEDDING_GROUP; k++) {
            if (!owner[k]) continue;
#pragma unroll
            for (int m = k; m < EMBEDDING_GROUP; m++)
                if (row[m] == row[k]) acc[k] += g[m];
        }
#pragma unroll
        for (int k = 0; k < EMBEDDING_GROUP; k++)
            if (owner[k]) dwte[(size_t)row[k] * D + j] = acc[k];
    }
}

extern "C" void cuda_embedding_backward(float *dwte, const float *dout, const int32_t *tokens,
                                        int N, int D, int v0, int nv) {
    if (N <= 0 || D <= 0 || nv <= 0) return;
    embedding_backward_kernel<<<cuda_blocks((size_t)D, EMBEDDING_BWD_THREADS),
                                EMBEDDING_BWD_THREADS, 0, cuda_stream()>>>(dwte, dout, tokens, N, D,
                                                                           v0, nv);
    CUDA_LAUNCH_CHECK();
}
