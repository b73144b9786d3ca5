/* Elementwise helpers: residual adds, gradient scaling, and the sum of squares behind the
 * global gradient norm (returned, or accumulated into a backend double for the training step). */
#include "model/cpu/cpu_ops.h"

/* Below this many elements a parallel region costs more than it saves. The `if` clause only
 * changes who does the work, never the result. */
#define CPU_ELEMENTWISE_PAR_MIN 16384

void cpu_add(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n >= CPU_ELEMENTWISE_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cpu_scale(float *x, float s, size_t n) {
#pragma omp parallel for schedule(static) if (n >= CPU_ELEMENTWISE_PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

/* The vector is cut into a fixed number of chunks whose boundaries depend only on n; each chunk
 * is summed in order and the chunk sums are added in order. An OpenMP `reduction(+)` would
 * combine per-thread partial sums whose extent depends on the thread count, so the gradient
 * norm (and through clipping, the whole training run) would change with OMP_NUM_THREADS. */
#define CPU_SUMSQ_CHUNKS 256

double cpu_sumsq(const float *x, size_t n) {
    double partial[CPU_SUMSQ_CHUNKS];
    size_t chunk = (n + CPU_SUMSQ_CHUNKS - 1) / CPU_SUMSQ_CHUNKS;
#pragma omp parallel for schedule(static) if (n >= CPU_ELEMENTWISE_PAR_MIN)
    for (int c = 0; c < CPU_SUMSQ_CHUNKS; c++) {
        size_t lo = (size_t)c * chunk, hi = lo + chunk;
        if (lo > n) lo = n;
        if (hi > n) hi = n;
        /* Four interleaved accumulators break the add-latency chain; their order is fixed. */
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        size_t i = lo;
        for (; i + 4 <= hi; i += 4) {
            double a = x[i], b = x[i + 1], cc = x[i + 2], d = x[i + 3];
            s0 += a * a;
            s1 += b * b;
            s2 += cc * cc;
            s3 += d * d;
        }
        for (; i < hi; i++) s0 += (double)x[i] * x[i];
        partial[c] = (s0 + s1) + (s2 + s3);
    }
    double total = 0;
    for (int c = 0; c < CPU_SUMSQ_CHUNKS; c++) total += partial[c];
    return total;
}

/* The training step adds one run of tensors after another into its double, in the order the
 * optimizer visits them: the same additions the host made when sumsq returned each run's sum. */
void cpu_sumsq_accumulate(double *acc, const float *x, size_t n) { *acc += cpu_sumsq(x, n); }
