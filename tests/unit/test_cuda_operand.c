/* The CUDA backend's dt_operand format (model/backend.h, model/cuda/operand.cuh): in bf16 mode
 * (cuda_backend_init(0, 1)) every op that writes an operand must store exactly the bf16
 * rounding (to nearest even) of what fp32 mode stores, and every op that reads one must give in
 * bf16 mode, on bf16 operands, the bits fp32 mode gives on the same values widened to fp32. The
 * same kernels compute both (templated on the element type, fp32 math), so both checks are bit
 * for bit:
 *   writers: rmsnorm, residual rmsnorm (y and rstd too), the rmsnorm backward's copy of the
 *     accumulated dinp (dinp_operand; dinp itself too), swiglu forward (h) and backward (dg,
 *     du; also in place over g and u), head_scale, the diffv2 combine, rope forward (in place,
 *     as the model rotates q and k, and out of place) and backward (dinp from an fp32 dout; in
 *     fp32 mode also in place), the tiled attention and DIFF V1 forward (their fp32 outputs lse,
 *     o1, o2, rstd too) and backward (dv; dq, dk and DIFF's dgamma, dlambda are fp32),
 *     xent_backward's dlogits (in place over the logits' rows, and rows ldd apart);
 *   readers: swiglu forward and backward (g, u), rope (its inp), head_scale_forward (its inp),
 *     head_scale_backward, the diffv2 combine forward and backward, the tiled attention forward
 *     and backward (q, k, v; out, read by the delta) and the tiled DIFF V1 forward and backward
 *     (q, k, v).
 * The matrix products read a bf16 inp but also round w and dout, so fp32 and bf16 products
 * differ; test_cuda_matmul checks them against the CPU oracle on rounded inputs. What is checked
 * here is matmul_forward_operand: in fp32 mode the bits of matmul_forward; in bf16 mode, where
 * cuBLAS writes C in bf16 from its fp32 accumulation, the rounding of matmul_forward's fp32
 * result in the same mode (the same bf16 inputs and accumulation); and matmul_backward_operand
 * (dout an operand): in fp32 mode the bits of matmul_backward; in bf16 mode, on a bf16 dout, the
 * bits of matmul_backward given that dout widened, which it rounds back to the same bf16. With
 * dout's rows further apart than O (ldd > O) cuBLAS may choose another kernel, which sums in
 * another order (on an H100 a bf16 dout with ldd 2 O + 3 gave dinp 1 fp32 ulp off): those
 * results are held to fp32 summation-order tolerances, which a gap read (NaN) or a wrong row fails.
 * A bf16 output is 2 bytes an element: it sits in a buffer of n + GUARD elements whose last
 * GUARD carry a pattern that must survive (an op storing 4-byte elements overwrites it), and
 * its n elements start as NaN. Inputs that an op reads as operands are rounded to bf16 first,
 * so both modes see the same values. The backend's operand_bytes follows the mode, back and
 * forth. Skipped (77) without a device. */
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
#include "model/backend.h"

#define GUARD 64
#define GUARD_BITS 0xa5a5u /* a finite bf16 (-2.9e-16): no op writes it by chance */

static void set_mode(int bf16) {
    assert_int_equal(cuda_backend_init(0, bf16), 0);
    assert_int_equal(cuda_operand_bytes(), bf16 ? 2 : 4);
    assert_int_equal(dt_backend_cuda()->operand_bytes, bf16 ? 2 : 4);
}

static float *host_rounded(size_t n, unsigned seed, float lo, float hi) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    cut_fill(x, n, seed, lo, hi);
    for (size_t i = 0; i < n; i++) x[i] = cut_bf16_round(x[i]);
    return x;
}

/* A bf16 operand buffer (bf16 mode) of n elements followed by GUARD guard elements: x rounded
 * (an input that an op also writes: rope in place), or with x NULL n NaNs (an output). */
static dt_operand *bf16_guarded(const float *x, size_t n) {
    uint16_t *h = malloc((n + GUARD) * sizeof(uint16_t));
    for (size_t i = 0; i < n + GUARD; i++)
        h[i] = i >= n ? GUARD_BITS : x ? cut_bf16_bits(x[i]) : 0x7fc0u;
    dt_operand *d = (dt_operand *)cut_to_device(h, (n + GUARD) * sizeof(uint16_t));
    free(h);
    return d;
}

/* A bf16 output buffer (bf16 mode) of n NaN elements followed by GUARD guard elements. */
static dt_operand *bf16_out(size_t n) { return bf16_guarded(NULL, n); }

/* Fails unless the n bf16 elements at dev_bf16 are the rounding of the n floats at dev_f32 and
 * the GUARD elements after them are untouched. */
static void check_rounded(const char *what, const dt_operand *dev_bf16, const float *dev_f32,
                          size_t n) {
    uint16_t *b = malloc((n + GUARD) * sizeof(uint16_t));
    float *f = cut_to_host(dev_f32, n);
    cuda_copy_to_host(b, dev_bf16, (n + GUARD) * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++)
        if (b[i] != cut_bf16_bits(f[i])) {
            const double got = cut_bf16_widen(b[i]), want = f[i];
            const unsigned bits = b[i];
            free(b), free(f);
            fail_msg("%s: element %zu is %.9g (bf16 0x%04x), fp32 mode wrote %.9g", what, i, got,
                     bits, want);
        }
    for (size_t i = n; i < n + GUARD; i++)
        if (b[i] != GUARD_BITS) {
            free(b), free(f);
            fail_msg("%s: wrote past its %zu bf16 elements (guard element %zu)", what, n, i - n);
        }
    printf("%-36s n=%-7zu bf16 = rounded fp32, guard intact\n", what, n);
    free(b), free(f);
}

