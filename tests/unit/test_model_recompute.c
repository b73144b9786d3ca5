/* Activation recomputation (model_init_opts with recompute = 1) against the model without it.
 *
 *  - Bit identity: for every architecture and ablation of model_test_util.h (diff with subln on,
 *    off and scalar, lambda learnable and frozen, diff_v2, transformer, GQA, tied and untied) at
 *    3 layers (so a middle layer is re-run too), two micro-batches accumulated with
 *    model_backward(0.5): every loss and every gradient element are the same bits (memcmp) as
 *    without recomputation. The reference is the model without recomputation, which
 *    test_model_grad checks against finite differences; "the same bits" is the contract (the
 *    same ops on the same inputs in the same order), so there is no tolerance.
 *  - The same at tensor parallelism 2, the ranks being two threads joined by an all-reduce
 *    written here (rank-ordered sums, so both ranks see the same bits), and the floats each rank
 *    all-reduces against a closed form: forward N D (1 + 2 L) + 3 N, backward N D (1 + 2 L), plus
 *    N D (L - 1) per micro-batch with recomputation (the layers re-run before their backward,
 *    each with the attention's out_proj all-reduce), plus the TP-partial gradients once.
 *  - Memory: the activation bytes with recomputation are fewer, equal to a closed form written
 *    here for one small config, and model_activation_bytes agrees with the real allocation. */
#include <pthread.h>
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

enum { B = 2, T = 7, N_LAYERS = 3, N_MICRO = 2 };

/* Two micro-batches of tokens; one ignored target in the first. */
typedef struct batches {
    int32_t x[N_MICRO][B * T], y[N_MICRO][B * T];
} batches;

static void make_batches(batches *b, int vocab) {
    for (int k = 0; k < N_MICRO; k++) {
        model_case_tokens(b->x[k], B * T, vocab, 1 + 2 * (uint64_t)k);
        model_case_tokens(b->y[k], B * T, vocab, 2 + 2 * (uint64_t)k);
    }
    b->y[0][3] = -1;
}

static void case_config(dt_model_config *cfg, const model_case *c) {
    model_case_config(cfg, c);
    cfg->n_layers = N_LAYERS;
}

/* One optimizer step's gradients: an eval-style forward first (no targets: whatever it leaves
 * in the shared activations must not matter), then N_MICRO forward/backward pairs. */
static void run_step(dt_model *m, const batches *b, float losses[N_MICRO]) {
    model_forward(m, b->x[1], NULL);
    model_zero_grad(m);
    for (int k = 0; k < N_MICRO; k++) {
        losses[k] = model_forward(m, b->x[k], b->y[k]);
        model_backward(m, 1.0f / N_MICRO);
    }
    model_reduce_tp_grads(m);
}

/* Every tensor's gradient has a nonzero element (the comparison is not between zeros), and the
 * first differing element of two gradient vectors, for the message. */
static void check_grads(const dt_param_layout *layout, const float *g_ref, const float *g_rc,
                        const char *label) {
    for (int ti = 0; ti < layout->n_tensors; ti++) {
        const dt_tensor_spec *t = &layout->tensors[ti];
        int nonzero = 0;
        for (size_t j = 0; j < t->numel; j++) nonzero |= g_ref[t->offset + j] != 0.0f;
        if (!nonzero) fail_msg("%s: %s: the reference gradient is all zero", label, t->name);
        if (memcmp(g_ref + t->offset, g_rc + t->offset, t->numel * sizeof(float)) != 0) {
            for (size_t j = 0; j < t->numel; j++)
                if (memcmp(&g_ref[t->offset + j], &g_rc[t->offset + j], sizeof(float)) != 0)
                    fail_msg("%s: %s[%zu]: recompute %.9g vs %.9g without", label, t->name, j,
                             (double)g_rc[t->offset + j], (double)g_ref[t->offset + j]);
        }
    }
}

