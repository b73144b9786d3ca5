/* The CPU backend's ops for a training step without read-backs (model/backend.h): the loss
 * accumulator, the gradient sum of squares accumulated into a double, the clipping factor, AdamW
 * reading its factor from memory and skipping a refused step, and the host staging ops.
 *
 * The first three replace arithmetic the trainer did on the host (launch/train.c before the
 * step moved to the backend): the loss as the mean model_forward returned, in float, added to a
 * double; the run sums of sumsq added in double; optimizer_clip_scale's factor. The CPU must
 * keep those bits, so each is checked bit for bit against that host formula, and against an
 * independent high-precision reference within the rounding it allows. */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"
#include "util/alloc.h"

/* ---- loss_accumulate ---- */

/* The trainer's former host arithmetic: model_forward's mean (row order, double, then float) and
 * `loss_sum += mean` in double. */
static double host_loss_step(double acc, const float *losses, int N, int n_targets) {
    double sum = 0;
    for (int i = 0; i < N; i++) sum += losses[i];
    float mean = n_targets ? (float)(sum / n_targets) : 0.0f;
    return acc + mean;
}

static void test_loss_accumulate(void **state) {
    (void)state;
    const int sizes[4] = {1, 38, 1000, 70001};
    for (int k = 0; k < 4; k++) {
        int N = sizes[k];
        float *losses = ctu_falloc((size_t)N);
        tu_fill_normal_f(losses, (size_t)N, 300 + (uint64_t)k, 2.0);
        for (int i = 0; i < N; i++) losses[i] = fabsf(losses[i]) + (i % 5 == 0 ? 0.0f : 3.0f);
        int n_targets = N - N / 5; /* the ignored rows hold some zeros, not all */
        if (n_targets == 0) n_targets = 1;
        double acc = 0.625, expect = host_loss_step(0.625, losses, N, n_targets);
        cpu_loss_accumulate(&acc, losses, N, &n_targets);
        assert_memory_equal(&acc, &expect, sizeof acc); /* the trainer's bits */
        /* a second micro-batch adds on */
        expect = host_loss_step(expect, losses, N, N);
        cpu_loss_accumulate(&acc, losses, N, &N);
        assert_memory_equal(&acc, &expect, sizeof acc);
        /* independent reference: long double sum, the mean rounded once to float (1 ulp) */
        long double exact = 0;
        for (int i = 0; i < N; i++) exact += losses[i];
        double mean = (double)(exact / N), got = acc - host_loss_step(0.625, losses, N, n_targets);
        assert_true(tu_close(got, mean, 0, 1.2e-7));
        free(losses);
    }
    /* the order is the rows' (as the host summed them): with cancellation in double, another
     * order gives another mean (row order: 3 and 5 vanish against 1e17, the mean is 7 / 5;
     * reversed: 7 and 5 vanish, 3 / 5) */
    const float order[5] = {3.0f, 1e17f, 5.0f, -1e17f, 7.0f};
    double in_order = 0;
    const int32_t five = 5, none = 0;
    cpu_loss_accumulate(&in_order, order, 5, &five);
    assert_true(in_order == (double)(float)(7.0 / 5));
    /* no targets: nothing is added, whatever the rows hold */
    float junk[3] = {1.0f, NAN, 2.0f};
    double acc = 4.5;
    cpu_loss_accumulate(&acc, junk, 3, &none);
    assert_true(acc == 4.5);
}

/* ---- sumsq_accumulate ---- */

static void test_sumsq_accumulate(void **state) {
    (void)state;
    const size_t sizes[4] = {0, 1, 257, 1000003};
    for (int k = 0; k < 4; k++) {
        size_t n = sizes[k];
        float *x = ctu_falloc(n);
        tu_fill_normal_f(x, n, 310 + (uint64_t)k, 1.5);
        double acc = 0.25, again = 0.25, expect = 0.25 + cpu_sumsq(x, n);
        cpu_sumsq_accumulate(&acc, x, n);
        assert_memory_equal(&acc, &expect, sizeof acc); /* as `sum += be->sumsq(run)` did */
        int saved = omp_get_max_threads();
        omp_set_num_threads(saved > 1 ? 1 : 2); /* the other thread count: the same bits */
        cpu_sumsq_accumulate(&again, x, n);
        omp_set_num_threads(saved);
        assert_memory_equal(&again, &acc, sizeof acc);
        long double exact = 0.25L;
        for (size_t i = 0; i < n; i++) exact += (long double)x[i] * x[i];
        assert_true(tu_close(acc, (double)exact, 0, 1e-12));
        free(x);
    }
}

/* ---- clip_scale ---- */

