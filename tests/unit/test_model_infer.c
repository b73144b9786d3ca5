/* Generation (model/infer.h): the KV-cache decoder against the model's own full forward, for
 * every architecture of model_test_util.h (diff, diff GQA n_rep 2, diff without subln, diff with
 * a frozen lambda and with subln scalar, diff_v2, transformer, tied and untied), and the sampler against the analytic softmax. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "model/infer.h"
#include "model_test_util.h"
#include "testutil.h"

enum { P = 8, NEW = 40, CTX = P + NEW };

/* Logits: the decoder accumulates in double over fp32 weights, the full forward is fp32 BLAS and
 * the flash-style attention; both round differently at ~1e-6 relative per op, over 2 layers of
 * width 16. Logits are O(1) here (init_std 0.3), so 1e-5 abs + 1e-4 rel leaves ~10x headroom
 * while a wrong position, pairing, lambda or a missing factor moves them by 1e-2 or more. */
#define LOGIT_ATOL 1e-5
#define LOGIT_RTOL 1e-4

static void case_model(dt_model *m, dt_model_config *cfg, const model_case *c, int T) {
    model_case_config(cfg, c);
    cfg->init_std = 0.3; /* logits far from flat: greedy ties are out of reach of rounding */
    assert_int_equal(model_init(m, cfg, dt_backend_cpu(), 11, 1, T), DT_OK);
    /* subln scalar: the gains start at 1, which would hide a decoder that ignores them or reads
     * another head's; give every (layer, head) its own value */
    for (int l = 0; l < cfg->n_layers; l++) {
        float *s = m->params.layers[l].subln_scale, host[8];
        if (!s) continue;
        assert_true(cfg->n_heads <= 8);
        for (int h = 0; h < cfg->n_heads; h++) host[h] = 0.5f + 0.4f * (float)(2 * l + h);
        m->be->copy_from_host(s, host, (size_t)cfg->n_heads * sizeof(float));
    }
}

static void prompt_of(int32_t *x, int vocab) { model_case_tokens(x, P, vocab, 21); }

static dt_gen_opts greedy_opts(int use_cache) {
    dt_gen_opts o = {NEW, 0.0, 0, 1, use_cache, -1};
    return o;
}

/* The check: greedy with the cache gives exactly the tokens of greedy without it; and at
 * every position the cached decoder's logits equal the full forward's last row. */
