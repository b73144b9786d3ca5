/* Token shards: the llm.c byte layout, every validation error, the uint16 range check, and the
 * shard statistics (unigram entropy) against a naive double-precision reference. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data/shard.h"
#include "data/shard_stats.h"
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

static void path_in(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Writes tokens with shard_write, then checks the file byte by byte against the llm.c layout
 * (decoded here independently of shard.c) and reads it back with shard_open. */
static void round_trip(int bits, uint32_t max_token) {
    char path[1024];
    path_in(path, sizeof path, bits == 16 ? "rt16.bin" : "rt32.bin");
    size_t n = 5000;
    uint32_t *tok = malloc(n * sizeof *tok);
    uint64_t key = rng_key(7, "tokens");
    for (size_t i = 0; i < n; i++)
        tok[i] = (uint32_t)(rng_uniform(key, i) * ((double)max_token + 1));
    tok[0] = 0;
    tok[1] = max_token; /* the extremes of the range */
    assert_int_equal(shard_write(path, tok, n, bits), DT_OK);

    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_false(file_exists(tmp)); /* renamed into place */
    size_t bytes;
    unsigned char *raw = read_raw(path, &bytes);
    assert_int_equal(bytes, 1024 + n * (size_t)(bits / 8));
    assert_int_equal(le32(raw), bits == 16 ? 20240520u : 20240801u);
    assert_int_equal(le32(raw + 4), bits == 16 ? 1u : 7u);
    assert_int_equal(le32(raw + 8), n);
    for (int i = 3; i < 256; i++) assert_int_equal(le32(raw + 4 * i), 0);
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = raw + 1024 + i * (size_t)(bits / 8);
        uint32_t v = bits == 16 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : le32(p);
        assert_int_equal(v, tok[i]);
    }
    free(raw);

    dt_shard s;
    assert_int_equal(shard_open(&s, path), DT_OK);
    assert_string_equal(s.path, path);
    assert_int_equal(s.bits, bits);
    assert_int_equal(s.n_tokens, n);
    for (size_t i = 0; i < n; i++) assert_int_equal(shard_token(&s, i), tok[i]);
    shard_close(&s);
    shard_close(&s); /* a closed shard closes again harmlessly */
    free(tok);
}

static void test_round_trip_16(void **state) {
    (void)state;
    round_trip(16, 65535);
}

static void test_round_trip_32(void **state) {
    (void)state;
    round_trip(32, 4000000000u);
}

/* A writer fed in pieces produces the same bytes as one shard_write. */
static void test_writer_pieces(void **state) {
    (void)state;
    char a[1024], b[1024];
    path_in(a, sizeof a, "whole.bin");
    path_in(b, sizeof b, "pieces.bin");
    uint32_t tok[10000];
    for (int i = 0; i < 10000; i++) tok[i] = (uint32_t)(i * 7919u) % 50000u;
    assert_int_equal(shard_write(a, tok, 10000, 16), DT_OK);
    dt_shard_writer w;
    assert_int_equal(shard_writer_open(&w, b, 16), DT_OK);
    assert_int_equal(shard_writer_append(&w, tok, 3), DT_OK);
    assert_int_equal(shard_writer_append(&w, tok + 3, 0), DT_OK);
    assert_int_equal(shard_writer_append(&w, tok + 3, 9000), DT_OK);
    assert_int_equal(shard_writer_append(&w, tok + 9003, 997), DT_OK);
    assert_int_equal(shard_writer_close(&w), DT_OK);
    size_t na, nb;
    unsigned char *ra = read_raw(a, &na), *rb = read_raw(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ra, rb, na);
    free(ra);
    free(rb);
}

static void test_empty_shard(void **state) {
    (void)state;
    char path[1024];
    path_in(path, sizeof path, "empty.bin");
    assert_int_equal(shard_write(path, NULL, 0, 32), DT_OK);
    dt_shard s;
    assert_int_equal(shard_open(&s, path), DT_OK);
    assert_int_equal(s.n_tokens, 0);
    dt_shard_stats st;
    assert_int_equal(shard_stats_compute(&st, &s), DT_OK);
    assert_true(st.entropy_nats == 0.0);
    shard_close(&s);
}

