#include "data/prepare.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/shard.h"
#include "data/tokenizer.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/rng.h"

void prepare_opts_default(dt_prepare_opts *o) {
    memset(o, 0, sizeof *o);
    o->name = "data";
    o->val_fraction = 0.05;
    o->bits = 16;
    o->shard_tokens = 100000000;
}

double prepare_doc_fraction(const uint8_t *doc, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then a fixed-key mix */
    for (size_t i = 0; i < n; i++) {
        h ^= doc[i];
        h *= 0x100000001b3ULL;
    }
    h = rng_mix64(h ^ rng_key(0, "data.prepare.val"));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- input files and documents ---- */

typedef struct input_file {
    const char *path;
    const uint8_t *data; /* (bytes) mapped read-only; NULL when empty */
    size_t bytes;
} input_file;

static dt_status input_open(input_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        dt_error("%s: cannot open input text file: %s", path, strerror(err));
        return (err == ENOENT || err == EACCES || err == ENOTDIR || err == EISDIR) ? DT_ERR_INPUT
                                                                                   : DT_ERR_RUNTIME;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        dt_error("%s: not a regular file, expected an input text file", path);
        close(fd);
        return DT_ERR_INPUT;
    }
    f->bytes = (size_t)st.st_size;
    if (f->bytes > 0) {
        void *m = mmap(NULL, f->bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            dt_error("%s: cannot map input file (%zu bytes): %s", path, f->bytes, strerror(errno));
            close(fd);
            return DT_ERR_RUNTIME;
        }
        madvise(m, f->bytes, MADV_SEQUENTIAL);
        f->data = m;
    }
    close(fd);
    return DT_OK;
}

static void input_close(input_file *f) {
    if (f->data) munmap((void *)f->data, f->bytes);
    memset(f, 0, sizeof *f);
}

/* Walks the documents of one file. */
typedef struct doc_iter {
    const uint8_t *p, *end;
    const char *sep; /* NULL: the whole file is one document */
    size_t sep_len;
} doc_iter;

static void doc_iter_init(doc_iter *it, const input_file *f, const char *sep) {
    it->p = f->data;
    it->end = f->data ? f->data + f->bytes : NULL;
    it->sep = sep;
    it->sep_len = sep ? strlen(sep) : 0;
}

/* Is [line, line_end) (without its "\n") the separator, allowing a "\r" before the "\n"? */
static int is_sep_line(const doc_iter *it, const uint8_t *line, const uint8_t *line_end) {
    size_t len = (size_t)(line_end - line);
    if (len > 0 && line[len - 1] == '\r') len--;
    return len == it->sep_len && memcmp(line, it->sep, len) == 0;
}

/* The next non-empty document, or 0 at the end of the file. */
static int doc_next(doc_iter *it, const uint8_t **doc, size_t *len) {
    while (it->p && it->p < it->end) {
        const uint8_t *start = it->p;
        if (!it->sep) {
            it->p = it->end;
            *doc = start;
            *len = (size_t)(it->end - start);
            return 1;
        }
        /* Scan lines from start until a separator line or the end of the file. */
        const uint8_t *line = start, *doc_end = it->end, *next = it->end;
        while (line < it->end) {
            const uint8_t *nl = memchr(line, '\n', (size_t)(it->end - line));
            const uint8_t *line_end = nl ? nl : it->end;
            if (is_sep_line(it, line, line_end)) {
                doc_end = line;
                next = nl ? nl + 1 : it->end;
                break;
            }
            line = nl ? nl + 1 : it->end;
        }
        it->p = next;
        if (doc_end > start) {
            *doc = start;
            *len = (size_t)(doc_end - start);
            return 1;
        }
    }
    return 0;
}

/* ---- output: one split's token stream cut into shards ---- */

typedef struct split_writer {
    const dt_prepare_opts *o;
    const char *kind; /* "train" or "val" */
    FILE *log;
    dt_shard_writer w;
    int is_open;
    int n_shards;      /* shards opened so far */
    uint64_t in_shard; /* tokens in the open shard */
    uint64_t total;
} split_writer;

static void shard_path(char *out, size_t cap, const dt_prepare_opts *o, const char *kind, int i) {
    snprintf(out, cap, "%s/%s_%s_%06d.bin", o->out_dir, o->name, kind, i);
}

