/* Learning-rate schedule: linear warm-up from 0 to optim.lr over optim.warmup_steps, then a
 * linear or cosine decay to optim.min_lr at the last step (or constant at optim.lr). */
#ifndef DT_SCHEDULE_H
#define DT_SCHEDULE_H

#include "launch/config.h"

/* The learning rate of 0-based step `step` of a run of `total_steps` steps. */
double lr_schedule(const dt_optim_config *o, int step, int total_steps);

#endif
