/* The resolved config as YAML. Every key is written, in table order, in a form the loader reads
 * back to the same struct: strings double-quoted (so "123", "true" or "a: b" stay strings),
 * doubles in their shortest round-trip form, lambda_init as schedule or a number, dp as auto or a
 * number. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/config_impl.h"

void cfg_format_double(char *buf, size_t n, double v) {
    /* Integral values print as integers ("10000", not "1e+04"); 1e15 keeps %.0f exact. */
    if (v == (double)(long long)v && v > -1e15 && v < 1e15) {
        snprintf(buf, n, "%.0f", v);
        if (strtod(buf, NULL) == v && !(v == 0 && 1 / v < 0)) return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static void print_quoted(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 32 || *p == 127)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static const void *field(const dt_config *cfg, size_t off) { return (const char *)cfg + off; }

static void print_value(FILE *out, const dt_config *cfg, const cfg_key *k) {
    char num[64], num2[64];
    const void *f = field(cfg, k->off);
    switch (k->kind) {
    case CFG_INT: fprintf(out, "%d", *(const int *)f); break;
    case CFG_U64: fprintf(out, "%" PRIu64, *(const uint64_t *)f); break;
    case CFG_NUM:
        cfg_format_double(num, sizeof num, *(const double *)f);
        fputs(num, out);
        break;
    case CFG_BOOL: {
        int x = *(const int *)f, n = 0;
        while (k->names && k->names[n]) n++;
        fputs(x == 0 ? "false" : x == 1 ? "true" : x - 2 < n ? k->names[x - 2] : "invalid", out);
        break;
    }
    case CFG_ENUM: {
        int x = *(const int *)f, n = 0;
        while (k->names[n]) n++;
        fputs(x >= 0 && x < n ? k->names[x] : "invalid", out);
        break;
    }
    case CFG_STR: print_quoted(out, f); break;
    case CFG_PATHS: {
        int n = *(const int *)f;
        const char(*paths)[DT_PATH_MAX] = field(cfg, k->off2);
        fputc('[', out);
        for (int i = 0; i < n && i < DT_MAX_PATHS; i++) {
            if (i) fputs(", ", out);
            print_quoted(out, paths[i]);
        }
        fputc(']', out);
        break;
    }
    case CFG_BETAS:
        cfg_format_double(num, sizeof num, *(const double *)f);
        cfg_format_double(num2, sizeof num2, *(const double *)field(cfg, k->off2));
        fprintf(out, "[%s, %s]", num, num2);
        break;
    case CFG_LAMBDA:
        if (*(const int *)f) {
            fputs(k->names[0], out);
        } else {
            cfg_format_double(num, sizeof num, *(const double *)field(cfg, k->off2));
            fputs(num, out);
        }
        break;
    case CFG_DP:
        if (*(const int *)f == 0)
            fputs("auto", out);
        else
            fprintf(out, "%d", *(const int *)f);
        break;
    }
}

/* Splits the section part of a key path ("launch.slurm" of "launch.slurm.time") into its
 * components; returns how many (at most 4). */
static int section_parts(const char *path, char parts[4][32]) {
    const char *dot = strrchr(path, '.');
    size_t len = dot ? (size_t)(dot - path) : 0;
    int n = 0;
    for (size_t start = 0; start < len && n < 4;) {
        size_t end = start;
        while (end < len && path[end] != '.') end++;
        snprintf(parts[n++], 32, "%.*s", (int)(end - start), path + start);
        start = end + 1;
    }
    return n;
}

void config_print(const dt_config *cfg, FILE *out) {
    fputs("# difftrain resolved config", out);
    if (cfg->source[0]) {
        fputs(" (from ", out);
        for (const unsigned char *p = (const unsigned char *)cfg->source; *p; p++)
            fputc(*p < 32 || *p == 127 ? '?' : *p, out);
        fputc(')', out);
    }
    fputc('\n', out);
    char prev[4][32], cur[4][32];
    int n_prev = 0;
    for (int i = 0; i < cfg_n_keys; i++) {
        const cfg_key *k = &cfg_keys[i];
        int n = section_parts(k->path, cur);
        int same = 0; /* leading section levels shared with the previous key: already open */
        while (same < n && same < n_prev && strcmp(cur[same], prev[same]) == 0) same++;
        for (int d = same; d < n; d++) fprintf(out, "%*s%s:\n", 2 * d, "", cur[d]);
        fprintf(out, "%*s%s: ", 2 * n, "", strrchr(k->path, '.') + 1);
        print_value(out, cfg, k);
        fputc('\n', out);
        memcpy(prev, cur, sizeof prev);
        n_prev = n;
    }
}
