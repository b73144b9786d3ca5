/* The NCCL side of dist/ on one rank (an MPI singleton): skipped (77) without a CUDA device.
 * With one, a communicator of one rank is built the way every group builds it (ncclGetUniqueId
 * on rank 0, MPI_Bcast, ncclCommInitRank), and each device collective runs on device buffers of
 * small integers, compared exactly with the expected values: all-reduce (sum, max) in place,
 * reduce-scatter out of place into a buffer prefilled with a sentinel (a collective that did
 * nothing would leave it), in-place all-gather, broadcast; the byte counters of one rank stay 0
 * while the call counters count; DT_NCCL_CHECK turns an invalid NCCL call into DT_ERR_RUNTIME.
 * The deferred collectives of dt_buf_coll (ZeRO's gradient buckets): with their stream held back
 * by a gate, the compute stream and another communicator's collectives go on, while the same
 * communicator's next collective and the compute stream after wait_all wait; then the results.
 * Written for any number of ranks (one GPU each under mpirun), it runs as one in the suite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "dist/comm.h"
#include "dist/world.h"
#include "model/cuda/cuda_probe.h"

#ifndef DT_TEST_NO_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdatomic.h>
#include <unistd.h>

#include "dist/check.h"
#include "dist/nccl_buf_coll.h"
#include "dist/partition.h"
#include "dist/nccl_comm.h"

enum { N = 1000 };

static dt_comm comm;

static void to_device(float *dev, const float *host, size_t n) {
    assert_int_equal(cudaMemcpy(dev, host, n * sizeof(float), cudaMemcpyHostToDevice),
                     cudaSuccess);
}

static void to_host(float *host, const float *dev, size_t n) {
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    assert_int_equal(cudaMemcpy(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost),
                     cudaSuccess);
}

static void test_device_collectives(void **state) {
    (void)state;
    static float h[N], got[N];
    float *a = NULL, *b = NULL;
    assert_int_equal(cudaMalloc((void **)&a, N * sizeof(float)), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&b, N * sizeof(float)), cudaSuccess);
    assert_int_equal(comm_nccl_init(&comm), DT_OK);
    assert_non_null(comm.nccl);
    comm_reset_bytes(&comm);

    for (int i = 0; i < N; i++) h[i] = (float)(i % 13) - 6.0f;
    to_device(a, h, N);
    assert_int_equal(comm_allreduce_f32_dev(&comm, a, N, DT_REDUCE_SUM, NULL), DT_OK);
    assert_int_equal(comm_allreduce_f32_dev(&comm, a, N, DT_REDUCE_MAX, NULL), DT_OK);
    to_host(got, a, N);
    for (int i = 0; i < N; i++) assert_true(got[i] == h[i]); /* one rank: sum = max = itself */

    /* reduce-scatter, out of place: out starts as a sentinel */
    size_t counts[1] = {N};
    for (int i = 0; i < N; i++) got[i] = -1000.0f;
    to_device(b, got, N);
    assert_int_equal(comm_reduce_scatter_f32_dev(&comm, b, a, counts, NULL), DT_OK);
    to_host(got, b, N);
    for (int i = 0; i < N; i++) assert_true(got[i] == h[i]);

    assert_int_equal(comm_allgather_f32_dev(&comm, a, counts, NULL), DT_OK);
    assert_int_equal(comm_broadcast_f32_dev(&comm, a, N, 0, NULL), DT_OK);
    to_host(got, a, N);
    for (int i = 0; i < N; i++) assert_true(got[i] == h[i]);
    assert_int_equal(comm_broadcast_f32_dev(&comm, a, N, 1, NULL), DT_ERR_INPUT); /* no rank 1 */

    assert_true(comm_bytes_total(&comm) == 0); /* a group of one moves nothing */
    assert_true(comm.calls[DT_COLL_ALLREDUCE] == 2 && comm.calls[DT_COLL_REDUCE_SCATTER] == 1 &&
                comm.calls[DT_COLL_ALLGATHER] == 1 && comm.calls[DT_COLL_BROADCAST] == 1);
    cudaFree(a);
    cudaFree(b);
}

