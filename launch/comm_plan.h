/* The bytes one training step moves in each process group, computed from the model and the
 * layout alone (dist/comm.h's convention: the sum over a group's ranks of the bytes each sends
 * under the ring algorithm). The trainer prints them next to the bytes it counted. */
#ifndef DT_COMM_PLAN_H
#define DT_COMM_PLAN_H

#include <stdint.h>

#include "launch/config.h"
#include "model/model.h"

typedef struct dt_comm_bytes {
    uint64_t tp; /* within one tensor-parallel group */
    uint64_t dp; /* within one data-parallel group */
} dt_comm_bytes;

/* For the resolved config (parallel.dp set) and this rank's model. Validation is not counted.
 * With train.recompute the backward's re-run layers add their forward's TP all-reduces; the
 * count assumes the model was initialised with c->train.recompute (model_init_opts). */
dt_comm_bytes comm_plan_step_bytes(const dt_config *c, const dt_model *m);

#endif
