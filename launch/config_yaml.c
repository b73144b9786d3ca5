/* The YAML loader: a walk over libyaml's event stream (not the document API) so that a syntax
 * error can name the key being read when it struck, and so that duplicate keys are caught
 * (libyaml's document loader silently keeps both).
 *
 * Typing rules, shared by file values and overrides (which are parsed as one YAML value):
 *   - a quoted scalar is a string, never a number or bool ("3e-4" with quotes is not a number);
 *   - null is a plain "", "~", "null", "Null" or "NULL";
 *   - numbers: [+-]digits[.digits][(e|E)[+-]digits] or [+-].digits[...]; .inf/.nan/hex rejected;
 *   - integer keys take any number whose value is an exact integer in range (42, 1e5, 4.0),
 *     and reject 2.5; train.seed (uint64) takes plain digits up to 2^64-1;
 *   - bools are true/false/True/False/TRUE/FALSE only (no yes/no/on/off);
 *   - string keys take any scalar's text (null = ""); enums must match a name exactly;
 *   - a section written with no value ("model:") is an empty section;
 *   - anchors are allowed, aliases are rejected (a config should say each value once). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "launch/config_impl.h"
#include "util/alloc.h"

/* The longest list kept (data paths); longer lists are counted, not stored. */
#define VALUE_MAX_ITEMS (DT_MAX_PATHS + 1)
#define KEY_PATH_MAX 256

typedef struct cfg_scalar {
    const char *text;
    size_t len;
    int plain;
    int is_null;
    yaml_mark_t mark;
} cfg_scalar;

typedef struct cfg_value {
    int is_list;
    cfg_scalar scalar; /* !is_list */
    int n_items;       /* is_list: items seen; the first VALUE_MAX_ITEMS are kept */
    cfg_scalar items[VALUE_MAX_ITEMS];
    yaml_mark_t mark;
    yaml_event_t events[VALUE_MAX_ITEMS]; /* owners of the texts above */
    int n_events;
} cfg_value;

typedef struct cfg_loader {
    dt_config *cfg;
    const char *name; /* file name in messages */
    char *const *overrides;
    int cur_override; /* >= 0 while an override is applied: messages name it */
    yaml_parser_t parser;
    const char *text; /* the document, to turn reader-error byte offsets into lines */
    size_t text_len;
    char path[KEY_PATH_MAX]; /* key being read, for syntax errors */
    cfg_origin origins[CFG_MAX_KEYS];
} cfg_loader;

/* ---- messages ---- */

static void where_mark(const cfg_loader *ld, const yaml_mark_t *mark, char *buf, size_t n) {
    if (ld->cur_override >= 0)
        snprintf(buf, n, "override '%s'", ld->overrides[ld->cur_override]);
    else
        snprintf(buf, n, "%s:%zu:%zu", ld->name, mark->line + 1, mark->column + 1);
}

