/* The optimizer and the schedule, and the whole model learning:
 * - the learning-rate schedule against its closed form;
 * - AdamW's per-tensor weight decay (none on norms, gains, lambda vectors);
 * - clipping scales to exactly the configured norm;
 * - a tiny model trained on one repeated sequence drives the loss below 0.05, for each arch. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "model/model.h"
#include "model_test_util.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

static dt_optim_config optim_config(void) {
    dt_optim_config o;
    memset(&o, 0, sizeof o);
    o.lr = 1e-3;
    o.min_lr = 1e-4;
    o.warmup_steps = 10;
    o.decay = DT_DECAY_LINEAR;
    o.beta1 = 0.9;
    o.beta2 = 0.95;
    o.eps = 1e-8;
    o.weight_decay = 0.1;
    o.grad_clip = 1.0;
    return o;
}

static void test_schedule(void **state) {
    (void)state;
    dt_optim_config o = optim_config();
    const int steps = 110;
    /* warm-up: linear from lr/warmup at step 0 to lr at step warmup-1 */
    assert_true(fabs(lr_schedule(&o, 0, steps) - 1e-4) < 1e-12);
    assert_true(fabs(lr_schedule(&o, 9, steps) - 1e-3) < 1e-12);
    /* linear decay reaches min_lr exactly at the last step, halfway is the midpoint */
    assert_true(fabs(lr_schedule(&o, 10, steps) - 1e-3) < 1e-12);
    assert_true(fabs(lr_schedule(&o, steps - 1, steps) - 1e-4) < 1e-12);
    double mid = lr_schedule(&o, 10 + 99 / 2, steps);
    assert_true(fabs(mid - (1e-3 + (1e-4 - 1e-3) * (49.0 / 99.0))) < 1e-12);
    o.decay = DT_DECAY_COSINE;
    assert_true(fabs(lr_schedule(&o, 10, steps) - 1e-3) < 1e-12);
    assert_true(fabs(lr_schedule(&o, steps - 1, steps) - 1e-4) < 1e-12);
    double p = 30.0 / 99.0;
    assert_true(fabs(lr_schedule(&o, 40, steps) - (1e-4 + 0.45e-3 * (1 + cos(M_PI * p)))) < 1e-12);
    o.decay = DT_DECAY_CONSTANT;
    assert_true(fabs(lr_schedule(&o, 80, steps) - 1e-3) < 1e-15);
}

/* With zero gradients, one AdamW step changes only decayed tensors, each by exactly
 * p * (1 - lr * wd); norms, gains and lambda vectors stay put. */
static void test_weight_decay_per_tensor(void **state) {
    (void)state;
    dt_model_config cfg;
    model_case_config(&cfg, &model_cases[0]);
    dt_model m;
    assert_int_equal(model_init(&m, &cfg, dt_backend_cpu(), 1, 1, 4), DT_OK);
    dt_optim_config oc = optim_config();
    dt_optimizer o;
    assert_int_equal(optimizer_init(&o, m.be, &m.layout, &oc), DT_OK);
    size_t P = m.layout.total;
    float *before = malloc(P * sizeof(float)), *after = malloc(P * sizeof(float));
    model_params_to_host(&m, before);
    model_zero_grad(&m);
    optimizer_step(&o, m.params_mem, m.grads_mem, 1e-2f, 1.0f);
    model_params_to_host(&m, after);
    int seen_decay = 0, seen_plain = 0;
    for (int i = 0; i < m.layout.n_tensors; i++) {
        const dt_tensor_spec *t = &m.layout.tensors[i];
        int is_gain_or_lambda = strstr(t->name, "norm") || strstr(t->name, "lambda_q") ||
                                strstr(t->name, "lambda_k") || strstr(t->name, "subln");
        assert_int_equal(t->decay, !is_gain_or_lambda);
        for (size_t j = 0; j < t->numel; j++) {
            float b = before[t->offset + j], a = after[t->offset + j];
            float expect = t->decay ? b - 1e-2f * 0.1f * b : b;
            /* a few fp32 ulps (FMA contraction rounds differently); the decay itself moves a
             * value by 1e-3 relative, so a missing or misplaced decay cannot pass */
            if (t->decay)
                assert_true(fabsf(a - expect) <= 4e-7f * fabsf(b) + 1e-12f);
            else
                assert_true(a == b);
        }
        seen_decay += t->decay;
        seen_plain += !t->decay;
    }
    assert_true(seen_decay > 0 && seen_plain > 0);
    free(before);
    free(after);
    optimizer_free(&o);
    model_free(&m);
}

static void test_clip_scale(void **state) {
    (void)state;
    dt_optimizer o;
    memset(&o, 0, sizeof o);
    o.cfg = optim_config();
    assert_true(optimizer_clip_scale(&o, 0.5) == 1.0f);
    assert_true(fabs(optimizer_clip_scale(&o, 4.0) * 4.0 - 1.0) < 1e-7);
    o.cfg.grad_clip = 0; /* off */
    assert_true(optimizer_clip_scale(&o, 400.0) == 1.0f);
}

/* One sequence, repeated: every architecture must memorise it. */
static void test_overfit_one_sequence(void **state) {
    (void)state;
    enum { B = 2, T = 24 };
    for (int ci = 0; ci < N_MODEL_CASES; ci++) {
        const model_case *c = &model_cases[ci];
        dt_model_config cfg;
        model_case_config(&cfg, c);
        cfg.init_std = 0.02;
        dt_model m;
        assert_int_equal(model_init(&m, &cfg, dt_backend_cpu(), 11, B, T), DT_OK);
        dt_optim_config oc = optim_config();
        oc.weight_decay = 0;
        dt_optimizer o;
        assert_int_equal(optimizer_init(&o, m.be, &m.layout, &oc), DT_OK);
        int32_t seq[T + 1], x[B * T], y[B * T];
        model_case_tokens(seq, T + 1, cfg.vocab_size, 42);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                x[b * T + t] = seq[t];
                y[b * T + t] = seq[t + 1];
            }
        float loss = 0;
        for (int step = 0; step < 300; step++) {
            model_zero_grad(&m);
            loss = model_forward(&m, x, y);
            model_backward(&m, 1.0f);
            double norm = optimizer_grad_norm(&o, m.grads_mem);
            optimizer_step(&o, m.params_mem, m.grads_mem, 1e-2f, optimizer_clip_scale(&o, norm));
        }
        loss = model_forward(&m, x, y);
        printf("%s: loss after 300 steps %.5f\n", c->label, loss);
        if (!(loss < 0.05f)) {
            print_error("%s: loss %.5f after 300 steps, expected < 0.05\n", c->label, loss);
            fail();
        }
        optimizer_free(&o);
        model_free(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_weight_decay_per_tensor),
        cmocka_unit_test(test_clip_scale),
        cmocka_unit_test(test_overfit_one_sequence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
