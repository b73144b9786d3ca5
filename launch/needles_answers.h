/* Reading the answers file of `difftrain data needles` (NAME_answers.jsonl, README "Data") for
 * `difftrain eval --task needles`, and checking it against its token shard.
 *
 * The file is machine-written by data/needles.c with a fixed layout, so this is a strict reader
 * of exactly that layout (key order, spacing, number formats), not a general JSON parser: any
 * difference is an error naming FILE:LINE and what was expected there. */
#ifndef DT_NEEDLES_ANSWERS_H
#define DT_NEEDLES_ANSWERS_H

#include <stddef.h>
#include <stdint.h>

#include "data/shard.h"
#include "util/status.h"

#define DT_ANSWER_DIGITS 6

/* One query: the answer digits sit at document positions pos .. pos + 5, and the model's logits
 * at rows pos - 1 .. pos + 4 of the document predict them. */
typedef struct dt_needles_query {
    uint64_t doc;  /* document index in its file */
    int n_needles; /* the document's N */
    int pos;       /* the first answer digit's token offset from the document's start, >= 1 */
    int value_pos; /* the needle's value digits' token offset from the document's start */
    double depth;  /* the asked-for needle's requested depth, in [0, 1] */
    char answer[DT_ANSWER_DIGITS + 1];
} dt_needles_query;

typedef struct dt_needles_answers {
    uint64_t n_docs;
    int context;              /* C: tokens per document */
    dt_needles_query *queries; /* (n_queries), in document order */
    size_t n_queries;
    size_t *doc_first;        /* (n_docs + 1): queries of document k are [doc_first[k], doc_first[k+1]) */
} dt_needles_answers;

/* Reads path. DT_ERR_INPUT naming path:line for a missing file or anything unexpected: another
 * layout, doc not counting 0, 1, ..., offset != doc * length, lengths that differ between lines,
 * counts outside 1..64 or that differ from the lists, a query whose key, answer or depth is not
 * its needle's, an answer or needle outside its document. */
dt_status needles_answers_load(dt_needles_answers *a, const char *path);
/* Checks that the shard holds exactly these documents: n_docs * context tokens plus the trailing
 * end-of-text token, each answer's digits (byte tokens) at its offset and in its needle sentence. DT_ERR_INPUT naming both
 * files and the first mismatch. */
dt_status needles_answers_check_shard(const dt_needles_answers *a, const char *answers_path,
                                      const dt_shard *s);
void needles_answers_free(dt_needles_answers *a);

#endif
