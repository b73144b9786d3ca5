/* cpu_xent_forward / cpu_xent_backward: losses and lse against a double reference, the gradient
 * of the mean loss against central finite differences, ignored targets, huge logits, and the
 * in-place (dlogits == logits) backward. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"

static const int32_t ONE = 1; /* a target count: dloss is the scale itself */

/* Tolerances for logits of size O(1..10): the op sums exp in double and rounds lse and the loss
 * to fp32 once, so the loss errs by ~1 ulp (6e-8 relative, < 1e-6 for lse < 16); expf and the
 * fp32 lse add 1-2 ulp to each probability. 1e-6 absolute + 2e-6 relative is a >5x margin; a
 * missing max shift or a wrong target column errs by O(0.1). The finite differences (step 1e-5)
 * err by ~1e-10. */
#define XE_ATOL 1e-6
#define XE_RTOL 2e-6

static double ref_lse(const double *x, int V) {
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < V; i++) s += exp(x[i] - mx);
    return mx + log(s);
}

typedef struct xe_ctx {
    double *logits; /* (N, V) */
    const int32_t *targets;
    int N, V, n_valid;
} xe_ctx;

/* mean over non-ignored rows of lse - logit[target] */
static double xe_mean_loss(void *p) {
    xe_ctx *c = p;
    double L = 0;
    for (int n = 0; n < c->N; n++) {
        if (c->targets[n] < 0) continue;
        L += ref_lse(c->logits + (size_t)n * c->V, c->V) - c->logits[(size_t)n * c->V + c->targets[n]];
    }
    return L / c->n_valid;
}

static void test_xent_forward_backward(void **state) {
    (void)state;
    enum { N = 7, V = 11 };
    const int32_t targets[N] = {3, -1, 0, 10, 5, -1, 7};
    const int32_t n_valid = 5;
    float logits[N * V], losses[N], lse[N], dl[N * V], inpl[N * V];
    double logits_d[N * V], ref_loss[N], ref_l[N], g[N * V];
    tu_fill_normal_f(logits, N * V, 61, 2.0);
    ctu_to_double(logits_d, logits, N * V);

    for (int n = 0; n < N; n++) losses[n] = NAN;
    cpu_xent_forward(losses, lse, logits, targets, N, V);
    for (int n = 0; n < N; n++) {
        ref_l[n] = ref_lse(logits_d + n * V, V);
        ref_loss[n] = targets[n] < 0 ? 0.0 : ref_l[n] - logits_d[n * V + targets[n]];
    }
    assert_close_f(losses, ref_loss, N, XE_ATOL, XE_RTOL, "xent losses");
    assert_close_f(lse, ref_l, N, XE_ATOL, XE_RTOL, "xent lse");
    assert_true(losses[1] == 0.0f && losses[5] == 0.0f); /* ignored rows: exactly 0 */

    /* gradient of the mean loss: dloss = 1 / n_valid */
    xe_ctx ctx = {logits_d, targets, N, V, n_valid};
    ctu_fd_grad(g, logits_d, N * V, 1e-5, NULL, xe_mean_loss, &ctx);
    for (int k = 0; k < N * V; k++) dl[k] = NAN; /* overwritten, ignored rows included */
    cpu_xent_backward(dl, V, logits, lse, targets, 1.0f, &n_valid, N, V);
    assert_close_f(dl, g, N * V, XE_ATOL, XE_RTOL, "xent dlogits");
    for (int v = 0; v < V; v++) assert_true(dl[1 * V + v] == 0.0f && dl[5 * V + v] == 0.0f);

    /* the scale over the count is the host's float division: a scale of 3 over 5 targets gives
     * the bits of dloss = 3.0f / 5 (not 3 x (1.0f / 5)), and no targets give zeros */
    float scaled[N * V], by_host[N * V];
    cpu_xent_backward(scaled, V, logits, lse, targets, 3.0f, &n_valid, N, V);
    cpu_xent_backward(by_host, V, logits, lse, targets, 3.0f / 5, &ONE, N, V);
    assert_true(ctu_same_bits(scaled, by_host, N * V));
    const int32_t none = 0;
    cpu_xent_backward(scaled, V, logits, lse, targets, 3.0f, &none, N, V);
    for (int k = 0; k < N * V; k++) assert_true(scaled[k] == 0.0f);

    /* in place: dlogits aliases logits, same bits as out of place */
    memcpy(inpl, logits, sizeof logits);
    cpu_xent_backward(inpl, V, inpl, lse, targets, 1.0f, &n_valid, N, V);
    assert_true(ctu_same_bits(inpl, dl, N * V));

    /* rows ldd = V + 3 apart: the same rows, and the 3 floats between them untouched */
    enum { LDD = V + 3 };
    float wide[N * LDD];
    for (int k = 0; k < N * LDD; k++) wide[k] = -7.0f;
    cpu_xent_backward(wide, LDD, logits, lse, targets, 1.0f, &n_valid, N, V);
    for (int n = 0; n < N; n++) {
        assert_true(ctu_same_bits(wide + n * LDD, dl + n * V, V));
        for (int k = V; k < LDD; k++) assert_true(wide[n * LDD + k] == -7.0f);
    }
}

