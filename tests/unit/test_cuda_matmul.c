/* The CUDA matrix products (model/cuda/matmul.cu: cuBLAS) against the CPU oracle, forward and
 * backward, with and without accumulation, under both precisions:
 *   - fp32 products: the CPU's fp32 products on the same inputs; only the summation order
 *     differs (a few ulps of the sums);
 *   - bf16 products: the CPU's fp32 products on the inputs rounded to bf16 here (to nearest even):
 *     the activation input inp is a dt_operand, which in that mode the test hands over in bf16
 *     (2 bytes an element: read as 4, every product would be wrong) and the GPU multiplies as
 *     it is; w and dout are fp32, which the GPU rounds to bf16; it sums the exact products in
 *     fp32, so again only the order differs. The same run checks that the rounding happened
 *     (the results move away from the unrounded product by far more than the tolerance) and
 *     that operands that are not 16-byte aligned (the conversion's scalar path; inp at an odd
 *     bf16 offset) give the same answer.
 * matmul_forward_operand (the product stored as an operand: bf16 in bf16 mode, written so by
 * cuBLAS) is checked against the same oracle, with its own rounding (2^-8 relative) added in
 * bf16 mode; test_cuda_operand checks it bit for bit against matmul_forward.
 * Shapes: 1 x 1 x 1, odd sizes, and a few hundred rows.
 * The prepared bf16 copies of weight matrices (weight_copies.cu, dt_backend.weights_prepare):
 * each copy holds the rounding of its matrix (the tails past a multiple of 8 and matrices at odd
 * float offsets too, over more matrices than one copy kernel takes), the products that read them
 * give the bits of those that round their weights themselves, and every backend op that writes
 * into the matrices drops them, so a product never reads values older than its weight's; a
 * prepare of the same list while they stand copies nothing, and one after a drop, or of another
 * list, copies again. Skipped (77) without a device. */
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

/* sums of up to ~100 products of values in [-1, 1): fp32 order effects stay below 1e-5 */
#define MM_ATOL 1e-5
#define MM_RTOL 1e-5


static float *rounded(const float *x, size_t n, int bf16) {
    float *r = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) r[i] = bf16 ? cut_bf16_round(x[i]) : x[i];
    return r;
}

/* Largest |a - b| over n host values. */
static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

/* One case: out = inp w^T (accumulating onto `acc` when given), dinp = dout w (also accumulating
 * in a second call), dw += dout^T inp. `shift` offsets every device operand by that many
 * elements (1: not 16-byte aligned). */
