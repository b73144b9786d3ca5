/* cpu_diffv2_combine_forward / _backward (DIFF V2, SPEC section 4) against a double reference and
 * central finite differences, and the whole V2 attention (cpu_attention_* over 2H q-heads, then
 * the combine) end to end against a naive double reference of SPEC section 4 written per DIFF
 * head: head h pairs q-heads 2h, 2h+1, both reading kv-head h / (H/Hkv). */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_test_util.h"
#include "model/cpu/cpu_ops.h"
#include "testutil.h"

/* Combine alone: out = a0 - sigmoid(l) a1 is a multiply-add of values up to ~5 in fp32, a few
 * roundings of 3e-7 at most (measured 2.9e-7); the gradients are as short (dl sums d products in
 * double, measured 2.5e-7). A wrong gate, sign or head errs by >= 1e-2. */
#define COMB_ATOL 2e-6
#define COMB_RTOL 1e-6
/* End to end (attention in fp32, then the combine): as test_cpu_attention (measured forward
 * 6e-7, backward 2e-6 there), a wrong pairing or gate errs by >= 1e-2. */
#define E2E_FWD_ATOL 1e-5
#define E2E_FWD_RTOL 1e-5
#define E2E_BWD_ATOL 2e-5
#define E2E_BWD_RTOL 1e-4
#define FD_STEP 1e-5

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* out (N, H*d) = attn_{2h} - sigmoid(l_h) attn_{2h+1} */
static void ref_combine(double *out, const double *attn, const double *l, int N, int H, int d) {
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int e = 0; e < d; e++)
                out[((size_t)n * H + h) * d + e] =
                    attn[((size_t)n * 2 * H + 2 * h) * d + e] -
                    sigmoid(l[(size_t)n * H + h]) * attn[((size_t)n * 2 * H + 2 * h + 1) * d + e];
}

/* The whole V2 attention output (B, T, H*d): for DIFF head h and branch c, q-head 2h + c with
 * kv-head g = h / (H/Hkv) (width d), causal softmax with scale 1/sqrt(d), then the gate. */
static void ref_diffv2(double *out, const double *q, const double *k, const double *v,
                       const double *l, int B, int T, int H, int Hkv, int d) {
    const int n_rep = H / Hkv;
    const double s = 1.0 / sqrt((double)d);
    double *sc = ctu_dalloc((size_t)T), br[2][64];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const int g = h / n_rep;
                for (int c = 0; c < 2; c++) {
                    const double *qi = q + (((size_t)b * T + i) * 2 * H + 2 * h + c) * d;
                    double mx = -INFINITY, sum = 0;
                    for (int j = 0; j <= i; j++) {
                        const double *kj = k + (((size_t)b * T + j) * Hkv + g) * d;
                        double dot = 0;
                        for (int e = 0; e < d; e++) dot += qi[e] * kj[e];
                        sc[j] = s * dot;
                        mx = sc[j] > mx ? sc[j] : mx;
                    }
                    for (int j = 0; j <= i; j++) sum += (sc[j] = exp(sc[j] - mx));
                    for (int e = 0; e < d; e++) {
                        double acc = 0;
                        for (int j = 0; j <= i; j++)
                            acc += sc[j] / sum * v[(((size_t)b * T + j) * Hkv + g) * d + e];
                        br[c][e] = acc;
                    }
                }
                const double lam = sigmoid(l[((size_t)b * T + i) * H + h]);
                for (int e = 0; e < d; e++)
                    out[(((size_t)b * T + i) * H + h) * d + e] = br[0][e] - lam * br[1][e];
            }
    free(sc);
}

/* ---- combine alone ---- */

typedef struct comb_ctx {
    double *attn, *l, *R, *out;
    int N, H, d;
} comb_ctx;

static double comb_loss(void *p) {
    comb_ctx *c = p;
    ref_combine(c->out, c->attn, c->l, c->N, c->H, c->d);
    double L = 0;
    for (size_t i = 0; i < (size_t)c->N * c->H * c->d; i++) L += c->out[i] * c->R[i];
    return L;
}

