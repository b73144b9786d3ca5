/* The training step (optim/step.h, the calls launch/train.c makes per step) on the CUDA backend
 * against the same step on the CPU backend, and its synchronisations: for model cases covering
 * the three archs, a frozen lambda (its constant uploaded once, at init) and recompute, 3 steps
 * of 2 micro-batches from the same initial weights and tokens, with clipping active:
 * - the CUDA step makes exactly ONE host-blocking call (cuda_sync_count: its read-back of the
 *   loss and the norm), from the first step on, and its staging uploads never wait (with 2
 *   micro-batches a staging buffer is refilled only after the previous step's read-back);
 * - the loss, the gradient norm and the parameters after each step agree with the CPU's;
 * - a refused step (a NaN gradient, then a NaN loss, injected before the update) leaves params,
 *   m, v and the step count as they were, reports the trainer's message, and costs the same one
 *   read-back (plus the injection's own blocking copy); the next good step matches that of a
 *   run that never saw the refused ones;
 * - the step's passes recorded as a CUDA graph and launched (optim/step_graph.h) give the bits
 *   of the same steps issued op by op, with the same one read-back a step (diff; a transformer
 *   with recompute).
 * Skipped (77) without a device.
 *
 * Tolerances (fp32 on both sides, summation orders differ): the loss within 1e-5 relative and
 * the norm within 1e-4 relative, as test_cuda_model. Parameters: each backend steps on its own
 * gradients, and Adam divides every gradient by its own RMS, so an element whose gradient is
 * rounding noise near zero would move by a different fraction of lr on each side
 * (test_cuda_model's header: 4e-4 apart after 3 steps at lr 1e-2, eps 1e-8). eps = 1e-3 bounds
 * that gain at 1/eps: the per-step update lr * g / (sqrt(v) + eps) then differs by at most
 * lr * dg / eps for gradient noise dg (<= 2e-4 max|g| ~ 1e-5 here, test_cuda_model), i.e.
 * 1e-5 after 3 steps at lr 1e-3; parameters within 2e-5 + 1e-5 |p|. A step that ignored the
 * clipping factor (about 0.3 here) moves a typical element by 0.3 lr more and fails it, so does
 * a wrong bias correction (a step count off by one). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cuda_test_util.h"
#include "optim/step_graph.h"
#include "step_test_util.h"

#define LOSS_RTOL 1e-5
#define NORM_RTOL 1e-4
#define PARAM_ATOL 2e-5
#define PARAM_RTOL 1e-5
#define LR 1e-3f

static dt_optim_config optim_config(void) {
    dt_optim_config o;
    memset(&o, 0, sizeof o);
    o.lr = LR;
    o.beta1 = 0.9;
    o.beta2 = 0.95;
    o.eps = 1e-3; /* see the header */
    o.weight_decay = 0.1;
    o.grad_clip = 0.5; /* norms here are 1 to 3: clipping on every step */
    return o;
}

/* The CUDA step, its synchronisations counted: exactly `expect` host-blocking calls and no
 * staging wait that blocked. */
static dt_status cuda_step_counted(stu_side *x, int step, const int32_t *in, const int32_t *tg,
                                   stu_inject inject, double *loss, double *norm,
                                   unsigned long long expect) {
    unsigned long long syncs = cuda_sync_count(), waits = cuda_staging_wait_count();
    dt_status st = stu_step(x, step, LR, in, tg, inject, loss, norm);
    unsigned long long made = cuda_sync_count() - syncs;
    printf("  cuda step %d: %llu host-blocking call%s, %llu staging waits\n", step + 1, made,
           made == 1 ? "" : "s", cuda_staging_wait_count() - waits);
    assert_true(made == expect);
    assert_true(cuda_staging_wait_count() == waits);
    return st;
}

static void check_params(const stu_side *g, const stu_side *c, const char *what) {
    size_t P = c->m.layout.total;
    float *pg = malloc(P * sizeof(float)), *pc = malloc(P * sizeof(float));
    model_params_to_host(&g->m, pg);
    model_params_to_host(&c->m, pc);
    assert_true(cut_worst(what, pg, pc, P, PARAM_ATOL, PARAM_RTOL) <= 1.0);
    free(pg);
    free(pc);
}

