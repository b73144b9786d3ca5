#include "data/loader.h"

#include <glob.h>
#include <stdlib.h>
#include <string.h>

#include "data/perm.h"
#include "util/alloc.h"

/* glob(3) sorts with strcoll, which depends on the locale; the sample order must not. */
static int cmp_path(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends the sorted matches of one pattern to the (growing) list of paths. */
static dt_status expand_pattern(char ***paths, int *n_paths, int *cap, const char *pattern) {
    glob_t g;
    memset(&g, 0, sizeof g);
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH) {
        dt_error("data pattern '%s' matches no file", pattern);
        globfree(&g);
        return DT_ERR_INPUT;
    }
    if (rc != 0) {
        dt_error("data pattern '%s': %s", pattern,
                 rc == GLOB_NOSPACE ? "out of memory while matching" : "read error while matching");
        globfree(&g);
        return rc == GLOB_NOSPACE ? DT_ERR_RUNTIME : DT_ERR_INPUT;
    }
    qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, cmp_path);
    dt_status st = DT_OK;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        if (*n_paths == *cap) {
            int new_cap = *cap ? 2 * *cap : 16;
            char **p = dt_realloc(*paths, (size_t)new_cap * sizeof *p);
            if (!p) {
                st = DT_ERR_RUNTIME;
                break;
            }
            *paths = p;
            *cap = new_cap;
        }
        char *copy = dt_strdup(g.gl_pathv[i]);
        if (!copy) {
            st = DT_ERR_RUNTIME;
            break;
        }
        (*paths)[(*n_paths)++] = copy;
    }
    if (st != DT_OK) dt_error("data pattern '%s': out of memory listing its matches", pattern);
    globfree(&g);
    return st;
}

/* "'a', 'b'" for messages, truncated to fit. */
static void describe_patterns(char *out, size_t cap, const char (*patterns)[DT_PATH_MAX],
                              int n_patterns) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n_patterns && len + 1 < cap; i++) {
        int w = snprintf(out + len, cap - len, "%s'%s'", i ? ", " : "", patterns[i]);
        if (w < 0) break;
        len += (size_t)w;
    }
}

dt_status loader_init(dt_loader *L, const char (*patterns)[DT_PATH_MAX], int n_patterns,
                      int seq_len, int vocab_size, uint64_t seed, int shuffle) {
    memset(L, 0, sizeof *L);
    if (n_patterns < 1) {
        dt_error("data loader: no shard paths given");
        return DT_ERR_INPUT;
    }
    if (seq_len < 1 || vocab_size < 1) {
        dt_error("data loader: seq_len %d and vocab_size %d must both be at least 1", seq_len,
                 vocab_size);
        return DT_ERR_INPUT;
    }
    char **paths = NULL;
    int n_paths = 0, cap = 0;
    dt_status st = DT_OK;
    for (int i = 0; i < n_patterns && st == DT_OK; i++)
        st = expand_pattern(&paths, &n_paths, &cap, patterns[i]);
    if (st != DT_OK) goto done;

    L->shards = dt_calloc((size_t)n_paths, sizeof *L->shards);
    L->first_sample = dt_calloc((size_t)n_paths + 1, sizeof *L->first_sample);
    if (!L->shards || !L->first_sample) {
        dt_error("data loader: out of memory for %d shards", n_paths);
        st = DT_ERR_RUNTIME;
        goto done;
    }
    L->seq_len = seq_len;
    L->vocab_size = vocab_size;
    L->seed = seed;
    L->shuffle = shuffle;
    size_t longest = 0;
    for (int i = 0; i < n_paths; i++) {
        dt_shard *s = &L->shards[L->n_shards];
        DT_TRY_GOTO(st, shard_open(s, paths[i]), done);
        if (s->n_tokens > longest) longest = s->n_tokens;
        if (s->n_tokens < (size_t)seq_len + 1) {
            dt_warn("%s: %zu tokens, fewer than seq_len+1 = %d: it contributes no samples", s->path,
                    s->n_tokens, seq_len + 1);
            shard_close(s);
            continue;
        }
        uint64_t count = (uint64_t)(s->n_tokens - 1) / (uint64_t)seq_len;
        L->first_sample[L->n_shards + 1] = L->first_sample[L->n_shards] + count;
        L->n_shards++;
    }
    L->n_samples = L->first_sample[L->n_shards];
    if (L->n_samples == 0) {
        char desc[1024];
        describe_patterns(desc, sizeof desc, patterns, n_patterns);
        dt_error("data %s: no shard holds seq_len+1 = %d tokens (the longest of %d holds %zu); "
                 "nothing to sample",
                 desc, seq_len + 1, n_paths, longest);
        st = DT_ERR_INPUT;
    }
done:
    for (int i = 0; i < n_paths; i++) dt_free(paths[i]);
    dt_free(paths);
    if (st != DT_OK) loader_free(L);
    return st;
}

uint64_t loader_num_samples(const dt_loader *L) { return L->n_samples; }

uint64_t loader_sample_id(const dt_loader *L, uint64_t stream_index) {
    uint64_t n = L->n_samples;
    uint64_t epoch = stream_index / n, p = stream_index % n;
    return L->shuffle ? perm_apply(perm_key(L->seed, epoch), n, p) : p;
}

dt_status loader_sample(const dt_loader *L, uint64_t stream_index, int32_t *inputs,
                        int32_t *targets) {
    uint64_t id = loader_sample_id(L, stream_index);
    /* The shard holding sample id: the last s with first_sample[s] <= id. */
    int lo = 0, hi = L->n_shards - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (L->first_sample[mid] <= id)
            lo = mid;
        else
            hi = mid - 1;
    }
    const dt_shard *s = &L->shards[lo];
    int T = L->seq_len;
    size_t start = (size_t)(id - L->first_sample[lo]) * (size_t)T;
    uint32_t vocab = (uint32_t)L->vocab_size;
    for (int t = 0; t <= T; t++) {
        uint32_t tok = shard_token(s, start + (size_t)t);
        if (tok >= vocab) {
            dt_error("%s: token %zu has id %u, outside the vocabulary (vocab_size %d)", s->path,
                     start + (size_t)t, tok, L->vocab_size);
            return DT_ERR_INPUT;
        }
        if (t < T) inputs[t] = (int32_t)tok;
        if (t > 0) targets[t - 1] = (int32_t)tok;
    }
    return DT_OK;
}

void loader_free(dt_loader *L) {
    if (L->shards)
        for (int i = 0; i < L->n_shards; i++) shard_close(&L->shards[i]);
    dt_free(L->shards);
    dt_free(L->first_sample);
    memset(L, 0, sizeof *L);
}
