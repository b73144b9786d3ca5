/* dist/nccl_comm.h for the CUDA host emulator (a test tool: difftrain_emu links it in place of
 * dist/nccl_comm.c). Emulated device memory is host memory, so each device collective is the
 * host collective of dist/comm.h (MPI) on the device buffers, over the group's emulated NCCL
 * communicator: a dt_comm on a duplicate of the group's MPI communicator, so that device traffic
 * can never match the group's host collectives (NCCL and MPI are separate channels on a GPU
 * machine). Around that, what dist/nccl_comm.c does is done the same way: the communicator is
 * created on first use, agreed over the group, and freed by comm_free; the argument checks give
 * the same messages; and the bytes are counted on the group's dt_comm by comm_count with the
 * same arguments (the host collective's own count goes to the duplicate, which nothing reads).
 * In-place rules and uneven parts are the host collectives', which are NCCL's.
 *
 * Streams: the emulator runs work when it is issued, so a collective runs at call time (MPI
 * blocks until the whole group has called it, where NCCL would enqueue it and return; every
 * rank of the trainer issues its collectives in the same order, so none waits for a peer that
 * is waiting for it). It is one operation on `stream` that reads and writes its buffers: the
 * emulator checks that the buffers are device memory and that the program ordered the
 * collective after the work that produced them and before the work that uses the result
 * (tests/emu/emu_streams.cpp), which is what dist/nccl_buf_coll.c's events are for.
 *
 * Graphs: on a stream being captured (cudaStreamBeginCapture) a collective is recorded, its
 * arguments copied, and runs at each launch of the graph on the stream that replays the
 * capturing one, as NCCL's kernels do in a graph. Its bytes are counted when it is issued, not
 * at the launches: the host does not see a graph's work (so a caller that counts a step's
 * traffic adds what its recording counted; launch/train.c does).
 *
 * Adding a function of dist/nccl_comm.h: a kind of coll_call, its checks in coll_issue and its
 * run in coll_run (dev_buffer for each buffer, the host counterpart on the duplicate), and its
 * comm_count as dist/nccl_comm.c counts it. */
#include "dist/nccl_comm.h"

#include <cuda_runtime.h>
#include <stdlib.h>

#include "dist/check.h"
#include "dist/partition.h"

typedef struct emu_nccl {
    dt_comm dup; /* the group's ranks in the same order, on their own MPI communicator */
} emu_nccl;

static void nccl_destroy(dt_comm *c) {
    if (c->nccl) {
        comm_free(&((emu_nccl *)c->nccl)->dup);
        free(c->nccl);
    }
    c->nccl = NULL;
    c->nccl_free = NULL;
}

void comm_nccl_free(dt_comm *c) {
    if (c) nccl_destroy(c);
}

dt_status comm_nccl_init(dt_comm *c) {
    if (!c || c->size <= 0) {
        dt_error("comm_nccl_init: the communicator is not initialised");
        return DT_ERR_INPUT;
    }
    if (c->nccl) return DT_OK;
    emu_nccl *n = calloc(1, sizeof *n);
    if (!n) dt_error("comm_nccl_init on %s: out of memory", c->label);
    dt_status st = dist_agree(c, n ? DT_OK : DT_ERR_RUNTIME);
    if (st == DT_OK) st = dist_agree(c, comm_init_split(&n->dup, c, 0, c->rank, c->label));
    if (st != DT_OK) {
        if (n) comm_free(&n->dup);
        free(n);
        return st;
    }
    c->nccl = n;
    c->nccl_free = nccl_destroy;
    return DT_OK;
}

/* One device collective's arguments (what a graph keeps of it). */
typedef struct coll_call {
    dt_coll kind;
    const char *what;
    dt_comm *c;
    void *buf;        /* all-reduce, all-gather, broadcast: in place; reduce-scatter: out */
    const void *in;   /* reduce-scatter */
    size_t count;     /* elements: all-reduce, broadcast; reduce-scatter, all-gather: the total
                         over the parts (coll_issue sets it) */
    size_t esize;     /* all-reduce: float or double */
    dt_reduce_op op;  /* all-reduce */
    int root;         /* broadcast */
    const size_t *counts; /* reduce-scatter, all-gather: c->size parts (the caller's, or a copy) */
} coll_call;

/* The collective reads (write 0) or writes `bytes` at p, which must be device memory. */
static dt_status dev_buffer(const char *what, const void *p, size_t bytes, int write) {
    if (bytes == 0) return DT_OK; /* NCCL accepts any pointer for nothing */
    cudaError_t e = emu_stream_access(p, bytes, write);
    if (e != cudaSuccess)
        return dist_check_fail("NCCL", what, __FILE__, __LINE__, cudaGetErrorString(e));
    return DT_OK;
}

/* Runs k now as one operation on `stream` (NULL: the legacy default stream, as for NCCL), over
 * the group's emulated communicator. */