/* Logits of +-1e4 must not overflow: every exponent is shifted by the row maximum. */
static void test_xent_huge_logits(void **state) {
    (void)state;
    enum { N = 3, V = 9 };
    const int32_t targets[N] = {2, 4, 0};
    float logits[N * V], losses[N], lse[N], dl[N * V];
    double logits_d[N * V], ref_loss[N], ref_l[N], g[N * V];
    tu_fill_normal_f(logits, N * V, 62, 1.0);
    for (int v = 0; v < V; v++) {
        logits[0 * V + v] += 1e4f;                 /* all huge */
        logits[1 * V + v] -= 1e4f;                 /* all hugely negative */
        if (v % 2) logits[2 * V + v] += 1e4f;      /* mixed: target 0 has p ~ exp(-1e4) */
    }
    ctu_to_double(logits_d, logits, N * V);
    cpu_xent_forward(losses, lse, logits, targets, N, V);
    for (int n = 0; n < N; n++) {
        ref_l[n] = ref_lse(logits_d + n * V, V);
        ref_loss[n] = ref_l[n] - logits_d[n * V + targets[n]];
        assert_true(isfinite(losses[n]) && isfinite(lse[n]));
    }
    /* lse ~ 1e4 is stored in fp32, whose spacing there is 9.8e-4: absolute 1e-3 for lse;
     * the loss is formed in double before rounding, so it keeps 1e-5 relative accuracy */
    assert_close_f(lse, ref_l, N, 1e-3, 1e-6, "xent lse (huge)");
    assert_close_f(losses, ref_loss, N, XE_ATOL, XE_RTOL, "xent losses (huge)");

    cpu_xent_backward(dl, V, logits, lse, targets, 1.0f, &ONE, N, V);
    for (int k = 0; k < N * V; k++) assert_true(isfinite(dl[k]));
    /* reference gradient softmax - onehot in double; the backward sees the fp32 lse (error up
     * to 4.9e-4 at 1e4), which scales each probability by up to exp(4.9e-4) - 1 = 4.9e-4:
     * 1e-3 relative, 1e-6 absolute */
    for (int n = 0; n < N; n++)
        for (int v = 0; v < V; v++)
            g[n * V + v] = exp(logits_d[n * V + v] - ref_l[n]) - (v == targets[n]);
    assert_close_f(dl, g, N * V, 1e-6, 1e-3, "xent dlogits (huge)");
}

/* Targets >= V (outside this vocabulary slice) contribute no target term: loss = lse and the
 * gradient is dloss * softmax (cpu/xent.c). */
static void test_xent_target_outside_slice(void **state) {
    (void)state;
    enum { V = 6 };
    const int32_t targets[1] = {V + 3};
    float logits[V], losses[1], lse[1], dl[V];
    double logits_d[V], ref[V];
    tu_fill_normal_f(logits, V, 63, 1.0);
    ctu_to_double(logits_d, logits, V);
    cpu_xent_forward(losses, lse, logits, targets, 1, V);
    double l = ref_lse(logits_d, V);
    assert_close_f(losses, &l, 1, XE_ATOL, XE_RTOL, "xent loss (target outside)");
    cpu_xent_backward(dl, V, logits, lse, targets, 0.5f, &ONE, 1, V);
    for (int v = 0; v < V; v++) ref[v] = 0.5 * exp(logits_d[v] - l);
    assert_close_f(dl, ref, V, XE_ATOL, XE_RTOL, "xent dlogits (target outside)");
}

