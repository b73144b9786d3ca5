#include "dist/buf_coll.h"

/* Nothing is ever pending: the deferred forms below are the blocking collectives (buf_coll.h). */
static dt_status wait_nothing(void) { return DT_OK; }

static const dt_buf_coll host_buf_coll = {
    .name = "mpi",
    .allreduce_f32 = comm_allreduce_f32,
    .allreduce_f64 = comm_allreduce_f64,
    .reduce_scatter_f32 = comm_reduce_scatter_f32,
    .allgather_f32 = comm_allgather_f32,
    .allreduce_f32_async = comm_allreduce_f32,
    .reduce_scatter_f32_async = comm_reduce_scatter_f32,
    .wait_all = wait_nothing,
};

const dt_buf_coll *buf_coll_host(void) { return &host_buf_coll; }
