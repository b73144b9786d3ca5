#include "launch/needles_answers.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "util/alloc.h"

/* data/needles.c's limits and sentence layout, repeated here: the answers file is the contract */
#define MAX_NEEDLES 64
#define KEY_MIN 4
#define KEY_MAX 8
#define NEEDLE_VALUE_SKIP 24 /* "The magic number of " (20) + KEY + " is " (4), less KEY */

/* A cursor over one line; the first error is reported with the line number and the column. */
typedef struct cursor {
    const char *p, *line_start;
    const char *path;
    long line;
} cursor;

static dt_status cfail(const cursor *c, const char *what) {
    dt_error("%s:%ld:%ld: expected %s", c->path, c->line, (long)(c->p - c->line_start) + 1, what);
    return DT_ERR_INPUT;
}

static dt_status lit(cursor *c, const char *s) {
    size_t n = strlen(s);
    if (strncmp(c->p, s, n) != 0) {
        char what[80];
        snprintf(what, sizeof what, "'%s'", s);
        return cfail(c, what);
    }
    c->p += n;
    return DT_OK;
}

/* A decimal integer without sign or leading zeros, at most max. */
static dt_status uint_at(cursor *c, uint64_t max, uint64_t *out, const char *what) {
    const char *s = c->p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) return cfail(c, what);
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (max - (uint64_t)(*s - '0')) / 10) return cfail(c, what);
        v = v * 10 + (uint64_t)(*s - '0');
    }
    c->p = s;
    *out = v;
    return DT_OK;
}

static dt_status int_at(cursor *c, int lo, int hi, int *out, const char *what) {
    uint64_t v;
    const char *start = c->p;
    DT_TRY(uint_at(c, (uint64_t)hi, &v, what));
    if ((int)v < lo) {
        c->p = start;
        return cfail(c, what);
    }
    *out = (int)v;
    return DT_OK;
}

/* %.6f of a depth in [0, 1]: "D.dddddd" with D 0 or 1 (and 1.000000 only). */
static dt_status depth_at(cursor *c, double *out) {
    const char *s = c->p;
    const char *what = "a depth 0.dddddd or 1.000000";
    if ((s[0] != '0' && s[0] != '1') || s[1] != '.') return cfail(c, what);
    for (int i = 2; i < 8; i++)
        if (s[i] < '0' || s[i] > '9' || (s[0] == '1' && s[i] != '0')) return cfail(c, what);
    *out = strtod(s, NULL);
    c->p = s + 8;
    return DT_OK;
}

/* A quoted string of lo..hi characters from a set: lowercase letters (key) or digits, the first
 * 1-9 (value). */
static dt_status word_at(cursor *c, char *out, int lo, int hi, int digits, const char *what) {
    const char *s = c->p;
    if (*s++ != '"') return cfail(c, what);
    int n = 0;
    for (; n <= hi && (digits ? (s[n] >= '0' && s[n] <= '9') : (s[n] >= 'a' && s[n] <= 'z')); n++) {
    }
    if (n < lo || n > hi || s[n] != '"' || (digits && s[0] == '0')) return cfail(c, what);
    memcpy(out, s, (size_t)n);
    out[n] = 0;
    c->p = s + n + 1;
    return DT_OK;
}

typedef struct needle_rec {
    char key[KEY_MAX + 1];
    char value[DT_ANSWER_DIGITS + 1];
    uint64_t offset;
    double depth;
} needle_rec;

static dt_status push_query(dt_needles_answers *a, size_t *cap, const dt_needles_query *q) {
    if (a->n_queries == *cap) {
        size_t ncap = *cap ? 2 * *cap : 256;
        dt_needles_query *n = dt_realloc(a->queries, ncap * sizeof *n);
        if (!n) {
            dt_error("out of memory for %zu needle queries", ncap);
            return DT_ERR_RUNTIME;
        }
        a->queries = n;
        *cap = ncap;
    }
    a->queries[a->n_queries++] = *q;
    return DT_OK;
}

static dt_status push_doc(dt_needles_answers *a, size_t *cap) {
    if (a->n_docs + 2 > *cap) {
        size_t ncap = *cap ? 2 * *cap : 256;
        size_t *n = dt_realloc(a->doc_first, ncap * sizeof *n);
        if (!n) {
            dt_error("out of memory for %zu needle documents", ncap);
            return DT_ERR_RUNTIME;
        }
        a->doc_first = n;
        *cap = ncap;
    }
    a->doc_first[++a->n_docs] = a->n_queries;
    return DT_OK;
}

