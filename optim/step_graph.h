/* The training step's forward and backward passes recorded once as a graph of the backend
 * (CUDA graphs, model/backend.h graph_begin ..) and replayed every step after: one call queues
 * every kernel, copy and product of every micro-batch. DIFFTRAIN_CUDA_GRAPHS=1 turns it on
 * (off by default: whether it pays is for tools/device_check.sh's bench stage to measure, which
 * runs bench/bench_gpu.sh with and without it);
 * only where the backend has graphs and the run is one rank (the collectives' streams are not
 * recorded yet). The optimizer's update stays outside (its learning rate and step number
 * change every step). */
#ifndef DT_STEP_GRAPH_H
#define DT_STEP_GRAPH_H

#include "model/backend.h"
#include "util/status.h"

typedef struct dt_step_graph {
    const dt_backend *be;
    int enabled;        /* asked for, and possible here */
    int warm;           /* an eager step ran since the last (re)start: the workspaces are sized */
    dt_graph *graph;    /* the recording, or NULL */
    int recordings;     /* made so far */
    int launches;       /* steps queued from the recording */
} dt_step_graph;

/* Reads DIFFTRAIN_CUDA_GRAPHS (0 or 1; unset: 0); single_rank: the run is one rank. Returns
 * DT_ERR_INPUT (reported) for another value. */
dt_status step_graph_init(dt_step_graph *sg, const dt_backend *be, int single_rank);
/* Queues the step's work: queue(arg) itself, or the recording of it. The first step runs
 * eagerly (it sizes the workspaces), the second is recorded and launched, the later ones are
 * launched; `recordable` 0 (a micro-batch without targets takes other branches on the host)
 * runs that step eagerly. A recording that cannot begin or end is reported once and the step
 * and all later ones run eagerly (a call CUDA refuses inside it stops the run with CUDA's error
 * and a pointer to DIFFTRAIN_CUDA_GRAPHS=0, as any failed CUDA call does); one whose memory has
 * moved is recorded again after an eager step. */
dt_status step_graph_run(dt_step_graph *sg, int recordable, dt_status (*queue)(void *),
                         void *arg);
void step_graph_free(dt_step_graph *sg);

#endif
