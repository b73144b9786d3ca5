/* cpu_rmsnorm_forward / cpu_rmsnorm_backward against a double reference and central finite
 * differences; accumulation of dinp and dweight; the backward's copy of the accumulated dinp
 * (the fp32 operand); weight == NULL; thread-count independence. */
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

#define EPS 1e-5f

/* Forward tolerance: out = x * rstd * w takes three fp32 roundings (rstd, two products), i.e.
 * a relative error below 4 * 6e-8; 1e-6 relative leaves margin, a wrong formula errs by >1e-2. */
#define FWD_ATOL 1e-7
#define FWD_RTOL 1e-6
/* Backward tolerance: the op works in double but receives rstd rounded to fp32 (relative error
 * 6e-8) and returns fp32; gradients here are O(1..10) (row scales 0.1 .. 10), so errors are
 * ~1e-6 at worst. The finite differences (step 1e-5 * row rms) err by ~1e-9. 1e-5 absolute plus
 * 1e-5 relative is a 10x margin; a missing term of the backward errs by O(0.1). */
#define BWD_ATOL 1e-5
#define BWD_RTOL 1e-5

static void ref_rmsnorm(double *out, double *rstd, const double *x, const double *w, int N, int C,
                        double eps) {
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int i = 0; i < C; i++) ss += x[n * C + i] * x[n * C + i];
        double r = 1.0 / sqrt(ss / C + eps);
        if (rstd) rstd[n] = r;
        for (int i = 0; i < C; i++) out[n * C + i] = x[n * C + i] * r * (w ? w[i] : 1.0);
    }
}

typedef struct rn_ctx {
    double *x, *w, *R, *out; /* (N,C) (C) (N,C) (N,C) */
    int N, C;
} rn_ctx;

static double rn_loss(void *p) {
    rn_ctx *c = p;
    ref_rmsnorm(c->out, NULL, c->x, c->w, c->N, c->C, EPS);
    double L = 0;
    for (int k = 0; k < c->N * c->C; k++) L += c->out[k] * c->R[k];
    return L;
}

/* Row n of x gets scale 10^(n mod 3 - 1): rows of rms 0.1, 1 and 10. */
static void fill_rows(float *x, int N, int C, uint64_t seed) {
    tu_fill_normal_f(x, (size_t)N * C, seed, 1.0);
    for (int n = 0; n < N; n++) {
        float s = (float)pow(10.0, n % 3 - 1);
        for (int i = 0; i < C; i++) x[n * C + i] *= s;
    }
}

static void check_rmsnorm(int N, int C, int with_weight) {
    size_t nc = (size_t)N * C;
    float *x = ctu_falloc(nc), *w = ctu_falloc(C), *R = ctu_falloc(nc), *out = ctu_falloc(nc);
    float *rstd = ctu_falloc(N), *dinp = ctu_falloc(nc), *dinp0 = ctu_falloc(nc);
    float *dw = ctu_falloc(C), *dw0 = ctu_falloc(C);
    float *copy = ctu_falloc(nc), *dinp_alone = ctu_falloc(nc);
    double *x_d = ctu_dalloc(nc), *w_d = ctu_dalloc(C), *R_d = ctu_dalloc(nc);
    double *out_d = ctu_dalloc(nc), *rstd_d = ctu_dalloc(N), *ref = ctu_dalloc(nc);
    double *g_x = ctu_dalloc(nc), *g_w = ctu_dalloc(C), *hs = ctu_dalloc(nc);
    fill_rows(x, N, C, 21);
    tu_fill_normal_f(w, C, 22, 1.0);
    for (int i = 0; i < C; i++) w[i] += 1.0f; /* gains around 1, as after init */
    tu_fill_normal_f(R, nc, 23, 1.0);
    tu_fill_normal_f(dinp0, nc, 24, 1.0);
    tu_fill_normal_f(dw0, C, 25, 1.0);
    ctu_to_double(x_d, x, nc);
    ctu_to_double(w_d, w, C);
    ctu_to_double(R_d, R, nc);
    const float *wp = with_weight ? w : NULL;
    double *wp_d = with_weight ? w_d : NULL;

    ref_rmsnorm(out_d, rstd_d, x_d, wp_d, N, C, EPS);
    cpu_rmsnorm_forward(out, rstd, x, wp, N, C, EPS);
    assert_close_f(out, out_d, nc, FWD_ATOL, FWD_RTOL, "rmsnorm out");
    assert_close_f(rstd, rstd_d, N, 0, FWD_RTOL, "rmsnorm rstd");

    /* finite differences, step proportional to each row's rms (1 / rstd) */
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) hs[n * C + i] = 1.0 / rstd_d[n];
    rn_ctx ctx = {x_d, wp_d, R_d, out_d, N, C};
    ctu_fd_grad(g_x, x_d, nc, 1e-5, hs, rn_loss, &ctx);
    if (with_weight) ctu_fd_grad(g_w, w_d, C, 1e-5, NULL, rn_loss, &ctx);

    /* dinp and dweight both accumulate: one call adds the gradient to dinp0 / dw0 ... */
    memcpy(dinp, dinp0, nc * sizeof(float));
    memcpy(dw, dw0, C * sizeof(float));
    for (size_t k = 0; k < nc; k++) copy[k] = NAN;
    cpu_rmsnorm_backward(dinp, copy, with_weight ? dw : NULL, R, x, wp, rstd, N, C);
    ctu_axpy_ref(ref, dinp0, 1.0, g_x, nc);
    assert_close_f(dinp, ref, nc, BWD_ATOL, BWD_RTOL, "rmsnorm dinp (one call)");
    if (with_weight) {
        ctu_axpy_ref(ref, dw0, 1.0, g_w, C);
        assert_close_f(dw, ref, C, BWD_ATOL, BWD_RTOL, "rmsnorm dweight (one call)");
    }
    /* the copy (the fp32 operand) is dinp after the call: the accumulated gradient; without a
     * copy (NULL) dinp is the same */
    assert_true(ctu_same_bits(copy, dinp, nc));
    memcpy(dinp_alone, dinp0, nc * sizeof(float));
    cpu_rmsnorm_backward(dinp_alone, NULL, NULL, R, x, wp, rstd, N, C);
    assert_true(ctu_same_bits(dinp_alone, dinp, nc));
    /* ... and a second call adds it again (the copy follows) */
    cpu_rmsnorm_backward(dinp, copy, with_weight ? dw : NULL, R, x, wp, rstd, N, C);
    ctu_axpy_ref(ref, dinp0, 2.0, g_x, nc);
    assert_close_f(dinp, ref, nc, BWD_ATOL, BWD_RTOL, "rmsnorm dinp (two calls)");
    if (with_weight) {
        ctu_axpy_ref(ref, dw0, 2.0, g_w, C);
        assert_close_f(dw, ref, C, BWD_ATOL, BWD_RTOL, "rmsnorm dweight (two calls)");
    }
    assert_true(ctu_same_bits(copy, dinp, nc));

    free(x), free(w), free(R), free(out), free(rstd), free(dinp), free(dinp0), free(dw);
    free(dw0), free(x_d), free(w_d), free(R_d), free(out_d), free(rstd_d), free(ref), free(g_x);
    free(g_w), free(hs), free(copy), free(dinp_alone);
}

