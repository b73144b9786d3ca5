#include "dist/groups.h"

#include <string.h>

static dt_status groups_check_layout(const dt_world *w, int tp, int *dp) {
    const char *why = NULL;
    if (tp < 1) why = "parallel.tp must be at least 1";
    else if (*dp <= 0 && w->size % tp != 0) why = "parallel.tp must divide the world size";
    else if (*dp > 0 && (long)tp * *dp != w->size)
        why = "parallel.tp * parallel.dp must equal the world size";
    if (why) {
        /* every rank reaches the same verdict from the same config; one message is enough */
        if (w->rank == 0) {
            if (*dp > 0)
                dt_error("%s: parallel.tp = %d, parallel.dp = %d (tp * dp = %ld), world size = %d "
                         "(ranks started by mpirun/srun)", why, tp, *dp, (long)tp * *dp, w->size);
            else
                dt_error("%s: parallel.tp = %d, parallel.dp = auto, world size = %d (ranks "
                         "started by mpirun/srun)", why, tp, w->size);
        }
        return DT_ERR_INPUT;
    }
    if (*dp <= 0) *dp = w->size / tp;
    return DT_OK;
}

dt_status groups_init(dt_groups *g, const dt_world *w, int tp, int dp) {
    memset(g, 0, sizeof *g);
    DT_TRY(groups_check_layout(w, tp, &dp));
    const int r = w->rank;
    dt_status st = DT_OK;
    DT_TRY_GOTO(st, comm_init_world(&g->world, "world"), fail);
    DT_TRY_GOTO(st, comm_init_split(&g->tp, &g->world, r / tp, r, "tp"), fail);
    DT_TRY_GOTO(st, comm_init_split(&g->dp, &g->world, r % tp, r, "dp"), fail);
    g->tp_size = tp;
    g->dp_size = dp;
    g->tp_rank = r % tp;
    g->dp_rank = r / tp;
    if (g->tp.size != tp || g->dp.size != dp || g->tp.rank != g->tp_rank ||
        g->dp.rank != g->dp_rank) {
        dt_error("groups_init: MPI_Comm_split gave tp %d/%d and dp %d/%d (rank/size), expected "
                 "%d/%d and %d/%d", g->tp.rank, g->tp.size, g->dp.rank, g->dp.size, g->tp_rank,
                 tp, g->dp_rank, dp);
        st = DT_ERR_RUNTIME;
        goto fail;
    }
    return DT_OK;
fail:
    groups_free(g);
    return st;
}

void groups_free(dt_groups *g) {
    comm_free(&g->dp);
    comm_free(&g->tp);
    comm_free(&g->world);
    memset(g, 0, sizeof *g);
}
