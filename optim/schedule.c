#include "optim/schedule.h"

#include <math.h>

double lr_schedule(const dt_optim_config *o, int step, int total_steps) {
    if (step < o->warmup_steps) return o->lr * (double)(step + 1) / (double)o->warmup_steps;
    if (o->decay == DT_DECAY_CONSTANT) return o->lr;
    int span = total_steps - 1 - o->warmup_steps;
    double p = span > 0 ? (double)(step - o->warmup_steps) / (double)span : 1.0;
    if (p > 1.0) p = 1.0;
    if (o->decay == DT_DECAY_COSINE) return o->min_lr + 0.5 * (o->lr - o->min_lr) * (1.0 + cos(M_PI * p));
    return o->lr + (o->min_lr - o->lr) * p;
}
