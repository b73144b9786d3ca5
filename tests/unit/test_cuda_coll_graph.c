/* The device collectives (dt_buf_coll of dist/nccl_buf_coll.c) recorded in a CUDA graph of the
 * compute stream (model/cuda/graph.cu), as the trainer records a step's passes with their
 * tensor-parallel all-reduces and data-parallel reductions (optim/step_graph.h): the
 * communication and deferred streams join the recording through the events that order them
 * with the compute stream, and wait_all joins them back. One "step": token-like inputs
 * uploaded from a pinned buffer, an immediate all-reduce, a deferred reduce-scatter and a
 * deferred all-reduce (max), a second immediate all-reduce on the same communicator (which
 * waits for the deferred ones), wait_all, then copies of the three results on the compute
 * stream. Run issued once, recorded once, then launched three times with new inputs each time:
 * every result exact (small integers) against the sums over the ranks; the recording waits for
 * nothing on the host; the byte counters count the recorded collectives once, when recorded,
 * and a launch adds nothing (the host does not see a graph's work: the trainer adds the
 * recording's counts itself). Any number of ranks, up to 4: built against the emulated NCCL as
 * emu_test_cuda_coll_graph (ctest runs it alone and on 2 ranks under mpirun), and against NCCL
 * for a GPU. Skipped (77) without a device, or in a GPU build without NCCL. */
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

enum { NA = 64, NB = 96, NC = 16, NIN = NA + NB + NC };

static dt_comm comm;

typedef struct step_bufs {
    float *in;             /* pinned: a, b and c's inputs, refilled before each step */
    float *a, *b, *shard, *c;
    float *out;            /* a, this rank's shard of b, c: copied after wait_all */
    size_t parts[4];       /* b's parts per rank */
} step_bufs;

static void queue_step(const step_bufs *s) {
    const dt_buf_coll *bc = buf_coll_nccl();
    cuda_copy_from_host_async(s->a, s->in, NA * sizeof(float));
    cuda_copy_from_host_async(s->b, s->in + NA, NB * sizeof(float));
    cuda_copy_from_host_async(s->c, s->in + NA + NB, NC * sizeof(float));
    assert_int_equal(bc->allreduce_f32(&comm, s->a, NA, DT_REDUCE_SUM), DT_OK);
    assert_int_equal(bc->reduce_scatter_f32_async(&comm, s->shard, s->b, s->parts), DT_OK);
    assert_int_equal(bc->allreduce_f32_async(&comm, s->c, NC, DT_REDUCE_MAX), DT_OK);
    assert_int_equal(bc->allreduce_f32(&comm, s->a, NA, DT_REDUCE_SUM), DT_OK);
    assert_int_equal(bc->wait_all(), DT_OK);
    const size_t part = s->parts[0];
    cuda_copy(s->out, s->a, NA * sizeof(float));
    cuda_copy(s->out + NA, s->shard, part * sizeof(float));
    cuda_copy(s->out + NA + part, s->c, NC * sizeof(float));
}

/* Rank r's inputs of step `step`: (r + 1) times a small pattern that moves with the step. */
static void fill_inputs(float *in, int rank, int step) {
    for (int i = 0; i < NA; i++) in[i] = (float)(rank + 1) * (float)(i % 7 + step);
    for (int j = 0; j < NB; j++) in[NA + j] = (float)(rank + 1) * (float)(j % 5 - step);
    for (int k = 0; k < NC; k++) in[NA + NB + k] = (float)(rank + 1) * (float)(k % 3 + step);
}

/* The step's results against the sums over the p ranks (S = p (p + 1) / 2 of the factors). */
static int check_step(const step_bufs *s, int step, const char *how) {
    const int p = comm.size;
    const size_t part = s->parts[0], first = (size_t)comm.rank * part;
    const float S = (float)(p * (p + 1) / 2);
    float got[NA + NB + NC];
    cuda_copy_to_host(got, s->out, (NA + part + NC) * sizeof(float));
    int bad = 0;
    for (int i = 0; i < NA; i++) bad += got[i] != (float)p * S * (float)(i % 7 + step);
    for (size_t j = 0; j < part; j++)
        bad += got[NA + j] != S * (float)((int)((first + j) % 5) - step);
    for (int k = 0; k < NC; k++) bad += got[NA + part + k] != (float)p * (float)(k % 3 + step);
    printf("rank %d: step %d (%s): %d of %zu results wrong\n", comm.rank, step, how, bad,
           NA + part + NC);
    return bad;
}

static uint64_t counted(void) {
    uint64_t calls = 0;
    for (int k = 0; k < DT_COLL_COUNT; k++) calls += comm.calls[k];
    return calls;
}

static void test_collectives_in_graph(void **state) {
    (void)state;
    if (cuda_backend_init(0, 1) != 0) fail_msg("cuda_backend_init(0, 1) failed");
    if (buf_coll_nccl_bind(cuda_stream_handle(), cuda_weights_written) != DT_OK)
        fail_msg("buf_coll_nccl_bind failed");
    assert_true(comm.size <= 4 && NB % comm.size == 0);
    step_bufs s;
    s.in = cuda_host_alloc(NIN * sizeof(float));
    s.a = cuda_alloc(NA * sizeof(float));
    s.b = cuda_alloc(NB * sizeof(float));
    s.shard = cuda_alloc(NB * sizeof(float));
    s.c = cuda_alloc(NC * sizeof(float));
    s.out = cuda_alloc(NIN * sizeof(float));
    for (int j = 0; j < comm.size; j++) s.parts[j] = NB / (size_t)comm.size;
    int bad = 0;

    /* issued: sizes everything (the NCCL communicator is made on first use) */
    fill_inputs(s.in, comm.rank, 0);
    comm_reset_bytes(&comm);
    queue_step(&s);
    bad += check_step(&s, 0, "issued");
    const dt_comm_counts issued = comm_counts(&comm);

    /* recorded: nothing runs, nothing waits on the host, the same collectives counted */
    comm_reset_bytes(&comm);
    const unsigned long long syncs = cuda_sync_count();
    assert_int_equal(cuda_graph_begin(), 0);
    queue_step(&s);
    dt_graph *g = cuda_graph_end();
    assert_non_null(g);
    assert_int_equal(cuda_sync_count(), syncs);
    const dt_comm_counts recorded = comm_counts(&comm);
    for (int k = 0; k < DT_COLL_COUNT; k++) {
        assert_int_equal(recorded.bytes[k], issued.bytes[k]);
        assert_int_equal(recorded.calls[k], issued.calls[k]);
    }
    assert_int_equal(counted(), 4); /* three all-reduces, a reduce-scatter */

    for (int step = 1; step <= 3; step++) {
        fill_inputs(s.in, comm.rank, step); /* the previous launch's read-back waited for it */
        comm_reset_bytes(&comm);
        assert_int_equal(cuda_graph_launch(g), 1);
        assert_int_equal(counted(), 0); /* the host does not see a launched graph's work */
        bad += check_step(&s, step, "launched");
    }
    cuda_graph_free(g);
    buf_coll_nccl_unbind();
    cuda_free(s.a), cuda_free(s.b), cuda_free(s.shard), cuda_free(s.c), cuda_free(s.out);
    cuda_host_free(s.in);
    if (bad) fail_msg("rank %d: %d results wrong", comm.rank, bad);
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
        cmocka_unit_test(test_collectives_in_graph),
    };
    return dtu_run_world_tests(&argc, &argv, &comm, tests, sizeof tests / sizeof tests[0]);
#endif
}