static const struct {
    int model_case; /* index into model_cases */
    int recompute;
} cases[] = {
    {0, 0}, /* diff */
    {3, 1}, /* diff, lambda frozen 1.0, recompute: the constant is written once, at init */
    {5, 0}, /* diff gqa subln scalar, lambda frozen 0.3 */
    {6, 0}, /* diff_v2 gqa */
    {8, 1}, /* transformer gqa, recompute */
};

static void test_step_cuda_vs_cpu(void **state) {
    (void)state;
    int32_t x[STU_MICRO * STU_B * STU_T], y[STU_MICRO * STU_B * STU_T];
    dt_optim_config oc = optim_config();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dt_model_config cfg;
        model_case_config(&cfg, &model_cases[cases[i].model_case]);
        printf("%s, recompute %d\n", model_cases[cases[i].model_case].label, cases[i].recompute);
        stu_side c, g;
        stu_init(&c, dt_backend_cpu(), &cfg, &oc, cases[i].recompute);
        stu_init(&g, dt_backend_cuda(), &cfg, &oc, cases[i].recompute);
        for (int step = 0; step < 3; step++) {
            stu_tokens(x, y, cfg.vocab_size, step);
            double lc, nc, lg, ng;
            assert_int_equal(stu_step(&c, step, LR, x, y, STU_INJECT_NONE, &lc, &nc), DT_OK);
            assert_int_equal(cuda_step_counted(&g, step, x, y, STU_INJECT_NONE, &lg, &ng, 1),
                             DT_OK);
            printf("  step %d: loss cpu %.9f gpu %.9f, norm cpu %.9f gpu %.9f (clip to %.2f)\n",
                   step + 1, lc, lg, nc, ng, oc.grad_clip);
            assert_true(fabs(lg - lc) <= LOSS_RTOL * fabs(lc));
            assert_true(fabs(ng - nc) <= NORM_RTOL * nc);
            assert_true(nc > oc.grad_clip); /* the clipping factor is exercised */
            check_params(&g, &c, "  parameters");
        }
        assert_int_equal(g.o.t, 3);
        stu_free(&c);
        stu_free(&g);
    }
}

/* A step refused on the CUDA side: error, message, nothing changed, one read-back (and the
 * injection's blocking copy). */
static void refused_step(stu_side *x, int step, const int32_t *in, const int32_t *tg,
                         stu_inject inject) {
    float *before = stu_state(x);
    int t = x->o.t;
    double loss = 0, norm = 0;
    stu_capture cap;
    stu_capture_begin(&cap);
    dt_status st = cuda_step_counted(x, step, in, tg, inject, &loss, &norm, 2);
    char *msg = stu_capture_end(&cap);
    stu_expect_refused(x, step, inject, st, msg, loss, norm, before, t);
    printf("  refused step: params, m, v bit-identical to before\n");
}

static void test_step_refused(void **state) {
    (void)state;
    int32_t x[STU_MICRO * STU_B * STU_T], y[STU_MICRO * STU_B * STU_T];
    dt_model_config cfg;
    model_case_config(&cfg, &model_cases[0]);
    dt_optim_config oc = optim_config();
    stu_side g, ref;
    stu_init(&g, dt_backend_cuda(), &cfg, &oc, 0);
    stu_init(&ref, dt_backend_cuda(), &cfg, &oc, 0);
    double lr_, nr, lg, ng;
    for (int step = 0; step < 2; step++) {
        stu_tokens(x, y, cfg.vocab_size, step);
        assert_int_equal(stu_step(&ref, step, LR, x, y, STU_INJECT_NONE, &lr_, &nr), DT_OK);
    }
    stu_tokens(x, y, cfg.vocab_size, 0);
    assert_int_equal(cuda_step_counted(&g, 0, x, y, STU_INJECT_NONE, &lg, &ng, 1), DT_OK);
    stu_tokens(x, y, cfg.vocab_size, 1);
    refused_step(&g, 1, x, y, STU_INJECT_NAN_GRAD);
    refused_step(&g, 1, x, y, STU_INJECT_NAN_LOSS);
    assert_int_equal(cuda_step_counted(&g, 1, x, y, STU_INJECT_NONE, &lg, &ng, 1), DT_OK);
    assert_int_equal(g.o.t, 2);
    /* the same device, the same calls: only a wrong state could move these (a step count off
     * by one changes the bias correction 1 - 0.9^t by 40%) */
    assert_true(fabs(lg - lr_) <= LOSS_RTOL * fabs(lr_) && fabs(ng - nr) <= NORM_RTOL * nr);
    check_params(&g, &ref, "  after two refused steps");
    stu_free(&g);
    stu_free(&ref);
}

