/* AdamW over a model's flat parameter buffer: decoupled weight decay on the tensors the layout
 * marks (none on norms, gains and lambda vectors), global gradient-norm clipping, and the
 * moments m and v in one allocation each (backend memory, the parameter layout's order). */
#ifndef DT_OPTIMIZER_H
#define DT_OPTIMIZER_H

#include "launch/config.h"
#include "model/backend.h"
#include "model/params.h"

typedef struct dt_optimizer {
    const dt_backend *be;
    const dt_param_layout *layout; /* borrowed from the model */
    dt_optim_config cfg;
    float *m; /* (layout->total) first moments */
    float *v; /* (layout->total) second moments */
    int t;    /* completed updates; the next update uses t + 1 for bias correction */
} dt_optimizer;

dt_status optimizer_init(dt_optimizer *o, const dt_backend *be, const dt_param_layout *layout,
                         const dt_optim_config *cfg);
void optimizer_free(dt_optimizer *o);

/* The L2 norm of all gradients, accumulated in double. */
double optimizer_grad_norm(const dt_optimizer *o, const float *grads);
/* The factor that clipping applies to the gradients for a given global norm (1 when the norm is
 * within optim.grad_clip or clipping is off). */
float optimizer_clip_scale(const dt_optimizer *o, double grad_norm);
/* One AdamW update of params from grads * grad_scale at learning rate lr. */
void optimizer_step(dt_optimizer *o, float *params, const float *grads, float lr,
                    float grad_scale);

#endif
