#include "data/needles.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/shard.h"
#include "data/tokenizer.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/rng.h"

#define NEEDLE_PRE "The magic number of "
#define NEEDLE_MID " is "
#define NEEDLE_END ". "
#define QUERY_PRE "What is the magic number of "
#define QUERY_MID "? "
#define QUERY_END "\n"
#define LIT_LEN(s) (sizeof(s) - 1)

void needles_opts_default(dt_needles_opts *o) {
    memset(o, 0, sizeof *o);
    o->name = "needles";
    o->n_samples = 100;
    o->n_needles = 1;
    o->n_queries = 1;
    o->context = 4096;
    o->depth = -1.0;
    o->bits = 16;
}

static size_t needle_len(size_t key_len) {
    return LIT_LEN(NEEDLE_PRE) + key_len + LIT_LEN(NEEDLE_MID) + DT_NEEDLES_VALUE_LEN +
           LIT_LEN(NEEDLE_END);
}

static size_t query_len(size_t key_len) {
    return LIT_LEN(QUERY_PRE) + key_len + LIT_LEN(QUERY_MID) + DT_NEEDLES_VALUE_LEN +
           LIT_LEN(QUERY_END);
}

size_t needles_min_context(int n_needles, int n_queries) {
    return (size_t)n_needles * needle_len(DT_NEEDLES_KEY_MAX) +
           (size_t)n_queries * query_len(DT_NEEDLES_KEY_MAX) + 2; /* "\n" before queries, EOT */
}

dt_status needles_check_opts(const dt_needles_opts *o) {
    if (!o->out_dir || !*o->out_dir) {
        dt_error("data needles: --out DIR is required");
        return DT_ERR_INPUT;
    }
    if (!o->name || !*o->name || strchr(o->name, '/')) {
        dt_error("data needles: --name '%s' must be non-empty and contain no '/'",
                 o->name ? o->name : "");
        return DT_ERR_INPUT;
    }
    if (o->n_needles < 1 || o->n_needles > DT_NEEDLES_MAX) {
        dt_error("data needles: --needles %d, expected 1 to %d", o->n_needles, DT_NEEDLES_MAX);
        return DT_ERR_INPUT;
    }
    if (o->n_queries < 1 || o->n_queries > o->n_needles) {
        dt_error("data needles: --queries %d, expected 1 to the number of needles (%d)",
                 o->n_queries, o->n_needles);
        return DT_ERR_INPUT;
    }
    if (!(o->depth < 0 || (o->depth >= 0 && o->depth <= 1))) {
        dt_error("data needles: --depth %g, expected a fraction in [0, 1] or 'random'", o->depth);
        return DT_ERR_INPUT;
    }
    if (o->bits != 16 && o->bits != 32) {
        dt_error("data needles: --bits %d, expected 16 or 32", o->bits);
        return DT_ERR_INPUT;
    }
    size_t need = needles_min_context(o->n_needles, o->n_queries);
    if (o->context < 0 || (size_t)o->context < need) {
        dt_error("data needles: --context %d is too small for %d needle%s and %d quer%s: it needs "
                 "at least %zu tokens (the end-of-text token included)",
                 o->context, o->n_needles, o->n_needles == 1 ? "" : "s", o->n_queries,
                 o->n_queries == 1 ? "y" : "ies", need);
        return DT_ERR_INPUT;
    }
    /* The shard header counts tokens in an int32; the shard holds one extra EOT at its end. */
    if (o->n_samples < 1 || o->n_samples > (uint64_t)(INT32_MAX - 1) / (uint64_t)o->context) {
        dt_error("data needles: --samples %" PRIu64 ", expected 1 to %" PRIu64
                 " (one shard of at most 2^31-1 tokens at --context %d)",
                 o->n_samples, (uint64_t)(INT32_MAX - 1) / (uint64_t)o->context, o->context);
        return DT_ERR_INPUT;
    }
    return DT_OK;
}

/* ---- haystack file ---- */

