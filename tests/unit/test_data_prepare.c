/* Data preparation and the byte tokenizer: shards decode back to the input documents, the
 * validation split covers every document exactly once and is spread over the inputs, shard sizes,
 * separators, the non-empty fix-up, and the input errors. Shards are read back through
 * shard_open and decoded here byte by byte (token < 256 is the byte; 256 ends a document). */
#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "test_data_common.h"
#include "testutil.h"
#include "util/rng.h"

static char *dir;

static int setup(void **state) {
    (void)state;
    dir = tu_tmpdir();
    return dir ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tu_rmdir(dir);
    free(dir);
    return 0;
}

/* ---- reading a split back ---- */

typedef struct doc {
    unsigned char *text;
    size_t len;
} doc;

typedef struct split {
    doc docs[512];
    int n_docs;
    int n_shards;
    size_t shard_sizes[64];
    uint64_t tokens;
} split;

/* Reads OUT/NAME_KIND_*.bin in order and cuts the token stream into documents at EOT. */
static void read_split(split *sp, const char *out, const char *name, const char *kind) {
    memset(sp, 0, sizeof *sp);
    char pat[2048];
    snprintf(pat, sizeof pat, "%s/%s_%s_*.bin", out, name, kind);
    glob_t g;
    int rc = glob(pat, 0, NULL, &g);
    if (rc == GLOB_NOMATCH) return;
    assert_int_equal(rc, 0);
    unsigned char *cur = malloc(1 << 20);
    size_t cur_len = 0;
    for (size_t f = 0; f < g.gl_pathc; f++) {
        char want[2048];
        snprintf(want, sizeof want, "%s/%s_%s_%06zu.bin", out, name, kind, f);
        assert_string_equal(g.gl_pathv[f], want); /* numbered densely from 0 */
        dt_shard s;
        assert_int_equal(shard_open(&s, g.gl_pathv[f]), DT_OK);
        sp->shard_sizes[sp->n_shards++] = s.n_tokens;
        sp->tokens += s.n_tokens;
        for (size_t i = 0; i < s.n_tokens; i++) {
            uint32_t t = shard_token(&s, i);
            if (t == DT_TOKEN_EOT) {
                doc *d = &sp->docs[sp->n_docs++];
                d->text = malloc(cur_len + 1);
                memcpy(d->text, cur, cur_len);
                d->text[cur_len] = 0; /* for sscanf */
                d->len = cur_len;
                cur_len = 0;
            } else {
                assert_true(t < 256);
                cur[cur_len++] = (unsigned char)t;
            }
        }
        shard_close(&s);
    }
    assert_int_equal(cur_len, 0); /* the stream ends with an EOT */
    free(cur);
    globfree(&g);
}

static void free_split(split *sp) {
    for (int i = 0; i < sp->n_docs; i++) free(sp->docs[i].text);
}

/* ---- generated inputs ---- */

#define N_DOCS 200

/* Document i: a unique first line, then 1..6 lines of random bytes (all 256 values except the
 * newline that ends each line), none of them the separator "%". */
static size_t make_doc(unsigned char *out, int i) {
    uint64_t key = rng_key(11, "doc");
    uint64_t c = (uint64_t)i * 1000;
    size_t n = (size_t)sprintf((char *)out, "doc %d\n", i);
    int lines = 1 + (int)(rng_uniform(key, c++) * 6);
    for (int l = 0; l < lines; l++) {
        int len = (int)(rng_uniform(key, c++) * 40);
        for (int k = 0; k < len; k++) {
            unsigned char b = (unsigned char)(rng_uniform(key, c++) * 256);
            if (b == '\n' || (k == 0 && b == '%')) b = 'x';
            out[n++] = b;
        }
        out[n++] = '\n';
    }
    return n;
}

