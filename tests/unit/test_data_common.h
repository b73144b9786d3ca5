/* Helpers shared by the data tests (test_data_*.c): capture what dt_error prints, write and read
 * raw files. Include after <cmocka.h>. */
#ifndef DT_TEST_DATA_COMMON_H
#define DT_TEST_DATA_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* stderr is redirected to a temporary file between capture_begin and capture_end; capture_end
 * returns what was written (also echoed to the real stderr, so a failing test shows it). */
static char capture_text[16384];
static int capture_saved_fd = -1;
static FILE *capture_file;

__attribute__((unused)) static void capture_begin(void) {
    fflush(stderr);
    capture_file = tmpfile();
    assert_non_null(capture_file);
    capture_saved_fd = dup(2);
    assert_true(capture_saved_fd >= 0);
    assert_true(dup2(fileno(capture_file), 2) >= 0);
}

__attribute__((unused)) static const char *capture_end(void) {
    fflush(stderr);
    dup2(capture_saved_fd, 2);
    close(capture_saved_fd);
    capture_saved_fd = -1;
    rewind(capture_file);
    size_t n = fread(capture_text, 1, sizeof capture_text - 1, capture_file);
    capture_text[n] = '\0';
    fclose(capture_file);
    fputs(capture_text, stderr);
    return capture_text;
}

/* Fails unless `text` contains `part`. */
#define assert_contains(text, part)                                                                \
    do {                                                                                           \
        const char *t_ = (text), *p_ = (part);                                                     \
        if (!strstr(t_, p_)) fail_msg("expected the message to contain \"%s\", got: %s", p_, t_);  \
    } while (0)

__attribute__((unused)) static void write_raw(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* The whole file in a malloc'd buffer (NUL-terminated); *n gets its size. */
__attribute__((unused)) static unsigned char *read_raw(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return buf;
}

__attribute__((unused)) static int file_exists(const char *path) { return access(path, F_OK) == 0; }

#endif
