/* AdamW over a contiguous range of a model's flat parameter buffer: decoupled weight decay on
 * the tensors the layout marks (none on norms, gains, lambda vectors), global gradient-norm
 * clipping, and the moments m and v in one allocation each (backend memory, the layout's
 * order). The range is the whole buffer without ZeRO, or this data-parallel rank's shard of it
 * with ZeRO (optim/zero.h): the optimizer state then exists once over the DP group. */
#ifndef DT_OPTIMIZER_H
#define DT_OPTIMIZER_H

#include "launch/config.h"
#include "model/backend.h"
#include "model/params.h"

typedef struct dt_optimizer {
    const dt_backend *be;
    const dt_param_layout *layout; /* borrowed from the model */
    dt_optim_config cfg;
    size_t first, count; /* the range of the flat buffer this optimizer updates */
    float *m;            /* (count) first moments */
    float *v;            /* (count) second moments */
    float *scale;        /* (1) backend memory: the grad_scale of optimizer_step's updates */
    int t;               /* completed updates; the next update uses t + 1 for bias correction */
} dt_optimizer;

/* An optimizer for the whole buffer (layout->total elements). */
dt_status optimizer_init(dt_optimizer *o, const dt_backend *be, const dt_param_layout *layout,
                         const dt_optim_config *cfg);
/* An optimizer for elements [first, first + count) of the buffer. */
dt_status optimizer_init_range(dt_optimizer *o, const dt_backend *be,
                               const dt_param_layout *layout, const dt_optim_config *cfg,
                               size_t first, size_t count);
void optimizer_free(dt_optimizer *o);

/* Sum of squares of the gradients of the range, accumulated in double; grads points at the
 * gradient of element `first`. With skip_replicated, tensors that are replicated over tensor
 * parallelism are left out (so that a sum over the TP group counts them once). */
double optimizer_grad_sumsq(const dt_optimizer *o, const float *grads, int skip_replicated);
/* optimizer_grad_sumsq without a read-back: adds the sum of squares into *acc (one double in
 * backend memory), run by run in the same order, so the total has the same bits. */
void optimizer_grad_sumsq_acc(const dt_optimizer *o, const float *grads, int skip_replicated,
                              double *acc);
/* The L2 norm of all gradients of the range (a single rank's global norm). */
double optimizer_grad_norm(const dt_optimizer *o, const float *grads);
/* The factor that clipping applies to the gradients for a given global norm (1 when the norm is
 * within optim.grad_clip or clipping is off). */
float optimizer_clip_scale(const dt_optimizer *o, double grad_norm);
/* One AdamW update at learning rate lr: params points at the whole flat buffer, grads at the
 * gradient of element `first`; the update uses grads * grad_scale. The factor is uploaded first
 * (on a GPU that waits for the device; the trainer's step uses optimizer_step_dev). */
void optimizer_step(dt_optimizer *o, float *params, const float *grads, float lr,
                    float grad_scale);
/* The same with the factor read by the backend from *grad_scale (one float in backend memory,
 * backend op clip_scale), so that nothing waits for the device. A non-finite *grad_scale makes
 * the backend leave params, m and v unchanged; t counts the update all the same, until the
 * caller, having read back that the step was refused, calls optimizer_step_refused. */
void optimizer_step_dev(dt_optimizer *o, float *params, const float *grads, float lr,
                        const float *grad_scale);
/* Undoes the count of the last optimizer_step_dev, whose update the backend skipped: the state
 * is then that of a step never taken. */
void optimizer_step_refused(dt_optimizer *o);

#endif
