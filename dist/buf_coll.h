/* Collectives on buffers in a compute backend's memory, for the code that moves gradients,
 * parameters and activations (the trainer's ZeRO, the model's tensor parallelism) without
 * knowing where those buffers live: buf_coll_host() is MPI on host memory (the CPU backend),
 * buf_coll_nccl() (dist/nccl_buf_coll.h) is NCCL on device memory. Semantics, counts, in-place rules
 * and byte accounting are those of dist/comm.h's host collectives.
 *
 * Two forms. The immediate ones (allreduce_f32, reduce_scatter_f32, allgather_f32) are complete
 * for every later operation of the backend: the caller may read the result at once. The deferred
 * ones (*_async) only start the collective: its buffers belong to it, neither read nor written
 * by anyone, until wait_all() returns; after wait_all every later operation of the backend sees
 * every deferred result. They let ZeRO reduce a layer's gradients while the backward goes on
 * with the next layer (optim/zero.h, zero_reduce_range). Deferred collectives are started in the
 * same order on every rank of the group, like the immediate ones. An immediate collective on a
 * communicator with deferred work pending is ordered after that work. */
#ifndef DT_BUF_COLL_H
#define DT_BUF_COLL_H

#include "dist/comm.h"

typedef struct dt_buf_coll {
    const char *name; /* "mpi" or "nccl" */
    dt_status (*allreduce_f32)(dt_comm *c, float *buf, size_t count, dt_reduce_op op);
    /* doubles in the backend's memory: the training step's loss and gradient sum of squares */
    dt_status (*allreduce_f64)(dt_comm *c, double *buf, size_t count, dt_reduce_op op);
    dt_status (*reduce_scatter_f32)(dt_comm *c, float *out, const float *in,
                                    const size_t *counts);
    dt_status (*allgather_f32)(dt_comm *c, float *buf, const size_t *counts);
    /* deferred forms (above); counts are read before the call returns */
    dt_status (*allreduce_f32_async)(dt_comm *c, float *buf, size_t count, dt_reduce_op op);
    dt_status (*reduce_scatter_f32_async)(dt_comm *c, float *out, const float *in,
                                          const size_t *counts);
    /* every deferred collective started so far is complete for the backend's later work */
    dt_status (*wait_all)(void);
} dt_buf_coll;

/* MPI on host buffers: comm_allreduce_f32, comm_allreduce_f64, comm_reduce_scatter_f32,
 * comm_allgather_f32. The deferred forms run the blocking collective at once and wait_all has
 * nothing to wait for: on the CPU backend the backward's kernels and MPI's progress share the
 * same cores, so running the reduction beside the backward would gain little and cost
 * determinism of the timing; what this path proves is that bucketed reductions give the right
 * gradients. */
const dt_buf_coll *buf_coll_host(void);

#endif
