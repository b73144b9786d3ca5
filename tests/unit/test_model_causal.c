/* Causality of the whole model: changing token t never changes the outputs (per-token losses)
 * before t, nor anything in another sequence of the batch; it does change later outputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "model/model.h"
#include "model_test_util.h"

enum { B = 2, T = 70 }; /* longer than one attention tile, not a multiple of it */

static void losses_of(dt_model *m, const int32_t *x, const int32_t *y, float *out) {
    model_forward(m, x, y);
    m->be->copy_to_host(out, m->losses, sizeof(float) * B * T);
}

static void test_causal(void **state) {
    (void)state;
    for (int ci = 0; ci < N_MODEL_CASES; ci++) {
        const model_case *c = &model_cases[ci];
        dt_model_config cfg;
        model_case_config(&cfg, c);
        cfg.max_seq_len = T;
        dt_model m;
        assert_int_equal(model_init(&m, &cfg, dt_backend_cpu(), 3, B, T), DT_OK);
        int32_t x[B * T], y[B * T];
        model_case_tokens(x, B * T, cfg.vocab_size, 5);
        model_case_tokens(y, B * T, cfg.vocab_size, 6);
        float base[B * T], changed[B * T];
        losses_of(&m, x, y, base);
        const int positions[] = {0, 1, 33, 64, T - 1};
        for (size_t pi = 0; pi < sizeof positions / sizeof positions[0]; pi++) {
            int t = positions[pi];
            int32_t x2[B * T];
            memcpy(x2, x, sizeof x2);
            x2[t] = (x2[t] + 1) % cfg.vocab_size; /* sequence 0 only */
            losses_of(&m, x2, y, changed);
            for (int i = 0; i < t; i++)
                if (changed[i] != base[i]) {
                    print_error("%s: changing token %d changed the loss at %d\n", c->label, t, i);
                    fail();
                }
            for (int i = T; i < B * T; i++) assert_true(changed[i] == base[i]);
            assert_true(changed[t] != base[t]); /* the change does reach position t itself */
        }
        model_free(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_causal)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