/* ---- writers ---- */

static void rmsnorm_case(int N, int C, int with_weight) {
    const size_t n = (size_t)N * C;
    printf("-- rmsnorm N=%d C=%d weight=%d\n", N, C, with_weight);
    float *x = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), w[300];
    cut_fill(x, n, 1 + (unsigned)C, -3.0f, 3.0f);
    cut_fill(b, n, 2, -1.0f, 1.0f);
    cut_fill(w, (size_t)C, 3, 0.5f, 1.5f);
    float *d_x = cot_dev(x, n), *d_b = cot_dev(b, n), *d_w = with_weight ? cot_dev(w, C) : NULL;
    float *f_out = cot_dev_nan(n), *f_rstd = cot_dev_nan(N), *f_y = cot_dev_nan(n);
    float *f_rout = cot_dev_nan(n), *f_rrstd = cot_dev_nan(N);
    float *h_rstd = cot_dev_nan(N), *h_y = cot_dev_nan(n), *h_rrstd = cot_dev_nan(N);

    set_mode(0);
    cuda_rmsnorm_forward((dt_operand *)f_out, f_rstd, d_x, d_w, N, C, 1e-5f);
    cuda_residual_rmsnorm_forward(f_y, (dt_operand *)f_rout, f_rrstd, d_x, d_b, d_w, N, C, 1e-5f);
    set_mode(1);
    dt_operand *h_out = bf16_out(n), *h_rout = bf16_out(n);
    cuda_rmsnorm_forward(h_out, h_rstd, d_x, d_w, N, C, 1e-5f);
    cuda_residual_rmsnorm_forward(h_y, h_rout, h_rrstd, d_x, d_b, d_w, N, C, 1e-5f);

    check_rounded("rmsnorm out", h_out, f_out, n);
    cot_check_bits_dev("rmsnorm rstd (fp32)", h_rstd, f_rstd, N);
    check_rounded("residual rmsnorm out", h_rout, f_rout, n);
    cot_check_bits_dev("residual rmsnorm y (fp32)", h_y, f_y, n);
    cot_check_bits_dev("residual rmsnorm rstd (fp32)", h_rrstd, f_rrstd, N);

    void *dev[] = {d_x, d_b, d_w, f_out, f_rstd, f_y, f_rout, f_rrstd, h_rstd, h_y, h_rrstd,
                   h_out, h_rout};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(x), free(b);
}

static void test_rmsnorm(void **state) {
    (void)state;
    rmsnorm_case(1, 1, 1);
    rmsnorm_case(37, 100, 1);
    rmsnorm_case(37, 100, 0);
    rmsnorm_case(5, 257, 1); /* odd row length: odd bf16 offsets */
}

/* rmsnorm backward's dinp_operand: in bf16 mode the rounding of the fp32 dinp as accumulated by
 * the call (dinp starts nonzero, so the value before the call differs), 2 bytes an element;
 * passing it, or NULL, leaves dinp as fp32 mode computes it without one; in fp32 mode the
 * operand holds dinp's bits. at (0 or 1): the operand starts that many elements into its buffer
 * (1: not 4-byte aligned in bf16 mode, nor 8-byte aligned in fp32 mode, so an even row is
 * stored element by element rather than in pairs). */
static void rmsnorm_backward_case(int N, int C, int with_weight, int at) {
    const size_t n = (size_t)N * C;
    printf("-- rmsnorm backward N=%d C=%d weight=%d operand at +%d\n", N, C, with_weight, at);
    float *x = malloc(n * sizeof(float)), *dout = malloc(n * sizeof(float));
    float *dinp0 = malloc(n * sizeof(float)), w[300];
    cut_fill(x, n, 4 + (unsigned)C, -3.0f, 3.0f);
    cut_fill(dout, n, 5, -1.0f, 1.0f);
    cut_fill(dinp0, n, 6, -0.5f, 0.5f); /* nonzero: dinp accumulates */
    cut_fill(w, (size_t)C, 7, 0.5f, 1.5f);
    float *d_x = cot_dev(x, n), *d_dout = cot_dev(dout, n);
    float *d_w = with_weight ? cot_dev(w, C) : NULL, *d_rstd = cot_dev_nan(N);
    float *f_norm = cot_dev_nan(n), *f_dinp = cot_dev(dinp0, n), *f_dinp_op = cot_dev(dinp0, n);
    float *f_op = cot_dev_nan(n + (size_t)at);
    float *h_dinp = cot_dev(dinp0, n), *h_dinp_alone = cot_dev(dinp0, n);

    set_mode(0);
    cuda_rmsnorm_forward((dt_operand *)f_norm, d_rstd, d_x, d_w, N, C, 1e-5f); /* rstd */
    cuda_rmsnorm_backward(f_dinp, NULL, NULL, d_dout, d_x, d_w, d_rstd, N, C);
    cuda_rmsnorm_backward(f_dinp_op, (dt_operand *)(f_op + at), NULL, d_dout, d_x, d_w, d_rstd,
                          N, C);
    set_mode(1);
    dt_operand *h_buf = bf16_out(n + (size_t)at);
    dt_operand *h_op = (dt_operand *)((uint16_t *)h_buf + at);
    cuda_rmsnorm_backward(h_dinp, h_op, NULL, d_dout, d_x, d_w, d_rstd, N, C);
    cuda_rmsnorm_backward(h_dinp_alone, NULL, NULL, d_dout, d_x, d_w, d_rstd, N, C);

    cot_check_bits_dev("rmsnorm bwd dinp (fp32 op)", f_dinp_op, f_dinp, n);
    cot_check_bits_dev("rmsnorm bwd fp32 op = dinp", f_op + at, f_dinp, n);
    check_rounded("rmsnorm bwd dinp_operand", h_op, h_dinp, n);
    cot_check_bits_dev("rmsnorm bwd dinp (bf16 op)", h_dinp, f_dinp, n);
    cot_check_bits_dev("rmsnorm bwd dinp (bf16, NULL)", h_dinp_alone, f_dinp, n);

    void *dev[] = {d_x, d_dout, d_w, d_rstd, f_norm, f_dinp, f_dinp_op, f_op, h_dinp,
                   h_dinp_alone, h_buf};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(x), free(dout), free(dinp0);
}

