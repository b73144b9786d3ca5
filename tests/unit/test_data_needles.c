/* data/needles.c: the multi-needle generator. An independent checker (below) re-reads each
 * generated document as bytes and verifies every needle sentence and every query answer at its
 * recorded offset, distinct keys and values, the exact document length and the depth placement;
 * needles_run is checked for byte-identical reruns, seed sensitivity, per-document independence
 * of the sample count, and option errors that name the option. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/needles.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "test_data_common.h"
#include "testutil.h"

/* Counts occurrences of pat in the (n) bytes of text. */
static int count_in(const char *text, size_t n, const char *pat) {
    size_t m = strlen(pat);
    int c = 0;
    for (size_t i = 0; i + m <= n; i++) c += memcmp(text + i, pat, m) == 0;
    return c;
}

/* The checker: written from the format description in data/needles.h, not from needles.c. */
static void check_doc(const uint32_t *tok, const dt_needles_doc *d, const dt_needles_opts *o,
                      int generated_haystack) {
    const size_t C = (size_t)o->context;
    assert_int_equal(d->n_tokens, C);
    assert_int_equal(d->n_needles, o->n_needles);
    assert_int_equal(d->n_queries, o->n_queries);
    /* Exactly one EOT, the last token; all others are bytes. */
    assert_int_equal(tok[C - 1], DT_TOKEN_EOT);
    char *text = malloc(C);
    assert_non_null(text);
    for (size_t i = 0; i + 1 < C; i++) {
        assert_true(tok[i] < 256);
        text[i] = (char)tok[i];
    }
    const size_t n = C - 1;
    char want[256];
    size_t needles_len = 0, prev_end = 0;
    for (int i = 0; i < d->n_needles; i++) {
        const dt_needle *nd = &d->needles[i];
        size_t kl = strlen(nd->key);
        assert_true(kl >= 4 && kl <= 8);
        for (size_t c = 0; c < kl; c++) assert_true(nd->key[c] >= 'a' && nd->key[c] <= 'z');
        assert_int_equal(strlen(nd->value), 6);
        assert_true(nd->value[0] >= '1' && nd->value[0] <= '9');
        for (int c = 0; c < 6; c++) assert_true(nd->value[c] >= '0' && nd->value[c] <= '9');
        for (int j = 0; j < i; j++) {
            assert_string_not_equal(nd->key, d->needles[j].key);
            assert_string_not_equal(nd->value, d->needles[j].value);
        }
        int wl = snprintf(want, sizeof want, "The magic number of %s is %s. ", nd->key, nd->value);
        assert_true(nd->offset + (size_t)wl <= n);
        if (memcmp(text + nd->offset, want, (size_t)wl) != 0)
            fail_msg("needle %d: expected \"%s\" at offset %zu, found \"%.*s\"", i, want,
                     nd->offset, wl, text + nd->offset);
        assert_true(nd->offset >= prev_end); /* in document order, not overlapping */
        prev_end = nd->offset + (size_t)wl;
        /* Depth: the needle's position in haystack coordinates (document offset minus the
         * needles before it) is round(depth * H), moved back by at most DT_NEEDLES_SNAP bytes
         * (one sentence) to a sentence start. Tolerance: +1 byte for depth rounding. */
        size_t hp = nd->offset - needles_len;
        double target = nearbyint(nd->depth * (double)d->n_haystack);
        assert_true(nd->depth >= 0 && nd->depth <= 1);
        if (!((double)hp <= target + 1 && target - (double)hp <= DT_NEEDLES_SNAP + 1))
            fail_msg("needle %d: haystack position %zu, depth %g of %zu bytes wants %g", i, hp,
                     nd->depth, d->n_haystack, target);
        if (generated_haystack && hp > 0 && hp < d->n_haystack)
            assert_true(text[nd->offset - 1] == ' ' && text[nd->offset - 2] == '.');
        if (o->depth >= 0) {
            double di = o->depth + i * (1 - o->depth) / o->n_needles;
            assert_true(fabs(nd->depth - di) <= 1e-12);
        }
        needles_len += (size_t)wl;
    }
    /* The body (haystack + needles) ends with "\n", then the queries fill the rest. */
    size_t body = d->n_haystack + needles_len;
    assert_true(body < n);
    assert_int_equal(text[body], '\n');
    size_t p = body + 1;
    int asked[DT_NEEDLES_MAX] = {0};
    for (int j = 0; j < d->n_queries; j++) {
        int k = d->queries[j].needle;
        assert_true(k >= 0 && k < d->n_needles);
        assert_int_equal(asked[k], 0); /* distinct queried needles */
        asked[k] = 1;
        const dt_needle *nd = &d->needles[k];
        int wl = snprintf(want, sizeof want, "What is the magic number of %s? ", nd->key);
        if (memcmp(text + p, want, (size_t)wl) != 0)
            fail_msg("query %d: expected \"%s\" at %zu, found \"%.*s\"", j, want, p, wl, text + p);
        p += (size_t)wl;
        assert_int_equal(d->queries[j].offset, p);
        if (memcmp(text + p, nd->value, 6) != 0)
            fail_msg("query %d: answer \"%.6s\" at %zu, expected %s", j, text + p, p, nd->value);
        p += 6;
        assert_int_equal(text[p], '\n');
        p++;
    }
    assert_int_equal(p, n);
    /* No stray needle or query sentences in the generated haystack. */
    if (generated_haystack) {
        assert_int_equal(count_in(text, n, "The magic number of "), d->n_needles);
        assert_int_equal(count_in(text, n, "What is the magic number of "), d->n_queries);
    }
    /* Depth 0: the first needle opens the document; depth 1: the last one closes the body. */
    if (o->depth == 0) assert_int_equal(d->needles[0].offset, 0);
    if (o->depth == 1) {
        const dt_needle *last = &d->needles[d->n_needles - 1];
        int wl = snprintf(want, sizeof want, "The magic number of %s is %s. ", last->key,
                          last->value);
        assert_int_equal(last->offset + (size_t)wl, body);
    }
    free(text);
}

