/* Host collectives over MPI. The typed public functions are thin wrappers of one generic
 * implementation per collective that takes the MPI datatype and the element size, so the type
 * safety lives in the header and the chunking logic exists once. */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "dist/check.h"
#include "dist/comm.h"
#include "dist/partition.h"

/* MPI counts and displacements are int. Beyond that, calls are chunked; the limit can be lowered
 * by tests so that small buffers take the same paths as huge ones. */
static size_t comm_chunk_elems = INT_MAX;

void comm_set_chunk_limit(size_t elems) {
    comm_chunk_elems = (elems == 0 || elems > (size_t)INT_MAX) ? (size_t)INT_MAX : elems;
}

/* Uneven collectives need int count and displacement arrays of p entries. They live on the
 * stack, so that no rank can take a different path than the others because an allocation failed
 * on it; larger groups use the per-part path, which needs no arrays. */
#define COMM_STACK_PARTS 1024

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static dt_status comm_ready(const dt_comm *c, const char *what) {
    if (!c || c->size <= 0) {
        dt_error("%s: the communicator is not initialised", what);
        return DT_ERR_INPUT;
    }
    return DT_OK;
}

static dt_status mpi_op_of(dt_reduce_op op, MPI_Op *out, const char *what) {
    switch (op) {
    case DT_REDUCE_SUM: *out = MPI_SUM; return DT_OK;
    case DT_REDUCE_MAX: *out = MPI_MAX; return DT_OK;
    }
    dt_error("%s: unknown reduction %d (expected DT_REDUCE_SUM or DT_REDUCE_MAX)", what, (int)op);
    return DT_ERR_INPUT;
}

static dt_status allreduce(dt_comm *c, void *buf, size_t count, MPI_Datatype type, size_t esize,
                           dt_reduce_op op) {
    DT_TRY(comm_ready(c, "all-reduce"));
    MPI_Op mop;
    DT_TRY(mpi_op_of(op, &mop, "all-reduce"));
    char *b = buf;
    for (size_t off = 0; off < count; off += comm_chunk_elems) {
        int len = (int)min_size(comm_chunk_elems, count - off);
        DT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, b + off * esize, len, type, mop, c->mpi));
    }
    comm_count(c, DT_COLL_ALLREDUCE, count, esize);
    return DT_OK;
}

/* The single-call path: every count and displacement fits an int. */
static int fits_one_call(int p, size_t n) {
    return p <= COMM_STACK_PARTS && n <= comm_chunk_elems;
}

static dt_status reduce_scatter(dt_comm *c, void *out, const void *in, const size_t *counts,
                                MPI_Datatype type, size_t esize) {
    DT_TRY(comm_ready(c, "reduce-scatter"));
    const int p = c->size, r = c->rank;
    size_t my_off = 0;
    const size_t n = dist_parts_total(counts, p, r, &my_off), mine = counts[r];
    const char *inb = in;
    char *outb = out;
    const int in_place = outb == inb + my_off * esize;
    if (!in_place && mine > 0) {
        uintptr_t o0 = (uintptr_t)outb, o1 = o0 + mine * esize;
        uintptr_t i0 = (uintptr_t)inb, i1 = i0 + n * esize;
        if (o0 < i1 && i0 < o1) {
            dt_error("reduce-scatter on %s: out overlaps in without being this rank's part of it "
                     "(in place needs out == in + %zu elements)", c->label, my_off);
            return DT_ERR_INPUT;
        }
    }
    if (fits_one_call(p, n)) {
        int icounts[COMM_STACK_PARTS];
        for (int j = 0; j < p; j++) icounts[j] = (int)counts[j];
        if (in_place) {
            /* MPI's in-place form reads the whole input from recvbuf and leaves this rank's
             * result at its start; NCCL's leaves it at the part's own offset. Move it there. */
            char *full = outb - my_off * esize;
            DT_MPI_CHECK(MPI_Reduce_scatter(MPI_IN_PLACE, full, icounts, type, MPI_SUM, c->mpi));
            if (mine > 0 && my_off > 0) memmove(outb, full, mine * esize);
        } else {
            DT_MPI_CHECK(MPI_Reduce_scatter(in, out, icounts, type, MPI_SUM, c->mpi));
        }
    } else {
        /* One reduction to each part's owner, chunked: slower than the ring of
         * MPI_Reduce_scatter, but for counts beyond int (or huge groups) correctness is what
         * matters on the host path. */
        size_t off_j = 0;
        for (int j = 0; j < p; j++) {
            for (size_t k = 0; k < counts[j]; k += comm_chunk_elems) {
                int len = (int)min_size(comm_chunk_elems, counts[j] - k);
                const char *src = inb + (off_j + k) * esize;
                if (j != r)
                    DT_MPI_CHECK(MPI_Reduce(src, NULL, len, type, MPI_SUM, j, c->mpi));
                else if (in_place)
                    DT_MPI_CHECK(MPI_Reduce(MPI_IN_PLACE, outb + k * esize, len, type, MPI_SUM, j,
                                            c->mpi));
                else
                    DT_MPI_CHECK(MPI_Reduce(src, outb + k * esize, len, type, MPI_SUM, j, c->mpi));
            }
            off_j += counts[j];
        }
    }
    comm_count(c, DT_COLL_REDUCE_SCATTER, n, esize);
    return DT_OK;
}

