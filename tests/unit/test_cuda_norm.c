/* The CUDA token and norm ops against the CPU oracle on identical inputs, forward and
 * backward: rmsnorm (with and without weight), rope (odd head width, pos0 of a 64K context,
 * in place; its float4 kernel against its scalar one, bit for bit), swiglu (saturated sigmoid,
 * in place; g and u as the halves of strided rows), embedding (vocabulary slices, repeated tokens, int32 extremes, a row with more
 * positions than the backward's list holds) and head_scale (in place). Accumulating outputs start nonzero, overwritten ones start NaN; reruns must give the
 * same bits. The backend is in fp32 mode, so the dt_operand buffers are fp32 (test_cuda_operand
 * checks the bf16 mode). Skipped (77) without a device. */
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

/* ---- rmsnorm ---- */

/* Both backends reduce rows in double and round rstd to float once, then form x * r * w in
 * float in the same order: the results are bit-identical except where the two double sums
 * (different order, ~1e-16 apart) round rstd differently, a 1-ulp (6e-8 relative) change.
 * 1e-6 relative (plus 1e-7 absolute for outputs near 0) is a 10x margin; a wrong mean (C vs
 * C - 1) or a missing eps errs by >1e-3. The backward is double arithmetic rounded once per
 * element, with the same 1-ulp caveat; dinp is O(10) for rows of rms 0.1, hence 1e-6 absolute. */
#define RMS_FWD_ATOL 1e-7
#define RMS_FWD_RTOL 1e-6
#define RMS_BWD_ATOL 1e-6
#define RMS_BWD_RTOL 1e-6

/* Row n gets scale 10^(n mod 3 - 1): rows of rms 0.1, 1 and 10. */
static void fill_rows(float *x, int N, int C, unsigned seed) {
    cut_fill(x, (size_t)N * C, seed, -1.7f, 1.7f);
    for (int n = 0; n < N; n++) {
        float s = (float)pow(10.0, n % 3 - 1);
        for (int i = 0; i < C; i++) x[(size_t)n * C + i] *= s;
    }
}

