/* The config files under tests/configs: every YAML file in good/ loads and round-trips through
 * config_print; every one in bad/ fails with DT_ERR_INPUT and a message starting
 * "PATH:LINE:" (or "PATH: " for line 0) followed by the key path, as its first line
 * "# expect: LINE KEY.PATH" says. tests/scripts/bad_configs.sh checks the same files through the
 * difftrain program. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "launch/config.h"
#include "util/alloc.h"

#ifndef DT_TEST_CONFIGS_DIR
#error "DT_TEST_CONFIGS_DIR (tests/configs) must be defined by tests/CMakeLists.txt"
#endif

static int cmp_row(const void *a, const void *b) { return strcmp(a, b); }

/* Sorted paths of the *.yaml files of dir; returns the count. */
static int list_yaml(const char *dir, char paths[][1024], int max) {
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".yaml") != 0) continue;
        snprintf(paths[n++], 1024, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(paths, (size_t)n, sizeof paths[0], cmp_row);
    return n;
}

static void test_good_files(void **state) {
    (void)state;
    static char paths[256][1024];
    int n = list_yaml(DT_TEST_CONFIGS_DIR "/good", paths, 256);
    assert_true(n >= 1);
    dt_config *c = calloc(1, sizeof *c), *back = calloc(1, sizeof *back);
    for (int i = 0; i < n; i++) {
        memset(c, 0, sizeof *c);
        memset(back, 0, sizeof *back);
        if (config_load(c, paths[i], 0, NULL) != DT_OK)
            fail_msg("%s: %s", paths[i], config_last_error());
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        config_print(c, f);
        fclose(f);
        if (config_load_string(back, paths[i], text, 0, NULL) != DT_OK)
            fail_msg("%s printed does not load: %s", paths[i], config_last_error());
        if (memcmp(c, back, sizeof *c) != 0)
            fail_msg("%s: print/load changes the config", paths[i]);
        free(text);
    }
    free(c);
    free(back);
}

static void test_bad_files(void **state) {
    (void)state;
    static char paths[256][1024];
    int n = list_yaml(DT_TEST_CONFIGS_DIR "/bad", paths, 256);
    assert_true(n >= 12);
    dt_config *c = calloc(1, sizeof *c);
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(paths[i], "r");
        assert_non_null(f);
        int line = -1;
        char key[256] = "";
        if (fscanf(f, "# expect: %d %255s", &line, key) != 2)
            fail_msg("%s: first line must be '# expect: LINE KEY.PATH'", paths[i]);
        fclose(f);
        if (config_load(c, paths[i], 0, NULL) != DT_ERR_INPUT)
            fail_msg("%s: loaded, expected DT_ERR_INPUT", paths[i]);
        char prefix[1100];
        if (line > 0)
            snprintf(prefix, sizeof prefix, "%.1023s:%d:", paths[i], line);
        else
            snprintf(prefix, sizeof prefix, "%.1023s: ", paths[i]);
        const char *msg = config_last_error();
        char keypart[300];
        snprintf(keypart, sizeof keypart, ": %s: ", key);
        if (strncmp(msg, prefix, strlen(prefix)) != 0 || !strstr(msg, keypart))
            fail_msg("%s: message\n  %s\nexpected to start with %s and name %s", paths[i], msg,
                     prefix, key);
    }
    free(c);
}

/* SQLite-style: make the n-th host allocation fail, for every n the loader reaches; each must
 * end in DT_ERR_RUNTIME (out of memory), never a crash, a leak (ASan builds) or a silent OK. */
static void test_alloc_failures(void **state) {
    (void)state;
    const char *path = DT_TEST_CONFIGS_DIR "/good/tiny_diff.yaml";
    dt_config *c = calloc(1, sizeof *c);
    char *ov[] = {"optim.lr=1e-3"};
    int n;
    for (n = 1; n < 100; n++) {
        dt_alloc_fail_after(n);
        dt_status st = config_load(c, path, 1, ov);
        dt_alloc_fail_after(0);
        if (st == DT_OK) break; /* the n-th allocation was never reached */
        if (st != DT_ERR_RUNTIME) fail_msg("allocation %d failing gave status %d", n, st);
    }
    assert_true(n > 1 && n < 100); /* the loader does allocate, and finishes */
    assert_true(c->optim.lr == 1e-3);
    free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_files),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