static void test_combine_forward_backward(void **state) {
    (void)state;
    const int shapes[][3] = {{1, 1, 4}, {74, 3, 8}, {5, 2, 1}}; /* N, H, d */
    for (size_t si = 0; si < 3; si++) {
        const int N = shapes[si][0], H = shapes[si][1], d = shapes[si][2];
        const size_t na = (size_t)N * 2 * H * d, nl = (size_t)N * H, no = (size_t)N * H * d;
        float *attn = ctu_falloc(na), *l = ctu_falloc(nl), *out = ctu_falloc(no);
        float *dout = ctu_falloc(no), *dattn = ctu_falloc(na), *dl = ctu_falloc(nl);
        double *attnd = ctu_dalloc(na), *ld = ctu_dalloc(nl), *Rd = ctu_dalloc(no);
        double *outd = ctu_dalloc(no), *ga = ctu_dalloc(na), *gl = ctu_dalloc(nl);
        tu_fill_normal_f(attn, na, 10 + si, 1.0);
        tu_fill_normal_f(l, nl, 20 + si, 3.0);
        tu_fill_normal_f(dout, no, 30 + si, 1.0);
        if (nl > 2) l[0] = 40.0f, l[1] = -40.0f; /* saturated gates stay finite and exact */
        ctu_to_double(attnd, attn, na);
        ctu_to_double(ld, l, nl);
        ctu_to_double(Rd, dout, no);
        for (size_t i = 0; i < na; i++) dattn[i] = NAN; /* overwritten */
        for (size_t i = 0; i < nl; i++) dl[i] = NAN;
        cpu_diffv2_combine_forward(out, attn, l, N, H, d);
        cpu_diffv2_combine_backward(dattn, dl, dout, attn, l, N, H, d);
        ref_combine(outd, attnd, ld, N, H, d);
        assert_close_f(out, outd, no, COMB_ATOL, COMB_RTOL, "combine out");
        comb_ctx c = {attnd, ld, Rd, outd, N, H, d};
        ctu_fd_grad(ga, attnd, na, FD_STEP, NULL, comb_loss, &c);
        ctu_fd_grad(gl, ld, nl, FD_STEP, NULL, comb_loss, &c);
        assert_close_f(dattn, ga, na, COMB_ATOL, COMB_RTOL, "combine dattn vs fd");
        assert_close_f(dl, gl, nl, COMB_ATOL, COMB_RTOL, "combine dlam_logit vs fd");
        free(attn), free(l), free(out), free(dout), free(dattn), free(dl);
        free(attnd), free(ld), free(Rd), free(outd), free(ga), free(gl);
    }
}

/* ---- end to end: attention over 2H q-heads, then the combine ---- */

typedef struct v2_case {
    int B, T, H, Hkv, d;
    size_t nq, nk, na, nl, no, nlse;
    float *q, *k, *v, *l, *attn, *lse, *out, *dout, *dattn, *dl, *dq, *dk, *dv;
    double *qd, *kd, *vd, *ld, *Rd, *outd;
} v2_case;

static v2_case *v2_new(int B, int T, int H, int Hkv, int d, uint64_t seed) {
    v2_case *c = calloc(1, sizeof *c);
    assert_non_null(c);
    *c = (v2_case){.B = B, .T = T, .H = H, .Hkv = Hkv, .d = d};
    c->nq = (size_t)B * T * 2 * H * d;
    c->nk = (size_t)B * T * Hkv * d;
    c->na = c->nq;
    c->nl = (size_t)B * T * H;
    c->no = (size_t)B * T * H * d;
    c->nlse = (size_t)B * 2 * H * T;
    c->q = ctu_falloc(c->nq), c->k = ctu_falloc(c->nk), c->v = ctu_falloc(c->nk);
    c->l = ctu_falloc(c->nl), c->attn = ctu_falloc(c->na), c->lse = ctu_falloc(c->nlse);
    c->out = ctu_falloc(c->no), c->dout = ctu_falloc(c->no), c->dattn = ctu_falloc(c->na);
    c->dl = ctu_falloc(c->nl), c->dq = ctu_falloc(c->nq), c->dk = ctu_falloc(c->nk);
    c->dv = ctu_falloc(c->nk);
    c->qd = ctu_dalloc(c->nq), c->kd = ctu_dalloc(c->nk), c->vd = ctu_dalloc(c->nk);
    c->ld = ctu_dalloc(c->nl), c->Rd = ctu_dalloc(c->no), c->outd = ctu_dalloc(c->no);
    tu_fill_normal_f(c->q, c->nq, seed, 1.0);
    tu_fill_normal_f(c->k, c->nk, seed + 1, 1.0);
    tu_fill_normal_f(c->v, c->nk, seed + 2, 1.0);
    tu_fill_normal_f(c->l, c->nl, seed + 3, 1.5);
    tu_fill_normal_f(c->dout, c->no, seed + 4, 1.0);
    ctu_to_double(c->qd, c->q, c->nq);
    ctu_to_double(c->kd, c->k, c->nk);
    ctu_to_double(c->vd, c->v, c->nk);
    ctu_to_double(c->ld, c->l, c->nl);
    ctu_to_double(c->Rd, c->dout, c->no);
    return c;
}

static void v2_free(v2_case *c) {
    float *f[] = {c->q,    c->k,    c->v,  c->l,  c->attn, c->lse, c->out,
                  c->dout, c->dattn, c->dl, c->dq, c->dk,   c->dv};
    double *g[] = {c->qd, c->kd, c->vd, c->ld, c->Rd, c->outd};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) free(f[i]);
    for (size_t i = 0; i < sizeof g / sizeof *g; i++) free(g[i]);
    free(c);
}

/* What the model does for one V2 layer between the projections. */
static void v2_forward(v2_case *c) {
    cpu_attention_forward(c->attn, c->lse, c->q, c->k, c->v, c->B, c->T, 2 * c->H, c->Hkv, c->d,
                          c->d);
    cpu_diffv2_combine_forward(c->out, c->attn, c->l, c->B * c->T, c->H, c->d);
}