static void rmsnorm_case(int N, int C, int with_weight) {
    size_t NC = (size_t)N * C;
    printf("-- rmsnorm N=%d C=%d weight=%d\n", N, C, with_weight);
    float *x = malloc(NC * sizeof(float)), *w = malloc(C * sizeof(float));
    float *dout = malloc(NC * sizeof(float)), *dinp = malloc(NC * sizeof(float));
    float *dw = malloc(C * sizeof(float));
    float *out = cot_nan(NC), *rstd = cot_nan(N);
    fill_rows(x, N, C, 100 + N);
    cut_fill(w, C, 101, 0.5f, 1.5f);
    cut_fill(dout, NC, 102 + C, -1.0f, 1.0f);
    cut_fill(dinp, NC, 103, -0.5f, 0.5f); /* accumulates */
    cut_fill(dw, C, 104, -0.5f, 0.5f);    /* accumulates */
    const float *wp = with_weight ? w : NULL;

    float *d_x = cot_dev(x, NC), *d_w = cot_dev(w, C), *d_dout = cot_dev(dout, NC);
    float *d_out = cot_dev_nan(NC), *d_rstd = cot_dev_nan(N);
    float *d_dinp = cot_dev(dinp, NC), *d_dw = cot_dev(dw, C);
    float *d_dinp2 = cot_dev(dinp, NC), *d_dw2 = cot_dev(dw, C);

    cpu_rmsnorm_forward(out, rstd, x, wp, N, C, 1e-5f);
    cuda_rmsnorm_forward((dt_operand *)d_out, d_rstd, d_x, with_weight ? d_w : NULL, N, C, 1e-5f);
    cot_check("rmsnorm out", d_out, out, NC, RMS_FWD_ATOL, RMS_FWD_RTOL);
    cot_check("rmsnorm rstd", d_rstd, rstd, N, 0.0, RMS_FWD_RTOL);

    /* the residual add fused with the norm: y = x + dout (y aliasing the first input), against
     * the CPU's fused op, and the same bits as this backend's add then norm */
    float *y = malloc(NC * sizeof(float)), *fout = cot_nan(NC), *frstd = cot_nan(N);
    float *d_y = cot_dev(x, NC), *d_fout = cot_dev_nan(NC), *d_frstd = cot_dev_nan(N);
    float *d_y2 = cot_dev_nan(NC), *d_out2 = cot_dev_nan(NC), *d_rstd2 = cot_dev_nan(N);
    cpu_residual_rmsnorm_forward(y, fout, frstd, x, dout, wp, N, C, 1e-5f);
    cuda_residual_rmsnorm_forward(d_y, (dt_operand *)d_fout, d_frstd, d_y, d_dout,
                                  with_weight ? d_w : NULL, N, C, 1e-5f);
    cot_check("residual rmsnorm y", d_y, y, NC, 1e-30, 0.0); /* one float add: exact */
    cot_check("residual rmsnorm out", d_fout, fout, NC, RMS_FWD_ATOL, RMS_FWD_RTOL);
    cot_check("residual rmsnorm rstd", d_frstd, frstd, N, 0.0, RMS_FWD_RTOL);
    cuda_add(d_y2, d_x, d_dout, NC);
    cuda_rmsnorm_forward((dt_operand *)d_out2, d_rstd2, d_y2, with_weight ? d_w : NULL, N, C,
                         1e-5f);
    cot_check_bits_dev("residual rmsnorm y = add", d_y, d_y2, NC);
    cot_check_bits_dev("residual rmsnorm out = add + norm", d_fout, d_out2, NC);
    cot_check_bits_dev("residual rmsnorm rstd = add + norm", d_frstd, d_rstd2, N);
    cuda_free(d_y), cuda_free(d_fout), cuda_free(d_frstd), cuda_free(d_y2), cuda_free(d_out2);
    cuda_free(d_rstd2);
    free(y), free(fout), free(frstd);

    /* the backward of both sides gets the CPU's rstd, so only the op itself is compared */
    cuda_copy_from_host(d_rstd, rstd, N * sizeof(float));
    cpu_rmsnorm_backward(dinp, NULL, with_weight ? dw : NULL, dout, x, wp, rstd, N, C);
    cuda_rmsnorm_backward(d_dinp, NULL, with_weight ? d_dw : NULL, d_dout, d_x,
                          with_weight ? d_w : NULL, d_rstd, N, C);
    cot_check("rmsnorm dinp (+=)", d_dinp, dinp, NC, RMS_BWD_ATOL, RMS_BWD_RTOL);
    /* dweight: a sum over N rows in double on both sides, rounded once */
    cot_check("rmsnorm dweight (+=)", d_dw, dw, C, RMS_BWD_ATOL, RMS_BWD_RTOL);

    /* determinism: the same op on the same inputs gives the same bits, also when it writes the
     * operand copy of dinp, which (an fp32 operand) holds dinp's bits after the call */
    float *d_copy = cot_dev_nan(NC);
    cuda_rmsnorm_backward(d_dinp2, (dt_operand *)d_copy, with_weight ? d_dw2 : NULL, d_dout, d_x,
                          with_weight ? d_w : NULL, d_rstd, N, C);
    cot_check_bits_dev("rmsnorm dinp rerun (+ copy)", d_dinp2, d_dinp, NC);
    cot_check_bits_dev("rmsnorm dweight rerun", d_dw2, d_dw, C);
    cot_check_bits_dev("rmsnorm dinp copy (fp32 operand)", d_copy, d_dinp, NC);
    cuda_free(d_copy);

    cuda_free(d_x), cuda_free(d_w), cuda_free(d_dout), cuda_free(d_out), cuda_free(d_rstd);
    cuda_free(d_dinp), cuda_free(d_dw), cuda_free(d_dinp2), cuda_free(d_dw2);
    free(x), free(w), free(dout), free(dinp), free(dw), free(out), free(rstd);
}

static void test_rmsnorm(void **state) {
    (void)state;
    /* dweight's sums: up to C = 6112 (48 KiB of shared doubles in all) in the dinp kernel, whose
     * 1024 blocks take 4 or 5 of N = 5000 rows each; wider rows (6200, 6113) in a pass of their
     * own. The float4 kernels take C = 4k up to 16384 (1536 and 3072: the 830M and 3B models,
     * 4 float4s a thread exactly; 1000: 64 threads, the last 6 with 3); C = 16388 and the odd
     * widths take the scalar ones. */
    const int shapes[][2] = {{1, 1},     {3, 7},     {5, 33},   {17, 1000},  {300, 257},
                             {5000, 96}, {4, 6112},  {9, 6200}, {3, 6113},   {40, 1536},
                             {6, 3072},  {2, 16384}, {2, 16388}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ww = 0; ww <= 1; ww++) rmsnorm_case(shapes[s][0], shapes[s][1], ww);
}

