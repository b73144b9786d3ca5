/* Token embedding lookup with a vocabulary range [v0, v0 + nv), so that a tensor-parallel rank
 * holding rows v0.. of the table embeds only its own tokens (the partial embeddings are then
 * summed over the TP group). */
#include <string.h>

#include "model/cpu/cpu_ops.h"

void cpu_embedding_forward(float *out, const int32_t *tokens, const float *wte, int N, int D,
                           int v0, int nv) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * D; /* (D) */
        /* Compare in 64 bits: tokens[n] - v0 must not overflow for any int32 token. */
        int64_t row = (int64_t)tokens[n] - v0;
        if (row >= 0 && row < nv)
            memcpy(o, wte + (size_t)row * D, (size_t)D * sizeof(float));
        else
            memset(o, 0, (size_t)D * sizeof(float));
    }
}

/* Several tokens of a batch can share a vocabulary row, so parallelising over tokens would race
 * (or need atomics, whose order varies). Threads own disjoint column blocks instead, and each
 * walks the tokens in order: race-free, and bit-identical for any thread count. Blocks are 64
 * floats (four cache lines) so that threads rarely share a line. */
#define CPU_EMBEDDING_COLS 64

void cpu_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int N, int D,
                            int v0, int nv) {
    int nblocks = (D + CPU_EMBEDDING_COLS - 1) / CPU_EMBEDDING_COLS;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int j0 = blk * CPU_EMBEDDING_COLS;
        int j1 = j0 + CPU_EMBEDDING_COLS < D ? j0 + CPU_EMBEDDING_COLS : D;
        for (int n = 0; n < N; n++) {
            int64_t row = (int64_t)tokens[n] - v0;
            if (row < 0 || row >= nv) continue;
            float *dw = dwte + (size_t)row * D;          /* (D) */
            const float *g = dout + (size_t)n * D;       /* (D) */
            for (int j = j0; j < j1; j++) dw[j] += g[j];
        }
    }
}