static void test_cache_matches_full_forward(void **state) {
    (void)state;
    for (int ci = 0; ci < N_MODEL_CASES; ci++) {
        const model_case *c = &model_cases[ci];
        dt_model m;
        dt_model_config cfg;
        case_model(&m, &cfg, c, CTX);
        int V = cfg.vocab_size;
        int32_t prompt[P], a[NEW], b[NEW];
        prompt_of(prompt, V);
        int na = -1, nb = -1;
        dt_gen_opts oc = greedy_opts(1), of = greedy_opts(0);
        assert_int_equal(infer_generate(a, &na, &m, prompt, P, &oc), DT_OK);
        assert_int_equal(infer_generate(b, &nb, &m, prompt, P, &of), DT_OK);
        assert_int_equal(na, NEW);
        assert_int_equal(nb, NEW);
        for (int i = 0; i < NEW; i++)
            if (a[i] != b[i]) {
                print_error("%s: token %d: %d with the cache, %d without\n", c->label, i, a[i],
                            b[i]);
                fail();
            }
        /* a degenerate model repeating one token would make the check weak */
        int distinct = 0;
        for (int i = 1; i < NEW; i++) distinct += a[i] != a[0];
        assert_true(distinct > 0);

        /* logits at every position of prompt + continuation, and the greedy margin */
        int32_t seq[CTX];
        memcpy(seq, prompt, sizeof prompt);
        memcpy(seq + P, a, sizeof a);
        dt_infer s;
        assert_int_equal(infer_init(&s, &m, CTX), DT_OK);
        float lc[64], lf[64];
        double ref[64], min_gap = INFINITY, max_err = 0;
        for (int n = 1; n <= CTX; n++) {
            assert_int_equal(infer_step(&s, lc, seq[n - 1]), DT_OK);
            assert_int_equal(infer_forward_logits(lf, &m, seq, n), DT_OK);
            for (int v = 0; v < V; v++) ref[v] = lf[v];
            char what[160];
            snprintf(what, sizeof what, "%s: logits after %d tokens", c->label, n);
            /* lambda frozen at 1: at init both branch maps are near-uniform, o1 - o2 cancels to
             * ~1/10 of o1 and subln rescales it to unit rms, so both sides' fp32 rounding grows
             * by that factor (observed ~1.1e-5); 5x the absolute tolerance still fails a wrong
             * lambda or scale by 100x */
            double atol = c->lambda_frozen && c->lambda == 1.0 ? 5 * LOGIT_ATOL : LOGIT_ATOL;
            double err = assert_close_f(lc, ref, (size_t)V, atol, LOGIT_RTOL, what);
            if (err > max_err) max_err = err;
            if (n >= P && n < CTX) {
                /* the greedy choice must win by far more than the tolerance */
                int32_t t = seq[n];
                double second = -INFINITY;
                for (int v = 0; v < V; v++)
                    if (v != t && lf[v] > second) second = lf[v];
                if (lf[t] - second < min_gap) min_gap = lf[t] - second;
            }
        }
        /* every greedy choice wins by more than 10x the largest cache / full-forward difference
         * seen: the token equality above is robust, not a lucky rounding (observed: differences
         * ~2e-6, margins >= 1.9e-4) */
        if (!(min_gap > 10 * max_err)) {
            print_error("%s: greedy margin %g vs logit difference %g\n", c->label, min_gap,
                        max_err);
            fail();
        }
        /* the cache is full; reset starts again at position 0 with the same results */
        assert_int_equal(infer_step(&s, lc, 0), DT_ERR_INPUT);
        infer_reset(&s);
        float l0[64];
        assert_int_equal(infer_step(&s, l0, seq[0]), DT_OK);
        assert_int_equal(infer_forward_logits(lf, &m, seq, 1), DT_OK);
        for (int v = 0; v < V; v++) ref[v] = lf[v];
        assert_close_f(l0, ref, (size_t)V, LOGIT_ATOL, LOGIT_RTOL, "logits after reset");
        infer_free(&s);
        model_free(&m);
    }
}

/* A seed reproduces a sampled run; another seed gives another run; top-k 1 is greedy; a stop
 * token ends the run before it is written. On the cached and the uncached path alike. */
static void test_sampling_runs(void **state) {
    (void)state;
    const model_case *c = &model_cases[0];
    dt_model m;
    dt_model_config cfg;
    case_model(&m, &cfg, c, CTX);
    int32_t prompt[P], g[NEW], s1[NEW], s2[NEW], s3[NEW], k1[NEW];
    prompt_of(prompt, cfg.vocab_size);
    for (int use_cache = 0; use_cache <= 1; use_cache++) {
        int ng, n1, n2, n3, nk;
        dt_gen_opts o = greedy_opts(use_cache);
        assert_int_equal(infer_generate(g, &ng, &m, prompt, P, &o), DT_OK);
        o.temperature = 1.0;
        o.seed = 7;
        assert_int_equal(infer_generate(s1, &n1, &m, prompt, P, &o), DT_OK);
        assert_int_equal(infer_generate(s2, &n2, &m, prompt, P, &o), DT_OK);
        o.seed = 8;
        assert_int_equal(infer_generate(s3, &n3, &m, prompt, P, &o), DT_OK);
        o.top_k = 1;
        assert_int_equal(infer_generate(k1, &nk, &m, prompt, P, &o), DT_OK);
        assert_int_equal(n1, NEW);
        assert_int_equal(n3, NEW);
        assert_int_equal(nk, NEW);
        assert_memory_equal(s1, s2, sizeof s1);
        /* 40 draws at temperature 1 over 37 tokens: two seeds agreeing everywhere, or a draw
         * equal to greedy everywhere, has probability far below 1e-9 on this model */
        assert_memory_not_equal(s1, s3, sizeof s1);
        assert_memory_not_equal(s1, g, sizeof s1);
        assert_memory_equal(k1, g, sizeof g);

        /* stop at the first occurrence of greedy token 5's value */
        int32_t stop = g[5], first = 0;
        while (g[first] != stop) first++;
        dt_gen_opts os = greedy_opts(use_cache);
        os.stop_token = stop;
        int ns;
        assert_int_equal(infer_generate(s1, &ns, &m, prompt, P, &os), DT_OK);
        assert_int_equal(ns, first);
        assert_memory_equal(s1, g, (size_t)first * sizeof(int32_t));
    }
    /* the context bounds the run: a model of T = P + 3 stops after 3 new tokens */
    dt_model small;
    assert_int_equal(model_init(&small, &cfg, dt_backend_cpu(), 11, 1, P + 3), DT_OK);
    model_params_from_host(&small, m.params_mem); /* CPU backend: host memory */
    for (int use_cache = 0; use_cache <= 1; use_cache++) {
        int n;
        dt_gen_opts o = greedy_opts(use_cache);
        assert_int_equal(infer_generate(s1, &n, &small, prompt, P, &o), DT_OK);
        assert_int_equal(n, 3);
        int32_t g2[NEW];
        int ng;
        assert_int_equal(infer_generate(g2, &ng, &m, prompt, P, &o), DT_OK);
        assert_memory_equal(s1, g2, 3 * sizeof(int32_t));
        /* a prompt longer than the context is refused */
        int32_t longp[P + 4] = {0};
        assert_int_equal(infer_generate(s1, &n, &small, longp, P + 4, &o), DT_ERR_INPUT);
    }
    model_free(&small);
    /* token ids outside the vocabulary are refused */
    dt_infer s;
    float lg[64];
    assert_int_equal(infer_init(&s, &m, CTX), DT_OK);
    assert_int_equal(infer_step(&s, lg, cfg.vocab_size), DT_ERR_INPUT);
    assert_int_equal(infer_step(&s, lg, -1), DT_ERR_INPUT);
    infer_free(&s);
    int32_t bad[2] = {1, cfg.vocab_size};
    assert_int_equal(infer_forward_logits(lg, &m, bad, 2), DT_ERR_INPUT);
    model_free(&m);
}

