/* cpu_matmul_forward / cpu_matmul_backward against a naive double reference and central finite
 * differences, with non-square sizes and every accumulate/skip flag. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"

/* Tolerances. fp32 sgemm over I (or N, O) products of N(0,1) values: each term is rounded once
 * and the sum has at most ~K roundings of magnitude ~sqrt(K) * 6e-8, i.e. < 1e-5 for K <= 70.
 * A wrong index or a missing term errs by O(1). */
#define MM_ATOL 2e-5
#define MM_RTOL 1e-5

/* out (N, O) = inp (N, I) @ w (O, I)^T in double */
static void ref_matmul(double *out, const double *inp, const double *w, int N, int I, int O) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int i = 0; i < I; i++) s += inp[n * I + i] * w[o * I + i];
            out[n * O + o] = s;
        }
}

typedef struct mm_ctx {
    double *inp, *w, *R, *out; /* (N,I) (O,I) (N,O) (N,O) */
    int N, I, O;
} mm_ctx;

/* L = sum(out * R) */
static double mm_loss(void *p) {
    mm_ctx *c = p;
    ref_matmul(c->out, c->inp, c->w, c->N, c->I, c->O);
    double L = 0;
    for (int k = 0; k < c->N * c->O; k++) L += c->out[k] * c->R[k];
    return L;
}

