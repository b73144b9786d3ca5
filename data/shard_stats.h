/* Summary statistics of a token shard, for `difftrain data info` and for the trainer's log.
 *
 * The unigram entropy H = -sum_v p_v log p_v over the shard's token frequencies p_v is the loss
 * (nats/token) of the best model that ignores context; the trainer prints it next to the loss so
 * that a user sees when the model has learned more than the token frequencies. */
#ifndef DT_SHARD_STATS_H
#define DT_SHARD_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "data/shard.h"
#include "util/status.h"

typedef struct dt_shard_stats {
    size_t n_tokens;
    uint32_t min_id, max_id; /* both 0 for an empty shard */
    size_t n_eot;            /* tokens equal to DT_TOKEN_EOT (256, data/tokenizer.h) */
    double entropy_nats;     /* unigram entropy in nats/token; 0 for an empty shard */
} dt_shard_stats;

/* One pass over the tokens plus a count table (dense when the id range is small, else a sorted
 * copy). DT_ERR_RUNTIME only when memory runs out. */
dt_status shard_stats_compute(dt_shard_stats *st, const dt_shard *s);
/* The unigram entropy of the shard's tokens in nats/token (divide by log 2 for bits); NAN, after
 * an error message, when memory runs out. */
double shard_unigram_entropy(const dt_shard *s);

#endif
