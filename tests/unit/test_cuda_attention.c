/* cuda_attention_forward / _backward and cuda_diffattn_forward / _backward against the CPU
 * oracle (cpu_attention_*, cpu_diffattn_*, themselves checked against naive double references
 * and finite differences in test_cpu_attention.c and test_cpu_diffattn.c) on identical random
 * inputs: B = 2, T in {1, 17, 64, 100} (1 row, and lengths that are not multiples of the 32-row
 * tile), d in {16, 64, 128};
 *   standard: Hq = Hkv, GQA (Hq = 4, Hkv = 2 and Hq = 4, Hkv = 1), dv = d, 2d (diff V1's width)
 *             and d / 2;
 *   DIFF V1:  H = Hkv and H = 2 Hkv (GQA: the k-halves 2g, 2g+1 pairing), subln on and off,
 *             lambda positive and negative.
 * Checked: every forward output (out, lse; o1, o2, rstd), every gradient, the overwrite contract
 * (outputs start as NaN, so an element left unwritten fails), the accumulate contract of dgamma
 * and dlambda (they start nonzero on both sides), and bit-identical reruns. Exits 77 (skipped)
 * without a CUDA device. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cuda_ops_test_util.h"
#include "model/cpu/cpu_ops.h"

/* Tolerances: |gpu - cpu| <= max(afrac * max|cpu|, floor) + rtol * |cpu| per tensor. Both sides
 * are fp32 with the same formulas; they differ in summation order (the GPU sums keys in tiles of
 * 32 with its own online-softmax rescaling, dot products lane by lane) and in fused multiply-adds,
 * i.e. by a few roundings of the partial sums: ~1e-6 relative for sums of <= 256 products of
 * O(1) terms (the CPU oracle itself is within 1.2e-6 forward and 5e-6 backward of a double
 * reference). The absolute part scales with the tensor's largest element because an element near
 * zero carries the rounding error of its O(max) terms (with subln, dO = r (...) grows with
 * 1/rms(O), so the gradients' scale varies by 10x between cases). The floor covers tensors that
 * are zero up to rounding: at T = 1 the softmax is constant, dq = dk = 0 exactly, and both sides
 * hold the rounding noise of dP - delta (~1e-7 |dP|, and |dP| reaches ~100 with subln at
 * lambda = 0.8, where O = 0.2 v is small and 1/rms(O) large). Measured on a CPU emulation of the
 * kernels (per-thread, without fused multiply-adds) over this whole matrix: worst 0.04 of the
 * tolerance forward, 0.21 backward (that T = 1 noise: 4.5e-6 against the 1e-5 floor, before the
 * floor was raised to 5e-5), 0.06 for dlambda. Any indexing, pairing, mask, scale or delta error
 * is O(1) relative. */
#define FWD_RTOL 1e-4
#define FWD_AFRAC 1e-5
#define FWD_FLOOR 1e-6
/* Backward: dS = P (dP - delta) cancels (dP and delta are dots over up to 256 terms), and dk/dv
 * sum over up to 2 * n_rep * T = 400 rows. */
#define BWD_RTOL 1e-4
#define BWD_AFRAC 5e-5
#define BWD_FLOOR 5e-5
/* dgamma and dlambda: the same fp32 per-row expressions on both sides, summed in double, but over
 * each side's own forward outputs (o1, o2, rstd differ by ~1e-6 relative): sums of up to
 * 2e5 such products of random sign. */
#define RED_RTOL 1e-4
#define RED_AFRAC 1e-5
#define RED_FLOOR 1e-5

static const int g_T[] = {1, 17, 64, 100};
static const int g_d[] = {16, 64, 128};
#define N_T (int)(sizeof g_T / sizeof g_T[0])
#define N_D (int)(sizeof g_d / sizeof g_d[0])

static float *host_alloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}

/* Compares a device tensor with the CPU's; returns 1 when out of tolerance (0 otherwise). */
static int check(const char *what, const float *dev, const float *cpu, size_t n, double rtol,
                 double afrac, double floor_) {
    return cot_out_of_tol(what, dev, cpu, n, afrac, rtol, floor_);
}

/* Returns 1 unless two device tensors are bit-identical. */
static int same_bits(const char *what, const float *a, const float *b, size_t n) {
    return cot_bits_differ(what, "rerun", a, b, n);
}

/* ---- standard / GQA attention ---- */

typedef struct std_case {
    int Hq, Hkv, dv_num, dv_den; /* dv = d * dv_num / dv_den */
} std_case;

