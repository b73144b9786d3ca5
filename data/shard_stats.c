#include "data/shard_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "util/alloc.h"

/* -sum (c/n) log(c/n) for one count, accumulated in double. */
static double entropy_term(double c, double n) { return c > 0 ? -(c / n) * log(c / n) : 0.0; }

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

dt_status shard_stats_compute(dt_shard_stats *st, const dt_shard *s) {
    memset(st, 0, sizeof *st);
    size_t n = s->n_tokens;
    st->n_tokens = n;
    if (n == 0) return DT_OK;
    uint32_t lo = UINT32_MAX, hi = 0;
    size_t eot = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t t = shard_token(s, i);
        if (t < lo) lo = t;
        if (t > hi) hi = t;
        eot += (t == DT_TOKEN_EOT);
    }
    st->min_id = lo;
    st->max_id = hi;
    st->n_eot = eot;
    double h = 0, dn = (double)n;
    /* A shard holds at most INT32_MAX tokens (its header count), so uint32 counts cannot
     * overflow. A dense table is used when it is not much larger than the shard itself. */
    size_t range = (size_t)hi + 1;
    if (range <= 65536 || range <= 4 * n) {
        uint32_t *count = dt_calloc(range, sizeof *count);
        if (!count) goto oom;
        for (size_t i = 0; i < n; i++) count[shard_token(s, i)]++;
        for (size_t v = 0; v < range; v++) h += entropy_term(count[v], dn);
        dt_free(count);
    } else {
        uint32_t *copy = dt_malloc(n * sizeof *copy);
        if (!copy) goto oom;
        for (size_t i = 0; i < n; i++) copy[i] = shard_token(s, i);
        qsort(copy, n, sizeof *copy, cmp_u32);
        for (size_t i = 0; i < n;) {
            size_t j = i;
            while (j < n && copy[j] == copy[i]) j++;
            h += entropy_term((double)(j - i), dn);
            i = j;
        }
        dt_free(copy);
    }
    st->entropy_nats = h;
    return DT_OK;
oom:
    dt_error("%s: out of memory counting token frequencies", s->path);
    return DT_ERR_RUNTIME;
}

double shard_unigram_entropy(const dt_shard *s) {
    dt_shard_stats st;
    if (shard_stats_compute(&st, s) != DT_OK) return NAN;
    return st.entropy_nats;
}