static void test_rmsnorm_backward(void **state) {
    (void)state;
    rmsnorm_backward_case(1, 1, 1, 0);
    rmsnorm_backward_case(37, 100, 1, 0); /* rows of 4k: the float4 kernel */
    rmsnorm_backward_case(37, 100, 0, 1); /* misaligned operand: the scalar kernel, one by one */
    rmsnorm_backward_case(7, 102, 1, 0);  /* even rows: the scalar kernel, in pairs */
    rmsnorm_backward_case(5, 257, 1, 0);  /* odd row length: odd bf16 offsets */
    rmsnorm_backward_case(5, 257, 0, 1);
}

/* swiglu forward (writes h, reads g and u) and backward (writes dg and du, reads g and u): all
 * operands but dh; the backward also in place, dg over g and du over u */
static void test_swiglu(void **state) {
    (void)state;
    const size_t sizes[] = {1, 1001};
    for (size_t k = 0; k < 2; k++) {
        const size_t n = sizes[k];
        printf("-- swiglu n=%zu\n", n);
        float *g = host_rounded(n, 10, -8.0f, 8.0f), *u = host_rounded(n, 11, -2.0f, 2.0f);
        float *dh = malloc(n * sizeof(float));
        cut_fill(dh, n, 12, -1.0f, 1.0f);
        if (n >= 4) /* saturated sigmoid at both ends, and dg's cancellation near -1.28 */
            g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = cut_bf16_round(-1.2785f);
        float *d_dh = cot_dev(dh, n), *f_g = cot_dev(g, n), *f_u = cot_dev(u, n);
        float *f_h = cot_dev_nan(n), *f_dg = cot_dev_nan(n), *f_du = cot_dev_nan(n);
        set_mode(0);
        cuda_swiglu_forward((dt_operand *)f_h, (const dt_operand *)f_g, (const dt_operand *)f_u,
                            1, n, n);
        cuda_swiglu_backward((dt_operand *)f_dg, (dt_operand *)f_du, d_dh,
                             (const dt_operand *)f_g, (const dt_operand *)f_u, 1, n, n);
        set_mode(1);
        dt_operand *h_g = cot_operand_dev(g, n), *h_u = cot_operand_dev(u, n), *h_h = bf16_out(n);
        dt_operand *h_dg = bf16_out(n), *h_du = bf16_out(n);
        /* overwritten in place */
        dt_operand *h_gi = bf16_guarded(g, n), *h_ui = bf16_guarded(u, n);
        cuda_swiglu_forward(h_h, h_g, h_u, 1, n, n);
        cuda_swiglu_backward(h_dg, h_du, d_dh, h_g, h_u, 1, n, n);
        cuda_swiglu_backward(h_gi, h_ui, d_dh, h_gi, h_ui, 1, n, n);
        check_rounded("swiglu h", h_h, f_h, n);
        check_rounded("swiglu dg (reads g, u)", h_dg, f_dg, n);
        check_rounded("swiglu du (reads g, u)", h_du, f_du, n);
        check_rounded("swiglu dg in place over g", h_gi, f_dg, n);
        check_rounded("swiglu du in place over u", h_ui, f_du, n);
        void *dev[] = {d_dh, f_g, f_u, f_h, f_dg, f_du, h_dg, h_du, h_g, h_u, h_h, h_gi, h_ui};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
        free(g), free(u), free(dh);
    }
}

/* rope forward on q- or k-like operands: in place (as the model calls it) and out of place;
 * rope backward from an fp32 gradient into an operand (out of place, as the model calls it; in
 * fp32 mode also in place, which that mode allows); theta and positions as a long context's */
static void rope_case(int B, int T, int H, int d, int pos0) {
    const size_t n = (size_t)B * T * H * d;
    const float theta = 500000.0f;
    printf("-- rope B=%d T=%d H=%d d=%d pos0=%d\n", B, T, H, d, pos0);
    float *x = host_rounded(n, 70 + (unsigned)d, -2.0f, 2.0f);
    float *dout = malloc(n * sizeof(float)); /* fp32: not rounded */
    cut_fill(dout, n, 71 + (unsigned)d, -2.0f, 2.0f);
    float *f_x = cot_dev(x, n), *d_dout = cot_dev(dout, n), *f_dinp = cot_dev_nan(n);
    float *f_inpl = cot_dev(dout, n);
    set_mode(0);
    cuda_rope_forward((dt_operand *)f_x, (const dt_operand *)f_x, B, T, H, d, theta, pos0);
    cuda_rope_backward((dt_operand *)f_dinp, d_dout, B, T, H, d, theta, pos0);
    cuda_rope_backward((dt_operand *)f_inpl, f_inpl, B, T, H, d, theta, pos0);
    cot_check_bits_dev("rope backward in place, fp32 mode", f_inpl, f_dinp, n);
    set_mode(1);
    dt_operand *h_x = bf16_guarded(x, n), *h_src = cot_operand_dev(x, n), *h_y = bf16_out(n);
    dt_operand *h_dinp = bf16_out(n);
    cuda_rope_forward(h_x, h_x, B, T, H, d, theta, pos0);
    cuda_rope_forward(h_y, h_src, B, T, H, d, theta, pos0);
    cuda_rope_backward(h_dinp, d_dout, B, T, H, d, theta, pos0);
    check_rounded("rope in place", h_x, f_x, n);
    check_rounded("rope out of place", h_y, f_x, n);
    check_rounded("rope backward dinp (fp32 dout)", h_dinp, f_dinp, n);
    void *dev[] = {f_x, d_dout, f_dinp, f_inpl, h_x, h_src, h_y, h_dinp};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(x), free(dout);
}