/* The vocab-parallel ops over 3 uneven slices, combined as the model does (MAX of the slices'
 * rowmax, each slice's sums rescaled to it, SUM of sums), give the loss and lse of the whole
 * row; the backward of each slice with the combined lse gives that slice of the whole row's
 * gradient. Each slice's stats are its own exact maximum and its sum relative to it. */
static void test_xent_vocab_parallel(void **state) {
    (void)state;
    enum { N = 5, V = 23, P = 3 };
    const int start[P + 1] = {0, 8, 16, V}; /* 8, 8, 7 rows */
    int32_t targets[N] = {0, 7, 8, 22, -1};
    float logits[N * V];
    double logits_d[N * V];
    tu_fill_normal_f(logits, N * V, 64, 3.0);
    ctu_to_double(logits_d, logits, N * V);
    float rowmax[N], sums[2 * N] = {0}, losses[N], lse[N];
    for (int n = 0; n < N; n++) rowmax[n] = -INFINITY;
    float slice[N * V], local_max[P][N], part[P][2 * N];
    int32_t local_t[P][N];
    for (int p = 0; p < P; p++) {
        int nv = start[p + 1] - start[p];
        for (int n = 0; n < N; n++) {
            memcpy(slice + (size_t)n * nv, logits + (size_t)n * V + start[p], nv * sizeof(float));
            int32_t t = targets[n];
            local_t[p][n] = t < 0 ? -1 : (t >= start[p] && t < start[p + 1] ? t - start[p] : nv);
        }
        cpu_xent_vp_stats(local_max[p], part[p], slice, local_t[p], N, nv);
        for (int n = 0; n < N; n++) {
            double mx = -INFINITY, s = 0;
            for (int i = 0; i < nv; i++) mx = fmax(mx, logits_d[(size_t)n * V + start[p] + i]);
            for (int i = 0; i < nv; i++) s += exp(logits_d[(size_t)n * V + start[p] + i] - mx);
            assert_true(local_max[p][n] == (float)mx); /* a maximum is exact */
            assert_close_f(&part[p][2 * n], &s, 1, XE_ATOL, XE_RTOL, "slice sum");
            int32_t t = local_t[p][n];
            assert_true(part[p][2 * n + 1] == (t >= 0 && t < nv ? slice[(size_t)n * nv + t] : 0));
            rowmax[n] = fmaxf(rowmax[n], local_max[p][n]);
        }
    }
    for (int p = 0; p < P; p++) {
        cpu_xent_vp_rescale(part[p], local_max[p], rowmax, N);
        for (int i = 0; i < 2 * N; i++) sums[i] += part[p][i];
    }
    cpu_xent_vp_finish(losses, lse, rowmax, sums, targets, N);
    double ref_l[N], ref_loss[N];
    for (int n = 0; n < N; n++) {
        ref_l[n] = ref_lse(logits_d + (size_t)n * V, V);
        ref_loss[n] = targets[n] < 0 ? 0 : ref_l[n] - logits_d[(size_t)n * V + targets[n]];
    }
    /* the cross-slice sum of exp is fp32 (one rounding per slice): a few ulps of lse */
    assert_close_f(lse, ref_l, N, XE_ATOL, 4 * XE_RTOL, "vocab-parallel lse");
    assert_close_f(losses, ref_loss, N, 2 * XE_ATOL, 4 * XE_RTOL, "vocab-parallel loss");
    for (int p = 0; p < P; p++) {
        int nv = start[p + 1] - start[p];
        float dl[N * V];
        double ref[N * V];
        for (int n = 0; n < N; n++) {
            memcpy(slice + (size_t)n * nv, logits + (size_t)n * V + start[p], nv * sizeof(float));
            for (int i = 0; i < nv; i++) {
                int v = start[p] + i;
                double g = targets[n] < 0 ? 0 : 0.5 * exp(logits_d[(size_t)n * V + v] - ref_l[n]);
                if (targets[n] == v) g -= 0.5;
                ref[(size_t)n * nv + i] = g;
            }
        }
        cpu_xent_backward(dl, nv, slice, lse, local_t[p], 0.5f, &ONE, N, nv);
        assert_close_f(dl, ref, (size_t)N * nv, XE_ATOL, 4 * XE_RTOL, "vocab-parallel dlogits");
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xent_vocab_parallel),
        cmocka_unit_test(test_xent_forward_backward),
        cmocka_unit_test(test_xent_huge_logits),
        cmocka_unit_test(test_xent_target_outside_slice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
