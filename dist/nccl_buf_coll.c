#include "dist/nccl_buf_coll.h"

#include <cuda_runtime.h>

#include "dist/nccl_comm.h"

/* g_comm runs the immediate collectives, g_deferred the deferred ones: a TP all-reduce inside
 * the backward must not queue behind a large DP gradient bucket. */
static cudaStream_t g_compute, g_comm, g_deferred;
static cudaEvent_t g_ready, g_done, g_deferred_done;
static int g_bound;
/* Deferred work not yet waited for: the communicator it runs on (DEFERRED_SEVERAL when on more
 * than one), or NULL when none is pending. */
static const dt_comm *g_pending;
static const dt_comm deferred_several_tag;
#define DEFERRED_SEVERAL (&deferred_several_tag)
static void (*g_written)(const void *p, size_t bytes); /* buf_coll_nccl_bind's hook, or NULL */

static dt_status cuda_ok(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return DT_OK;
    dt_error("NCCL collectives: %s: %s", what, cudaGetErrorString(e));
    (void)cudaGetLastError();
    return DT_ERR_RUNTIME;
}

static dt_status make_stream(cudaStream_t *s) {
    return cuda_ok(cudaStreamCreateWithFlags(s, cudaStreamNonBlocking),
                   "creating a communication stream");
}

static dt_status make_event(cudaEvent_t *e) {
    return cuda_ok(cudaEventCreateWithFlags(e, cudaEventDisableTiming), "creating an event");
}

dt_status buf_coll_nccl_bind(void *compute_stream, void (*written)(const void *p, size_t bytes)) {
    if (g_bound) return DT_OK;
    g_compute = (cudaStream_t)compute_stream;
    g_written = written;
    DT_TRY(make_stream(&g_comm));
    DT_TRY(make_stream(&g_deferred));
    DT_TRY(make_event(&g_ready));
    DT_TRY(make_event(&g_done));
    DT_TRY(make_event(&g_deferred_done));
    g_pending = NULL;
    g_bound = 1;
    return DT_OK;
}

void buf_coll_nccl_unbind(void) {
    if (!g_bound) return;
    (void)cudaStreamSynchronize(g_comm);
    (void)cudaStreamSynchronize(g_deferred);
    (void)cudaEventDestroy(g_ready);
    (void)cudaEventDestroy(g_done);
    (void)cudaEventDestroy(g_deferred_done);
    (void)cudaStreamDestroy(g_comm);
    (void)cudaStreamDestroy(g_deferred);
    g_pending = NULL;
    g_written = NULL;
    g_bound = 0;
}

/* The device memory a collective is about to write, told to the bind's hook before it is
 * issued. */
static void note_written(const void *p, size_t bytes) {
    if (g_written && bytes > 0) g_written(p, bytes);
}

static size_t counts_total(const dt_comm *c, const size_t *counts) {
    size_t n = 0;
    for (int j = 0; j < c->size; j++) n += counts[j];
    return n;
}

/* Reduce-scatter writes this rank's part into out, and in place (out inside in) may leave the
 * rest of in unspecified (dist/comm.h): all of in then. */
static void note_reduce_scatter(const dt_comm *c, const float *out, const float *in,
                                const size_t *counts) {
    const size_t n = counts_total(c, counts);
    if (out >= in && out < in + n)
        note_written(in, n * sizeof(float));
    else
        note_written(out, counts[c->rank] * sizeof(float));
}

/* `stream` waits for the compute stream's work so far. (cudaStreamWaitEvent takes the event's
 * latest record at the time of the call, so one event serves every wait.) */
static dt_status after_compute(cudaStream_t stream) {
    DT_TRY(cuda_ok(cudaEventRecord(g_ready, g_compute), "cudaEventRecord (compute)"));
    return cuda_ok(cudaStreamWaitEvent(stream, g_ready, 0), "cudaStreamWaitEvent (comm)");
}

/* An immediate collective: the communication stream waits for the compute stream, and for the
 * deferred collectives pending on the same communicator (NCCL runs one communicator's operations
 * in the order they were issued, and so must the streams that carry them). */