static dt_status split_close_shard(split_writer *s) {
    uint64_t n = s->in_shard;
    char path[4096];
    shard_path(path, sizeof path, s->o, s->kind, s->n_shards - 1);
    s->is_open = 0;
    s->in_shard = 0;
    DT_TRY(shard_writer_close(&s->w));
    if (s->log) fprintf(s->log, "%s: %" PRIu64 " tokens\n", path, n);
    return DT_OK;
}

static dt_status split_append(split_writer *s, const uint32_t *tok, size_t n) {
    while (n > 0) {
        if (!s->is_open) {
            char path[4096];
            shard_path(path, sizeof path, s->o, s->kind, s->n_shards);
            DT_TRY(shard_writer_open(&s->w, path, s->o->bits));
            s->is_open = 1;
            s->n_shards++;
        }
        uint64_t room = s->o->shard_tokens - s->in_shard;
        size_t m = n < room ? n : (size_t)room;
        DT_TRY(shard_writer_append(&s->w, tok, m));
        s->in_shard += m;
        s->total += m;
        tok += m;
        n -= m;
        if (s->in_shard == s->o->shard_tokens) DT_TRY(split_close_shard(s));
    }
    return DT_OK;
}

static dt_status split_add_doc(split_writer *s, uint32_t *buf, size_t buf_cap, const uint8_t *doc,
                               size_t len) {
    for (size_t i = 0; i < len; i += buf_cap) {
        size_t m = len - i < buf_cap ? len - i : buf_cap;
        tokenizer_encode(buf, doc + i, m);
        DT_TRY(split_append(s, buf, m));
    }
    const uint32_t eot = DT_TOKEN_EOT;
    return split_append(s, &eot, 1);
}

static dt_status split_finish(split_writer *s) {
    if (s->is_open) DT_TRY(split_close_shard(s));
    /* A shard numbered past the last one written is left from an earlier, larger run; a glob
     * over this dataset would silently mix it in. */
    char path[4096];
    shard_path(path, sizeof path, s->o, s->kind, s->n_shards);
    if (access(path, F_OK) == 0)
        dt_warn("%s is left from an earlier run (this run wrote %d %s shard%s); a glob over the "
                "dataset would include it: remove it",
                path, s->n_shards, s->kind, s->n_shards == 1 ? "" : "s");
    return DT_OK;
}

static dt_status check_opts(const dt_prepare_opts *o, int n_files) {
    if (!o->out_dir || !*o->out_dir) {
        dt_error("data prepare: no output directory given");
        return DT_ERR_INPUT;
    }
    if (!o->name || !*o->name || strchr(o->name, '/')) {
        dt_error("data prepare: dataset name '%s' must be non-empty and contain no '/'",
                 o->name ? o->name : "");
        return DT_ERR_INPUT;
    }
    if (!(o->val_fraction >= 0 && o->val_fraction < 1)) {
        dt_error("data prepare: validation fraction %g, expected a number in [0, 1)",
                 o->val_fraction);
        return DT_ERR_INPUT;
    }
    if (o->bits != 16 && o->bits != 32) {
        dt_error("data prepare: token width %d bits, expected 16 or 32", o->bits);
        return DT_ERR_INPUT;
    }
    if (o->shard_tokens < 1 || o->shard_tokens > (uint64_t)INT32_MAX) {
        dt_error("data prepare: shard size %" PRIu64 " tokens, expected 1 to %d (the shard "
                 "header's int32 count)",
                 o->shard_tokens, INT32_MAX);
        return DT_ERR_INPUT;
    }
    if (o->split_on && strchr(o->split_on, '\n')) {
        dt_error("data prepare: the document separator must be one line (no newline)");
        return DT_ERR_INPUT;
    }
    if (n_files < 1) {
        dt_error("data prepare: no input files given");
        return DT_ERR_INPUT;
    }
    return DT_OK;
}

