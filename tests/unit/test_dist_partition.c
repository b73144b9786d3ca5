/* dist_partition: balance, order and coverage, against an independent reference that deals the
 * elements out one by one (element k to part k % parts gives the same sizes: the first n % parts
 * parts get one more), for every n up to 300 and every parts up to 19, and in closed form for
 * sizes far beyond int. Pure integer arithmetic: results must match exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "dist/partition.h"

static void test_small_against_dealt_reference(void **state) {
    (void)state;
    size_t ref[32], counts[32];
    for (size_t n = 0; n <= 300; n++) {
        for (int parts = 1; parts <= 19; parts++) {
            for (int i = 0; i < parts; i++) ref[i] = 0;
            for (size_t k = 0; k < n; k++) ref[k % (size_t)parts]++;
            dist_partition_counts(counts, n, parts);
            size_t expect_off = 0, lo = n, hi = 0;
            for (int i = 0; i < parts; i++) {
                size_t off, cnt;
                dist_partition(n, parts, i, &off, &cnt);
                assert_int_equal(cnt, ref[i]);
                assert_int_equal(counts[i], ref[i]);
                assert_int_equal(off, expect_off); /* contiguous, in order: covers [0, n) */
                expect_off += cnt;
                if (cnt < lo) lo = cnt;
                if (cnt > hi) hi = cnt;
            }
            assert_int_equal(expect_off, n);
            assert_true(hi - lo <= 1);
        }
    }
}

static void test_huge_sizes(void **state) {
    (void)state;
    /* sizes beyond int and beyond 2^32: the offsets must not overflow */
    const size_t ns[] = {(size_t)1 << 31, ((size_t)1 << 33) + 5, ((size_t)1 << 40) - 3};
    const int ps[] = {1, 3, 7, 64, 1000};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        for (size_t b = 0; b < sizeof ps / sizeof ps[0]; b++) {
            size_t n = ns[a], p = (size_t)ps[b], q = n / p, rem = n % p, sum = 0;
            for (int i = 0; i < ps[b]; i++) {
                size_t off, cnt, k = (size_t)i;
                dist_partition(n, ps[b], i, &off, &cnt);
                assert_int_equal(cnt, q + (k < rem));
                assert_int_equal(off, sum);
                sum += cnt;
            }
            assert_int_equal(sum, n);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_against_dealt_reference),
        cmocka_unit_test(test_huge_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