static dt_status begin(const dt_comm *c) {
    DT_TRY(after_compute(g_comm));
    if (g_pending == c || g_pending == DEFERRED_SEVERAL) {
        DT_TRY(cuda_ok(cudaEventRecord(g_deferred_done, g_deferred), "cudaEventRecord (deferred)"));
        DT_TRY(cuda_ok(cudaStreamWaitEvent(g_comm, g_deferred_done, 0),
                       "cudaStreamWaitEvent (comm after deferred)"));
    }
    return DT_OK;
}

/* The compute stream's later work waits for the immediate collective. */
static dt_status end(dt_status st) {
    if (st != DT_OK) return st;
    DT_TRY(cuda_ok(cudaEventRecord(g_done, g_comm), "cudaEventRecord (comm)"));
    return cuda_ok(cudaStreamWaitEvent(g_compute, g_done, 0), "cudaStreamWaitEvent (compute)");
}

static dt_status allreduce(dt_comm *c, float *buf, size_t count, dt_reduce_op op) {
    note_written(buf, count * sizeof(float));
    DT_TRY(begin(c));
    return end(comm_allreduce_f32_dev(c, buf, count, op, g_comm));
}

static dt_status allreduce_f64(dt_comm *c, double *buf, size_t count, dt_reduce_op op) {
    note_written(buf, count * sizeof(double));
    DT_TRY(begin(c));
    return end(comm_allreduce_f64_dev(c, buf, count, op, g_comm));
}

static dt_status reduce_scatter(dt_comm *c, float *out, const float *in, const size_t *counts) {
    note_reduce_scatter(c, out, in, counts);
    DT_TRY(begin(c));
    return end(comm_reduce_scatter_f32_dev(c, out, in, counts, g_comm));
}

static dt_status allgather(dt_comm *c, float *buf, const size_t *counts) {
    note_written(buf, counts_total(c, counts) * sizeof(float));
    DT_TRY(begin(c));
    return end(comm_allgather_f32_dev(c, buf, counts, g_comm));
}

/* A deferred collective: the deferred stream waits for the compute stream (the buffer is
 * ready), the collective is enqueued there, and the compute stream goes on without waiting. */
static dt_status begin_deferred(void) { return after_compute(g_deferred); }

static dt_status end_deferred(const dt_comm *c, dt_status st) {
    if (st != DT_OK) return st;
    g_pending = g_pending == NULL || g_pending == c ? c : DEFERRED_SEVERAL;
    return DT_OK;
}

static dt_status allreduce_async(dt_comm *c, float *buf, size_t count, dt_reduce_op op) {
    note_written(buf, count * sizeof(float));
    DT_TRY(begin_deferred());
    return end_deferred(c, comm_allreduce_f32_dev(c, buf, count, op, g_deferred));
}

static dt_status reduce_scatter_async(dt_comm *c, float *out, const float *in,
                                      const size_t *counts) {
    note_reduce_scatter(c, out, in, counts);
    DT_TRY(begin_deferred());
    return end_deferred(c, comm_reduce_scatter_f32_dev(c, out, in, counts, g_deferred));
}

/* The compute stream waits for the deferred stream; the host does not. */
static dt_status wait_all(void) {
    if (!g_pending) return DT_OK;
    DT_TRY(cuda_ok(cudaEventRecord(g_deferred_done, g_deferred), "cudaEventRecord (deferred)"));
    DT_TRY(cuda_ok(cudaStreamWaitEvent(g_compute, g_deferred_done, 0),
                   "cudaStreamWaitEvent (compute after deferred)"));
    g_pending = NULL;
    return DT_OK;
}

static const dt_buf_coll nccl_buf_coll_table = {
    .name = "nccl",
    .allreduce_f32 = allreduce,
    .allreduce_f64 = allreduce_f64,
    .reduce_scatter_f32 = reduce_scatter,
    .allgather_f32 = allgather,
    .allreduce_f32_async = allreduce_async,
    .reduce_scatter_f32_async = reduce_scatter_async,
    .wait_all = wait_all,
};

const dt_buf_coll *buf_coll_nccl(void) { return g_bound ? &nccl_buf_coll_table : NULL; }

void *buf_coll_nccl_deferred_stream(void) { return g_bound ? (void *)g_deferred : NULL; }