static void check_many(dt_needles_opts *o, const dt_needles_haystack *hay, int n_docs) {
    uint32_t *tok = malloc((size_t)o->context * sizeof *tok);
    assert_non_null(tok);
    assert_int_equal(needles_check_opts(o), DT_OK);
    char prev_value[DT_NEEDLES_VALUE_LEN + 1] = "";
    for (int k = 0; k < n_docs; k++) {
        dt_needles_doc d;
        assert_int_equal(needles_make_doc(tok, &d, o, hay, (uint64_t)k), DT_OK);
        check_doc(tok, &d, o, hay == NULL);
        /* Each document draws its own needles (a repeat of 6 random digits has odds 1e-5). */
        assert_string_not_equal(d.needles[0].value, prev_value);
        memcpy(prev_value, d.needles[0].value, sizeof prev_value);
    }
    free(tok);
}

static void base_opts(dt_needles_opts *o) {
    needles_opts_default(o);
    o->out_dir = "unused";
}

static void test_docs_verify(void **state) {
    (void)state;
    dt_needles_opts o;
    base_opts(&o);
    const struct {
        int n, r, context;
        double depth;
    } cases[] = {
        {1, 1, 4096, -1}, {1, 1, 256, 0},  {1, 1, 256, 1},   {2, 2, 4096, 0.5}, {4, 2, 4096, -1},
        {6, 2, 4096, 0},  {6, 6, 4096, 1}, {6, 6, 1024, -1}, {64, 64, 8000, 0.3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        o.n_needles = cases[c].n;
        o.n_queries = cases[c].r;
        o.context = cases[c].context;
        o.depth = cases[c].depth;
        o.seed = 1000 + c;
        check_many(&o, NULL, 20);
    }
    /* The smallest context: no haystack at all when every key has 8 letters. */
    o.n_needles = 3;
    o.n_queries = 2;
    o.context = (int)needles_min_context(3, 2);
    o.depth = -1;
    check_many(&o, NULL, 50);
}

static void test_docs_file_haystack(void **state) {
    (void)state;
    char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/fortunes.txt", dir);
    const char *txt = "A fortune about rivers.\nIt has two lines!\n%\nAnother one? Yes.\n%\n"
                      "Third fortune, a bit longer than the others, to fill some space.\n%\n";
    write_raw(path, txt, strlen(txt));
    dt_needles_haystack hay;
    assert_int_equal(needles_haystack_load(&hay, path), DT_OK);
    assert_null(memchr(hay.text, '%', hay.n)); /* separator lines dropped */
    assert_int_equal(hay.n, strlen(txt) - 3 * 2);
    dt_needles_opts o;
    base_opts(&o);
    o.n_needles = 4;
    o.n_queries = 3;
    o.context = 2048;
    check_many(&o, &hay, 10);
    /* The haystack text is the file's, wrapping around: every haystack byte is a file byte. */
    uint32_t *tok = malloc(2048 * sizeof *tok);
    dt_needles_doc d;
    assert_int_equal(needles_make_doc(tok, &d, &o, &hay, 0), DT_OK);
    for (size_t i = 0; i < d.needles[0].offset; i++)
        assert_non_null(memchr(hay.text, (int)tok[i], hay.n));
    free(tok);
    needles_haystack_free(&hay);
    tu_rmdir(dir);
    free(dir);
}

static unsigned char *read_out(const char *dir, const char *file, size_t *n) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return read_raw(path, n);
}

