/* The parallel layout's process groups. Tensor-parallel (TP) groups are tp consecutive ranks;
 * data-parallel (DP) groups stride across them:
 *     world rank r  ->  tp_rank = r % tp, dp_rank = r / tp
 *     TP group of r = { (r / tp) * tp + i : i < tp }      (ordered by tp_rank)
 *     DP group of r = { j * tp + r % tp : j < dp }        (ordered by dp_rank)
 * so that the TP group, which communicates every layer, sits on neighbouring ranks (one node). */
#ifndef DT_GROUPS_H
#define DT_GROUPS_H

#include "dist/comm.h"
#include "dist/world.h"

typedef struct dt_groups {
    dt_comm world; /* (world size) all ranks, label "world" */
    dt_comm tp;    /* (tp) label "tp"; tp.rank == tp_rank */
    dt_comm dp;    /* (dp) label "dp"; dp.rank == dp_rank */
    int tp_size, dp_size;
    int tp_rank, dp_rank;
} dt_groups;

/* Builds the three communicators for parallel.tp = tp and parallel.dp = dp; dp <= 0 means "auto"
 * (world size / tp). Requires tp >= 1 and tp * dp == the world size; otherwise returns
 * DT_ERR_INPUT on every rank (rank 0 prints the message naming parallel.tp, parallel.dp and the
 * world size) without communicating. Collective over the world. */
dt_status groups_init(dt_groups *g, const dt_world *w, int tp, int dp);
/* Frees the communicators; safe on a zeroed or freed dt_groups. */
void groups_free(dt_groups *g);

#endif
