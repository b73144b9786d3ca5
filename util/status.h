/* Status codes and error reporting shared by every module.
 *
 * Library code returns a dt_status and propagates it; only the top level (launch/) decides to
 * exit. The numeric values are the program's exit codes (DESIGN: 0 ok, 1 runtime failure,
 * 2 bad usage/config/input). */
#ifndef DT_STATUS_H
#define DT_STATUS_H

#include <stdio.h>

typedef enum dt_status {
    DT_OK = 0,
    DT_ERR_RUNTIME = 1, /* I/O failure, out of memory, library error */
    DT_ERR_INPUT = 2,   /* bad usage, config, data file or checkpoint */
} dt_status;

/* Prints "difftrain: error: <message>\n" to stderr, prefixed by "[rank R@host] " once
 * dt_log_set_rank() has been called with a world size above one. */
void dt_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same prefix rules, "difftrain: warning: ...". */
void dt_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Rank identity used in message prefixes; host may be NULL. */
void dt_log_set_rank(int rank, int world, const char *host);

/* While on, dt_error and dt_warn print nothing: the ranks other than 0 turn it on around work
 * whose errors are the same on every rank (loading the config), so a job prints one message. */
void dt_log_set_quiet(int quiet);

/* Returns early with the status of an expression when it is not DT_OK. */
#define DT_TRY(expr)                                                                               \
    do {                                                                                           \
        dt_status dt_try_st_ = (expr);                                                             \
        if (dt_try_st_ != DT_OK) return dt_try_st_;                                                \
    } while (0)

/* Jumps to a cleanup label with st set, for functions that own resources. */
#define DT_TRY_GOTO(st, expr, label)                                                               \
    do {                                                                                           \
        (st) = (expr);                                                                             \
        if ((st) != DT_OK) goto label;                                                             \
    } while (0)

#endif
