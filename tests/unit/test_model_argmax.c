/* model_argmax_rows against an independent reference: the logits recomputed in double from the
 * last forward's final-norm output and the output weights (tied or not), checked first against
 * the model's own per-row losses (so the reference really is the classifier's logits), then their
 * argmax at rows chosen in any order, repeated rows included. A row outside [0, B*T) is
 * DT_ERR_INPUT. The tensor-parallel reduction is checked end to end by
 * tests/scripts/needles_eval.sh (tp = 2 gives the same predictions as tp = 1). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "model/model.h"
#include "model_test_util.h"
#include "testutil.h"
#include "util/status.h"

enum { B = 2, T = 40, N = B * T };

static void test_argmax(void **state) {
    (void)state;
    for (int ci = 0; ci < N_MODEL_CASES; ci++) {
        const model_case *c = &model_cases[ci];
        dt_model_config cfg;
        model_case_config(&cfg, c);
        cfg.init_std = 0.5; /* spread the logits so that near-ties are rare */
        int V = cfg.vocab_size, D = cfg.d_model;
        dt_model m;
        assert_int_equal(model_init(&m, &cfg, dt_backend_cpu(), 11, B, T), DT_OK);
        int32_t x[N], y[N];
        model_case_tokens(x, N, V, 21);
        model_case_tokens(y, N, V, 22);
        model_forward(&m, x, y);
        float xn[N * 16], w[37 * 16], losses[N];
        assert_true(D == 16 && V == 37);
        m.be->copy_to_host(xn, m.final_norm, sizeof xn);
        m.be->copy_to_host(w, m.params.output, sizeof w);
        m.be->copy_to_host(losses, m.losses, sizeof losses);
        /* rows: all of them backwards, then a few again (repeats, and order does not matter) */
        int32_t rows[N + 5], got[N + 5];
        for (int i = 0; i < N; i++) rows[i] = N - 1 - i;
        const int32_t extra[5] = {0, 0, 39, 40, N - 1};
        memcpy(rows + N, extra, sizeof extra);
        assert_int_equal(model_argmax_rows(&m, got, rows, N + 5), DT_OK);
        for (int i = 0; i < N + 5; i++) {
            int r = rows[i];
            double logit[37], mx = -INFINITY, second = -INFINITY, se = 0;
            int arg = -1;
            for (int v = 0; v < V; v++) {
                double s = 0;
                for (int k = 0; k < D; k++) s += (double)xn[r * D + k] * (double)w[v * D + k];
                logit[v] = s;
                if (s > mx) {
                    second = mx;
                    mx = s;
                    arg = v;
                } else if (s > second) {
                    second = s;
                }
            }
            for (int v = 0; v < V; v++) se += exp(logit[v] - mx);
            /* the reference is the classifier's: its cross-entropy is the model's per-row loss
             * (fp32 logits and log-sum-exp: 1e-4 abs + 1e-4 rel) */
            double ce = mx + log(se) - logit[y[r]];
            if (!tu_close(losses[r], ce, 1e-4, 1e-4)) {
                print_error("%s: row %d: loss %g, reference %g\n", c->label, r, losses[r], ce);
                fail();
            }
            /* fp32 logits differ from the double ones by ~1e-6: only a gap below 1e-4 between
             * the two largest could make either answer right */
            if (got[i] != arg && !(mx - second < 1e-4 && logit[got[i]] >= second)) {
                print_error("%s: row %d: argmax %d, reference %d (logits %g vs %g)\n", c->label,
                            r, got[i], arg, got[i] >= 0 ? logit[got[i]] : NAN, mx);
                fail();
            }
        }
        /* a row outside the last forward is an input error, and changes nothing */
        int32_t bad[2] = {3, N}, out2[2] = {-7, -7};
        dt_log_set_quiet(1);
        assert_int_equal(model_argmax_rows(&m, out2, bad, 2), DT_ERR_INPUT);
        bad[1] = -1;
        assert_int_equal(model_argmax_rows(&m, out2, bad, 2), DT_ERR_INPUT);
        dt_log_set_quiet(0);
        assert_int_equal(out2[0], -7);
        model_free(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_argmax)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
