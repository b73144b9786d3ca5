/* The sample stream: the seeded permutation (bijection, epochs, determinism, a randomness sanity
 * check), sample windows (inputs/targets, window positions, counts), glob ordering and the
 * loader's errors. Shards hold token = shard*100000 + position, so every token says where it came
 * from and the test checks windows without trusting the loader's bookkeeping. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data/loader.h"
#include "data/perm.h"
#include "data/shard.h"
#include "test_data_common.h"
#include "testutil.h"
#include "util/alloc.h"

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

#define TAG 100000u /* token = shard_tag * TAG + position */

/* Writes DIR/name holding n tokens tag*TAG + i (32-bit). */
static void make_shard(const char *name, uint32_t tag, size_t n) {
    char path[DT_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint32_t *tok = malloc((n ? n : 1) * sizeof *tok);
    for (size_t i = 0; i < n; i++) tok[i] = tag * TAG + (uint32_t)i;
    assert_int_equal(shard_write(path, tok, n, 32), DT_OK);
    free(tok);
}

static void set_pattern(char (*pat)[DT_PATH_MAX], const char *name) {
    snprintf(pat[0], DT_PATH_MAX, "%s/%s", dir, name);
}

/* ---- the permutation ---- */

/* Checks that perm_apply(key, n, .) maps [0, n) onto [0, n) one to one; returns the number of
 * fixed points. */
static size_t check_bijection(uint64_t key, uint64_t n, uint64_t *image) {
    unsigned char *seen = calloc(n, 1);
    size_t fixed = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t j = perm_apply(key, n, i);
        if (j >= n)
            fail_msg("n=%llu: perm(%llu) = %llu is out of range", (unsigned long long)n,
                     (unsigned long long)i, (unsigned long long)j);
        if (seen[j])
            fail_msg("n=%llu: %llu is hit twice", (unsigned long long)n, (unsigned long long)j);
        seen[j] = 1;
        fixed += (j == i);
        if (image) image[i] = j;
    }
    free(seen);
    return fixed;
}

static void test_perm_bijection(void **state) {
    (void)state;
    const uint64_t sizes[] = {1, 2, 3, 4, 5, 7, 16, 17, 255, 1000, 1024, 1025, 4099, 65537};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (uint64_t seed = 0; seed < 4; seed++)
            for (uint64_t epoch = 0; epoch < 3; epoch++)
                check_bijection(perm_key(seed, epoch), sizes[s], NULL);
}

/* Epochs and seeds give different orders; the same (seed, epoch) gives the same order. */
static void test_perm_epochs_differ(void **state) {
    (void)state;
    const uint64_t sizes[] = {1000, 1025};
    for (size_t s = 0; s < 2; s++) {
        uint64_t n = sizes[s];
        uint64_t *e0 = malloc(n * sizeof *e0), *e1 = malloc(n * sizeof *e1);
        uint64_t *again = malloc(n * sizeof *again), *other = malloc(n * sizeof *other);
        check_bijection(perm_key(42, 0), n, e0);
        check_bijection(perm_key(42, 1), n, e1);
        check_bijection(perm_key(42, 0), n, again);
        check_bijection(perm_key(43, 0), n, other);
        size_t diff01 = 0, diff_seed = 0;
        for (uint64_t i = 0; i < n; i++) {
            assert_int_equal(e0[i], again[i]);
            diff01 += e0[i] != e1[i];
            diff_seed += e0[i] != other[i];
        }
        /* Two independent random permutations agree in about 1 place; 10 is far out. */
        assert_true(diff01 >= n - 10);
        assert_true(diff_seed >= n - 10);
        free(e0);
        free(e1);
        free(again);
        free(other);
    }
}

/* A weak network (too few rounds, a bad round function) leaves the order close to the identity
 * or to a shift. For a uniformly random permutation of n = 4096 the correlation of i with perm(i)
 * has standard deviation 1/sqrt(n-1) = 0.016, and the number of fixed points is Poisson(1); the
 * thresholds (0.08 = 5 sd, 8 fixed points: p < 1e-5) cannot fail by chance for any key here. */
