/* The CUDA cross-entropy ops against the CPU oracle on identical inputs: xent_forward and
 * xent_backward (ignored targets, targets "elsewhere" (= V), rows of logits +-1e4, in place,
 * rows ldd apart, NaN-initialised outputs, reruns), and the vocabulary-parallel xent_vp_stats /
 * xent_vp_rescale / xent_vp_finish over three uneven slices with local, elsewhere and ignored
 * targets, combined as the model's all-reduces do. V = 1, 257, 4100, 50257 and 50260 (the
 * float4 path needs V a multiple of 4). The backward's bf16 operands: test_cuda_operand.
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

/* Both sides take the exact row max, sum expf in double and form the logsumexp in double. The
 * GPU sums in one pass: each thread's terms exp(x - m) relative to its running maximum m, each
 * thread's sum moved to the row's maximum by one more expf (model/cuda/xent.cu); CUDA's expf is
 * within 2 ulp of glibc's and the differences x - m are exact (Sterbenz), so a term differs by
 * < 5 ulp (6e-7 relative), the sum and lse by as much, plus one float rounding of lse or the
 * loss (1 ulp: 1e-6 at 10, 1e-3 at 1e4, both within 2e-6 relative). A missing max shift, a
 * wrong target column, a thread's sum not moved to the row maximum or a float accumulator over
 * 5e4 terms errs by far more. */
#define XE_ATOL 2e-6
#define XE_RTOL 2e-6
/* dlogits = dloss expf(x - lse) (- dloss at the target) from the same lse: expf's 2 ulp, i.e.
 * 2.4e-7 relative; at the target, p - dloss cancels, so 2 ulp of dloss = 0.25 absolute. */
#define XE_GRAD_ATOL 1e-7
#define XE_GRAD_RTOL 1e-6
#define XE_DLOSS 0.25f

static void fill_logits(float *x, int N, int V, unsigned seed) {
    cut_fill(x, (size_t)N * V, seed, -6.0f, 6.0f);
    for (int n = 0; n < N; n++) {
        float shift = n % 4 == 1 ? 1e4f : n % 4 == 2 ? -1e4f : 0.0f; /* max shift needed */
        for (int i = 0; i < V; i++) x[(size_t)n * V + i] += shift;
    }
}

/* Row n: ignored, elsewhere (V), the last column, column 0, or a random column. */
static void fill_targets(int32_t *t, int N, int V, unsigned seed) {
    unsigned long long s = seed;
    for (int n = 0; n < N; n++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int32_t r = (int32_t)((s >> 33) % (unsigned long long)V);
        switch (n % 5) {
        case 1:
            t[n] = -1;
            break;
        case 2:
            t[n] = V;
            break;
        case 3:
            t[n] = V - 1;
            break;
        case 4:
            t[n] = 0;
            break;
        default:
            t[n] = r;
        }
    }
}

