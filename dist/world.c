#include "dist/world.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

dt_status world_init(dt_world *w, int *argc, char ***argv) {
    memset(w, 0, sizeof *w);
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        dt_error("MPI_Init_thread failed");
        return DT_ERR_RUNTIME;
    }
    /* errors in collectives return codes instead of aborting inside the library */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &w->size);
    int len = 0;
    MPI_Get_processor_name(w->host, &len);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &w->local_rank);
    MPI_Comm_size(local, &w->local_size);
    MPI_Comm_free(&local);
    dt_log_set_rank(w->rank, w->size, w->host);
    return DT_OK;
}

void world_finalize(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

void world_abort(const dt_world *w, int status) {
    fflush(stdout);
    fflush(stderr);
    if (w && w->size > 1) MPI_Abort(MPI_COMM_WORLD, status);
    world_finalize();
    exit(status);
}
