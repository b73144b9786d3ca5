#include "dist/buf_coll.h"

static const dt_buf_coll host_buf_coll = {
    .name = "mpi",
    .allreduce_f32 = comm_allreduce_f32,
    .allreduce_f64 = comm_allreduce_f64,
    .reduce_scatter_f32 = comm_reduce_scatter_f32,
    .allgather_f32 = comm_allgather_f32,
};

const dt_buf_coll *buf_coll_host(void) { return &host_buf_coll; }