static void test_rmsnorm_weight(void **state) {
    (void)state;
    check_rmsnorm(6, 150, 1); /* C spans three 64-column blocks of the dweight pass */
    check_rmsnorm(3, 7, 1);
}

static void test_rmsnorm_no_weight(void **state) {
    (void)state;
    check_rmsnorm(5, 33, 0);
}

/* dweight reduces over rows; its result must not depend on the number of threads. */
static void test_rmsnorm_thread_independent(void **state) {
    (void)state;
    int N = 301, C = 200;
    size_t nc = (size_t)N * C;
    float *x = ctu_falloc(nc), *w = ctu_falloc(C), *dy = ctu_falloc(nc), *out = ctu_falloc(nc);
    float *rstd = ctu_falloc(N);
    float *dx[3], *dw[3];
    fill_rows(x, N, C, 31);
    tu_fill_normal_f(w, C, 32, 1.0);
    tu_fill_normal_f(dy, nc, 33, 1.0);
    cpu_rmsnorm_forward(out, rstd, x, w, N, C, EPS);
    int threads[3] = {1, 2, 3};
    int saved = omp_get_max_threads();
    for (int k = 0; k < 3; k++) {
        omp_set_num_threads(threads[k]);
        dx[k] = ctu_falloc(nc);
        dw[k] = ctu_falloc(C);
        cpu_rmsnorm_backward(dx[k], NULL, dw[k], dy, x, w, rstd, N, C);
    }
    omp_set_num_threads(saved);
    for (int k = 1; k < 3; k++) {
        assert_true(ctu_same_bits(dx[0], dx[k], nc));
        assert_true(ctu_same_bits(dw[0], dw[k], C));
    }
    for (int k = 0; k < 3; k++) free(dx[k]), free(dw[k]);
    free(x), free(w), free(dy), free(out), free(rstd);
}

/* The fused residual add + norm: the same bits as cpu_add then cpu_rmsnorm_forward, with y
 * separate, aliasing a, and aliasing b; with and without a gain. */
static void test_residual_rmsnorm(void **state) {
    (void)state;
    int N = 7, C = 70;
    size_t nc = (size_t)N * C;
    float *a = ctu_falloc(nc), *b = ctu_falloc(nc), *w = ctu_falloc(C);
    float *y_ref = ctu_falloc(nc), *out_ref = ctu_falloc(nc), *rstd_ref = ctu_falloc(N);
    float *y = ctu_falloc(nc), *out = ctu_falloc(nc), *rstd = ctu_falloc(N);
    fill_rows(a, N, C, 41);
    tu_fill_normal_f(b, nc, 42, 0.7);
    tu_fill_normal_f(w, C, 43, 1.0);
    for (int with_weight = 0; with_weight < 2; with_weight++) {
        const float *wp = with_weight ? w : NULL;
        cpu_add(y_ref, a, b, nc);
        cpu_rmsnorm_forward(out_ref, rstd_ref, y_ref, wp, N, C, EPS);
        for (int alias = 0; alias < 3; alias++) { /* y separate, y == a, y == b */
            if (alias == 0) memset(y, 0, nc * sizeof(float));
            if (alias == 1) memcpy(y, a, nc * sizeof(float));
            if (alias == 2) memcpy(y, b, nc * sizeof(float));
            const float *ap = alias == 1 ? y : a, *bp = alias == 2 ? y : b;
            memset(out, 0, nc * sizeof(float));
            cpu_residual_rmsnorm_forward(y, out, rstd, ap, bp, wp, N, C, EPS);
            assert_true(ctu_same_bits(y, y_ref, nc));
            assert_true(ctu_same_bits(out, out_ref, nc));
            assert_true(ctu_same_bits(rstd, rstd_ref, N));
        }
    }
    free(a), free(b), free(w), free(y_ref), free(out_ref), free(rstd_ref), free(y), free(out);
    free(rstd);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_residual_rmsnorm),
        cmocka_unit_test(test_rmsnorm_weight),
        cmocka_unit_test(test_rmsnorm_no_weight),
        cmocka_unit_test(test_rmsnorm_thread_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