static void test_round_trip_and_split(void **state) {
    (void)state;
    /* Two files in the fortune format; documents 0..119 in the first, 120..199 in the second.
     * The first file has an empty document (two separators in a row) and a CRLF separator; the
     * second does not end with a separator. */
    static unsigned char text[N_DOCS][400];
    size_t len[N_DOCS];
    char f1[1024], f2[1024], out[1024];
    snprintf(f1, sizeof f1, "%s/a.txt", dir);
    snprintf(f2, sizeof f2, "%s/b.txt", dir);
    snprintf(out, sizeof out, "%s/out/nested", dir);
    FILE *fa = fopen(f1, "wb"), *fb = fopen(f2, "wb");
    for (int i = 0; i < N_DOCS; i++) {
        len[i] = make_doc(text[i], i);
        FILE *f = i < 120 ? fa : fb;
        fwrite(text[i], 1, len[i], f);
        if (i == 199) break;
        fputs(i == 50 ? "%\r\n" : "%\n", f);
        if (i == 30) fputs("%\n", f);
    }
    fclose(fa);
    fclose(fb);

    dt_prepare_opts o;
    prepare_opts_default(&o);
    o.out_dir = out;
    o.name = "fortunes";
    o.split_on = "%";
    o.val_fraction = 0.2;
    o.shard_tokens = 1000;
    const char *files[2] = {f1, f2};
    dt_prepare_result res;
    assert_int_equal(prepare_run(&res, &o, files, 2, NULL), DT_OK);

    split tr, va;
    read_split(&tr, out, "fortunes", "train");
    read_split(&va, out, "fortunes", "val");
    assert_int_equal(res.n_docs, N_DOCS);
    assert_int_equal(res.n_train_docs, tr.n_docs);
    assert_int_equal(res.n_val_docs, va.n_docs);
    assert_int_equal(res.train_tokens, tr.tokens);
    assert_int_equal(res.val_tokens, va.tokens);
    assert_int_equal(res.n_train_shards, tr.n_shards);
    assert_int_equal(res.n_val_shards, va.n_shards);
    /* Every shard but the last of a split holds exactly shard_tokens tokens. */
    for (int s = 0; s + 1 < tr.n_shards; s++) assert_int_equal(tr.shard_sizes[s], 1000);
    for (int s = 0; s + 1 < va.n_shards; s++) assert_int_equal(va.shard_sizes[s], 1000);
    assert_true(tr.n_shards >= 3);

    /* Every document exactly once over both splits, decoded to its exact bytes, in input order
     * within each split, and in the split the documented rule puts it. */
    int where[N_DOCS];
    for (int i = 0; i < N_DOCS; i++) where[i] = -1;
    split *sp[2] = {&tr, &va};
    size_t tokens[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        int last = -1;
        for (int j = 0; j < sp[k]->n_docs; j++) {
            doc *d = &sp[k]->docs[j];
            int i = -1;
            assert_int_equal(sscanf((const char *)d->text, "doc %d\n", &i), 1);
            assert_true(i >= 0 && i < N_DOCS);
            if (where[i] != -1) fail_msg("document %d appears twice", i);
            where[i] = k;
            assert_int_equal(d->len, len[i]);
            assert_memory_equal(d->text, text[i], len[i]);
            assert_true(i > last);
            last = i;
            tokens[k] += len[i] + 1;
            int rule = prepare_doc_fraction(text[i], len[i]) < 0.2;
            assert_int_equal(rule, k);
        }
    }
    for (int i = 0; i < N_DOCS; i++)
        if (where[i] == -1) fail_msg("document %d is missing", i);
    assert_int_equal(tokens[0], tr.tokens);
    assert_int_equal(tokens[1], va.tokens);
    /* About 20% held out (binomial: 40 +- 5.7; the hash is fixed, so this cannot flake), and
     * spread over both files, not a tail. */
    assert_true(va.n_docs >= 20 && va.n_docs <= 60);
    int val_a = 0, val_b = 0;
    for (int i = 0; i < N_DOCS; i++) {
        if (where[i] == 1 && i < 120) val_a++;
        if (where[i] == 1 && i >= 120) val_b++;
    }
    assert_true(val_a >= 5 && val_b >= 5);
    free_split(&tr);
    free_split(&va);

    /* A second run with larger shards warns about the now stale train shard 000001. */
    o.shard_tokens = 100000000;
    capture_begin();
    dt_status st = prepare_run(&res, &o, files, 2, NULL);
    const char *msg = capture_end();
    assert_int_equal(st, DT_OK);
    assert_contains(msg, "fortunes_train_000001.bin");
    assert_int_equal(res.n_train_shards, 1);
}

