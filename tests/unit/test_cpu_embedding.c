/* cpu_embedding_forward / cpu_embedding_backward with the vocabulary range [v0, v0 + nv):
 * lookups, zero rows for tokens outside the range, the gradient against finite differences,
 * accumulation, and bit-identical backward results for any thread count. */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"

/* Tolerance for the gradient: each element of dwte is a sum of at most 4 fp32 values of size
 * O(1) added to an O(1) start value, i.e. <= 5 roundings of 6e-8 * 4; the finite differences of
 * the linear loss (step 1e-3) are exact to ~1e-12. 1e-6 absolute + 1e-6 relative; a dropped or
 * misplaced token errs by O(1). The forward is a copy and is compared exactly. */
#define EMB_ATOL 1e-6
#define EMB_RTOL 1e-6

/* out (N, D) = wte[tokens - v0] inside [v0, v0 + nv), 0 outside, in double */
static void ref_embedding(double *out, const int32_t *tokens, const double *wte, int N, int D,
                          int v0, int nv) {
    for (int n = 0; n < N; n++) {
        int64_t row = (int64_t)tokens[n] - v0;
        for (int j = 0; j < D; j++)
            out[(size_t)n * D + j] = (row >= 0 && row < nv) ? wte[row * D + j] : 0.0;
    }
}

typedef struct emb_ctx {
    double *wte, *R, *out; /* (nv, D) (N, D) (N, D) */
    const int32_t *tokens;
    int N, D, v0, nv;
} emb_ctx;

static double emb_loss(void *p) {
    emb_ctx *c = p;
    ref_embedding(c->out, c->tokens, c->wte, c->N, c->D, c->v0, c->nv);
    double L = 0;
    for (int k = 0; k < c->N * c->D; k++) L += c->out[k] * c->R[k];
    return L;
}

static void check_embedding(const int32_t *tokens, int N, int D, int v0, int nv) {
    size_t nD = (size_t)N * D, vD = (size_t)nv * D;
    float *wte = ctu_falloc(vD), *out = ctu_falloc(nD), *R = ctu_falloc(nD);
    float *dw = ctu_falloc(vD), *dw0 = ctu_falloc(vD);
    double *wte_d = ctu_dalloc(vD), *R_d = ctu_dalloc(nD), *out_d = ctu_dalloc(nD);
    double *g = ctu_dalloc(vD), *ref = ctu_dalloc(vD);
    tu_fill_normal_f(wte, vD, 71, 1.0);
    tu_fill_normal_f(R, nD, 72, 1.0);
    tu_fill_normal_f(dw0, vD, 73, 1.0);
    ctu_to_double(wte_d, wte, vD);
    ctu_to_double(R_d, R, nD);

    for (size_t k = 0; k < nD; k++) out[k] = NAN; /* rows outside the range are written too */
    cpu_embedding_forward(out, tokens, wte, N, D, v0, nv);
    ref_embedding(out_d, tokens, wte_d, N, D, v0, nv);
    assert_close_f(out, out_d, nD, 0, 0, "embedding out"); /* a copy: exact */

    emb_ctx ctx = {wte_d, R_d, out_d, tokens, N, D, v0, nv};
    ctu_fd_grad(g, wte_d, vD, 1e-3, NULL, emb_loss, &ctx);
    memcpy(dw, dw0, vD * sizeof(float));
    cpu_embedding_backward(dw, R, tokens, N, D, v0, nv);
    ctu_axpy_ref(ref, dw0, 1.0, g, vD);
    assert_close_f(dw, ref, vD, EMB_ATOL, EMB_RTOL, "embedding dwte (one call)");
    cpu_embedding_backward(dw, R, tokens, N, D, v0, nv);
    ctu_axpy_ref(ref, dw0, 2.0, g, vD);
    assert_close_f(dw, ref, vD, EMB_ATOL, EMB_RTOL, "embedding dwte (two calls)");

    free(wte), free(out), free(R), free(dw), free(dw0), free(wte_d), free(R_d), free(out_d);
    free(g), free(ref);
}

static void test_embedding_full_vocab(void **state) {
    (void)state;
    /* repeated tokens (3 three times, 9 twice), unused rows (1, 2, 6, 8) */
    const int32_t tokens[10] = {3, 0, 9, 3, 5, 7, 4, 3, 9, 0};
    check_embedding(tokens, 10, 70, 0, 10); /* D = 70: two column blocks, one partial */
}

static void test_embedding_vocab_range(void **state) {
    (void)state;
    /* this rank holds rows [4, 7): tokens 4, 5, 6 are embedded, the rest give zero rows and no
     * gradient, including negative and extreme ids */
    const int32_t tokens[12] = {4, 3, 6, 7, 5, 6, 0, -1, INT32_MAX, INT32_MIN, 6, 12};
    check_embedding(tokens, 12, 5, 4, 3);

    float wte[3 * 2] = {1, 2, 3, 4, 5, 6}, out[12 * 2];
    cpu_embedding_forward(out, tokens, wte, 12, 2, 4, 3);
    const float expect[12 * 2] = {1, 2, 0, 0, 5, 6, 0, 0, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 0, 0};
    assert_memory_equal(out, expect, sizeof expect);
}

/* Many tokens share rows; the result must be the same bits for 1, 2 and 3 threads. */
static void test_embedding_backward_thread_independent(void **state) {
    (void)state;
    enum { N = 3000, D = 200, V = 50 };
    int32_t *tokens = malloc(N * sizeof(int32_t));
    float *dout = ctu_falloc((size_t)N * D), *dw[3];
    for (int n = 0; n < N; n++) tokens[n] = (int32_t)((n * 7919u) % V);
    tu_fill_normal_f(dout, (size_t)N * D, 74, 1.0);
    int threads[3] = {1, 2, 3}, saved = omp_get_max_threads();
    for (int k = 0; k < 3; k++) {
        omp_set_num_threads(threads[k]);
        dw[k] = ctu_falloc((size_t)V * D);
        cpu_embedding_backward(dw[k], dout, tokens, N, D, 0, V);
    }
    omp_set_num_threads(saved);
    assert_true(ctu_same_bits(dw[0], dw[1], (size_t)V * D));
    assert_true(ctu_same_bits(dw[0], dw[2], (size_t)V * D));
    for (int k = 0; k < 3; k++) free(dw[k]);
    free(tokens), free(dout);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding_full_vocab),
        cmocka_unit_test(test_embedding_vocab_range),
        cmocka_unit_test(test_embedding_backward_thread_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
