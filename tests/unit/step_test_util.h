/* Helpers of the training-step tests (test_optim_step.c on the CPU, test_cuda_step.c on CPU and
 * CUDA): a model, its optimizer and its dt_step on one backend, one step through optim/step.h
 * exactly as launch/train.c runs it on one rank (no ZeRO, no groups), a NaN injected between
 * the backward and the update, snapshots of params / m / v, and stderr captured around a call.
 * Header-only (static functions); include after <cmocka.h>. */
#ifndef DT_STEP_TEST_UTIL_H
#define DT_STEP_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"
#include "model_test_util.h"
#include "optim/optimizer.h"
#include "optim/step.h"

enum { STU_B = 2, STU_T = 19, STU_MICRO = 2 };

typedef struct stu_side {
    dt_model m;
    dt_optimizer o;
    dt_step s;
} stu_side;

typedef enum stu_inject {
    STU_INJECT_NONE = 0,
    STU_INJECT_NAN_GRAD, /* one gradient element NaN: the norm is NaN, the loss finite */
    STU_INJECT_NAN_LOSS, /* the loss sum NaN, the gradients finite */
} stu_inject;

static void stu_init(stu_side *x, const dt_backend *be, const dt_model_config *cfg,
                     const dt_optim_config *oc, int recompute) {
    assert_int_equal(model_init_opts(&x->m, cfg, be, 11, STU_B, STU_T, NULL, recompute), DT_OK);
    assert_int_equal(optimizer_init(&x->o, be, &x->m.layout, oc), DT_OK);
    assert_int_equal(step_init(&x->s, be), DT_OK);
}

static void stu_free(stu_side *x) {
    step_free(&x->s);
    optimizer_free(&x->o);
    model_free(&x->m);
}

/* Tokens for STU_MICRO micro-batches (the same on every backend), one ignored target. */
static void stu_tokens(int32_t *x, int32_t *y, int vocab, int step) {
    int n = STU_MICRO * STU_B * STU_T;
    model_case_tokens(x, n, vocab, 50 + (uint64_t)step);
    model_case_tokens(y, n, vocab, 90 + (uint64_t)step);
    y[3] = -1;
}

/* One step on one rank, the calls of launch/train.c's train_step in its order (ZeRO stage 0 on
 * one rank and model_reduce_tp_grads are no-ops there). `step` is 0-based. */
static dt_status stu_step(stu_side *x, int step, float lr, const int32_t *inputs,
                          const int32_t *targets, stu_inject inject, double *loss, double *norm) {
    dt_model *m = &x->m;
    int n = STU_B * STU_T;
    float dloss = 1.0f / STU_MICRO;
    model_zero_grad(m);
    step_begin(&x->s);
    for (int k = 0; k < STU_MICRO; k++)
        step_micro_batch(&x->s, m, inputs + k * n, targets + k * n, dloss);
    if (inject == STU_INJECT_NAN_GRAD) {
        const float nan = NAN;
        m->be->copy_from_host(m->grads_mem + m->layout.total / 2, &nan, sizeof nan);
    } else if (inject == STU_INJECT_NAN_LOSS) {
        const double nan = NAN; /* sums[0] is the loss sum (optim/step.h) */
        m->be->copy_from_host(x->s.sums, &nan, sizeof nan);
    }
    dt_step_groups g = {NULL, NULL, NULL, 0, 0};
    DT_TRY(step_update(&x->s, &g, &x->o, m->params_mem, m->grads_mem, lr));
    return step_finish(&x->s, &x->o, step + 1, STU_MICRO, loss, norm);
}

/* params, m, v on the host, one after another (3 P floats). */
static float *stu_state(const stu_side *x) {
    size_t P = x->m.layout.total;
    float *h = malloc(3 * P * sizeof(float));
    assert_non_null(h);
    model_params_to_host(&x->m, h);
    x->o.be->copy_to_host(h + P, x->o.m, P * sizeof(float));
    x->o.be->copy_to_host(h + 2 * P, x->o.v, P * sizeof(float));
    return h;
}

/* stderr into a temporary file while `fn` runs; returns what was written (caller frees). */
typedef struct stu_capture {
    int saved;
    FILE *tmp;
} stu_capture;

static void stu_capture_begin(stu_capture *c) {
    fflush(stderr);
    c->tmp = tmpfile();
    assert_non_null(c->tmp);
    c->saved = dup(2);
    assert_true(c->saved >= 0 && dup2(fileno(c->tmp), 2) >= 0);
}

static char *stu_capture_end(stu_capture *c) {
    fflush(stderr);
    assert_true(dup2(c->saved, 2) >= 0);
    close(c->saved);
    long len = ftell(c->tmp);
    char *text = calloc((size_t)(len > 0 ? len : 0) + 1, 1);
    rewind(c->tmp);
    if (len > 0) assert_int_equal(fread(text, 1, (size_t)len, c->tmp), (size_t)len);
    fclose(c->tmp);
    fputs(text, stdout); /* still shown in the test's log */
    return text;
}

/* The checks of a refused step on x (its status st and captured stderr msg, its loss and norm):
 * DT_ERR_RUNTIME, a message naming step + 1 and the advice, a NaN norm for an injected NaN
 * gradient (else a NaN loss) with the other finite, and params, m, v and the step count as they
 * were before (`before`: stu_state taken then, freed here with msg; t_before). */
static void stu_expect_refused(stu_side *x, int step, stu_inject inject, dt_status st, char *msg,
                               double loss, double norm, float *before, int t_before) {
    assert_int_equal(st, DT_ERR_RUNTIME);
    char want[64];
    snprintf(want, sizeof want, "step %d: the training loss is ", step + 1);
    assert_non_null(strstr(msg, want));
    assert_non_null(strstr(msg, "; stopping (lower optim.lr or check the data)"));
    assert_true(inject == STU_INJECT_NAN_GRAD ? isnan(norm) && isfinite(loss)
                                              : isnan(loss) && isfinite(norm));
    assert_int_equal(x->o.t, t_before);
    float *after = stu_state(x);
    assert_memory_equal(after, before, 3 * x->m.layout.total * sizeof(float));
    free(before);
    free(after);
    free(msg);
}

#endif
