#include "launch/metrics.h"

#include <errno.h>
#include <math.h>
#include <string.h>

dt_status metrics_open(dt_metrics_log *log, const char *path) {
    memset(log, 0, sizeof *log);
    if (!path || !*path) return DT_OK;
    snprintf(log->path, sizeof log->path, "%s", path);
    log->jsonl = fopen(path, "a");
    if (!log->jsonl) {
        dt_error("log.metrics: cannot open '%s' for appending: %s", path, strerror(errno));
        return DT_ERR_INPUT;
    }
    return DT_OK;
}

void metrics_close(dt_metrics_log *log) {
    if (log->jsonl) fclose(log->jsonl);
    log->jsonl = NULL;
}

/* JSON has no NaN or Infinity: write null so that every line stays parseable. */
static void json_number(FILE *f, const char *key, double x) {
    if (isfinite(x))
        fprintf(f, ",\"%s\":%.9g", key, x);
    else
        fprintf(f, ",\"%s\":null", key);
}

void metrics_write(dt_metrics_log *log, const dt_step_metrics *s) {
    int width = snprintf(NULL, 0, "%d", s->steps); /* steps line up in a column */
    printf("step %*d/%d | loss %.4f | lr %.3e | grad norm %.4f | %.0f tok/s | %.1f s", width,
           s->step, s->steps, s->loss, s->lr, s->grad_norm, s->tokens_per_s, s->elapsed_s);
    if (s->mfu >= 0) printf(" | MFU %.1f%%", 100.0 * s->mfu);
    if (s->has_val) printf(" | val loss %.4f", s->val_loss);
    if (s->has_comm)
        printf(" | comm tp %.3f MB dp %.3f MB (analytic %.3f / %.3f)", s->bytes_tp / 1e6,
               s->bytes_dp / 1e6, s->bytes_tp_analytic / 1e6, s->bytes_dp_analytic / 1e6);
    printf("\n");
    fflush(stdout);
    if (!log->jsonl) return;
    fprintf(log->jsonl, "{\"step\":%d", s->step);
    json_number(log->jsonl, "loss", s->loss);
    json_number(log->jsonl, "lr", s->lr);
    json_number(log->jsonl, "grad_norm", s->grad_norm);
    json_number(log->jsonl, "tokens_per_s", s->tokens_per_s);
    json_number(log->jsonl, "elapsed_s", s->elapsed_s);
    if (s->mfu >= 0) json_number(log->jsonl, "mfu", s->mfu);
    if (s->has_val) json_number(log->jsonl, "val_loss", s->val_loss);
    if (s->has_comm)
        fprintf(log->jsonl,
                ",\"bytes_tp\":%llu,\"bytes_dp\":%llu,\"bytes_tp_analytic\":%llu,"
                "\"bytes_dp_analytic\":%llu",
                (unsigned long long)s->bytes_tp, (unsigned long long)s->bytes_dp,
                (unsigned long long)s->bytes_tp_analytic, (unsigned long long)s->bytes_dp_analytic);
    fprintf(log->jsonl, "}\n");
    fflush(log->jsonl);
}
