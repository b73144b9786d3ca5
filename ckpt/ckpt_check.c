#include "ckpt/ckpt_check.h"

#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "dist/check.h"

void ckpt_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct walk_arg {
    char *buf;
    size_t n;
    int checksum;
} walk_arg;

/* Walking upward starts at the innermost (most specific) entry: keep the first one. */
static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *p) {
    (void)n;
    walk_arg *a = p;
    if (a->buf && !a->buf[0] && e->desc) snprintf(a->buf, a->n, "%s (in %s)", e->desc, e->func_name);
    if (e->desc && (strstr(e->desc, "Fletcher32") || strstr(e->desc, "checksum"))) a->checksum = 1;
    return 0;
}

const char *ckpt_h5_error(char *buf, size_t n) {
    if (n) buf[0] = '\0';
    walk_arg a = {buf, n, 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &a);
    return buf;
}

int ckpt_h5_error_is_checksum(void) {
    walk_arg a = {NULL, 0, 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &a);
    return a.checksum;
}

int ckpt_h5_path_exists(int64_t loc, const char *path) {
    char buf[512];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++)
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (H5Lexists((hid_t)loc, buf, H5P_DEFAULT) <= 0) return 0;
            buf[i] = c;
        }
    return 1;
}