static void run_into(const char *dir, dt_needles_opts *o) {
    o->out_dir = dir;
    assert_int_equal(needles_run(o, NULL), DT_OK);
}

static void test_run_deterministic(void **state) {
    (void)state;
    char *root = tu_tmpdir();
    char a[512], b[512], c[512], e[512];
    snprintf(a, sizeof a, "%s/a", root);
    snprintf(b, sizeof b, "%s/b/nested", root);
    snprintf(c, sizeof c, "%s/c", root);
    snprintf(e, sizeof e, "%s/e", root);
    dt_needles_opts o;
    needles_opts_default(&o);
    o.n_samples = 6;
    o.n_needles = 4;
    o.n_queries = 2;
    o.context = 1024;
    o.seed = 42;
    run_into(a, &o);
    run_into(b, &o);
    size_t na, nb, ja, jb;
    unsigned char *sa = read_out(a, "needles_000000.bin", &na);
    unsigned char *sb = read_out(b, "needles_000000.bin", &nb);
    unsigned char *xa = read_out(a, "needles_answers.jsonl", &ja);
    unsigned char *xb = read_out(b, "needles_answers.jsonl", &jb);
    assert_int_equal(na, nb);
    assert_memory_equal(sa, sb, na);
    assert_int_equal(ja, jb);
    assert_memory_equal(xa, xb, ja);
    char path[600];
    snprintf(path, sizeof path, "%s/needles_answers.jsonl.tmp", a);
    assert_false(file_exists(path));

    /* The shard: S * C tokens of documents, then one extra EOT; doc k == needles_make_doc(k). */
    snprintf(path, sizeof path, "%s/needles_000000.bin", a);
    dt_shard s;
    assert_int_equal(shard_open(&s, path), DT_OK);
    assert_int_equal(s.bits, 16);
    assert_int_equal(s.n_tokens, 6 * 1024 + 1);
    assert_int_equal(shard_token(&s, 6 * 1024), DT_TOKEN_EOT);
    uint32_t *tok = malloc(1024 * sizeof *tok);
    for (uint64_t k = 0; k < 6; k++) {
        dt_needles_doc d;
        assert_int_equal(needles_make_doc(tok, &d, &o, NULL, k), DT_OK);
        for (size_t i = 0; i < 1024; i++) assert_int_equal(shard_token(&s, k * 1024 + i), tok[i]);
        /* The JSON line of document k names its offset and the first key and answer. */
        char line_key[128];
        snprintf(line_key, sizeof line_key, "{\"doc\": %u, \"offset\": %u, \"length\": 1024",
                 (unsigned)k, (unsigned)(k * 1024));
        assert_non_null(strstr((const char *)xa, line_key));
        snprintf(line_key, sizeof line_key, "\"key\": \"%s\", \"answer\": \"%s\", \"offset\": %zu",
                 d.needles[d.queries[0].needle].key, d.needles[d.queries[0].needle].value,
                 (size_t)(k * 1024) + d.queries[0].offset);
        assert_non_null(strstr((const char *)xa, line_key));
    }
    shard_close(&s);

    /* A different seed gives different documents. */
    o.seed = 43;
    run_into(c, &o);
    size_t nc;
    unsigned char *sc = read_out(c, "needles_000000.bin", &nc);
    assert_int_equal(nc, na);
    assert_true(memcmp(sa, sc, na) != 0);

    /* Document k does not depend on how many documents are generated: 2 documents are the
     * first 2 of the 6, token for token and line for line. */
    o.seed = 42;
    o.n_samples = 2;
    run_into(e, &o);
    size_t ne, je;
    unsigned char *se = read_out(e, "needles_000000.bin", &ne);
    unsigned char *xe = read_out(e, "needles_answers.jsonl", &je);
    assert_int_equal(ne, DT_SHARD_HEADER_BYTES + (2 * 1024 + 1) * 2);
    assert_memory_equal(se + DT_SHARD_HEADER_BYTES, sa + DT_SHARD_HEADER_BYTES, 2 * 1024 * 2);
    assert_true(je < ja);
    assert_memory_equal(xe, xa, je);

    free(sa), free(sb), free(sc), free(se), free(xa), free(xb), free(xe), free(tok);
    tu_rmdir(root);
    free(root);
}

