/* The warpgroup matrix products of model/cuda/wgmma.cuh (wgmma.mma_async m64nNk16, bf16 in,
 * fp32 accumulate; sm_90a) on the device, through the test kernels of model/cuda/wgmma_test.h,
 * against a product computed here:
 *   - wgmma_rs (A from registers, in the m16n8k16 fragment layout of each warp's 16 rows) and
 *     wgmma_ss (A in shared memory, K-major and M-major), B K-major and N-major, for
 *     N in {8, 16, 32, 48, 64, 96, 256} (shapes of wgmma_asm.cuh; the fused attention's kernels
 *     use 32 and up), accumulate 0 (over NaN accumulators) and 1, operands staged as wgmma_tile_at
 *     places them with the LBO and SBO wgmma.cuh gives for its tiles, and in padded layouts
 *     with other strides and NaN gaps (so that a descriptor field read otherwise than the
 *     emulator reads it gives wrong elements or NaN); in blocks of one warpgroup and of two
 *     doing different products;
 *   - two groups in flight: after wgmma_wait<1> the first group's accumulators hold their
 *     product, after wgmma_wait<0> the second's.
 * The inputs are small integers (|a|, |b| <= 4, |c| <= 12): every product and sum is exact in
 * fp32 whatever the tensor cores' summation order, so the comparison is exact. This is the
 * check that the emulator's wgmma (tests/emu/emu_wgmma.cpp, which emu_selftest checks with the
 * same kernel and layouts) computes what the hardware computes. Exits 77 (skipped) without a device, on a
 * device other than compute capability 9.0, and in a build without sm_90a device code
 * (CMAKE_CUDA_ARCHITECTURES 90 rather than 90a: the wgmma functions would trap). Under the
 * host emulator (emu_test_cuda_wgmma) it runs in full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cuda_test_util.h"
#include "model/cuda/wgmma_test.h"

static int small_int(unsigned *s, int range) { /* in [-range, range] */
    *s = *s * 1103515245u + 12345u;
    return (int)((*s >> 16) % (unsigned)(2 * range + 1)) - range;
}

/* Random integer operands for nw warpgroups: a (64 x 16), b (16 x n) as bf16 bits and their
 * values, c (64 x n). */
typedef struct {
    int n, nw;
    int *av, *bv;
    uint16_t *a, *b;
    float *c, *d;
} operands;

static operands operands_make(int n, int nw, unsigned seed) {
    operands o = {n, nw, NULL, NULL, NULL, NULL, NULL, NULL};
    const size_t na = (size_t)nw * 64 * 16, nb = (size_t)nw * 16 * n, nd = (size_t)nw * 64 * n;
    o.av = malloc(na * sizeof(int));
    o.bv = malloc(nb * sizeof(int));
    o.a = malloc(na * sizeof(uint16_t));
    o.b = malloc(nb * sizeof(uint16_t));
    o.c = malloc(nd * sizeof(float));
    o.d = malloc(nd * sizeof(float));
    assert_true(o.av && o.bv && o.a && o.b && o.c && o.d);
    unsigned s = seed;
    for (size_t e = 0; e < na; e++) o.a[e] = cut_bf16_bits((float)(o.av[e] = small_int(&s, 4)));
    for (size_t e = 0; e < nb; e++) o.b[e] = cut_bf16_bits((float)(o.bv[e] = small_int(&s, 4)));
    for (size_t e = 0; e < nd; e++) o.c[e] = (float)small_int(&s, 12);
    return o;
}

static void operands_free(operands *o) {
    free(o->av);
    free(o->bv);
    free(o->a);
    free(o->b);
    free(o->c);
    free(o->d);
}

/* a_w b_w + (accumulate ? c_w : 0) at (m, j) of warpgroup w (b_w starting at b) */
static long reference(const operands *o, int w, const int *b, int m, int j, int accumulate) {
    const size_t at = ((size_t)w * 64 + m) * o->n + j;
    long r = accumulate ? (long)o->c[at] : 0;
    for (int k = 0; k < 16; k++) r += (long)o->av[(w * 64 + m) * 16 + k] * b[k * o->n + j];
    return r;
}

