/* Cross-entropy over rows of V logits.
 *
 * Target convention: t < 0 ignores the row (loss 0, zero gradient). t >= V, which the contract
 * does not define, is treated as "the target lies outside these V logits": the row gets no
 * target term (loss = lse, gradient = dloss * softmax). That is what a vocabulary-parallel
 * caller needs for rows whose target lives on another rank, and it never reads out of bounds. */
#include <math.h>
#include <string.h>

#include "model/cpu/cpu_ops.h"

void cpu_xent_forward(float *losses, float *lse, const float *logits, const int32_t *targets,
                      int N, int V) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V; /* (V) */
        /* logsumexp = max + log(sum exp(x - max)): every exponent is <= 0, so nothing overflows
         * even for logits of 1e4; the sum is kept in double (V can be 1e5). */
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
        double sum = 0;
        for (int i = 0; i < V; i++) sum += expf(x[i] - mx);
        double l = (double)mx + log(sum);
        /* lse is kept for every row, ignored or not: a vocabulary-parallel caller combines the
         * per-shard lse of all rows. */
        lse[n] = (float)l;
        int32_t t = targets[n];
        if (t < 0)
            losses[n] = 0.0f;
        else if (t >= V)
            losses[n] = (float)l;
        else
            losses[n] = (float)(l - x[t]);
    }
}

void cpu_xent_backward(float *dlogits, int ldd, const float *logits, const float *lse,
                       const int32_t *targets, float dloss_scale, const int32_t *n_targets,
                       int N, int V) {
    const float dloss = *n_targets > 0 ? dloss_scale / (float)*n_targets : 0.0f;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *dx = dlogits + (size_t)n * ldd;   /* (V), may be the same memory as x */
        const float *x = logits + (size_t)n * V; /* (V) */
        int32_t t = targets[n];
        if (t < 0) {
            memset(dx, 0, (size_t)V * sizeof(float));
            continue;
        }
        float l = lse[n];
        /* Elementwise read-then-write keeps the in-place (aliased) case correct. */
        for (int i = 0; i < V; i++) dx[i] = dloss * expf(x[i] - l);
        if (t < V) dx[t] -= dloss;
    }
}

void cpu_xent_vp_stats(float *rowmax, float *sums, const float *logits, const int32_t *targets,
                       int N, int V) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V; /* (V) */
        /* the slice's row, hot in cache, is read twice: its exact maximum, then the sum; the
         * GPU forms the same sum in one pass of online rescaling (model/cuda/xent.cu) */
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
        /* the slice's partial sum is accumulated in double; the cross-rank sum is fp32 */
        double sum = 0;
        for (int i = 0; i < V; i++) sum += expf(x[i] - mx);
        int32_t t = targets[n];
        rowmax[n] = mx;
        sums[2 * n] = (float)sum;
        sums[2 * n + 1] = t >= 0 && t < V ? x[t] : 0.0f;
    }
}

void cpu_xent_vp_rescale(float *sums, const float *rowmax, const float *gmax, int N) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        /* a separate rounding of expf and of the product, as the GPU's __fmul_rn */
        float f = expf(rowmax[n] - gmax[n]);
        sums[2 * n] = sums[2 * n] * f;
    }
}

void cpu_xent_vp_finish(float *losses, float *lse, const float *rowmax, const float *sums,
                        const int32_t *targets, int N) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        double l = (double)rowmax[n] + log((double)sums[2 * n]);
        lse[n] = (float)l;
        losses[n] = targets[n] < 0 ? 0.0f : (float)(l - sums[2 * n + 1]);
    }
}
