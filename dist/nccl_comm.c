#include "dist/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <string.h>

#include "dist/check.h"

static ncclComm_t nccl_of(const dt_comm *c) { return (ncclComm_t)c->nccl; }
static cudaStream_t stream_of(void *stream) { return (cudaStream_t)stream; }

static void nccl_destroy(dt_comm *c) {
    if (c->nccl) ncclCommDestroy(nccl_of(c));
    c->nccl = NULL;
    c->nccl_free = NULL;
}

void comm_nccl_free(dt_comm *c) {
    if (c) nccl_destroy(c);
}

static dt_status nccl_make_id(ncclUniqueId *id) {
    DT_NCCL_CHECK(ncclGetUniqueId(id));
    return DT_OK;
}

static dt_status nccl_init_rank(ncclComm_t *nc, int size, ncclUniqueId id, int rank) {
    DT_NCCL_CHECK(ncclCommInitRank(nc, size, id, rank));
    return DT_OK;
}

dt_status comm_nccl_init(dt_comm *c) {
    if (!c || c->size <= 0) {
        dt_error("comm_nccl_init: the communicator is not initialised");
        return DT_ERR_INPUT;
    }
    if (c->nccl) return DT_OK;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    /* A failure on rank 0 alone must not leave the others waiting in MPI_Bcast: agree first. */
    dt_status st = c->rank == 0 ? nccl_make_id(&id) : DT_OK;
    DT_TRY(dist_agree(c, st));
    DT_MPI_CHECK(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, c->mpi));
    ncclComm_t nc = NULL;
    st = nccl_init_rank(&nc, c->size, id, c->rank);
    dt_status all = dist_agree(c, st);
    if (all != DT_OK) {
        if (st == DT_OK && nc) ncclCommDestroy(nc);
        if (st == DT_OK) dt_error("comm_nccl_init on %s: another rank failed", c->label);
        return all;
    }
    c->nccl = nc;
    c->nccl_free = nccl_destroy;
    return DT_OK;
}

static dt_status nccl_ready(dt_comm *c, const char *what) {
    if (!c || c->size <= 0) {
        dt_error("%s: the communicator is not initialised", what);
        return DT_ERR_INPUT;
    }
    return comm_nccl_init(c);
}

static dt_status nccl_op_of(dt_reduce_op op, ncclRedOp_t *out, const char *what) {
    switch (op) {
    case DT_REDUCE_SUM: *out = ncclSum; return DT_OK;
    case DT_REDUCE_MAX: *out = ncclMax; return DT_OK;
    }
    dt_error("%s: unknown reduction %d (expected DT_REDUCE_SUM or DT_REDUCE_MAX)", what, (int)op);
    return DT_ERR_INPUT;
}

static dt_status allreduce_dev(dt_comm *c, void *buf, size_t count, ncclDataType_t type,
                               size_t esize, dt_reduce_op op, void *stream) {
    DT_TRY(nccl_ready(c, "all-reduce (device)"));
    ncclRedOp_t nop;
    DT_TRY(nccl_op_of(op, &nop, "all-reduce (device)"));
    DT_NCCL_CHECK(ncclAllReduce(buf, buf, count, type, nop, nccl_of(c), stream_of(stream)));
    comm_count(c, DT_COLL_ALLREDUCE, count, esize);
    return DT_OK;
}

static int counts_equal(const size_t *counts, int p) {
    for (int j = 1; j < p; j++)
        if (counts[j] != counts[0]) return 0;
    return 1;
}

/* Uneven reduce-scatter: one reduction to each part's owner. Enqueued in one NCCL group, which
 * must be closed whatever happens, hence a function returning NCCL's status for one check. */
static ncclResult_t reduce_parts(char *out, const char *in, const size_t *counts, int p, int rank,
                                 size_t esize, ncclDataType_t type, ncclComm_t nc,
                                 cudaStream_t s) {
    ncclResult_t rc = ncclGroupStart();
    if (rc != ncclSuccess) return rc;
    size_t off = 0;
    for (int j = 0; j < p && rc == ncclSuccess; j++) {
        if (counts[j] > 0)
            rc = ncclReduce(in + off * esize, j == rank ? (void *)out : NULL, counts[j], type,
                            ncclSum, j, nc, s);
        off += counts[j];
    }
    ncclResult_t end = ncclGroupEnd();
    return rc != ncclSuccess ? rc : end;
}

