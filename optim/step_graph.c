#include "optim/step_graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dt_status step_graph_init(dt_step_graph *sg, const dt_backend *be, int note) {
    memset(sg, 0, sizeof *sg);
    sg->be = be;
    const char *env = getenv("DIFFTRAIN_CUDA_GRAPHS");
    if (!env || !*env || !strcmp(env, "0")) return DT_OK;
    if (strcmp(env, "1")) {
        dt_error("DIFFTRAIN_CUDA_GRAPHS=%s: expected 0 or 1", env);
        return DT_ERR_INPUT;
    }
    if (!be->graph_begin) {
        if (note)
            printf("note: DIFFTRAIN_CUDA_GRAPHS=1: the %s backend has no graphs; steps run as "
                   "issued\n", be->name);
    } else {
        sg->enabled = 1;
    }
    return DT_OK;
}

static void drop_graph(dt_step_graph *sg) {
    if (sg->graph) sg->be->graph_free(sg->graph);
    sg->graph = NULL;
}

dt_status step_graph_run(dt_step_graph *sg, int recordable, dt_status (*queue)(void *),
                         void *arg) {
    sg->last = DT_STEP_ISSUED;
    if (!sg->enabled || !recordable) return queue(arg);
    if (sg->graph) {
        if (sg->be->graph_launch(sg->graph)) {
            sg->launches++;
            sg->last = DT_STEP_LAUNCHED;
            return DT_OK;
        }
        drop_graph(sg); /* a workspace moved: size it eagerly, then record again */
        sg->warm = 0;
    }
    if (!sg->warm) {
        sg->warm = 1;
        return queue(arg);
    }
    if (sg->be->graph_begin() != 0) {
        sg->enabled = 0;
        printf("note: CUDA graphs: cannot record the step; steps run as issued\n");
        return queue(arg);
    }
    dt_status st = queue(arg); /* recorded, not run */
    dt_graph *g = sg->be->graph_end();
    if (st != DT_OK) {
        if (g) sg->be->graph_free(g);
        return st;
    }
    if (!g) { /* reported by the backend; the step has not run */
        sg->enabled = 0;
        printf("note: CUDA graphs: the step could not be recorded; steps run as issued\n");
        return queue(arg);
    }
    sg->graph = g;
    sg->recordings++;
    if (!sg->be->graph_launch(g)) { /* nothing can have moved since the recording */
        dt_error("CUDA graphs: the step just recorded cannot be launched");
        return DT_ERR_RUNTIME;
    }
    sg->launches++;
    sg->last = DT_STEP_RECORDED;
    return DT_OK;
}

void step_graph_free(dt_step_graph *sg) {
    if (sg->be) drop_graph(sg);
    memset(sg, 0, sizeof *sg);
}