/* elements of d (64 x n of warpgroup w) that differ from the reference; the first few are
 * printed with their row and column (the pattern tells which layout was read otherwise) */
static int count_wrong(const operands *o, const float *d, int w, const int *b, int accumulate) {
    int bad = 0;
    for (int m = 0; m < 64; m++)
        for (int j = 0; j < o->n; j++) {
            const long want = reference(o, w, b, m, j, accumulate);
            if (d[m * o->n + j] == (float)want) continue;
            if (bad++ < 4)
                printf("  warpgroup %d (%d, %d): %g, expected %ld\n", w, m, j,
                       (double)d[m * o->n + j], want);
        }
    return bad;
}

/* One launch of nw warpgroups; returns the number of wrong elements (printing the case). */
static int product_case(int n, int a_smem, int ta, int tb, int nw, int padded_mask, int acc_mask,
                        unsigned seed) {
    operands o = operands_make(n, nw, seed);
    assert_int_equal(cuda_wgmma_test_product(o.d, o.a, o.b, o.c, n, nw, a_smem, ta, tb,
                                             padded_mask, acc_mask), 0);
    int bad = 0;
    for (int w = 0; w < nw; w++)
        bad += count_wrong(&o, o.d + (size_t)w * 64 * n, w, o.bv + (size_t)w * 16 * n,
                           acc_mask >> w & 1);
    if (bad)
        printf("FAIL wgmma_%s N=%d%s%s, B %s-major, %d warpgroup(s), padded mask %d, "
               "accumulate mask %d: %d of %d elements wrong\n", a_smem ? "ss" : "rs", n,
               a_smem ? ", A " : "", a_smem ? (ta ? "M-major" : "K-major") : "",
               tb ? "N" : "K", nw, padded_mask, acc_mask, bad, nw * 64 * n);
    operands_free(&o);
    return bad;
}

static void test_products(void **state) {
    (void)state;
    static const int ns[] = {8, 16, 32, 48, 64, 96, 256};
    int failed = 0, runs = 0;
    for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
        for (int mode = 0; mode < 6; mode++) { /* rs B K, rs B N, ss A K/M x B K/N */
            const int a_smem = mode >= 2, ta = mode >= 4, tb = a_smem ? mode % 2 : mode;
            const unsigned seed = 1000u * (unsigned)ns[in] + 10u * (unsigned)mode;
            for (int c = 0; c < 4; c++, runs++) /* one warpgroup: (padded, accumulate) */
                failed += product_case(ns[in], a_smem, ta, tb, 1, c & 1, c >> 1, seed + c) != 0;
            /* two warpgroups: (tiles, 0) beside (padded, 1), and the reverse */
            for (int c = 0; c < 2; c++, runs++)
                failed += product_case(ns[in], a_smem, ta, tb, 2, c ? 1 : 2, c ? 1 : 2,
                                       seed + 5 + c) != 0;
        }
    printf("wgmma products: %d of %d runs wrong\n", failed, runs);
    assert_int_equal(failed, 0);
}

static void test_two_groups(void **state) {
    (void)state;
    operands o = operands_make(64, 1, 777u), o2 = operands_make(64, 1, 778u);
    uint16_t b[2 * 16 * 64];
    memcpy(b, o.b, 16 * 64 * sizeof(uint16_t));
    memcpy(b + 16 * 64, o2.b, 16 * 64 * sizeof(uint16_t));
    float *d2 = malloc(64 * 64 * sizeof(float));
    assert_non_null(d2);
    cuda_wgmma_test_two_groups(o.d, d2, o.a, b, o.c);
    const int bad1 = count_wrong(&o, o.d, 0, o.bv, 1), bad2 = count_wrong(&o, d2, 0, o2.bv, 1);
    printf("two groups in flight: %d and %d of 4096 elements wrong\n", bad1, bad2);
    assert_int_equal(bad1, 0);
    assert_int_equal(bad2, 0);
    free(d2);
    operands_free(&o);
    operands_free(&o2);
}

int main(void) {
    cut_require_support(cuda_wgmma_test_supported, "wgmma");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_products),
        cmocka_unit_test(test_two_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