static void matmul_case(int N, int I, int O, int bf16, int shift) {
    printf("-- matmul N=%d I=%d O=%d, %s products, operands shifted by %d floats\n", N, I, O,
           bf16 ? "bf16" : "fp32", shift);
    const size_t ni = (size_t)N * I, no = (size_t)N * O, nw = (size_t)O * I;
    float *inp = malloc(ni * sizeof(float)), *w = malloc(nw * sizeof(float));
    float *dout = malloc(no * sizeof(float)), *base = malloc(no * sizeof(float));
    float *dw0 = malloc(nw * sizeof(float)), *dinp0 = malloc(ni * sizeof(float));
    cut_fill(inp, ni, 11 + (unsigned)N, -1.0f, 1.0f);
    cut_fill(w, nw, 12 + (unsigned)O, -1.0f, 1.0f);
    cut_fill(dout, no, 13 + (unsigned)I, -1.0f, 1.0f);
    cut_fill(base, no, 14, -1.0f, 1.0f);
    cut_fill(dw0, nw, 15, -1.0f, 1.0f);
    cut_fill(dinp0, ni, 16, -1.0f, 1.0f);

    /* the CPU oracle on the operands as the GPU multiplies them */
    float *ri = rounded(inp, ni, bf16), *rw = rounded(w, nw, bf16), *rd = rounded(dout, no, bf16);
    float *out = cot_nan(no), *out_acc = malloc(no * sizeof(float));
    float *dinp = cot_nan(ni), *dinp_acc = malloc(ni * sizeof(float));
    float *dw = malloc(nw * sizeof(float));
    memcpy(out_acc, base, no * sizeof(float));
    memcpy(dinp_acc, dinp0, ni * sizeof(float));
    memcpy(dw, dw0, nw * sizeof(float));
    cpu_matmul_forward(out, ri, rw, N, I, O, 0);
    cpu_matmul_forward(out_acc, ri, rw, N, I, O, 1);
    cpu_matmul_backward(dinp, dw, rd, ri, rw, N, I, O, 0);
    cpu_matmul_backward(dinp_acc, NULL, rd, ri, rw, N, I, O, 1);

    /* device operands at `shift` elements into their buffers; inp in the operand format */
    const size_t eb = cuda_operand_bytes();
    assert_int_equal(eb, bf16 ? 2 : 4);
    dt_operand *b_inp = cot_operand_dev(NULL, ni + shift);
    float *b_w = cut_to_device(NULL, (nw + shift) * sizeof(float));
    float *b_dout = cut_to_device(NULL, (no + shift) * sizeof(float));
    dt_operand *d_inp = (dt_operand *)((char *)b_inp + shift * eb);
    float *d_w = b_w + shift, *d_dout = b_dout + shift;
    dt_operand *h_inp = cot_operand_dev(inp, ni); /* the format's bytes, via the device */
    cuda_copy(d_inp, h_inp, ni * eb);
    cuda_free(h_inp);
    cuda_copy_from_host(d_w, w, nw * sizeof(float));
    cuda_copy_from_host(d_dout, dout, no * sizeof(float));
    float *d_out = cot_dev_nan(no), *d_out_acc = cot_dev(base, no);
    float *d_dinp = cot_dev_nan(ni), *d_dinp_acc = cot_dev(dinp0, ni), *d_dw = cot_dev(dw0, nw);

    cuda_matmul_forward(d_out, d_inp, d_w, N, I, O, 0);
    cuda_matmul_forward(d_out_acc, d_inp, d_w, N, I, O, 1);
    cuda_matmul_backward(d_dinp, d_dw, d_dout, d_inp, d_w, N, I, O, 0);
    cuda_matmul_backward(d_dinp_acc, NULL, d_dout, d_inp, d_w, N, I, O, 1);
    cot_check("out", d_out, out, no, MM_ATOL, MM_RTOL);
    cot_check("out (accumulated)", d_out_acc, out_acc, no, MM_ATOL, MM_RTOL);
    cot_check("dinp", d_dinp, dinp, ni, MM_ATOL, MM_RTOL);
    cot_check("dinp (accumulated)", d_dinp_acc, dinp_acc, ni, MM_ATOL, MM_RTOL);
    cot_check("dw (accumulated)", d_dw, dw, nw, MM_ATOL, MM_RTOL);
    { /* the product as an operand */
        dt_operand *d_oout = cot_operand_nan(no);
        cuda_matmul_forward_operand(d_oout, d_inp, d_w, N, I, O);
        float *oout = cot_operand_to_host(d_oout, no);
        const double worst = cut_worst("out (operand)", oout, out, no, MM_ATOL,
                                       MM_RTOL + (bf16 ? 1.0 / 256.0 : 0.0));
        if (!(worst <= 1.0))
            fail_msg("out (operand): GPU and CPU differ by %.3g times the tolerance", worst);
        cuda_free(d_oout);
        free(oout);
    }

    if (bf16 && I >= 16) { /* the rounding happened: the unrounded product is far off */
        float *exact = cot_nan(no), *got = cut_to_host(d_out, no);
        cpu_matmul_forward(exact, inp, w, N, I, O, 0);
        const double moved = max_diff(got, exact, no);
        printf("%-28s bf16 moved the product by up to %.3g\n", "out vs unrounded", moved);
        if (!(moved > 100 * MM_ATOL)) fail_msg("bf16 products: the operands were not rounded");
        free(exact), free(got);
    }

    cuda_free(b_inp), cuda_free(b_w), cuda_free(b_dout), cuda_free(d_out), cuda_free(d_out_acc);
    cuda_free(d_dinp), cuda_free(d_dinp_acc), cuda_free(d_dw);
    free(inp), free(w), free(dout), free(base), free(dw0), free(dinp0), free(ri), free(rw), free(rd);
    free(out), free(out_acc), free(dinp), free(dinp_acc), free(dw);
}

