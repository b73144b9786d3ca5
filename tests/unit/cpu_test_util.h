/* Helpers shared by the CPU op tests (tests/unit/test_cpu_*.c): finite differences in double
 * and small buffer utilities. Header-only (static inline) because the test build links exactly
 * one source file plus testutil.c per test. */
#ifndef DT_CPU_TEST_UTIL_H
#define DT_CPU_TEST_UTIL_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* A scalar loss evaluated in double on the test's own reference implementation. */
typedef double (*ctu_loss_fn)(void *ctx);

/* Central finite differences: grad[i] = (L(x + h_i e_i) - L(x - h_i e_i)) / (2 h_i), with
 * h_i = h * (hscale ? hscale[i] : 1). x is perturbed in place and restored exactly. */
static inline void ctu_fd_grad(double *grad, double *x, size_t n, double h, const double *hscale,
                               ctu_loss_fn loss, void *ctx) {
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i], hi = h * (hscale ? hscale[i] : 1.0);
        x[i] = x0 + hi;
        double lp = loss(ctx);
        x[i] = x0 - hi;
        double lm = loss(ctx);
        x[i] = x0;
        grad[i] = (lp - lm) / (2.0 * hi);
    }
}

static inline float *ctu_falloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static inline double *ctu_dalloc(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

/* dst[i] = (double)src[i] */
static inline void ctu_to_double(double *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

/* dst[i] = a[i] + s * b[i], in double (expected values of accumulated gradients). */
static inline void ctu_axpy_ref(double *dst, const float *a, double s, const double *b, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (double)a[i] + s * b[i];
}

/* 1 when the two float buffers are bit-for-bit identical. */
static inline int ctu_same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

#endif
