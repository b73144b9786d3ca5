/* The file-system side of checkpoints: durable commits (fsync of files and directories, atomic
 * renames), the `latest` pointer, leftover `.tmp` directories and keep_last rotation. Plain
 * POSIX; every function reports its own errors (naming the path) and returns DT_ERR_RUNTIME. */
#ifndef DT_CKPT_FS_H
#define DT_CKPT_FS_H

#include <stddef.h>
#include <stdint.h>

#include "util/status.h"

/* "DIR/step_%08d" (tmp: with ".tmp" appended), into buf. */
void ckpt_step_path(char *buf, size_t n, const char *dir, int64_t step, int tmp);
/* Whether name is a committed checkpoint directory name, "step_" and 8 or more digits and
 * nothing else; the step into *step. */
int ckpt_parse_step_name(const char *name, int64_t *step);
/* mkdir -p with mode 0755 (util/fs.h: fs_make_dirs). */
dt_status ckpt_mkdirs(const char *path);
/* rm -rf (does not follow symbolic links). */
dt_status ckpt_rmtree(const char *path);
/* fsync of a file or a directory (opened read-only). */
dt_status ckpt_fsync_path(const char *path);
/* Atomically points DIR/latest at the step directory `name`: writes DIR/latest.tmp, fsyncs
 * it, renames it over DIR/latest and fsyncs DIR. */
dt_status ckpt_write_latest(const char *dir, const char *name);
/* The directory name DIR/latest holds, into buf; DT_ERR_INPUT when there is no latest (quietly
 * when quiet_missing) or it is not a committed step directory name. */
dt_status ckpt_read_latest(const char *dir, char *buf, size_t n, int quiet_missing);
/* Removes every `*.tmp` entry of dir (partial checkpoints of a run that died mid-save and
 * latest.tmp); returns how many were removed in *removed. */
dt_status ckpt_clean_tmp(const char *dir, int *removed);
/* Rotation: given the committed steps (any order, n of them) and keep_last (0 = keep all), marks
 * in remove[i] the steps to delete: all but the keep_last newest. Returns how many. Pure. */
int ckpt_rotation_plan(const int64_t *steps, int n, int keep_last, int *remove);
/* Lists the committed step directories of dir, then deletes those the rotation plan drops
 * (never `keep`, the checkpoint just committed). */
dt_status ckpt_rotate(const char *dir, int keep_last, int64_t keep);

#endif