static dt_status invalid_nccl_call(void) {
    /* an unknown data type is rejected by NCCL's argument checks */
    DT_NCCL_CHECK(ncclAllReduce(NULL, NULL, 1, (ncclDataType_t)1000, ncclSum,
                                (ncclComm_t)comm.nccl, (cudaStream_t)0));
    return DT_OK;
}

/* The dt_buf_coll the trainer uses on GPUs: collectives on their own stream, ordered after the
 * compute stream's kernels by events. A kernel-free check of that order: an async copy on the
 * compute stream fills the buffer, the collective follows, and a copy on the compute stream
 * reads the result; with the stream waits missing, the collective could run before the fill. */
static void test_buf_coll_orders_streams(void **state) {
    (void)state;
    static float h[N], got[N];
    cudaStream_t compute;
    float *a = NULL;
    assert_int_equal(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&a, N * sizeof(float)), cudaSuccess);
    assert_int_equal(buf_coll_nccl_bind(compute, NULL), DT_OK);
    const dt_buf_coll *bc = buf_coll_nccl();
    assert_non_null(bc);
    for (int i = 0; i < N; i++) h[i] = (float)(i % 7) + 0.5f;
    assert_int_equal(cudaMemcpyAsync(a, h, sizeof h, cudaMemcpyHostToDevice, compute), cudaSuccess);
    size_t counts[1] = {N};
    assert_int_equal(bc->allreduce_f32(&comm, a, N, DT_REDUCE_SUM), DT_OK);
    assert_int_equal(bc->reduce_scatter_f32(&comm, a, a, counts), DT_OK); /* in place */
    assert_int_equal(bc->allgather_f32(&comm, a, counts), DT_OK);
    assert_int_equal(cudaMemcpyAsync(got, a, sizeof got, cudaMemcpyDeviceToHost, compute),
                     cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(compute), cudaSuccess);
    for (int i = 0; i < N; i++) assert_true(got[i] == h[i]);
    /* the training step's doubles (loss, gradient sum of squares) take the same path */
    static const double hd[3] = {0.1, -2.5e300, 1e-300};
    double gotd[3] = {0, 0, 0}, *ad = NULL;
    assert_int_equal(cudaMalloc((void **)&ad, sizeof hd), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(ad, hd, sizeof hd, cudaMemcpyHostToDevice, compute),
                     cudaSuccess);
    uint64_t calls = comm.calls[DT_COLL_ALLREDUCE];
    assert_int_equal(bc->allreduce_f64(&comm, ad, 3, DT_REDUCE_SUM), DT_OK);
    assert_true(comm.calls[DT_COLL_ALLREDUCE] == calls + 1);
    assert_int_equal(cudaMemcpyAsync(gotd, ad, sizeof gotd, cudaMemcpyDeviceToHost, compute),
                     cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(compute), cudaSuccess);
    for (int i = 0; i < 3; i++) assert_true(gotd[i] == hd[i]); /* doubles, not floats */
    cudaFree(ad);
    buf_coll_nccl_unbind();
    assert_null(buf_coll_nccl());
    cudaFree(a);
    cudaStreamDestroy(compute);
}

/* ---- deferred collectives (ZeRO's gradient buckets) ---- */

/* A gate on a stream: a host function that holds the stream until the test opens it (or 30 s
 * pass, so that a failing test cannot hang the suite). */
static atomic_int gate_open;

static void CUDART_CB gate_fn(void *arg) {
    (void)arg;
    for (int i = 0; i < 30000 && !atomic_load(&gate_open); i++) usleep(1000);
}

/* 1 when `e` completes within `ms` milliseconds, 0 when it is still pending then. */
static int completes_within(cudaEvent_t e, int ms) {
    for (int i = 0; i <= ms; i++) {
        cudaError_t q = cudaEventQuery(e);
        if (q == cudaSuccess) return 1;
        assert_int_equal(q, cudaErrorNotReady);
        usleep(1000);
    }
    return 0;
}