static void test_bit_identical(void **state) {
    (void)state;
    for (int i = 0; i < N_MODEL_CASES; i++) {
        const model_case *c = &model_cases[i];
        dt_model_config cfg;
        case_config(&cfg, c);
        batches b;
        make_batches(&b, cfg.vocab_size);
        dt_model m[2];
        float loss[2][N_MICRO];
        float *g[2];
        for (int rc = 0; rc < 2; rc++) {
            assert_int_equal(model_init_opts(&m[rc], &cfg, dt_backend_cpu(), 7, B, T, NULL, rc),
                             DT_OK);
            assert_int_equal(m[rc].recompute, rc);
            run_step(&m[rc], &b, loss[rc]);
            g[rc] = malloc(m[rc].layout.total * sizeof(float));
            assert_non_null(g[rc]);
            model_grads_to_host(&m[rc], g[rc]);
        }
        assert_int_equal(m[0].layout.total, m[1].layout.total);
        if (memcmp(loss[0], loss[1], sizeof loss[0]) != 0)
            fail_msg("%s: losses %.9g %.9g with recompute, %.9g %.9g without", c->label,
                     (double)loss[1][0], (double)loss[1][1], (double)loss[0][0],
                     (double)loss[0][1]);
        check_grads(&m[0].layout, g[0], g[1], c->label);
        print_message("%-36s loss %.6f %.6f, %zu gradients bit-identical; activations %zu -> %zu "
                      "bytes\n", c->label, (double)loss[1][0], (double)loss[1][1],
                      m[0].layout.total, m[0].acts_bytes, m[1].acts_bytes);
        for (int rc = 0; rc < 2; rc++) {
            free(g[rc]);
            model_free(&m[rc]);
        }
    }
}

/* ---- tensor parallelism over threads ---- */

enum { TP = 2 };

typedef struct fake_group {
    pthread_barrier_t bar;
    float *slot[TP];
} fake_group;

typedef struct fake_rank {
    fake_group *group;
    int rank;
    size_t floats; /* floats all-reduced by this rank */
    float *scratch;
    size_t scratch_n;
} fake_rank;

/* Every rank reads every rank's buffer in rank order into its scratch, waits until all have
 * read, then overwrites its own buffer: the same bits on every rank. */
static void fake_allreduce(void *ctx, float *buf, size_t n, int is_max) {
    fake_rank *r = ctx;
    fake_group *g = r->group;
    r->floats += n;
    if (r->scratch_n < n) {
        free(r->scratch);
        r->scratch = malloc(n * sizeof(float));
        r->scratch_n = n;
        assert_non_null(r->scratch);
    }
    g->slot[r->rank] = buf;
    pthread_barrier_wait(&g->bar);
    for (size_t i = 0; i < n; i++) {
        float acc = g->slot[0][i];
        for (int k = 1; k < TP; k++) {
            float v = g->slot[k][i];
            acc = is_max ? (v > acc ? v : acc) : acc + v;
        }
        r->scratch[i] = acc;
    }
    pthread_barrier_wait(&g->bar);
    memcpy(buf, r->scratch, n * sizeof(float));
}

static void fake_sum(void *ctx, float *buf, size_t n) { fake_allreduce(ctx, buf, n, 0); }
static void fake_max(void *ctx, float *buf, size_t n) { fake_allreduce(ctx, buf, n, 1); }

typedef struct tp_job {
    const dt_model_config *cfg;
    const batches *b;
    fake_rank fr;
    dt_tp_comm comm;
    int ok;
    size_t floats[2];      /* all-reduced floats without / with recompute */
    size_t partial;        /* floats of this rank's TP-partial gradients */
    float loss[2][N_MICRO];
    float *g[2];
    size_t P;
    size_t acts[2];
} tp_job;

static void *tp_rank_main(void *arg) {
    tp_job *j = arg;
    for (int rc = 0; rc < 2; rc++) {
        dt_model m;
        /* model_init_opts does not communicate: a failure here is this rank's alone, and the
         * other rank would wait forever in the first all-reduce; abort rather than hang */
        if (model_init_opts(&m, j->cfg, dt_backend_cpu(), 7, B, T, &j->comm, rc) != DT_OK) {
            fprintf(stderr, "rank %d: model_init_opts failed\n", j->fr.rank);
            abort();
        }
        size_t before = j->fr.floats;
        run_step(&m, j->b, j->loss[rc]);
        j->floats[rc] = j->fr.floats - before;
        j->P = m.layout.total;
        j->acts[rc] = m.acts_bytes;
        j->partial = 0;
        for (int i = 0; i < m.layout.n_tensors; i++)
            if (m.layout.tensors[i].tp_partial) j->partial += m.layout.tensors[i].numel;
        j->g[rc] = malloc(m.layout.total * sizeof(float));
        if (!j->g[rc]) abort();
        model_grads_to_host(&m, j->g[rc]);
        model_free(&m);
    }
    j->ok = 1;
    return NULL;
}

