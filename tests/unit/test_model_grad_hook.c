/* The gradient-ready hook (model_set_grad_ready_hook) that lets the trainer reduce each layer's
 * gradients while the backward goes on, for every architecture and ablation of
 * model_test_util.h at 3 layers, with and without activation recomputation:
 *  - the ranges come in the backward's order (final norm with the untied LM head, layers 2, 1, 0,
 *    the embedding), each starting where a layer's tensors (or the final norm) start, each ending
 *    where the previous one began: together the whole buffer, once;
 *  - a range is complete when it is reported: its gradient, copied in the hook, is bit for bit the
 *    gradient after the whole backward (a hook called before the backward's last write to the
 *    range would see other values), on the second of two accumulated micro-batches;
 *  - a micro-batch without targets still reports every range (data-parallel peers wait for it),
 *    and leaves the gradients as they were;
 *  - model_reduce_tp_grads_range over the hook's ranges sums exactly the tensors that
 *    model_reduce_tp_grads sums (the TP-partial ones, each once), checked at tp 2 with a recording
 *    stand-in for the TP all-reduce. */
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

enum { B = 2, T = 5, N_LAYERS = 3, MAX_RANGES = 16 };

typedef struct recorder {
    dt_model *m;
    int n;
    size_t first[MAX_RANGES], count[MAX_RANGES];
    float *grads;    /* (total) host copy of the gradients, refreshed at each call */
    float *snapshot; /* (total) each range's gradient as the hook saw it */
} recorder;

static void record_range(void *ctx, size_t first, size_t count) {
    recorder *r = ctx;
    assert_true(r->n < MAX_RANGES);
    r->first[r->n] = first;
    r->count[r->n] = count;
    r->n++;
    model_grads_to_host(r->m, r->grads);
    memcpy(r->snapshot + first, r->grads + first, count * sizeof(float));
}

static size_t offset_of(const dt_model *m, const char *name) {
    const dt_tensor_spec *t = param_layout_find(&m->layout, name);
    if (!t) fail_msg("no tensor %s", name);
    return t->offset;
}

/* The ranges, in order, against the layout: [norm, total), then layer l from l = L-1 to 0, then
 * [0, layer 0). */
static void check_ranges(const dt_model *m, const recorder *r, const char *label) {
    char name[DT_TENSOR_NAME_MAX];
    if (r->n != N_LAYERS + 2) fail_msg("%s: %d ranges, expected %d", label, r->n, N_LAYERS + 2);
    size_t end = m->layout.total;
    for (int k = 0; k < r->n; k++) {
        size_t want_first = 0;
        if (k == 0) {
            want_first = offset_of(m, "norm.weight");
        } else if (k <= N_LAYERS) {
            snprintf(name, sizeof name, "layers.%d.attention_norm.weight", N_LAYERS - k);
            want_first = offset_of(m, name);
        }
        if (r->first[k] != want_first || r->first[k] + r->count[k] != end)
            fail_msg("%s: range %d is [%zu, %zu), expected [%zu, %zu)", label, k, r->first[k],
                     r->first[k] + r->count[k], want_first, end);
        end = r->first[k];
    }
}

static void test_ranges_complete_in_order(void **state) {
    (void)state;
    for (int ci = 0; ci < N_MODEL_CASES; ci++) {
        for (int rc = 0; rc <= 1; rc++) {
            char label[160];
            snprintf(label, sizeof label, "%s%s", model_cases[ci].label, rc ? ", recompute" : "");
            dt_model_config cfg;
            model_case_config(&cfg, &model_cases[ci]);
            cfg.n_layers = N_LAYERS;
            dt_model m;
            assert_int_equal(model_init_opts(&m, &cfg, dt_backend_cpu(), 5, B, T, NULL, rc),
                             DT_OK);
            size_t P = m.layout.total;
            recorder r = {&m, 0, {0}, {0}, malloc(P * sizeof(float)), malloc(P * sizeof(float))};
            float *final = malloc(P * sizeof(float)), *before = malloc(P * sizeof(float));
            assert_non_null(r.grads);
            assert_non_null(r.snapshot);
            assert_non_null(final);
            assert_non_null(before);
            int32_t x[B * T], y[B * T];
            model_zero_grad(&m);
            for (int k = 0; k < 2; k++) {
                model_case_tokens(x, B * T, cfg.vocab_size, 10 + (uint64_t)k);
                model_case_tokens(y, B * T, cfg.vocab_size, 20 + (uint64_t)k);
                model_forward(&m, x, y);
                /* the hook on the second micro-batch, as the trainer at ZeRO 0 and 1 */
                model_set_grad_ready_hook(&m, k == 1 ? record_range : NULL, &r);
                model_backward(&m, 0.5f);
            }
            model_set_grad_ready_hook(&m, NULL, NULL);
            check_ranges(&m, &r, label);
            model_grads_to_host(&m, final);
            for (size_t i = 0; i < P; i++)
                if (memcmp(&final[i], &r.snapshot[i], sizeof(float)) != 0)
                    fail_msg("%s: grads[%zu] = %.9g after the backward, %.9g when reported",
                             label, i, (double)final[i], (double)r.snapshot[i]);

            /* no targets: every range still reported, the gradients unchanged */
            for (int i = 0; i < B * T; i++) y[i] = -1;
            model_forward(&m, x, y);
            r.n = 0;
            model_set_grad_ready_hook(&m, record_range, &r);
            model_backward(&m, 1.0f);
            model_set_grad_ready_hook(&m, NULL, NULL);
            check_ranges(&m, &r, label);
            model_grads_to_host(&m, before);
            assert_memory_equal(before, final, P * sizeof(float));
            free(r.grads);
            free(r.snapshot);
            free(final);
            free(before);
            model_free(&m);
        }
    }
}

