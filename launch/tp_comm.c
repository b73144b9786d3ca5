#include "launch/tp_comm.h"

static void allreduce(void *ctx, float *buf, size_t n, dt_reduce_op op) {
    dt_tp_binding *b = ctx;
    if (b->coll->allreduce_f32(b->tp, buf, n, op) != DT_OK) world_abort(b->world, DT_ERR_RUNTIME);
}

static void allreduce_sum(void *ctx, float *buf, size_t n) { allreduce(ctx, buf, n, DT_REDUCE_SUM); }
static void allreduce_max(void *ctx, float *buf, size_t n) { allreduce(ctx, buf, n, DT_REDUCE_MAX); }

void tp_comm_bind(dt_tp_comm *out, dt_tp_binding *binding, dt_groups *g, const dt_buf_coll *coll,
                  const dt_world *w) {
    binding->tp = &g->tp;
    binding->coll = coll;
    binding->world = w;
    *out = (dt_tp_comm){g->tp_rank, g->tp_size, binding, allreduce_sum, allreduce_max};
}