/* ---- the prepared weight copies ---- */

#define WC_COUNT 40 /* matrices: more than one copy kernel's batch of 32 */

/* Whether each of the matrices has a prepared copy (1) or none (0), as `want` says. */
static void expect_copies(const char *after, float *const *w, const size_t *n, int count,
                          int want) {
    for (int i = 0; i < count; i++) {
        const int has = cuda_weights_bf16(w[i], n[i]) != NULL;
        if (has != want)
            fail_msg("after %s: matrix %d %s a prepared copy", after, i,
                     has ? "still has" : "lacks");
    }
}

/* The prepare after `after` copied `want` matrices (cuda_weights_copies_made was `before`). */
static void expect_made(const char *after, unsigned long long before, int want) {
    const unsigned long long got = cuda_weights_copies_made() - before;
    if (got != (unsigned long long)want)
        fail_msg("after %s: the prepare copied %llu matrices, not %d", after, got, want);
}

static void test_weight_copies(void **state) {
    (void)state;
    if (cuda_backend_init(0, 1) != 0) fail_msg("cuda_backend_init(0, 1) failed");
    /* WC_COUNT matrices O x I in one buffer, as the model's parameters lie: at float offsets
     * that are often not multiples of 4, with vectors between them */
    int O[WC_COUNT], I[WC_COUNT];
    size_t off[WC_COUNT], n[WC_COUNT], total = 0;
    for (int i = 0; i < WC_COUNT; i++) {
        O[i] = 1 + (i * 7) % 23;
        I[i] = 1 + (i * 5) % 37;
        if (i == 3) O[i] = 300, I[i] = 96; /* several copy blocks */
        n[i] = (size_t)O[i] * I[i];
        off[i] = total + (size_t)(i % 5); /* a vector of i % 5 floats before it */
        total = off[i] + n[i];
    }
    float *host = malloc(total * sizeof(float));
    cut_fill(host, total, 77, -2.0f, 2.0f);
    float *params = cot_dev(host, total), *w[WC_COUNT];
    const float *cw[WC_COUNT];
    for (int i = 0; i < WC_COUNT; i++) cw[i] = w[i] = params + off[i];

    /* each copy is the rounding of its matrix, bit for bit */
    cuda_weights_prepare(cw, n, WC_COUNT);
    expect_copies("prepare", w, n, WC_COUNT, 1);
    for (int i = 0; i < WC_COUNT; i++) {
        uint16_t *got = malloc(n[i] * sizeof(uint16_t));
        cuda_copy_to_host(got, cuda_weights_bf16(w[i], n[i]), n[i] * sizeof(uint16_t));
        for (size_t e = 0; e < n[i]; e++)
            if (got[e] != cut_bf16_bits(host[off[i] + e]))
                fail_msg("matrix %d element %zu: copy %04x, rounding %04x", i, e, got[e],
                         cut_bf16_bits(host[off[i] + e]));
        free(got);
    }
    /* a part of a matrix: served at a 16-byte offset into its copy, else rounded per product */
    if (!cuda_weights_bf16(w[3] + 8, n[3] - 8)) fail_msg("no copy 8 elements into matrix 3");
    if (cuda_weights_bf16(w[3] + 1, n[3] - 1)) fail_msg("a copy at a 2-byte offset was used");
    if (cuda_weights_bf16(w[3], n[3] + 1)) fail_msg("a copy was used past its matrix's end");
    if (cuda_weights_bf16(w[1] - 1, 1)) /* off[1] = n[0] + 1: a vector's float */
        fail_msg("a copy was used for a vector between matrices");

    /* products read the copies with the bits of per-product rounding: matrix 3, N = 33 */
    const int N = 33, Oi = O[3], Ii = I[3];
    float *x = malloc((size_t)N * Ii * sizeof(float)), *dy = malloc((size_t)N * Oi * sizeof(float));
    cut_fill(x, (size_t)N * Ii, 78, -1.0f, 1.0f);
    cut_fill(dy, (size_t)N * Oi, 79, -1.0f, 1.0f);
    dt_operand *d_x = cot_operand_dev(x, (size_t)N * Ii);
    float *d_dy = cot_dev(dy, (size_t)N * Oi);
    float *out_c = cot_dev_nan((size_t)N * Oi), *dinp_c = cot_dev_nan((size_t)N * Ii);
    float *out_r = cot_dev_nan((size_t)N * Oi), *dinp_r = cot_dev_nan((size_t)N * Ii);
    cuda_matmul_forward(out_c, d_x, w[3], N, Ii, Oi, 0);
    cuda_matmul_backward(dinp_c, NULL, d_dy, d_x, w[3], N, Ii, Oi, 0);
    expect_copies("products", w, n, WC_COUNT, 1);
    cuda_weights_drop();
    expect_copies("drop", w, n, WC_COUNT, 0);
    cuda_matmul_forward(out_r, d_x, w[3], N, Ii, Oi, 0);
    cuda_matmul_backward(dinp_r, NULL, d_dy, d_x, w[3], N, Ii, Oi, 0);
    cot_check_bits_dev("out from the copy", out_c, out_r, (size_t)N * Oi);
    cot_check_bits_dev("dinp from the copy", dinp_c, dinp_r, (size_t)N * Ii);

    /* a prepare of the same matrices while the copies stand copies nothing; another list, or
     * the same after a drop, copies again */
    cuda_weights_prepare(cw, n, WC_COUNT);
    unsigned long long made = cuda_weights_copies_made();
    cuda_weights_prepare(cw, n, WC_COUNT);
    expect_made("a second prepare", made, 0);
    expect_copies("a second prepare", w, n, WC_COUNT, 1);
    cuda_weights_prepare(cw + 1, n + 1, WC_COUNT - 1);
    expect_made("a prepare of other matrices", made, WC_COUNT - 1);
    if (cuda_weights_bf16(w[0], n[0])) fail_msg("matrix 0 kept a copy outside the list");
    size_t n_short[WC_COUNT];
    memcpy(n_short, n, sizeof n_short);
    n_short[7]--; /* the same pointers, one matrix shorter */
    cuda_weights_prepare(cw, n_short, WC_COUNT);
    made = cuda_weights_copies_made();
    cuda_weights_prepare(cw, n, WC_COUNT);
    expect_made("a prepare with another length", made, WC_COUNT);

    /* a write into the matrices drops the copies: the next product reads the new weights, and
     * the next prepare copies them */
    cuda_weights_prepare(cw, n, WC_COUNT);
    float *neww = malloc(n[3] * sizeof(float)), *ref = cot_nan((size_t)N * Oi);
    cut_fill(neww, n[3], 80, -2.0f, 2.0f);
    cuda_copy_from_host(w[3], neww, n[3] * sizeof(float));
    expect_copies("copy_from_host", w, n, WC_COUNT, 0);
    cuda_matmul_forward(out_c, d_x, w[3], N, Ii, Oi, 0);
    float *rx = malloc((size_t)N * Ii * sizeof(float));
    for (size_t e = 0; e < (size_t)N * Ii; e++) rx[e] = cut_bf16_round(x[e]);
    for (size_t e = 0; e < n[3]; e++) neww[e] = cut_bf16_round(neww[e]);
    cpu_matmul_forward(ref, rx, neww, N, Ii, Oi, 0);
    cot_check("out after the weights changed", out_c, ref, (size_t)N * Oi, 4 * MM_ATOL, MM_RTOL);
    cuda_weights_prepare(cw, n, WC_COUNT);
    float *out_n = cot_dev_nan((size_t)N * Oi);
    cuda_matmul_forward(out_n, d_x, w[3], N, Ii, Oi, 0);
    cot_check_bits_dev("out from the new weights' copy", out_n, out_c, (size_t)N * Oi);
    cuda_free(out_n);

    /* every other writer drops them too, where it overlaps the matrices; a write elsewhere
     * keeps them */
    float *other = cot_dev(NULL, 64), *one = cot_dev(NULL, 1);
    const float h_one = 1.0f;
    cuda_copy_from_host(one, &h_one, sizeof h_one);
    float *mv = cot_dev(NULL, n[5]), *vv = cot_dev(NULL, n[5]), *g = cot_dev(NULL, n[5]);
    for (int op = 0; op < 7; op++) {
        static const char *names[] = {"memset_zero", "copy", "add", "scale", "adamw_update",
                                      "copy_from_host (last element)", "a write elsewhere"};
        cuda_weights_prepare(cw, n, WC_COUNT);
        switch (op) {
        case 0: cuda_memset_zero(w[5], 4); break;
        case 1: cuda_copy(w[5], other, 4); break;
        case 2: cuda_add(w[5], w[5], w[5], 1); break;
        case 3: cuda_scale(w[5], 1.0f, 1); break;
        case 4:
            cuda_adamw_update(w[5], mv, vv, g, n[5], 0.0f, 0.9f, 0.95f, 1e-8f, 0.0f, one, 1);
            break;
        case 5: cuda_copy_from_host(w[WC_COUNT - 1] + n[WC_COUNT - 1] - 1, &h_one, 4); break;
        default:
            cuda_memset_zero(other, 64 * sizeof(float));
            cuda_scale(other, 2.0f, 64);
            cuda_copy(other, one, sizeof(float));
            break;
        }
        expect_copies(names[op], w, n, WC_COUNT, op == 6);
        made = cuda_weights_copies_made();
        cuda_weights_prepare(cw, n, WC_COUNT);
        expect_made(names[op], made, op == 6 ? 0 : WC_COUNT);
    }
    cuda_weights_prepare(cw, n, WC_COUNT);
    cuda_free(other); /* freeing other memory keeps them; freeing the parameters does not */
    expect_copies("free elsewhere", w, n, WC_COUNT, 1);
    cuda_free(params);
    expect_copies("free", w, n, WC_COUNT, 0);

    /* fp32 products make none */
    params = cot_dev(host, total);
    for (int i = 0; i < WC_COUNT; i++) cw[i] = w[i] = params + off[i];
    if (cuda_backend_init(0, 0) != 0) fail_msg("cuda_backend_init(0, 0) failed");
    cuda_weights_prepare(cw, n, WC_COUNT);
    expect_copies("prepare (fp32 products)", w, n, WC_COUNT, 0);

    void *dev[] = {params, d_x, d_dy, out_c, dinp_c, out_r, dinp_r, one, mv, vv, g};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(host), free(x), free(dy), free(neww), free(ref), free(rx);
}

static void run_cases(int bf16) {
    if (cuda_backend_init(0, bf16) != 0) fail_msg("cuda_backend_init(0, %d) failed", bf16);
    matmul_case(1, 1, 1, bf16, 0);
    matmul_case(7, 5, 3, bf16, 0);
    matmul_case(33, 64, 17, bf16, 0);
    matmul_case(33, 64, 17, bf16, 1);
    matmul_case(257, 96, 80, bf16, 0);
    matmul_case(130, 35, 67, bf16, 3);
}

static void test_matmul_fp32(void **state) {
    (void)state;
    run_cases(0);
}

static void test_matmul_bf16(void **state) {
    (void)state;
    run_cases(1);
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_fp32),
        cmocka_unit_test(test_matmul_bf16),
        cmocka_unit_test(test_weight_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