/* Each bad option is DT_ERR_INPUT with a message naming it. */
static void expect_bad(const dt_needles_opts *o, const char *part) {
    capture_begin();
    dt_status st = needles_check_opts(o);
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, part);
}

static void test_errors(void **state) {
    (void)state;
    dt_needles_opts o;
    base_opts(&o);
    o.n_needles = 4;
    o.n_queries = 2;
    size_t need = needles_min_context(4, 2);
    o.context = (int)need - 1;
    expect_bad(&o, "--context");
    char msg[64];
    snprintf(msg, sizeof msg, "at least %zu tokens", need);
    expect_bad(&o, msg);
    o.context = (int)need;
    assert_int_equal(needles_check_opts(&o), DT_OK);
    o.n_queries = 5;
    expect_bad(&o, "--queries");
    o.n_queries = 0;
    expect_bad(&o, "--queries");
    o.n_queries = 1;
    o.n_needles = 0;
    expect_bad(&o, "--needles");
    o.n_needles = DT_NEEDLES_MAX + 1;
    expect_bad(&o, "--needles");
    o.n_needles = 4;
    o.depth = 1.5;
    expect_bad(&o, "--depth");
    o.depth = NAN;
    expect_bad(&o, "--depth");
    o.depth = 1;
    o.bits = 8;
    expect_bad(&o, "--bits");
    o.bits = 32;
    o.n_samples = 0;
    expect_bad(&o, "--samples");
    o.n_samples = 1u << 30;
    expect_bad(&o, "--samples");
    o.n_samples = 1;
    o.name = "a/b";
    expect_bad(&o, "--name");
    o.name = "x";
    o.out_dir = NULL;
    expect_bad(&o, "--out");

    /* needles_run: a too-small context writes nothing. */
    char *dir = tu_tmpdir();
    char out[512];
    snprintf(out, sizeof out, "%s/out", dir);
    o.out_dir = out;
    o.context = 100;
    capture_begin();
    assert_int_equal(needles_run(&o, NULL), DT_ERR_INPUT);
    assert_contains(capture_end(), "--context 100");
    assert_false(file_exists(out));

    /* Haystack files: missing, and only separator lines. */
    char path[600];
    snprintf(path, sizeof path, "%s/missing.txt", dir);
    dt_needles_haystack h;
    capture_begin();
    assert_int_equal(needles_haystack_load(&h, path), DT_ERR_INPUT);
    assert_contains(capture_end(), "missing.txt");
    snprintf(path, sizeof path, "%s/seps.txt", dir);
    write_raw(path, "%\n%\r\n%", 6);
    capture_begin();
    assert_int_equal(needles_haystack_load(&h, path), DT_ERR_INPUT);
    assert_contains(capture_end(), "empty");
    tu_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docs_verify),
        cmocka_unit_test(test_docs_file_haystack),
        cmocka_unit_test(test_run_deterministic),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
