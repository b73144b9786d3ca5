/* Collectives on buffers in a compute backend's memory, for the code that moves gradients,
 * parameters and activations (the trainer's ZeRO, the model's tensor parallelism) without
 * knowing where those buffers live: buf_coll_host() is MPI on host memory (the CPU backend),
 * buf_coll_nccl() (dist/nccl_buf_coll.h) is NCCL on device memory. Semantics, counts, in-place rules
 * and byte accounting are those of dist/comm.h's host collectives. */
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
} dt_buf_coll;

/* MPI on host buffers: comm_allreduce_f32, comm_allreduce_f64, comm_reduce_scatter_f32,
 * comm_allgather_f32. */
const dt_buf_coll *buf_coll_host(void);

#endif
