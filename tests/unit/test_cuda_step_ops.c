/* The CUDA ops of a training step without read-backs against the CPU oracle on identical
 * inputs: sumsq_accumulate (double, deterministic: reruns give the same bits; past the 1024 x
 * 256 grid), loss_accumulate (one block's fixed tree; n_targets 0 adds nothing), clip_scale
 * (bit-identical: IEEE double sqrt and division on both sides; NaN for a refused step),
 * adamw_update leaving params, m and v untouched for a non-finite factor, and the host staging
 * buffers (asynchronous upload, wait, refill, free) with the synchronisation counter: staging
 * uploads and waits never count, each read-back counts once. Skipped (77) without a device. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cuda_ops_test_util.h"
#include "model/cpu/cpu_ops.h"

static double *dev_double(double v) {
    double *d = cut_to_device(&v, sizeof v);
    return d;
}

static double host_double(const double *d) {
    double v = 0;
    cuda_copy_to_host(&v, d, sizeof v);
    return v;
}

/* ---- sumsq_accumulate ---- */

/* Summation orders differ (model/cuda/elementwise.cu: per-thread strides and trees; the CPU:
 * 256 chunks in order): 1e-12 relative, as test_cuda_elementwise's sumsq. */
#define SUMSQ_RTOL 1e-12

static void test_sumsq_accumulate(void **state) {
    (void)state;
    const size_t sizes[4] = {1, 1000, 100003, 1000003};
    for (size_t k = 0; k < 4; k++) {
        size_t n = sizes[k];
        float *x = malloc(n * sizeof(float));
        cut_fill(x, n, 60 + (unsigned)k, -2.0f, 2.0f);
        float *dx = cot_dev(x, n);
        double cpu = 0.375, *d1 = dev_double(0.375), *d2 = dev_double(0.375);
        cpu_sumsq_accumulate(&cpu, x, n);
        cpu_sumsq_accumulate(&cpu, x, n / 2 + 1); /* a second run adds on */
        cuda_sumsq_accumulate(d1, dx, n);
        cuda_sumsq_accumulate(d1, dx, n / 2 + 1);
        cuda_sumsq_accumulate(d2, dx, n);
        cuda_sumsq_accumulate(d2, dx, n / 2 + 1);
        double g1 = host_double(d1), g2 = host_double(d2);
        printf("sumsq_accumulate n=%-8zu gpu %.17g cpu %.17g rel %.3g\n", n, g1, cpu,
               fabs(g1 - cpu) / cpu);
        assert_true(fabs(g1 - cpu) <= SUMSQ_RTOL * cpu);
        assert_memory_equal(&g1, &g2, sizeof g1); /* deterministic */
        /* the host-returning sumsq runs the same kernels: 0.375 + it, in the same order */
        double first = 0.375 + cuda_sumsq(dx, n);
        double *d3 = dev_double(0.375);
        cuda_sumsq_accumulate(d3, dx, n);
        double g3 = host_double(d3);
        assert_memory_equal(&g3, &first, sizeof g3);
        cuda_sumsq_accumulate(d3, dx, 0); /* nothing to add */
        assert_true(host_double(d3) == g3);
        cuda_free(dx), cuda_free(d1), cuda_free(d2), cuda_free(d3);
        free(x);
    }
}

/* ---- loss_accumulate ---- */

/* The row sums in double differ in order only (~1e-16 relative); the mean is then rounded to
 * float on each side, which can land one float ulp apart at a rounding boundary: 1.2e-7
 * relative of the mean. A dropped row or a float accumulator errs by far more here (the rows
 * are ~1 to 4, 38 .. 70001 of them). */
#define LOSS_RTOL 1.2e-7

static void test_loss_accumulate(void **state) {
    (void)state;
    const int sizes[5] = {1, 38, 256, 1000, 70001};
    for (int k = 0; k < 5; k++) {
        int N = sizes[k];
        float *losses = malloc((size_t)N * sizeof(float));
        cut_fill(losses, (size_t)N, 70 + (unsigned)k, 1.0f, 4.0f);
        losses[N - 1] = 9.5f; /* the last row counts */
        float *d_losses = cot_dev(losses, (size_t)N);
        const int32_t n_targets = N > 3 ? N - 3 : N, none = 0;
        int32_t *d_n = cot_dev_i32(&n_targets, 1), *d_none = cot_dev_i32(&none, 1);
        double cpu = 1.5, *d1 = dev_double(1.5), *d2 = dev_double(1.5);
        cpu_loss_accumulate(&cpu, losses, N, &n_targets);
        cuda_loss_accumulate(d1, d_losses, N, d_n);
        cuda_loss_accumulate(d2, d_losses, N, d_n);
        double g1 = host_double(d1), g2 = host_double(d2);
        printf("loss_accumulate N=%-6d gpu %.17g cpu %.17g\n", N, g1, cpu);
        assert_true(fabs((g1 - 1.5) - (cpu - 1.5)) <= LOSS_RTOL * (cpu - 1.5));
        assert_memory_equal(&g1, &g2, sizeof g1); /* deterministic */
        cuda_loss_accumulate(d1, d_losses, N, d_none); /* no targets: adds 0 */
        assert_true(host_double(d1) == g1);
        cuda_free(d_losses), cuda_free(d1), cuda_free(d2), cuda_free(d_n), cuda_free(d_none);
        free(losses);
    }
}

