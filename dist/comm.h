/* One communicator of the distributed layer (the world, a tensor-parallel or a data-parallel
 * group) and its typed host collectives over MPI. The device collectives over NCCL, with the same
 * names and a _dev suffix, are in dist/nccl_comm.h.
 *
 * Counts are in ELEMENTS of the function's type, never bytes: there is one function per element
 * type (f32 = float, f64 = double, i64 = int64_t), so a byte/element mix-up does not compile.
 * Every rank of the group calls a collective with the same counts (and root), in the same order.
 * Counts above INT_MAX elements work: the calls are split into chunks that MPI's int counts hold.
 * Zero counts, and zero-count parts of the uneven collectives, are fine.
 *
 * Byte accounting. Every collective adds to c->bytes[kind] the bytes that the GROUP moves for it
 * under the bandwidth-optimal (ring) algorithm that NCCL uses, counted as the sum over the group's
 * p ranks of the bytes each rank sends. For n elements of b bytes (n = the total over all parts
 * for reduce-scatter and all-gather, whatever the partition):
 *     all-reduce      2 (p-1) n b     (a reduce-scatter and an all-gather)
 *     reduce-scatter    (p-1) n b     (each part travels to its owner from p-1 ranks)
 *     all-gather        (p-1) n b     (each part travels from its owner to p-1 ranks)
 *     broadcast         (p-1) n b     (each of the p-1 other ranks receives the message once)
 * and 0 when p = 1. These totals are exact integers, the same on every rank of the group, and do
 * not depend on how uneven parts are or on the direction of the ring (per-rank ring traffic does);
 * the per-rank value, total / p, is nccl-tests' "bus bytes": its bus-bandwidth factors 2(p-1)/p,
 * (p-1)/p, (p-1)/p times the operation's size. (For broadcast nccl-tests uses factor 1, the
 * traffic of the busiest link; the total here counts each forwarded copy once.) The analytic
 * helpers comm_bytes_* give the same numbers from (p, n, b), so a trainer can print the bytes a
 * step moved next to the bytes its model says it should move. Control traffic (dist_agree, the
 * NCCL bootstrap, dist_test_verdict) is not counted. */
#ifndef DT_COMM_H
#define DT_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "util/status.h"

typedef enum dt_reduce_op { DT_REDUCE_SUM = 0, DT_REDUCE_MAX } dt_reduce_op;

typedef enum dt_coll {
    DT_COLL_ALLREDUCE = 0,
    DT_COLL_REDUCE_SCATTER,
    DT_COLL_ALLGATHER,
    DT_COLL_BROADCAST,
    DT_COLL_COUNT
} dt_coll;

typedef struct dt_comm {
    MPI_Comm mpi; /* this group's own communicator (a dup or split; never MPI_COMM_WORLD itself) */
    int rank;     /* rank within the group */
    int size;     /* p; 0 when the communicator is not initialised */
    char label[16];                 /* "world", "tp", "dp": names the group in logs and errors */
    uint64_t bytes[DT_COLL_COUNT]; /* group bytes moved (convention above) since the last reset */
    uint64_t calls[DT_COLL_COUNT]; /* collectives called since the last reset */
    /* NCCL side (dist/nccl_comm.h): the ncclComm_t once comm_nccl_init ran, else NULL, and the
     * function that destroys it (so that comm_free needs no NCCL symbols). */
    void *nccl;
    void (*nccl_free)(struct dt_comm *c);
} dt_comm;

/* A communicator of all ranks (a duplicate of MPI_COMM_WORLD, so its traffic cannot match any
 * other), labelled `label`. Collective over the world. */
dt_status comm_init_world(dt_comm *c, const char *label);
/* The sub-group of parent's ranks that pass the same color, ordered by key (MPI_Comm_split).
 * Collective over parent. */
dt_status comm_init_split(dt_comm *c, const dt_comm *parent, int color, int key,
                          const char *label);
/* Frees the MPI (and NCCL) communicator; safe on a zeroed or already freed dt_comm. */
void comm_free(dt_comm *c);

/* Byte and call counters: reset, and the sum over all kinds. */
void comm_reset_bytes(dt_comm *c);
uint64_t comm_bytes_total(const dt_comm *c);
/* The counters of a stretch of work: what c counted since `before` (a copy of c's counters
 * taken earlier), and adding such a stretch to c again (work replayed where the host does not
 * see it: a CUDA graph's recorded collectives, optim/step_graph.h). */