static dt_status allgather(dt_comm *c, void *buf, const size_t *counts, MPI_Datatype type,
                           size_t esize) {
    DT_TRY(comm_ready(c, "all-gather"));
    const int p = c->size;
    size_t my_off = 0;
    const size_t n = dist_parts_total(counts, p, c->rank, &my_off);
    char *b = buf;
    if (fits_one_call(p, n)) {
        int icounts[COMM_STACK_PARTS], idispls[COMM_STACK_PARTS];
        size_t off = 0;
        for (int j = 0; j < p; j++) {
            icounts[j] = (int)counts[j];
            idispls[j] = (int)off;
            off += counts[j];
        }
        DT_MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, icounts, idispls,
                                    type, c->mpi));
    } else {
        /* Each owner broadcasts its part, chunked (see reduce_scatter). */
        size_t off_j = 0;
        for (int j = 0; j < p; j++) {
            for (size_t k = 0; k < counts[j]; k += comm_chunk_elems) {
                int len = (int)min_size(comm_chunk_elems, counts[j] - k);
                DT_MPI_CHECK(MPI_Bcast(b + (off_j + k) * esize, len, type, j, c->mpi));
            }
            off_j += counts[j];
        }
    }
    comm_count(c, DT_COLL_ALLGATHER, n, esize);
    return DT_OK;
}

static dt_status broadcast(dt_comm *c, void *buf, size_t count, int root, MPI_Datatype type,
                           size_t esize) {
    DT_TRY(comm_ready(c, "broadcast"));
    if (root < 0 || root >= c->size) {
        dt_error("broadcast on %s: root %d is not a rank of the group (size %d)", c->label, root,
                 c->size);
        return DT_ERR_INPUT;
    }
    char *b = buf;
    for (size_t off = 0; off < count; off += comm_chunk_elems) {
        int len = (int)min_size(comm_chunk_elems, count - off);
        DT_MPI_CHECK(MPI_Bcast(b + off * esize, len, type, root, c->mpi));
    }
    comm_count(c, DT_COLL_BROADCAST, count, esize);
    return DT_OK;
}

/* ---- the typed interface ---- */

dt_status comm_allreduce_f32(dt_comm *c, float *buf, size_t count, dt_reduce_op op) {
    return allreduce(c, buf, count, MPI_FLOAT, sizeof *buf, op);
}
dt_status comm_allreduce_f64(dt_comm *c, double *buf, size_t count, dt_reduce_op op) {
    return allreduce(c, buf, count, MPI_DOUBLE, sizeof *buf, op);
}
dt_status comm_allreduce_i64(dt_comm *c, int64_t *buf, size_t count, dt_reduce_op op) {
    return allreduce(c, buf, count, MPI_INT64_T, sizeof *buf, op);
}

dt_status comm_reduce_scatter_f32(dt_comm *c, float *out, const float *in, const size_t *counts) {
    return reduce_scatter(c, out, in, counts, MPI_FLOAT, sizeof *out);
}
dt_status comm_reduce_scatter_f64(dt_comm *c, double *out, const double *in,
                                  const size_t *counts) {
    return reduce_scatter(c, out, in, counts, MPI_DOUBLE, sizeof *out);
}

dt_status comm_allgather_f32(dt_comm *c, float *buf, const size_t *counts) {
    return allgather(c, buf, counts, MPI_FLOAT, sizeof *buf);
}
dt_status comm_allgather_f64(dt_comm *c, double *buf, const size_t *counts) {
    return allgather(c, buf, counts, MPI_DOUBLE, sizeof *buf);
}

dt_status comm_broadcast_f32(dt_comm *c, float *buf, size_t count, int root) {
    return broadcast(c, buf, count, root, MPI_FLOAT, sizeof *buf);
}
dt_status comm_broadcast_f64(dt_comm *c, double *buf, size_t count, int root) {
    return broadcast(c, buf, count, root, MPI_DOUBLE, sizeof *buf);
}
dt_status comm_broadcast_i64(dt_comm *c, int64_t *buf, size_t count, int root) {
    return broadcast(c, buf, count, root, MPI_INT64_T, sizeof *buf);
}
dt_status comm_broadcast_bytes(dt_comm *c, void *buf, size_t count, int root) {
    return broadcast(c, buf, count, root, MPI_BYTE, 1);
}
