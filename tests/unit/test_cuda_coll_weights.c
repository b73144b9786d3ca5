/* The device collectives (dt_buf_coll of dist/nccl_buf_coll.c) tell the CUDA backend what they
 * write. Bound as the trainer binds them (launch/device.c: the hook cuda_weights_written), a
 * collective whose output overlaps the prepared weight matrices drops their bf16 copies, so the
 * next prepare copies the values it wrote (ZeRO's all-gather of the parameters after the
 * optimizer's update of a shard); a collective that writes elsewhere, or only reads the weights,
 * keeps them. Every form: all-gather, reduce-scatter out of place and in place (where the parts
 * of the other ranks are left unspecified: the last rank's own part lies past the matrices,
 * and its copies must go all the same), all-reduce of floats and doubles, and the deferred
 * all-reduce and reduce-scatter. Any number of ranks, the same expectations on each: built
 * against the emulated NCCL as emu_test_cuda_coll_weights (ctest runs it alone, an MPI
 * singleton, and on 2 ranks under mpirun), and against NCCL for a GPU. Skipped (77) without a
 * device, or in a GPU build without NCCL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "cuda_ops_test_util.h"
#include "dist/comm.h"
#include "dist_test_util.h"

#ifndef DT_TEST_NO_NCCL
#include "dist/nccl_buf_coll.h"

#define MATS 3

static dt_comm comm;

static int mismatches; /* expectations not met so far: the test fails at its end */

/* `what` left the copies of all MATS matrices (want 1) or dropped them (0); a prepare then
 * copies all of them (dropped) or none (kept). A miss is counted, not raised at once: every rank
 * goes on to issue the same collectives as the others, which would otherwise wait for it. */
static void expect_after(const char *what, const float *const *w, const size_t *n, int want) {
    int kept = 0;
    for (int i = 0; i < MATS; i++) kept += cuda_weights_bf16(w[i], n[i]) != NULL;
    const unsigned long long before = cuda_weights_copies_made();
    cuda_weights_prepare(w, n, MATS);
    const unsigned long long made = cuda_weights_copies_made() - before;
    const int ok = kept == (want ? MATS : 0) && made == (want ? 0u : (unsigned long long)MATS);
    const char *verdict = "as expected";
    if (!ok) verdict = want ? "MISMATCH (kept expected)" : "MISMATCH (dropped expected)";
    printf("rank %d: %-44s %d of %d copies kept, %llu made after: %s\n", comm.rank, what, kept,
           MATS, made, verdict);
    mismatches += !ok;
}

static void test_collectives_drop_weight_copies(void **state) {
    (void)state;
    if (cuda_backend_init(0, 1) != 0) fail_msg("cuda_backend_init(0, 1) failed");
    if (buf_coll_nccl_bind(cuda_stream_handle(), cuda_weights_written) != DT_OK)
        fail_msg("buf_coll_nccl_bind failed");
    const dt_buf_coll *bc = buf_coll_nccl();
    assert_non_null(bc);

    /* the parameters: MATS matrices of 24 x 40 with a vector of 8 after each, as a model's,
     * then as many floats again of vectors: split evenly over up to 4 ranks, the last rank's
     * part lies in those */
    enum { MN = 24 * 40, GAP = 8, SPAN = MATS * (MN + GAP), TOTAL = 2 * SPAN, OTHER = 768 };
    const int p = comm.size;
    assert_true(p <= 4 && TOTAL % p == 0 && (OTHER / 2) % p == 0);
    static float host[TOTAL];
    cut_fill(host, TOTAL, 5, -1.0f, 1.0f);
    float *params = cot_dev(host, TOTAL), *other = cot_dev(host, OTHER);
    const double zeros[4] = {0, 0, 0, 0};
    double *dbl = (double *)cuda_alloc(sizeof zeros);
    cuda_copy_from_host(dbl, zeros, sizeof zeros);
    const float *w[MATS];
    size_t n[MATS];
    for (int i = 0; i < MATS; i++) w[i] = params + (size_t)i * (MN + GAP), n[i] = MN;
    size_t all[4], part[4]; /* per rank: all of params, and half of other */
    for (int j = 0; j < p; j++) all[j] = TOTAL / p, part[j] = OTHER / 2 / p;
    float *own = params + (size_t)comm.rank * all[0]; /* this rank's part of params */

    cuda_weights_prepare(w, n, MATS);
    expect_after("the first prepare", w, n, 1);

    assert_int_equal(bc->allgather_f32(&comm, params, all), DT_OK);
    expect_after("all-gather of the parameters", w, n, 0);
    assert_int_equal(bc->allreduce_f32(&comm, params + MN + GAP + 100, 4, DT_REDUCE_SUM), DT_OK);
    expect_after("all-reduce of 4 floats inside matrix 1", w, n, 0);
    assert_int_equal(bc->reduce_scatter_f32(&comm, params + MN, other, part), DT_OK);
    expect_after("reduce-scatter out of place into the weights", w, n, 0);
    /* in place: out is this rank's part of in, the rest of in is left unspecified */
    assert_int_equal(bc->reduce_scatter_f32(&comm, own, params, all), DT_OK);
    expect_after("reduce-scatter in place over the parameters", w, n, 0);
    assert_int_equal(bc->allreduce_f32_async(&comm, params + SPAN - GAP - 1, 2, DT_REDUCE_MAX),
                     DT_OK);
    assert_int_equal(bc->wait_all(), DT_OK);
    expect_after("deferred all-reduce over the last matrix's end", w, n, 0);
    assert_int_equal(bc->reduce_scatter_f32_async(&comm, params + 2 * MN, other, part), DT_OK);
    assert_int_equal(bc->wait_all(), DT_OK);
    expect_after("deferred reduce-scatter into the weights", w, n, 0);

    /* elsewhere, or the weights only read */
    assert_int_equal(bc->allgather_f32(&comm, other, part), DT_OK);
    assert_int_equal(bc->allreduce_f32(&comm, other, OTHER, DT_REDUCE_SUM), DT_OK);
    assert_int_equal(bc->allreduce_f64(&comm, dbl, 4, DT_REDUCE_SUM), DT_OK);
    assert_int_equal(bc->reduce_scatter_f32(&comm, other, params, part), DT_OK);
    assert_int_equal(bc->reduce_scatter_f32_async(&comm, other, params + MN, part), DT_OK);
    assert_int_equal(bc->allreduce_f32_async(&comm, other, 16, DT_REDUCE_SUM), DT_OK);
    assert_int_equal(bc->wait_all(), DT_OK);
    expect_after("collectives into other memory", w, n, 1);

    buf_coll_nccl_unbind();
    cuda_free(params), cuda_free(other), cuda_free(dbl);
    if (mismatches) fail_msg("rank %d: %d expectations not met", comm.rank, mismatches);
}
#endif

int main(int argc, char **argv) {
    cut_require_device();
#ifdef DT_TEST_NO_NCCL
    (void)argc;
    (void)argv;
    printf("built without NCCL: skipped\n");
    return 77;
#else
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collectives_drop_weight_copies),
    };
    return dtu_run_world_tests(&argc, &argv, &comm, tests, sizeof tests / sizeof tests[0]);
#endif
}