static void test_rope(void **state) {
    (void)state;
    rope_case(2, 9, 3, 16, 0);
    rope_case(1, 5, 2, 9, 7); /* odd head width: the last channel copied, odd bf16 offsets */
    rope_case(1, 4, 2, 128, 60000);
}

/* matmul_forward_operand against matmul_forward in the same mode (inp an operand, rounded) */
static void matmul_operand_case(int N, int I, int O) {
    const size_t ni = (size_t)N * I, no = (size_t)N * O, nw = (size_t)O * I;
    printf("-- matmul_forward_operand N=%d I=%d O=%d\n", N, I, O);
    float *x = host_rounded(ni, 80 + (unsigned)I, -1.0f, 1.0f);
    float *w = malloc((nw + 1) * sizeof(float));
    cut_fill(w, nw, 81, -1.0f, 1.0f);
    float *d_w = cot_dev(w, nw), *f_x = cot_dev(x, ni), *f_ref = cot_dev_nan(no);
    float *f_op = cot_dev_nan(no), *h_ref = cot_dev_nan(no);
    set_mode(0); /* the operand is fp32: the product itself */
    cuda_matmul_forward(f_ref, (const dt_operand *)f_x, d_w, N, I, O, 0);
    cuda_matmul_forward_operand((dt_operand *)f_op, (const dt_operand *)f_x, d_w, N, I, O);
    cot_check_bits_dev("matmul operand, fp32 mode", f_op, f_ref, no);
    set_mode(1); /* bf16 inp and w copy; C in bf16 */
    dt_operand *h_x = cot_operand_dev(x, ni), *h_op = bf16_out(no);
    cuda_matmul_forward(h_ref, h_x, d_w, N, I, O, 0);
    cuda_matmul_forward_operand(h_op, h_x, d_w, N, I, O);
    check_rounded("matmul operand, bf16 mode", h_op, h_ref, no);
    void *dev[] = {d_w, f_x, f_ref, f_op, h_ref, h_x, h_op};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(x), free(w);
}

static void test_matmul_operand(void **state) {
    (void)state;
    matmul_operand_case(1, 1, 1);
    matmul_operand_case(37, 64, 51); /* odd O: bf16 rows at odd offsets */
    matmul_operand_case(130, 96, 192);
    matmul_operand_case(3, 0, 5); /* no inner dimension: zeros, 2 bytes an element */
}

/* One mode's matmul_backward (fp32 dout d_dout) and matmul_backward_operand (operand dout o_dout,
 * the same values, rows ldd elements apart) on the same inp and w, each into its own dinp and dw:
 * overwriting dinp with dw accumulating from dw0, accumulating dinp from dinp0, and dw alone (no
 * dinp, so in bf16 mode no copy of w either); the two results compared bit for bit where dout's
 * rows are dense (ldd == O), else within 1e-6 of the largest |element| plus 1e-6 relative (fp32
 * sums of |terms| <= 200 in another order differ by a few ulps of 10). */
static void matmul_backward_pair(const char *mode, const float *d_dout, const dt_operand *o_dout,
                                 int ldd, const dt_operand *inp, const float *d_w,
                                 const float *dinp0, const float *dw0, int N, int I, int O) {
    const size_t ni = (size_t)N * I, nw = (size_t)O * I;
    float *r[4], *o[4]; /* [dinp, dw, dinp accumulated, dw alone] of the reference, the operand */
    for (int k = 0; k < 2; k++) {
        float **b = k ? o : r;
        b[0] = cot_dev_nan(ni), b[1] = cot_dev(dw0, nw), b[2] = cot_dev(dinp0, ni);
        b[3] = cot_dev(dw0, nw);
    }
    cuda_matmul_backward(r[0], r[1], d_dout, inp, d_w, N, I, O, 0);
    cuda_matmul_backward(r[2], NULL, d_dout, inp, d_w, N, I, O, 1);
    cuda_matmul_backward(NULL, r[3], d_dout, inp, d_w, N, I, O, 0);
    cuda_matmul_backward_operand(o[0], o[1], o_dout, ldd, inp, d_w, N, I, O, 0);
    cuda_matmul_backward_operand(o[2], NULL, o_dout, ldd, inp, d_w, N, I, O, 1);
    cuda_matmul_backward_operand(NULL, o[3], o_dout, ldd, inp, d_w, N, I, O, 0);
    const char *what[4] = {"dinp", "dw (accumulated)", "dinp (accumulated)", "dw (no dinp)"};
    const size_t n[4] = {ni, nw, ni, nw};
    for (int i = 0; i < 4; i++) {
        char label[96];
        snprintf(label, sizeof label, "bwd operand %s, %s, ldd %d", what[i], mode, ldd);
        if (ldd == O) {
            cot_check_bits_dev(label, o[i], r[i], n[i]);
        } else {
            float *ref = cut_to_host(r[i], n[i]);
            if (cot_out_of_tol(label, o[i], ref, n[i], 1e-6, 1e-6, 1e-30))
                fail_msg("%s: off matmul_backward by more than summation order", label);
            free(ref);
        }
        cuda_free(r[i]), cuda_free(o[i]);
    }
}

