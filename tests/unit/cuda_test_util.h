/* Helpers shared by the CUDA op tests (tests/unit/test_cuda_*.c): skip without a device, move
 * buffers between host and device, and compare a GPU result with the CPU oracle's.
 * Header-only (static inline): a test links one source file plus testutil.c. */
#ifndef DT_CUDA_TEST_UTIL_H
#define DT_CUDA_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/cuda_ops.h"
#include "model/cuda/cuda_probe.h"

/* Exits 77 (skipped) without a usable device; otherwise binds device 0 with fp32 products (the
 * op tests compare fp32 against fp32). Any CUDA error while probing counts as no device. */
static inline void cut_require_device(void) {
    if (cuda_probe_device_count() == 0 || cuda_probe_roundtrip(0) != 0) {
        printf("no usable CUDA device: skipped\n");
        exit(77);
    }
    if (cuda_backend_init(0, 0) != 0) {
        printf("CUDA backend init failed on a device that probes fine\n");
        exit(1);
    }
}

/* cut_require_device, then exits 77 (skipped) unless supported(why, len) says the instructions
 * a test needs (what names them) are usable on this build and device; its reason is printed. */
static inline void cut_require_support(int (*supported)(char *why, int len), const char *what) {
    cut_require_device();
    char why[256];
    if (!supported(why, (int)sizeof why)) {
        printf("%s not usable here: %s: skipped\n", what, why);
        exit(77);
    }
}

/* A device copy of n host floats (or ints: same size); abort on failure. */
static inline void *cut_to_device(const void *host, size_t bytes) {
    void *d = cuda_alloc(bytes);
    if (!d) {
        fprintf(stderr, "cuda_alloc(%zu) failed\n", bytes);
        abort();
    }
    if (host) cuda_copy_from_host(d, host, bytes);
    return d;
}

/* A fresh host copy of a device buffer (synchronizes). */
static inline float *cut_to_host(const float *dev, size_t n) {
    float *h = calloc(n ? n : 1, sizeof(float));
    cuda_copy_to_host(h, dev, n * sizeof(float));
    return h;
}

/* Largest |gpu - cpu| / (atol + rtol |cpu|) over n values: <= 1 passes. Prints the worst
 * element and its ratio, so a test log shows how close each op comes to its tolerance. */
static inline double cut_worst(const char *what, const float *gpu, const float *cpu, size_t n,
                               double atol, double rtol) {
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)gpu[i] - (double)cpu[i]) / (atol + rtol * fabs((double)cpu[i]));
        if (!(e <= worst)) { /* NaN counts as worst */
            worst = isnan(e) ? INFINITY : e;
            at = i;
        }
    }
    printf("%-28s n=%-8zu worst %.3g of tolerance (gpu %.8g cpu %.8g at %zu)\n", what, n, worst,
           n ? gpu[at] : 0.0, n ? cpu[at] : 0.0, at);
    return worst;
}

/* x rounded to bf16, to nearest even, as the kernels' cvt.rn and the products' operand copies
 * (finite inputs). */
static inline float cut_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* The bits of x rounded to bf16 (cut_bf16_round's value): a bf16 operand element. */
static inline uint16_t cut_bf16_bits(float x) {
    uint32_t u;
    x = cut_bf16_round(x);
    memcpy(&u, &x, sizeof u);
    return (uint16_t)(u >> 16);
}

/* The fp32 value of bf16 bits (exact). */
static inline float cut_bf16_widen(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Uniform values in [lo, hi) from a fixed linear congruential sequence (reproducible). */
static inline void cut_fill(float *x, size_t n, unsigned seed, float lo, float hi) {
    unsigned long long s = 0x9E3779B97F4A7C15ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

#endif