/* The sampler's frequencies against softmax(logits / T) over the top k, computed here in double:
 * 40000 draws, each frequency within 5 binomial standard deviations (+1e-3) of its probability;
 * tokens outside the top k never drawn. The tied logits at the k boundary go to the lower id. */
static void test_sample_distribution(void **state) {
    (void)state;
    enum { V = 7, DRAWS = 40000 };
    const float logits[V] = {0.5f, 2.0f, -1.0f, 1.2f, 1.2f, 3.0f, -0.3f};
    const int ks[] = {0, 3, 4};
    const double temps[] = {1.0, 0.5};
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        for (size_t ti = 0; ti < sizeof temps / sizeof temps[0]; ti++) {
            int k = ks[ki];
            double T = temps[ti];
            /* the top k by (logit desc, id asc): for k 3 {5, 1, 3}; k 4 adds 4 (tie with 3) */
            int in[V] = {0};
            if (k == 0) {
                for (int v = 0; v < V; v++) in[v] = 1;
            } else {
                const int order[] = {5, 1, 3, 4, 0, 6, 2};
                for (int j = 0; j < k; j++) in[order[j]] = 1;
            }
            double p[V], z = 0;
            for (int v = 0; v < V; v++) z += in[v] ? exp(logits[v] / T) : 0;
            for (int v = 0; v < V; v++) p[v] = in[v] ? exp(logits[v] / T) / z : 0;
            long count[V] = {0};
            rng_stream r;
            rng_stream_init(&r, 99, "test");
            for (int i = 0; i < DRAWS; i++) {
                int32_t t = infer_sample(logits, V, T, k, &r);
                assert_true(t >= 0 && t < V);
                count[t]++;
            }
            for (int v = 0; v < V; v++) {
                double f = (double)count[v] / DRAWS;
                double sd = sqrt(p[v] * (1 - p[v]) / DRAWS);
                if (!in[v]) assert_int_equal(count[v], 0);
                if (fabs(f - p[v]) > 5 * sd + 1e-3) {
                    print_error("k %d T %g: token %d frequency %g, expected %g\n", k, T, v, f,
                                p[v]);
                    fail();
                }
            }
        }
    }
    /* greedy: the argmax, the lower id on a tie */
    const float tie[4] = {1.0f, 3.0f, 3.0f, 2.0f};
    rng_stream r;
    rng_stream_init(&r, 1, "test");
    assert_int_equal(infer_sample(tie, 4, 0.0, 0, &r), 1);
    assert_int_equal(infer_sample(tie, 4, 1.0, 1, &r), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_matches_full_forward),
        cmocka_unit_test(test_sampling_runs),
        cmocka_unit_test(test_sample_distribution),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