/* optimizer_clip_scale's formula as the trainer applied it to sqrt(sumsq). */
static float host_clip(double sumsq, double clip) {
    double norm = sqrt(sumsq);
    if (clip <= 0 || norm <= clip || !isfinite(norm)) return 1.0f;
    return (float)(clip / norm);
}

static void test_clip_scale(void **state) {
    (void)state;
    const double sumsqs[6] = {0.0, 0.04, 0.25, 0.2500001, 17.3, 1e30};
    const double clips[4] = {0.0, 0.5, 1.0, 1e-3};
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) {
            float got = -1.0f, expect = host_clip(sumsqs[i], clips[j]);
            double loss = 3.25;
            cpu_clip_scale(&got, &sumsqs[i], &loss, clips[j]);
            assert_memory_equal(&got, &expect, sizeof got);
            /* and the meaning: clipped norm = clip (to float rounding), else untouched */
            double norm = sqrt(sumsqs[i]);
            if (clips[j] > 0 && norm > clips[j])
                assert_true(tu_close(got * norm, clips[j], 0, 1.2e-7));
            else
                assert_true(got == 1.0f);
        }
    /* a non-finite sum of squares or loss refuses the step: NaN */
    const double bad[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        float got = 1.0f;
        double ok = 1.0;
        cpu_clip_scale(&got, &bad[i], &ok, 1.0);
        assert_true(isnan(got));
        got = 1.0f;
        cpu_clip_scale(&got, &ok, &bad[i], 1.0);
        assert_true(isnan(got));
        got = 1.0f;
        cpu_clip_scale(&got, &ok, &bad[i], 0.0); /* even without clipping */
        assert_true(isnan(got));
    }
}

/* ---- adamw_update: the factor read from memory; a non-finite one refuses the step ---- */

static void test_adamw_refused(void **state) {
    (void)state;
    enum { N = 40000 }; /* the parallel path */
    float *p = ctu_falloc(N), *m = ctu_falloc(N), *v = ctu_falloc(N), *g = ctu_falloc(N);
    float *p0 = ctu_falloc(N), *m0 = ctu_falloc(N), *v0 = ctu_falloc(N);
    tu_fill_normal_f(p, N, 320, 1.0);
    tu_fill_normal_f(m, N, 321, 0.01);
    tu_fill_normal_f(v, N, 322, 1e-4);
    tu_fill_normal_f(g, N, 323, 0.1);
    for (int i = 0; i < N; i++) v[i] = fabsf(v[i]);
    memcpy(p0, p, N * sizeof(float));
    memcpy(m0, m, N * sizeof(float));
    memcpy(v0, v, N * sizeof(float));
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        cpu_adamw_update(p, m, v, g, N, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, &bad[i], 7);
        assert_true(ctu_same_bits(p, p0, N) && ctu_same_bits(m, m0, N) && ctu_same_bits(v, v0, N));
    }
    const float half = 0.5f; /* a finite factor moves all three */
    cpu_adamw_update(p, m, v, g, N, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, &half, 7);
    assert_false(ctu_same_bits(p, p0, N) || ctu_same_bits(m, m0, N) || ctu_same_bits(v, v0, N));
    free(p), free(m), free(v), free(g), free(p0), free(m0), free(v0);
}

/* ---- host staging ---- */

static void test_host_staging(void **state) {
    (void)state;
    enum { N = 1000 };
    int32_t *stage = cpu_host_alloc(N * sizeof(int32_t));
    int32_t *dev = cpu_alloc(N * sizeof(int32_t)), back[N];
    assert_non_null(stage);
    assert_non_null(dev);
    for (int i = 0; i < N; i++) stage[i] = 7 * i - 3;
    cpu_copy_from_host_async(dev + 1, stage + 2, (N - 2) * sizeof(int32_t));
    cpu_host_wait(stage + 5); /* any pointer into the buffer */
    for (int i = 0; i < N; i++) stage[i] = -1; /* refilled: the copy has its data already */
    cpu_copy_to_host(back, dev, N * sizeof(int32_t));
    assert_int_equal(back[0], 0);
    for (int i = 1; i < N - 1; i++) assert_int_equal(back[i], 7 * (i + 1) - 3);
    cpu_copy_from_host_async(dev, stage, 0); /* zero bytes: no-op */
    cpu_host_free(stage);
    cpu_host_free(NULL);
    cpu_free(dev);
    void *z = cpu_host_alloc(0); /* a valid, freeable pointer */
    assert_non_null(z);
    cpu_host_free(z);
    dt_alloc_fail_after(1); /* the allocation failure is reported as NULL */
    void *f = cpu_host_alloc(64);
    dt_alloc_fail_after(0);
    assert_null(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_accumulate),
        cmocka_unit_test(test_sumsq_accumulate),
        cmocka_unit_test(test_clip_scale),
        cmocka_unit_test(test_adamw_refused),
        cmocka_unit_test(test_host_staging),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
