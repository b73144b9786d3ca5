#include "util/fs.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

dt_status fs_make_dirs(const char *dir, mode_t mode, const char *what) {
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf) {
        dt_error("%s '%s': the path is empty or too long", what, dir);
        return DT_ERR_INPUT;
    }
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST) {
            int err = errno;
            dt_error("%s: cannot create the %s: %s", buf, what, strerror(err));
            return err == ENOTDIR ? DT_ERR_INPUT : DT_ERR_RUNTIME; /* a file in the way */
        }
        buf[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        dt_error("%s: the %s path exists and is not a directory", dir, what);
        return DT_ERR_INPUT;
    }
    return DT_OK;
}
