#include "launch/watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WATCHDOG_DEFAULT_S 1800L
#define WATCHDOG_MAX_S 10000000L

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER; /* watchdog_stop's */

static struct {
    pthread_t thread;
    int running, stopping;
    long limit_s;
    const char *unit; /* what the phases' numbers count */
    const char *what; /* the current phase */
    int n;
    struct timespec since;
} g_dog;

static double seconds_between(const struct timespec *a, const struct timespec *b) {
    return (double)(b->tv_sec - a->tv_sec) + 1e-9 * (double)(b->tv_nsec - a->tv_nsec);
}

/* Wakes every second (the condition variable's clock is the realtime one; the phase's, the
 * monotonic one, which a clock change cannot move). */
static void *watchdog_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&g_lock);
    while (!g_dog.stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&g_wake, &g_lock, &until);
        if (g_dog.stopping) break;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        const double held = seconds_between(&g_dog.since, &now);
        if (held <= (double)g_dog.limit_s) continue;
        char num[48] = "";
        if (g_dog.n > 0) snprintf(num, sizeof num, " (%s %d)", g_dog.unit, g_dog.n);
        dt_error("watchdog: no progress for %.0f s: the %s has not finished%s (limit "
                 "DIFFTRAIN_WATCHDOG_S=%ld). A peer rank, a GPU kernel or the file system is "
                 "stuck; ending this rank so that the job ends", held, g_dog.what, num,
                 g_dog.limit_s);
        _exit(DT_ERR_RUNTIME); /* not exit(): the main thread holds the run's state */
    }
    pthread_mutex_unlock(&g_lock);
    return NULL;
}

dt_status watchdog_start(const char *unit) {
    long limit = WATCHDOG_DEFAULT_S;
    const char *e = getenv("DIFFTRAIN_WATCHDOG_S");
    if (e && *e) {
        char *end = NULL;
        errno = 0;
        limit = strtol(e, &end, 10);
        if (errno || *end || limit < 0 || limit > WATCHDOG_MAX_S) {
            dt_error("DIFFTRAIN_WATCHDOG_S is '%s': expected whole seconds from 0 (off) to %ld",
                     e, WATCHDOG_MAX_S);
            return DT_ERR_INPUT;
        }
    }
    pthread_mutex_lock(&g_lock);
    g_dog.unit = unit;
    pthread_mutex_unlock(&g_lock);
    watchdog_phase("start-up", 0);
    if (limit == 0 || g_dog.running) return DT_OK;
    g_dog.limit_s = limit;
    g_dog.stopping = 0;
    int rc = pthread_create(&g_dog.thread, NULL, watchdog_main, NULL);
    if (rc) {
        dt_error("watchdog: cannot start its thread: %s", strerror(rc));
        return DT_ERR_RUNTIME;
    }
    g_dog.running = 1;
    return DT_OK;
}

void watchdog_phase(const char *what, int n) {
    pthread_mutex_lock(&g_lock);
    g_dog.what = what;
    g_dog.n = n;
    clock_gettime(CLOCK_MONOTONIC, &g_dog.since);
    pthread_mutex_unlock(&g_lock);
}

void watchdog_stop(void) {
    if (!g_dog.running) return;
    pthread_mutex_lock(&g_lock);
    g_dog.stopping = 1;
    pthread_cond_signal(&g_wake);
    pthread_mutex_unlock(&g_lock);
    pthread_join(g_dog.thread, NULL);
    g_dog.running = 0;
}