/* A TP group of two seen from rank 0: the all-reduce records which buffer it was given. */
typedef struct sums {
    const dt_model *m;
    int n;
    size_t offset[64], numel[64];
} sums;

static void record_sum(void *ctx, float *buf, size_t n) {
    sums *s = ctx;
    assert_true(s->n < 64);
    s->offset[s->n] = (size_t)(buf - s->m->grads_mem);
    s->numel[s->n] = n;
    s->n++;
}

static void no_max(void *ctx, float *buf, size_t n) {
    (void)ctx;
    (void)buf;
    (void)n;
    fail_msg("no max all-reduce expected");
}

static int by_offset(const void *a, const void *b) {
    const size_t *x = a, *y = b;
    return *x < *y ? -1 : *x > *y;
}

static void test_tp_partial_sums_by_range(void **state) {
    (void)state;
    for (int ci = 0; ci < N_MODEL_CASES; ci++) {
        dt_model_config cfg;
        model_case_config(&cfg, &model_cases[ci]);
        cfg.n_layers = N_LAYERS;
        if (cfg.n_kv_heads % 2) continue; /* one kv head does not split over two ranks */
        sums all = {0}, ranged = {0};
        dt_tp_comm comm = {0, 2, &all, record_sum, no_max};
        dt_model m;
        assert_int_equal(model_init_opts(&m, &cfg, dt_backend_cpu(), 5, B, T, &comm, 0), DT_OK);
        all.m = ranged.m = &m;
        model_reduce_tp_grads(&m);
        /* the hook's ranges, written out: the head, layers L-1 .. 0, the embedding */
        comm.ctx = &ranged;
        size_t end = m.layout.total;
        char name[DT_TENSOR_NAME_MAX];
        for (int l = N_LAYERS; l >= -1; l--) {
            size_t first = 0;
            if (l == N_LAYERS) {
                first = offset_of(&m, "norm.weight");
            } else if (l >= 0) {
                snprintf(name, sizeof name, "layers.%d.attention_norm.weight", l);
                first = offset_of(&m, name);
            }
            model_reduce_tp_grads_range(&m, first, end - first);
            end = first;
        }
        int partial = 0;
        for (int i = 0; i < m.layout.n_tensors; i++) partial += m.layout.tensors[i].tp_partial;
        if (all.n != partial || ranged.n != partial)
            fail_msg("%s: %d and %d sums by range, %d TP-partial tensors", model_cases[ci].label,
                     all.n, ranged.n, partial);
        qsort(ranged.offset, (size_t)ranged.n, sizeof(size_t), by_offset);
        for (int i = 0; i < all.n; i++) {
            if (all.offset[i] != ranged.offset[i])
                fail_msg("%s: sum %d at %zu by range, %zu whole", model_cases[ci].label, i,
                         ranged.offset[i], all.offset[i]);
            const dt_tensor_spec *t = NULL;
            for (int j = 0; j < m.layout.n_tensors; j++)
                if (m.layout.tensors[j].offset == all.offset[i]) t = &m.layout.tensors[j];
            assert_non_null(t);
            assert_true(t->tp_partial && t->numel == all.numel[i]);
        }
        model_free(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges_complete_in_order),
        cmocka_unit_test(test_tp_partial_sums_by_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
