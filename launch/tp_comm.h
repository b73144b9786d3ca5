/* The model's tensor-parallel collectives (model.h's dt_tp_comm) over the TP communicator of a
 * dt_groups, for every command that runs the model on several ranks. A collective that fails
 * leaves the group in an unknown state, so it ends the whole job (world_abort). */
#ifndef DT_TP_COMM_H
#define DT_TP_COMM_H

#include "dist/buf_coll.h"
#include "dist/groups.h"
#include "dist/world.h"
#include "model/model.h"

/* What the callbacks need; it must outlive the dt_tp_comm that points at it. */
typedef struct dt_tp_binding {
    dt_comm *tp;
    const dt_buf_coll *coll;
    const dt_world *world;
} dt_tp_binding;

/* Fills *out with g's TP rank and size and the callbacks, bound through *binding; coll moves
 * the backend's buffers (buf_coll_host() for the CPU backend, buf_coll_nccl() for the GPU). */
void tp_comm_bind(dt_tp_comm *out, dt_tp_binding *binding, dt_groups *g, const dt_buf_coll *coll,
                  const dt_world *w);

#endif
