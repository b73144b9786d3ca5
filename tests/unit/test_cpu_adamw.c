/* cpu_adamw_update against a double implementation of the formula in model/backend.h, over
 * several steps, with and without weight decay, and with grad_scale != 1. */
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

/* Tolerances. Each step rounds m, v and p to fp32 (relative 6e-8) and the step size is
 * lr * O(1) = 1e-2; over 6 steps the parameters (O(1)) drift from the double reference by
 * < 1e-6 and the moments by a few ulp. A wrong bias correction (t 0-based), coupled decay
 * (wd * p added to g) or a missing grad_scale changes p by >= 1e-4 within these steps. */
#define P_ATOL 1e-6
#define P_RTOL 1e-6
#define M_ATOL 1e-8
#define M_RTOL 1e-5

typedef struct adamw_hp {
    double lr, b1, b2, eps, wd, scale;
} adamw_hp;

static void ref_adamw(double *p, double *m, double *v, const double *g, size_t n, adamw_hp hp,
                      int t) {
    double bc1 = 1 - pow(hp.b1, t), bc2 = 1 - pow(hp.b2, t);
    for (size_t i = 0; i < n; i++) {
        double gi = g[i] * hp.scale;
        m[i] = hp.b1 * m[i] + (1 - hp.b1) * gi;
        v[i] = hp.b2 * v[i] + (1 - hp.b2) * gi * gi;
        double mhat = m[i] / bc1, vhat = v[i] / bc2;
        p[i] -= hp.lr * (mhat / (sqrt(vhat) + hp.eps) + hp.wd * p[i]);
    }
}

static void check_adamw(adamw_hp hp, int t0, int steps, size_t n) {
    float *p = ctu_falloc(n), *m = ctu_falloc(n), *v = ctu_falloc(n), *g = ctu_falloc(n);
    double *p_d = ctu_dalloc(n), *m_d = ctu_dalloc(n), *v_d = ctu_dalloc(n), *g_d = ctu_dalloc(n);
    tu_fill_normal_f(p, n, 81, 1.0);
    ctu_to_double(p_d, p, n);
    /* m = v = 0 at t0 = 1; a later t0 starts from plausible moments */
    if (t0 > 1) {
        tu_fill_normal_f(m, n, 82, 0.01);
        tu_fill_normal_f(v, n, 83, 1e-4);
        for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        ctu_to_double(m_d, m, n);
        ctu_to_double(v_d, v, n);
    }
    for (int s = 0; s < steps; s++) {
        int t = t0 + s;
        tu_fill_normal_f(g, n, 100 + (uint64_t)t, 0.1); /* a fresh gradient each step */
        ctu_to_double(g_d, g, n);
        float scale = (float)hp.scale;
        cpu_adamw_update(p, m, v, g, n, (float)hp.lr, (float)hp.b1, (float)hp.b2, (float)hp.eps,
                         (float)hp.wd, &scale, t);
        /* the reference uses the fp32-rounded hyperparameters the op received */
        adamw_hp hf = {(float)hp.lr, (float)hp.b1, (float)hp.b2, (float)hp.eps, (float)hp.wd,
                       (float)hp.scale};
        ref_adamw(p_d, m_d, v_d, g_d, n, hf, t);
        assert_close_f(p, p_d, n, P_ATOL, P_RTOL, "adamw params");
        assert_close_f(m, m_d, n, M_ATOL, M_RTOL, "adamw m");
        assert_close_f(v, v_d, n, M_ATOL * 1e-2, M_RTOL, "adamw v");
    }
    free(p), free(m), free(v), free(g), free(p_d), free(m_d), free(v_d), free(g_d);
}

static void test_adamw_no_decay(void **state) {
    (void)state;
    adamw_hp hp = {1e-2, 0.9, 0.95, 1e-8, 0.0, 1.0};
    check_adamw(hp, 1, 6, 1001);
}

static void test_adamw_decay_and_scale(void **state) {
    (void)state;
    adamw_hp hp = {1e-2, 0.9, 0.98, 1e-8, 0.1, 0.37};
    check_adamw(hp, 1, 6, 1001);
    /* late in training (t ~ 1e4: bias corrections ~ 1) and on the parallel path */
    adamw_hp hp2 = {3e-3, 0.9, 0.999, 1e-6, 0.05, 2.5};
    check_adamw(hp2, 10000, 3, 40000);
}

/* Step 1 from m = v = 0, by hand: mhat = g s, vhat = (g s)^2, so
 * p1 = p - lr * (g s / (|g s| + eps) + wd * p). */
static void test_adamw_first_step_by_hand(void **state) {
    (void)state;
    float p[3] = {0.5f, -1.0f, 2.0f}, m[3] = {0}, v[3] = {0}, g[3] = {0.2f, -0.04f, 3.0f};
    const float lr = 0.01f, wd = 0.1f, s = 0.5f;
    cpu_adamw_update(p, m, v, g, 3, lr, 0.9f, 0.95f, 0.0f, wd, &s, 1);
    double expect[3];
    const double p0[3] = {0.5, -1.0, 2.0}, g0[3] = {0.2f, -0.04f, 3.0f};
    for (int i = 0; i < 3; i++)
        expect[i] = p0[i] - (double)lr * ((g0[i] > 0 ? 1.0 : -1.0) + (double)wd * p0[i]);
    assert_close_f(p, expect, 3, 1e-7, 1e-6, "adamw first step");
    double m_exp[3], v_exp[3];
    for (int i = 0; i < 3; i++) {
        m_exp[i] = (1 - 0.9f) * g0[i] * s;
        v_exp[i] = (1 - 0.95f) * g0[i] * s * g0[i] * s;
    }
    assert_close_f(m, m_exp, 3, 0, 1e-6, "adamw first m");
    assert_close_f(v, v_exp, 3, 0, 1e-6, "adamw first v");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_no_decay),
        cmocka_unit_test(test_adamw_decay_and_scale),
        cmocka_unit_test(test_adamw_first_step_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