/* ---- rope ---- */

/* cos and sin are computed in double on both sides and rounded to float; CUDA's double
 * pow/sincos are within 2 ulp of glibc's, so a rounded cos/sin may differ by 1 float ulp (rare),
 * and the two-product sums x0 c - x1 s may be fused differently (the CPU's vector paths use
 * FMA, its SSE path does not): a few ulps of max(|x0|, |x1|) <= 2. 1e-6 absolute + 1e-6
 * relative covers that; an angle off by one position (pos0 handling) errs by >1e-3 even at
 * the lowest frequency of d = 64. */
#define ROPE_ATOL 1e-6
#define ROPE_RTOL 1e-6

static void rope_case(int B, int T, int H, int d, float theta, int pos0) {
    size_t n = (size_t)B * T * H * d;
    printf("-- rope B=%d T=%d H=%d d=%d theta=%g pos0=%d\n", B, T, H, d, theta, pos0);
    float *x = malloc(n * sizeof(float)), *out = cot_nan(n), *back = cot_nan(n);
    cut_fill(x, n, 200 + d, -2.0f, 2.0f);
    float *d_x = cot_dev(x, n), *d_out = cot_dev_nan(n), *d_back = cot_dev_nan(n);

    cpu_rope_forward(out, x, B, T, H, d, theta, pos0);
    cuda_rope_forward((dt_operand *)d_out, (const dt_operand *)d_x, B, T, H, d, theta, pos0);
    cot_check("rope forward", d_out, out, n, ROPE_ATOL, ROPE_RTOL);

    cpu_rope_backward(back, x, B, T, H, d, theta, pos0);
    cuda_rope_backward((dt_operand *)d_back, d_x, B, T, H, d, theta, pos0); /* fp32 mode */
    cot_check("rope backward", d_back, back, n, ROPE_ATOL, ROPE_RTOL);

    /* d = 8k ran the float4 kernel on these aligned buffers: the scalar kernel, which buffers
     * one float off 16-byte alignment get, gives the same bits (other d run it both times) */
    float *d_xs = cot_dev_nan(n + 1), *d_outs = cot_dev_nan(n + 1), *d_backs = cot_dev_nan(n + 1);
    cuda_copy(d_xs + 1, d_x, n * sizeof(float));
    cuda_rope_forward((dt_operand *)(d_outs + 1), (const dt_operand *)(d_xs + 1), B, T, H, d, theta,
                      pos0);
    cot_check_bits_dev("rope forward, scalar kernel", d_outs + 1, d_out, n);
    cuda_rope_backward((dt_operand *)(d_backs + 1), d_xs + 1, B, T, H, d, theta, pos0);
    cot_check_bits_dev("rope backward, scalar kernel", d_backs + 1, d_back, n);

    /* in place (out == inp) gives the out-of-place bits */
    cuda_rope_forward((dt_operand *)d_x, (const dt_operand *)d_x, B, T, H, d, theta, pos0);
    cot_check_bits_dev("rope forward in place", d_x, d_out, n);
    cuda_free(d_xs), cuda_free(d_outs), cuda_free(d_backs);

    cuda_free(d_x), cuda_free(d_out), cuda_free(d_back);
    free(x), free(out), free(back);
}

static void test_rope(void **state) {
    (void)state;
    rope_case(1, 1, 1, 2, 10000.0f, 0);
    rope_case(2, 5, 3, 8, 10000.0f, 0);
    rope_case(1, 7, 2, 9, 10000.0f, 3); /* odd head width: the last channel is copied */
    rope_case(1, 3, 2, 1, 10000.0f, 5); /* d = 1: no pair at all */
    rope_case(2, 33, 4, 64, 10000.0f, 0);
    rope_case(1, 40, 3, 128, 640000.0f, 60000); /* positions of a 64K context */
    rope_case(3, 17, 5, 96, 10000.0f, 2);       /* the 830M model's d; chunks across rows */
    rope_case(1, 6, 2, 24, 10000.0f, 0);        /* d = 8k, not a power of two */
}