static void test_uint16_refuses_70000(void **state) {
    (void)state;
    char path[1024], tmp[1100];
    path_in(path, sizeof path, "big16.bin");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    uint32_t tok[4] = {1, 2, 70000, 3};
    capture_begin();
    dt_status st = shard_write(path, tok, 4, 16);
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, path);
    assert_contains(msg, "70000");
    assert_contains(msg, "token 2 ");
    assert_false(file_exists(path));
    assert_false(file_exists(tmp));
    /* The same token is fine in a 32-bit shard. */
    assert_int_equal(shard_write(path, tok, 4, 32), DT_OK);
    dt_shard s;
    assert_int_equal(shard_open(&s, path), DT_OK);
    assert_int_equal(shard_token(&s, 2), 70000);
    shard_close(&s);
    /* The streaming writer checks the range too. */
    dt_shard_writer w;
    assert_int_equal(shard_writer_open(&w, path, 16), DT_OK);
    capture_begin();
    st = shard_writer_append(&w, tok, 4);
    msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, "70000");
    shard_writer_abort(&w);
    assert_false(file_exists(tmp));
    /* Bad widths. */
    capture_begin();
    st = shard_write(path, tok, 2, 8);
    msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, "16 or 32");
}

/* Writes a header (magic, version, count) followed by `payload` bytes of tokens and expects
 * shard_open to fail with DT_ERR_INPUT and a message naming the path and containing `what`. */
static void expect_bad(const char *name, int32_t magic, int32_t version, int32_t count,
                       size_t payload, const char *what, const char *what2) {
    char path[1024];
    path_in(path, sizeof path, name);
    size_t bytes = 1024 + payload;
    unsigned char *buf = calloc(bytes, 1);
    int32_t h[3] = {magic, version, count};
    memcpy(buf, h, sizeof h); /* little-endian host, asserted in shard.c */
    write_raw(path, buf, bytes);
    free(buf);
    dt_shard s;
    memset(&s, 0x5a, sizeof s);
    capture_begin();
    dt_status st = shard_open(&s, path);
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, path);
    assert_contains(msg, what);
    if (what2) assert_contains(msg, what2);
    assert_null(s.map); /* zeroed on failure */
    assert_null(s.path);
}

static void test_bad_magic(void **state) {
    (void)state;
    expect_bad("magic.bin", 12345, 1, 0, 0, "bad magic 12345", "20240520");
}

static void test_unknown_version(void **state) {
    (void)state;
    expect_bad("version.bin", 20240520, 3, 0, 0, "unknown shard version 3", NULL);
}

static void test_magic_version_mismatch(void **state) {
    (void)state;
    expect_bad("mismatch16.bin", 20240520, 7, 0, 0, "version 7 does not match magic 20240520",
               "version 1");
    expect_bad("mismatch32.bin", 20240801, 1, 0, 0, "version 1 does not match magic 20240801",
               "version 7");
}

static void test_truncated(void **state) {
    (void)state;
    /* 100 uint16 tokens promised, 150 bytes present. */
    expect_bad("trunc.bin", 20240520, 1, 100, 150, "truncated", "1224 bytes");
    /* uint32: 10 tokens promised, 39 bytes present. */
    expect_bad("trunc32.bin", 20240801, 7, 10, 39, "truncated", "1064 bytes");
}

static void test_trailing_bytes(void **state) {
    (void)state;
    expect_bad("trailing.bin", 20240520, 1, 100, 201, "trailing bytes", "1225 bytes");
    /* A uint32 count that would fit as uint16: the size must match the width the magic says. */
    expect_bad("width.bin", 20240801, 7, 100, 200, "truncated", NULL);
}

static void test_negative_count(void **state) {
    (void)state;
    expect_bad("negative.bin", 20240520, 1, -5, 0, "negative token count -5", NULL);
}

static void test_too_short(void **state) {
    (void)state;
    char path[1024];
    path_in(path, sizeof path, "short.bin");
    unsigned char buf[100] = {0};
    int32_t h[3] = {20240520, 1, 0};
    memcpy(buf, h, sizeof h);
    write_raw(path, buf, sizeof buf);
    dt_shard s;
    capture_begin();
    dt_status st = shard_open(&s, path);
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, path);
    assert_contains(msg, "100 bytes");
    assert_contains(msg, "1024-byte");
    write_raw(path, buf, 0); /* empty file */
    capture_begin();
    st = shard_open(&s, path);
    msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, "0 bytes");
}

