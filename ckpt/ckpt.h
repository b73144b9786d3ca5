/* Sharded HDF5 checkpoints (DESIGN "Checkpoints (sharded HDF5)"; README "Checkpoints").
 *
 * A checkpoint is a directory DIR/step_%08d/ holding shard_%05d.h5, one per rank of the saving
 * layout (written independently by that rank, serial HDF5, Fletcher32 on every dataset), and
 * index.h5 (written last by rank 0: metadata, resolved config, piece tables, and virtual
 * datasets that present every tensor in its global shape; ckpt/ckpt_index.h).
 *
 * Usage from the trainer (every rank calls both; they are collective over the world):
 *   ckpt_save(&state, cfg->checkpoint.dir, &meta, &stats);
 *   ckpt_load(&state, path, DT_CKPT_RESUME, &meta);
 *
 * Memory: a save with ZeRO stage >= 1 all-gathers AdamW m and v over the data-parallel group
 * into two host temporaries of the local (TP slice) parameter count, plus one of the parameters:
 * 3 x layout.total floats per rank during the save. A load uses the same three buffers. */
#ifndef DT_CKPT_H
#define DT_CKPT_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "ckpt/ckpt_index.h"
#include "dist/groups.h"
#include "launch/config.h"
#include "model/model.h"
#include "optim/optimizer.h"
#include "optim/zero.h"

/* The trainer state a checkpoint saves and restores (all borrowed). */
typedef struct dt_ckpt_state {
    const dt_config *cfg;
    dt_model *model;
    dt_optimizer *opt;
    const dt_zero *zero;
    dt_groups *groups;
} dt_ckpt_state;

typedef struct dt_ckpt_stats {
    char path[4200];   /* the committed directory */
    double bytes;      /* written or read by all ranks together (tensor data) */
    double seconds;    /* wall time of the whole save or load, barriers included */
} dt_ckpt_stats;

typedef enum dt_ckpt_mode {
    DT_CKPT_RESUME = 0, /* weights, AdamW m, v and t, step and data position; model config equal */
    DT_CKPT_WEIGHTS,    /* weights only (checkpoint.init_from): tensor names and shapes equal */
} dt_ckpt_mode;

/* Saves the state at meta->step (the caller fills step, samples/tokens consumed, rng; the
 * layout, optimizer t and format version are filled here) into dir/step_%08d/ with the commit
 * protocol: rank 0 removes leftover *.tmp directories; all write into step_%08d.tmp/, flush,
 * close and fsync; barrier; rank 0 fsyncs, writes index.h5, renames the directory, fsyncs dir and
 * updates dir/latest by write-temp-then-rename; then rotates to checkpoint.keep_last. A
 * committed directory of the same step (from another run) is replaced. Every rank returns the
 * same status. Test hook: with DIFFTRAIN_TEST_SAVE_PAUSE=<seconds> in the environment, every
 * rank prints "checkpoint: pausing" and sleeps after its shard is on disk, before the barrier. */
dt_status ckpt_save(const dt_ckpt_state *s, const char *dir, const dt_ckpt_meta *meta,
                    dt_ckpt_stats *stats);

/* Loads the checkpoint directory `path` (a committed step directory) into the state, in any
 * layout. Before reading any tensor it checks: not a .tmp directory, index.h5 opens and its
 * format version is known, every shard file exists, every tensor of the current layout exists
 * with the same global shape (error names the first that does not, and both shapes), and the
 * model config agrees (RESUME: every model.* key and train.global_batch; WEIGHTS: model.arch).
 * Each rank then reads only the blocks it needs, straight from the shard files (a checksum
 * failure names the tensor and the file). On success *meta holds the checkpoint's metadata and,
 * for RESUME, the optimizer's t is restored. Collective; every rank returns the same status. */
dt_status ckpt_load(const dt_ckpt_state *s, const char *path, dt_ckpt_mode mode,
                    dt_ckpt_meta *meta, dt_ckpt_stats *stats);

/* What checkpoint.resume asks for, given checkpoint.dir: "never" -> found 0; "auto" -> the
 * directory dir/latest names (found 0 when there is no dir or no latest); anything else is the
 * path of a step directory (refused when it ends in .tmp). path receives the directory. */
dt_status ckpt_resolve_resume(const char *resume, const char *dir, char *path, size_t n,
                              int *found);
/* A step directory for the CLI: DIR itself when it holds index.h5, else DIR/<latest>. */
dt_status ckpt_resolve_dir(const char *dir, char *path, size_t n);

/* Compares two model configs key by key; writes the first differing key ("model.d_model") and
 * both values into why. weights_only compares only model.arch (the tensor shapes are checked
 * separately). Returns 1 when they agree. */
int ckpt_model_config_agrees(const dt_model_config *saved, const dt_model_config *now,
                             int weights_only, char *why, size_t n);

/* ---- the `difftrain ckpt` tools (no MPI needed) ---- */

/* Prints a checkpoint's metadata (step, tokens, samples, layout, format version, RNG), its
 * config text and a table of its tensors (global shape, dtype, bytes, pieces) with totals.
 * dir is a step directory or a checkpoint.dir with `latest`. */
dt_status ckpt_inspect(const char *dir, FILE *out);
/* Checks a checkpoint completely: the index opens and has a known version, every shard file
 * exists, every piece's dataset exists with the shape the index says, the pieces of every
 * tensor tile its global shape, and every chunk's checksum verifies (each piece is read
 * whole). Prints one line per problem naming the file and the tensor, then "ok" or the count.
 * Returns DT_OK, DT_ERR_RUNTIME (a damaged checkpoint) or DT_ERR_INPUT (dir is not one). */
dt_status ckpt_verify(const char *dir, FILE *out);

#endif