static dt_status coll_run(const coll_call *k, void *stream) {
    cudaError_t e = emu_stream_op((cudaStream_t)stream, k->what);
    if (e != cudaSuccess)
        return dist_check_fail("NCCL", k->what, __FILE__, __LINE__, cudaGetErrorString(e));
    dt_comm *c = k->c, *dup = &((emu_nccl *)c->nccl)->dup;
    switch (k->kind) {
    case DT_COLL_ALLREDUCE:
        DT_TRY(dev_buffer(k->what, k->buf, k->count * k->esize, 1));
        return k->esize == sizeof(float)
                   ? comm_allreduce_f32(dup, (float *)k->buf, k->count, k->op)
                   : comm_allreduce_f64(dup, (double *)k->buf, k->count, k->op);
    case DT_COLL_REDUCE_SCATTER:
        DT_TRY(dev_buffer(k->what, k->in, k->count * sizeof(float), 0));
        DT_TRY(dev_buffer(k->what, k->buf, k->counts[c->rank] * sizeof(float), 1));
        return comm_reduce_scatter_f32(dup, (float *)k->buf, (const float *)k->in, k->counts);
    case DT_COLL_ALLGATHER:
        DT_TRY(dev_buffer(k->what, k->buf, k->count * sizeof(float), 1));
        return comm_allgather_f32(dup, (float *)k->buf, k->counts);
    case DT_COLL_BROADCAST:
        DT_TRY(dev_buffer(k->what, k->buf, k->count * sizeof(float), c->rank != k->root));
        return comm_broadcast_f32(dup, (float *)k->buf, k->count, k->root);
    default: return DT_ERR_INPUT;
    }
}

/* A recorded collective at a launch of its graph: a failure there is the run's end, as an
 * asynchronous NCCL error would be. */
static void coll_replay(void *arg, cudaStream_t on) {
    if (coll_run((const coll_call *)arg, on) != DT_OK) {
        dt_error("%s: a collective recorded in a CUDA graph failed at its launch",
                 ((const coll_call *)arg)->what);
        abort();
    }
}

static void coll_release(void *arg) {
    free((void *)((coll_call *)arg)->counts);
    free(arg);
}

/* k on `stream` now, or recorded when the stream is being captured. */
static dt_status coll_run_or_record(const coll_call *k, void *stream) {
    if (!emu_capturing((cudaStream_t)stream)) return coll_run(k, stream);
    coll_call *copy = malloc(sizeof *copy);
    size_t *counts = k->counts ? malloc((size_t)k->c->size * sizeof *counts) : NULL;
    if (!copy || (k->counts && !counts)) {
        free(copy);
        free(counts);
        dt_error("%s on %s: out of memory recording it", k->what, k->c->label);
        return DT_ERR_RUNTIME;
    }
    *copy = *k;
    if (counts) {
        for (int j = 0; j < k->c->size; j++) counts[j] = k->counts[j];
        copy->counts = counts;
    }
    emu_capture_call((cudaStream_t)stream, k->what, coll_replay, copy, coll_release);
    return DT_OK;
}

static dt_status check_op(dt_reduce_op op, const char *what) {
    if (op == DT_REDUCE_SUM || op == DT_REDUCE_MAX) return DT_OK;
    dt_error("%s: unknown reduction %d (expected DT_REDUCE_SUM or DT_REDUCE_MAX)", what, (int)op);
    return DT_ERR_INPUT;
}

/* Every device collective: the group's communicator (created on first use, never inside a
 * capture: the step before a recording runs every collective of it), the checks NCCL makes
 * when a call is issued, the call (run or recorded), and its bytes counted. */
static dt_status coll_issue(coll_call *k, void *stream) {
    dt_comm *c = k->c;
    if (!c || c->size <= 0) {
        dt_error("%s: the communicator is not initialised", k->what);
        return DT_ERR_INPUT;
    }
    DT_TRY(comm_nccl_init(c));
    size_t mine = 0;
    switch (k->kind) {
    case DT_COLL_ALLREDUCE: DT_TRY(check_op(k->op, k->what)); break;
    case DT_COLL_REDUCE_SCATTER:
    case DT_COLL_ALLGATHER: k->count = dist_parts_total(k->counts, c->size, c->rank, &mine); break;
    case DT_COLL_BROADCAST:
        if (k->root < 0 || k->root >= c->size) {
            dt_error("broadcast (device) on %s: root %d is not a rank of the group (size %d)",
                     c->label, k->root, c->size);
            return DT_ERR_INPUT;
        }
        break;
    default: return DT_ERR_INPUT;
    }
    DT_TRY(coll_run_or_record(k, stream));
    comm_count(c, k->kind, k->count, k->esize);
    return DT_OK;
}

dt_status comm_allreduce_f32_dev(dt_comm *c, float *buf, size_t count, dt_reduce_op op,
                                 void *stream) {
    coll_call k = {DT_COLL_ALLREDUCE, "all-reduce (device)", c, buf, NULL, count, sizeof *buf, op,
                   0, NULL};
    return coll_issue(&k, stream);
}

dt_status comm_allreduce_f64_dev(dt_comm *c, double *buf, size_t count, dt_reduce_op op,
                                 void *stream) {
    coll_call k = {DT_COLL_ALLREDUCE, "all-reduce (device)", c, buf, NULL, count, sizeof *buf, op,
                   0, NULL};
    return coll_issue(&k, stream);
}

dt_status comm_reduce_scatter_f32_dev(dt_comm *c, float *out, const float *in,
                                      const size_t *counts, void *stream) {
    coll_call k = {DT_COLL_REDUCE_SCATTER, "reduce-scatter (device)", c, out, in, 0, sizeof *out,
                   DT_REDUCE_SUM, 0, counts};
    return coll_issue(&k, stream);
}

dt_status comm_allgather_f32_dev(dt_comm *c, float *buf, const size_t *counts, void *stream) {
    coll_call k = {DT_COLL_ALLGATHER, "all-gather (device)", c, buf, NULL, 0, sizeof *buf,
                   DT_REDUCE_SUM, 0, counts};
    return coll_issue(&k, stream);
}

dt_status comm_broadcast_f32_dev(dt_comm *c, float *buf, size_t count, int root, void *stream) {
    coll_call k = {DT_COLL_BROADCAST, "broadcast (device)", c, buf, NULL, count, sizeof *buf,
                   DT_REDUCE_SUM, root, NULL};
    return coll_issue(&k, stream);
}