__attribute__((format(printf, 4, 5))) static dt_status
fail_at(const cfg_loader *ld, const yaml_mark_t *mark, const char *key, const char *fmt, ...) {
    char where[DT_PATH_MAX + 64], msg[1024];
    where_mark(ld, mark, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cfg_fail(where, key, "%s", msg);
}

/* "'abc'", "the string 'abc'" (quoted), "nothing (null)": a short, printable echo of a value. */
static void describe_scalar(const cfg_scalar *s, char *buf, size_t n) {
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

static const char *describe_event(const yaml_event_t *ev) {
    switch (ev->type) {
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_ALIAS_EVENT: return "an alias (aliases are not supported)";
    default: return "a scalar";
    }
}

static size_t line_of_offset(const cfg_loader *ld, size_t offset, size_t *col) {
    size_t line = 1, start = 0;
    for (size_t i = 0; i < offset && i < ld->text_len; i++)
        if (ld->text[i] == '\n') line++, start = i + 1;
    *col = offset - start + 1;
    return line;
}

static dt_status syntax_error(const cfg_loader *ld) {
    const yaml_parser_t *p = &ld->parser;
    const char *key = ld->path[0] ? ld->path : "(top level)";
    const char *problem = p->problem ? p->problem : "unknown error";
    char where[DT_PATH_MAX + 64];
    if (p->error == YAML_READER_ERROR) {
        size_t col, line = line_of_offset(ld, p->problem_offset, &col);
        if (ld->cur_override >= 0)
            snprintf(where, sizeof where, "override '%s'", ld->overrides[ld->cur_override]);
        else
            snprintf(where, sizeof where, "%s:%zu:%zu", ld->name, line, col);
        return cfg_fail(where, key, "expected UTF-8 text, got %s (byte %zu)", problem,
                        p->problem_offset);
    }
    if (p->error == YAML_MEMORY_ERROR) {
        cfg_fail(ld->name, NULL, "out of memory while parsing YAML");
        return DT_ERR_RUNTIME;
    }
    where_mark(ld, &p->problem_mark, where, sizeof where);
    if (p->context)
        return cfg_fail(where, key, "expected valid YAML, got a syntax error: %s (%s at line %zu)",
                        problem, p->context, p->context_mark.line + 1);
    return cfg_fail(where, key, "expected valid YAML, got a syntax error: %s", problem);
}

static dt_status next_event(cfg_loader *ld, yaml_event_t *ev) {
    if (!yaml_parser_parse(&ld->parser, ev)) return syntax_error(ld);
    return DT_OK;
}

/* ---- values ---- */

static void scalar_from_event(cfg_scalar *s, const yaml_event_t *ev) {
    s->text = (const char *)ev->data.scalar.value;
    s->len = ev->data.scalar.length;
    s->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    s->mark = ev->start_mark;
    s->is_null = s->plain && (s->len == 0 || !strcmp(s->text, "~") || !strcmp(s->text, "null") ||
                              !strcmp(s->text, "Null") || !strcmp(s->text, "NULL"));
}

static void value_free(cfg_value *v) {
    for (int i = 0; i < v->n_events; i++) yaml_event_delete(&v->events[i]);
    v->n_events = 0;
}

/* Reads a whole value whose first event is *first (taken over: deleted by value_free). A key's
 * value may be a scalar or a flat list of scalars; anything deeper is a type error. */
static dt_status value_read(cfg_loader *ld, const cfg_key *k, yaml_event_t *first, cfg_value *v) {
    memset(v, 0, offsetof(cfg_value, events));
    v->n_events = 0;
    v->mark = first->start_mark;
    char expect[128];
    cfg_key_expect(k, expect, sizeof expect);
    if (first->type == YAML_SCALAR_EVENT) {
        v->events[v->n_events++] = *first;
        scalar_from_event(&v->scalar, first);
        return DT_OK;
    }
    if (first->type != YAML_SEQUENCE_START_EVENT) {
        dt_status st = fail_at(ld, &first->start_mark, k->path, "expected %s, got %s", expect,
                               describe_event(first));
        yaml_event_delete(first);
        return st;
    }
    yaml_event_delete(first);
    v->is_list = 1;
    for (;;) {
        yaml_event_t ev;
        DT_TRY(next_event(ld, &ev));
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return DT_OK;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            char item[KEY_PATH_MAX + 16];
            snprintf(item, sizeof item, "%s[%d]", k->path, v->n_items);
            dt_status st = fail_at(ld, &ev.start_mark, item, "expected %s, got %s inside the list",
                                   expect, describe_event(&ev));
            yaml_event_delete(&ev);
            return st;
        }
        if (v->n_items < VALUE_MAX_ITEMS) {
            v->events[v->n_events++] = ev;
            scalar_from_event(&v->items[v->n_items], &v->events[v->n_events - 1]);
        } else {
            yaml_event_delete(&ev);
        }
        v->n_items++;
    }
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
    describe_scalar(s, got, sizeof got);
    return fail_at(ld, &s->mark, key, "expected %s, got %s", expect, got);
}

static dt_status need_scalar(const cfg_loader *ld, const cfg_key *k, const cfg_value *v) {
    if (!v->is_list) return DT_OK;
    char expect[128];
    cfg_key_expect(k, expect, sizeof expect);
    return fail_at(ld, &v->mark, k->path, "expected %s, got a list", expect);
}

static dt_status set_string(const cfg_loader *ld, const char *key, const cfg_scalar *s, char *dst,
                            size_t size, int allow_empty) {
    const char *text = s->is_null ? "" : s->text;
    size_t len = s->is_null ? 0 : s->len;
    if (strlen(text) != len)
        return fail_at(ld, &s->mark, key, "expected a string, got one with a NUL byte");
    if (len >= size)
        return fail_at(ld, &s->mark, key, "expected at most %zu bytes, got %zu", size - 1, len);
    if (!allow_empty && len == 0)
        return fail_at(ld, &s->mark, key, "expected a non-empty path, got an empty one");
    strncpy(dst, text, size - 1); /* zero-fills: equal configs are byte-equal structs */
    dst[size - 1] = '\0';
    return DT_OK;
}

static dt_status set_paths(const cfg_loader *ld, const cfg_key *k, const cfg_value *v) {
    int *count = field(ld->cfg, k->off);
    char(*paths)[DT_PATH_MAX] = field(ld->cfg, k->off2);
    int n = v->is_list ? v->n_items : (v->scalar.is_null ? 0 : 1);
    if (n > DT_MAX_PATHS)
        return fail_at(ld, &v->mark, k->path, "expected at most %d paths, got %d", DT_MAX_PATHS,
                       n);
    memset(paths, 0, sizeof(char[DT_MAX_PATHS][DT_PATH_MAX]));
    for (int i = 0; i < n; i++) {
        const cfg_scalar *s = v->is_list ? &v->items[i] : &v->scalar;
        char key[KEY_PATH_MAX + 16];
        if (v->is_list)
            snprintf(key, sizeof key, "%s[%d]", k->path, i);
        else
            snprintf(key, sizeof key, "%s", k->path);
        if (s->is_null) return fail_at(ld, &s->mark, key, "expected a path, got nothing (null)");
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
        return fail_at(ld, &v->mark, k->path, "expected %s, got a list of %d", expect,
                       v->n_items);
    double b[2];
    for (int i = 0; i < 2; i++) {
        char key[KEY_PATH_MAX + 16];
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
static dt_status value_apply(const cfg_loader *ld, const cfg_key *k, const cfg_value *v) {
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
        return type_error(ld, k->path, s, expect);
    }
    case CFG_ENUM:
        for (int i = 0; !s->is_null && k->names[i]; i++)
            if (!strcmp(s->text, k->names[i])) return *(int *)dst = i, DT_OK;
        return type_error(ld, k->path, s, expect);
    case CFG_STR: return set_string(ld, k->path, s, dst, k->size, 1);
    case CFG_LAMBDA: {
        double x;
        if (!s->is_null && !strcmp(s->text, "schedule")) {
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
    return fail_at(ld, &v->mark, k->path, "internal error: unhandled key kind");
}

/* ---- the document ---- */

static void path_join(char *out, size_t n, const char *prefix, const char *key) {
    if (prefix[0])
        snprintf(out, n, "%s.%s", prefix, key);
    else
        snprintf(out, n, "%s", key);
}

/* Reads mapping entries up to the MAPPING_END event (the MAPPING_START is consumed). */
static dt_status parse_mapping(cfg_loader *ld, const char *prefix) {
    /* Keys of this mapping seen so far; known keys are at most 64 per mapping, unknown ones
     * stop the walk, so a small table suffices for the duplicate check. */
    char seen[64][48];
    int seen_line[64], n_seen = 0;
    for (;;) {
        yaml_event_t ev;
        snprintf(ld->path, sizeof ld->path, "%s", prefix);
        DT_TRY(next_event(ld, &ev));
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return DT_OK;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            dt_status st = fail_at(ld, &ev.start_mark, prefix[0] ? prefix : "(top level)",
                                   "expected a key name, got %s", describe_event(&ev));
            yaml_event_delete(&ev);
            return st;
        }
        char path[KEY_PATH_MAX];
        const char *name = (const char *)ev.data.scalar.value;
        path_join(path, sizeof path, prefix, name);
        yaml_mark_t key_mark = ev.start_mark;
        int known = cfg_key_find(path), section = cfg_is_section(path);
        if (known < 0 && !section) {
            const char *hint = cfg_suggest(path);
            dt_status st;
            if (hint)
                st = fail_at(ld, &key_mark, path,
                             "expected a known key, got an unknown one (did you mean %s?)", hint);
            else
                st = fail_at(ld, &key_mark, path, "expected a known key, got an unknown one");
            yaml_event_delete(&ev);
            return st;
        }
        for (int i = 0; i < n_seen; i++) {
            if (strcmp(seen[i], name) != 0) continue;
            dt_status st = fail_at(ld, &key_mark, path,
                                   "expected each key once, got a duplicate (first at line %d)",
                                   seen_line[i]);
            yaml_event_delete(&ev);
            return st;
        }
        if (n_seen < 64) {
            snprintf(seen[n_seen], sizeof seen[n_seen], "%s", name);
            seen_line[n_seen++] = (int)key_mark.line + 1;
        }
        yaml_event_delete(&ev);
        snprintf(ld->path, sizeof ld->path, "%s", path);

        yaml_event_t val;
        DT_TRY(next_event(ld, &val));
        if (section) {
            if (val.type == YAML_MAPPING_START_EVENT) {
                yaml_event_delete(&val);
                DT_TRY(parse_mapping(ld, path));
                continue;
            }
            cfg_scalar s = {0};
            if (val.type == YAML_SCALAR_EVENT) {
                scalar_from_event(&s, &val);
                if (s.is_null) { /* "model:" with nothing under it */
                    yaml_event_delete(&val);
                    continue;
                }
            }
            char got[128];
            if (val.type == YAML_SCALAR_EVENT)
                describe_scalar(&s, got, sizeof got);
            else
                snprintf(got, sizeof got, "%s", describe_event(&val));
            dt_status st = fail_at(ld, &val.start_mark, path,
                                   "expected a mapping of %s.* keys, got %s", path, got);
            yaml_event_delete(&val);
            return st;
        }
        const cfg_key *k = &cfg_keys[known];
        cfg_value *v = dt_malloc(sizeof *v);
        if (!v) {
            yaml_event_delete(&val);
            cfg_fail(ld->name, path, "out of memory");
            return DT_ERR_RUNTIME;
        }
        dt_status st = value_read(ld, k, &val, v);
        if (st == DT_OK) st = value_apply(ld, k, v);
        if (st == DT_OK) {
            ld->origins[known].from = CFG_FROM_FILE;
            ld->origins[known].line = (int)v->mark.line + 1;
            ld->origins[known].col = (int)v->mark.column + 1;
        }
        value_free(v);
        dt_free(v);
        DT_TRY(st);
    }
}

static dt_status parse_document(cfg_loader *ld) {
    yaml_event_t ev;
    DT_TRY(next_event(ld, &ev)); /* STREAM_START */
    yaml_event_delete(&ev);
    DT_TRY(next_event(ld, &ev));
    if (ev.type == YAML_STREAM_END_EVENT) { /* empty file or only comments: all defaults */
        yaml_event_delete(&ev);
        return DT_OK;
    }
    yaml_event_delete(&ev); /* DOCUMENT_START */
    DT_TRY(next_event(ld, &ev));
    if (ev.type == YAML_MAPPING_START_EVENT) {
        yaml_event_delete(&ev);
        DT_TRY(parse_mapping(ld, ""));
    } else {
        cfg_scalar s = {0};
        int empty = 0;
        if (ev.type == YAML_SCALAR_EVENT) scalar_from_event(&s, &ev), empty = s.is_null;
        if (!empty) {
            dt_status st = fail_at(ld, &ev.start_mark, "(top level)",
                                   "expected a mapping of sections (model, parallel, train, "
                                   "optim, data, checkpoint, log, launch), got %s",
                                   describe_event(&ev));
            yaml_event_delete(&ev);
            return st;
        }
        yaml_event_delete(&ev);
    }
    ld->path[0] = '\0';
    DT_TRY(next_event(ld, &ev)); /* DOCUMENT_END */
    yaml_event_delete(&ev);
    DT_TRY(next_event(ld, &ev));
    if (ev.type != YAML_STREAM_END_EVENT) {
        dt_status st = fail_at(ld, &ev.start_mark, "(top level)",
                               "expected one YAML document, got a second one");
        yaml_event_delete(&ev);
        return st;
    }
    yaml_event_delete(&ev);
    return DT_OK;
}

/* Applies one "key.path=value"; the value is parsed as a one-value YAML document. */
static dt_status apply_override(cfg_loader *ld, int i) {
    const char *text = ld->overrides[i];
    ld->cur_override = i;
    ld->path[0] = '\0';
    const char *eq = strchr(text, '=');
    char where[DT_PATH_MAX + 64];
    snprintf(where, sizeof where, "override '%s'", text);
    if (!eq || eq == text)
        return cfg_fail(where, NULL, "expected key.path=value, got %s",
                        eq ? "no key before '='" : "no '='");
    char path[KEY_PATH_MAX];
    if ((size_t)(eq - text) >= sizeof path)
        return cfg_fail(where, NULL, "expected a known key, got a %d-character one",
                        (int)(eq - text));
    memcpy(path, text, (size_t)(eq - text));
    path[eq - text] = '\0';
    int known = cfg_key_find(path);
    if (known < 0) {
        if (cfg_is_section(path))
            return cfg_fail(where, path, "expected a key (section.key=value), got a section");
        const char *hint = cfg_suggest(path);
        if (hint)
            return cfg_fail(where, path,
                            "expected a known key, got an unknown one (did you mean %s?)", hint);
        return cfg_fail(where, path, "expected a known key, got an unknown one");
    }
    snprintf(ld->path, sizeof ld->path, "%s", path);
    const cfg_key *k = &cfg_keys[known];

    if (!yaml_parser_initialize(&ld->parser)) {
        cfg_fail(where, path, "out of memory");
        return DT_ERR_RUNTIME;
    }
    const char *value = eq + 1;
    ld->text = value;
    ld->text_len = strlen(value);
    yaml_parser_set_input_string(&ld->parser, (const unsigned char *)value, ld->text_len);
    cfg_value *v = dt_malloc(sizeof *v);
    dt_status st = DT_OK;
    yaml_event_t ev;
    if (!v) {
        cfg_fail(where, path, "out of memory");
        st = DT_ERR_RUNTIME;
        goto done;
    }
    v->n_events = 0;
    DT_TRY_GOTO(st, next_event(ld, &ev), done); /* STREAM_START */
    yaml_event_delete(&ev);
    DT_TRY_GOTO(st, next_event(ld, &ev), done);
    if (ev.type == YAML_STREAM_END_EVENT) { /* "key=": an empty value is null */
        yaml_event_delete(&ev);
        memset(v, 0, offsetof(cfg_value, events));
        v->scalar.text = "";
        v->scalar.plain = v->scalar.is_null = 1;
        st = value_apply(ld, k, v);
        goto done;
    }
    yaml_event_delete(&ev); /* DOCUMENT_START */
    DT_TRY_GOTO(st, next_event(ld, &ev), done);
    DT_TRY_GOTO(st, value_read(ld, k, &ev, v), done);
    DT_TRY_GOTO(st, next_event(ld, &ev), done); /* DOCUMENT_END */
    yaml_event_delete(&ev);
    DT_TRY_GOTO(st, next_event(ld, &ev), done);
    int more = ev.type != YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev);
    if (more) {
        st = cfg_fail(where, path, "expected one value, got several YAML documents");
        goto done;
    }
    st = value_apply(ld, k, v);
done:
    if (st == DT_OK) {
        ld->origins[known].from = CFG_FROM_OVERRIDE;
        ld->origins[known].override = i;
    }
    if (v) value_free(v);
    dt_free(v);
    yaml_parser_delete(&ld->parser);
    return st;
}

dt_status config_load_string(dt_config *cfg, const char *name, const char *yaml, int n_overrides,
                             char **overrides) {
    config_defaults(cfg);
    if (!name) name = "<string>";
    strncpy(cfg->source, name, sizeof cfg->source - 1);
    cfg->source[sizeof cfg->source - 1] = '\0';

    cfg_loader *ld = dt_calloc(1, sizeof *ld);
    if (!ld) {
        cfg_fail(name, NULL, "out of memory");
        return DT_ERR_RUNTIME;
    }
    ld->cfg = cfg;
    ld->name = name;
    ld->overrides = overrides;
    ld->cur_override = -1;
    ld->text = yaml;
    ld->text_len = strlen(yaml);

    dt_status st = DT_OK;
    if (!yaml_parser_initialize(&ld->parser)) {
        cfg_fail(name, NULL, "out of memory");
        st = DT_ERR_RUNTIME;
        goto done;
    }
    yaml_parser_set_input_string(&ld->parser, (const unsigned char *)yaml, ld->text_len);
    st = parse_document(ld);
    yaml_parser_delete(&ld->parser);
    for (int i = 0; st == DT_OK && i < n_overrides; i++) st = apply_override(ld, i);
    ld->cur_override = -1;
    if (st != DT_OK) goto done;

    /* n_kv_heads follows n_heads unless the file or an override gave it (0 also means "same"). */
    int kv = cfg_key_find("model.n_kv_heads");
    if (ld->origins[kv].from == CFG_FROM_DEFAULT || cfg->model.n_kv_heads == 0)
        cfg->model.n_kv_heads = cfg->model.n_heads;
    st = cfg_validate_origins(cfg, ld->origins, overrides);
done:
    dt_free(ld);
    return st;
}

dt_status config_load(dt_config *cfg, const char *path, int n_overrides, char **overrides) {
    config_defaults(cfg);
    FILE *f = fopen(path, "rb");
    if (!f) return cfg_fail(path, NULL, "expected a readable config file, got %s", strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    dt_status st = DT_OK;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 16384;
            char *grown = dt_realloc(text, cap);
            if (!grown) {
                cfg_fail(path, NULL, "out of memory reading the config");
                st = DT_ERR_RUNTIME;
                goto done;
            }
            text = grown;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        cfg_fail(path, NULL, "expected a readable config file, got a read error");
        st = DT_ERR_INPUT;
        goto done;
    }
    text[len] = '\0';
    if (strlen(text) != len) {
        size_t col, line = 1, start = 0, nul = strlen(text);
        for (size_t i = 0; i < nul; i++)
            if (text[i] == '\n') line++, start = i + 1;
        col = nul - start + 1;
        char where[DT_PATH_MAX + 64];
        snprintf(where, sizeof where, "%s:%zu:%zu", path, line, col);
        st = cfg_fail(where, "(top level)", "expected YAML text, got a NUL byte");
        goto done;
    }
    st = config_load_string(cfg, path, text, n_overrides, overrides);
done:
    fclose(f);
    dt_free(text);
    return st;
}
