/* The checkpoint index (index.h5) in memory, and the arithmetic of pieces.
 *
 * A checkpoint holds, for every tensor of the model (entry path "model/<name>") and, when it
 * carries optimizer state, its AdamW moments ("optim/m/<name>", "optim/v/<name>"), a list of
 * PIECES: rectangular blocks of the global tensor, each stored whole as the dataset at the
 * entry's path in one shard file. The pieces of an entry tile its global shape exactly (no gap,
 * no overlap).
 *
 * Who writes what (ckpt_index_build): tensor i of the saving layout's tensor-parallel slices is
 * written by the data-parallel rank i % dp of each TP group (spreading the I/O over DP), and a
 * TP-replicated tensor (split NONE) only by TP rank 0 (written once). World rank =
 * dp_rank * tp + tp_rank (dist/groups.h) = the shard number. 1-D tensors are (n, 1) here. */
#ifndef DT_CKPT_INDEX_H
#define DT_CKPT_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "launch/config.h"
#include "model/params.h"
#include "util/status.h"

#define CKPT_FORMAT_VERSION 1
#define CKPT_PATH_MAX 160 /* an entry path: "optim/m/" + a tensor name */

typedef struct dt_ckpt_meta {
    int format_version;
    int64_t step;              /* optimizer steps completed */
    uint64_t samples_consumed; /* the data position: step * train.global_batch */
    uint64_t tokens_consumed;  /* samples_consumed * train.seq_len */
    uint64_t rng_seed;         /* train.seed: initialisation and data order derive from it */
    uint64_t rng_counter;      /* the data stream's counter (= samples_consumed) */
    int64_t optimizer_t;       /* AdamW updates completed (bias correction) */
    int tp, dp, zero, world;   /* the layout it was saved with */
} dt_ckpt_meta;

typedef struct dt_ckpt_piece {
    int shard;          /* shard file number (the writer's world rank) */
    int64_t off[2];     /* first global row and column */
    int64_t shape[2];   /* rows, columns */
} dt_ckpt_piece;

typedef struct dt_ckpt_entry {
    char path[CKPT_PATH_MAX]; /* "model/<name>", "optim/m/<name>", "optim/v/<name>" */
    int ndim;
    int64_t global_shape[2];
    int n_pieces;
    dt_ckpt_piece *pieces;
} dt_ckpt_entry;

typedef struct dt_ckpt_index {
    dt_ckpt_meta meta;
    char *config_yaml; /* the resolved config (config_print), NUL-terminated */
    int n_shards;      /* shard_00000.h5 .. shard_<n-1>.h5 */
    int n_entries;
    dt_ckpt_entry *entries;
} dt_ckpt_index;

/* The entries and pieces of a checkpoint of model m saved at layout (tp, dp): every tensor, and
 * with_optim its m and v. Sets n_shards = tp * dp; leaves meta and config_yaml to the caller. */
dt_status ckpt_index_build(dt_ckpt_index *idx, const dt_model_config *m, int tp, int dp,
                           int with_optim);
void ckpt_index_free(dt_ckpt_index *idx);
/* The entry with that path; NULL when absent. */
const dt_ckpt_entry *ckpt_index_find(const dt_ckpt_index *idx, const char *path);
/* The file name of shard s ("shard_%05d.h5"), into buf. */
const char *ckpt_shard_name(char *buf, size_t n, int s);

/* Writes index.h5 at path: the metadata as attributes, the config text, the shard list, and for
 * every entry a virtual dataset of its global shape over the pieces in the shard files (source
 * names relative to index.h5's directory) with the piece table as attribute "pieces". */
dt_status ckpt_index_write(const dt_ckpt_index *idx, const char *path);
/* Reads an index.h5 back (any format version: the caller checks meta.format_version). Errors
 * name the file and what is missing (DT_ERR_INPUT). */
dt_status ckpt_index_read(dt_ckpt_index *idx, const char *path);

/* The intersection of two blocks (offsets and shapes in global coordinates): writes its offset
 * and shape and returns its number of elements (0 when they do not meet). */
int64_t ckpt_block_intersect(const int64_t a_off[2], const int64_t a_shape[2],
                             const int64_t b_off[2], const int64_t b_shape[2], int64_t out_off[2],
                             int64_t out_shape[2]);
/* The block of the global tensor that a tensor-parallel slice holds. */
void ckpt_tensor_block(const dt_tensor_spec *t, int64_t off[2], int64_t shape[2]);
/* Checks that the pieces of e tile its global shape (in bounds, disjoint, covering); on failure
 * writes a reason into why and returns 0. */
int ckpt_entry_tiles(const dt_ckpt_entry *e, char *why, size_t n);

#endif
