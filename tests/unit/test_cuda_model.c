/* The whole model on the GPU backend against the CPU backend (fp32 both): for every model case
 * (tests/unit/model_test_util.h: three archs, GQA, tied/untied, subln on/off/scalar, frozen
 * lambda) and a wider config with head dims 64 (the paper's smallest), the same initial weights
 * (a pure function of the seed) and the same two micro-batches: the losses and every gradient
 * element, with and without activation recomputation, at each of 3 AdamW steps; then the
 * parameters. Skipped (77) without a device.
 *
 * The GPU optimizer steps on the CPU's gradients (after they are checked, and after the
 * gradient norm of each side's own gradients is compared). Adam divides each gradient by its own
 * RMS, so an element whose gradient is rounding noise around zero (1e-7 in a tensor whose
 * largest gradient is 0.08, 2e-8 apart on the two backends) would move its parameter by a
 * different fraction of lr on each side: on the emulated GPU backend that put the parameters of
 * the head-dim-64 configs 4e-4 apart after 3 steps, 40 times the tolerance below, with every
 * gradient within 0.006 of its tolerance. Stepping on the same gradients, the parameters can
 * differ only by the AdamW kernels' rounding; the losses and gradients of the later steps,
 * computed from the updated parameters, are compared as those of the first.
 *
 * Tolerances: fp32 on both sides, so the differences are summation orders (cuBLAS vs OpenBLAS
 * blockings, tile orders in attention): loss within 1e-5 relative; gradient element g within
 * 2e-4 x max|g of its tensor| + 1e-3 |g| (an absolute floor scaled per tensor, since near-zero
 * elements carry cancellation noise of their tensor's scale); parameters after the AdamW steps
 * within 1e-5 + 1e-4 |p| (the same gradients; the AdamW kernels agree to about an ulp). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "cuda_test_util.h"
#include "model/model.h"
#include "model_test_util.h"
#include "optim/optimizer.h"

enum { B = 2, T = 19 };

static double worst_tensor(const dt_param_layout *L, const float *g, const float *c, int *at) {
    double worst = 0;
    for (int i = 0; i < L->n_tensors; i++) {
        const dt_tensor_spec *t = &L->tensors[i];
        double scale = 0;
        for (size_t j = 0; j < t->numel; j++) scale = fmax(scale, fabs(c[t->offset + j]));
        for (size_t j = 0; j < t->numel; j++) {
            double ref = c[t->offset + j], got = g[t->offset + j];
            double e = fabs(got - ref) / (2e-4 * scale + 1e-3 * fabs(ref) + 1e-30);
            if (!(e <= worst)) {
                worst = isnan(e) ? INFINITY : e;
                *at = i;
            }
        }
    }
    return worst;
}

static void check_case(const dt_model_config *cfg, const char *label, int recompute) {
    dt_model mc, mg;
    assert_int_equal(model_init_opts(&mc, cfg, dt_backend_cpu(), 11, B, T, NULL, 0), DT_OK);
    assert_int_equal(model_init_opts(&mg, cfg, dt_backend_cuda(), 11, B, T, NULL, recompute),
                     DT_OK);
    int n = B * T;
    int32_t *x = malloc(2 * (size_t)n * sizeof *x), *y = malloc(2 * (size_t)n * sizeof *y);
    model_case_tokens(x, 2 * n, cfg->vocab_size, 5);
    model_case_tokens(y, 2 * n, cfg->vocab_size, 6);
    y[3] = -1; /* an ignored target */
    size_t P = mc.layout.total;
    float *gc = malloc(P * sizeof *gc), *gg = malloc(P * sizeof *gg);
    dt_optim_config oc = {.lr = 1e-2, .min_lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                          .weight_decay = 0.1, .grad_clip = 1.0};
    dt_optimizer oc_cpu, oc_gpu;
    assert_int_equal(optimizer_init(&oc_cpu, dt_backend_cpu(), &mc.layout, &oc), DT_OK);
    assert_int_equal(optimizer_init(&oc_gpu, dt_backend_cuda(), &mg.layout, &oc), DT_OK);
    for (int step = 0; step < 3; step++) {
        model_zero_grad(&mc);
        model_zero_grad(&mg);
        for (int k = 0; k < 2; k++) { /* two micro-batches accumulate */
            float lc = model_forward(&mc, x + k * n, y + k * n);
            float lg = model_forward(&mg, x + k * n, y + k * n);
            if (step == 0) printf("%-36s recompute %d micro %d: loss cpu %.7f gpu %.7f\n", label,
                                  recompute, k, lc, lg);
            assert_true(fabs(lg - lc) <= 1e-5 * fabs(lc));
            model_backward(&mc, 0.5f);
            model_backward(&mg, 0.5f);
        }
        model_grads_to_host(&mc, gc);
        model_grads_to_host(&mg, gg);
        int at = 0;
        double w = worst_tensor(&mc.layout, gg, gc, &at);
        printf("  step %d gradients: worst %.3g of tolerance (%s)\n", step, w,
               mc.layout.tensors[at].name);
        assert_true(w <= 1.0);
        double nc = optimizer_grad_norm(&oc_cpu, mc.grads_mem);
        double ng = optimizer_grad_norm(&oc_gpu, mg.grads_mem);
        assert_true(fabs(ng - nc) <= 1e-4 * nc);
        /* both optimizers step on the same (CPU) gradients: see the header comment */
        dt_backend_cuda()->copy_from_host(mg.grads_mem, gc, P * sizeof *gc);
        optimizer_step(&oc_cpu, mc.params_mem, mc.grads_mem, 1e-2f,
                       optimizer_clip_scale(&oc_cpu, nc));
        optimizer_step(&oc_gpu, mg.params_mem, mg.grads_mem, 1e-2f,
                       optimizer_clip_scale(&oc_gpu, ng));
    }
    model_params_to_host(&mc, gc);
    model_params_to_host(&mg, gg);
    assert_true(cut_worst("  parameters after 3 steps", gg, gc, P, 1e-5, 1e-4) <= 1.0);
    optimizer_free(&oc_cpu);
    optimizer_free(&oc_gpu);
    free(gc);
    free(gg);
    free(x);
    free(y);
    model_free(&mc);
    model_free(&mg);
}

static void test_model_cases(void **state) {
    (void)state;
    for (int i = 0; i < N_MODEL_CASES; i++) {
        dt_model_config cfg;
        model_case_config(&cfg, &model_cases[i]);
        for (int rc = 0; rc <= 1; rc++) check_case(&cfg, model_cases[i].label, rc);
    }
}

/* Head dim 64 (and 2d = 128 for the DIFF value heads), the kernels' common case. */
static void test_head_dim_64(void **state) {
    (void)state;
    static const dt_arch archs[] = {DT_ARCH_DIFF, DT_ARCH_DIFF_V2, DT_ARCH_TRANSFORMER};
    for (int a = 0; a < 3; a++) {
        dt_model_config cfg;
        model_case_config(&cfg, &model_cases[0]);
        cfg.arch = archs[a];
        cfg.d_model = 256;
        cfg.n_heads = archs[a] == DT_ARCH_TRANSFORMER ? 4 : 2; /* head dim 64 */
        cfg.n_kv_heads = cfg.n_heads;
        cfg.ffn_dim = 512;
        cfg.vocab_size = 300;
        cfg.init_std = 0.02;
        check_case(&cfg, archs[a] == DT_ARCH_DIFF ? "diff d=64" : archs[a] == DT_ARCH_DIFF_V2 ?
                   "diff_v2 d=64" : "transformer d=64", 0);
    }
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_cases),
        cmocka_unit_test(test_head_dim_64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
