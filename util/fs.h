/* File-system helpers shared by the commands that write directories (data shards, checkpoints). */
#ifndef DT_FS_H
#define DT_FS_H

#include <sys/types.h>

#include "util/status.h"

/* mkdir -p: creates `dir` and its missing parents with `mode` (before the umask); succeeds when
 * it exists already as a directory. `what` names the directory in messages ("output
 * directory"). DT_ERR_INPUT for an empty or too long path or a file in the way, DT_ERR_RUNTIME
 * for other failures (permissions, space). */
dt_status fs_make_dirs(const char *dir, mode_t mode, const char *what);

#endif