/* One line: {"doc": K, "offset": K*C, "length": C, "needles": N, "queries": R,
 * "haystack_tokens": H, "needle": [{"key", "value", "offset", "depth"} x N],
 * "query": [{"needle", "key", "answer", "offset", "depth"} x R]} */
static dt_status parse_line(cursor *c, dt_needles_answers *a, size_t *qcap) {
    uint64_t doc, off, len, hay;
    int nn, nq;
    needle_rec nd[MAX_NEEDLES];
    DT_TRY(lit(c, "{\"doc\": "));
    DT_TRY(uint_at(c, UINT64_MAX, &doc, "the document index"));
    if (doc != a->n_docs) {
        dt_error("%s:%ld: doc %" PRIu64 ", expected %" PRIu64 " (documents in order from 0)",
                 c->path, c->line, doc, a->n_docs);
        return DT_ERR_INPUT;
    }
    DT_TRY(lit(c, ", \"offset\": "));
    DT_TRY(uint_at(c, UINT64_MAX, &off, "the document's token offset"));
    DT_TRY(lit(c, ", \"length\": "));
    DT_TRY(uint_at(c, 1u << 30, &len, "the document length (tokens)"));
    if (a->n_docs == 0) a->context = (int)len;
    if (len != (uint64_t)a->context || len < 2) {
        dt_error("%s:%ld: length %" PRIu64 ", expected %d as on line 1 (and at least 2)", c->path,
                 c->line, len, a->context);
        return DT_ERR_INPUT;
    }
    if (off != doc * len) {
        dt_error("%s:%ld: offset %" PRIu64 ", expected doc * length = %" PRIu64, c->path, c->line,
                 off, doc * len);
        return DT_ERR_INPUT;
    }
    DT_TRY(lit(c, ", \"needles\": "));
    DT_TRY(int_at(c, 1, MAX_NEEDLES, &nn, "a number of needles in 1..64"));
    DT_TRY(lit(c, ", \"queries\": "));
    DT_TRY(int_at(c, 1, nn, &nq, "a number of queries in 1..needles"));
    DT_TRY(lit(c, ", \"haystack_tokens\": "));
    DT_TRY(uint_at(c, len, &hay, "a haystack length no longer than the document"));
    DT_TRY(lit(c, ", \"needle\": ["));
    for (int i = 0; i < nn; i++) {
        DT_TRY(lit(c, i ? ", {\"key\": " : "{\"key\": "));
        DT_TRY(word_at(c, nd[i].key, KEY_MIN, KEY_MAX, 0, "a key of 4 to 8 lowercase letters"));
        DT_TRY(lit(c, ", \"value\": "));
        DT_TRY(word_at(c, nd[i].value, DT_ANSWER_DIGITS, DT_ANSWER_DIGITS, 1,
                       "a value of 6 digits, the first 1-9"));
        DT_TRY(lit(c, ", \"offset\": "));
        DT_TRY(uint_at(c, UINT64_MAX, &nd[i].offset, "the needle's token offset"));
        if (nd[i].offset < off ||
            nd[i].offset + NEEDLE_VALUE_SKIP + strlen(nd[i].key) + DT_ANSWER_DIGITS > off + len)
            return cfail(c, "a needle sentence inside its document (the offset before)");
        DT_TRY(lit(c, ", \"depth\": "));
        DT_TRY(depth_at(c, &nd[i].depth));
        DT_TRY(lit(c, "}"));
    }
    DT_TRY(lit(c, "], \"query\": ["));
    for (int j = 0; j < nq; j++) {
        dt_needles_query q;
        int k;
        char key[KEY_MAX + 1];
        uint64_t qoff;
        memset(&q, 0, sizeof q);
        DT_TRY(lit(c, j ? ", {\"needle\": " : "{\"needle\": "));
        DT_TRY(int_at(c, 0, nn - 1, &k, "the index of one of the document's needles"));
        DT_TRY(lit(c, ", \"key\": "));
        DT_TRY(word_at(c, key, KEY_MIN, KEY_MAX, 0, "a key of 4 to 8 lowercase letters"));
        if (strcmp(key, nd[k].key) != 0) return cfail(c, "the key of the needle the query names");
        DT_TRY(lit(c, ", \"answer\": "));
        DT_TRY(word_at(c, q.answer, DT_ANSWER_DIGITS, DT_ANSWER_DIGITS, 1,
                       "an answer of 6 digits, the first 1-9"));
        if (strcmp(q.answer, nd[k].value) != 0)
            return cfail(c, "the value of the needle the query names as the answer");
        DT_TRY(lit(c, ", \"offset\": "));
        DT_TRY(uint_at(c, UINT64_MAX, &qoff, "the first answer digit's token offset"));
        /* rows pos-1 .. pos+4 of the document predict the digits: all inside it */
        if (qoff < off + 1 || qoff - off + DT_ANSWER_DIGITS > len - 1)
            return cfail(c, "an answer inside its document, after its first token and before its "
                            "last (the offset before)");
        DT_TRY(lit(c, ", \"depth\": "));
        DT_TRY(depth_at(c, &q.depth));
        if (q.depth != nd[k].depth) return cfail(c, "the depth of the needle the query names");
        DT_TRY(lit(c, "}"));
        q.doc = doc;
        q.n_needles = nn;
        q.pos = (int)(qoff - off);
        q.value_pos = (int)(nd[k].offset - off + NEEDLE_VALUE_SKIP + strlen(nd[k].key));
        DT_TRY(push_query(a, qcap, &q));
    }
    DT_TRY(lit(c, "]}"));
    if (*c->p) return cfail(c, "the end of the line after '}'");
    return DT_OK;
}

