/* cpu_head_scale_forward / cpu_head_scale_backward (model.subln: scalar) against a double
 * reference and central finite differences of L = sum R * out, including the in-place backward
 * (dinp == dout) the model uses and the accumulation of ds. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"

/* Tolerance: each output is one fp32 product (0.5 ulp, rel 6e-8); ds sums N*w = 280 products in
 * double and rounds once, so 1e-6 relative plus 1e-6 absolute (outputs near 0) is generous.
 * The finite differences of a function linear in each variable err only by double rounding
 * (~1e-10 with step 1e-4). A wrong head index or a missing term errs by O(0.1). */
#define HS_ATOL 1e-6
#define HS_RTOL 1e-6

typedef struct hs_ctx {
    double *x, *s, *R;
    int N, H, w;
} hs_ctx;

static double hs_loss(void *p) {
    hs_ctx *c = p;
    double L = 0;
    for (int n = 0; n < c->N; n++)
        for (int h = 0; h < c->H; h++)
            for (int i = 0; i < c->w; i++) {
                size_t j = ((size_t)n * c->H + h) * c->w + i;
                L += c->R[j] * c->x[j] * c->s[h];
            }
    return L;
}

static void test_head_scale(void **state) {
    (void)state;
    const int N = 35, H = 3, w = 8;
    const size_t n = (size_t)N * H * w;
    float *x = ctu_falloc(n), *s = ctu_falloc(H), *R = ctu_falloc(n), *out = ctu_falloc(n);
    float *dx = ctu_falloc(n), *ds = ctu_falloc(H), *inplace = ctu_falloc(n);
    double *x_d = ctu_dalloc(n), *s_d = ctu_dalloc(H), *R_d = ctu_dalloc(n), *ref = ctu_dalloc(n);
    double *fd_x = ctu_dalloc(n), *fd_s = ctu_dalloc(H);
    tu_fill_normal_f(x, n, 71, 1.0);
    tu_fill_normal_f(R, n, 72, 1.0);
    s[0] = 1.0f, s[1] = -0.7f, s[2] = 2.5f; /* distinct per head: a swapped head shows */
    ctu_to_double(x_d, x, n);
    ctu_to_double(s_d, s, H);
    ctu_to_double(R_d, R, n);

    for (size_t j = 0; j < n; j++) out[j] = NAN;
    cpu_head_scale_forward(out, x, s, N, H, w);
    for (size_t j = 0; j < n; j++) ref[j] = x_d[j] * s_d[(j / w) % H];
    assert_close_f(out, ref, n, HS_ATOL, HS_RTOL, "head_scale out");

    hs_ctx ctx = {x_d, s_d, R_d, N, H, w};
    ctu_fd_grad(fd_x, x_d, n, 1e-4, NULL, hs_loss, &ctx);
    ctu_fd_grad(fd_s, s_d, H, 1e-4, NULL, hs_loss, &ctx);
    for (size_t j = 0; j < n; j++) dx[j] = NAN; /* dinp is overwritten */
    cpu_head_scale_backward(dx, ds, R, x, s, N, H, w);
    assert_close_f(dx, fd_x, n, HS_ATOL, HS_RTOL, "head_scale dinp");
    assert_close_f(ds, fd_s, H, HS_ATOL, HS_RTOL, "head_scale ds");

    /* ds accumulates: a second call adds the same again; in place dinp == dout gives the same
     * bits as the out-of-place call */
    for (size_t j = 0; j < n; j++) inplace[j] = R[j];
    cpu_head_scale_backward(inplace, ds, inplace, x, s, N, H, w);
    for (int h = 0; h < H; h++) fd_s[h] *= 2;
    assert_close_f(ds, fd_s, H, HS_ATOL, HS_RTOL, "head_scale ds accumulated");
    assert_true(ctu_same_bits(inplace, dx, n));

    free(x), free(s), free(R), free(out), free(dx), free(ds), free(inplace);
    free(x_d), free(s_d), free(R_d), free(ref), free(fd_x), free(fd_s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
