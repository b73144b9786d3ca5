/* cpu_swiglu_forward / cpu_swiglu_backward against a double reference and central finite
 * differences, including saturated gate values, and on strided rows against the dense op. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"

/* Tolerance: expf is within 1-2 ulp and each output takes ~5 fp32 roundings, so the relative
 * error is below 1e-6; 1e-6 absolute covers outputs near 0 (where silu(g) ~ g/2 cancels nothing
 * but the absolute error of u * g * sigmoid is still ~1e-7). The finite differences (step 1e-5)
 * err by ~1e-10. A wrong derivative term errs by O(0.1). */
#define SW_ATOL 1e-6
#define SW_RTOL 2e-6

static double ref_silu(double x) { return x / (1.0 + exp(-x)); }

typedef struct sw_ctx {
    double *g, *u, *R; /* (n) each */
    size_t n;
} sw_ctx;

static double sw_loss(void *p) {
    sw_ctx *c = p;
    double L = 0;
    for (size_t i = 0; i < c->n; i++) L += ref_silu(c->g[i]) * c->u[i] * c->R[i];
    return L;
}

static void test_swiglu(void **state) {
    (void)state;
    const size_t n = 1003;
    float *g = ctu_falloc(n), *u = ctu_falloc(n), *R = ctu_falloc(n), *h = ctu_falloc(n);
    float *dg = ctu_falloc(n), *du = ctu_falloc(n);
    double *g_d = ctu_dalloc(n), *u_d = ctu_dalloc(n), *R_d = ctu_dalloc(n), *ref = ctu_dalloc(n);
    double *fd_g = ctu_dalloc(n), *fd_u = ctu_dalloc(n);
    tu_fill_normal_f(g, n, 51, 3.0); /* gates spread over the curved part of silu */
    tu_fill_normal_f(u, n, 52, 1.0);
    tu_fill_normal_f(R, n, 53, 1.0);
    /* saturated gates: silu = 0 (exp(-g) overflows in fp32) and silu = g */
    g[0] = -100.0f, g[1] = -1e4f, g[2] = 100.0f, g[3] = 1e4f, g[4] = 0.0f, g[5] = -88.5f;
    ctu_to_double(g_d, g, n);
    ctu_to_double(u_d, u, n);
    ctu_to_double(R_d, R, n);

    cpu_swiglu_forward(h, g, u, 1, n, n);
    for (size_t i = 0; i < n; i++) ref[i] = ref_silu(g_d[i]) * u_d[i];
    assert_close_f(h, ref, n, SW_ATOL, SW_RTOL, "swiglu h");

    sw_ctx ctx = {g_d, u_d, R_d, n};
    ctu_fd_grad(fd_g, g_d, n, 1e-5, NULL, sw_loss, &ctx);
    ctu_fd_grad(fd_u, u_d, n, 1e-5, NULL, sw_loss, &ctx);
    /* outputs are overwritten: NaN garbage first */
    for (size_t i = 0; i < n; i++) dg[i] = du[i] = NAN;
    cpu_swiglu_backward(dg, du, R, g, u, 1, n, n);
    assert_close_f(dg, fd_g, n, SW_ATOL, SW_RTOL, "swiglu dg");
    assert_close_f(du, fd_u, n, SW_ATOL, SW_RTOL, "swiglu du");

    free(g), free(u), free(R), free(h), free(dg), free(du), free(g_d), free(u_d), free(R_d);
    free(ref), free(fd_g), free(fd_u);
}

/* The model may write the gate gradients over the gate activations: dg = g, du = u. */
static void test_swiglu_backward_in_place(void **state) {
    (void)state;
    const size_t n = 40000; /* large enough for the parallel path */
    float *g = ctu_falloc(n), *u = ctu_falloc(n), *dh = ctu_falloc(n);
    float *dg = ctu_falloc(n), *du = ctu_falloc(n);
    tu_fill_normal_f(g, n, 54, 2.0);
    tu_fill_normal_f(u, n, 55, 1.0);
    tu_fill_normal_f(dh, n, 56, 1.0);
    cpu_swiglu_backward(dg, du, dh, g, u, 1, n, n);
    cpu_swiglu_backward(g, u, dh, g, u, 1, n, n);
    assert_true(ctu_same_bits(g, dg, n));
    assert_true(ctu_same_bits(u, du, n));
    free(g), free(u), free(dh), free(dg), free(du);
}

/* g and u as the two halves of rows ld apart (the model's one gate-and-up product: ld = 2 cols;
 * here with gaps too): the dense op's bits on the rows gathered, the gaps untouched, and the
 * backward in place over the strided buffer. */
static void test_swiglu_strided(void **state) {
    (void)state;
    const size_t rows = 9, cols = 1111, ld = 2 * cols + 5, n = rows * cols, span = rows * ld;
    float *gu = ctu_falloc(span), *dh = ctu_falloc(n), *g = ctu_falloc(n), *u = ctu_falloc(n);
    float *h = ctu_falloc(n), *hs = ctu_falloc(n), *dg = ctu_falloc(n), *du = ctu_falloc(n);
    float *dgu = ctu_falloc(span);
    tu_fill_normal_f(gu, span, 57, 3.0);
    tu_fill_normal_f(dh, n, 58, 1.0);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            g[r * cols + c] = gu[r * ld + c];
            u[r * cols + c] = gu[r * ld + cols + c];
        }
    cpu_swiglu_forward(h, g, u, 1, n, n);
    cpu_swiglu_backward(dg, du, dh, g, u, 1, n, n);
    cpu_swiglu_forward(hs, gu, gu + cols, rows, cols, ld);
    assert_true(ctu_same_bits(hs, h, n));
    for (size_t i = 0; i < span; i++) dgu[i] = gu[i];
    cpu_swiglu_backward(dgu, dgu + cols, dh, dgu, dgu + cols, rows, cols, ld);
    for (size_t r = 0; r < rows; r++) {
        assert_true(ctu_same_bits(dgu + r * ld, dg + r * cols, cols));
        assert_true(ctu_same_bits(dgu + r * ld + cols, du + r * cols, cols));
        assert_true(ctu_same_bits(dgu + r * ld + 2 * cols, gu + r * ld + 2 * cols, ld - 2 * cols));
    }
    free(gu), free(dh), free(g), free(u), free(h), free(hs), free(dg), free(du), free(dgu);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_swiglu_backward_in_place),
        cmocka_unit_test(test_swiglu_strided),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