dt_status needles_answers_load(dt_needles_answers *a, const char *path) {
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (!f) {
        dt_error("%s: cannot open the answers file: %s", path, strerror(errno));
        return DT_ERR_INPUT;
    }
    dt_status st = DT_OK;
    char *buf = NULL;
    size_t bufcap = 0, qcap = 0, dcap = 0;
    ssize_t n;
    long line = 0;
    a->doc_first = dt_malloc(256 * sizeof *a->doc_first);
    if (a->doc_first) {
        dcap = 256;
        a->doc_first[0] = 0;
    } else {
        dt_error("out of memory for the needle documents");
        st = DT_ERR_RUNTIME;
    }
    while (st == DT_OK && (n = getline(&buf, &bufcap, f)) >= 0) {
        line++;
        cursor c = {buf, buf, path, line};
        if (n == 0 || buf[n - 1] != '\n' || strlen(buf) != (size_t)n) {
            st = cfail(&c, "a line ending in a newline, without NUL bytes");
            break;
        }
        buf[n - 1] = 0;
        st = parse_line(&c, a, &qcap);
        if (st == DT_OK) st = push_doc(a, &dcap);
    }
    if (st == DT_OK && ferror(f)) {
        dt_error("%s: read error", path);
        st = DT_ERR_INPUT;
    }
    if (st == DT_OK && a->n_docs == 0) {
        dt_error("%s: no documents (an empty answers file)", path);
        st = DT_ERR_INPUT;
    }
    free(buf); /* getline's buffer comes from malloc */
    fclose(f);
    if (st != DT_OK) needles_answers_free(a);
    return st;
}

dt_status needles_answers_check_shard(const dt_needles_answers *a, const char *answers_path,
                                      const dt_shard *s) {
    uint64_t want = a->n_docs * (uint64_t)a->context + 1;
    if ((uint64_t)s->n_tokens != want || shard_token(s, s->n_tokens - 1) != DT_TOKEN_EOT) {
        dt_error("%s: %zu tokens, but %s describes %" PRIu64 " documents of %d tokens: expected "
                 "%" PRIu64 " (the documents and one trailing end-of-text token, %d); are these the "
                 "shard and answers of one `difftrain data needles` run?",
                 s->path, s->n_tokens, answers_path, a->n_docs, a->context, want, DT_TOKEN_EOT);
        return DT_ERR_INPUT;
    }
    for (size_t i = 0; i < a->n_queries; i++) {
        const dt_needles_query *q = &a->queries[i];
        uint64_t start = q->doc * (uint64_t)a->context;
        for (int j = 0; j < DT_ANSWER_DIGITS; j++) {
            uint32_t want_tok = (uint32_t)(unsigned char)q->answer[j];
            uint64_t at[2] = {start + (uint64_t)q->pos + (uint64_t)j,
                              start + (uint64_t)q->value_pos + (uint64_t)j};
            for (int w = 0; w < 2; w++) {
                uint32_t t = shard_token(s, (size_t)at[w]);
                if (t != want_tok) {
                    dt_error("%s: token %" PRIu64 " is %u, but %s (doc %" PRIu64 ") puts %s digit "
                             "'%c' of answer %s there: the shard and the answers do not match",
                             s->path, at[w], t, answers_path, q->doc,
                             w ? "the needle's" : "the query's", q->answer[j], q->answer);
                    return DT_ERR_INPUT;
                }
            }
        }
    }
    return DT_OK;
}

void needles_answers_free(dt_needles_answers *a) {
    dt_free(a->queries);
    dt_free(a->doc_first);
    memset(a, 0, sizeof *a);
}