static void v2_backward(v2_case *c) {
    cpu_diffv2_combine_backward(c->dattn, c->dl, c->dout, c->attn, c->l, c->B * c->T, c->H, c->d);
    cpu_attention_backward(c->dq, c->dk, c->dv, c->dattn, c->q, c->k, c->v, c->attn, c->lse, c->B,
                           c->T, 2 * c->H, c->Hkv, c->d, c->d);
}

static double v2_loss(void *p) {
    v2_case *c = p;
    ref_diffv2(c->outd, c->qd, c->kd, c->vd, c->ld, c->B, c->T, c->H, c->Hkv, c->d);
    double L = 0;
    for (size_t i = 0; i < c->no; i++) L += c->outd[i] * c->Rd[i];
    return L;
}

static const int HEADS[][2] = {{2, 2}, {2, 1}}; /* (H, Hkv): n_rep 1 and 2 */

static void test_end_to_end_forward(void **state) {
    (void)state;
    const int TS[] = {1, 5, 33, 70}, DS[] = {4, 8};
    for (size_t ti = 0; ti < 4; ti++)
        for (size_t di = 0; di < 2; di++)
            for (size_t hi = 0; hi < 2; hi++) {
                v2_case *c = v2_new(2, TS[ti], HEADS[hi][0], HEADS[hi][1], DS[di],
                                    100 + 10 * ti + 2 * di + hi);
                v2_forward(c);
                ref_diffv2(c->outd, c->qd, c->kd, c->vd, c->ld, c->B, c->T, c->H, c->Hkv, c->d);
                assert_close_f(c->out, c->outd, c->no, E2E_FWD_ATOL, E2E_FWD_RTOL, "v2 out");
                v2_free(c);
            }
}

/* Gradients of q, k, v and lam_logit through attention and combine, against central differences
 * of the reference, for every input element; n_rep 1 and 2. */
static void test_end_to_end_backward_vs_fd(void **state) {
    (void)state;
    for (size_t hi = 0; hi < 2; hi++) {
        v2_case *c = v2_new(2, 37, HEADS[hi][0], HEADS[hi][1], 4, 300 + hi);
        double *gq = ctu_dalloc(c->nq), *gk = ctu_dalloc(c->nk), *gv = ctu_dalloc(c->nk);
        double *gl = ctu_dalloc(c->nl);
        v2_forward(c);
        v2_backward(c);
        ctu_fd_grad(gq, c->qd, c->nq, FD_STEP, NULL, v2_loss, c);
        ctu_fd_grad(gk, c->kd, c->nk, FD_STEP, NULL, v2_loss, c);
        ctu_fd_grad(gv, c->vd, c->nk, FD_STEP, NULL, v2_loss, c);
        ctu_fd_grad(gl, c->ld, c->nl, FD_STEP, NULL, v2_loss, c);
        assert_close_f(c->dq, gq, c->nq, E2E_BWD_ATOL, E2E_BWD_RTOL, "v2 dq vs fd");
        assert_close_f(c->dk, gk, c->nk, E2E_BWD_ATOL, E2E_BWD_RTOL, "v2 dk vs fd");
        assert_close_f(c->dv, gv, c->nk, E2E_BWD_ATOL, E2E_BWD_RTOL, "v2 dv vs fd");
        assert_close_f(c->dl, gl, c->nl, E2E_BWD_ATOL, E2E_BWD_RTOL, "v2 dlam_logit vs fd");
        free(gq), free(gk), free(gv), free(gl);
        v2_free(c);
    }
}

/* The combine is row-parallel: bit-identical results with 1, 2 and 3 threads. */
static void test_deterministic_across_threads(void **state) {
    (void)state;
    v2_case *c = v2_new(2, 70, 2, 1, 8, 500);
    const int saved = omp_get_max_threads();
    float *ref[5] = {0};
    size_t n[5] = {c->no, c->nq, c->nk, c->nk, c->nl};
    for (int nt = 1; nt <= 3; nt++) {
        omp_set_num_threads(nt);
        v2_forward(c);
        v2_backward(c);
        float *got[5] = {c->out, c->dq, c->dk, c->dv, c->dl};
        for (int i = 0; i < 5; i++) {
            if (nt == 1) {
                ref[i] = ctu_falloc(n[i]);
                memcpy(ref[i], got[i], n[i] * sizeof(float));
            } else if (!ctu_same_bits(ref[i], got[i], n[i])) {
                fail_msg("output %d differs between 1 and %d threads", i, nt);
            }
        }
    }
    omp_set_num_threads(saved);
    for (int i = 0; i < 5; i++) free(ref[i]);
    v2_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_combine_forward_backward),
        cmocka_unit_test(test_end_to_end_forward),
        cmocka_unit_test(test_end_to_end_backward_vs_fd),
        cmocka_unit_test(test_deterministic_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