typedef struct dt_comm_counts {
    uint64_t bytes[DT_COLL_COUNT];
    uint64_t calls[DT_COLL_COUNT];
} dt_comm_counts;
dt_comm_counts comm_counts(const dt_comm *c);
dt_comm_counts comm_counts_since(const dt_comm *c, const dt_comm_counts *before);
void comm_counts_add(dt_comm *c, const dt_comm_counts *d);
/* Analytic group bytes (convention above) of one collective over p ranks of n elements of
 * elem_bytes bytes each; n is the total over all parts for reduce-scatter and all-gather. */
uint64_t comm_bytes_allreduce(int p, size_t n, size_t elem_bytes);
uint64_t comm_bytes_reduce_scatter(int p, size_t n, size_t elem_bytes);
uint64_t comm_bytes_allgather(int p, size_t n, size_t elem_bytes);
uint64_t comm_bytes_broadcast(int p, size_t n, size_t elem_bytes);
/* Adds one collective of `kind` on n elements of elem_bytes to c's counters (used by the host
 * and the device collectives; callers outside dist/ have no reason to). */
void comm_count(dt_comm *c, dt_coll kind, size_t n, size_t elem_bytes);

/* ---- host collectives (MPI), in place where a single buffer is passed ---- */

/* buf[i] = op over the group of buf[i], for i < count. */
dt_status comm_allreduce_f32(dt_comm *c, float *buf, size_t count, dt_reduce_op op);
dt_status comm_allreduce_f64(dt_comm *c, double *buf, size_t count, dt_reduce_op op);
dt_status comm_allreduce_i64(dt_comm *c, int64_t *buf, size_t count, dt_reduce_op op);

/* Uneven reduce-scatter (sum): in holds n = sum(counts) elements, the parts of ranks 0..p-1
 * concatenated (part j at offset counts[0] + ... + counts[j-1]); out (counts[rank] elements)
 * receives the sum over the group of this rank's part. counts has p entries, equal on every
 * rank; parts may be empty. out must not overlap in, except in place: out == in + offset of this
 * rank's part (NCCL's in-place convention), after which the rest of in is unspecified. In place
 * is a choice of the whole group: on every rank or on none (MPI requires it). */
dt_status comm_reduce_scatter_f32(dt_comm *c, float *out, const float *in, const size_t *counts);
dt_status comm_reduce_scatter_f64(dt_comm *c, double *out, const double *in,
                                  const size_t *counts);

/* Uneven all-gather, in place: buf holds n = sum(counts) elements laid out as for
 * reduce-scatter; each rank has filled its own part, and afterwards every rank has all parts. */
dt_status comm_allgather_f32(dt_comm *c, float *buf, const size_t *counts);
dt_status comm_allgather_f64(dt_comm *c, double *buf, const size_t *counts);

/* buf (count elements) of rank `root` (0 <= root < p, a rank of this group) to every rank. */
dt_status comm_broadcast_f32(dt_comm *c, float *buf, size_t count, int root);
dt_status comm_broadcast_f64(dt_comm *c, double *buf, size_t count, int root);
dt_status comm_broadcast_i64(dt_comm *c, int64_t *buf, size_t count, int root);
/* Raw bytes (a struct, a string): count is in bytes here, the element being the byte. */
dt_status comm_broadcast_bytes(dt_comm *c, void *buf, size_t count, int root);

/* ---- agreement ---- */

/* The largest status over the group (all-reduce MAX): every rank gets the same status and takes
 * the same error path, so none is left waiting in a collective the others skipped. Returns
 * DT_ERR_RUNTIME if the agreement itself fails. Call it where a local failure (allocation, I/O,
 * validation of local data) would otherwise make ranks diverge. */
dt_status dist_agree(dt_comm *c, dt_status st);
/* For multi-rank tests: combines this rank's exit code (0 pass, 77 skipped, anything else a
 * failure) over MPI_COMM_WORLD and returns the code every rank should exit with: 1 if any rank
 * failed, else 77 if any rank skipped, else 0. */
int dist_test_verdict(int rc);

/* Test hook: the most elements one MPI call moves (default and maximum INT_MAX; 0 restores the
 * default). Lowering it makes small buffers exercise the chunking of large counts. */
void comm_set_chunk_limit(size_t elems);

#endif