static int run_standard(int B, int T, int Hq, int Hkv, int d, int dv, unsigned seed) {
    const size_t nq = (size_t)B * T * Hq * d, nk = (size_t)B * T * Hkv * d;
    const size_t nv = (size_t)B * T * Hkv * dv, no = (size_t)B * T * Hq * dv;
    const size_t nl = (size_t)B * Hq * T;
    float *q = host_alloc(nq), *k = host_alloc(nk), *v = host_alloc(nv), *dout = host_alloc(no);
    cut_fill(q, nq, seed + 1, -2.0f, 2.0f); /* scores of std ~1.3: peaked, not flat */
    cut_fill(k, nk, seed + 2, -2.0f, 2.0f);
    cut_fill(v, nv, seed + 3, -1.0f, 1.0f);
    cut_fill(dout, no, seed + 4, -1.0f, 1.0f);

    float *out = host_alloc(no), *lse = host_alloc(nl);
    float *dq = host_alloc(nq), *dk = host_alloc(nk), *dv_ = host_alloc(nv);
    cpu_attention_forward(out, lse, q, k, v, B, T, Hq, Hkv, d, dv);
    cpu_attention_backward(dq, dk, dv_, dout, q, k, v, out, lse, B, T, Hq, Hkv, d, dv);

    /* fp32 mode: the operands q, k, v are fp32 (bf16: test_cuda_operand, test_cuda_flash) */
    dt_operand *q_d = cot_operand_dev(q, nq), *k_d = cot_operand_dev(k, nk);
    dt_operand *v_d = cot_operand_dev(v, nv);
    float *dout_d = cot_dev(dout, no);
    float *out_d[2], *lse_d[2], *dq_d[2], *dk_d[2], *dv_d[2];
    for (int run = 0; run < 2; run++) {
        out_d[run] = cot_dev_nan(no);
        lse_d[run] = cot_dev_nan(nl);
        dq_d[run] = cot_dev_nan(nq);
        dk_d[run] = cot_dev_nan(nk);
        dv_d[run] = cot_dev_nan(nv);
        /* fp32 mode: out, a dt_operand, is fp32 (bf16: test_cuda_operand) */
        cuda_attention_forward((dt_operand *)out_d[run], lse_d[run], q_d, k_d, v_d, B, T, Hq, Hkv,
                               d, dv);
        /* fp32 mode: dv, an operand, is fp32 too */
        cuda_attention_backward(dq_d[run], dk_d[run], (dt_operand *)dv_d[run], dout_d, q_d, k_d,
                                v_d, (const dt_operand *)out_d[run], lse_d[run], B, T, Hq, Hkv, d,
                                dv);
    }
    cuda_synchronize();

    printf("-- attention B=%d T=%d Hq=%d Hkv=%d d=%d dv=%d\n", B, T, Hq, Hkv, d, dv);
    int fails = 0;
    fails += check("out", out_d[0], out, no, FWD_RTOL, FWD_AFRAC, FWD_FLOOR);
    fails += check("lse", lse_d[0], lse, nl, FWD_RTOL, FWD_AFRAC, FWD_FLOOR);
    fails += check("dq", dq_d[0], dq, nq, BWD_RTOL, BWD_AFRAC, BWD_FLOOR);
    fails += check("dk", dk_d[0], dk, nk, BWD_RTOL, BWD_AFRAC, BWD_FLOOR);
    fails += check("dv", dv_d[0], dv_, nv, BWD_RTOL, BWD_AFRAC, BWD_FLOOR);
    fails += same_bits("out", out_d[0], out_d[1], no);
    fails += same_bits("lse", lse_d[0], lse_d[1], nl);
    fails += same_bits("dq", dq_d[0], dq_d[1], nq);
    fails += same_bits("dk", dk_d[0], dk_d[1], nk);
    fails += same_bits("dv", dv_d[0], dv_d[1], nv);

    for (int run = 0; run < 2; run++) {
        cuda_free(out_d[run]);
        cuda_free(lse_d[run]);
        cuda_free(dq_d[run]);
        cuda_free(dk_d[run]);
        cuda_free(dv_d[run]);
    }
    cuda_free(q_d);
    cuda_free(k_d);
    cuda_free(v_d);
    cuda_free(dout_d);
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv_);
    return fails;
}