/* The backend keeps one cos/sin table (rope.cu) for one (theta, d), grown as later positions
 * are asked: generation's one position a step, a jump past what its workspace holds (after
 * test_rope's 64K positions of d = 128: new memory, whose old entries must be rebuilt), the
 * first positions again, another theta, another head width, and back; each call against the
 * CPU (a stale or unbuilt entry is off by far more than ROPE_ATOL, or NaN). */
static void test_rope_table_cache(void **state) {
    (void)state;
    rope_case(1, 4, 2, 128, 10000.0f, 0);
    for (int pos0 = 4; pos0 < 12; pos0++) rope_case(1, 1, 2, 128, 10000.0f, pos0);
    rope_case(1, 3, 2, 128, 10000.0f, 80000); /* 41 MB of table: past the workspace */
    rope_case(1, 8, 2, 128, 10000.0f, 0);     /* the first positions, from the grown table */
    rope_case(1, 5, 2, 128, 500000.0f, 7);    /* another theta */
    rope_case(1, 5, 2, 64, 500000.0f, 7);     /* another head width */
    rope_case(1, 5, 2, 128, 10000.0f, 500);   /* the first again */
}

/* ---- swiglu ---- */

/* CUDA's expf is within 2 ulp of glibc's, so sigmoid and every product may differ by a few
 * ulps: 1e-6 relative. dg contains 1 + x (1 - s), which cancels near x = -1.28: there its
 * error is a few ulps of 1 times |dh u s|, hence 1e-6 absolute. A wrong derivative errs by
 * O(0.1). */
#define SWIGLU_ATOL 1e-6
#define SWIGLU_RTOL 1e-6

/* A device copy of x (n) one float past a 16-byte boundary (free the result - 1): the ops then
 * take their element-by-element loops instead of the 8-wide ones. */
static float *dev_misaligned(const float *x, size_t n) {
    float *pad = malloc((n + 1) * sizeof(float));
    pad[0] = 0.0f;
    if (x) memcpy(pad + 1, x, n * sizeof(float));
    else for (size_t i = 1; i <= n; i++) pad[i] = NAN;
    float *d = cot_dev(pad, n + 1);
    free(pad);
    return d + 1;
}

static void test_swiglu(void **state) {
    (void)state;
    const size_t sizes[] = {1, 1000, 100003};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        printf("-- swiglu n=%zu\n", n);
        float *g = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float));
        float *dh = malloc(n * sizeof(float));
        float *h = cot_nan(n), *dg = cot_nan(n), *du = cot_nan(n);
        cut_fill(g, n, 300 + (unsigned)k, -12.0f, 12.0f); /* sigmoid from ~6e-6 to ~1 */
        cut_fill(u, n, 301, -2.0f, 2.0f);
        cut_fill(dh, n, 302, -1.0f, 1.0f);
        if (n >= 4) g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -1.2785f;
        float *d_g = cot_dev(g, n), *d_u = cot_dev(u, n), *d_dh = cot_dev(dh, n);
        float *d_h = cot_dev_nan(n), *d_dg = cot_dev_nan(n), *d_du = cot_dev_nan(n);

        cpu_swiglu_forward(h, g, u, 1, n, n);
        cuda_swiglu_forward((dt_operand *)d_h, (const dt_operand *)d_g, (const dt_operand *)d_u,
                            1, n, n);
        cot_check("swiglu h", d_h, h, n, SWIGLU_ATOL, SWIGLU_RTOL);

        cpu_swiglu_backward(dg, du, dh, g, u, 1, n, n);
        cuda_swiglu_backward((dt_operand *)d_dg, (dt_operand *)d_du, d_dh, (const dt_operand *)d_g,
                             (const dt_operand *)d_u, 1, n, n);
        cot_check("swiglu dg", d_dg, dg, n, SWIGLU_ATOL, SWIGLU_RTOL);
        cot_check("swiglu du", d_du, du, n, SWIGLU_ATOL, SWIGLU_RTOL);

        /* in place: dg over g, du over u (elementwise read-before-write) */
        cuda_swiglu_backward((dt_operand *)d_g, (dt_operand *)d_u, d_dh, (const dt_operand *)d_g,
                             (const dt_operand *)d_u, 1, n, n);
        cot_check_bits_dev("swiglu dg in place", d_g, d_dg, n);
        cot_check_bits_dev("swiglu du in place", d_u, d_du, n);

        /* off 16-byte alignment, element by element: the 8-wide loop's bits */
        float *m_g = dev_misaligned(g, n), *m_u = dev_misaligned(u, n);
        float *m_dh = dev_misaligned(dh, n), *m_h = dev_misaligned(NULL, n);
        float *m_dg = dev_misaligned(NULL, n), *m_du = dev_misaligned(NULL, n);
        cuda_swiglu_forward((dt_operand *)m_h, (const dt_operand *)m_g, (const dt_operand *)m_u,
                            1, n, n);
        cuda_swiglu_backward((dt_operand *)m_dg, (dt_operand *)m_du, m_dh,
                             (const dt_operand *)m_g, (const dt_operand *)m_u, 1, n, n);
        cot_check_bits_dev("swiglu h, misaligned", m_h, d_h, n);
        cot_check_bits_dev("swiglu dg, misaligned", m_dg, d_dg, n);
        cot_check_bits_dev("swiglu du, misaligned", m_du, d_du, n);
        float *m[] = {m_g, m_u, m_dh, m_h, m_dg, m_du};
        for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) cuda_free(m[i] - 1);

        cuda_free(d_g), cuda_free(d_u), cuda_free(d_dh), cuda_free(d_h), cuda_free(d_dg);
        cuda_free(d_du);
        free(g), free(u), free(dh), free(h), free(dg), free(du);
    }
}

