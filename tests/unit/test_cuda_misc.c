/* The CUDA optimizer and DIFF-specific small ops against the CPU oracle on identical inputs:
 * adamw_update over several steps (and a late step with tiny bias corrections; the same bits at
 * every alignment of its arrays), difflambda
 * forward/backward (lambda and dlambda in device memory, gradients accumulating), and the DIFF
 * V2 combine forward/backward (both sigmoid branches, NaN-initialised outputs, reruns).
 * Skipped (77) without a device. */
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

/* ---- adamw ---- */

/* The kernel repeats the CPU's float operations one by one, with the FMAs that GCC forms from
 * model/cpu/adamw.c under -march=native (model/cuda/adamw.cu): on such a build the states agree
 * bit for bit (the test prints how many elements do). Without FMA on the CPU side each step
 * differs by ~1 ulp of each term, i.e. after 6 steps a few ulps: 2e-6 relative. Absolute terms:
 * m cancels when b1 m and (1 - b1) g have opposite signs (1 ulp of |g| <= 0.5: 1e-7); v has no
 * cancellation (1e-12 for v ~ 1e-4 .. 1); params move by lr = 1e-3 per step, so a wrong bias
 * correction or decay shows at >= 1e-5 while rounding stays below 1e-6 relative of |p| ~ 1,
 * plus 1e-8 absolute for p near 0. */
#define ADAMW_RTOL 2e-6
#define ADAMW_ATOL_M 1e-7
#define ADAMW_ATOL_V 1e-12
#define ADAMW_ATOL_P 1e-8

static size_t count_same_bits(const float *dev, const float *host, size_t n) {
    float *g = cut_to_host(dev, n);
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += memcmp(&g[i], &host[i], sizeof(float)) == 0;
    free(g);
    return same;
}

static void adamw_case(size_t n) {
    printf("-- adamw n=%zu\n", n);
    float *p = malloc(n * sizeof(float)), *m = malloc(n * sizeof(float));
    float *v = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    cut_fill(p, n, 800, -1.0f, 1.0f);
    cut_fill(m, n, 801, -0.1f, 0.1f); /* a state from earlier steps */
    cut_fill(v, n, 802, 1e-4f, 1e-2f);
    float *d_p = cot_dev(p, n), *d_m = cot_dev(m, n), *d_v = cot_dev(v, n), *d_g = cot_dev(NULL, n);
    const float scale = 0.5f;
    float *d_scale = cot_dev(&scale, 1); /* read by the kernel from device memory */
    const int steps[] = {1, 2, 3, 4, 5, 20000}; /* 20000: 1 - b^t ~ 1, beta2^t underflows */
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        int t = steps[k];
        cut_fill(g, n, 810 + (unsigned)k, -1.0f, 1.0f); /* fresh gradients each step */
        cuda_copy_from_host(d_g, g, n * sizeof(float));
        const float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
        cpu_adamw_update(p, m, v, g, n, lr, b1, b2, eps, wd, &scale, t);
        cuda_adamw_update(d_p, d_m, d_v, d_g, n, lr, b1, b2, eps, wd, d_scale, t);
        printf("step %-5d bit-identical: params %zu/%zu m %zu/%zu v %zu/%zu\n", t,
               count_same_bits(d_p, p, n), n, count_same_bits(d_m, m, n), n,
               count_same_bits(d_v, v, n), n);
        cot_check("adamw params", d_p, p, n, ADAMW_ATOL_P, ADAMW_RTOL);
        cot_check("adamw m", d_m, m, n, ADAMW_ATOL_M, ADAMW_RTOL);
        cot_check("adamw v", d_v, v, n, ADAMW_ATOL_V, ADAMW_RTOL);
    }
    cot_check_bits("adamw grads untouched", d_g, g, n);
    cuda_free(d_p), cuda_free(d_m), cuda_free(d_v), cuda_free(d_g), cuda_free(d_scale);
    free(p), free(m), free(v), free(g);
}

static void test_adamw(void **state) {
    (void)state;
    adamw_case(1);
    adamw_case(1000);
    adamw_case(100003);
}

/* The update of the same n elements at every alignment of the arrays against 16 bytes (the
 * kernel's scalar head, float4 chunks and scalar tail), and with the arrays aligned unlike each
 * other (all scalar), gives the bits of the aligned run: every element takes the same
 * operations whichever way it is moved. */
