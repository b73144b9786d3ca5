#define _XOPEN_SOURCE 700 /* nftw */
#include "ckpt/ckpt_fs.h"
#include "util/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/alloc.h"

void ckpt_step_path(char *buf, size_t n, const char *dir, int64_t step, int tmp) {
    snprintf(buf, n, "%s/step_%08lld%s", dir, (long long)step, tmp ? ".tmp" : "");
}

int ckpt_parse_step_name(const char *name, int64_t *step) {
    if (strncmp(name, "step_", 5) != 0) return 0;
    const char *p = name + 5;
    size_t digits = strspn(p, "0123456789");
    if (digits < 8 || p[digits] != '\0' || digits > 18) return 0;
    *step = strtoll(p, NULL, 10);
    return 1;
}

dt_status ckpt_mkdirs(const char *path) {
    return fs_make_dirs(path, 0755, "checkpoint directory");
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

dt_status ckpt_rmtree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0 && errno == ENOENT) return DT_OK;
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        dt_error("cannot remove '%s': %s", path, strerror(errno));
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

dt_status ckpt_fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        dt_error("cannot open '%s' to fsync it: %s", path, strerror(errno));
        return DT_ERR_RUNTIME;
    }
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    /* some file systems refuse fsync on directories (EINVAL): nothing more can be done there */
    if (rc != 0 && err != EINVAL) {
        dt_error("fsync of '%s' failed: %s", path, strerror(err));
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

dt_status ckpt_write_latest(const char *dir, const char *name) {
    char tmp[4200], dst[4200];
    snprintf(tmp, sizeof tmp, "%s/latest.tmp", dir);
    snprintf(dst, sizeof dst, "%s/latest", dir);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        dt_error("cannot write '%s': %s", tmp, strerror(errno));
        return DT_ERR_RUNTIME;
    }
    int bad = fprintf(f, "%s\n", name) < 0;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, dst) != 0) {
        dt_error("cannot update '%s': %s", dst, strerror(errno));
        return DT_ERR_RUNTIME;
    }
    return ckpt_fsync_path(dir);
}

dt_status ckpt_read_latest(const char *dir, char *buf, size_t n, int quiet_missing) {
    char path[4200];
    snprintf(path, sizeof path, "%s/latest", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!quiet_missing || errno != ENOENT)
            dt_error("cannot read '%s': %s", path, strerror(errno));
        return DT_ERR_INPUT;
    }
    char line[256] = "";
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    int64_t step;
    if (!ok || !ckpt_parse_step_name(line, &step)) {
        dt_error("%s: expected the name of a committed checkpoint (step_NNNNNNNN), got '%s'", path,
                 line);
        return DT_ERR_INPUT;
    }
    snprintf(buf, n, "%s", line);
    return DT_OK;
}

static int has_tmp_suffix(const char *name) {
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".tmp") == 0;
}

dt_status ckpt_clean_tmp(const char *dir, int *removed) {
    *removed = 0;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? DT_OK : DT_ERR_RUNTIME;
    dt_status st = DT_OK;
    struct dirent *e;
    char path[4200];
    while ((e = readdir(d)) != NULL) {
        if (!has_tmp_suffix(e->d_name)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (ckpt_rmtree(path) != DT_OK) st = DT_ERR_RUNTIME;
        else (*removed)++;
    }
    closedir(d);
    return st;
}

int ckpt_rotation_plan(const int64_t *steps, int n, int keep_last, int *remove) {
    int count = 0;
    for (int i = 0; i < n; i++) {
        /* rank of step i among the committed ones, newest first */
        int newer = 0;
        for (int j = 0; j < n; j++) newer += steps[j] > steps[i];
        remove[i] = keep_last > 0 && newer >= keep_last;
        count += remove[i];
    }
    return count;
}

dt_status ckpt_rotate(const char *dir, int keep_last, int64_t keep) {
    if (keep_last <= 0) return DT_OK;
    DIR *d = opendir(dir);
    if (!d) {
        dt_error("cannot list the checkpoint directory '%s': %s", dir, strerror(errno));
        return DT_ERR_RUNTIME;
    }
    int n = 0, cap = 0;
    int64_t *steps = NULL;
    struct dirent *e;
    dt_status st = DT_OK;
    while ((e = readdir(d)) != NULL) {
        int64_t s;
        if (!ckpt_parse_step_name(e->d_name, &s)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *grown = dt_realloc(steps, (size_t)cap * sizeof *steps);
            if (!grown) {
                st = DT_ERR_RUNTIME;
                break;
            }
            steps = grown;
        }
        steps[n++] = s;
    }
    closedir(d);
    int *remove = st == DT_OK ? dt_calloc((size_t)(n ? n : 1), sizeof *remove) : NULL;
    if (remove) {
        ckpt_rotation_plan(steps, n, keep_last, remove);
        char path[4200];
        for (int i = 0; i < n; i++)
            if (remove[i] && steps[i] != keep) {
                ckpt_step_path(path, sizeof path, dir, steps[i], 0);
                if (ckpt_rmtree(path) != DT_OK) st = DT_ERR_RUNTIME;
            }
    } else {
        st = DT_ERR_RUNTIME;
    }
    dt_free(remove);
    dt_free(steps);
    return st;
}