/* The model's layout: g and u the two halves of each row of one (rows, 2 cols) product, or
 * rows ld > 2 cols apart (the gaps must stay untouched). Against the CPU on the same strided
 * inputs, and bit for bit against the dense op on the rows gathered: the strided walk computes
 * each element as the dense one does. vec8 where cols and ld are multiples of 8. */
static void swiglu_strided_case(size_t rows, size_t cols, size_t ld) {
    printf("-- swiglu strided rows=%zu cols=%zu ld=%zu\n", rows, cols, ld);
    const size_t n = rows * cols, span = rows * ld;
    float *gu = malloc(span * sizeof(float)), *dh = malloc(n * sizeof(float));
    float *g = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float));
    cut_fill(gu, span, 310, -12.0f, 12.0f);
    cut_fill(dh, n, 311, -1.0f, 1.0f);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            gu[r * ld + cols + c] *= 0.2f; /* up in (-2.4, 2.4) */
            g[r * cols + c] = gu[r * ld + c];
            u[r * cols + c] = gu[r * ld + cols + c];
        }
    float *h = cot_nan(n), *dgu = malloc(span * sizeof(float));
    memcpy(dgu, gu, span * sizeof(float)); /* the gaps keep gu's values */
    cpu_swiglu_forward(h, gu, gu + cols, rows, cols, ld);
    cpu_swiglu_backward(dgu, dgu + cols, dh, gu, gu + cols, rows, cols, ld);

    float *d_gu = cot_dev(gu, span), *d_dh = cot_dev(dh, n), *d_h = cot_dev_nan(n);
    float *d_dgu = cot_dev(gu, span); /* gaps as gu's; g and u overwritten in place */
    cuda_swiglu_forward((dt_operand *)d_h, (const dt_operand *)d_gu,
                        (const dt_operand *)(d_gu + cols), rows, cols, ld);
    cuda_swiglu_backward((dt_operand *)d_dgu, (dt_operand *)(d_dgu + cols), d_dh,
                         (const dt_operand *)d_dgu, (const dt_operand *)(d_dgu + cols), rows,
                         cols, ld);
    cot_check("swiglu strided h", d_h, h, n, SWIGLU_ATOL, SWIGLU_RTOL);
    cot_check("swiglu strided dg, du, gaps", d_dgu, dgu, span, SWIGLU_ATOL, SWIGLU_RTOL);
    float *got = cut_to_host(d_dgu, span);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 2 * cols; c < ld; c++)
            if (memcmp(&got[r * ld + c], &gu[r * ld + c], sizeof(float)) != 0)
                fail_msg("swiglu strided: the gap at row %zu, column %zu was written", r, c);

    float *d_g = cot_dev(g, n), *d_u = cot_dev(u, n), *e_h = cot_dev_nan(n);
    float *e_dg = cot_dev_nan(n), *e_du = cot_dev_nan(n);
    cuda_swiglu_forward((dt_operand *)e_h, (const dt_operand *)d_g, (const dt_operand *)d_u, 1, n,
                        n);
    cuda_swiglu_backward((dt_operand *)e_dg, (dt_operand *)e_du, d_dh, (const dt_operand *)d_g,
                         (const dt_operand *)d_u, 1, n, n);
    cot_check_bits_dev("swiglu strided h = dense", d_h, e_h, n);
    float *dg = cut_to_host(e_dg, n), *du = cut_to_host(e_du, n);
    for (size_t r = 0; r < rows; r++)
        if (memcmp(&got[r * ld], &dg[r * cols], cols * sizeof(float)) != 0 ||
            memcmp(&got[r * ld + cols], &du[r * cols], cols * sizeof(float)) != 0)
            fail_msg("swiglu strided: row %zu's dg or du differs from the dense op's", r);
    void *dev[] = {d_gu, d_dh, d_h, d_dgu, d_g, d_u, e_h, e_dg, e_du};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_free(dev[i]);
    free(gu), free(dh), free(g), free(u), free(h), free(dgu), free(got), free(dg), free(du);
}