static void check_shape(int N, int I, int O) {
    size_t nI = (size_t)N * I, oI = (size_t)O * I, nO = (size_t)N * O;
    float *inp = ctu_falloc(nI), *w = ctu_falloc(oI), *out = ctu_falloc(nO), *R = ctu_falloc(nO);
    float *c0 = ctu_falloc(nO), *dinp = ctu_falloc(nI), *dinp0 = ctu_falloc(nI);
    float *dw = ctu_falloc(oI), *dw0 = ctu_falloc(oI);
    double *inp_d = ctu_dalloc(nI), *w_d = ctu_dalloc(oI), *R_d = ctu_dalloc(nO);
    size_t nmax = nI > nO ? nI : nO;
    nmax = nmax > oI ? nmax : oI;
    double *out_d = ctu_dalloc(nO), *ref = ctu_dalloc(nmax);
    double *g_inp = ctu_dalloc(nI), *g_w = ctu_dalloc(oI);
    tu_fill_normal_f(inp, nI, 11, 1.0);
    tu_fill_normal_f(w, oI, 12, 1.0);
    tu_fill_normal_f(R, nO, 13, 1.0);
    tu_fill_normal_f(c0, nO, 14, 1.0);
    tu_fill_normal_f(dinp0, nI, 15, 1.0);
    tu_fill_normal_f(dw0, oI, 16, 1.0);
    ctu_to_double(inp_d, inp, nI);
    ctu_to_double(w_d, w, oI);
    ctu_to_double(R_d, R, nO);
    ref_matmul(out_d, inp_d, w_d, N, I, O);

    /* forward, overwrite: the old contents (NaN here) must not leak into the result */
    for (size_t k = 0; k < nO; k++) out[k] = NAN;
    cpu_matmul_forward(out, inp, w, N, I, O, 0);
    assert_close_f(out, out_d, nO, MM_ATOL, MM_RTOL, "matmul out");

    /* forward, accumulate: out = c0 + inp @ w^T */
    memcpy(out, c0, nO * sizeof(float));
    cpu_matmul_forward(out, inp, w, N, I, O, 1);
    ctu_axpy_ref(ref, c0, 1.0, out_d, nO);
    assert_close_f(out, ref, nO, MM_ATOL, MM_RTOL, "matmul out (accumulate)");

    /* gradients of L = sum(out * R) by finite differences; L is bilinear, so the central
     * difference is exact up to the rounding of L (~1e-16 * |L| / h) */
    mm_ctx ctx = {inp_d, w_d, R_d, out_d, N, I, O};
    ctu_fd_grad(g_inp, inp_d, nI, 1e-3, NULL, mm_loss, &ctx);
    ctu_fd_grad(g_w, w_d, oI, 1e-3, NULL, mm_loss, &ctx);

    /* backward, dinp overwritten (NaN garbage first), dw accumulated onto dw0 */
    for (size_t k = 0; k < nI; k++) dinp[k] = NAN;
    memcpy(dw, dw0, oI * sizeof(float));
    cpu_matmul_backward(dinp, dw, R, inp, w, N, I, O, 0);
    assert_close_f(dinp, g_inp, nI, MM_ATOL, MM_RTOL, "matmul dinp");
    ctu_axpy_ref(ref, dw0, 1.0, g_w, oI);
    assert_close_f(dw, ref, oI, MM_ATOL, MM_RTOL, "matmul dw (one call)");

    /* second call: dw has received the gradient twice; dinp accumulates onto dinp0 */
    memcpy(dinp, dinp0, nI * sizeof(float));
    cpu_matmul_backward(dinp, dw, R, inp, w, N, I, O, 1);
    ctu_axpy_ref(ref, dinp0, 1.0, g_inp, nI);
    assert_close_f(dinp, ref, nI, MM_ATOL, MM_RTOL, "matmul dinp (accumulate)");
    ctu_axpy_ref(ref, dw0, 2.0, g_w, oI);
    assert_close_f(dw, ref, oI, MM_ATOL, MM_RTOL, "matmul dw (two calls)");

    /* NULL skips one output and leaves the other correct */
    memcpy(dw, dw0, oI * sizeof(float));
    cpu_matmul_backward(NULL, dw, R, inp, w, N, I, O, 0);
    ctu_axpy_ref(ref, dw0, 1.0, g_w, oI);
    assert_close_f(dw, ref, oI, MM_ATOL, MM_RTOL, "matmul dw (dinp NULL)");
    for (size_t k = 0; k < nI; k++) dinp[k] = NAN;
    cpu_matmul_backward(dinp, NULL, R, inp, w, N, I, O, 0);
    assert_close_f(dinp, g_inp, nI, MM_ATOL, MM_RTOL, "matmul dinp (dw NULL)");

    /* dout with its rows ldd = O + 5 floats apart, NaN between them (the classifier's dlogits
     * keep the stride of the logits they overwrite): the same gradients */
    const int ldd = O + 5;
    float *Rs = malloc((size_t)N * ldd * sizeof(float));
    for (size_t k = 0; k < (size_t)N * ldd; k++)
        Rs[k] = (int)(k % ldd) < O ? R[k / ldd * O + k % ldd] : NAN;
    for (size_t k = 0; k < nI; k++) dinp[k] = NAN;
    memcpy(dw, dw0, oI * sizeof(float));
    cpu_matmul_backward_ld(dinp, dw, Rs, ldd, inp, w, N, I, O, 0);
    assert_close_f(dinp, g_inp, nI, MM_ATOL, MM_RTOL, "matmul dinp (strided dout)");
    ctu_axpy_ref(ref, dw0, 1.0, g_w, oI);
    assert_close_f(dw, ref, oI, MM_ATOL, MM_RTOL, "matmul dw (strided dout)");
    free(Rs);

    free(inp), free(w), free(out), free(R), free(c0), free(dinp), free(dinp0), free(dw);
    free(dw0), free(inp_d), free(w_d), free(R_d), free(out_d), free(ref), free(g_inp), free(g_w);
}

static void test_matmul_small_nonsquare(void **state) {
    (void)state;
    check_shape(7, 5, 3);
}

static void test_matmul_larger(void **state) {
    (void)state;
    /* sizes past OpenBLAS's small-matrix paths, none a multiple of a SIMD width */
    check_shape(33, 70, 19);
    check_shape(1, 9, 40); /* a single row */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_small_nonsquare),
        cmocka_unit_test(test_matmul_larger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
