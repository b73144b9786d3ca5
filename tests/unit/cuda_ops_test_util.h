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

/* ---- dt_operand buffers (model/backend.h), in the backend's current format: fp32, or bf16
 * (cuda_operand_bytes() == 2) ---- */

/* A device operand buffer of n elements holding host[i] (rounded to bf16 in bf16 mode; host
 * NULL: zeros). */
static inline dt_operand *cot_operand_dev(const float *host, size_t n) {
    const size_t eb = cuda_operand_bytes();
    if (eb == sizeof(float) || !host) return (dt_operand *)cut_to_device(host, (n ? n : 1) * eb);
    uint16_t *h = malloc((n ? n : 1) * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) h[i] = cut_bf16_bits(host[i]);
    dt_operand *d = (dt_operand *)cut_to_device(h, (n ? n : 1) * sizeof(uint16_t));
    free(h);
    return d;
}

/* An operand buffer of n NaNs (an output the op must overwrite: bf16 NaN in bf16 mode). */
static inline dt_operand *cot_operand_nan(size_t n) {
    if (cuda_operand_bytes() == sizeof(float)) return (dt_operand *)cot_dev_nan(n);
    uint16_t *b = malloc((n ? n : 1) * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) b[i] = 0x7fc0u; /* a quiet NaN */
    dt_operand *d = (dt_operand *)cut_to_device(b, (n ? n : 1) * sizeof(uint16_t));
    free(b);
    return d;
}

/* A fresh host array of the n operand elements at dev, widened to fp32 (exact). */
static inline float *cot_operand_to_host(const dt_operand *dev, size_t n) {
    if (cuda_operand_bytes() == sizeof(float)) return cut_to_host((const float *)dev, n);
    uint16_t *b = calloc(n ? n : 1, sizeof(uint16_t));
    cuda_copy_to_host(b, dev, n * sizeof(uint16_t));
    float *h = calloc(n ? n : 1, sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = cut_bf16_widen(b[i]);
    free(b);
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
static inline int cot_host_out_of_tol(const char *what, const float *got, const float *ref,
                                      size_t n, double afrac, double rtol, double floor_) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)ref[i]));
    const double worst = cut_worst(what, got, ref, n, fmax(afrac * mx, floor_), rtol);
    return worst <= 1.0 ? 0 : 1;
}
static inline int cot_out_of_tol(const char *what, const float *dev, const float *ref, size_t n,
                                 double afrac, double rtol, double floor_) {
    float *got = cut_to_host(dev, n);
    const int out = cot_host_out_of_tol(what, got, ref, n, afrac, rtol, floor_);
    free(got);
    return out;
}
/* The same for a device operand buffer of n elements in the current format (widened). */
static inline int cot_operand_out_of_tol(const char *what, const dt_operand *dev, const float *ref,
                                         size_t n, double afrac, double rtol, double floor_) {
    float *got = cot_operand_to_host(dev, n);
    const int out = cot_host_out_of_tol(what, got, ref, n, afrac, rtol, floor_);
    free(got);
    return out;
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

/* The same for two device operand buffers of n elements in the current format. */
static inline int cot_operand_bits_differ(const char *what, const char *label,
                                          const dt_operand *a, const dt_operand *b, size_t n) {
    const size_t bytes = n * cuda_operand_bytes();
    char *ha = malloc(bytes ? bytes : 1), *hb = malloc(bytes ? bytes : 1);
    cuda_copy_to_host(ha, a, bytes);
    cuda_copy_to_host(hb, b, bytes);
    const int differ = memcmp(ha, hb, bytes) != 0;
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