/* matmul_backward_operand against matmul_backward in the same mode: dout rounded to bf16, so
 * that matmul_backward's own bf16 copy of it (bf16 mode) holds the operand's very bits */
static void matmul_backward_operand_case(int N, int I, int O) {
    const size_t ni = (size_t)N * I, no = (size_t)N * O, nw = (size_t)O * I;
    printf("-- matmul_backward_operand N=%d I=%d O=%d\n", N, I, O);
    float *x = host_rounded(ni, 90 + (unsigned)I, -1.0f, 1.0f);
    float *dout = host_rounded(no, 91 + (unsigned)O, -1.0f, 1.0f);
    float *w = malloc((nw + 1) * sizeof(float)), *dinp0 = malloc((ni + 1) * sizeof(float));
    float *dw0 = malloc((nw + 1) * sizeof(float));
    cut_fill(w, nw, 92, -1.0f, 1.0f);
    cut_fill(dinp0, ni, 93, -1.0f, 1.0f); /* nonzero: dinp accumulates */
    cut_fill(dw0, nw, 94, -1.0f, 1.0f);   /* nonzero: dw accumulates */
    float *d_w = cot_dev(w, nw), *f_x = cot_dev(x, ni), *f_dout = cot_dev(dout, no);
    /* the same dout with its rows ldd = 2 O + 3 elements apart, NaN between them: a product
     * that read the gaps would turn NaN */
    const int ldd = 2 * O + 3;
    float *strided = malloc(((size_t)N * ldd + 1) * sizeof(float));
    for (size_t i = 0; i < (size_t)N * ldd; i++)
        strided[i] = (int)(i % ldd) < O ? dout[i / ldd * O + i % ldd] : NAN;
    float *f_strided = cot_dev(strided, (size_t)N * ldd);
    set_mode(0); /* the operand dout is the fp32 dout itself */
    const dt_operand *f_op = (const dt_operand *)f_x;
    matmul_backward_pair("fp32", f_dout, (const dt_operand *)f_dout, O, f_op, d_w, dinp0, dw0, N,
                         I, O);
    matmul_backward_pair("fp32", f_dout, (const dt_operand *)f_strided, ldd, f_op, d_w, dinp0,
                         dw0, N, I, O);
    set_mode(1); /* a bf16 dout (2 bytes an element) against the widened one, rounded back */
    dt_operand *h_x = cot_operand_dev(x, ni), *h_dout = cot_operand_dev(dout, no);
    dt_operand *h_strided = cot_operand_dev(strided, (size_t)N * ldd);
    matmul_backward_pair("bf16", f_dout, h_dout, O, h_x, d_w, dinp0, dw0, N, I, O);
    matmul_backward_pair("bf16", f_dout, h_strided, ldd, h_x, d_w, dinp0, dw0, N, I, O);
    void *dev[] = {d_w, f_x, f_dout, f_strided, h_x, h_dout, h_strided};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(x), free(dout), free(strided), free(w), free(dinp0), free(dw0);
}

static void test_matmul_backward_operand(void **state) {
    (void)state;
    matmul_backward_operand_case(1, 1, 1);
    matmul_backward_operand_case(37, 64, 51); /* odd O: dout's bf16 rows at odd offsets */
    matmul_backward_operand_case(130, 96, 192);
    matmul_backward_operand_case(3, 5, 0); /* no inner dimension for dinp: zeros, or kept */
}

/* head_scale forward and backward: inp an operand (rounded values in both modes) */
static void test_head_scale(void **state) {
    (void)state;
    const int N = 41, H = 3, w = 33;
    const size_t n = (size_t)N * H * w;
    float *x = host_rounded(n, 20, -2.0f, 2.0f), s[3] = {0.75f, 1.3f, -0.6f};
    float *dout = malloc(n * sizeof(float)), ds0[3] = {0.5f, -0.25f, 1.0f};
    cut_fill(dout, n, 21, -1.0f, 1.0f);
    float *d_s = cot_dev(s, H), *d_dout = cot_dev(dout, n);
    float *f_x = cot_dev(x, n), *f_out = cot_dev_nan(n), *f_dinp = cot_dev_nan(n);
    float *f_ds = cot_dev(ds0, H), *h_dinp = cot_dev_nan(n), *h_ds = cot_dev(ds0, H);

    set_mode(0);
    cuda_head_scale_forward((dt_operand *)f_out, (const dt_operand *)f_x, d_s, N, H, w);
    cuda_head_scale_backward(f_dinp, f_ds, d_dout, (const dt_operand *)f_x, d_s, N, H, w);
    set_mode(1);
    dt_operand *h_x = cot_operand_dev(x, n), *h_out = bf16_out(n);
    cuda_head_scale_forward(h_out, h_x, d_s, N, H, w);
    cuda_head_scale_backward(h_dinp, h_ds, d_dout, h_x, d_s, N, H, w);

    printf("-- head_scale N=%d H=%d w=%d\n", N, H, w);
    check_rounded("head_scale out", h_out, f_out, n);
    cot_check_bits_dev("head_scale dinp (reads inp)", h_dinp, f_dinp, n);
    cot_check_bits_dev("head_scale ds (reads inp)", h_ds, f_ds, H);

    void *dev[] = {d_s, d_dout, f_x, f_out, f_dinp, f_ds, h_dinp, h_ds, h_x, h_out};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(x), free(dout);
}