static void test_missing_file(void **state) {
    (void)state;
    char path[1024];
    path_in(path, sizeof path, "does_not_exist.bin");
    dt_shard s;
    capture_begin();
    dt_status st = shard_open(&s, path);
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, path);
    capture_begin();
    st = shard_open(&s, dir); /* a directory */
    msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, dir);
}

/* Naive reference: counts by linear search, entropy -sum p ln p in double. */
static double naive_entropy(const uint32_t *tok, size_t n) {
    uint32_t *ids = malloc(n * sizeof *ids);
    size_t *cnt = calloc(n, sizeof *cnt);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < k && ids[j] != tok[i]) j++;
        if (j == k) ids[k++] = tok[i];
        cnt[j]++;
    }
    double h = 0;
    for (size_t j = 0; j < k; j++) {
        double p = (double)cnt[j] / (double)n;
        h -= p * log(p);
    }
    free(ids);
    free(cnt);
    return h;
}

static void check_stats(const char *name, const uint32_t *tok, size_t n, int bits) {
    char path[1024];
    path_in(path, sizeof path, name);
    assert_int_equal(shard_write(path, tok, n, bits), DT_OK);
    dt_shard s;
    assert_int_equal(shard_open(&s, path), DT_OK);
    dt_shard_stats st;
    assert_int_equal(shard_stats_compute(&st, &s), DT_OK);
    uint32_t lo = UINT32_MAX, hi = 0;
    size_t eot = 0;
    for (size_t i = 0; i < n; i++) {
        lo = tok[i] < lo ? tok[i] : lo;
        hi = tok[i] > hi ? tok[i] : hi;
        eot += tok[i] == 256;
    }
    assert_int_equal(st.n_tokens, n);
    assert_int_equal(st.min_id, lo);
    assert_int_equal(st.max_id, hi);
    assert_int_equal(st.n_eot, eot);
    /* Both sides sum the same n terms in double, in different orders: 1e-12 covers rounding. */
    double ref = naive_entropy(tok, n);
    assert_true(tu_close(st.entropy_nats, ref, 1e-12, 1e-12));
    assert_true(tu_close(shard_unigram_entropy(&s), ref, 1e-12, 1e-12));
    shard_close(&s);
}

static void test_entropy(void **state) {
    (void)state;
    /* Uniform over 4 ids: exactly ln 4. */
    uint32_t four[400];
    for (int i = 0; i < 400; i++) four[i] = (uint32_t)(i % 4) * 50;
    check_stats("four.bin", four, 400, 16);
    {
        char path[1024];
        path_in(path, sizeof path, "four.bin");
        dt_shard s;
        assert_int_equal(shard_open(&s, path), DT_OK);
        assert_true(tu_close(shard_unigram_entropy(&s), log(4.0), 1e-12, 0));
        shard_close(&s);
    }
    /* Skewed byte-level data with end-of-text tokens (dense count table). */
    size_t n = 3000;
    uint32_t *tok = malloc(n * sizeof *tok);
    uint64_t key = rng_key(3, "skew");
    for (size_t i = 0; i < n; i++) {
        double u = rng_uniform(key, i);
        tok[i] = u < 0.05 ? 256 : (uint32_t)(97 + 26 * u * u);
    }
    check_stats("skew.bin", tok, n, 16);
    /* Ids spread over the whole uint32 range (sorted-copy path). */
    for (size_t i = 0; i < n; i++) tok[i] = (uint32_t)(rng_uniform(key, i) * 8) * 500000000u;
    check_stats("wide.bin", tok, n, 32);
    free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_16),
        cmocka_unit_test(test_round_trip_32),
        cmocka_unit_test(test_writer_pieces),
        cmocka_unit_test(test_empty_shard),
        cmocka_unit_test(test_uint16_refuses_70000),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_unknown_version),
        cmocka_unit_test(test_magic_version_mismatch),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_negative_count),
        cmocka_unit_test(test_too_short),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_entropy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
