/* `difftrain data needles`: synthetic multi-needle retrieval data (the paper's multi-needle
 * evaluation, SPEC 7), byte-level text for the byte tokenizer (data/tokenizer.h).
 *
 * A document is exactly `context` tokens, its end-of-text token included:
 *
 *   BODY "\n" QUERY_1 ... QUERY_R EOT
 *
 * BODY is haystack text with N needle sentences inserted, each
 *   "The magic number of KEY is VALUE. "
 * where the keys are distinct pseudo-words of 4 to 8 lowercase letters and the values distinct
 * 6-digit strings (first digit 1..9). Each query is
 *   "What is the magic number of KEY? VALUE\n"
 * for R distinct needles (R <= N) chosen by the seed, in a seeded order; the answer digits are the
 * tokens an evaluator scores (exact match under teacher forcing).
 *
 * Haystack. Without a haystack file: pseudo-English sentences (6 to 14 words from a fixed list of
 * English words, capitalised, ending ". "). With one: the file's text with lines equal to "%"
 * (fortune separators) removed, read from a seeded start (the start of a line) and wrapping
 * around. Either way the haystack of a document is exactly H bytes, H = the body length minus the
 * needles' length, and its last sentence may be cut.
 *
 * Needle depths. Needle i (in document order, i = 0..N-1) has a requested depth d_i in [0, 1]:
 * with a fixed depth D, d_i = D + i (1 - D) / N (the first needle at D, the others evenly spread
 * between D and the end of the haystack); with depth random (depth < 0 in the options), N
 * independent uniform draws sorted ascending. Needle i is inserted into the haystack at byte
 * position round(d_i H) moved back to the nearest sentence boundary (the haystack start or end, a
 * position after "\n", or after ". ", "! ", "? ") at most DT_NEEDLES_SNAP bytes back (else left
 * where it is), so its offset in the document is that position plus the lengths of needles
 * 0..i-1. The JSON records the requested d_i.
 *
 * Determinism. Document k is a pure function of (seed, k, the other options, the haystack file):
 * its random stream is keyed by the seed and k (util/rng.h), so it does not depend on how many
 * documents come before it. */
#ifndef DT_NEEDLES_H
#define DT_NEEDLES_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/status.h"

#define DT_NEEDLES_MAX 64       /* most needles (and queries) per document */
#define DT_NEEDLES_KEY_MIN 4    /* key letters */
#define DT_NEEDLES_KEY_MAX 8
#define DT_NEEDLES_VALUE_LEN 6  /* value digits */
#define DT_NEEDLES_SNAP 160     /* farthest a needle moves back to a sentence boundary, bytes */

typedef struct dt_needles_opts {
    const char *out_dir;
    const char *name;       /* file prefix: OUT/NAME_000000.bin, OUT/NAME_answers.jsonl */
    uint64_t n_samples;     /* documents, >= 1 */
    int n_needles;          /* N in [1, DT_NEEDLES_MAX] */
    int n_queries;          /* R in [1, N] */
    int context;            /* tokens per document, EOT included */
    double depth;           /* in [0, 1]; < 0 means random */
    uint64_t seed;
    const char *haystack;   /* a text file, or NULL for generated pseudo-English */
    int bits;               /* 16 or 32 */
} dt_needles_opts;

/* Haystack text (owned), loaded from a file; n == 0 / text == NULL means generated text. */
typedef struct dt_needles_haystack {
    uint8_t *text; /* (n) */
    size_t n;
} dt_needles_haystack;

typedef struct dt_needle {
    char key[DT_NEEDLES_KEY_MAX + 1];
    char value[DT_NEEDLES_VALUE_LEN + 1];
    size_t offset; /* token offset of the needle sentence ("The magic ...") in the document */
    double depth;  /* requested depth d_i */
} dt_needle;

typedef struct dt_needle_query {
    int needle;    /* index into needles[] of the needle asked for */
    size_t offset; /* token offset in the document of the first answer digit */
} dt_needle_query;

/* One generated document: offsets are relative to its first token. */
typedef struct dt_needles_doc {
    size_t n_tokens;    /* == context, the final EOT included */
    size_t n_haystack;  /* H, haystack bytes in the body */
    int n_needles, n_queries;
    dt_needle needles[DT_NEEDLES_MAX];        /* in document order */
    dt_needle_query queries[DT_NEEDLES_MAX]; /* in document order */
} dt_needles_doc;

/* out_dir NULL, name "needles", 100 samples, N = R = 1, context 4096, depth random, seed 0,
 * no haystack file, 16 bits. */
void needles_opts_default(dt_needles_opts *o);
/* The smallest context that holds N needles and R queries with the longest keys (so whether a
 * context is large enough does not depend on the seed): needles, queries, "\n" and EOT. */
size_t needles_min_context(int n_needles, int n_queries);
/* DT_ERR_INPUT, with a message naming the option (--needles, --queries, --context, --depth,
 * --samples, --bits, --name, --out) and what was expected, for options out of range. */
dt_status needles_check_opts(const dt_needles_opts *o);

/* Reads a haystack file (fortune separator lines dropped). A missing, unreadable or empty file is
 * DT_ERR_INPUT naming the path. */
dt_status needles_haystack_load(dt_needles_haystack *h, const char *path);
void needles_haystack_free(dt_needles_haystack *h);

/* Generates document `index` into tokens (context) and describes it in *doc. hay may be NULL or
 * empty for generated text. The options must have passed needles_check_opts (not re-checked
 * beyond a DT_ERR_INPUT for a context below needles_min_context). */
dt_status needles_make_doc(uint32_t *tokens /* (context) */, dt_needles_doc *doc,
                           const dt_needles_opts *o, const dt_needles_haystack *hay,
                           uint64_t index);

/* Writes OUT/NAME_000000.bin (the documents in order, then one extra EOT, so that a loader with
 * seq_len = context sees exactly n_samples samples, sample k = document k) and
 * OUT/NAME_answers.jsonl (one JSON object per document; README "Data" lists the fields), both
 * through PATH.tmp and a rename. Creates OUT if needed. Prints the written paths to log when not
 * NULL. Errors: DT_ERR_INPUT for bad options or haystack, DT_ERR_RUNTIME for write failures. */
dt_status needles_run(const dt_needles_opts *o, FILE *log);

#endif
