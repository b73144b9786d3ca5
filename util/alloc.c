#include "util/alloc.h"

#include <stdlib.h>
#include <string.h>

static long fail_countdown = 0;

static int injected_failure(void) {
    if (fail_countdown <= 0) return 0;
    if (fail_countdown == 1) return 1; /* stays at 1: every later allocation fails too */
    fail_countdown--;
    return 0;
}

void dt_alloc_fail_after(long n) { fail_countdown = n; }

void *dt_malloc(size_t bytes) {
    if (injected_failure()) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) return NULL;
    return p;
}

void *dt_calloc(size_t count, size_t size) {
    if (size && count > (size_t)-1 / size) return NULL;
    void *p = dt_malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void *dt_realloc(void *p, size_t bytes) {
    if (injected_failure()) return NULL;
    return realloc(p, bytes ? bytes : 1);
}

void dt_free(void *p) { free(p); }

char *dt_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = dt_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
