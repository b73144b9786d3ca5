/* The classifier's chunking (model_set_logits_chunk_limit) against the unchunked classifier.
 *
 * With its default limit (1 GiB of logits) a small model's classifier takes all rows at once, so
 * the chunked paths (the forward's per-chunk cross-entropy, the backward's per-chunk logits,
 * dlogits, input gradient rows and output-weight gradient sums, model_argmax_rows' batches) run
 * only for large vocabularies. Here the limit is lowered to 1, 4 and 7 rows of a 37-token
 * vocabulary over 2 x 9 = 18 rows (chunks that divide the rows and chunks that leave a short
 * last one), for every architecture and ablation of model_test_util.h, tied and untied:
 *  - the loss of each of two micro-batches to 1e-6 relative (each row's loss is computed alone
 *    and the mean is taken in row order on the host, but OpenBLAS may round a row of a 4-row
 *    product differently from the same row of an 18-row one);
 *  - every gradient element matches the unchunked run to 1e-5 relative to the tensor's largest
 *    element (only the grouping of the output weight's sum over rows changes, and with it the
 *    rounding of the rest);
 *  - model_argmax_rows of 11 rows (more than a chunk) gives the same predictions;
 *  - model_activation_bytes equals the allocation, and shrinks with the limit;
 *  - at every limit, the training forward (model_forward_train, which runs the classifier's
 *    backward chunk by chunk as it makes the logits) gives the same loss sum and the same
 *    gradients, bit for bit, as model_forward followed by model_backward (which recomputes the
 *    logits). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/model.h"
#include "model_test_util.h"

enum { B = 2, T = 9, N = B * T, N_MICRO = 2, N_ROWS_ASKED = 11 };

typedef struct run_result {
    float loss[N_MICRO]; /* model_forward's; the training forward's sum in loss_sum */
    double loss_sum;
    float *grads;
    int32_t pred[N_ROWS_ASKED];
    size_t acts_bytes;
} run_result;

/* Two micro-batches of forward and backward at a classifier chunk of limit_rows rows (0: the
 * default); train: through model_forward_train. */
static void run(const dt_model_config *cfg, size_t limit_rows, int train, run_result *r) {
    model_set_logits_chunk_limit(limit_rows * (size_t)cfg->vocab_size);
    dt_model m;
    assert_int_equal(model_init(&m, cfg, dt_backend_cpu(), 7, B, T), DT_OK);
    int expect_chunk = limit_rows == 0 || limit_rows > N ? N : (int)limit_rows;
    assert_int_equal(m.logits_chunk, expect_chunk);
    dt_tp_shape whole = tp_shape_of(cfg, 0, 1);
    r->acts_bytes = model_activation_bytes(cfg, &whole, B, T, 0, sizeof(float));
    assert_int_equal(r->acts_bytes, m.acts_bytes);

    int32_t x[N], y[N];
    double *loss_acc = m.be->alloc(sizeof(double));
    assert_non_null(loss_acc);
    model_zero_grad(&m);
    for (int k = 0; k < N_MICRO; k++) {
        model_case_tokens(x, N, cfg->vocab_size, 11 + 2 * (uint64_t)k);
        model_case_tokens(y, N, cfg->vocab_size, 12 + 2 * (uint64_t)k);
        y[5] = -1; /* an ignored target inside a chunk */
        if (train) model_forward_train(&m, x, y, loss_acc, 1.0f / N_MICRO);
        else r->loss[k] = model_forward(&m, x, y);
        model_backward(&m, 1.0f / N_MICRO);
    }
    m.be->copy_to_host(&r->loss_sum, loss_acc, sizeof(double));
    m.be->free(loss_acc);
    int32_t rows[N_ROWS_ASKED];
    for (int i = 0; i < N_ROWS_ASKED; i++) rows[i] = (int32_t)((i * 5 + 3) % N);
    assert_int_equal(model_argmax_rows(&m, r->pred, rows, N_ROWS_ASKED), DT_OK);
    r->grads = malloc(m.layout.total * sizeof(float));
    assert_non_null(r->grads);
    model_grads_to_host(&m, r->grads);
    model_free(&m);
    model_set_logits_chunk_limit(0);
}

static void check_case(const model_case *c) {
    dt_model_config cfg;
    model_case_config(&cfg, c);
    dt_param_layout L;
    assert_int_equal(param_layout_init_tp(&L, &cfg, 0, 1), DT_OK);
    run_result ref, got, tr;
    run(&cfg, 0, 0, &ref);
    static const size_t limits[] = {0, 1, 4, 7};
    for (size_t li = 0; li < sizeof limits / sizeof limits[0]; li++) {
        /* the training forward against model_forward + model_backward, at this limit */
        run_result *base = limits[li] ? &got : &ref;
        if (limits[li]) run(&cfg, limits[li], 0, &got);
        run(&cfg, limits[li], 1, &tr);
        if (tr.loss_sum != (double)base->loss[0] + (double)base->loss[1])
            fail_msg("%s, %zu rows per chunk: training forward's loss sum %.17g, model_forward's "
                     "%.9g + %.9g", c->label, limits[li], tr.loss_sum, base->loss[0],
                     base->loss[1]);
        if (memcmp(tr.grads, base->grads, L.total * sizeof(float)) != 0)
            fail_msg("%s, %zu rows per chunk: the training forward's gradients differ",
                     c->label, limits[li]);
        free(tr.grads);
        if (!limits[li]) continue;
        for (int k = 0; k < N_MICRO; k++)
            if (fabs(got.loss[k] - ref.loss[k]) > 1e-6 * fabs(ref.loss[k]))
                fail_msg("%s, %zu rows per chunk: micro-batch %d loss %.9g, unchunked %.9g",
                         c->label, limits[li], k, got.loss[k], ref.loss[k]);
        for (int i = 0; i < L.n_tensors; i++) {
            const dt_tensor_spec *t = &L.tensors[i];
            double scale = 0, worst = 0;
            for (size_t e = 0; e < t->numel; e++)
                scale = fmax(scale, fabs(ref.grads[t->offset + e]));
            for (size_t e = 0; e < t->numel; e++)
                worst = fmax(worst, fabs(got.grads[t->offset + e] - ref.grads[t->offset + e]));
            if (worst > 1e-5 * fmax(scale, 1e-30))
                fail_msg("%s, %zu rows per chunk: gradient of %s differs by %.3g (largest %.3g)",
                         c->label, limits[li], t->name, worst, scale);
        }
        assert_memory_equal(got.pred, ref.pred, sizeof ref.pred);
        assert_true(got.acts_bytes < ref.acts_bytes);
        free(got.grads);
    }
    free(ref.grads);
    param_layout_free(&L);
}

static void test_every_case(void **state) {
    (void)state;
    for (int i = 0; i < N_MODEL_CASES; i++) check_case(&model_cases[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_every_case)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