/* the DIFF V2 combine forward and backward: attn an operand */
static void test_diffv2(void **state) {
    (void)state;
    const int N = 29, H = 3, d = 37;
    const size_t na = (size_t)N * 2 * H * d, no = (size_t)N * H * d, nl = (size_t)N * H;
    float *attn = host_rounded(na, 30, -2.0f, 2.0f), *lam = malloc(nl * sizeof(float));
    float *dout = malloc(no * sizeof(float));
    cut_fill(lam, nl, 31, -6.0f, 6.0f);
    cut_fill(dout, no, 32, -1.0f, 1.0f);
    float *d_lam = cot_dev(lam, nl), *d_dout = cot_dev(dout, no), *f_attn = cot_dev(attn, na);
    float *f_out = cot_dev_nan(no), *f_dattn = cot_dev_nan(na), *f_dl = cot_dev_nan(nl);
    float *h_dattn = cot_dev_nan(na), *h_dl = cot_dev_nan(nl);

    set_mode(0);
    cuda_diffv2_combine_forward((dt_operand *)f_out, (const dt_operand *)f_attn, d_lam, N, H, d);
    cuda_diffv2_combine_backward(f_dattn, f_dl, d_dout, (const dt_operand *)f_attn, d_lam, N, H,
                                 d);
    set_mode(1);
    dt_operand *h_attn = cot_operand_dev(attn, na), *h_out = bf16_out(no);
    cuda_diffv2_combine_forward(h_out, h_attn, d_lam, N, H, d);
    cuda_diffv2_combine_backward(h_dattn, h_dl, d_dout, h_attn, d_lam, N, H, d);

    printf("-- diffv2 combine N=%d H=%d d=%d\n", N, H, d);
    check_rounded("diffv2 out", h_out, f_out, no);
    cot_check_bits_dev("diffv2 dattn (reads attn)", h_dattn, f_dattn, na);
    cot_check_bits_dev("diffv2 dlam_logit (reads attn)", h_dl, f_dl, nl);

    void *dev[] = {d_lam, d_dout, f_attn, f_out, f_dattn, f_dl, h_dattn, h_dl, h_attn, h_out};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(attn), free(lam), free(dout);
}

/* ---- the tiled attention kernels (cuda_attention_*, cuda_diffattn_*: the fp32 mode's and the
 * bf16 mode's fallback; the fused ones have no fp32 twin: test_cuda_flash). q, k, v are operands,
 * rounded, in each mode's format ---- */

static void test_attention(void **state) {
    (void)state;
    const int B = 2, T = 45, Hq = 4, Hkv = 2, d = 24;
    const size_t nq = (size_t)B * T * Hq * d, nk = (size_t)B * T * Hkv * d;
    const size_t nl = (size_t)B * Hq * T;
    float *q = host_rounded(nq, 40, -1.5f, 1.5f), *k = host_rounded(nk, 41, -1.5f, 1.5f);
    float *v = host_rounded(nk, 42, -1.0f, 1.0f), *dout = malloc(nq * sizeof(float));
    cut_fill(dout, nq, 43, -1.0f, 1.0f);
    float *f_q = cot_dev(q, nq), *f_k = cot_dev(k, nk), *f_v = cot_dev(v, nk);
    float *d_dout = cot_dev(dout, nq), *f_out = cot_dev_nan(nq), *f_lse = cot_dev_nan(nl);
    float *h_lse = cot_dev_nan(nl), *f_dv = cot_dev_nan(nk);
    float *grads[2][2]; /* [mode][dq, dk]: fp32 */
    for (int m = 0; m < 2; m++) grads[m][0] = cot_dev_nan(nq), grads[m][1] = cot_dev_nan(nk);

    set_mode(0);
    const dt_operand *fq = (const dt_operand *)f_q, *fk = (const dt_operand *)f_k;
    const dt_operand *fv = (const dt_operand *)f_v;
    cuda_attention_forward((dt_operand *)f_out, f_lse, fq, fk, fv, B, T, Hq, Hkv, d, d);
    /* the backward reads out: both modes get the forward's out rounded to bf16 */
    float *out_r = cut_to_host(f_out, nq);
    for (size_t i = 0; i < nq; i++) out_r[i] = cut_bf16_round(out_r[i]);
    float *f_out_r = cot_dev(out_r, nq);
    cuda_attention_backward(grads[0][0], grads[0][1], (dt_operand *)f_dv, d_dout, fq, fk, fv,
                            (const dt_operand *)f_out_r, f_lse, B, T, Hq, Hkv, d, d);
    set_mode(1);
    dt_operand *h_q = cot_operand_dev(q, nq), *h_k = cot_operand_dev(k, nk);
    dt_operand *h_v = cot_operand_dev(v, nk), *h_dv = bf16_out(nk);
    dt_operand *h_out = bf16_out(nq), *h_out_r = cot_operand_dev(out_r, nq);
    cuda_attention_forward(h_out, h_lse, h_q, h_k, h_v, B, T, Hq, Hkv, d, d);
    cuda_attention_backward(grads[1][0], grads[1][1], h_dv, d_dout, h_q, h_k, h_v, h_out_r, f_lse,
                            B, T, Hq, Hkv, d, d);

    printf("-- attention (tiled) B=%d T=%d Hq=%d Hkv=%d d=%d\n", B, T, Hq, Hkv, d);
    check_rounded("attention out (reads q, k, v)", h_out, f_out, nq);
    cot_check_bits_dev("attention lse (fp32)", h_lse, f_lse, nl);
    cot_check_bits_dev("attention dq (reads q k v out)", grads[1][0], grads[0][0], nq);
    cot_check_bits_dev("attention dk (reads q k v out)", grads[1][1], grads[0][1], nk);
    check_rounded("attention dv (reads q k v out)", h_dv, f_dv, nk);

    void *dev[] = {f_q, f_k, f_v, d_dout, f_out, f_lse, h_lse, f_out_r, f_dv,
                   h_q, h_k, h_v, h_out, h_out_r, h_dv};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < 2; i++) cuda_free(grads[m][i]);
    free(q), free(k), free(v), free(dout), free(out_r);
}

