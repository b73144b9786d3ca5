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
 * Adding a function of dist/nccl_comm.h: dev_begin, dev_buffer for each buffer, its host
 * counterpart on the duplicate, then comm_count as dist/nccl_comm.c counts it. */
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

/* Every device collective: the group's communicator (created on first use), then one operation
 * on `stream` (a cudaStream_t; NULL is the legacy default stream, as for NCCL). */
static dt_status dev_begin(dt_comm *c, const char *what, void *stream, dt_comm **dup) {
    if (!c || c->size <= 0) {
        dt_error("%s: the communicator is not initialised", what);
        return DT_ERR_INPUT;
    }
    DT_TRY(comm_nccl_init(c));
    *dup = &((emu_nccl *)c->nccl)->dup;
    cudaError_t e = emu_stream_op((cudaStream_t)stream, what);
    if (e != cudaSuccess)
        return dist_check_fail("NCCL", what, __FILE__, __LINE__, cudaGetErrorString(e));
    return DT_OK;
}

/* The collective reads (write 0) or writes `bytes` at p, which must be device memory. */
static dt_status dev_buffer(const char *what, const void *p, size_t bytes, int write) {
    if (bytes == 0) return DT_OK; /* NCCL accepts any pointer for nothing */
    cudaError_t e = emu_stream_access(p, bytes, write);
    if (e != cudaSuccess)
        return dist_check_fail("NCCL", what, __FILE__, __LINE__, cudaGetErrorString(e));
    return DT_OK;
}

static dt_status check_op(dt_reduce_op op, const char *what) {
    if (op == DT_REDUCE_SUM || op == DT_REDUCE_MAX) return DT_OK;
    dt_error("%s: unknown reduction %d (expected DT_REDUCE_SUM or DT_REDUCE_MAX)", what, (int)op);
    return DT_ERR_INPUT;
}

/* The all-reduce of count elements of esize bytes (float or double) in buf. */
static dt_status allreduce_dev(dt_comm *c, void *buf, size_t count, size_t esize,
                               dt_reduce_op op, void *stream) {
    const char *what = "all-reduce (device)";
    dt_comm *dup;
    DT_TRY(dev_begin(c, what, stream, &dup));
    DT_TRY(check_op(op, what));
    DT_TRY(dev_buffer(what, buf, count * esize, 1));
    DT_TRY(esize == sizeof(float) ? comm_allreduce_f32(dup, (float *)buf, count, op)
                                  : comm_allreduce_f64(dup, (double *)buf, count, op));
    comm_count(c, DT_COLL_ALLREDUCE, count, esize);
    return DT_OK;
}

dt_status comm_allreduce_f32_dev(dt_comm *c, float *buf, size_t count, dt_reduce_op op,
                                 void *stream) {
    return allreduce_dev(c, buf, count, sizeof *buf, op, stream);
}

dt_status comm_allreduce_f64_dev(dt_comm *c, double *buf, size_t count, dt_reduce_op op,
                                 void *stream) {
    return allreduce_dev(c, buf, count, sizeof *buf, op, stream);
}

dt_status comm_reduce_scatter_f32_dev(dt_comm *c, float *out, const float *in,
                                      const size_t *counts, void *stream) {
    const char *what = "reduce-scatter (device)";
    dt_comm *dup;
    DT_TRY(dev_begin(c, what, stream, &dup));
    size_t mine = 0, n = dist_parts_total(counts, c->size, c->rank, &mine);
    DT_TRY(dev_buffer(what, in, n * sizeof *in, 0));
    DT_TRY(dev_buffer(what, out, counts[c->rank] * sizeof *out, 1));
    DT_TRY(comm_reduce_scatter_f32(dup, out, in, counts));
    comm_count(c, DT_COLL_REDUCE_SCATTER, n, sizeof *out);
    return DT_OK;
}

dt_status comm_allgather_f32_dev(dt_comm *c, float *buf, const size_t *counts, void *stream) {
    const char *what = "all-gather (device)";
    dt_comm *dup;
    DT_TRY(dev_begin(c, what, stream, &dup));
    size_t mine = 0, n = dist_parts_total(counts, c->size, c->rank, &mine);
    DT_TRY(dev_buffer(what, buf, n * sizeof *buf, 1));
    DT_TRY(comm_allgather_f32(dup, buf, counts));
    comm_count(c, DT_COLL_ALLGATHER, n, sizeof *buf);
    return DT_OK;
}

dt_status comm_broadcast_f32_dev(dt_comm *c, float *buf, size_t count, int root, void *stream) {
    const char *what = "broadcast (device)";
    dt_comm *dup;
    DT_TRY(dev_begin(c, what, stream, &dup));
    if (root < 0 || root >= c->size) {
        dt_error("broadcast (device) on %s: root %d is not a rank of the group (size %d)",
                 c->label, root, c->size);
        return DT_ERR_INPUT;
    }
    DT_TRY(dev_buffer(what, buf, count * sizeof *buf, c->rank != root));
    DT_TRY(comm_broadcast_f32(dup, buf, count, root));
    comm_count(c, DT_COLL_BROADCAST, count, sizeof *buf);
    return DT_OK;
}