/* Without a separator each file is one document; val_fraction 0 writes no validation shard. */
static void test_files_as_documents(void **state) {
    (void)state;
    const char *content[3] = {"first file\n%\nstill the first\n", "second, no newline",
                              "\x00\xff\x01 binary\n"};
    size_t clen[3] = {strlen(content[0]), strlen(content[1]), 11};
    char paths[3][1024], out[1024];
    const char *files[3];
    for (int i = 0; i < 3; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/whole%d.txt", dir, i);
        write_raw(paths[i], content[i], clen[i]);
        files[i] = paths[i];
    }
    snprintf(out, sizeof out, "%s/whole_out", dir);
    dt_prepare_opts o;
    prepare_opts_default(&o);
    o.out_dir = out;
    o.val_fraction = 0;
    o.bits = 32;
    dt_prepare_result res;
    assert_int_equal(prepare_run(&res, &o, files, 3, NULL), DT_OK);
    assert_int_equal(res.n_docs, 3);
    assert_int_equal(res.n_val_docs, 0);
    assert_int_equal(res.n_val_shards, 0);
    char val[1100];
    snprintf(val, sizeof val, "%s/data_val_000000.bin", out);
    assert_false(file_exists(val));
    char train[1100];
    snprintf(train, sizeof train, "%s/data_train_000000.bin", out);
    dt_shard s;
    assert_int_equal(shard_open(&s, train), DT_OK);
    assert_int_equal(s.bits, 32);
    shard_close(&s);
    split tr;
    read_split(&tr, out, "data", "train");
    assert_int_equal(tr.n_docs, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tr.docs[i].len, clen[i]);
        assert_memory_equal(tr.docs[i].text, content[i], clen[i]);
    }
    free_split(&tr);
}

/* Separators: empty documents skipped, CRLF, a separator-like line that is not exact. */
static void test_separators(void **state) {
    (void)state;
    char path[1024], out[1024];
    snprintf(path, sizeof path, "%s/sep.txt", dir);
    snprintf(out, sizeof out, "%s/sep_out", dir);
    const char *text = "%\na\r\n%\r\n%\n\n%\n% not a separator\n%%\nb\n%";
    write_raw(path, text, strlen(text));
    dt_prepare_opts o;
    prepare_opts_default(&o);
    o.out_dir = out;
    o.split_on = "%";
    o.val_fraction = 0;
    const char *files[1] = {path};
    dt_prepare_result res;
    assert_int_equal(prepare_run(&res, &o, files, 1, NULL), DT_OK);
    split tr;
    read_split(&tr, out, "data", "train");
    const char *want[3] = {"a\r\n", "\n", "% not a separator\n%%\nb\n"};
    assert_int_equal(tr.n_docs, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tr.docs[i].len, strlen(want[i]));
        assert_memory_equal(tr.docs[i].text, want[i], strlen(want[i]));
    }
    free_split(&tr);
}