dt_status needles_haystack_load(dt_needles_haystack *h, const char *path) {
    memset(h, 0, sizeof *h);
    FILE *f = fopen(path, "rb");
    if (!f) {
        dt_error("%s: cannot open haystack text file: %s", path, strerror(errno));
        return DT_ERR_INPUT;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = dt_malloc(cap);
    if (!buf) {
        fclose(f);
        dt_error("%s: out of memory reading the haystack file", path);
        return DT_ERR_RUNTIME;
    }
    for (;;) {
        if (n == cap) {
            uint8_t *nb = dt_realloc(buf, cap * 2);
            if (!nb) {
                dt_free(buf);
                fclose(f);
                dt_error("%s: out of memory reading the haystack file (%zu bytes)", path, cap * 2);
                return DT_ERR_RUNTIME;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        dt_free(buf);
        dt_error("%s: cannot read haystack text file", path);
        return DT_ERR_INPUT;
    }
    /* Drop fortune separator lines ("%" alone, with "\n" or "\r\n"), in place. */
    size_t w = 0;
    for (size_t r = 0; r < n;) {
        size_t e = r;
        while (e < n && buf[e] != '\n') e++;
        size_t line_end = e < n ? e + 1 : e; /* past the "\n" */
        size_t body = e - r;
        if (body > 0 && buf[e - 1] == '\r') body--;
        if (!(body == 1 && buf[r] == '%')) {
            memmove(buf + w, buf + r, line_end - r);
            w += line_end - r;
        }
        r = line_end;
    }
    if (w == 0) {
        dt_free(buf);
        dt_error("%s: haystack text file is empty (after dropping '%%' separator lines)", path);
        return DT_ERR_INPUT;
    }
    h->text = buf;
    h->n = w;
    return DT_OK;
}

void needles_haystack_free(dt_needles_haystack *h) {
    dt_free(h->text);
    memset(h, 0, sizeof *h);
}

/* ---- one document ---- */

/* Common English words for the generated haystack: filler a byte-level model reads as ordinary
 * prose, so the needles are the only "magic number" sentences. */
static const char *const words[] = {
    "the",     "of",     "and",    "a",      "to",      "in",     "is",      "was",    "it",
    "for",     "on",     "with",   "as",     "his",     "they",   "at",      "be",     "this",
    "from",    "had",    "by",     "not",    "but",     "what",   "some",    "we",     "can",
    "out",     "other",  "were",   "all",    "there",   "when",   "up",      "use",    "your",
    "how",     "said",   "each",   "she",    "which",   "do",     "their",   "time",   "if",
    "will",    "way",    "about",  "many",   "then",    "them",   "would",   "write",  "like",
    "so",      "these",  "her",    "long",   "make",    "thing",  "see",     "him",    "two",
    "has",     "look",   "more",   "day",    "could",   "go",     "come",    "did",    "sound",
    "no",      "most",   "people", "over",   "know",    "water",  "than",    "call",   "first",
    "who",     "may",    "down",   "side",   "been",    "now",    "find",    "any",    "new",
    "work",    "part",   "take",   "get",    "place",   "made",   "live",    "where",  "after",
    "back",    "little", "only",   "round",  "man",     "year",   "came",    "show",   "every",
    "good",    "give",   "our",    "under",  "name",    "very",   "through", "just",   "form",
    "great",   "think",  "help",   "low",    "line",    "before", "turn",    "cause",  "same",
    "mean",    "differ", "move",   "right",  "boy",     "old",    "too",     "does",   "tell",
    "river",   "mountain", "garden", "window", "morning", "evening", "letter", "story", "field",
    "village", "bright", "quiet",  "winter", "summer",  "forest", "road",    "house",  "city",
};
#define N_WORDS (sizeof words / sizeof words[0])

/* Independent streams per purpose, so that e.g. a longer context (more haystack) leaves the keys,
 * values, depths and queries of a seed unchanged. */
static void doc_stream(rng_stream *s, uint64_t doc_key, const char *purpose) {
    s->key = rng_mix64(doc_key ^ rng_key(0, purpose));
    s->counter = 0;
}

static uint64_t draw(rng_stream *s, uint64_t n) { return rng_stream_next(s) % n; }

static void fill_generated(uint8_t *hay, size_t n, rng_stream *s) {
    size_t p = 0;
    while (p < n) {
        int n_words = 6 + (int)draw(s, 9);
        for (int w = 0; w < n_words && p < n; w++) {
            const char *word = words[draw(s, N_WORDS)];
            for (size_t c = 0; word[c] && p < n; c++)
                hay[p++] = (uint8_t)((w == 0 && c == 0) ? word[c] - 'a' + 'A' : word[c]);
            const char *sep = w + 1 < n_words ? " " : ". ";
            for (size_t c = 0; sep[c] && p < n; c++) hay[p++] = (uint8_t)sep[c];
        }
    }
}

static void fill_file(uint8_t *hay, size_t n, const dt_needles_haystack *h, rng_stream *s) {
    size_t p = (size_t)draw(s, h->n);
    /* Start at the beginning of a line (wrapping), so the text starts sensibly. */
    for (size_t step = 0; step < h->n && p != 0 && h->text[p - 1] != '\n'; step++)
        p = (p + 1) % h->n;
    for (size_t i = 0; i < n; i++) {
        hay[i] = h->text[p];
        p = (p + 1) % h->n;
    }
}

static int is_boundary(const uint8_t *hay, size_t n, size_t j) {
    if (j == 0 || j == n || hay[j - 1] == '\n') return 1;
    return j >= 2 && hay[j - 1] == ' ' && (hay[j - 2] == '.' || hay[j - 2] == '!' ||
                                           hay[j - 2] == '?');
}

static size_t snap_back(const uint8_t *hay, size_t n, size_t pos) {
    for (size_t back = 0; back <= DT_NEEDLES_SNAP && back <= pos; back++)
        if (is_boundary(hay, n, pos - back)) return pos - back;
    return pos;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static size_t put(uint8_t *dst, const char *s) {
    size_t n = strlen(s);
    memcpy(dst, s, n);
    return n;
}

dt_status needles_make_doc(uint32_t *tokens, dt_needles_doc *doc, const dt_needles_opts *o,
                           const dt_needles_haystack *hay, uint64_t index) {
    const int N = o->n_needles, R = o->n_queries;
    const size_t C = (size_t)o->context;
    if (N < 1 || N > DT_NEEDLES_MAX || R < 1 || R > N || C < needles_min_context(N, R)) {
        dt_error("data needles: --context %d, --needles %d, --queries %d: no room for the needles "
                 "and queries (needs --context >= %zu)",
                 o->context, N, R, needles_min_context(N < 1 ? 1 : N, R < 1 ? 1 : R));
        return DT_ERR_INPUT;
    }
    memset(doc, 0, sizeof *doc);
    doc->n_needles = N;
    doc->n_queries = R;
    doc->n_tokens = C;
    uint64_t doc_key = rng_mix64(rng_key(o->seed, "data.needles") ^ rng_mix64(index));
    rng_stream s_key, s_depth, s_query, s_hay;
    doc_stream(&s_key, doc_key, "keys");
    doc_stream(&s_depth, doc_key, "depths");
    doc_stream(&s_query, doc_key, "queries");
    doc_stream(&s_hay, doc_key, "haystack");

    /* Distinct keys and distinct values (redrawn on a repeat), so an answer names one needle. */
    for (int i = 0; i < N; i++) {
        dt_needle *nd = &doc->needles[i];
        for (int fresh = 0; !fresh;) {
            int len = DT_NEEDLES_KEY_MIN +
                      (int)draw(&s_key, DT_NEEDLES_KEY_MAX - DT_NEEDLES_KEY_MIN + 1);
            for (int c = 0; c < len; c++) nd->key[c] = (char)('a' + draw(&s_key, 26));
            nd->key[len] = '\0';
            fresh = 1;
            for (int j = 0; j < i; j++) fresh &= strcmp(doc->needles[j].key, nd->key) != 0;
        }
        for (int fresh = 0; !fresh;) {
            nd->value[0] = (char)('1' + draw(&s_key, 9));
            for (int c = 1; c < DT_NEEDLES_VALUE_LEN; c++)
                nd->value[c] = (char)('0' + draw(&s_key, 10));
            nd->value[DT_NEEDLES_VALUE_LEN] = '\0';
            fresh = 1;
            for (int j = 0; j < i; j++) fresh &= strcmp(doc->needles[j].value, nd->value) != 0;
        }
    }
    /* R distinct needles in a seeded order: a partial Fisher-Yates shuffle. */
    int perm[DT_NEEDLES_MAX];
    for (int i = 0; i < N; i++) perm[i] = i;
    for (int j = 0; j < R; j++) {
        int r = j + (int)draw(&s_query, (uint64_t)(N - j));
        int t = perm[j];
        perm[j] = perm[r];
        perm[r] = t;
        doc->queries[j].needle = perm[j];
    }
    double depth[DT_NEEDLES_MAX];
    for (int i = 0; i < N; i++)
        depth[i] = o->depth < 0 ? rng_stream_uniform(&s_depth) : o->depth + i * (1 - o->depth) / N;
    if (o->depth < 0) qsort(depth, (size_t)N, sizeof depth[0], cmp_double);

    size_t needles_total = 0, queries_total = 0;
    for (int i = 0; i < N; i++) needles_total += needle_len(strlen(doc->needles[i].key));
    for (int j = 0; j < R; j++)
        queries_total += query_len(strlen(doc->needles[doc->queries[j].needle].key));
    const size_t body = C - 2 - queries_total; /* C >= min context, so no underflow */
    const size_t H = body - needles_total;
    doc->n_haystack = H;

    uint8_t *text = dt_malloc(C + H + 1); /* (C) document bytes, then (H) haystack */
    if (!text) {
        dt_error("data needles: out of memory for a document of %zu tokens", C);
        return DT_ERR_RUNTIME;
    }
    uint8_t *hay_text = text + C;
    if (hay && hay->n > 0)
        fill_file(hay_text, H, hay, &s_hay);
    else
        fill_generated(hay_text, H, &s_hay);

    size_t p = 0, prev = 0;
    for (int i = 0; i < N; i++) {
        dt_needle *nd = &doc->needles[i];
        nd->depth = depth[i];
        size_t pos = snap_back(hay_text, H, (size_t)llround(depth[i] * (double)H));
        if (pos < prev) pos = prev; /* snapping is monotone; this only guards the order */
        memcpy(text + p, hay_text + prev, pos - prev);
        p += pos - prev;
        prev = pos;
        nd->offset = p;
        p += put(text + p, NEEDLE_PRE);
        p += put(text + p, nd->key);
        p += put(text + p, NEEDLE_MID);
        p += put(text + p, nd->value);
        p += put(text + p, NEEDLE_END);
    }
    memcpy(text + p, hay_text + prev, H - prev);
    p += H - prev;
    p += put(text + p, "\n");
    for (int j = 0; j < R; j++) {
        const dt_needle *nd = &doc->needles[doc->queries[j].needle];
        p += put(text + p, QUERY_PRE);
        p += put(text + p, nd->key);
        p += put(text + p, QUERY_MID);
        doc->queries[j].offset = p;
        p += put(text + p, nd->value);
        p += put(text + p, QUERY_END);
    }
    /* p == C - 1 by construction of H. */
    tokenizer_encode(tokens, text, p);
    tokens[p] = DT_TOKEN_EOT;
    dt_free(text);
    if (p + 1 != C) {
        dt_error("data needles: internal error: document %" PRIu64 " has %zu tokens, expected %zu",
                 index, p + 1, C);
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

/* ---- files ---- */

static void write_json_doc(FILE *f, const dt_needles_doc *d, uint64_t index, uint64_t start) {
    fprintf(f,
            "{\"doc\": %" PRIu64 ", \"offset\": %" PRIu64 ", \"length\": %zu, \"needles\": %d, "
            "\"queries\": %d, \"haystack_tokens\": %zu, \"needle\": [",
            index, start, d->n_tokens, d->n_needles, d->n_queries, d->n_haystack);
    for (int i = 0; i < d->n_needles; i++) {
        const dt_needle *n = &d->needles[i];
        fprintf(f,
                "%s{\"key\": \"%s\", \"value\": \"%s\", \"offset\": %" PRIu64
                ", \"depth\": %.6f}",
                i ? ", " : "", n->key, n->value, start + n->offset, n->depth);
    }
    fprintf(f, "], \"query\": [");
    for (int j = 0; j < d->n_queries; j++) {
        const dt_needle *n = &d->needles[d->queries[j].needle];
        fprintf(f,
                "%s{\"needle\": %d, \"key\": \"%s\", \"answer\": \"%s\", \"offset\": %" PRIu64
                ", \"depth\": %.6f}",
                j ? ", " : "", d->queries[j].needle, n->key, n->value,
                start + d->queries[j].offset, n->depth);
    }
    fprintf(f, "]}\n");
}

dt_status needles_run(const dt_needles_opts *o, FILE *log) {
    DT_TRY(needles_check_opts(o));
    dt_needles_haystack hay = {0};
    if (o->haystack) DT_TRY(needles_haystack_load(&hay, o->haystack));
    dt_status st = DT_OK;
    char shard_path[4096], json_path[4096], json_tmp[4100];
    uint32_t *tokens = NULL;
    FILE *jf = NULL;
    dt_shard_writer w;
    int writer_open = 0;
    if (snprintf(shard_path, sizeof shard_path, "%s/%s_000000.bin", o->out_dir, o->name) >=
            (int)sizeof shard_path ||
        snprintf(json_path, sizeof json_path, "%s/%s_answers.jsonl", o->out_dir, o->name) >=
            (int)sizeof json_path) {
        dt_error("%s: output path too long", o->out_dir);
        st = DT_ERR_INPUT;
        goto done;
    }
    snprintf(json_tmp, sizeof json_tmp, "%s.tmp", json_path);
    DT_TRY_GOTO(st, fs_make_dirs(o->out_dir, 0777, "output directory"), done);
    tokens = dt_malloc((size_t)o->context * sizeof *tokens);
    if (!tokens) {
        dt_error("data needles: out of memory for a document of %d tokens", o->context);
        st = DT_ERR_RUNTIME;
        goto done;
    }
    DT_TRY_GOTO(st, shard_writer_open(&w, shard_path, o->bits), done);
    writer_open = 1;
    jf = fopen(json_tmp, "wb");
    if (!jf) {
        dt_error("%s: cannot create answers file: %s", json_tmp, strerror(errno));
        st = DT_ERR_RUNTIME;
        goto done;
    }
    for (uint64_t k = 0; k < o->n_samples; k++) {
        dt_needles_doc doc;
        DT_TRY_GOTO(st, needles_make_doc(tokens, &doc, o, &hay, k), done);
        DT_TRY_GOTO(st, shard_writer_append(&w, tokens, doc.n_tokens), done);
        write_json_doc(jf, &doc, k, k * (uint64_t)o->context);
    }
    /* One extra EOT: a loader windows seq_len + 1 tokens, so with seq_len = context the last
     * document is a whole sample too. */
    const uint32_t eot = DT_TOKEN_EOT;
    DT_TRY_GOTO(st, shard_writer_append(&w, &eot, 1), done);
    int bad = ferror(jf);
    bad |= fflush(jf) != 0;
    bad |= fsync(fileno(jf)) != 0;
    bad |= fclose(jf) != 0;
    jf = NULL;
    if (bad) {
        dt_error("%s: cannot write answers file", json_tmp);
        st = DT_ERR_RUNTIME;
        goto done;
    }
    writer_open = 0;
    DT_TRY_GOTO(st, shard_writer_close(&w), done);
    if (rename(json_tmp, json_path) != 0) {
        dt_error("%s: cannot rename to %s: %s", json_tmp, json_path, strerror(errno));
        st = DT_ERR_RUNTIME;
        goto done;
    }
    if (log) {
        fprintf(log, "%s: %" PRIu64 " tokens\n", shard_path,
                o->n_samples * (uint64_t)o->context + 1);
        fprintf(log, "%s: %" PRIu64 " documents\n", json_path, o->n_samples);
        char depth[32] = "random";
        if (o->depth >= 0) snprintf(depth, sizeof depth, "%g", o->depth);
        fprintf(log,
                "%" PRIu64 " documents of %d tokens, %d needle%s, %d quer%s, depth %s, "
                "seed %" PRIu64 "\n",
                o->n_samples, o->context, o->n_needles, o->n_needles == 1 ? "" : "s",
                o->n_queries, o->n_queries == 1 ? "y" : "ies", depth, o->seed);
    }
done:
    if (jf) fclose(jf);
    if (st != DT_OK) unlink(json_tmp);
    if (writer_open) shard_writer_abort(&w);
    dt_free(tokens);
    needles_haystack_free(&hay);
    return st;
}
