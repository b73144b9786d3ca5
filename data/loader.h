/* A deterministic, resumable stream of training samples over a set of token shards.
 *
 * Samples. A sample is a window of seq_len+1 consecutive tokens within one shard; windows start at
 * multiples of seq_len, so sample i of a shard covers tokens [i*seq_len, i*seq_len + seq_len] and
 * a shard of n tokens holds floor((n-1)/seq_len) samples (none when n < seq_len+1). Consecutive
 * windows share one token: the last target of one is the first input of the next, so every token
 * is predicted once per epoch. Samples are numbered globally: all of the first shard's, then the
 * second's, in the order the patterns list them (each glob's matches sorted bytewise), N in all.
 *
 * The stream. Stream index n (0, 1, 2, ...) is epoch e = n / N, position p = n % N. Without
 * shuffle it is sample p; with shuffle it is sample perm_e(p), where perm_e is a seeded bijection
 * of [0, N) keyed by (seed, e) (data/perm.h), so every epoch visits every sample exactly once, in
 * an order that differs between epochs.
 *
 * Data position. A sample is a pure function of (shards, seq_len, seed, shuffle, n), so the
 * position of a run in its data is ONE global sample counter, independent of the parallel layout:
 * a step with global batch G consumes stream indices [c, c+G), however they are split among
 * data-parallel ranks and micro-batches, and a checkpoint stores only c. Resuming on any other
 * (tp, dp, zero) layout or world size continues with exactly the same samples. Nothing is read
 * ahead, so there is no loader state to save. */
#ifndef DT_LOADER_H
#define DT_LOADER_H

#include <stdint.h>

#include "data/shard.h"
#include "launch/config.h" /* DT_PATH_MAX (header only; no link dependency) */
#include "util/status.h"

typedef struct dt_loader {
    int n_shards;           /* shards that hold at least one sample */
    dt_shard *shards;       /* (n_shards), mapped read-only */
    uint64_t *first_sample; /* (n_shards + 1): global index of each shard's first sample; the last
                               entry is N */
    uint64_t n_samples;     /* N */
    int seq_len;            /* T */
    int vocab_size;
    uint64_t seed;
    int shuffle;
} dt_loader;

/* Opens every shard matched by the patterns (paths or glob(3) patterns; each pattern's matches are
 * sorted bytewise, patterns keep their order). Errors (DT_ERR_INPUT unless the system failed): a
 * pattern that matches nothing (named), a bad shard (see shard_open), seq_len or vocab_size < 1,
 * no patterns, or shards that all hold fewer than seq_len+1 tokens (naming the patterns and
 * seq_len). A shard too short for one sample is skipped with a warning. On failure *L is left
 * zeroed. */
dt_status loader_init(dt_loader *L, const char (*patterns)[DT_PATH_MAX], int n_patterns,
                      int seq_len, int vocab_size, uint64_t seed, int shuffle);
/* N, the number of samples in one epoch. */
uint64_t loader_num_samples(const dt_loader *L);
/* The global sample number (in [0, N)) that stream index n reads. */
uint64_t loader_sample_id(const dt_loader *L, uint64_t stream_index);
/* Reads the sample at stream index n: inputs (T) = window tokens 0..T-1, targets (T) = window
 * tokens 1..T. A token >= vocab_size is DT_ERR_INPUT naming the shard path, the token's index in
 * the shard and its value (the buffers are then partly written). Thread-safe: reads only. */
dt_status loader_sample(const dt_loader *L, uint64_t stream_index, int32_t *inputs /* (T) */,
                        int32_t *targets /* (T) */);
/* Unmaps every shard and frees; safe on a zeroed loader. */
void loader_free(dt_loader *L);

#endif