/* ---- clip_scale ---- */

static void test_clip_scale(void **state) {
    (void)state;
    const double sumsqs[7] = {0.0, 0.04, 0.25, 0.2500001, 17.3, 1e30, NAN};
    const double losses[3] = {2.5, INFINITY, NAN};
    const double clips[3] = {0.0, 0.5, 1e-3};
    double *d_sumsq = dev_double(0), *d_loss = dev_double(0);
    float *d_scale = cot_dev_nan(1);
    for (int i = 0; i < 7; i++)
        for (int l = 0; l < 3; l++)
            for (int j = 0; j < 3; j++) {
                float cpu = -1.0f;
                cpu_clip_scale(&cpu, &sumsqs[i], &losses[l], clips[j]);
                cuda_copy_from_host(d_sumsq, &sumsqs[i], sizeof(double));
                cuda_copy_from_host(d_loss, &losses[l], sizeof(double));
                cuda_clip_scale(d_scale, d_sumsq, d_loss, clips[j]);
                float gpu = 0;
                cuda_copy_to_host(&gpu, d_scale, sizeof gpu);
                if (isnan(cpu)) /* a refused step: NaN on both (its payload may differ) */
                    assert_true(isnan(gpu));
                else
                    assert_memory_equal(&gpu, &cpu, sizeof gpu);
                assert_true(isnan(cpu) == (l > 0 || i == 6));
            }
    cuda_free(d_sumsq), cuda_free(d_loss), cuda_free(d_scale);
}

/* ---- adamw_update refuses a step with a non-finite factor ---- */

static void test_adamw_refused(void **state) {
    (void)state;
    const size_t n = 100003;
    float *p = malloc(n * sizeof(float)), *m = malloc(n * sizeof(float));
    float *v = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    cut_fill(p, n, 80, -1.0f, 1.0f);
    cut_fill(m, n, 81, -0.1f, 0.1f);
    cut_fill(v, n, 82, 1e-4f, 1e-2f);
    cut_fill(g, n, 83, -1.0f, 1.0f);
    float *d_p = cot_dev(p, n), *d_m = cot_dev(m, n), *d_v = cot_dev(v, n), *d_g = cot_dev(g, n);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        float *d_scale = cot_dev(&bad[i], 1);
        cuda_adamw_update(d_p, d_m, d_v, d_g, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, d_scale, 3);
        cot_check_bits("adamw refused: params", d_p, p, n);
        cot_check_bits("adamw refused: m", d_m, m, n);
        cot_check_bits("adamw refused: v", d_v, v, n);
        cuda_free(d_scale);
    }
    const float one = 1.0f; /* a finite factor moves them as the CPU does */
    float *d_one = cot_dev(&one, 1);
    cuda_adamw_update(d_p, d_m, d_v, d_g, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, d_one, 3);
    cpu_adamw_update(p, m, v, g, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, &one, 3);
    cot_check("adamw params", d_p, p, n, 1e-8, 2e-6); /* test_cuda_misc's tolerances */
    cuda_free(d_p), cuda_free(d_m), cuda_free(d_v), cuda_free(d_g), cuda_free(d_one);
    free(p), free(m), free(v), free(g);
}

/* ---- host staging and the synchronisation counter ---- */

static void test_host_staging(void **state) {
    (void)state;
    enum { N = 5000 };
    int32_t *stage = cuda_host_alloc(2 * N * sizeof(int32_t)); /* (2, N) as the model's */
    int32_t *d_a = cut_to_device(NULL, N * sizeof(int32_t)), *d_b = cut_to_device(NULL, 64);
    assert_non_null(stage);
    int32_t *back = malloc(N * sizeof(int32_t));
    unsigned long long syncs = cuda_sync_count();
    for (int round = 0; round < 3; round++) {
        cuda_host_wait(stage); /* before refilling: the previous round's upload is done */
        for (int i = 0; i < 2 * N; i++) stage[i] = 1000 * round + i;
        cuda_copy_from_host_async(d_a, stage, N * sizeof(int32_t));
        cuda_copy_from_host_async(d_b, stage + N + 3, 16 * sizeof(int32_t)); /* the second half */
        assert_true(cuda_sync_count() == syncs); /* queued: the host did not wait */
        cuda_host_wait(stage + N); /* any pointer into the buffer */
        assert_true(cuda_sync_count() == syncs); /* a staging wait is not a synchronisation */
        cuda_copy_to_host(back, d_a, N * sizeof(int32_t));
        assert_true(cuda_sync_count() == ++syncs); /* the read-back is one */
        for (int i = 0; i < N; i++) assert_int_equal(back[i], 1000 * round + i);
        cuda_copy_to_host(back, d_b, 16 * sizeof(int32_t));
        syncs++;
        for (int i = 0; i < 16; i++) assert_int_equal(back[i], 1000 * round + N + 3 + i);
    }
    cuda_copy_from_host_async(d_a, stage, 0); /* zero bytes: no-op */
    cuda_host_free(stage);
    cuda_host_free(NULL);
    printf("staging waits that blocked: %llu\n", cuda_staging_wait_count());
    cuda_free(d_a), cuda_free(d_b);
    free(back);
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sumsq_accumulate),
        cmocka_unit_test(test_loss_accumulate),
        cmocka_unit_test(test_clip_scale),
        cmocka_unit_test(test_adamw_refused),
        cmocka_unit_test(test_host_staging),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
