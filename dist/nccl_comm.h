/* The device side of a dt_comm: an NCCL communicator per group and typed device collectives with
 * the names of the host ones (dist/comm.h) plus a _dev suffix. Built only with CUDA (library
 * dt_dist_nccl). Pointers are device pointers; `stream` is a cudaStream_t passed as void * so that
 * C callers need no CUDA headers (NULL = the legacy default stream). The calls enqueue work on
 * the stream and return; the data is ready once the stream has reached that point.
 *
 * Semantics, counts (elements, never bytes), uneven parts, in-place rules and byte accounting are
 * those of the host collectives: the same counters of the same dt_comm count both.
 *
 * (Named nccl_comm.h, not nccl.h, so that no include path can resolve <nccl.h> to it.) */
#ifndef DT_NCCL_COMM_H
#define DT_NCCL_COMM_H

#include "dist/comm.h"

/* Creates c's NCCL communicator on the current CUDA device (the caller has chosen it, from the
 * world's local_rank): the group's rank 0 makes an ncclUniqueId, MPI_Bcast over c->mpi hands it
 * to the group, every rank calls ncclCommInitRank. Collective over c; the status is agreed over
 * the group, so either every rank has a communicator or none has. A no-op when c has one. The
 * device collectives call it on first use. comm_free destroys the communicator. */
dt_status comm_nccl_init(dt_comm *c);
/* Destroys c's NCCL communicator now (c stays a host communicator). */
void comm_nccl_free(dt_comm *c);

dt_status comm_allreduce_f32_dev(dt_comm *c, float *buf, size_t count, dt_reduce_op op,
                                 void *stream);
dt_status comm_allreduce_f64_dev(dt_comm *c, double *buf, size_t count, dt_reduce_op op,
                                 void *stream);
/* Equal counts map to ncclReduceScatter / ncclAllGather; uneven ones to one ncclReduce /
 * ncclBroadcast per part, fused in one NCCL group. */
dt_status comm_reduce_scatter_f32_dev(dt_comm *c, float *out, const float *in,
                                      const size_t *counts, void *stream);
dt_status comm_allgather_f32_dev(dt_comm *c, float *buf, const size_t *counts, void *stream);
dt_status comm_broadcast_f32_dev(dt_comm *c, float *buf, size_t count, int root, void *stream);

#endif
