/* cpu_rope_forward / cpu_rope_backward: GPT-J interleaved pairs, positions from pos0 > 0,
 * checked against hand-computed rotations, a double reference, finite differences, the exact
 * inverse property and in-place operation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"

/* Tolerance: cos and sin are rounded to fp32 (error <= 6e-8) and each output takes two products
 * and a sum in fp32, so |error| <= ~4 * 6e-8 * max|x| with |x| <= ~4 here. 1e-6 absolute plus
 * 1e-6 relative covers that; pairing the wrong channels, a wrong frequency or a float angle
 * (at pos 1e5 an fp32 angle is off by up to 4e-3 rad) errs by far more. */
#define ROPE_ATOL 1e-6
#define ROPE_RTOL 1e-6

/* x (B, T, H*d) in double; angle = (pos0 + t) * theta^(-2i/d) for pair i; sign -1 rotates back */
static void ref_rope(double *out, const double *x, int B, int T, int H, int d, double theta,
                     int pos0, double sign) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < d / 2; i++) {
                    size_t k = ((size_t)(b * T + t) * H + h) * d + 2 * i;
                    double a = sign * (double)(pos0 + t) * pow(theta, -2.0 * i / d);
                    double c = cos(a), s = sin(a);
                    out[k] = x[k] * c - x[k + 1] * s;
                    out[k + 1] = x[k + 1] * c + x[k] * s;
                }
}

/* One head of width 4 at position 3, theta 10000: pair 0 turns by 3 rad, pair 1 by
 * 3 * 10000^(-1/2) = 0.03 rad. Constants are cos/sin to 16 digits (Python math module). */
static void test_rope_hand_computed(void **state) {
    (void)state;
    const double c3 = -0.9899924966004454, s3 = 0.1411200080598672;
    const double c03 = 0.9995500337489875, s03 = 0.02999550020249566;
    float x[8] = {1, 0, 0, 1, 0.5f, -2, 3, 0.25f}, out[8];
    /* B = 2 sequences of T = 1 token, both at position pos0 = 3 */
    cpu_rope_forward(out, x, 2, 1, 1, 4, 10000.0f, 3);
    double ref[8] = {c3, s3, -s03, c03,
                     0.5 * c3 + 2 * s3, -2 * c3 + 0.5 * s3, 3 * c03 - 0.25 * s03, 0.25 * c03 + 3 * s03};
    /* inputs up to 3: fp32 cos/sin (6e-8 each) and two products give < 3e-7 */
    assert_close_f(out, ref, 8, 1e-7, 2e-7, "rope hand-computed");
}

static void check_rope(int B, int T, int H, int d, float theta, int pos0) {
    size_t n = (size_t)B * T * H * d;
    float *x = ctu_falloc(n), *out = ctu_falloc(n), *back = ctu_falloc(n), *inpl = ctu_falloc(n);
    float *R = ctu_falloc(n), *dx = ctu_falloc(n);
    double *x_d = ctu_dalloc(n), *ref = ctu_dalloc(n), *R_d = ctu_dalloc(n), *g = ctu_dalloc(n);
    tu_fill_normal_f(x, n, 41, 1.0);
    tu_fill_normal_f(R, n, 42, 1.0);
    ctu_to_double(x_d, x, n);
    ctu_to_double(R_d, R, n);

    ref_rope(ref, x_d, B, T, H, d, theta, pos0, 1.0);
    cpu_rope_forward(out, x, B, T, H, d, theta, pos0);
    assert_close_f(out, ref, n, ROPE_ATOL, ROPE_RTOL, "rope forward");

    /* in place gives bit-identical results */
    memcpy(inpl, x, n * sizeof(float));
    cpu_rope_forward(inpl, inpl, B, T, H, d, theta, pos0);
    assert_true(ctu_same_bits(inpl, out, n));

    /* the backward is the inverse rotation: back(forward(x)) == x up to fp32 rounding */
    cpu_rope_backward(back, out, B, T, H, d, theta, pos0);
    assert_close_f(back, x_d, n, ROPE_ATOL, ROPE_RTOL, "rope backward(forward(x))");
    cpu_rope_backward(inpl, inpl, B, T, H, d, theta, pos0); /* in place as well */
    assert_true(ctu_same_bits(inpl, back, n));

    /* gradient of L = sum(rope(x) * R): the map is linear, so the gradient is exactly the
     * transpose applied to R; check it against finite differences of the double reference */
    cpu_rope_backward(dx, R, B, T, H, d, theta, pos0);
    for (size_t i = 0; i < n; i++) {
        double x0 = x_d[i], h = 1e-3, lp = 0, lm = 0;
        /* only the pair containing i changes; evaluate L on the whole tensor for simplicity */
        x_d[i] = x0 + h;
        ref_rope(ref, x_d, B, T, H, d, theta, pos0, 1.0);
        for (size_t k = 0; k < n; k++) lp += ref[k] * R_d[k];
        x_d[i] = x0 - h;
        ref_rope(ref, x_d, B, T, H, d, theta, pos0, 1.0);
        for (size_t k = 0; k < n; k++) lm += ref[k] * R_d[k];
        x_d[i] = x0;
        g[i] = (lp - lm) / (2 * h);
    }
    assert_close_f(dx, g, n, ROPE_ATOL, ROPE_RTOL, "rope dinp");

    free(x), free(out), free(back), free(inpl), free(R), free(dx), free(x_d), free(ref);
    free(R_d), free(g);
}

static void test_rope_small(void **state) {
    (void)state;
    check_rope(2, 5, 3, 8, 10000.0f, 7);
}

static void test_rope_large_positions(void **state) {
    (void)state;
    /* 64K-context settings (theta 640000) at positions around 1e5: float angles would fail */
    check_rope(1, 3, 2, 16, 640000.0f, 100000);
    check_rope(1, 2, 1, 64, 10000.0f, 65533);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_hand_computed),
        cmocka_unit_test(test_rope_small),
        cmocka_unit_test(test_rope_large_positions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