static void test_tensor_parallel(void **state) {
    (void)state;
    /* the cases whose heads and kv heads split over 2 ranks */
    static const int cases[] = {0, 2, 3, 4, 7, 9};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const model_case *c = &model_cases[cases[ci]];
        dt_model_config cfg;
        case_config(&cfg, c);
        assert_int_equal(cfg.n_kv_heads % TP, 0);
        batches b;
        make_batches(&b, cfg.vocab_size);
        fake_group g;
        assert_int_equal(pthread_barrier_init(&g.bar, NULL, TP), 0);
        tp_job jobs[TP];
        pthread_t th[TP];
        memset(jobs, 0, sizeof jobs);
        for (int r = 0; r < TP; r++) {
            tp_job *j = &jobs[r];
            j->cfg = &cfg;
            j->b = &b;
            j->fr.group = &g;
            j->fr.rank = r;
            j->comm = (dt_tp_comm){r, TP, &j->fr, fake_sum, fake_max};
            assert_int_equal(pthread_create(&th[r], NULL, tp_rank_main, j), 0);
        }
        for (int r = 0; r < TP; r++) assert_int_equal(pthread_join(th[r], NULL), 0);
        pthread_barrier_destroy(&g.bar);

        size_t N = (size_t)B * T, D = cfg.d_model, L = cfg.n_layers;
        for (int r = 0; r < TP; r++) {
            tp_job *j = &jobs[r];
            char label[96];
            snprintf(label, sizeof label, "%s, tp rank %d of %d", c->label, r, TP);
            assert_true(j->ok);
            if (memcmp(j->loss[0], j->loss[1], sizeof j->loss[0]) != 0)
                fail_msg("%s: losses differ with recompute", label);
            dt_param_layout lay;
            assert_int_equal(param_layout_init_tp(&lay, &cfg, r, TP), DT_OK);
            assert_int_equal(lay.total, j->P);
            check_grads(&lay, j->g[0], j->g[1], label);
            param_layout_free(&lay);
            /* the eval-style forward (no targets: embedding and layers, no loss) plus N_MICRO
             * training micro-batches, plus the partial gradients once */
            size_t fwd = N * D * (1 + 2 * L), loss = 3 * N, bwd = N * D * (1 + 2 * L);
            size_t want = fwd + N_MICRO * (fwd + loss + bwd) + j->partial;
            size_t extra = N_MICRO * N * D * (L - 1);
            if (j->floats[0] != want || j->floats[1] != want + extra)
                fail_msg("%s: all-reduced %zu floats without and %zu with recompute, expected "
                         "%zu and %zu", label, j->floats[0], j->floats[1], want, want + extra);
            assert_true(j->acts[1] < j->acts[0]);
            print_message("%-48s %zu gradients bit-identical; all-reduced %zu -> %zu floats\n",
                          label, j->P, j->floats[0], j->floats[1]);
            free(j->g[0]);
            free(j->g[1]);
            free(j->fr.scratch);
        }
    }
}

/* ---- memory ---- */

/* n elements of `bytes` each, rounded up to 64 bytes (the carver's alignment). */
static size_t r64(size_t n, size_t bytes) { return (n * bytes + 63) & ~(size_t)63; }
static size_t r16(size_t n) { return r64(n, sizeof(float)); }

/* The activation bytes of model_case "diff" (subln on, 2 heads of dim 4, 2 kv heads, D 16,
 * F 24, V 37) at N_LAYERS layers and B x T, written out buffer by buffer (model.h's shapes), each
 * rounded up to 64 bytes (the carver's alignment); the operands (attn_in, q, k, v, attn_out,
 * ffn_in, gate_up, hidden, final_norm, and the gradient scratch dgate_up (which dq_rot and
 * dk_rot share), dv and, in bf16 only, dres_op) at ob bytes an element, the rest fp32. */