/* Uneven all-gather: each owner broadcasts its part in place, in one NCCL group. */
static ncclResult_t broadcast_parts(char *buf, const size_t *counts, int p, size_t esize,
                                    ncclDataType_t type, ncclComm_t nc, cudaStream_t s) {
    ncclResult_t rc = ncclGroupStart();
    if (rc != ncclSuccess) return rc;
    size_t off = 0;
    for (int j = 0; j < p && rc == ncclSuccess; j++) {
        if (counts[j] > 0)
            rc = ncclBroadcast(buf + off * esize, buf + off * esize, counts[j], type, j, nc, s);
        off += counts[j];
    }
    ncclResult_t end = ncclGroupEnd();
    return rc != ncclSuccess ? rc : end;
}

static dt_status reduce_scatter_dev(dt_comm *c, void *out, const void *in, const size_t *counts,
                                    ncclDataType_t type, size_t esize, void *stream) {
    DT_TRY(nccl_ready(c, "reduce-scatter (device)"));
    const int p = c->size;
    size_t n = 0;
    for (int j = 0; j < p; j++) n += counts[j];
    if (counts_equal(counts, p)) {
        /* NCCL's in-place convention (out == in + rank * count) is ours too */
        DT_NCCL_CHECK(ncclReduceScatter(in, out, counts[0], type, ncclSum, nccl_of(c),
                                        stream_of(stream)));
    } else {
        DT_NCCL_CHECK(reduce_parts(out, in, counts, p, c->rank, esize, type, nccl_of(c),
                                   stream_of(stream)));
    }
    comm_count(c, DT_COLL_REDUCE_SCATTER, n, esize);
    return DT_OK;
}

static dt_status allgather_dev(dt_comm *c, void *buf, const size_t *counts, ncclDataType_t type,
                               size_t esize, void *stream) {
    DT_TRY(nccl_ready(c, "all-gather (device)"));
    const int p = c->size;
    size_t n = 0;
    for (int j = 0; j < p; j++) n += counts[j];
    char *b = buf;
    if (counts_equal(counts, p)) {
        /* in place: this rank's part is at rank * count, NCCL's in-place send buffer */
        DT_NCCL_CHECK(ncclAllGather(b + (size_t)c->rank * counts[0] * esize, buf, counts[0], type,
                                    nccl_of(c), stream_of(stream)));
    } else {
        DT_NCCL_CHECK(broadcast_parts(buf, counts, p, esize, type, nccl_of(c), stream_of(stream)));
    }
    comm_count(c, DT_COLL_ALLGATHER, n, esize);
    return DT_OK;
}

static dt_status broadcast_dev(dt_comm *c, void *buf, size_t count, int root, ncclDataType_t type,
                               size_t esize, void *stream) {
    DT_TRY(nccl_ready(c, "broadcast (device)"));
    if (root < 0 || root >= c->size) {
        dt_error("broadcast (device) on %s: root %d is not a rank of the group (size %d)",
                 c->label, root, c->size);
        return DT_ERR_INPUT;
    }
    DT_NCCL_CHECK(ncclBroadcast(buf, buf, count, type, root, nccl_of(c), stream_of(stream)));
    comm_count(c, DT_COLL_BROADCAST, count, esize);
    return DT_OK;
}

dt_status comm_allreduce_f32_dev(dt_comm *c, float *buf, size_t count, dt_reduce_op op,
                                 void *stream) {
    return allreduce_dev(c, buf, count, ncclFloat32, sizeof *buf, op, stream);
}
dt_status comm_allreduce_f64_dev(dt_comm *c, double *buf, size_t count, dt_reduce_op op,
                                 void *stream) {
    return allreduce_dev(c, buf, count, ncclFloat64, sizeof *buf, op, stream);
}
dt_status comm_reduce_scatter_f32_dev(dt_comm *c, float *out, const float *in,
                                      const size_t *counts, void *stream) {
    return reduce_scatter_dev(c, out, in, counts, ncclFloat32, sizeof *out, stream);
}
dt_status comm_allgather_f32_dev(dt_comm *c, float *buf, const size_t *counts, void *stream) {
    return allgather_dev(c, buf, counts, ncclFloat32, sizeof *buf, stream);
}
dt_status comm_broadcast_f32_dev(dt_comm *c, float *buf, size_t count, int root, void *stream) {
    return broadcast_dev(c, buf, count, root, ncclFloat32, sizeof *buf, stream);
}
