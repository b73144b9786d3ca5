/* The NCCL side of dist/ on one rank (an MPI singleton): skipped (77) without a CUDA device.
 * With one, a communicator of one rank is built the way every group builds it (ncclGetUniqueId
 * on rank 0, MPI_Bcast, ncclCommInitRank), and each device collective runs on device buffers of
 * small integers, compared exactly with the expected values: all-reduce (sum, max) in place,
 * reduce-scatter out of place into a buffer prefilled with a sentinel (a collective that did
 * nothing would leave it), in-place all-gather, broadcast; the byte counters of one rank stay 0
 * while the call counters count; DT_NCCL_CHECK turns an invalid NCCL call into DT_ERR_RUNTIME. */
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

#include "dist/check.h"
#include "dist/nccl_buf_coll.h"
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
    assert_int_equal(buf_coll_nccl_bind(compute), DT_OK);
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
        cmocka_unit_test(test_nccl_check),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    comm_free(&comm);
    int verdict = dist_test_verdict(rc == 0 ? 0 : 1);
    world_finalize();
    return verdict;
#endif
}
