#include "launch/comm_plan.h"

#include "dist/comm.h"

dt_comm_bytes comm_plan_step_bytes(const dt_config *c, const dt_model *m) {
    int tp = c->parallel.tp, dp = c->parallel.dp, zero = c->parallel.zero;
    int accum = c->train.global_batch / (c->train.micro_batch * dp);
    size_t N = (size_t)c->train.micro_batch * c->train.seq_len, D = c->model.d_model;
    size_t L = (size_t)c->model.n_layers, P = m->layout.total, partial = 0;
    for (int i = 0; i < m->layout.n_tensors; i++)
        if (m->layout.tensors[i].tp_partial) partial += m->layout.tensors[i].numel;

    /* per micro-batch, in f32 elements all-reduced over TP: the embedding and the two
     * row-parallel projections of each layer forward, the vocab-parallel loss (row max, then sum
     * of exponentials and target logit), and the norm inputs' gradients backward */
    size_t forward = N * D * (1 + 2 * L) + 3 * N;
    size_t backward = N * D * (1 + 2 * L);
    /* train.recompute: the backward re-runs layers 0 .. L-2 (the last is still in the shared
     * activations), each with the attention's out_proj all-reduce; the FFN's down projection is
     * not re-run (model_init_opts in model/model.h) */
    if (c->train.recompute && L > 0) backward += N * D * (L - 1);
    size_t tp_f32 = (size_t)accum * (forward + backward) + (zero == 2 ? (size_t)accum : 1) * partial;
    dt_comm_bytes b;
    b.tp = comm_bytes_allreduce(tp, tp_f32, sizeof(float)) +
           comm_bytes_allreduce(tp, 1, sizeof(double)); /* the gradient norm */

    /* the gradients' reduction moves the same bytes whether it goes by layer during the backward
     * (parallel.overlap_grad_reduce) or whole after it: the buckets partition the buffer, and
     * each collective's bytes are linear in its elements */
    b.dp = comm_bytes_allreduce(dp, 1, sizeof(double)); /* the step's loss */
    switch (zero) {
    case 0: b.dp += comm_bytes_allreduce(dp, P, sizeof(float)); break;
    case 1:
        b.dp += comm_bytes_reduce_scatter(dp, P, sizeof(float)) +
                comm_bytes_allgather(dp, P, sizeof(float));
        break;
    default:
        b.dp += (uint64_t)accum * comm_bytes_reduce_scatter(dp, P, sizeof(float)) +
                comm_bytes_allgather(dp, P, sizeof(float));
        break;
    }
    if (zero > 0) b.dp += comm_bytes_allreduce(dp, 1, sizeof(double)); /* sharded norm */
    return b;
}