static void test_swiglu_strided(void **state) {
    (void)state;
    swiglu_strided_case(37, 64, 128); /* the model's layout, 8 wide */
    swiglu_strided_case(5, 40, 88);   /* gaps of 8, 8 wide */
    swiglu_strided_case(7, 13, 26);   /* odd columns: one by one */
    swiglu_strided_case(3, 16, 35);   /* odd row stride: one by one */
}

/* ---- embedding ---- */

/* The forward copies rows and the backward adds each column's gradients in token order, as the
 * CPU does (model/cuda/embedding.cu): both are bit-identical to the CPU, so they are compared
 * bit for bit. */
static void embedding_case(int N, int D, int V, int v0, int nv, unsigned seed) {
    printf("-- embedding N=%d D=%d V=%d slice [%d, %d)\n", N, D, V, v0, v0 + nv);
    int32_t *tok = malloc((size_t)N * sizeof(int32_t));
    unsigned long long s = seed;
    for (int n = 0; n < N; n++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[n] = (int32_t)((s >> 33) % (unsigned long long)V);
    }
    /* extremes: ids far outside the slice must neither overflow nor hit a row */
    if (N > 3) tok[0] = INT32_MIN, tok[1] = INT32_MAX, tok[2] = 0, tok[3] = v0 + nv - 1;
    size_t ND = (size_t)N * D, VD = (size_t)nv * D;
    float *wte = malloc(VD * sizeof(float)), *dout = malloc(ND * sizeof(float));
    float *dwte = malloc(VD * sizeof(float)), *out = cot_nan(ND);
    cut_fill(wte, VD, seed + 1, -1.0f, 1.0f);
    cut_fill(dout, ND, seed + 2, -1.0f, 1.0f);
    cut_fill(dwte, VD, seed + 3, -0.5f, 0.5f); /* accumulates */
    int32_t *d_tok = cot_dev_i32(tok, N);
    float *d_wte = cot_dev(wte, VD), *d_dout = cot_dev(dout, ND), *d_out = cot_dev_nan(ND);
    float *d_dwte = cot_dev(dwte, VD), *d_dwte2 = cot_dev(dwte, VD);

    cpu_embedding_forward(out, tok, wte, N, D, v0, nv);
    cuda_embedding_forward(d_out, d_tok, d_wte, N, D, v0, nv);
    cot_check_bits("embedding forward", d_out, out, ND);

    cpu_embedding_backward(dwte, dout, tok, N, D, v0, nv);
    cuda_embedding_backward(d_dwte, d_dout, d_tok, N, D, v0, nv);
    cot_check_bits("embedding dwte (+=)", d_dwte, dwte, VD);
    cuda_embedding_backward(d_dwte2, d_dout, d_tok, N, D, v0, nv);
    cot_check_bits_dev("embedding dwte rerun", d_dwte2, d_dwte, VD);

    cuda_free(d_tok), cuda_free(d_wte), cuda_free(d_dout), cuda_free(d_out);
    cuda_free(d_dwte), cuda_free(d_dwte2);
    free(tok), free(wte), free(dout), free(dwte), free(out);
}