dt_status prepare_run(dt_prepare_result *res, const dt_prepare_opts *o, const char *const *files,
                      int n_files, FILE *log) {
    memset(res, 0, sizeof *res);
    DT_TRY(check_opts(o, n_files));
    dt_status st = DT_OK;
    input_file *in = dt_calloc((size_t)n_files, sizeof *in);
    const size_t buf_cap = 1 << 16;
    uint32_t *buf = dt_malloc(buf_cap * sizeof *buf);
    split_writer train = {.o = o, .kind = "train", .log = log};
    split_writer val = {.o = o, .kind = "val", .log = log};
    if (!in || !buf) {
        dt_error("data prepare: out of memory");
        st = DT_ERR_RUNTIME;
        goto done;
    }
    for (int i = 0; i < n_files; i++) DT_TRY_GOTO(st, input_open(&in[i], files[i]), done);

    /* Pass 1: count documents and find the ones that keep both splits non-empty. */
    uint64_t n_docs = 0, n_val = 0, min_doc = 0, max_doc = 0;
    double min_u = 2, max_u = -1;
    const char *first_doc_path = NULL;
    for (int i = 0; i < n_files; i++) {
        doc_iter it;
        doc_iter_init(&it, &in[i], o->split_on);
        const uint8_t *doc;
        size_t len;
        int file_docs = 0;
        while (doc_next(&it, &doc, &len)) {
            double u = prepare_doc_fraction(doc, len);
            n_val += (u < o->val_fraction);
            if (u < min_u) {
                min_u = u;
                min_doc = n_docs;
            }
            if (u > max_u) {
                max_u = u;
                max_doc = n_docs;
            }
            if (n_docs == 0) first_doc_path = in[i].path;
            n_docs++;
            file_docs++;
        }
        if (file_docs == 0)
            dt_warn("%s: no documents (%s)", in[i].path,
                    in[i].bytes ? "only separator lines" : "empty file");
    }
    if (n_docs == 0) {
        dt_error("data prepare: the %d input file(s) hold no documents", n_files);
        st = DT_ERR_INPUT;
        goto done;
    }
    uint64_t force_val = UINT64_MAX, force_train = UINT64_MAX;
    if (o->val_fraction > 0) {
        if (n_docs == 1) {
            dt_error("data prepare: %s holds a single document, which cannot be split into "
                     "training and validation data; split it into documents with --split-on LINE, "
                     "or pass --val-fraction 0",
                     first_doc_path);
            st = DT_ERR_INPUT;
            goto done;
        }
        if (n_val == 0) force_val = min_doc;
        if (n_val == n_docs) force_train = max_doc;
    }

    DT_TRY_GOTO(st, fs_make_dirs(o->out_dir, 0777, "output directory"), done);
    /* Pass 2: encode and write. */
    uint64_t d = 0;
    for (int i = 0; i < n_files; i++) {
        doc_iter it;
        doc_iter_init(&it, &in[i], o->split_on);
        const uint8_t *doc;
        size_t len;
        while (doc_next(&it, &doc, &len)) {
            int to_val = prepare_doc_fraction(doc, len) < o->val_fraction;
            if (d == force_val) to_val = 1;
            if (d == force_train) to_val = 0;
            *(to_val ? &res->n_val_docs : &res->n_train_docs) += 1;
            DT_TRY_GOTO(st, split_add_doc(to_val ? &val : &train, buf, buf_cap, doc, len), done);
            d++;
        }
    }
    DT_TRY_GOTO(st, split_finish(&train), done);
    DT_TRY_GOTO(st, split_finish(&val), done);
    res->n_docs = n_docs;
    res->train_tokens = train.total;
    res->val_tokens = val.total;
    res->n_train_shards = train.n_shards;
    res->n_val_shards = val.n_shards;
    if (log) {
        fprintf(log,
                "%" PRIu64 " documents: %" PRIu64 " train (%" PRIu64
                " tokens in %d shard%s), %" PRIu64 " val (%" PRIu64 " tokens in %d shard%s)\n",
                n_docs, res->n_train_docs, res->train_tokens, res->n_train_shards,
                res->n_train_shards == 1 ? "" : "s", res->n_val_docs, res->val_tokens,
                res->n_val_shards, res->n_val_shards == 1 ? "" : "s");
        if (res->n_val_shards == 0) fprintf(log, "no validation shard (validation fraction 0)\n");
    }
done:
    if (train.is_open) shard_writer_abort(&train.w);
    if (val.is_open) shard_writer_abort(&val.w);
    if (in)
        for (int i = 0; i < n_files; i++) input_close(&in[i]);
    dt_free(in);
    dt_free(buf);
    return st;
}