static void diffattn_case(int subln) {
    const int B = 2, T = 37, H = 2, Hkv = 1, d = 16, d2 = 2 * d;
    const size_t nq = (size_t)B * T * 2 * H * d, nk = (size_t)B * T * 2 * Hkv * d;
    const size_t nv = (size_t)B * T * Hkv * d2, no = (size_t)B * T * H * d2;
    const size_t nl = (size_t)B * 2 * H * T, nr = (size_t)B * T * H;
    float *q = host_rounded(nq, 50, -1.5f, 1.5f), *k = host_rounded(nk, 51, -1.5f, 1.5f);
    float *v = host_rounded(nv, 52, -1.0f, 1.0f), *dout = malloc(no * sizeof(float));
    float gamma[32], dgamma0[32], lam = 0.4f, dlam0 = 0.75f;
    cut_fill(dout, no, 53, -1.0f, 1.0f);
    cut_fill(gamma, (size_t)d2, 54, 0.5f, 1.5f);
    cut_fill(dgamma0, (size_t)d2, 55, -1.0f, 1.0f); /* nonzero: dgamma accumulates */
    float *f_q = cot_dev(q, nq), *f_k = cot_dev(k, nk), *f_v = cot_dev(v, nv);
    float *d_lam = cot_dev(&lam, 1), *d_gamma = subln ? cot_dev(gamma, d2) : NULL;
    float *d_dout = cot_dev(dout, no), *f_out = cot_dev_nan(no);
    float *fp[2][4]; /* [mode][o1, o2, lse, rstd] */
    float *gr[2][4]; /* [mode][dq, dk, dgamma, dlambda]: fp32 */
    for (int m = 0; m < 2; m++) {
        fp[m][0] = cot_dev_nan(no), fp[m][1] = cot_dev_nan(no), fp[m][2] = cot_dev_nan(nl),
        fp[m][3] = cot_dev_nan(nr);
        gr[m][0] = cot_dev_nan(nq), gr[m][1] = cot_dev_nan(nk);
        gr[m][2] = cot_dev(dgamma0, d2), gr[m][3] = cot_dev(&dlam0, 1);
    }
    float *f_dv = cot_dev_nan(nv); /* dv, an operand: fp32 mode's */

    set_mode(0);
    const dt_operand *fq = (const dt_operand *)f_q, *fk = (const dt_operand *)f_k;
    const dt_operand *fv = (const dt_operand *)f_v;
    cuda_diffattn_forward((dt_operand *)f_out, fp[0][0], fp[0][1], fp[0][2], fp[0][3], fq, fk, fv,
                          d_lam, d_gamma, 0.2f, 1e-5f, B, T, H, Hkv, d);
    cuda_diffattn_backward(gr[0][0], gr[0][1], (dt_operand *)f_dv, gr[0][2], gr[0][3], d_dout,
                           fq, fk, fv, fp[0][0], fp[0][1], fp[0][2], fp[0][3], d_lam, d_gamma,
                           0.2f, B, T, H, Hkv, d);
    set_mode(1);
    dt_operand *h_q = cot_operand_dev(q, nq), *h_k = cot_operand_dev(k, nk);
    dt_operand *h_v = cot_operand_dev(v, nv), *h_out = bf16_out(no), *h_dv = bf16_out(nv);
    cuda_diffattn_forward(h_out, fp[1][0], fp[1][1], fp[1][2], fp[1][3], h_q, h_k, h_v, d_lam,
                          d_gamma, 0.2f, 1e-5f, B, T, H, Hkv, d);
    cuda_diffattn_backward(gr[1][0], gr[1][1], h_dv, gr[1][2], gr[1][3], d_dout, h_q, h_k, h_v,
                           fp[1][0], fp[1][1], fp[1][2], fp[1][3], d_lam, d_gamma, 0.2f, B, T, H,
                           Hkv, d);

    printf("-- diffattn (tiled) B=%d T=%d H=%d Hkv=%d d=%d subln=%d\n", B, T, H, Hkv, d, subln);
    check_rounded("diffattn out (reads q, k, v)", h_out, f_out, no);
    cot_check_bits_dev("diffattn o1 (fp32)", fp[1][0], fp[0][0], no);
    cot_check_bits_dev("diffattn o2 (fp32)", fp[1][1], fp[0][1], no);
    cot_check_bits_dev("diffattn lse (fp32)", fp[1][2], fp[0][2], nl);
    if (subln) cot_check_bits_dev("diffattn rstd (fp32)", fp[1][3], fp[0][3], nr);
    cot_check_bits_dev("diffattn dq (reads q, k, v)", gr[1][0], gr[0][0], nq);
    cot_check_bits_dev("diffattn dk (reads q, k, v)", gr[1][1], gr[0][1], nk);
    check_rounded("diffattn dv (reads q, k, v)", h_dv, f_dv, nv);
    cot_check_bits_dev("diffattn dgamma", gr[1][2], gr[0][2], d2);
    cot_check_bits_dev("diffattn dlambda", gr[1][3], gr[0][3], 1);

    void *dev[] = {f_q, f_k, f_v, d_lam, d_gamma, d_dout, f_out, f_dv, h_q, h_k, h_v, h_out,
                   h_dv};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < 4; i++) cuda_free(fp[m][i]), cuda_free(gr[m][i]);
    free(q), free(k), free(v), free(dout);
}