static void test_perm_looks_random(void **state) {
    (void)state;
    uint64_t n = 4096;
    uint64_t *img = malloc(n * sizeof *img);
    for (uint64_t seed = 0; seed < 3; seed++) {
        size_t fixed = check_bijection(perm_key(seed, 5), n, img);
        assert_true(fixed <= 8);
        double mean = (double)(n - 1) / 2, sxy = 0, sxx = 0, sdisp = 0, slag = 0;
        for (uint64_t i = 0; i < n; i++) {
            sxy += ((double)i - mean) * ((double)img[i] - mean);
            sxx += ((double)i - mean) * ((double)i - mean);
            sdisp += fabs((double)img[i] - (double)i);
            if (i + 1 < n) slag += ((double)img[i] - mean) * ((double)img[i + 1] - mean);
        }
        double corr = sxy / sxx; /* both sides have the same variance: a permutation */
        assert_true(fabs(corr) < 0.08);
        /* Neighbouring positions must not land near each other either (same sd, same bound). */
        assert_true(fabs(slag / sxx) < 0.08);
        /* Mean |perm(i) - i| of a random permutation is (n+1)/3, with sd about 0.004 n here (0.03 n
         * is 7 sd). */
        assert_true(tu_close(sdisp / (double)n, (double)(n + 1) / 3, 0.03 * (double)n, 0));
    }
    free(img);
}

/* ---- windows ---- */

/* T = 8; shards: a (10 windows: 81 tokens), b (5 windows: 8*5+3 = 43 tokens), c (too short: 8
 * tokens), d (1 window: 9 tokens). N = 16. */
#define T 8
static void make_window_shards(void) {
    make_shard("w_a.bin", 1, 81);
    make_shard("w_b.bin", 2, 43);
    make_shard("w_c.bin", 3, 8);
    make_shard("w_d.bin", 4, 9);
}

/* Decodes a sample and checks it is a whole window: consecutive tokens of one shard, starting at a
 * multiple of T, targets = inputs shifted by one. Returns tag*1000 + window index. */
static unsigned window_of(const int32_t *in, const int32_t *tg) {
    uint32_t tag = (uint32_t)in[0] / TAG, start = (uint32_t)in[0] % TAG;
    assert_int_equal(start % T, 0);
    for (int t = 0; t < T; t++) {
        assert_int_equal(in[t], (int32_t)(tag * TAG + start + (uint32_t)t));
        assert_int_equal(tg[t], in[t] + 1);
        if (t > 0) assert_int_equal(in[t], tg[t - 1]);
    }
    return tag * 1000 + start / T;
}

static void test_windows_in_order(void **state) {
    (void)state;
    make_window_shards();
    char pat[1][DT_PATH_MAX];
    set_pattern(pat, "w_*.bin");
    dt_loader L;
    capture_begin();
    dt_status st = loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 1, T, 1000000, 1, 0);
    const char *msg = capture_end();
    assert_int_equal(st, DT_OK);
    assert_contains(msg, "w_c.bin"); /* the warning names the shard that contributes nothing */
    assert_int_equal(loader_num_samples(&L), 16);
    assert_int_equal(L.n_shards, 3);
    /* Without shuffle, stream order is shard order (sorted glob), windows in order. */
    unsigned expect[16];
    int k = 0;
    for (unsigned w = 0; w < 10; w++) expect[k++] = 1000 + w;
    for (unsigned w = 0; w < 5; w++) expect[k++] = 2000 + w;
    expect[k++] = 4000;
    int32_t in[T], tg[T];
    for (uint64_t n = 0; n < 48; n++) { /* three epochs */
        assert_int_equal(loader_sample(&L, n, in, tg), DT_OK);
        assert_int_equal(window_of(in, tg), expect[n % 16]);
        assert_int_equal(loader_sample_id(&L, n), n % 16);
    }
    /* The last window of b ends at token 40 of 43: tokens 41, 42 are never used. */
    assert_int_equal(loader_sample(&L, 14, in, tg), DT_OK);
    assert_int_equal(tg[T - 1], 2 * TAG + 40);
    loader_free(&L);
    loader_free(&L); /* harmless twice */
}

