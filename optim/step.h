/* One training step's model and optimizer work without host synchronisation: what `difftrain
 * train` runs per step (launch/train.c, around its data loading, ZeRO calls and logging) and
 * what tests/unit/test_cuda_step.c runs on the CPU and the CUDA backends.
 *
 * The step's scalars live in backend memory: the loss of each micro-batch is added into a
 * double by the forward (model_forward_train), the gradient sum of squares into another
 * (optimizer_grad_sumsq_acc), both are summed over the tensor- and data-parallel groups by the
 * backend's collectives (dt_buf_coll allreduce_f64: NCCL on the device, MPI on the CPU's host
 * memory), the clipping factor is computed from them on the backend (clip_scale) and AdamW reads
 * it there. The host reads the two sums once, at the end (step_finish): that is the step's only
 * wait for the device. A non-finite loss or norm makes the backend skip the update (params, m
 * and v unchanged) and step_finish report it and return an error, as the trainer always did
 * before updating.
 *
 *   step_init(&s, be);
 *   per step:  model_zero_grad(m); step_begin(&s);
 *              for each micro-batch: step_micro_batch(&s, m, inputs, targets, dloss);
 *              (model_reduce_tp_grads, ZeRO's gradient reduction)
 *              step_update(&s, &groups, &opt, m->params_mem, grads, lr);
 *              (ZeRO's parameter gather)
 *              step_finish(&s, &opt, step + 1, micro_batches * dp, &loss, &grad_norm);
 *   step_free(&s);
 *
 * On the CPU backend every value has the bits of the host arithmetic it replaces. */
#ifndef DT_STEP_H
#define DT_STEP_H

#include <stdint.h>

#include "dist/buf_coll.h"
#include "model/model.h"
#include "optim/optimizer.h"

typedef struct dt_step {
    const dt_backend *be;
    double *sums;      /* (2) backend memory: {loss sum over micro-batches, grad sum of squares} */
    float *grad_scale; /* (1) backend memory: the clipping factor; NaN refuses the update */
} dt_step;

/* The groups the step's sums are reduced over. NULL, or a group of one rank: no collective. */
typedef struct dt_step_groups {
    dt_comm *tp;             /* the tensor-parallel group: the gradient sum of squares */
    dt_comm *dp;             /* the data-parallel group: the loss, and the sum of squares when
                                the gradients are sharded */
    const dt_buf_coll *coll; /* collectives on the backend's memory */
    int skip_replicated;     /* TP ranks other than 0 leave out the TP-replicated tensors, so the
                                sum over the TP group counts them once */
    int grads_sharded;       /* ZeRO stage > 0: each DP rank holds a shard of the gradients */
} dt_step_groups;

/* DT_ERR_RUNTIME (reported) when the backend is out of memory. */
dt_status step_init(dt_step *s, const dt_backend *be);
void step_free(dt_step *s);

/* At the start of a step: clears the sums. */
void step_begin(dt_step *s);
/* The training forward over host token ids: its mean loss added to the step's loss sum (and the
 * classifier's backward at dloss_scale: model_forward_train; model_backward(m, dloss_scale)
 * follows). */
void step_forward(dt_step *s, dt_model *m, const int32_t *inputs, const int32_t *targets,
                  float dloss_scale);
/* step_forward of the micro-batch staged in the model's slot k (model_stage). */
void step_forward_slot(dt_step *s, dt_model *m, int k, float dloss_scale);
/* One micro-batch: step_forward, then the backward of dloss_scale times that loss
 * (model_backward). The trainer runs the backward itself, with its gradient reduction. */
void step_micro_batch(dt_step *s, dt_model *m, const int32_t *inputs, const int32_t *targets,
                      float dloss_scale);
/* After the gradients of the optimizer's range are reduced (grads: the gradient of its element
 * `first`): the global gradient sum of squares, the sums over the groups, the clipping factor
 * and the AdamW update of params at learning rate lr, all queued on the backend. Every rank of
 * the groups calls it. Errors are those of the collectives. */
dt_status step_update(dt_step *s, const dt_step_groups *g, dt_optimizer *o, float *params,
                      const float *grads, float lr);
/* The one read-back: *loss = the loss sum / loss_div (the micro-batches over the data-parallel
 * group), *grad_norm = sqrt(sum of squares). When either is not finite the update was skipped:
 * the optimizer's count goes back (optimizer_step_refused), the error names step_number (1-based)
 * and the values, and DT_ERR_RUNTIME is returned (the same on every rank: the sums are
 * reduced). */
dt_status step_finish(dt_step *s, dt_optimizer *o, int step_number, int loss_div, double *loss,
                      double *grad_norm);

#endif