static void test_diffattn(void **state) {
    (void)state;
    diffattn_case(1);
    diffattn_case(0);
}

/* xent_backward writes dlogits as operands: in place over the logits with ldd = 2V in bf16 mode
 * (each row's gradients in the front half of its own logits; the back half keeps the logits'
 * bytes), and out of place into rows ldd = V + 3 apart (bf16 NaN between the rows survives); both
 * the rounding of fp32 mode's in-place gradients. V = 257 and 5001 take the scalar path, 4100 and
 * 50260 the float4 one; V > 2048 makes one thread store over logits a later thread loads, so a
 * store before the whole tile is loaded fails here (the emulator runs lanes in order). */
static void xent_backward_case(int N, int V) {
    const size_t NV = (size_t)N * V, bytes = NV * sizeof(float);
    printf("-- xent_backward N=%d V=%d\n", N, V);
    float *x = malloc(bytes), *lse = malloc(N * sizeof(float));
    int32_t *t = malloc(N * sizeof(int32_t));
    cut_fill(x, NV, 120 + (unsigned)V, -4.0f, 4.0f);
    for (int n = 0; n < N; n++) {
        t[n] = n % 4 == 1 ? -1 : n % 4 == 2 ? V : (int32_t)((n * 7919u) % (unsigned)V);
        lse[n] = 2.0f + 0.25f * (float)n; /* any lse: the ops compared read the same one */
    }
    float *d_lse = cot_dev(lse, N);
    int32_t *d_t = cot_dev_i32(t, N);
    const int32_t one = 1;
    int32_t *d_one = cot_dev_i32(&one, 1);
    set_mode(0);
    float *f_dl = cot_dev(x, NV);
    cuda_xent_backward((dt_operand *)f_dl, V, f_dl, d_lse, d_t, 0.5f, d_one, N, V);
    set_mode(1);
    float *h_x = cot_dev(x, NV); /* in place: row n's 2V bf16 bytes over its own 4V */
    cuda_xent_backward((dt_operand *)h_x, 2 * V, h_x, d_lse, d_t, 0.5f, d_one, N, V);
    unsigned char *got = malloc(bytes);
    float *want = cut_to_host(f_dl, NV);
    cuda_copy_to_host(got, h_x, bytes);
    for (int n = 0; n < N; n++) {
        const unsigned char *row = got + (size_t)n * V * sizeof(float);
        for (int i = 0; i < V; i++) {
            uint16_t b;
            memcpy(&b, row + 2 * (size_t)i, sizeof b);
            if (b != cut_bf16_bits(want[(size_t)n * V + i]))
                fail_msg("xent_backward in place: row %d element %d is bf16 0x%04x, fp32 mode "
                         "wrote %.9g", n, i, (unsigned)b, (double)want[(size_t)n * V + i]);
        }
        const unsigned char *orig = (const unsigned char *)(x + (size_t)n * V);
        if (memcmp(row + 2 * (size_t)V, orig + 2 * (size_t)V, 2 * (size_t)V) != 0)
            fail_msg("xent_backward in place: row %d's back half is not its logits' bytes", n);
    }
    printf("%-36s n=%-7zu bf16 = rounded fp32, back halves intact\n", "xent_backward in place",
           NV);
    /* out of place, rows ldd = V + 3 apart: the gaps (NaN) survive; a dense copy to check */
    const int ldd = V + 3;
    float *d_x = cot_dev(x, NV);
    dt_operand *h_wide = bf16_out((size_t)N * ldd);
    cuda_xent_backward(h_wide, ldd, d_x, d_lse, d_t, 0.5f, d_one, N, V);
    uint16_t *wide = malloc((size_t)N * ldd * sizeof(uint16_t));
    cuda_copy_to_host(wide, h_wide, (size_t)N * ldd * sizeof(uint16_t));
    for (int n = 0; n < N; n++)
        for (int i = 0; i < ldd; i++) {
            const uint16_t b = wide[(size_t)n * ldd + i];
            if (i < V ? b != cut_bf16_bits(want[(size_t)n * V + i]) : b != 0x7fc0u)
                fail_msg("xent_backward ldd %d: row %d element %d is bf16 0x%04x", ldd, n, i,
                         (unsigned)b);
        }
    printf("%-36s n=%-7zu bf16 = rounded fp32, gaps intact\n", "xent_backward ldd V + 3", NV);
    void *dev[] = {d_lse, d_t, d_one, f_dl, h_x, d_x, h_wide};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(x), free(lse), free(t), free(got), free(want), free(wide);
}

static void test_xent_backward(void **state) {
    (void)state;
    xent_backward_case(5, 257);
    xent_backward_case(4, 4100);
    xent_backward_case(4, 5001);
    xent_backward_case(2, 50260);
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),         cmocka_unit_test(test_rmsnorm_backward),
        cmocka_unit_test(test_swiglu),          cmocka_unit_test(test_rope),
        cmocka_unit_test(test_matmul_operand),  cmocka_unit_test(test_head_scale),
        cmocka_unit_test(test_diffv2),          cmocka_unit_test(test_attention),
        cmocka_unit_test(test_diffattn),        cmocka_unit_test(test_matmul_backward_operand),
        cmocka_unit_test(test_xent_backward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