static void test_adamw_alignment(void **state) {
    (void)state;
    enum { N = 1037, ARRAYS = 4 };
    float *h[ARRAYS], *ref[3];
    for (int a = 0; a < ARRAYS; a++) {
        h[a] = malloc(N * sizeof(float));
        cut_fill(h[a], N, 820 + (unsigned)a, a == 2 ? 1e-4f : -1.0f, 1.0f); /* v > 0 */
    }
    const float scale = 0.75f;
    float *d_scale = cot_dev(&scale, 1);
    /* offsets (floats) of params, m, v, grads; the first is the reference */
    static const int offs[][ARRAYS] = {{0, 0, 0, 0}, {1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3, 3, 3},
                                       {1, 0, 0, 0}, {0, 0, 2, 0}, {3, 3, 3, 1}};
    for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
        static const size_t ns[] = {N, 6, 3, 0}; /* the first of them: the reference */
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++) {
            const size_t n = ns[in];
            float *d[ARRAYS], *base[ARRAYS];
            for (int a = 0; a < ARRAYS; a++) {
                base[a] = cot_dev(NULL, N + 4);
                d[a] = base[a] + offs[k][a];
                cuda_copy_from_host(d[a], h[a], N * sizeof(float));
            }
            cuda_adamw_update(d[0], d[1], d[2], d[3], n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, d_scale,
                              7);
            if (k == 0 && n == N) {
                for (int a = 0; a < 3; a++) ref[a] = cut_to_host(d[a], N);
            } else {
                static const char *names[] = {"params", "m", "v"};
                char what[96];
                for (int a = 0; a < 3; a++) { /* updated: the reference; past n: untouched */
                    snprintf(what, sizeof what, "adamw offsets %d %d %d %d n=%zu: %s", offs[k][0],
                             offs[k][1], offs[k][2], offs[k][3], n, names[a]);
                    cot_check_bits(what, d[a], ref[a], n);
                    strncat(what, " past n", sizeof what - strlen(what) - 1);
                    cot_check_bits(what, d[a] + n, h[a] + n, N - n);
                }
            }
            for (int a = 0; a < ARRAYS; a++) cuda_free(base[a]);
        }
    }
    for (int a = 0; a < ARRAYS; a++) free(h[a]);
    for (int a = 0; a < 3; a++) free(ref[a]);
    cuda_free(d_scale);
}

/* ---- difflambda ---- */

/* Dot products in double on both sides (different order: ~1e-16 relative), exp in double, one
 * rounding to float: at most 1 ulp apart. 1e-6 relative, 1e-7 absolute for values near 0
 * (lambda = e^a1 - e^a2 + init can cancel). A wrong sign or a missing e^a factor errs by O(1). */
#define LAMBDA_ATOL 1e-7
#define LAMBDA_RTOL 1e-6

static void difflambda_case(int d) {
    printf("-- difflambda d=%d\n", d);
    float *vec = malloc(4 * (size_t)d * sizeof(float)),
          *grad = malloc(4 * (size_t)d * sizeof(float));
    cut_fill(vec, 4 * (size_t)d, 900 + d, -0.3f, 0.3f); /* lq1 | lk1 | lq2 | lk2 */
    cut_fill(grad, 4 * (size_t)d, 901, -1.0f, 1.0f);    /* accumulates */
    float *lq1 = vec, *lk1 = vec + d, *lq2 = vec + 2 * d, *lk2 = vec + 3 * d;
    float *d_vec = cot_dev(vec, 4 * (size_t)d), *d_grad = cot_dev(grad, 4 * (size_t)d);
    float *d_grad2 = cot_dev(grad, 4 * (size_t)d);
    float *d_lambda = cot_dev_nan(1);
    float lambda = NAN, dlambda = -0.7f;
    float *d_dlambda = cot_dev(&dlambda, 1);

    cpu_difflambda_forward(&lambda, lq1, lk1, lq2, lk2, 0.2f, d);
    cuda_difflambda_forward(d_lambda, d_vec, d_vec + d, d_vec + 2 * d, d_vec + 3 * d, 0.2f, d);
    cot_check("difflambda lambda", d_lambda, &lambda, 1, LAMBDA_ATOL, LAMBDA_RTOL);

    cpu_difflambda_backward(grad, grad + d, grad + 2 * d, grad + 3 * d, &dlambda, lq1, lk1, lq2,
                            lk2, d);
    cuda_difflambda_backward(d_grad, d_grad + d, d_grad + 2 * d, d_grad + 3 * d, d_dlambda, d_vec,
                             d_vec + d, d_vec + 2 * d, d_vec + 3 * d, d);
    cot_check("difflambda grads (+=)", d_grad, grad, 4 * (size_t)d, LAMBDA_ATOL, LAMBDA_RTOL);
    cuda_difflambda_backward(d_grad2, d_grad2 + d, d_grad2 + 2 * d, d_grad2 + 3 * d, d_dlambda,
                             d_vec, d_vec + d, d_vec + 2 * d, d_vec + 3 * d, d);
    cot_check_bits_dev("difflambda grads rerun", d_grad2, d_grad, 4 * (size_t)d);

    cuda_free(d_vec), cuda_free(d_grad), cuda_free(d_grad2), cuda_free(d_lambda);
    cuda_free(d_dlambda);
    free(vec), free(grad);
}