static void test_shuffled_epochs(void **state) {
    (void)state;
    make_window_shards();
    char pat[1][DT_PATH_MAX];
    set_pattern(pat, "w_*.bin");
    dt_loader L, L2, L3;
    capture_begin(); /* the short-shard warnings */
    assert_int_equal(loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 1, T, 1000000, 7, 1), DT_OK);
    assert_int_equal(loader_init(&L2, (const char(*)[DT_PATH_MAX])pat, 1, T, 1000000, 7, 1), DT_OK);
    assert_int_equal(loader_init(&L3, (const char(*)[DT_PATH_MAX])pat, 1, T, 1000000, 8, 1), DT_OK);
    capture_end();
    uint64_t N = loader_num_samples(&L);
    assert_int_equal(N, 16);
    unsigned order[3][16], order_seed8[16];
    int32_t in[T], tg[T], in2[T], tg2[T];
    for (int e = 0; e < 3; e++) {
        for (uint64_t p = 0; p < N; p++) {
            uint64_t n = (uint64_t)e * N + p;
            assert_int_equal(loader_sample(&L, n, in, tg), DT_OK);
            order[e][p] = window_of(in, tg);
            /* A second loader with the same seed (another rank, a resumed run) agrees. */
            assert_int_equal(loader_sample(&L2, n, in2, tg2), DT_OK);
            assert_memory_equal(in, in2, sizeof in);
            assert_memory_equal(tg, tg2, sizeof tg);
            if (e == 0) {
                assert_int_equal(loader_sample(&L3, n, in2, tg2), DT_OK);
                order_seed8[p] = window_of(in2, tg2);
            }
        }
    }
    /* Each epoch is the same set of 16 windows (n and n+N: same set), in a different order. */
    for (int e = 0; e < 3; e++) {
        unsigned sorted[16];
        memcpy(sorted, order[e], sizeof sorted);
        for (int i = 0; i < 16; i++)
            for (int j = i + 1; j < 16; j++)
                if (sorted[j] < sorted[i]) {
                    unsigned t = sorted[i];
                    sorted[i] = sorted[j];
                    sorted[j] = t;
                }
        int k = 0;
        for (unsigned w = 0; w < 10; w++) assert_int_equal(sorted[k++], 1000 + w);
        for (unsigned w = 0; w < 5; w++) assert_int_equal(sorted[k++], 2000 + w);
        assert_int_equal(sorted[k], 4000);
    }
    /* 16! orders: two equal ones from different keys would be a defect, not chance. */
    assert_true(memcmp(order[0], order[1], sizeof order[0]) != 0);
    assert_true(memcmp(order[1], order[2], sizeof order[0]) != 0);
    assert_true(memcmp(order[0], order_seed8, sizeof order[0]) != 0);
    loader_free(&L);
    loader_free(&L2);
    loader_free(&L3);
}

/* Exactly seq_len+1 tokens make one sample; seq_len = 1 makes every token a target once. */
static void test_window_edges(void **state) {
    (void)state;
    make_shard("edge.bin", 5, 2);
    char pat[1][DT_PATH_MAX];
    set_pattern(pat, "edge.bin");
    dt_loader L;
    assert_int_equal(loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 1, 1, 1000000, 0, 1), DT_OK);
    assert_int_equal(loader_num_samples(&L), 1);
    int32_t in[1], tg[1];
    for (uint64_t n = 0; n < 5; n++) {
        assert_int_equal(loader_sample(&L, n, in, tg), DT_OK);
        assert_int_equal(in[0], 5 * TAG);
        assert_int_equal(tg[0], 5 * TAG + 1);
    }
    loader_free(&L);
}

/* ---- glob ordering and errors ---- */

static void test_glob_order(void **state) {
    (void)state;
    /* Created out of order; "g_10" sorts before "g_9" bytewise. */
    make_shard("g_9.bin", 9, 3);
    make_shard("g_10.bin", 10, 3);
    make_shard("g_1.bin", 1, 3);
    make_shard("z_only.bin", 8, 3);
    char pat[2][DT_PATH_MAX];
    snprintf(pat[0], DT_PATH_MAX, "%s/z_only.bin", dir); /* a plain path, listed first */
    snprintf(pat[1], DT_PATH_MAX, "%s/g_*.bin", dir);
    dt_loader L;
    assert_int_equal(loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 2, 2, 100000000, 0, 0),
                     DT_OK);
    assert_int_equal(L.n_shards, 4);
    const char *names[4] = {"/z_only.bin", "/g_1.bin", "/g_10.bin", "/g_9.bin"};
    const uint32_t tags[4] = {8, 1, 10, 9};
    int32_t in[2], tg[2];
    for (int i = 0; i < 4; i++) {
        const char *p = L.shards[i].path;
        assert_string_equal(p + strlen(p) - strlen(names[i]), names[i]);
        assert_int_equal(loader_sample(&L, (uint64_t)i, in, tg), DT_OK);
        assert_int_equal(in[0], (int32_t)(tags[i] * TAG));
    }
    loader_free(&L);
}