static void fill(float *dev, size_t n, int rank, int mod) {
    static float h[N];
    for (size_t i = 0; i < n; i++) h[i] = (float)((int)(i % (size_t)mod) + rank) + 0.5f;
    to_device(dev, h, n);
}

/* The sum over p ranks of fill's value of element i. */
static float filled_sum(size_t i, int p, int mod) {
    return (float)(p * (int)(i % (size_t)mod)) + (float)(p * (p - 1) / 2) + 0.5f * (float)p;
}

/* The deferred collectives leave the compute stream free: with the deferred stream held by a
 * gate, work on the compute stream after them completes, and so does an immediate collective on
 * another communicator (a TP all-reduce is not queued behind a DP bucket), while the compute
 * stream after wait_all waits for the gate. Once it opens, the results are right: an all-reduce,
 * an uneven in-place reduce-scatter (a zero-count part when p > 1) and many small buckets, and
 * the counters count them all. Then, with the gate closed again, an immediate collective on the
 * same communicator waits for the deferred one before it. */
static void test_deferred_collectives(void **state) {
    (void)state;
    static float got[N];
    const int p = comm.size, r = comm.rank;
    cudaStream_t compute;
    cudaEvent_t e;
    float *a = NULL, *b = NULL, *c = NULL, *t = NULL;
    dt_comm other;
    assert_int_equal(comm_init_world(&other, "tp"), DT_OK);
    assert_int_equal(comm_nccl_init(&other), DT_OK); /* before the gate: init may synchronise */
    assert_int_equal(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), cudaSuccess);
    assert_int_equal(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&a, N * sizeof(float)), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&b, N * sizeof(float)), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&c, N * sizeof(float)), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&t, N * sizeof(float)), cudaSuccess);
    assert_int_equal(buf_coll_nccl_bind(compute, NULL), DT_OK);
    const dt_buf_coll *bc = buf_coll_nccl();
    assert_non_null(bc);
    cudaStream_t deferred = (cudaStream_t)buf_coll_nccl_deferred_stream();
    assert_non_null(deferred);
    fill(a, N, r, 7);
    fill(b, N, r, 5);
    fill(c, N, r, 3);
    fill(t, N, r, 11);
    comm_reset_bytes(&comm);
    comm_reset_bytes(&other);

    atomic_store(&gate_open, 0);
    assert_int_equal(cudaLaunchHostFunc(deferred, gate_fn, NULL), cudaSuccess);
    /* b's parts: none for rank 0 when p > 1, the rest balanced over the others */
    size_t counts[64], offset = 0;
    assert_true(p <= 64);
    for (int j = 0; j < p; j++) {
        int owners = p > 1 ? p - 1 : 1, k = p > 1 ? j - 1 : j;
        counts[j] = p > 1 && j == 0 ? 0 : N / (size_t)owners + ((size_t)k < N % (size_t)owners);
        if (j < r) offset += counts[j];
    }
    assert_int_equal(bc->allreduce_f32_async(&comm, a, N, DT_REDUCE_SUM), DT_OK);
    assert_int_equal(bc->reduce_scatter_f32_async(&comm, b + offset, b, counts), DT_OK);
    enum { BUCKETS = 50 };
    for (int k = 0; k < BUCKETS; k++) {
        size_t lo = N * (size_t)k / BUCKETS, hi = N * (size_t)(k + 1) / BUCKETS;
        assert_int_equal(bc->allreduce_f32_async(&comm, c + lo, hi - lo, DT_REDUCE_SUM), DT_OK);
    }
    /* the compute stream goes on; so does an immediate collective on another communicator */
    assert_int_equal(bc->allreduce_f32(&other, t, N, DT_REDUCE_SUM), DT_OK);
    assert_int_equal(cudaEventRecord(e, compute), cudaSuccess);
    int free_running = completes_within(e, 5000);
    /* after wait_all, the compute stream waits for the deferred collectives */
    assert_int_equal(bc->wait_all(), DT_OK);
    assert_int_equal(cudaEventRecord(e, compute), cudaSuccess);
    int compute_waited = !completes_within(e, 200);
    atomic_store(&gate_open, 1);
    assert_int_equal(cudaStreamSynchronize(compute), cudaSuccess);
    assert_true(free_running);
    assert_true(compute_waited);

    to_host(got, a, N);
    for (size_t i = 0; i < N; i++) assert_true(got[i] == filled_sum(i, p, 7));
    to_host(got, b, N);
    for (size_t i = offset; i < offset + counts[r]; i++) assert_true(got[i] == filled_sum(i, p, 5));
    to_host(got, c, N);
    for (size_t i = 0; i < N; i++) assert_true(got[i] == filled_sum(i, p, 3));
    to_host(got, t, N);
    for (size_t i = 0; i < N; i++) assert_true(got[i] == filled_sum(i, p, 11));
    assert_true(comm.calls[DT_COLL_ALLREDUCE] == 1 + BUCKETS &&
                comm.calls[DT_COLL_REDUCE_SCATTER] == 1);
    /* a, then c in buckets: the bytes of two all-reduces of N */
    assert_true(comm.bytes[DT_COLL_ALLREDUCE] == 2 * comm_bytes_allreduce(p, N, 4) &&
                comm.bytes[DT_COLL_REDUCE_SCATTER] == comm_bytes_reduce_scatter(p, N, 4));
    assert_true(other.calls[DT_COLL_ALLREDUCE] == 1);

    /* before any wait_all, an immediate collective on the same communicator waits for the
     * deferred ones (here an all-gather of a, the same on every rank, which leaves it so) */
    atomic_store(&gate_open, 0);
    assert_int_equal(cudaLaunchHostFunc(deferred, gate_fn, NULL), cudaSuccess);
    assert_int_equal(bc->allreduce_f32_async(&comm, c, 1, DT_REDUCE_MAX), DT_OK);
    size_t gather[64];
    dist_partition_counts(gather, N, p);
    assert_int_equal(bc->allgather_f32(&comm, a, gather), DT_OK);
    assert_int_equal(cudaEventRecord(e, compute), cudaSuccess);
    int same_comm_waited = !completes_within(e, 200);
    atomic_store(&gate_open, 1);
    assert_int_equal(bc->wait_all(), DT_OK);
    assert_int_equal(cudaStreamSynchronize(compute), cudaSuccess);
    assert_true(same_comm_waited);
    to_host(got, a, N);
    for (size_t i = 0; i < N; i++) assert_true(got[i] == filled_sum(i, p, 7));
    /* nothing pending: wait_all is free, and unbinding drains both streams */
    assert_int_equal(bc->wait_all(), DT_OK);
    buf_coll_nccl_unbind();
    assert_null(buf_coll_nccl_deferred_stream());
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    cudaFree(t);
    cudaEventDestroy(e);
    cudaStreamDestroy(compute);
    comm_free(&other);
}

static void test_nccl_check(void **state) {
    (void)state;
    assert_int_equal(comm_nccl_init(&comm), DT_OK);
    assert_int_equal(invalid_nccl_call(), DT_ERR_RUNTIME);
}
#endif

int main(int argc, char **argv) {
    if (cuda_probe_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
#ifdef DT_TEST_NO_NCCL
    (void)argc;
    (void)argv;
    printf("built without NCCL: skipped\n");
    return 77;
#else
    dt_world world;
    if (world_init(&world, &argc, &argv) != DT_OK) return 1;
    if (cudaSetDevice(world.local_rank % cuda_probe_device_count()) != cudaSuccess) return 1;
    if (comm_init_world(&comm, "world") != DT_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_collectives),
        cmocka_unit_test(test_buf_coll_orders_streams),
        cmocka_unit_test(test_deferred_collectives),
        cmocka_unit_test(test_nccl_check),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    comm_free(&comm);
    int verdict = dist_test_verdict(rc == 0 ? 0 : 1);
    world_finalize();
    return verdict;
#endif
}
