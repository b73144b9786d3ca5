/* cpu_add, cpu_scale and cpu_sumsq against double references; sumsq must give the same bits for
 * any number of threads (it feeds the global gradient norm and clipping). */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"

/* add and scale round once in fp32: 6e-8 relative; 1e-7 relative + 1e-12 absolute. */
#define EW_ATOL 1e-12
#define EW_RTOL 1.2e-7

static void test_add_scale(void **state) {
    (void)state;
    const size_t sizes[3] = {1, 1000, 70001}; /* the last takes the parallel path */
    for (int k = 0; k < 3; k++) {
        size_t n = sizes[k];
        float *a = ctu_falloc(n), *b = ctu_falloc(n), *out = ctu_falloc(n);
        double *ref = ctu_dalloc(n);
        tu_fill_normal_f(a, n, 91, 1.0);
        tu_fill_normal_f(b, n, 92, 3.0);
        for (size_t i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
        cpu_add(out, a, b, n);
        assert_close_f(out, ref, n, EW_ATOL, EW_RTOL, "add");
        cpu_add(a, a, b, n); /* out aliases a */
        assert_close_f(a, ref, n, EW_ATOL, EW_RTOL, "add (out == a)");
        tu_fill_normal_f(a, n, 91, 1.0);
        cpu_add(b, a, b, n); /* out aliases b */
        assert_close_f(b, ref, n, EW_ATOL, EW_RTOL, "add (out == b)");

        for (size_t i = 0; i < n; i++) ref[i] = (double)a[i] * -0.37f;
        cpu_scale(a, -0.37f, n);
        assert_close_f(a, ref, n, EW_ATOL, EW_RTOL, "scale");
        free(a), free(b), free(out), free(ref);
    }
}

/* sumsq in double: products of two floats are exact in double, so the only error is the
 * summation order, ~n * 1.1e-16 relative in the worst case; 1e-12 relative for n <= 1e6. */
static void test_sumsq(void **state) {
    (void)state;
    const size_t sizes[5] = {0, 1, 255, 257, 1000003};
    for (int k = 0; k < 5; k++) {
        size_t n = sizes[k];
        float *x = ctu_falloc(n);
        tu_fill_normal_f(x, n, 93, 2.0);
        /* reference: Kahan-compensated sum in double, independent of the op's blocking */
        double s = 0, comp = 0;
        for (size_t i = 0; i < n; i++) {
            double y = (double)x[i] * x[i] - comp;
            double t = s + y;
            comp = (t - s) - y;
            s = t;
        }
        double got = cpu_sumsq(x, n);
        assert_true(tu_close(got, s, 0, 1e-12));
        if (n == 0) assert_true(got == 0.0);
        free(x);
    }
}

static void test_sumsq_thread_independent(void **state) {
    (void)state;
    const size_t n = 2000003;
    float *x = ctu_falloc(n);
    tu_fill_normal_f(x, n, 94, 1.0);
    /* magnitudes spread over 1e-3 .. 1e3, so that a different summation order changes the
     * low bits of the double result */
    for (size_t i = 0; i < n; i++) x[i] *= (float)pow(10.0, (double)(i % 7) - 3.0);
    int threads[4] = {1, 2, 3, 7}, saved = omp_get_max_threads();
    double r[4];
    for (int k = 0; k < 4; k++) {
        omp_set_num_threads(threads[k]);
        r[k] = cpu_sumsq(x, n);
    }
    omp_set_num_threads(saved);
    for (int k = 1; k < 4; k++) assert_memory_equal(&r[0], &r[k], sizeof(double));
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_scale),
        cmocka_unit_test(test_sumsq),
        cmocka_unit_test(test_sumsq_thread_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