static size_t closed_form_diff(int recompute, size_t ob) {
    size_t N = (size_t)B * T, D = 16, F = 24, V = 37, L = N_LAYERS, H = 2, Hkv = 2, d = 4;
    size_t A = 2 * H * d;
    /* one layer's activations other than x_in: attn_rstd, attn_in, q, k, v, attn_out, o1, o2,
     * attn_lse, sub_rstd, lambda, y, ffn_rstd, ffn_in, gate_up, hidden */
    size_t rest = r16(N) + r64(N * D, ob) + r64(N * 2 * H * d, ob) + r64(N * 2 * Hkv * d, ob) +
                  r64(N * Hkv * 2 * d, ob) + r64(N * A, ob) + 2 * r16(N * A) + r16(N * 2 * H) +
                  r16(N * H) + r16(1) + r16(N * D) + r16(N) + r64(N * D, ob) + r64(N * 2 * F, ob) + r64(N * F, ob);
    size_t layers = L * r16(N * D) + (recompute ? 1 : L) * rest;
    size_t chunk = N; /* 2^22 / V rows cap the classifier's chunk: far above N here */
    /* x_final, final_rstd, final_norm, logits, losses, lse, rowmax, gmax, xsums */
    size_t head = r16(N * D) + r16(N) + r64(N * D, ob) + r16(chunk * V) + 4 * r16(N) +
                  r16(2 * N);
    /* dres, its operand copy (only where an operand is narrower than fp32: bf16), dnormed,
     * dwide (max(F, A)), dgate_up (an operand: 2F, or dq_rot's and dk_rot's space where that
     * is more: 2F here), dq, dk, dv (an operand), dlam (1), then the inputs, the targets and
     * their count (one upload) */
    size_t grads = 2 * r16(N * D) + (ob < sizeof(float) ? r64(N * D, ob) : 0) +
                   r16(N * (F > A ? F : A)) + r64(N * 2 * F, ob) +
                   r16(N * 2 * H * d) + r16(N * 2 * Hkv * d) + r64(N * Hkv * 2 * d, ob) + r16(1) +
                   r64(2 * N + 1, sizeof(int32_t));
    return layers + head + grads;
}

static void test_activation_memory(void **state) {
    (void)state;
    for (int i = 0; i < N_MODEL_CASES; i++) {
        dt_model_config cfg;
        case_config(&cfg, &model_cases[i]);
        dt_tp_shape whole = tp_shape_of(&cfg, 0, 1);
        size_t f[2];
        for (int rc = 0; rc < 2; rc++) {
            f[rc] = model_activation_bytes(&cfg, &whole, B, T, rc, sizeof(float));
            dt_model m;
            assert_int_equal(model_init_opts(&m, &cfg, dt_backend_cpu(), 7, B, T, NULL, rc),
                             DT_OK);
            assert_int_equal(m.acts_bytes, f[rc]);
            /* recompute: x_in per layer, everything else shared; without: nothing shared */
            for (int l = 1; l < cfg.n_layers; l++) {
                assert_ptr_not_equal(m.acts[l].x_in, m.acts[0].x_in);
                if (rc) {
                    assert_ptr_equal(m.acts[l].q, m.acts[0].q);
                    assert_ptr_equal(m.acts[l].hidden, m.acts[0].hidden);
                } else {
                    assert_ptr_not_equal(m.acts[l].q, m.acts[0].q);
                }
            }
            model_free(&m);
        }
        assert_true(f[1] < f[0]);
        if (i == 0) {
            assert_string_equal(model_cases[i].label, "diff");
            assert_int_equal(f[0], closed_form_diff(0, sizeof(float)));
            assert_int_equal(f[1], closed_form_diff(1, sizeof(float)));
            /* a backend storing operands in bf16 (the CUDA backend under bf16) */
            for (int rc = 0; rc < 2; rc++)
                assert_int_equal(model_activation_bytes(&cfg, &whole, B, T, rc, 2),
                                 closed_form_diff(rc, 2));
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bit_identical),
        cmocka_unit_test(test_tensor_parallel),
        cmocka_unit_test(test_activation_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