/* ---- the step's passes as a CUDA graph (optim/step_graph.h) ---- */
typedef struct graph_arg {
    stu_side *x;
} graph_arg;

/* stu_step's passes from the model's slots: what launch/train.c's queue_passes does */
static dt_status queue_slots(void *p) {
    stu_side *x = ((graph_arg *)p)->x;
    model_zero_grad(&x->m);
    step_begin(&x->s);
    for (int k = 0; k < STU_MICRO; k++) {
        step_forward_slot(&x->s, &x->m, k, 1.0f / STU_MICRO);
        model_backward(&x->m, 1.0f / STU_MICRO);
    }
    return DT_OK;
}

/* Four steps issued op by op and four through step_graph_run (eager, recorded and launched,
 * launched, launched) from the same weights and tokens: the same losses, norms and parameters
 * bit for bit, and the graph's steps too make exactly one host-blocking call each (the
 * read-back) and no staging wait. */
static void test_step_graph(void **state) {
    (void)state;
    const int which[2][2] = {{0, 0}, {8, 1}}; /* diff; transformer gqa with recompute */
    int32_t x[STU_MICRO * STU_B * STU_T], y[STU_MICRO * STU_B * STU_T];
    const int n = STU_B * STU_T;
    dt_optim_config oc = optim_config();
    assert_int_equal(setenv("DIFFTRAIN_CUDA_GRAPHS", "1", 1), 0);
    for (int c = 0; c < 2; c++) {
        dt_model_config cfg;
        model_case_config(&cfg, &model_cases[which[c][0]]);
        printf("graph: %s, recompute %d\n", model_cases[which[c][0]].label, which[c][1]);
        stu_side is, gs;
        stu_init(&is, dt_backend_cuda(), &cfg, &oc, which[c][1]);
        stu_init(&gs, dt_backend_cuda(), &cfg, &oc, which[c][1]);
        assert_int_equal(model_reserve_slots(&gs.m, STU_MICRO), DT_OK);
        dt_step_graph sg;
        assert_int_equal(step_graph_init(&sg, gs.m.be, 1), DT_OK);
        assert_true(sg.enabled);
        graph_arg arg = {&gs};
        for (int step = 0; step < 4; step++) {
            stu_tokens(x, y, cfg.vocab_size, step);
            double li, ni, lg, ng;
            assert_int_equal(stu_step(&is, step, LR, x, y, STU_INJECT_NONE, &li, &ni), DT_OK);
            unsigned long long syncs = cuda_sync_count(), waits = cuda_staging_wait_count();
            for (int k = 0; k < STU_MICRO; k++)
                assert_true(model_stage(&gs.m, k, x + k * n, y + k * n) > 0);
            assert_int_equal(step_graph_run(&sg, 1, queue_slots, &arg), DT_OK);
            dt_step_groups g = {NULL, NULL, NULL, 0, 0};
            assert_int_equal(step_update(&gs.s, &g, &gs.o, gs.m.params_mem, gs.m.grads_mem, LR),
                             DT_OK);
            assert_int_equal(step_finish(&gs.s, &gs.o, step + 1, STU_MICRO, &lg, &ng), DT_OK);
            printf("  step %d: loss %.9f / %.9f, norm %.9f / %.9f, %llu host-blocking call(s)\n",
                   step + 1, li, lg, ni, ng, cuda_sync_count() - syncs);
            assert_true(cuda_sync_count() - syncs == 1);
            assert_true(cuda_staging_wait_count() == waits);
            assert_memory_equal(&li, &lg, sizeof li);
            assert_memory_equal(&ni, &ng, sizeof ni);
            float *a = stu_state(&is), *b = stu_state(&gs);
            assert_memory_equal(a, b, 3 * is.m.layout.total * sizeof(float));
            free(a), free(b);
        }
        assert_int_equal(sg.recordings, 1);
        assert_int_equal(sg.launches, 3);
        step_graph_free(&sg);
        stu_free(&is);
        stu_free(&gs);
    }
    unsetenv("DIFFTRAIN_CUDA_GRAPHS");
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_cuda_vs_cpu),
        cmocka_unit_test(test_step_refused),
        cmocka_unit_test(test_step_graph),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
