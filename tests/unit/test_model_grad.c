/* The whole model's backward against central finite differences, for every architecture.
 *
 * For each tensor, a random unit direction u over its elements: the directional derivative
 * (L(p + eps u) - L(p - eps u)) / (2 eps), with the loss summed in double, must match g . u from
 * the backward. Every tensor is checked on its own, so a wrong gradient of one lambda vector or
 * of the subln gain cannot hide behind a large embedding gradient. The op-level tests check
 * each backward against finite differences of double-precision references; this test checks
 * that the model wires them together right, including the tied head, GQA and the lambda path. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "model/model.h"
#include "model_test_util.h"
#include "testutil.h"
#include "util/rng.h"

enum { B = 2, T = 7 };

static double loss_at(dt_model *m, const float *params, const int32_t *x, const int32_t *y) {
    model_params_from_host(m, params);
    return model_forward(m, x, y);
}

static void check_case(const model_case *c) {
    dt_model_config cfg;
    model_case_config(&cfg, c);
    dt_model m;
    assert_int_equal(model_init(&m, &cfg, dt_backend_cpu(), 7, B, T), DT_OK);
    int32_t x[B * T], y[B * T];
    model_case_tokens(x, B * T, cfg.vocab_size, 1);
    model_case_tokens(y, B * T, cfg.vocab_size, 2);
    y[3] = -1; /* an ignored target */

    size_t P = m.layout.total;
    float *p = malloc(P * sizeof(float)), *g = malloc(P * sizeof(float));
    float *work = malloc(P * sizeof(float));
    assert_non_null(p);
    assert_non_null(g);
    assert_non_null(work);
    model_zero_grad(&m);
    model_forward(&m, x, y);
    model_backward(&m, 1.0f);
    model_params_to_host(&m, p);
    model_grads_to_host(&m, g);

    const double eps = 1e-2;
    double worst = 0;
    for (int ti = 0; ti < m.layout.n_tensors; ti++) {
        const dt_tensor_spec *t = &m.layout.tensors[ti];
        uint64_t key = rng_key(99, t->name);
        double norm = 0, analytic = 0;
        for (size_t j = 0; j < t->numel; j++) norm += pow(rng_normal(key, j), 2);
        norm = sqrt(norm);
        for (size_t j = 0; j < t->numel; j++)
            analytic += g[t->offset + j] * rng_normal(key, j) / norm;
        double L[2];
        for (int s = 0; s < 2; s++) {
            memcpy(work, p, P * sizeof(float));
            for (size_t j = 0; j < t->numel; j++)
                work[t->offset + j] += (float)((s ? -eps : eps) * rng_normal(key, j) / norm);
            L[s] = loss_at(&m, work, x, y);
        }
        double numeric = (L[0] - L[1]) / (2 * eps);
        /* fp32 forward: loss rounding ~1e-6 over 2 eps = 2e-2 gives ~5e-5 of noise at most (measured: ~1e-5), and the
         * O(eps^2) truncation of central differences stays below 1e-3 relative here. */
        const double atol = 5e-5, rtol = 5e-3;
        double err = fabs(analytic - numeric) / (atol + rtol * fabs(numeric));
        if (err > worst) worst = err;
        if (!tu_close(analytic, numeric, atol, rtol)) {
            print_error("%s: %s: backward %.8g vs finite difference %.8g\n", c->label,
                           t->name, analytic, numeric);
            fail();
        }
    }
    printf("%-32s worst |backward - fd| / tolerance = %.3f\n", c->label, worst);
    free(p);
    free(g);
    free(work);
    model_free(&m);
}

static void test_model_gradients(void **state) {
    (void)state;
    for (int i = 0; i < N_MODEL_CASES; i++) check_case(&model_cases[i]);
}

/* The gradient is accumulated over micro-batches: two backward passes of scale 1/2 equal one
 * of scale 1. */
static void test_gradient_accumulates(void **state) {
    (void)state;
    dt_model_config cfg;
    model_case_config(&cfg, &model_cases[0]);
    dt_model m;
    assert_int_equal(model_init(&m, &cfg, dt_backend_cpu(), 7, B, T), DT_OK);
    int32_t x[B * T], y[B * T];
    model_case_tokens(x, B * T, cfg.vocab_size, 1);
    model_case_tokens(y, B * T, cfg.vocab_size, 2);
    size_t P = m.layout.total;
    float *g1 = malloc(P * sizeof(float)), *g2 = malloc(P * sizeof(float));
    double *ref = malloc(P * sizeof(double));
    model_zero_grad(&m);
    model_forward(&m, x, y);
    model_backward(&m, 1.0f);
    model_grads_to_host(&m, g1);
    model_zero_grad(&m);
    for (int k = 0; k < 2; k++) {
        model_forward(&m, x, y);
        model_backward(&m, 0.5f);
    }
    model_grads_to_host(&m, g2);
    for (size_t i = 0; i < P; i++) ref[i] = g1[i];
    /* two halves summed in fp32 differ from the whole by rounding only */
    assert_close_f(g2, ref, P, 1e-7, 1e-5, "accumulated gradient");
    free(g1);
    free(g2);
    free(ref);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_gradients),
        cmocka_unit_test(test_gradient_accumulates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
