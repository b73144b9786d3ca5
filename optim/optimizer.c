#include "optim/optimizer.h"

#include <math.h>
#include <string.h>

dt_status optimizer_init(dt_optimizer *o, const dt_backend *be, const dt_param_layout *layout,
                         const dt_optim_config *cfg) {
    return optimizer_init_range(o, be, layout, cfg, 0, layout->total);
}

dt_status optimizer_init_range(dt_optimizer *o, const dt_backend *be,
                               const dt_param_layout *layout, const dt_optim_config *cfg,
                               size_t first, size_t count) {
    memset(o, 0, sizeof *o);
    o->be = be;
    o->layout = layout;
    o->cfg = *cfg;
    o->first = first;
    o->count = count;
    o->m = be->alloc(count * sizeof(float));
    o->v = be->alloc(count * sizeof(float));
    o->scale = be->alloc(sizeof(float));
    if (!o->m || !o->v || !o->scale) {
        dt_error("out of memory for the AdamW state (2 x %zu floats)", count);
        optimizer_free(o);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

void optimizer_free(dt_optimizer *o) {
    if (o->be) {
        if (o->m) o->be->free(o->m);
        if (o->v) o->be->free(o->v);
        if (o->scale) o->be->free(o->scale);
    }
    memset(o, 0, sizeof *o);
}

/* Calls fn on each run of consecutive elements of the range that lie in tensors with equal
 * keys: (offset relative to the range, length, first tensor of the run). */
typedef void (*run_fn)(dt_optimizer *o, size_t rel, size_t n, const dt_tensor_spec *t,
                       void *arg);

static void for_each_run(dt_optimizer *o, int (*key)(const dt_tensor_spec *), run_fn fn,
                         void *arg) {
    const dt_param_layout *L = o->layout;
    size_t lo = o->first, hi = o->first + o->count;
    for (int i = 0; i < L->n_tensors;) {
        int j = i;
        while (j < L->n_tensors && key(&L->tensors[j]) == key(&L->tensors[i])) j++;
        size_t a = L->tensors[i].offset;
        size_t b = L->tensors[j - 1].offset + L->tensors[j - 1].numel;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        if (a < b) fn(o, a - lo, b - a, &L->tensors[i], arg);
        i = j;
    }
}

static int decay_key(const dt_tensor_spec *t) { return t->decay; }
static int replicated_key(const dt_tensor_spec *t) { return t->split == DT_SPLIT_NONE; }

typedef struct sumsq_arg {
    const float *grads;
    int skip_replicated;
    double sum;  /* host total (acc == NULL) */
    double *acc; /* else the backend double the runs add into */
} sumsq_arg;

static void sumsq_run(dt_optimizer *o, size_t rel, size_t n, const dt_tensor_spec *t, void *p) {
    sumsq_arg *a = p;
    if (a->skip_replicated && t->split == DT_SPLIT_NONE) return;
    if (a->acc)
        o->be->sumsq_accumulate(a->acc, a->grads + rel, n);
    else
        a->sum += o->be->sumsq(a->grads + rel, n);
}

double optimizer_grad_sumsq(const dt_optimizer *o, const float *grads, int skip_replicated) {
    sumsq_arg a = {grads, skip_replicated, 0.0, NULL};
    for_each_run((dt_optimizer *)o, replicated_key, sumsq_run, &a);
    return a.sum;
}

void optimizer_grad_sumsq_acc(const dt_optimizer *o, const float *grads, int skip_replicated,
                              double *acc) {
    sumsq_arg a = {grads, skip_replicated, 0.0, acc};
    for_each_run((dt_optimizer *)o, replicated_key, sumsq_run, &a);
}

double optimizer_grad_norm(const dt_optimizer *o, const float *grads) {
    return sqrt(optimizer_grad_sumsq(o, grads, 0));
}

float optimizer_clip_scale(const dt_optimizer *o, double grad_norm) {
    if (o->cfg.grad_clip <= 0 || grad_norm <= o->cfg.grad_clip || !isfinite(grad_norm))
        return 1.0f;
    return (float)(o->cfg.grad_clip / grad_norm);
}

typedef struct step_arg {
    float *params; /* at element `first` */
    const float *grads;
    float lr;
    const float *grad_scale; /* backend memory */
} step_arg;

static void step_run(dt_optimizer *o, size_t rel, size_t n, const dt_tensor_spec *t, void *p) {
    step_arg *a = p;
    const dt_optim_config *c = &o->cfg;
    float wd = t->decay ? (float)c->weight_decay : 0.0f;
    o->be->adamw_update(a->params + rel, o->m + rel, o->v + rel, a->grads + rel, n, a->lr,
                        (float)c->beta1, (float)c->beta2, (float)c->eps, wd, a->grad_scale, o->t);
}

void optimizer_step_dev(dt_optimizer *o, float *params, const float *grads, float lr,
                        const float *grad_scale) {
    o->t++;
    /* consecutive tensors with the same decay flag are updated in one call */
    step_arg a = {params + o->first, grads, lr, grad_scale};
    for_each_run(o, decay_key, step_run, &a);
}

void optimizer_step(dt_optimizer *o, float *params, const float *grads, float lr,
                    float grad_scale) {
    o->be->copy_from_host(o->scale, &grad_scale, sizeof grad_scale);
    optimizer_step_dev(o, params, grads, lr, o->scale);
}

void optimizer_step_refused(dt_optimizer *o) {
    if (o->t > 0) o->t--;
}
