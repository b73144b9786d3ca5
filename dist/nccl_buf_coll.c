#include "dist/nccl_buf_coll.h"

#include <cuda_runtime.h>

#include "dist/nccl_comm.h"

static cudaStream_t g_compute, g_comm;
static cudaEvent_t g_ready, g_done;
static int g_bound;

static dt_status cuda_ok(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return DT_OK;
    dt_error("NCCL collectives: %s: %s", what, cudaGetErrorString(e));
    (void)cudaGetLastError();
    return DT_ERR_RUNTIME;
}

dt_status buf_coll_nccl_bind(void *compute_stream) {
    if (g_bound) return DT_OK;
    g_compute = (cudaStream_t)compute_stream;
    DT_TRY(cuda_ok(cudaStreamCreateWithFlags(&g_comm, cudaStreamNonBlocking),
                   "creating the communication stream"));
    DT_TRY(cuda_ok(cudaEventCreateWithFlags(&g_ready, cudaEventDisableTiming), "creating an event"));
    DT_TRY(cuda_ok(cudaEventCreateWithFlags(&g_done, cudaEventDisableTiming), "creating an event"));
    g_bound = 1;
    return DT_OK;
}

void buf_coll_nccl_unbind(void) {
    if (!g_bound) return;
    (void)cudaStreamSynchronize(g_comm);
    (void)cudaEventDestroy(g_ready);
    (void)cudaEventDestroy(g_done);
    (void)cudaStreamDestroy(g_comm);
    g_bound = 0;
}

/* The communication stream waits for the compute stream's work so far. */
static dt_status begin(void) {
    DT_TRY(cuda_ok(cudaEventRecord(g_ready, g_compute), "cudaEventRecord (compute)"));
    return cuda_ok(cudaStreamWaitEvent(g_comm, g_ready, 0), "cudaStreamWaitEvent (comm)");
}

/* The compute stream's later work waits for the collective. */
static dt_status end(dt_status st) {
    if (st != DT_OK) return st;
    DT_TRY(cuda_ok(cudaEventRecord(g_done, g_comm), "cudaEventRecord (comm)"));
    return cuda_ok(cudaStreamWaitEvent(g_compute, g_done, 0), "cudaStreamWaitEvent (compute)");
}

static dt_status allreduce(dt_comm *c, float *buf, size_t count, dt_reduce_op op) {
    DT_TRY(begin());
    return end(comm_allreduce_f32_dev(c, buf, count, op, g_comm));
}

static dt_status allreduce_f64(dt_comm *c, double *buf, size_t count, dt_reduce_op op) {
    DT_TRY(begin());
    return end(comm_allreduce_f64_dev(c, buf, count, op, g_comm));
}

static dt_status reduce_scatter(dt_comm *c, float *out, const float *in, const size_t *counts) {
    DT_TRY(begin());
    return end(comm_reduce_scatter_f32_dev(c, out, in, counts, g_comm));
}

static dt_status allgather(dt_comm *c, float *buf, const size_t *counts) {
    DT_TRY(begin());
    return end(comm_allgather_f32_dev(c, buf, counts, g_comm));
}

static const dt_buf_coll nccl_buf_coll_table = {
    .name = "nccl",
    .allreduce_f32 = allreduce,
    .allreduce_f64 = allreduce_f64,
    .reduce_scatter_f32 = reduce_scatter,
    .allgather_f32 = allgather,
};

const dt_buf_coll *buf_coll_nccl(void) { return g_bound ? &nccl_buf_coll_table : NULL; }