static void test_difflambda(void **state) {
    (void)state;
    const int ds[] = {1, 7, 64, 128, 256, 300};
    for (size_t k = 0; k < sizeof ds / sizeof ds[0]; k++) difflambda_case(ds[k]);
}

/* ---- diffv2 combine ---- */

/* sigmoid uses expf (within 2 ulp of glibc's), so lambda may differ by a few ulps; out =
 * a0 - lambda a1 cancels, so its error is a few ulps of |a1| <= 2: 1e-6 absolute. dlam_logit
 * = -lambda (1 - lambda) (dout . a1): for lambda near 1, (1 - lambda) amplifies a 1-ulp change
 * of lambda (6e-8) into 6e-8 |dot| absolute, |dot| ~ 10 here: 1e-5 absolute and relative. A
 * wrong sign, a missing (1 - lambda) or the wrong head's values err by O(0.1 |dot|). */
#define V2_ATOL 1e-6
#define V2_RTOL 1e-6
#define V2_DLAM_ATOL 1e-5
#define V2_DLAM_RTOL 1e-5

static void diffv2_case(int N, int H, int d) {
    printf("-- diffv2 combine N=%d H=%d d=%d\n", N, H, d);
    size_t n_attn = (size_t)N * 2 * H * d, n_out = (size_t)N * H * d, n_lam = (size_t)N * H;
    float *attn = malloc(n_attn * sizeof(float)), *lam = malloc(n_lam * sizeof(float));
    float *dout = malloc(n_out * sizeof(float));
    float *out = cot_nan(n_out), *dattn = cot_nan(n_attn), *dlam = cot_nan(n_lam);
    cut_fill(attn, n_attn, 1000 + d, -2.0f, 2.0f);
    cut_fill(lam, n_lam, 1001, -20.0f, 20.0f); /* both branches of the sigmoid, saturated ends */
    cut_fill(dout, n_out, 1002, -1.0f, 1.0f);
    float *d_attn = cot_dev(attn, n_attn), *d_lam = cot_dev(lam, n_lam);
    float *d_dout = cot_dev(dout, n_out), *d_out = cot_dev_nan(n_out);
    float *d_dattn = cot_dev_nan(n_attn), *d_dlam = cot_dev_nan(n_lam);
    float *d_dattn2 = cot_dev_nan(n_attn), *d_dlam2 = cot_dev_nan(n_lam);

    cpu_diffv2_combine_forward(out, attn, lam, N, H, d);
    /* fp32 mode: the dt_operand buffers are fp32 (bf16: test_cuda_operand) */
    cuda_diffv2_combine_forward((dt_operand *)d_out, (const dt_operand *)d_attn, d_lam, N, H, d);
    cot_check("diffv2 out", d_out, out, n_out, V2_ATOL, V2_RTOL);

    cpu_diffv2_combine_backward(dattn, dlam, dout, attn, lam, N, H, d);
    cuda_diffv2_combine_backward(d_dattn, d_dlam, d_dout, (const dt_operand *)d_attn, d_lam, N, H,
                                 d);
    cot_check("diffv2 dattn", d_dattn, dattn, n_attn, V2_ATOL, V2_RTOL);
    cot_check("diffv2 dlam_logit", d_dlam, dlam, n_lam, V2_DLAM_ATOL, V2_DLAM_RTOL);
    cuda_diffv2_combine_backward(d_dattn2, d_dlam2, d_dout, (const dt_operand *)d_attn, d_lam, N,
                                 H, d);
    cot_check_bits_dev("diffv2 dattn rerun", d_dattn2, d_dattn, n_attn);
    cot_check_bits_dev("diffv2 dlam_logit rerun", d_dlam2, d_dlam, n_lam);

    cuda_free(d_attn), cuda_free(d_lam), cuda_free(d_dout), cuda_free(d_out);
    cuda_free(d_dattn), cuda_free(d_dlam), cuda_free(d_dattn2), cuda_free(d_dlam2);
    free(attn), free(lam), free(dout), free(out), free(dattn), free(dlam);
}

static void test_diffv2(void **state) {
    (void)state;
    diffv2_case(1, 1, 1);
    diffv2_case(7, 3, 5);
    diffv2_case(33, 4, 64);
    diffv2_case(100, 2, 33); /* d not a multiple of the warp */
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_adamw_alignment),
        cmocka_unit_test(test_difflambda),
        cmocka_unit_test(test_diffv2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
