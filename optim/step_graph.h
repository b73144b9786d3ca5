/* The training step's forward and backward passes recorded once as a graph of the backend
 * (CUDA graphs, model/backend.h graph_begin ..) and replayed every step after: one call queues
 * every kernel, copy, product and collective of every micro-batch. DIFFTRAIN_CUDA_GRAPHS=1
 * turns it on (off by default: whether it pays is for tools/device_check.sh's bench stage to
 * measure, which runs bench/bench_gpu.sh with and without it), where the backend has graphs.
 * On several ranks the collectives of the passes (tensor-parallel all-reduces on the
 * communication stream, the data-parallel gradient reduction on the deferred one:
 * dist/nccl_buf_coll.c) are recorded with them: the side streams join the recording through
 * the events that order them with the compute stream, and the passes end joined (ZeRO's
 * zero_finish_reduce waits for the deferred reductions). The optimizer's update stays outside
 * (its learning rate and step number change every step), and so does ZeRO's parameter
 * all-gather. The host does not see a launched graph's collectives: the byte counters of the
 * groups (dist/comm.h) count them when recorded, and the trainer adds the recording's counts at
 * each launch (`last` says which way a step ran). */
#ifndef DT_STEP_GRAPH_H
#define DT_STEP_GRAPH_H

#include "model/backend.h"
#include "util/status.h"

typedef enum dt_step_way {
    DT_STEP_ISSUED,   /* op by op */
    DT_STEP_RECORDED, /* recorded, then launched */
    DT_STEP_LAUNCHED, /* launched from the recording of an earlier step */
} dt_step_way;

typedef struct dt_step_graph {
    const dt_backend *be;
    int enabled;        /* asked for, and possible here */
    int warm;           /* an eager step ran since the last (re)start: the workspaces are sized */
    dt_graph *graph;    /* the recording, or NULL */
    int recordings;     /* made so far */
    int launches;       /* steps queued from the recording */
    dt_step_way last;   /* how the last step_graph_run queued the passes */
} dt_step_graph;

/* Reads DIFFTRAIN_CUDA_GRAPHS (0 or 1; unset: 0). Returns DT_ERR_INPUT (reported) for another
 * value. With `note`, graphs asked for on a backend without them are noted on stdout (the
 * trainer's rank 0: once a job). */
dt_status step_graph_init(dt_step_graph *sg, const dt_backend *be, int note);
/* Queues the step's work: queue(arg) itself, or the recording of it. The first step runs
 * eagerly (it sizes the workspaces), the second is recorded and launched, the later ones are
 * launched; `recordable` 0 (a micro-batch without targets takes other branches on the host)
 * runs that step eagerly. A recording that cannot begin or end is reported once and the step
 * and all later ones run eagerly (a call CUDA refuses inside it stops the run with CUDA's error
 * and a pointer to DIFFTRAIN_CUDA_GRAPHS=0, as any failed CUDA call does); one whose memory has
 * moved is recorded again after an eager step. On several ranks each rank decides alone (a
 * rank whose step runs eagerly issues the same collectives in the same order as one that
 * launches its graph). */
dt_status step_graph_run(dt_step_graph *sg, int recordable, dt_status (*queue)(void *),
                         void *arg);
void step_graph_free(dt_step_graph *sg);

#endif
