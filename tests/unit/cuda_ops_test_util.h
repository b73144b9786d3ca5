/* Helpers of the CUDA op tests (tests/unit/test_cuda_*.c), on top of
 * cuda_test_util.h: device buffers made from host arrays, and checks of a device result against
 * the CPU oracle's host result (within a tolerance, or bit for bit) that fail the running
 * cmocka test. Header-only; include after <cmocka.h>. */
#ifndef DT_CUDA_OPS_TEST_UTIL_H
#define DT_CUDA_OPS_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_test_util.h"

/* A device copy of n host floats (host NULL: zeros). */
static inline float *cot_dev(const float *host, size_t n) {
    return (float *)cut_to_device(host, (n ? n : 1) * sizeof(float));
}

static inline int32_t *cot_dev_i32(const int32_t *host, size_t n) {
    return (int32_t *)cut_to_device(host, (n ? n : 1) * sizeof(int32_t));
}

/* A device buffer of n NaNs: an output that the op must overwrite (a NaN left behind fails
 * every comparison). */
static inline float *cot_dev_nan(size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = cot_dev(h, n);
    free(h);
    return d;
}

/* A host array of n floats filled with NaN (the CPU side of an overwritten output). */
static inline float *cot_nan(size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    return h;
}

/* Fails unless |gpu - cpu| <= atol + rtol |cpu| for every element of the device buffer `dev`
 * against the host buffer `cpu` (NaN never passes). Prints the worst element either way. */
static inline void cot_check(const char *what, const float *dev, const float *cpu, size_t n,
                             double atol, double rtol) {
    float *gpu = cut_to_host(dev, n);
    double worst = cut_worst(what, gpu, cpu, n, atol, rtol);
    free(gpu);
    if (!(worst <= 1.0))
        fail_msg("%s: GPU and CPU differ by %.3g times the tolerance", what, worst);
}

/* 1 (0 when within) unless every element of the device tensor is within
 * max(afrac * max|ref|, floor_) + rtol |ref| of the host tensor ref: an absolute tolerance scaled
 * to the tensor's largest value. Prints the worst element (cut_worst); the caller counts. */
static inline int cot_out_of_tol(const char *what, const float *dev, const float *ref, size_t n,
                                 double afrac, double rtol, double floor_) {
    float *got = cut_to_host(dev, n);
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)ref[i]));
    const double worst = cut_worst(what, got, ref, n, fmax(afrac * mx, floor_), rtol);
    free(got);
    return worst <= 1.0 ? 0 : 1;
}

/* 1 (printing "WHAT: LABEL differs") unless the two device tensors hold the same bits; b is what
 * `label` names (a rerun, another path). */
static inline int cot_bits_differ(const char *what, const char *label, const float *a,
                                  const float *b, size_t n) {
    float *ha = cut_to_host(a, n), *hb = cut_to_host(b, n);
    const int differ = memcmp(ha, hb, n * sizeof(float)) != 0;
    if (differ) printf("%s: %s differs\n", what, label);
    free(ha);
    free(hb);
    return differ;
}

/* Fails unless the n floats at `dev` are bit-for-bit those at `host`. */
static inline void cot_check_bits(const char *what, const float *dev, const float *host, size_t n) {
    float *gpu = cut_to_host(dev, n);
    for (size_t i = 0; i < n; i++)
        if (memcmp(&gpu[i], &host[i], sizeof(float)) != 0) {
            double g = gpu[i], h = host[i];
            free(gpu);
            fail_msg("%s: not bit-identical at %zu: %.9g vs %.9g", what, i, g, h);
        }
    printf("%-28s n=%-8zu bit-identical\n", what, n);
    free(gpu);
}

/* Fails unless two device buffers hold the same bits (determinism: a rerun of an op). */
static inline void cot_check_bits_dev(const char *what, const float *dev_a, const float *dev_b,
                                      size_t n) {
    float *b = cut_to_host(dev_b, n);
    cot_check_bits(what, dev_a, b, n);
    free(b);
}

#endif