static void test_pattern_matches_nothing(void **state) {
    (void)state;
    make_shard("exists.bin", 1, 100);
    char pat[2][DT_PATH_MAX];
    snprintf(pat[0], DT_PATH_MAX, "%s/exists.bin", dir);
    snprintf(pat[1], DT_PATH_MAX, "%s/nothing_*.bin", dir);
    dt_loader L;
    capture_begin();
    dt_status st = loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 2, 4, 1000000, 0, 0);
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, pat[1]);
    assert_null(L.shards);
    /* A bad shard among good ones fails the whole init with the shard's message. */
    char bad[DT_PATH_MAX];
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);
    write_raw(bad, "not a shard", 11);
    snprintf(pat[1], DT_PATH_MAX, "%s", bad);
    capture_begin();
    st = loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 2, 4, 1000000, 0, 0);
    msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, bad);
    unlink(bad);
}

static void test_all_too_short(void **state) {
    (void)state;
    make_shard("short_a.bin", 1, 16);
    make_shard("short_b.bin", 2, 10);
    char pat[1][DT_PATH_MAX];
    set_pattern(pat, "short_*.bin");
    dt_loader L;
    capture_begin();
    dt_status st = loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 1, 16, 1000000, 0, 0);
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, pat[0]);
    assert_contains(msg, "seq_len+1 = 17");
    /* 16 tokens are enough for seq_len 15. */
    assert_int_equal(loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 1, 15, 1000000, 0, 0), DT_OK);
    assert_int_equal(loader_num_samples(&L), 1);
    loader_free(&L);
    capture_begin();
    st = loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 1, 0, 1000000, 0, 0);
    capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
}

static void test_out_of_vocab(void **state) {
    (void)state;
    char path[DT_PATH_MAX];
    snprintf(path, sizeof path, "%s/oov.bin", dir);
    uint32_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = (uint32_t)i % 200;
    tok[21] = 300;
    assert_int_equal(shard_write(path, tok, 40, 16), DT_OK);
    char pat[1][DT_PATH_MAX];
    snprintf(pat[0], DT_PATH_MAX, "%s", path);
    dt_loader L;
    assert_int_equal(loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 1, 10, 257, 0, 0), DT_OK);
    int32_t in[10], tg[10];
    assert_int_equal(loader_sample(&L, 0, in, tg), DT_OK); /* tokens 0..10 */
    assert_int_equal(loader_sample(&L, 1, in, tg), DT_OK); /* tokens 10..20 */
    capture_begin();
    dt_status st = loader_sample(&L, 2, in, tg); /* tokens 20..30 hold the 300 */
    const char *msg = capture_end();
    assert_int_equal(st, DT_ERR_INPUT);
    assert_contains(msg, path);
    assert_contains(msg, "token 21 ");
    assert_contains(msg, "300");
    assert_contains(msg, "257");
    loader_free(&L);
}

/* Every allocation of init failing in turn gives a clean DT_ERR_RUNTIME and a zeroed loader. */
static void test_init_allocation_failures(void **state) {
    (void)state;
    make_shard("alloc_a.bin", 1, 50);
    make_shard("alloc_b.bin", 2, 50);
    char pat[1][DT_PATH_MAX];
    set_pattern(pat, "alloc_*.bin");
    int failures = 0;
    for (long k = 1; k < 40; k++) {
        dt_loader L;
        dt_alloc_fail_after(k);
        capture_begin();
        dt_status st = loader_init(&L, (const char(*)[DT_PATH_MAX])pat, 1, 4, 1000000, 0, 1);
        capture_end();
        dt_alloc_fail_after(0);
        if (st == DT_OK) {
            assert_int_equal(loader_num_samples(&L), 24);
            loader_free(&L);
            break;
        }
        assert_int_equal(st, DT_ERR_RUNTIME);
        assert_null(L.shards);
        assert_int_equal(L.n_shards, 0);
        failures++;
    }
    assert_true(failures >= 3); /* init allocates at least the path list, shards and offsets */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perm_bijection),
        cmocka_unit_test(test_perm_epochs_differ),
        cmocka_unit_test(test_perm_looks_random),
        cmocka_unit_test(test_windows_in_order),
        cmocka_unit_test(test_shuffled_epochs),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_glob_order),
        cmocka_unit_test(test_pattern_matches_nothing),
        cmocka_unit_test(test_all_too_short),
        cmocka_unit_test(test_out_of_vocab),
        cmocka_unit_test(test_init_allocation_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
