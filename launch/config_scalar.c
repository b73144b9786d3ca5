/* Typing of a value read from the YAML (config_yaml.c) or from an override (config_override.c)
 * into the dt_config field(s) of its key, and the messages for a value of the wrong type.
 *
 * Typing rules, shared by file values and overrides (which are parsed as one YAML value):
 *   - a quoted scalar is a string, never a number or bool ("3e-4" with quotes is not a number);
 *   - numbers: [+-]digits[.digits][(e|E)[+-]digits] or [+-].digits[...]; .inf/.nan/hex rejected;
 *   - integer keys take any number whose value is an exact integer in range (42, 1e5, 4.0),
 *     and reject 2.5; train.seed (uint64) takes plain digits up to 2^64-1;
 *   - bools are true/false/True/False/TRUE/FALSE only (no yes/no/on/off);
 *   - string keys take any scalar's text (null = ""); enums must match a name exactly;
 *   - path keys take a path or a list of non-empty paths (null = none); optim.betas takes a
 *     list of two numbers. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/config_impl.h"

/* "'abc'", "the string 'abc'" (quoted), "nothing (null)": a short, printable echo of a value. */
void cfg_describe_scalar(const cfg_scalar *s, char *buf, size_t n) {
    if (s->is_null) {
        snprintf(buf, n, "nothing (null)");
        return;
    }
    char echo[64];
    size_t k = 0;
    for (size_t i = 0; i < s->len && k < 48; i++) {
        unsigned char c = (unsigned char)s->text[i];
        echo[k++] = (c < 32 || c == 127) ? '?' : (char)c;
    }
    echo[k] = '\0';
    snprintf(buf, n, "%s'%s%s'", s->plain ? "" : "the string ", echo, s->len > 48 ? "..." : "");
}

static int is_number_syntax(const char *s) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    int digits = 0;
    while (*p >= '0' && *p <= '9') p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, digits++;
    }
    if (!digits) return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!(*p >= '0' && *p <= '9')) return 0;
        while (*p >= '0' && *p <= '9') p++;
    }
    return *p == '\0';
}

