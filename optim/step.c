#include "optim/step.h"

#include <math.h>
#include <string.h>

enum { STEP_LOSS_SUM = 0, STEP_SUMSQ = 1, STEP_N_SUMS = 2 };

dt_status step_init(dt_step *s, const dt_backend *be) {
    memset(s, 0, sizeof *s);
    s->be = be;
    s->sums = be->alloc(STEP_N_SUMS * sizeof(double));
    s->grad_scale = be->alloc(sizeof(float));
    if (!s->sums || !s->grad_scale) {
        dt_error("out of memory for the training step's scalars");
        step_free(s);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

void step_free(dt_step *s) {
    if (s->be) {
        if (s->sums) s->be->free(s->sums);
        if (s->grad_scale) s->be->free(s->grad_scale);
    }
    memset(s, 0, sizeof *s);
}

void step_begin(dt_step *s) { s->be->memset_zero(s->sums, STEP_N_SUMS * sizeof(double)); }

void step_forward(dt_step *s, dt_model *m, const int32_t *inputs, const int32_t *targets,
                  float dloss_scale) {
    model_forward_train(m, inputs, targets, s->sums + STEP_LOSS_SUM, dloss_scale);
}

void step_forward_slot(dt_step *s, dt_model *m, int k, float dloss_scale) {
    model_forward_train_slot(m, k, s->sums + STEP_LOSS_SUM, dloss_scale);
}

void step_micro_batch(dt_step *s, dt_model *m, const int32_t *inputs, const int32_t *targets,
                      float dloss_scale) {
    step_forward(s, m, inputs, targets, dloss_scale);
    model_backward(m, dloss_scale);
}

/* A group of one rank has nothing to sum (and needs no NCCL communicator made for it). */
static int reduces(const dt_comm *c) { return c && c->size > 1; }

dt_status step_update(dt_step *s, const dt_step_groups *g, dt_optimizer *o, float *params,
                      const float *grads, float lr) {
    double *loss_sum = s->sums + STEP_LOSS_SUM, *sumsq = s->sums + STEP_SUMSQ;
    /* the global gradient norm: TP-replicated tensors counted once, the ZeRO shards summed over
     * DP; without ZeRO every DP rank holds the whole (same) gradient. The collectives and their
     * order are the trainer's of old (and `difftrain plan`'s byte count). */
    optimizer_grad_sumsq_acc(o, grads, g->skip_replicated, sumsq);
    if (reduces(g->tp)) DT_TRY(g->coll->allreduce_f64(g->tp, sumsq, 1, DT_REDUCE_SUM));
    if (reduces(g->dp) && g->grads_sharded)
        DT_TRY(g->coll->allreduce_f64(g->dp, sumsq, 1, DT_REDUCE_SUM));
    if (reduces(g->dp)) DT_TRY(g->coll->allreduce_f64(g->dp, loss_sum, 1, DT_REDUCE_SUM));
    s->be->clip_scale(s->grad_scale, sumsq, loss_sum, o->cfg.grad_clip);
    optimizer_step_dev(o, params, grads, lr, s->grad_scale);
    return DT_OK;
}

dt_status step_finish(dt_step *s, dt_optimizer *o, int step_number, int loss_div, double *loss,
                      double *grad_norm) {
    double sums[STEP_N_SUMS];
    s->be->copy_to_host(sums, s->sums, sizeof sums);
    *loss = sums[STEP_LOSS_SUM] / loss_div;
    *grad_norm = sqrt(sums[STEP_SUMSQ]);
    if (!isfinite(*loss) || !isfinite(*grad_norm)) {
        /* clip_scale saw the same sums and the backend skipped the update */
        optimizer_step_refused(o);
        dt_error("step %d: the training loss is %g and the gradient norm %g; stopping (lower "
                 "optim.lr or check the data)", step_number, *loss, *grad_norm);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}
