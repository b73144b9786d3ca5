/* The file-system side of checkpoints (ckpt/ckpt_fs.h): keep_last rotation against a
 * sort-based reference, step directory names, `latest` written and read back, leftover .tmp
 * directories removed, and ckpt_rotate on a real directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "ckpt/ckpt_fs.h"
#include "testutil.h"

static int cmp_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void test_rotation_plan_against_sorted_reference(void **state) {
    (void)state;
    unsigned seed = 11;
    for (int trial = 0; trial < 500; trial++) {
        int n = rand_r(&seed) % 9, keep = rand_r(&seed) % 6, remove[16];
        int64_t steps[16], sorted[16];
        for (int i = 0; i < n; i++) { /* distinct steps in random order */
            steps[i] = (int64_t)(i + 1) * 5;
            int j = rand_r(&seed) % (i + 1);
            int64_t x = steps[i];
            steps[i] = steps[j];
            steps[j] = x;
        }
        memcpy(sorted, steps, sizeof(int64_t) * (size_t)n);
        qsort(sorted, (size_t)n, sizeof(int64_t), cmp_desc);
        int count = ckpt_rotation_plan(steps, n, keep, remove), ref = 0;
        for (int i = 0; i < n; i++) {
            int rank = 0;
            while (sorted[rank] != steps[i]) rank++;
            int want = keep > 0 && rank >= keep; /* all but the keep newest; keep 0 keeps all */
            assert_int_equal(remove[i], want);
            ref += want;
        }
        assert_int_equal(count, ref);
    }
}

static void test_step_names(void **state) {
    (void)state;
    int64_t s = -1;
    assert_true(ckpt_parse_step_name("step_00000010", &s));
    assert_int_equal(s, 10);
    assert_true(ckpt_parse_step_name("step_123456789", &s));
    assert_int_equal(s, 123456789);
    assert_false(ckpt_parse_step_name("step_00000010.tmp", &s));
    assert_false(ckpt_parse_step_name("step_10", &s));
    assert_false(ckpt_parse_step_name("latest", &s));
    assert_false(ckpt_parse_step_name("step_0000001x", &s));
    char buf[64];
    ckpt_step_path(buf, sizeof buf, "d", 42, 1);
    assert_string_equal(buf, "d/step_00000042.tmp");
}

static void touch(const char *dir, const char *name) {
    char p[1100];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("x", f);
    fclose(f);
}

static int exists(const char *dir, const char *name) {
    char p[1100];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0;
}

static void test_latest_tmp_cleanup_and_rotation(void **state) {
    (void)state;
    char *dir = tu_tmpdir(), p[512], name[64];
    assert_non_null(dir);
    assert_int_equal(ckpt_read_latest(dir, name, sizeof name, 1), DT_ERR_INPUT); /* none yet */
    for (int s = 1; s <= 5; s++) {
        ckpt_step_path(p, sizeof p, dir, s, 0);
        assert_int_equal(ckpt_mkdirs(p), DT_OK);
        touch(p, "shard_00000.h5");
    }
    ckpt_step_path(p, sizeof p, dir, 6, 1);
    assert_int_equal(ckpt_mkdirs(p), DT_OK);
    touch(p, "shard_00000.h5");
    touch(dir, "latest.tmp");
    assert_int_equal(ckpt_write_latest(dir, "step_00000005"), DT_OK);
    assert_int_equal(ckpt_read_latest(dir, name, sizeof name, 0), DT_OK);
    assert_string_equal(name, "step_00000005");
    int removed = 0;
    assert_int_equal(ckpt_clean_tmp(dir, &removed), DT_OK);
    assert_int_equal(removed, 1); /* step_00000006.tmp; latest.tmp was consumed by the rename */
    assert_false(exists(dir, "step_00000006.tmp"));
    assert_int_equal(ckpt_rotate(dir, 2, 5), DT_OK);
    for (int s = 1; s <= 5; s++) {
        snprintf(name, sizeof name, "step_%08d", s);
        assert_int_equal(exists(dir, name), s >= 4);
    }
    assert_true(exists(dir, "latest"));
    touch(dir, "latest.tmp");
    assert_int_equal(ckpt_clean_tmp(dir, &removed), DT_OK);
    assert_int_equal(removed, 1);
    /* a latest that names no committed checkpoint is refused */
    FILE *f = fopen(strcat(strcpy(p, dir), "/latest"), "w");
    fputs("step_00000007.tmp\n", f);
    fclose(f);
    assert_int_equal(ckpt_read_latest(dir, name, sizeof name, 0), DT_ERR_INPUT);
    tu_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rotation_plan_against_sorted_reference),
        cmocka_unit_test(test_step_names),
        cmocka_unit_test(test_latest_tmp_cleanup_and_rotation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