static void xent_case(int N, int V) {
    size_t NV = (size_t)N * V;
    printf("-- xent N=%d V=%d\n", N, V);
    float *x = malloc(NV * sizeof(float)), *dl = cot_nan(NV);
    float *losses = cot_nan(N), *lse = cot_nan(N);
    int32_t *t = malloc((size_t)N * sizeof(int32_t));
    fill_logits(x, N, V, 600 + V);
    fill_targets(t, N, V, 601);
    float *d_x = cot_dev(x, NV), *d_dl = cot_dev_nan(NV);
    float *d_losses = cot_dev_nan(N), *d_lse = cot_dev_nan(N);
    float *d_losses2 = cot_dev_nan(N), *d_lse2 = cot_dev_nan(N);
    int32_t *d_t = cot_dev_i32(t, N);
    const int32_t one = 1, five = 5;
    int32_t *d_one = cot_dev_i32(&one, 1), *d_five = cot_dev_i32(&five, 1);

    cpu_xent_forward(losses, lse, x, t, N, V);
    cuda_xent_forward(d_losses, d_lse, d_x, d_t, N, V);
    cot_check("xent losses", d_losses, losses, N, XE_ATOL, XE_RTOL);
    cot_check("xent lse", d_lse, lse, N, XE_ATOL, XE_RTOL);
    cuda_xent_forward(d_losses2, d_lse2, d_x, d_t, N, V);
    cot_check_bits_dev("xent losses rerun", d_losses2, d_losses, N);
    cot_check_bits_dev("xent lse rerun", d_lse2, d_lse, N);

    /* the backward of both sides gets the CPU's lse */
    cuda_copy_from_host(d_lse, lse, N * sizeof(float));
    cpu_xent_backward(dl, V, x, lse, t, XE_DLOSS, &one, N, V);
    cuda_xent_backward((dt_operand *)d_dl, V, d_x, d_lse, d_t, XE_DLOSS, d_one, N, V);
    cot_check("xent dlogits", d_dl, dl, NV, XE_GRAD_ATOL, XE_GRAD_RTOL);
    /* ignored rows: exactly zero */
    float *g = cut_to_host(d_dl, NV);
    for (int n = 0; n < N; n++)
        if (t[n] < 0)
            for (int i = 0; i < V; i++) assert_true(g[(size_t)n * V + i] == 0.0f);
    /* rows ldd = V + 4 apart (the float4 path stays aligned where V allows it): the same rows,
     * the NaNs between them untouched */
    const int ldd = V + 4;
    float *d_wide = cot_dev_nan((size_t)N * ldd);
    cuda_xent_backward((dt_operand *)d_wide, ldd, d_x, d_lse, d_t, XE_DLOSS, d_one, N, V);
    float *wide = cut_to_host(d_wide, (size_t)N * ldd);
    for (int n = 0; n < N; n++) {
        assert_memory_equal(wide + (size_t)n * ldd, g + (size_t)n * V, V * sizeof(float));
        for (int i = V; i < ldd; i++) assert_true(isnan(wide[(size_t)n * ldd + i]));
    }
    free(g), free(wide), cuda_free(d_wide);
    /* in place (dlogits == logits): the out-of-place bits */
    cuda_xent_backward((dt_operand *)d_x, V, d_x, d_lse, d_t, XE_DLOSS, d_one, N, V);
    cot_check_bits_dev("xent dlogits in place", d_x, d_dl, NV);
    /* the count in device memory divides the scale as the host did: 3 over 5 targets is the
     * bits of dloss = 3.0f / 5 given with a count of 1 */
    float *d_q = cot_dev_nan(NV), *d_x2 = cot_dev(x, NV);
    cuda_xent_backward((dt_operand *)d_dl, V, d_x2, d_lse, d_t, 3.0f, d_five, N, V);
    cuda_xent_backward((dt_operand *)d_q, V, d_x2, d_lse, d_t, 3.0f / 5, d_one, N, V);
    cot_check_bits_dev("xent dlogits scale / count", d_dl, d_q, NV);

    cuda_free(d_x), cuda_free(d_dl), cuda_free(d_losses), cuda_free(d_lse), cuda_free(d_q);
    cuda_free(d_x2);
    cuda_free(d_losses2), cuda_free(d_lse2), cuda_free(d_t), cuda_free(d_one), cuda_free(d_five);
    free(x), free(dl), free(losses), free(lse), free(t);
}

static void test_xent(void **state) {
    (void)state;
    xent_case(1, 1);
    xent_case(7, 257);
    xent_case(5, 4100); /* float4 rows, the last tile part full */
    xent_case(10, 50257);
    xent_case(6, 50260); /* float4 rows */
}

/* Three slices [start[p], start[p+1]) of a row of V logits, each on its own "rank": every op is
 * compared on the slice, and the cross-slice reductions (MAX of rowmax, SUM of the rescaled sums)
 * are done on the host from the CPU's results so that both sides of the next op see the same
 * inputs; the combined lse and losses then match the whole rows' forward. */
