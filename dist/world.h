/* The process world from MPI: rank, size, host and the local rank on this node (from
 * MPI_Comm_split_type, never from launcher environment variables). A program started without
 * mpirun is a world of one (MPI singleton). */
#ifndef DT_WORLD_H
#define DT_WORLD_H

#include "util/status.h"

typedef struct dt_world {
    int rank;
    int size;
    int local_rank;
    int local_size;
    char host[256];
} dt_world;

/* MPI_Init_thread (funneled) and the queries above; also sets the rank prefix of messages. */
dt_status world_init(dt_world *w, int *argc, char ***argv);
void world_finalize(void);
/* Ends every rank of the job with the given exit status (MPI_Abort when size > 1). */
void world_abort(const dt_world *w, int status) __attribute__((noreturn));

#endif