static void test_attention(void **state) {
    (void)state;
    static const std_case cases[] = {
        {2, 2, 1, 1}, /* Hq = Hkv */
        {4, 2, 1, 1}, /* GQA, n_rep 2 */
        {4, 2, 2, 1}, /* dv = 2d, as diff V1 calls the core */
        {4, 1, 1, 2}, /* n_rep 4, dv = d / 2 */
    };
    int fails = 0;
    unsigned seed = 100;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int it = 0; it < N_T; it++)
            for (int id = 0; id < N_D; id++) {
                const int d = g_d[id], dv = d * cases[c].dv_num / cases[c].dv_den;
                fails += run_standard(2, g_T[it], cases[c].Hq, cases[c].Hkv, d, dv, seed);
                seed += 10;
            }
    assert_int_equal(fails, 0);
}

/* ---- differential attention V1 ---- */

typedef struct diff_case {
    int H, Hkv, subln;
    float lambda;
} diff_case;

static int run_diff(int B, int T, const diff_case *dc, int d, unsigned seed) {
    const int H = dc->H, Hkv = dc->Hkv, d2 = 2 * d;
    const float lambda_init = 0.356f, eps = 1e-5f; /* layer 1's lambda_init (SPEC 2) */
    const size_t nq = (size_t)B * T * 2 * H * d, nk = (size_t)B * T * 2 * Hkv * d;
    const size_t nv = (size_t)B * T * Hkv * d2, no = (size_t)B * T * H * d2;
    const size_t nl = (size_t)B * 2 * H * T, nr = (size_t)B * T * H;
    float *q = host_alloc(nq), *k = host_alloc(nk), *v = host_alloc(nv), *dout = host_alloc(no);
    float gamma[2 * 128], dgamma0[2 * 128], lambda = dc->lambda, dlambda0 = 1.5f;
    cut_fill(q, nq, seed + 1, -2.0f, 2.0f);
    cut_fill(k, nk, seed + 2, -2.0f, 2.0f);
    cut_fill(v, nv, seed + 3, -1.0f, 1.0f);
    cut_fill(dout, no, seed + 4, -1.0f, 1.0f);
    cut_fill(gamma, (size_t)d2, seed + 5, 0.5f, 1.5f);
    cut_fill(dgamma0, (size_t)d2, seed + 6, -2.0f, 2.0f); /* nonzero: dgamma accumulates */
    const float *gamma_h = dc->subln ? gamma : NULL;

    float *out = host_alloc(no), *o1 = host_alloc(no), *o2 = host_alloc(no);
    float *lse = host_alloc(nl), *rstd = host_alloc(nr);
    float *dq = host_alloc(nq), *dk = host_alloc(nk), *dv_ = host_alloc(nv);
    float dgamma[2 * 128], dlambda = dlambda0;
    memcpy(dgamma, dgamma0, sizeof(float) * d2);
    cpu_diffattn_forward(out, o1, o2, lse, rstd, q, k, v, &lambda, gamma_h, lambda_init, eps, B,
                         T, H, Hkv, d);
    cpu_diffattn_backward(dq, dk, dv_, dgamma, &dlambda, dout, q, k, v, o1, o2, lse, rstd,
                          &lambda, gamma_h, lambda_init, B, T, H, Hkv, d);

    /* fp32 mode: the operands q, k, v are fp32 (bf16: test_cuda_operand, test_cuda_flash) */
    dt_operand *q_d = cot_operand_dev(q, nq), *k_d = cot_operand_dev(k, nk);
    dt_operand *v_d = cot_operand_dev(v, nv);
    float *dout_d = cot_dev(dout, no), *lambda_d = cot_dev(&lambda, 1);
    float *gamma_d = dc->subln ? cot_dev(gamma, (size_t)d2) : NULL;
    float *out_d[2], *o1_d[2], *o2_d[2], *lse_d[2], *rstd_d[2];
    float *dq_d[2], *dk_d[2], *dv_d[2], *dgamma_d[2], *dlambda_d[2];
    for (int run = 0; run < 2; run++) {
        out_d[run] = cot_dev_nan(no);
        o1_d[run] = cot_dev_nan(no);
        o2_d[run] = cot_dev_nan(no);
        lse_d[run] = cot_dev_nan(nl);
        rstd_d[run] = cot_dev_nan(nr);
        dq_d[run] = cot_dev_nan(nq);
        dk_d[run] = cot_dev_nan(nk);
        dv_d[run] = cot_dev_nan(nv);
        dgamma_d[run] = cot_dev(dgamma0, (size_t)d2);
        dlambda_d[run] = cot_dev(&dlambda0, 1);
        cuda_diffattn_forward((dt_operand *)out_d[run], o1_d[run], o2_d[run], lse_d[run],
                              rstd_d[run], q_d, k_d, v_d, lambda_d, gamma_d, lambda_init, eps, B,
                              T, H, Hkv, d);
        cuda_diffattn_backward(dq_d[run], dk_d[run], (dt_operand *)dv_d[run], dgamma_d[run],
                               dlambda_d[run], dout_d, q_d, k_d, v_d, o1_d[run], o2_d[run],
                               lse_d[run], rstd_d[run], lambda_d, gamma_d, lambda_init, B, T, H,
                               Hkv, d);
    }
    cuda_synchronize();

    printf("-- diffattn B=%d T=%d H=%d Hkv=%d d=%d subln=%d lambda=%g\n", B, T, H, Hkv, d,
           dc->subln, (double)lambda);
    int fails = 0;
    fails += check("out", out_d[0], out, no, FWD_RTOL, FWD_AFRAC, FWD_FLOOR);
    fails += check("o1", o1_d[0], o1, no, FWD_RTOL, FWD_AFRAC, FWD_FLOOR);
    fails += check("o2", o2_d[0], o2, no, FWD_RTOL, FWD_AFRAC, FWD_FLOOR);
    fails += check("lse", lse_d[0], lse, nl, FWD_RTOL, FWD_AFRAC, FWD_FLOOR);
    if (dc->subln) fails += check("rstd", rstd_d[0], rstd, nr, FWD_RTOL, FWD_AFRAC, FWD_FLOOR);
    fails += check("dq", dq_d[0], dq, nq, BWD_RTOL, BWD_AFRAC, BWD_FLOOR);
    fails += check("dk", dk_d[0], dk, nk, BWD_RTOL, BWD_AFRAC, BWD_FLOOR);
    fails += check("dv", dv_d[0], dv_, nv, BWD_RTOL, BWD_AFRAC, BWD_FLOOR);
    /* accumulated onto dgamma0 / dlambda0 (subln off: dgamma untouched, still dgamma0) */
    fails += check("dgamma", dgamma_d[0], dgamma, (size_t)d2, RED_RTOL, RED_AFRAC, RED_FLOOR);
    fails += check("dlambda", dlambda_d[0], &dlambda, 1, RED_RTOL, RED_AFRAC, RED_FLOOR);
    fails += same_bits("out", out_d[0], out_d[1], no);
    fails += same_bits("o1", o1_d[0], o1_d[1], no);
    fails += same_bits("o2", o2_d[0], o2_d[1], no);
    fails += same_bits("lse", lse_d[0], lse_d[1], nl);
    if (dc->subln) fails += same_bits("rstd", rstd_d[0], rstd_d[1], nr);
    fails += same_bits("dq", dq_d[0], dq_d[1], nq);
    fails += same_bits("dk", dk_d[0], dk_d[1], nk);
    fails += same_bits("dv", dv_d[0], dv_d[1], nv);
    fails += same_bits("dgamma", dgamma_d[0], dgamma_d[1], (size_t)d2);
    fails += same_bits("dlambda", dlambda_d[0], dlambda_d[1], 1);

    for (int run = 0; run < 2; run++) {
        float *bufs[] = {out_d[run], o1_d[run], o2_d[run], lse_d[run], rstd_d[run],
                         dq_d[run],  dk_d[run], dv_d[run], dgamma_d[run], dlambda_d[run]};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cuda_free(bufs[i]);
    }
    cuda_free(q_d);
    cuda_free(k_d);
    cuda_free(v_d);
    cuda_free(dout_d);
    cuda_free(lambda_d);
    cuda_free(gamma_d);
    free(q), free(k), free(v), free(dout), free(out), free(o1), free(o2), free(lse), free(rstd);
    free(dq), free(dk), free(dv_);
    return fails;
}

static void test_diffattn(void **state) {
    (void)state;
    static const diff_case cases[] = {
        {2, 2, 1, 0.35f},  {2, 2, 0, -0.45f}, {2, 2, 1, -0.45f}, {2, 2, 0, 0.8f},
        {4, 2, 1, -0.45f}, {4, 2, 0, 0.35f},  {4, 2, 1, 0.8f},   {4, 2, 0, -0.2f},
    };
    int fails = 0;
    unsigned seed = 5000;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int it = 0; it < N_T; it++)
            for (int id = 0; id < N_D; id++) {
                fails += run_diff(2, g_T[it], &cases[c], g_d[id], seed);
                seed += 10;
            }
    /* many rows (B T H = 16,896: 264 chunks of 64), so that the dgamma/dlambda reduction's
     * threads each add several chunks (it runs 256 threads per column) */
    fails += run_diff(128, 33, &cases[4], 16, seed); /* H 4, Hkv 2, subln */
    assert_int_equal(fails, 0);
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_diffattn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
