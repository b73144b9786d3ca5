/* model/attn_stats: each statistic of `difftrain analyze` on small hand-built attention maps
 * whose values are worked out by hand in the comments (uniform and one-hot maps, identical and
 * orthogonal vectors, a known KL pair, a signed differential map, a known list of magnitudes). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "model/attn_stats.h"

/* Tolerance: every reference is a closed form evaluated in double and the statistics are a few
 * dozen double operations on O(1) values, so rounding is ~1e-15; 1e-12 absolute leaves room and
 * is still 10 orders of magnitude below any wrong formula (a log base, a missing 1/2 in the Gini
 * weight, a missing renormalisation) which errs by >= 1e-2 on these inputs. */
#define TOL 1e-12

/* |got - want| <= tol, printing both on failure (this cmocka has no assert_double_equal) */
#define assert_double_equal(got, want, tol)                                                       \
    do {                                                                                           \
        double g_ = (got), w_ = (want);                                                            \
        if (!(fabs(g_ - w_) <= (tol))) fail_msg("%s = %.17g, expected %.17g", #got, g_, w_);      \
    } while (0)

static void test_softmax(void **state) {
    (void)state;
    /* scores (0, log 2, log 5) -> (1, 2, 5) / 8; shifting all scores changes nothing */
    double s[3] = {0, log(2.0), log(5.0)}, p[3];
    attn_softmax(p, s, 3);
    assert_double_equal(p[0], 1.0 / 8, TOL);
    assert_double_equal(p[1], 2.0 / 8, TOL);
    assert_double_equal(p[2], 5.0 / 8, TOL);
    double t[3] = {1000, 1000 + log(2.0), 1000 + log(5.0)};
    attn_softmax(p, t, 3);
    assert_double_equal(p[2], 5.0 / 8, 1e-10); /* 1000 + log 5 carries ~1e-13 rounding */
}

static void test_entropy(void **state) {
    (void)state;
    double u[5] = {0.2, 0.2, 0.2, 0.2, 0.2}, one[5] = {0, 0, 1, 0, 0};
    assert_double_equal(attn_entropy(u, 5), log(5.0), TOL);
    assert_double_equal(attn_entropy(one, 5), 0, TOL);
    /* (1/2, 1/4, 1/4): H = 1/2 log 2 + 2 * 1/4 log 4 = 1.5 log 2 */
    double h[3] = {0.5, 0.25, 0.25};
    assert_double_equal(attn_entropy(h, 3), 1.5 * log(2.0), TOL);
    /* signed map (0.6, -0.2, 0.2): |a| / 1.0 = (0.6, 0.2, 0.2) */
    double sg[3] = {0.6, -0.2, 0.2};
    assert_double_equal(attn_entropy(sg, 3), -0.6 * log(0.6) - 0.4 * log(0.2), TOL);
    /* unnormalised input is normalised: 2u has the entropy of u */
    double u2[4] = {2, 2, 2, 2};
    assert_double_equal(attn_entropy(u2, 4), log(4.0), TOL);
}

static void test_gini(void **state) {
    (void)state;
    double scratch[8];
    double u[4] = {0.25, 0.25, 0.25, 0.25}, one[4] = {0, 0, 0, 1}, one0[4] = {1, 0, 0, 0};
    assert_double_equal(attn_gini(u, 4, scratch), 0, TOL);
    assert_double_equal(attn_gini(one, 4, scratch), 3.0 / 4, TOL);
    assert_double_equal(attn_gini(one0, 4, scratch), 3.0 / 4, TOL); /* order does not matter */
    /* (0.1, 0.2, 0.3, 0.4), n = 4, weights (n - k + 1/2)/n = 3.5/4, 2.5/4, 1.5/4, 0.5/4:
     * sum = (0.35 + 0.5 + 0.45 + 0.2) / 4 = 1.5 / 4 = 0.375 -> G = 1 - 0.75 = 0.25 */
    double r[4] = {0.4, 0.1, 0.3, 0.2};
    assert_double_equal(attn_gini(r, 4, scratch), 0.25, TOL);
    /* signed: |(-0.4, 0.1, 0.3, -0.2)| is the same list */
    double sg[4] = {-0.4, 0.1, 0.3, -0.2};
    assert_double_equal(attn_gini(sg, 4, scratch), 0.25, TOL);
    assert_double_equal(r[0], 0.4, 0); /* the input is not reordered */
}

static void test_cosine(void **state) {
    (void)state;
    double x[5] = {9, 1, 2, 3, 9}, y[5] = {-7, 1, 2, 3, 5}, o[5] = {0, 2, -1, 0, 0};
    int idx[3] = {1, 2, 3};
    assert_double_equal(attn_cosine_subset(x, y, idx, 3), 1, TOL);  /* identical on idx */
    assert_double_equal(attn_cosine_subset(x, o, idx, 3), 0, TOL);  /* (1,2,3).(2,-1,0) = 0 */
    /* (1,0) vs (1,1) on positions {0, 1}: 1 / sqrt 2 */
    double a[2] = {1, 0}, b[2] = {1, 1};
    int all[2] = {0, 1};
    assert_double_equal(attn_cosine_subset(a, b, all, 2), 1 / sqrt(2.0), TOL);
    double z[5] = {0};
    assert_double_equal(attn_cosine_subset(x, z, idx, 3), 0, 0);
}

static void test_kl(void **state) {
    (void)state;
    /* identical after renormalisation on idx {0, 2}: (0.1, 0.3) and (0.2, 0.6) both -> (1/4, 3/4) */
    double p[4] = {0.1, 0.5, 0.3, 0.1}, q[4] = {0.2, 0.1, 0.6, 0.1};
    int idx[2] = {0, 2};
    assert_double_equal(attn_kl_subset(p, q, idx, 2), 0, TOL);
    /* (1/2, 1/2) || (1/4, 3/4): 1/2 log 2 + 1/2 log(2/3) */
    double a[2] = {0.5, 0.5}, b[2] = {0.25, 0.75};
    int all[2] = {0, 1};
    assert_double_equal(attn_kl_subset(a, b, all, 2), 0.5 * log(2.0) + 0.5 * log(2.0 / 3), TOL);
    /* the other direction differs: 1/4 log(1/2) + 3/4 log(3/2) */
    assert_double_equal(attn_kl_subset(b, a, all, 2), 0.25 * log(0.5) + 0.75 * log(1.5), TOL);
    /* restricted to {1, 3}: p -> (5/6, 1/6), q -> (1/2, 1/2) */
    int odd[2] = {1, 3};
    assert_double_equal(attn_kl_subset(p, q, odd, 2),
                        5.0 / 6 * log(5.0 / 3) + 1.0 / 6 * log(1.0 / 3), TOL);
    /* support mismatch */
    double c[2] = {1, 0};
    assert_true(isinf(attn_kl_subset(a, c, all, 2)));
    assert_double_equal(attn_kl_subset(c, a, all, 2), log(2.0), TOL);
}

static void test_masses(void **state) {
    (void)state;
    /* a differential map P1 - lambda P2, lambda = 0.5, P1 = (0.1, 0.2, 0.6, 0.1),
     * P2 = (0.4, 0.2, 0.2, 0.2): A = (-0.1, 0.1, 0.5, 0), sum = 1 - lambda = 0.5 */
    double p1[4] = {0.1, 0.2, 0.6, 0.1}, p2[4] = {0.4, 0.2, 0.2, 0.2}, a[4], m[3];
    for (int i = 0; i < 4; i++) a[i] = p1[i] - 0.5 * p2[i];
    assert_double_equal(attn_sink_mass(a, 4), -0.1, TOL);
    attn_span_mass(m, a, 4, 1, 3); /* span {1, 2} */
    assert_double_equal(m[0], 0.6, TOL);
    assert_double_equal(m[1], 0.1, TOL); /* |-0.1| + |0| */
    assert_double_equal(m[2], -0.1, TOL);
    assert_double_equal(m[0] + m[2], 0.5, TOL);
    attn_span_mass(m, a, 4, 3, 10); /* clipped to {3} */
    assert_double_equal(m[0], 0, TOL);
    assert_double_equal(m[1], 0.7, TOL);
    assert_double_equal(m[2], 0.5, TOL);
}

static void test_magnitudes(void **state) {
    (void)state;
    /* |x| = 0..9 shuffled with signs: top-1 9, 3rd largest 7, median (4 + 5) / 2 */
    double x[10] = {3, -9, 0, 5, -1, 8, -7, 2, 6, -4}, out[3];
    attn_magnitudes(out, x, 10, 3);
    assert_double_equal(out[0], 9, 0);
    assert_double_equal(out[1], 7, 0);
    assert_double_equal(out[2], 4.5, 0);
    for (int i = 0; i < 10; i++) assert_double_equal(x[i], 9 - i, 0); /* sorted descending */
    /* odd n; k beyond n takes the smallest */
    double y[5] = {-2, 10, 1, -3, 0.5};
    attn_magnitudes(out, y, 5, 100);
    assert_double_equal(out[0], 10, 0);
    assert_double_equal(out[1], 0.5, 0);
    assert_double_equal(out[2], 2, 0);
    attn_magnitudes(out, y, 0, 100);
    assert_double_equal(out[0] + out[1] + out[2], 0, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax), cmocka_unit_test(test_entropy),
        cmocka_unit_test(test_gini),    cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_kl),      cmocka_unit_test(test_masses),
        cmocka_unit_test(test_magnitudes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
