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
 * Last, bf16 mode (test_bf16_wiring, below): the operand gradients' wiring, and the gradients
 * against the CPU within bf16's error.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- bf16 mode: the operand gradients' wiring ----
 * In bf16 mode every output gradient that only a product reads (dlogits, dres's copy, dgate,
 * dup, the rotated dq and dk, dv) is an operand that its producer stores and exactly one
 * matmul_backward_operand call then reads. A model whose backend zeroes each such dout right
 * after that call must therefore give the same gradients, bit for bit: a product that read an
 * operand its producer had not (re)written since the last read (a stale copy) would read zeros.
 * The gradients are also compared with the CPU's, norm-wise per tensor, within bf16's error. */

static dt_backend g_zeroing; /* dt_backend_cuda() with matmul_backward_operand wrapped */

static void zeroing_matmul_backward_operand(float *dinp, float *dw, const dt_operand *dout,
                                            int ldd, const dt_operand *inp, const float *w, int N,
                                            int I, int O, int accumulate_dinp) {
    const dt_backend *be = dt_backend_cuda();
    be->matmul_backward_operand(dinp, dw, dout, ldd, inp, w, N, I, O, accumulate_dinp);
    const size_t ob = be->operand_bytes;
    for (int n = 0; n < N; n++) /* the rows only: dlogits' lie over the logits' (ldd > O) */
        be->memset_zero((char *)(uintptr_t)dout + (size_t)n * ldd * ob, (size_t)O * ob);
}

/* The worst norm-wise relative difference ||g - c|| / ||c|| over the tensors (c != 0). */
static double worst_normwise(const dt_param_layout *L, const float *g, const float *c, int *at) {
    double worst = 0;
    for (int i = 0; i < L->n_tensors; i++) {
        const dt_tensor_spec *t = &L->tensors[i];
        double d2 = 0, c2 = 0;
        for (size_t j = 0; j < t->numel; j++) {
            double e = (double)g[t->offset + j] - c[t->offset + j];
            d2 += e * e;
            c2 += (double)c[t->offset + j] * c[t->offset + j];
        }
        double r = c2 > 0 ? sqrt(d2 / c2) : sqrt(d2);
        if (!(r <= worst)) {
            worst = isnan(r) ? INFINITY : r;
            *at = i;
        }
    }
    return worst;
}

/* bf16 against the CPU's fp32, per tensor: products on bf16 operands (relative rounding 2^-9
 * per operand), bf16 activations and gradients. Measured on the emulator: at most 0.061 for the
 * weights (layer 0's k_proj) and 0.139 for lambda's four vectors in the first case, whose
 * gradient is one scalar that cancels; most tensors 0.01-0.03. A bound, not a fine check: a
 * gradient from the wrong buffer is off by about its own size (the bit-identity above is the
 * fine check of the wiring). */
#define BF16_NORMWISE 0.25

static void check_bf16_wiring(const dt_model_config *cfg, const char *label, int recompute) {
    assert_int_equal(cuda_backend_init(0, 1), 0);
    g_zeroing = *dt_backend_cuda();
    g_zeroing.matmul_backward_operand = zeroing_matmul_backward_operand;
    dt_model mc, mg, mz;
    assert_int_equal(model_init_opts(&mc, cfg, dt_backend_cpu(), 11, B, T, NULL, 0), DT_OK);
    assert_int_equal(model_init_opts(&mg, cfg, dt_backend_cuda(), 11, B, T, NULL, recompute),
                     DT_OK);
    assert_int_equal(model_init_opts(&mz, cfg, &g_zeroing, 11, B, T, NULL, recompute), DT_OK);
    int n = B * T;
    int32_t *x = malloc(2 * (size_t)n * sizeof *x), *y = malloc(2 * (size_t)n * sizeof *y);
    model_case_tokens(x, 2 * n, cfg->vocab_size, 5);
    model_case_tokens(y, 2 * n, cfg->vocab_size, 6);
    y[3] = -1; /* an ignored target */
    dt_model *ms[3] = {&mc, &mg, &mz};
    for (int i = 0; i < 3; i++) {
        model_zero_grad(ms[i]);
        for (int k = 0; k < 2; k++) { /* two micro-batches accumulate */
            model_forward(ms[i], x + k * n, y + k * n);
            model_backward(ms[i], 0.5f);
        }
    }
    size_t P = mc.layout.total;
    float *gc = malloc(P * sizeof *gc), *gg = malloc(P * sizeof *gg), *gz = malloc(P * sizeof *gz);
    model_grads_to_host(&mc, gc);
    model_grads_to_host(&mg, gg);
    model_grads_to_host(&mz, gz);
    int at = 0;
    double w = worst_normwise(&mc.layout, gg, gc, &at);
    printf("%-24s bf16 recompute %d: gradients vs cpu worst %.3g norm-wise (%s); ", label,
           recompute, w, mc.layout.tensors[at].name);
    size_t differ = 0;
    for (size_t i = 0; i < P; i++) differ += memcmp(&gg[i], &gz[i], sizeof(float)) != 0;
    printf("%zu of %zu differ when operands are zeroed after their product\n", differ, P);
    assert_int_equal(differ, 0);
    assert_true(w <= BF16_NORMWISE);
    free(gc), free(gg), free(gz), free(x), free(y);
    model_free(&mc), model_free(&mg), model_free(&mz);
    assert_int_equal(cuda_backend_init(0, 0), 0);
}

static void test_bf16_wiring(void **state) {
    (void)state;
    for (int i = 0; i < N_MODEL_CASES; i++) {
        dt_model_config cfg;
        model_case_config(&cfg, &model_cases[i]);
        for (int rc = 0; rc <= 1; rc++) check_bf16_wiring(&cfg, model_cases[i].label, rc);
    }
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_cases),
        cmocka_unit_test(test_head_dim_64),
        cmocka_unit_test(test_bf16_wiring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