static int is_integer_syntax(const char *s) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!*p) return 0;
    for (; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

/* 1 and *out on success. Quoted scalars are strings, so they never parse as numbers. */
static int scalar_to_double(const cfg_scalar *s, double *out) {
    if (!s->plain || s->is_null || strlen(s->text) != s->len || !is_number_syntax(s->text))
        return 0;
    errno = 0;
    double v = strtod(s->text, NULL);
    if (!isfinite(v)) return 0; /* 1e999 */
    *out = v;
    return 1;
}

static int scalar_to_int(const cfg_scalar *s, long long lo, long long hi, long long *out) {
    if (!s->plain || s->is_null || strlen(s->text) != s->len) return 0;
    if (is_integer_syntax(s->text)) {
        errno = 0;
        long long v = strtoll(s->text, NULL, 10);
        if (errno == ERANGE || v < lo || v > hi) return 0;
        *out = v;
        return 1;
    }
    double d;
    /* 2^53: beyond it a double no longer tells one integer from the next. */
    if (!scalar_to_double(s, &d) || d != floor(d) || fabs(d) > 9007199254740992.0) return 0;
    if (d < (double)lo || d > (double)hi) return 0;
    *out = (long long)d;
    return 1;
}

static int scalar_to_u64(const cfg_scalar *s, uint64_t *out) {
    if (s->plain && !s->is_null && strlen(s->text) == s->len && s->text[0] != '-' &&
        is_integer_syntax(s->text)) {
        errno = 0;
        unsigned long long v = strtoull(s->text, NULL, 10);
        if (errno == ERANGE) return 0;
        *out = (uint64_t)v;
        return 1;
    }
    long long v;
    if (!scalar_to_int(s, 0, LLONG_MAX, &v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

static void *field(dt_config *cfg, size_t off) { return (char *)cfg + off; }

static dt_status type_error(const cfg_loader *ld, const char *key, const cfg_scalar *s,
                            const char *expect) {
    char got[128];
    cfg_describe_scalar(s, got, sizeof got);
    return cfg_fail_at(ld, &s->mark, key, "expected %s, got %s", expect, got);
}

static dt_status need_scalar(const cfg_loader *ld, const cfg_key *k, const cfg_value *v) {
    if (!v->is_list) return DT_OK;
    char expect[128];
    cfg_key_expect(k, expect, sizeof expect);
    return cfg_fail_at(ld, &v->mark, k->path, "expected %s, got a list", expect);
}

static dt_status set_string(const cfg_loader *ld, const char *key, const cfg_scalar *s, char *dst,
                            size_t size, int allow_empty) {
    const char *text = s->is_null ? "" : s->text;
    size_t len = s->is_null ? 0 : s->len;
    if (strlen(text) != len)
        return cfg_fail_at(ld, &s->mark, key, "expected a string, got one with a NUL byte");
    if (len >= size)
        return cfg_fail_at(ld, &s->mark, key, "expected at most %zu bytes, got %zu", size - 1, len);
    if (!allow_empty && len == 0)
        return cfg_fail_at(ld, &s->mark, key, "expected a non-empty path, got an empty one");
    strncpy(dst, text, size - 1); /* zero-fills: equal configs are byte-equal structs */
    dst[size - 1] = '\0';
    return DT_OK;
}

static dt_status set_paths(const cfg_loader *ld, const cfg_key *k, const cfg_value *v) {
    int *count = field(ld->cfg, k->off);
    char(*paths)[DT_PATH_MAX] = field(ld->cfg, k->off2);
    int n = v->is_list ? v->n_items : (v->scalar.is_null ? 0 : 1);
    if (n > DT_MAX_PATHS)
        return cfg_fail_at(ld, &v->mark, k->path, "expected at most %d paths, got %d", DT_MAX_PATHS,
                           n);
    memset(paths, 0, sizeof(char[DT_MAX_PATHS][DT_PATH_MAX]));
    for (int i = 0; i < n; i++) {
        const cfg_scalar *s = v->is_list ? &v->items[i] : &v->scalar;
        char key[CFG_KEY_PATH_MAX + 16];
        if (v->is_list)
            snprintf(key, sizeof key, "%s[%d]", k->path, i);
        else
            snprintf(key, sizeof key, "%s", k->path);
        if (s->is_null)
            return cfg_fail_at(ld, &s->mark, key, "expected a path, got nothing (null)");
        DT_TRY(set_string(ld, key, s, paths[i], DT_PATH_MAX, 0));
    }
    *count = n;
    return DT_OK;
}

static dt_status set_betas(const cfg_loader *ld, const cfg_key *k, const cfg_value *v) {
    char expect[128];
    cfg_key_expect(k, expect, sizeof expect);
    if (!v->is_list) return type_error(ld, k->path, &v->scalar, expect);
    if (v->n_items != 2)
        return cfg_fail_at(ld, &v->mark, k->path, "expected %s, got a list of %d", expect,
                           v->n_items);
    double b[2];
    for (int i = 0; i < 2; i++) {
        char key[CFG_KEY_PATH_MAX + 16];
        snprintf(key, sizeof key, "%s[%d]", k->path, i);
        if (!scalar_to_double(&v->items[i], &b[i]))
            return type_error(ld, key, &v->items[i], "a number");
    }
    *(double *)field(ld->cfg, k->off) = b[0];
    *(double *)field(ld->cfg, k->off2) = b[1];
    return DT_OK;
}

/* Stores a value read for key k into the config, checking only its type (ranges and the
 * relations between keys are the validator's job, which runs once everything is applied). */
dt_status cfg_value_apply(const cfg_loader *ld, const cfg_key *k, const cfg_value *v) {
    char expect[128];
    cfg_key_expect(k, expect, sizeof expect);
    if (k->kind == CFG_PATHS) return set_paths(ld, k, v);
    if (k->kind == CFG_BETAS) return set_betas(ld, k, v);
    DT_TRY(need_scalar(ld, k, v));
    const cfg_scalar *s = &v->scalar;
    void *dst = field(ld->cfg, k->off);
    switch (k->kind) {
    case CFG_INT: {
        long long x;
        if (!scalar_to_int(s, INT_MIN, INT_MAX, &x)) {
            double d;
            if (scalar_to_double(s, &d) && d == floor(d))
                return type_error(ld, k->path, s, "an integer that fits in 32 bits");
            return type_error(ld, k->path, s, expect);
        }
        *(int *)dst = (int)x;
        return DT_OK;
    }
    case CFG_U64:
        if (!scalar_to_u64(s, dst)) return type_error(ld, k->path, s, expect);
        return DT_OK;
    case CFG_NUM:
        if (!scalar_to_double(s, dst)) return type_error(ld, k->path, s, expect);
        return DT_OK;
    case CFG_BOOL: {
        static const char *const t[] = {"true", "True", "TRUE"}, *const f[] = {"false", "False",
                                                                             "FALSE"};
        for (int i = 0; s->plain && i < 3; i++) {
            if (!strcmp(s->text, t[i])) return *(int *)dst = 1, DT_OK;
            if (!strcmp(s->text, f[i])) return *(int *)dst = 0, DT_OK;
        }
        /* extra words (model.subln: scalar) take the values 2, 3, ... */
        for (int i = 0; s->plain && !s->is_null && k->names && k->names[i]; i++)
            if (!strcmp(s->text, k->names[i])) return *(int *)dst = 2 + i, DT_OK;
        return type_error(ld, k->path, s, expect);
    }
    case CFG_ENUM:
        for (int i = 0; !s->is_null && k->names[i]; i++)
            if (!strcmp(s->text, k->names[i])) return *(int *)dst = i, DT_OK;
        return type_error(ld, k->path, s, expect);
    case CFG_STR: return set_string(ld, k->path, s, dst, k->size, 1);
    case CFG_LAMBDA: {
        double x;
        if (!s->is_null && !strcmp(s->text, k->names[0])) {
            *(int *)dst = 1;
            *(double *)field(ld->cfg, k->off2) = 0.0; /* canonical, see config_defaults */
            return DT_OK;
        }
        if (!scalar_to_double(s, &x)) return type_error(ld, k->path, s, expect);
        *(int *)dst = 0;
        *(double *)field(ld->cfg, k->off2) = x;
        return DT_OK;
    }
    case CFG_DP: {
        long long x;
        if (!s->is_null && !strcmp(s->text, "auto")) return *(int *)dst = 0, DT_OK;
        /* 0 would be read as auto, so an explicit 0 is refused rather than reinterpreted. */
        if (!scalar_to_int(s, 1, INT_MAX, &x)) return type_error(ld, k->path, s, expect);
        *(int *)dst = (int)x;
        return DT_OK;
    }
    default: break;
    }
    return cfg_fail_at(ld, &v->mark, k->path, "internal error: unhandled key kind");
}
