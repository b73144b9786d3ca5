/* Training output: one human-readable line per log step on stdout and, with log.metrics, the same
 * numbers as JSON Lines (DESIGN "Output"). Written by rank 0 only. */
#ifndef DT_METRICS_H
#define DT_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "util/status.h"

typedef struct dt_step_metrics {
    int step;  /* 1-based, the step just completed */
    int steps; /* total steps of the run */
    double loss;
    double lr;
    double grad_norm;
    double tokens_per_s;
    double mfu;       /* model FLOPs utilisation in [0, 1]; < 0 when the device's peak is unknown */
    double elapsed_s;
    int has_val;
    double val_loss;
    int has_comm; /* several ranks: the bytes the step moved per group, and their analytic value */
    uint64_t bytes_tp, bytes_dp, bytes_tp_analytic, bytes_dp_analytic;
} dt_step_metrics;

typedef struct dt_metrics_log {
    FILE *jsonl; /* NULL when log.metrics is empty */
    char path[1024];
} dt_metrics_log;

/* Opens (appends to) the JSON Lines file when path is non-empty. */
dt_status metrics_open(dt_metrics_log *log, const char *path);
void metrics_close(dt_metrics_log *log);
/* Prints the log line and appends a JSON object (flushed, so a killed run keeps its lines). */
void metrics_write(dt_metrics_log *log, const dt_step_metrics *s);

#endif
