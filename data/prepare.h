/* `difftrain data prepare`: text files -> byte-level token shards with a held-out validation split.
 *
 * Documents. Each input file is one document, or, with split_on, the file is cut into documents
 * at lines equal to split_on (compared without the line's "\n" or "\r\n"; the separator lines
 * themselves are dropped; the fortune format separates with lines holding just "%"). Empty
 * documents are skipped. Each document is encoded byte by byte and followed by DT_TOKEN_EOT.
 *
 * Validation split. Whole documents, chosen by content: a document goes to validation when a
 * fixed-key 64-bit hash of its bytes, read as a fraction in [0, 1), is below val_fraction. The
 * choice is deterministic, spread evenly over all inputs (not the tail of one file), independent
 * of file order, and puts identical documents in the same split (no train/val leakage through
 * duplicates). When val_fraction > 0 and the hash leaves a split empty, the document with the
 * smallest (for validation) or largest (for training) hash moves, so both splits are non-empty.
 * A single document with val_fraction > 0 is an input error.
 *
 * Output. OUT/NAME_train_000000.bin, ... and OUT/NAME_val_000000.bin, ...: each split's token
 * stream (documents in input order) cut into shards of exactly shard_tokens tokens (the last one
 * shorter), so concatenating a split's shards in order gives back its documents. No validation
 * shard is written when val_fraction is 0. OUT is created if needed. */
#ifndef DT_PREPARE_H
#define DT_PREPARE_H

#include <stdint.h>
#include <stdio.h>

#include "util/status.h"

typedef struct dt_prepare_opts {
    const char *out_dir;
    const char *name;      /* shard file prefix */
    double val_fraction;   /* in [0, 1) */
    int bits;              /* 16 or 32 */
    uint64_t shard_tokens; /* at least 1 */
    const char *split_on;  /* NULL: one document per file */
} dt_prepare_opts;

typedef struct dt_prepare_result {
    uint64_t n_docs, n_train_docs, n_val_docs;
    uint64_t train_tokens, val_tokens; /* EOT tokens included */
    int n_train_shards, n_val_shards;
} dt_prepare_result;

/* name "data", val_fraction 0.05, bits 16, shard_tokens 100000000, split_on NULL, out_dir NULL. */
void prepare_opts_default(dt_prepare_opts *o);
/* A document's hash as a fraction in [0, 1): it goes to validation when this is below
 * val_fraction (before the non-empty fix-up above). */
double prepare_doc_fraction(const uint8_t *doc, size_t n);
/* Runs the preparation. Prints one line per shard written ("PATH: N tokens") and a summary to log
 * when log is not NULL. Errors: DT_ERR_INPUT for bad options, a missing or unreadable input, no
 * documents at all, or one document with val_fraction > 0; DT_ERR_RUNTIME for write failures
 * (a failed shard leaves no partial file behind: shards are written to PATH.tmp and renamed). */
dt_status prepare_run(dt_prepare_result *res, const dt_prepare_opts *o, const char *const *files,
                      int n_files, FILE *log);

#endif
