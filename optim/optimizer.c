#include "optim/optimizer.h"

#include <math.h>
#include <string.h>

dt_status optimizer_init(dt_optimizer *o, const dt_backend *be, const dt_param_layout *layout,
                         const dt_optim_config *cfg) {
    memset(o, 0, sizeof *o);
    o->be = be;
    o->layout = layout;
    o->cfg = *cfg;
    o->m = be->alloc(layout->total * sizeof(float));
    o->v = be->alloc(layout->total * sizeof(float));
    if (!o->m || !o->v) {
        dt_error("out of memory for the AdamW state (2 x %zu floats)", layout->total);
        optimizer_free(o);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

void optimizer_free(dt_optimizer *o) {
    if (o->be) {
        if (o->m) o->be->free(o->m);
        if (o->v) o->be->free(o->v);
    }
    memset(o, 0, sizeof *o);
}

double optimizer_grad_norm(const dt_optimizer *o, const float *grads) {
    return sqrt(o->be->sumsq(grads, o->layout->total));
}

float optimizer_clip_scale(const dt_optimizer *o, double grad_norm) {
    if (o->cfg.grad_clip <= 0 || grad_norm <= o->cfg.grad_clip || !isfinite(grad_norm))
        return 1.0f;
    return (float)(o->cfg.grad_clip / grad_norm);
}

void optimizer_step(dt_optimizer *o, float *params, const float *grads, float lr,
                    float grad_scale) {
    const dt_optim_config *c = &o->cfg;
    o->t++;
    /* consecutive tensors with the same decay flag are updated in one call */
    const dt_param_layout *L = o->layout;
    for (int i = 0; i < L->n_tensors;) {
        int j = i;
        size_t n = 0;
        while (j < L->n_tensors && L->tensors[j].decay == L->tensors[i].decay)
            n += L->tensors[j++].numel;
        size_t off = L->tensors[i].offset;
        float wd = L->tensors[i].decay ? (float)c->weight_decay : 0.0f;
        o->be->adamw_update(params + off, o->m + off, o->v + off, grads + off, n, lr,
                            (float)c->beta1, (float)c->beta2, (float)c->eps, wd, grad_scale, o->t);
        i = j;
    }
}
