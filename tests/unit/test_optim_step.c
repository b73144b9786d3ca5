/* The training step of optim/step.h on the CPU backend:
 * - bit for bit the host arithmetic the trainer used before the step's scalars moved to the
 *   backend (model_forward's returned means summed in double, optimizer_grad_sumsq read back,
 *   sqrt, optimizer_clip_scale, optimizer_step with a host factor): the loss, the norm and
 *   params / m / v after each of 3 steps, for every model case, with and without recompute,
 *   with clipping active and off;
 * - a refused step (a NaN gradient, then a NaN loss) leaves params, m, v and the step count as
 *   they were and reports today's message; the next good step is bit-identical to that of a run
 *   that never saw the refused ones (the bias correction uses the right count). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "step_test_util.h"

static dt_optim_config optim_config(double grad_clip) {
    dt_optim_config o;
    memset(&o, 0, sizeof o);
    o.lr = 1e-2;
    o.beta1 = 0.9;
    o.beta2 = 0.95;
    o.eps = 1e-8;
    o.weight_decay = 0.1;
    o.grad_clip = grad_clip;
    return o;
}

/* The trainer's step before optim/step.h (launch/train.c at the parent of this change). */
static void legacy_step(stu_side *x, float lr, const int32_t *inputs, const int32_t *targets,
                        double *loss, double *norm) {
    dt_model *m = &x->m;
    int n = STU_B * STU_T;
    double loss_sum = 0;
    model_zero_grad(m);
    for (int k = 0; k < STU_MICRO; k++) {
        loss_sum += model_forward(m, inputs + k * n, targets + k * n);
        model_backward(m, 1.0f / STU_MICRO);
    }
    double sumsq = optimizer_grad_sumsq(&x->o, m->grads_mem, 0);
    *norm = sqrt(sumsq);
    *loss = loss_sum / STU_MICRO;
    optimizer_step(&x->o, m->params_mem, m->grads_mem, lr, optimizer_clip_scale(&x->o, *norm));
}

static void same_state(const stu_side *a, const stu_side *b, const char *what) {
    size_t P = a->m.layout.total;
    float *sa = stu_state(a), *sb = stu_state(b);
    if (memcmp(sa, sb, 3 * P * sizeof(float)) != 0) {
        size_t i = 0;
        while (memcmp(&sa[i], &sb[i], sizeof(float)) == 0) i++;
        fail_msg("%s: params/m/v differ first at %zu of 3 x %zu: %.9g vs %.9g", what, i, P,
                 sa[i], sb[i]);
    }
    free(sa);
    free(sb);
}

static void test_step_bits_of_host_arithmetic(void **state) {
    (void)state;
    int32_t x[STU_MICRO * STU_B * STU_T], y[STU_MICRO * STU_B * STU_T];
    int clipped = 0;
    for (int c = 0; c < N_MODEL_CASES; c++)
        for (int rc = 0; rc <= 1; rc++)
            for (int clip = 0; clip <= 1; clip++) {
                dt_model_config cfg;
                model_case_config(&cfg, &model_cases[c]);
                /* norms here are 1 to 3: a clip of 0.5 is active on every step */
                dt_optim_config oc = optim_config(clip ? 0.5 : 0.0);
                stu_side a, b;
                stu_init(&a, dt_backend_cpu(), &cfg, &oc, rc);
                stu_init(&b, dt_backend_cpu(), &cfg, &oc, rc);
                for (int step = 0; step < 3; step++) {
                    stu_tokens(x, y, cfg.vocab_size, step);
                    double la, na, lb, nb;
                    assert_int_equal(stu_step(&a, step, 1e-2f, x, y, STU_INJECT_NONE, &la, &na),
                                     DT_OK);
                    legacy_step(&b, 1e-2f, x, y, &lb, &nb);
                    assert_memory_equal(&la, &lb, sizeof la);
                    assert_memory_equal(&na, &nb, sizeof na);
                    clipped += clip && na > 0.5;
                    same_state(&a, &b, model_cases[c].label);
                    assert_int_equal(a.o.t, b.o.t);
                }
                stu_free(&a);
                stu_free(&b);
            }
    printf("%d model cases x recompute x clip, 3 steps each: bit-identical; %d clipped steps\n",
           N_MODEL_CASES, clipped);
    assert_true(clipped == N_MODEL_CASES * 2 * 3); /* the clipping path was taken */
}

/* A step refused on `side` (injecting `inject`): error, message, nothing changed. */
static void refused_step(stu_side *x, int step, const int32_t *in, const int32_t *tg,
                         stu_inject inject) {
    float *before = stu_state(x);
    int t = x->o.t;
    double loss = 0, norm = 0;
    stu_capture cap;
    stu_capture_begin(&cap);
    dt_status st = stu_step(x, step, 1e-2f, in, tg, inject, &loss, &norm);
    char *msg = stu_capture_end(&cap);
    stu_expect_refused(x, step, inject, st, msg, loss, norm, before, t);
}

static void test_step_refused(void **state) {
    (void)state;
    int32_t x[STU_MICRO * STU_B * STU_T], y[STU_MICRO * STU_B * STU_T];
    dt_model_config cfg;
    model_case_config(&cfg, &model_cases[0]);
    dt_optim_config oc = optim_config(1.0);
    stu_side a, ref;
    stu_init(&a, dt_backend_cpu(), &cfg, &oc, 0);
    stu_init(&ref, dt_backend_cpu(), &cfg, &oc, 0);
    double l, n;
    for (int step = 0; step < 2; step++) {
        stu_tokens(x, y, cfg.vocab_size, step);
        assert_int_equal(stu_step(&ref, step, 1e-2f, x, y, STU_INJECT_NONE, &l, &n), DT_OK);
    }
    double la, na;
    stu_tokens(x, y, cfg.vocab_size, 0);
    assert_int_equal(stu_step(&a, 0, 1e-2f, x, y, STU_INJECT_NONE, &la, &na), DT_OK);
    stu_tokens(x, y, cfg.vocab_size, 1);
    refused_step(&a, 1, x, y, STU_INJECT_NAN_GRAD);
    refused_step(&a, 1, x, y, STU_INJECT_NAN_LOSS);
    assert_int_equal(stu_step(&a, 1, 1e-2f, x, y, STU_INJECT_NONE, &la, &na), DT_OK);
    assert_memory_equal(&la, &l, sizeof l);
    assert_memory_equal(&na, &n, sizeof n);
    same_state(&a, &ref, "after two refused steps");
    assert_int_equal(a.o.t, 2);
    stu_free(&a);
    stu_free(&ref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_bits_of_host_arithmetic),
        cmocka_unit_test(test_step_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