static void test_embedding(void **state) {
    (void)state;
    embedding_case(1, 1, 1, 0, 1, 400);
    embedding_case(5, 3, 7, 0, 7, 401);
    embedding_case(37, 33, 50, 0, 50, 402);
    embedding_case(37, 33, 50, 20, 15, 403);  /* a vocabulary slice: most rows zero */
    embedding_case(1001, 70, 13, 0, 13, 404); /* many repeats within each group of tokens */
    embedding_case(517, 300, 1000, 500, 500, 405);
    /* the backward's lists: one row's positions past a list (1024) in its slice, and rows of
     * every slice over two column blocks with a partial last round of tokens */
    embedding_case(3000, 40, 2, 0, 2, 406);
    embedding_case(2500, 130, 300, 37, 200, 407);
}

/* ---- head_scale ---- */

/* out and dinp are one float product on both sides (bit-identical); ds sums N*w products in
 * double on both sides and rounds once, so it differs by at most 1 ulp: 1e-6 relative, and
 * 1e-6 absolute for a sum near 0. A wrong head index errs by O(1). */
#define HS_ATOL 1e-6
#define HS_RTOL 1e-6

static void head_scale_case(int N, int H, int w) {
    size_t n = (size_t)N * H * w;
    printf("-- head_scale N=%d H=%d w=%d\n", N, H, w);
    float *x = malloc(n * sizeof(float)), *s = malloc(H * sizeof(float));
    float *dout = malloc(n * sizeof(float)), *ds = malloc(H * sizeof(float));
    float *out = cot_nan(n), *dinp = cot_nan(n);
    cut_fill(x, n, 500 + N, -1.0f, 1.0f);
    cut_fill(s, H, 501, 0.5f, 2.0f);
    cut_fill(dout, n, 502, -1.0f, 1.0f);
    cut_fill(ds, H, 503, -1.0f, 1.0f); /* accumulates */
    float *d_x = cot_dev(x, n), *d_s = cot_dev(s, H), *d_dout = cot_dev(dout, n);
    float *d_out = cot_dev_nan(n), *d_dinp = cot_dev_nan(n);
    float *d_ds = cot_dev(ds, H), *d_ds2 = cot_dev(ds, H);

    cpu_head_scale_forward(out, x, s, N, H, w);
    cuda_head_scale_forward((dt_operand *)d_out, (const dt_operand *)d_x, d_s, N, H, w);
    cot_check_bits("head_scale forward", d_out, out, n);

    cpu_head_scale_backward(dinp, ds, dout, x, s, N, H, w);
    cuda_head_scale_backward(d_dinp, d_ds, d_dout, (const dt_operand *)d_x, d_s, N, H, w);
    cot_check_bits("head_scale dinp", d_dinp, dinp, n);
    cot_check("head_scale ds (+=)", d_ds, ds, H, HS_ATOL, HS_RTOL);

    /* in place (dinp == dout): same dinp bits, same ds bits as the out-of-place run */
    cuda_head_scale_backward(d_dout, d_ds2, d_dout, (const dt_operand *)d_x, d_s, N, H, w);
    cot_check_bits_dev("head_scale dinp in place", d_dout, d_dinp, n);
    cot_check_bits_dev("head_scale ds rerun", d_ds2, d_ds, H);

    cuda_free(d_x), cuda_free(d_s), cuda_free(d_dout), cuda_free(d_out), cuda_free(d_dinp);
    cuda_free(d_ds), cuda_free(d_ds2);
    free(x), free(s), free(dout), free(ds), free(out), free(dinp);
}

static void test_head_scale(void **state) {
    (void)state;
    head_scale_case(1, 1, 1);
    head_scale_case(7, 3, 5);
    head_scale_case(300, 4, 64);
    head_scale_case(1000, 2, 33); /* 63 row chunks, the last one short */
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),    cmocka_unit_test(test_rope),
        cmocka_unit_test(test_rope_table_cache),
        cmocka_unit_test(test_swiglu),     cmocka_unit_test(test_swiglu_strided),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_head_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
