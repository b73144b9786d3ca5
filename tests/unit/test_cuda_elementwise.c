/* cuda_add / cuda_scale / cuda_sumsq against the CPU oracle (cpu_add, cpu_scale, cpu_sumsq) on
 * identical inputs: sizes 1, 31, 1000, 100003 and 1000003 (past the sumsq grid of 1024 x 256
 * threads, so its grid-stride loop runs), in-place adds, sumsq reruns bit-identical, sumsq from
 * a 16-byte aligned start (its float4 loads and tail) and from one element past it. Skipped
 * (77) without a device. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "cuda_ops_test_util.h"
#include "model/cpu/cpu_ops.h"

static const size_t SIZES[] = {1, 31, 1000, 100003, 1000003};
#define N_SIZES (sizeof SIZES / sizeof SIZES[0])

/* a + b and x * s are single IEEE roundings on both backends: bit-identical. */
static void test_add(void **state) {
    (void)state;
    for (size_t k = 0; k < N_SIZES; k++) {
        size_t n = SIZES[k];
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
        float *out = cot_nan(n);
        cut_fill(a, n, 11 + (unsigned)k, -3.0f, 3.0f);
        cut_fill(b, n, 23 + (unsigned)k, -1e-3f, 1e-3f);
        cpu_add(out, a, b, n);
        float *da = cot_dev(a, n), *db = cot_dev(b, n), *dout = cot_dev_nan(n);
        cuda_add(dout, da, db, n);
        cot_check_bits("add", dout, out, n);
        /* out aliasing a, then b: the same bits */
        cuda_add(da, da, db, n);
        cot_check_bits("add (out == a)", da, out, n);
        cuda_copy_from_host(da, a, n * sizeof(float));
        cuda_add(db, da, db, n);
        cot_check_bits("add (out == b)", db, out, n);
        cuda_free(da);
        cuda_free(db);
        cuda_free(dout);
        free(a);
        free(b);
        free(out);
    }
}

static void test_scale(void **state) {
    (void)state;
    for (size_t k = 0; k < N_SIZES; k++) {
        size_t n = SIZES[k];
        float *x = malloc(n * sizeof(float));
        cut_fill(x, n, 31 + (unsigned)k, -5.0f, 5.0f);
        float *dx = cot_dev(x, n);
        cpu_scale(x, 0.3737f, n);
        cuda_scale(dx, 0.3737f, n);
        cot_check_bits("scale", dx, x, n);
        cuda_free(dx);
        free(x);
    }
}

/* Both sides accumulate in double; they differ only in summation order: the CPU sums chunks of
 * n/256 terms (four interleaved accumulators) and then 256 chunk sums, the GPU a few terms per
 * thread and then trees. For positive terms the relative error of each is below (longest chain)
 * * 1.1e-16 ~ 1.5e-13 at n = 1e6; 1e-12 relative is a safe bound, and a dropped or doubled
 * element (>= 1e-7 relative here) or a float accumulator (~1e-7) fails it. */
#define SUMSQ_RTOL 1e-12

static void test_sumsq(void **state) {
    (void)state;
    assert_true(cuda_sumsq(NULL, 0) == 0.0);
    for (size_t k = 0; k < N_SIZES; k++) {
        size_t n = SIZES[k];
        float *x = malloc(n * sizeof(float));
        cut_fill(x, n, 41 + (unsigned)k, -2.0f, 2.0f);
        x[n - 1] = 1.5f; /* the last element counts (a dropped tail fails) */
        float *dx = cot_dev(x, n);
        double ref = cpu_sumsq(x, n);
        double got = cuda_sumsq(dx, n);
        double again = cuda_sumsq(dx, n);
        double rel = fabs(got - ref) / ref;
        printf("sumsq n=%-8zu gpu %.17g cpu %.17g rel %.3g\n", n, got, ref, rel);
        assert_true(rel <= SUMSQ_RTOL);
        assert_memory_equal(&got, &again, sizeof got); /* bit-identical rerun */
        if (n > 1) { /* from an element past a 16-byte boundary: the kernel's scalar path */
            double ref1 = cpu_sumsq(x + 1, n - 1), got1 = cuda_sumsq(dx + 1, n - 1);
            printf("sumsq n=%-8zu from x + 1: gpu %.17g cpu %.17g\n", n - 1, got1, ref1);
            assert_true(fabs(got1 - ref1) <= SUMSQ_RTOL * ref1);
        }
        cot_check_bits("sumsq leaves x", dx, x, n);
        cuda_free(dx);
        free(x);
    }
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_sumsq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
