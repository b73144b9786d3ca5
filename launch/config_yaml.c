/* The YAML loader: a walk over libyaml's event stream (not the document API) so that a syntax
 * error can name the key being read when it struck, and so that duplicate keys are caught
 * (libyaml's document loader silently keeps both). It reads each key's value (a scalar or a flat
 * list of scalars) and hands it to config_scalar.c for typing; config_override.c applies the
 * key.path=value overrides with the same reader.
 *
 * Document rules (the typing rules for values are in config_scalar.c):
 *   - null is a plain "", "~", "null", "Null" or "NULL";
 *   - a section written with no value ("model:") is an empty section;
 *   - anchors are allowed, aliases are rejected (a config should say each value once). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "launch/config_impl.h"
#include "util/alloc.h"

/* ---- messages ---- */

static void where_mark(const cfg_loader *ld, const yaml_mark_t *mark, char *buf, size_t n) {
    if (ld->cur_override >= 0)
        snprintf(buf, n, "override '%s'", ld->overrides[ld->cur_override]);
    else
        snprintf(buf, n, "%s:%zu:%zu", ld->name, mark->line + 1, mark->column + 1);
}

dt_status cfg_fail_at(const cfg_loader *ld, const yaml_mark_t *mark, const char *key,
                      const char *fmt, ...) {
    char where[DT_PATH_MAX + 64], msg[1024];
    where_mark(ld, mark, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cfg_fail(where, key, "%s", msg);
}

const char *cfg_describe_event(const yaml_event_t *ev) {
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

dt_status cfg_next_event(cfg_loader *ld, yaml_event_t *ev) {
    if (!yaml_parser_parse(&ld->parser, ev)) return syntax_error(ld);
    return DT_OK;
}

/* ---- values ---- */

void cfg_scalar_from_event(cfg_scalar *s, const yaml_event_t *ev) {
    s->text = (const char *)ev->data.scalar.value;
    s->len = ev->data.scalar.length;
    s->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    s->mark = ev->start_mark;
    s->is_null = s->plain && (s->len == 0 || !strcmp(s->text, "~") || !strcmp(s->text, "null") ||
                              !strcmp(s->text, "Null") || !strcmp(s->text, "NULL"));
}

void cfg_value_free(cfg_value *v) {
    for (int i = 0; i < v->n_events; i++) yaml_event_delete(&v->events[i]);
    v->n_events = 0;
}

/* Reads a whole value whose first event is *first (taken over: deleted by cfg_value_free). A key's
 * value may be a scalar or a flat list of scalars; anything deeper is a type error. */
dt_status cfg_value_read(cfg_loader *ld, const cfg_key *k, yaml_event_t *first, cfg_value *v) {
    memset(v, 0, offsetof(cfg_value, events));
    v->n_events = 0;
    v->mark = first->start_mark;
    char expect[128];
    cfg_key_expect(k, expect, sizeof expect);
    if (first->type == YAML_SCALAR_EVENT) {
        v->events[v->n_events++] = *first;
        cfg_scalar_from_event(&v->scalar, first);
        return DT_OK;
    }
    if (first->type != YAML_SEQUENCE_START_EVENT) {
        dt_status st = cfg_fail_at(ld, &first->start_mark, k->path, "expected %s, got %s", expect,
                                   cfg_describe_event(first));
        yaml_event_delete(first);
        return st;
    }
    yaml_event_delete(first);
    v->is_list = 1;
    for (;;) {
        yaml_event_t ev;
        DT_TRY(cfg_next_event(ld, &ev));
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return DT_OK;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            char item[CFG_KEY_PATH_MAX + 16];
            snprintf(item, sizeof item, "%s[%d]", k->path, v->n_items);
            dt_status st =
                cfg_fail_at(ld, &ev.start_mark, item, "expected %s, got %s inside the list", expect,
                            cfg_describe_event(&ev));
            yaml_event_delete(&ev);
            return st;
        }
        if (v->n_items < CFG_VALUE_MAX_ITEMS) {
            v->events[v->n_events++] = ev;
            cfg_scalar_from_event(&v->items[v->n_items], &v->events[v->n_events - 1]);
        } else {
            yaml_event_delete(&ev);
        }
        v->n_items++;
    }
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
        DT_TRY(cfg_next_event(ld, &ev));
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return DT_OK;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            dt_status st = cfg_fail_at(ld, &ev.start_mark, prefix[0] ? prefix : "(top level)",
                                       "expected a key name, got %s", cfg_describe_event(&ev));
            yaml_event_delete(&ev);
            return st;
        }
        char path[CFG_KEY_PATH_MAX];
        const char *name = (const char *)ev.data.scalar.value;
        path_join(path, sizeof path, prefix, name);
        yaml_mark_t key_mark = ev.start_mark;
        int known = cfg_key_find(path), section = cfg_is_section(path);
        if (known < 0 && !section) {
            const char *hint = cfg_suggest(path);
            dt_status st;
            if (hint)
                st = cfg_fail_at(ld, &key_mark, path,
                                 "expected a known key, got an unknown one (did you mean %s?)",
                                 hint);
            else
                st = cfg_fail_at(ld, &key_mark, path, "expected a known key, got an unknown one");
            yaml_event_delete(&ev);
            return st;
        }
        for (int i = 0; i < n_seen; i++) {
            if (strcmp(seen[i], name) != 0) continue;
            dt_status st = cfg_fail_at(ld, &key_mark, path,
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
        DT_TRY(cfg_next_event(ld, &val));
        if (section) {
            if (val.type == YAML_MAPPING_START_EVENT) {
                yaml_event_delete(&val);
                DT_TRY(parse_mapping(ld, path));
                continue;
            }
            cfg_scalar s = {0};
            if (val.type == YAML_SCALAR_EVENT) {
                cfg_scalar_from_event(&s, &val);
                if (s.is_null) { /* "model:" with nothing under it */
                    yaml_event_delete(&val);
                    continue;
                }
            }
            char got[128];
            if (val.type == YAML_SCALAR_EVENT)
                cfg_describe_scalar(&s, got, sizeof got);
            else
                snprintf(got, sizeof got, "%s", cfg_describe_event(&val));
            dt_status st = cfg_fail_at(ld, &val.start_mark, path,
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
        dt_status st = cfg_value_read(ld, k, &val, v);
        if (st == DT_OK) st = cfg_value_apply(ld, k, v);
        if (st == DT_OK) {
            ld->origins[known].from = CFG_FROM_FILE;
            ld->origins[known].line = (int)v->mark.line + 1;
            ld->origins[known].col = (int)v->mark.column + 1;
        }
        cfg_value_free(v);
        dt_free(v);
        DT_TRY(st);
    }
}

static dt_status parse_document(cfg_loader *ld) {
    yaml_event_t ev;
    DT_TRY(cfg_next_event(ld, &ev)); /* STREAM_START */
    yaml_event_delete(&ev);
    DT_TRY(cfg_next_event(ld, &ev));
    if (ev.type == YAML_STREAM_END_EVENT) { /* empty file or only comments: all defaults */
        yaml_event_delete(&ev);
        return DT_OK;
    }
    yaml_event_delete(&ev); /* DOCUMENT_START */
    DT_TRY(cfg_next_event(ld, &ev));
    if (ev.type == YAML_MAPPING_START_EVENT) {
        yaml_event_delete(&ev);
        DT_TRY(parse_mapping(ld, ""));
    } else {
        cfg_scalar s = {0};
        int empty = 0;
        if (ev.type == YAML_SCALAR_EVENT) cfg_scalar_from_event(&s, &ev), empty = s.is_null;
        if (!empty) {
            dt_status st = cfg_fail_at(ld, &ev.start_mark, "(top level)",
                                       "expected a mapping of sections (model, parallel, train, "
                                       "optim, data, checkpoint, log, launch), got %s",
                                       cfg_describe_event(&ev));
            yaml_event_delete(&ev);
            return st;
        }
        yaml_event_delete(&ev);
    }
    ld->path[0] = '\0';
    DT_TRY(cfg_next_event(ld, &ev)); /* DOCUMENT_END */
    yaml_event_delete(&ev);
    DT_TRY(cfg_next_event(ld, &ev));
    if (ev.type != YAML_STREAM_END_EVENT) {
        dt_status st = cfg_fail_at(ld, &ev.start_mark, "(top level)",
                                   "expected one YAML document, got a second one");
        yaml_event_delete(&ev);
        return st;
    }
    yaml_event_delete(&ev);
    return DT_OK;
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
    for (int i = 0; st == DT_OK && i < n_overrides; i++) st = cfg_apply_override(ld, i);
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