static void xent_vp_case(int N, int V, const int start[4]) {
    enum { P = 3 };
    printf("-- xent vocab-parallel N=%d V=%d slices %d/%d/%d\n", N, V, start[1] - start[0],
           start[2] - start[1], start[3] - start[2]);
    size_t NV = (size_t)N * V;
    float *x = malloc(NV * sizeof(float)), *slice = malloc(NV * sizeof(float));
    int32_t *t = malloc((size_t)N * sizeof(int32_t)), *lt = malloc((size_t)N * P * sizeof(int32_t));
    float *rowmax = malloc(N * sizeof(float)), *lmax = cot_nan((size_t)N * P);
    float *sums = calloc(2 * (size_t)N, sizeof(float)), *part = cot_nan(2 * (size_t)N * P);
    fill_logits(x, N, V, 700 + V);
    /* global targets: ignored, then one in each slice, at slice edges too */
    for (int n = 0; n < N; n++) {
        int p = n % P;
        int32_t choice[4] = {-1, start[p], start[p + 1] - 1, (start[p] + start[p + 1]) / 2};
        t[n] = choice[(n / P) % 4];
        rowmax[n] = -INFINITY;
    }
    int32_t *d_lt = cot_dev_i32(NULL, N);
    float *d_slice = cot_dev(NULL, NV), *d_gmax = cot_dev(NULL, N);
    float *d_lmax = cot_dev_nan(N), *d_part = cot_dev_nan(2 * (size_t)N);
    for (int p = 0; p < P; p++) { /* each slice's stats */
        int nv = start[p + 1] - start[p];
        size_t n_slice = (size_t)N * nv;
        int32_t *ltp = lt + (size_t)N * p;
        float *lmaxp = lmax + (size_t)N * p, *partp = part + 2 * (size_t)N * p;
        for (int n = 0; n < N; n++) {
            memcpy(slice + (size_t)n * nv, x + (size_t)n * V + start[p], nv * sizeof(float));
            int32_t g = t[n];
            ltp[n] = g < 0 ? -1 : (g >= start[p] && g < start[p + 1] ? g - start[p] : nv);
        }
        cuda_copy_from_host(d_slice, slice, n_slice * sizeof(float));
        cuda_copy_from_host(d_lt, ltp, N * sizeof(int32_t));
        cpu_xent_vp_stats(lmaxp, partp, slice, ltp, N, nv);
        cuda_xent_vp_stats(d_lmax, d_part, d_slice, d_lt, N, nv);
        cot_check_bits("xent_vp_stats rowmax", d_lmax, lmaxp, N); /* a max is exact */
        /* {sum exp (as the forward's sum), the target's logit copied or 0} */
        cot_check("xent_vp_stats sums", d_part, partp, 2 * (size_t)N, XE_ATOL, XE_RTOL);
        for (int n = 0; n < N; n++) rowmax[n] = fmaxf(rowmax[n], lmaxp[n]);
    }
    cuda_copy_from_host(d_gmax, rowmax, N * sizeof(float));
    for (int p = 0; p < P; p++) { /* each slice's sums moved to the global maxima, then added */
        float *lmaxp = lmax + (size_t)N * p, *partp = part + 2 * (size_t)N * p;
        cuda_copy_from_host(d_lmax, lmaxp, N * sizeof(float));
        cuda_copy_from_host(d_part, partp, 2 * (size_t)N * sizeof(float));
        cpu_xent_vp_rescale(partp, lmaxp, rowmax, N);
        cuda_xent_vp_rescale(d_part, d_lmax, d_gmax, N);
        /* one expf (2 ulp apart) and one rounding of the product; the target column unchanged */
        cot_check("xent_vp_rescale", d_part, partp, 2 * (size_t)N, 1e-30, 5e-7);
        for (size_t i = 0; i < 2 * (size_t)N; i++) sums[i] += partp[i];
    }
    float *losses = cot_nan(N), *lse = cot_nan(N);
    float *d_sums = cot_dev(sums, 2 * (size_t)N), *d_losses = cot_dev_nan(N);
    float *d_lse = cot_dev_nan(N);
    int32_t *d_t = cot_dev_i32(t, N);
    cpu_xent_vp_finish(losses, lse, rowmax, sums, t, N);
    cuda_xent_vp_finish(d_losses, d_lse, d_gmax, d_sums, d_t, N);
    /* double log of the same inputs, rounded once: 1 ulp at most */
    cot_check("xent_vp_finish losses", d_losses, losses, N, XE_ATOL, XE_RTOL);
    cot_check("xent_vp_finish lse", d_lse, lse, N, XE_ATOL, XE_RTOL);
    /* the slices combined give the whole rows' lse: each slice's sum is rounded to float twice
     * (stats, rescale) and the three are added in float: a few ulps */
    float *whole_losses = cot_nan(N), *whole_lse = cot_nan(N);
    cpu_xent_forward(whole_losses, whole_lse, x, t, N, V);
    cot_check("xent_vp lse vs whole rows", d_lse, whole_lse, N, 4 * XE_ATOL, 4 * XE_RTOL);
    cot_check("xent_vp losses vs whole rows", d_losses, whole_losses, N, 4 * XE_ATOL,
              4 * XE_RTOL);

    cuda_free(d_lt), cuda_free(d_slice), cuda_free(d_gmax);
    cuda_free(d_lmax), cuda_free(d_part), cuda_free(d_sums), cuda_free(d_losses);
    cuda_free(d_lse), cuda_free(d_t);
    free(x), free(slice), free(t), free(lt), free(rowmax), free(lmax), free(sums), free(part);
    free(losses), free(lse), free(whole_losses), free(whole_lse);
}

static void test_xent_vocab_parallel(void **state) {
    (void)state;
    const int small[4] = {0, 100, 200, 257};
    const int large[4] = {0, 16000, 36000, 50257};
    const int aligned[4] = {0, 16000, 36000, 50260}; /* float4 slices */
    xent_vp_case(24, 257, small);
    xent_vp_case(12, 50257, large);
    xent_vp_case(9, 50260, aligned);
}

int main(void) {
    cut_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xent),
        cmocka_unit_test(test_xent_vocab_parallel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
