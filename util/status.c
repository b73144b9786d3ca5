#include "util/status.h"

#include <stdarg.h>
#include <string.h>

static int log_rank = 0;
static int log_world = 1;
static char log_host[64] = "";
static int log_quiet = 0;

void dt_log_set_quiet(int quiet) { log_quiet = quiet; }

void dt_log_set_rank(int rank, int world, const char *host) {
    log_rank = rank;
    log_world = world;
    if (host) {
        strncpy(log_host, host, sizeof log_host - 1);
        log_host[sizeof log_host - 1] = '\0';
    }
}

static void vreport(const char *kind, const char *fmt, va_list ap) {
    if (log_quiet) return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (log_world > 1)
        fprintf(stderr, "[rank %d@%s] difftrain: %s: %s\n", log_rank, log_host, kind, msg);
    else
        fprintf(stderr, "difftrain: %s: %s\n", kind, msg);
    fflush(stderr);
}

void dt_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport("error", fmt, ap);
    va_end(ap);
}

void dt_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport("warning", fmt, ap);
    va_end(ap);
}