/* With val_fraction > 0 both splits get at least one document, whatever the hash says. */
static void test_nonempty_fixup(void **state) {
    (void)state;
    char path[1024], out[1024];
    snprintf(path, sizeof path, "%s/two.txt", dir);
    write_raw(path, "alpha\n%\nbeta\n%\ngamma\n", 21);
    const char *files[1] = {path};
    const double fractions[2] = {1e-12, 0.999999999};
    for (int k = 0; k < 2; k++) {
        snprintf(out, sizeof out, "%s/fix%d", dir, k);
        dt_prepare_opts o;
        prepare_opts_default(&o);
        o.out_dir = out;
        o.split_on = "%";
        o.val_fraction = fractions[k];
        dt_prepare_result res;
        assert_int_equal(prepare_run(&res, &o, files, 1, NULL), DT_OK);
        assert_int_equal(res.n_docs, 3);
        assert_int_equal(res.n_val_docs, k == 0 ? 1 : 2);
        assert_int_equal(res.n_train_docs, k == 0 ? 2 : 1);
        split tr, va;
        read_split(&tr, out, "data", "train");
        read_split(&va, out, "data", "val");
        assert_int_equal(tr.n_docs + va.n_docs, 3);
        assert_int_equal(va.n_docs, (int)res.n_val_docs);
        free_split(&tr);
        free_split(&va);
    }
}

static void test_input_errors(void **state) {
    (void)state;
    char one[1024], missing[1024], out[1024];
    snprintf(one, sizeof one, "%s/one.txt", dir);
    snprintf(missing, sizeof missing, "%s/missing.txt", dir);
    snprintf(out, sizeof out, "%s/err_out", dir);
    write_raw(one, "just one document\n", 18);
    dt_prepare_opts o;
    prepare_opts_default(&o);
    o.out_dir = out;
    dt_prepare_result res;
    const char *files[2] = {one, missing};

    capture_begin();
    dt_status st = prepare_run(&res, &o, files, 2, NULL);
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, missing);
    assert_false(file_exists(out)); /* nothing written before the inputs are known good */

    capture_begin();
    st = prepare_run(&res, &o, files, 1, NULL); /* one document, val_fraction 0.05 */
    msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, one);
    assert_contains(msg, "--split-on");
    o.val_fraction = 0;
    assert_int_equal(prepare_run(&res, &o, files, 1, NULL), DT_OK);

    char empty[1024];
    snprintf(empty, sizeof empty, "%s/empty.txt", dir);
    write_raw(empty, "", 0);
    files[0] = empty;
    capture_begin();
    st = prepare_run(&res, &o, files, 1, NULL);
    capture_end();
    assert_int_equal(st, DT_ERR_INPUT);

    files[0] = one;
    dt_prepare_opts bad = o;
    bad.bits = 8;
    capture_begin();
    st = prepare_run(&res, &bad, files, 1, NULL);
    capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    bad = o;
    bad.val_fraction = 1.0;
    capture_begin();
    st = prepare_run(&res, &bad, files, 1, NULL);
    capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    bad = o;
    bad.shard_tokens = 0;
    capture_begin();
    st = prepare_run(&res, &bad, files, 1, NULL);
    capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
}

static void test_tokenizer(void **state) {
    (void)state;
    uint8_t bytes[256], back[258];
    uint32_t tok[258];
    for (int i = 0; i < 256; i++) bytes[i] = (uint8_t)(255 - i);
    assert_int_equal(tokenizer_encode(tok, bytes, 256), 256);
    for (int i = 0; i < 256; i++) assert_int_equal(tok[i], 255 - i);
    tok[256] = DT_TOKEN_EOT;
    size_t n = 0;
    assert_int_equal(tokenizer_decode(back, &n, tok, 257), DT_OK);
    assert_int_equal(n, 256); /* EOT decodes to nothing */
    assert_memory_equal(back, bytes, 256);
    tok[10] = 257;
    capture_begin();
    dt_status st = tokenizer_decode(back, &n, tok, 257);
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, "token 10 has id 257");
    assert_int_equal(DT_BYTE_VOCAB, 257);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_split),
        cmocka_unit_test(test_files_as_documents),
        cmocka_unit_test(test_separators),
        cmocka_unit_test(test_nonempty_fixup),
        cmocka_unit_test(test_input_errors),
        cmocka_unit_test(test_tokenizer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
