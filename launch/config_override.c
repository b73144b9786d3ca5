/* The "key.path=value" overrides of config_load/config_load_string, applied after the file: the
 * key must be a known leaf key, and the value is read as a one-value YAML document with the
 * file's reader (config_yaml.c) and typed by the same rules (config_scalar.c). */
#include <stdio.h>
#include <string.h>

#include <yaml.h>

#include "launch/config_impl.h"
#include "util/alloc.h"

/* Applies one "key.path=value"; the value is parsed as a one-value YAML document. */
dt_status cfg_apply_override(cfg_loader *ld, int i) {
    const char *text = ld->overrides[i];
    ld->cur_override = i;
    ld->path[0] = '\0';
    const char *eq = strchr(text, '=');
    char where[DT_PATH_MAX + 64];
    snprintf(where, sizeof where, "override '%s'", text);
    if (!eq || eq == text)
        return cfg_fail(where, NULL, "expected key.path=value, got %s",
                        eq ? "no key before '='" : "no '='");
    char path[CFG_KEY_PATH_MAX];
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
    DT_TRY_GOTO(st, cfg_next_event(ld, &ev), done); /* STREAM_START */
    yaml_event_delete(&ev);
    DT_TRY_GOTO(st, cfg_next_event(ld, &ev), done);
    if (ev.type == YAML_STREAM_END_EVENT) { /* "key=": an empty value is null */
        yaml_event_delete(&ev);
        memset(v, 0, offsetof(cfg_value, events));
        v->scalar.text = "";
        v->scalar.plain = v->scalar.is_null = 1;
        st = cfg_value_apply(ld, k, v);
        goto done;
    }
    yaml_event_delete(&ev); /* DOCUMENT_START */
    DT_TRY_GOTO(st, cfg_next_event(ld, &ev), done);
    DT_TRY_GOTO(st, cfg_value_read(ld, k, &ev, v), done);
    DT_TRY_GOTO(st, cfg_next_event(ld, &ev), done); /* DOCUMENT_END */
    yaml_event_delete(&ev);
    DT_TRY_GOTO(st, cfg_next_event(ld, &ev), done);
    int more = ev.type != YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev);
    if (more) {
        st = cfg_fail(where, path, "expected one value, got several YAML documents");
        goto done;
    }
    st = cfg_value_apply(ld, k, v);
done:
    if (st == DT_OK) {
        ld->origins[known].from = CFG_FROM_OVERRIDE;
        ld->origins[known].override = i;
    }
    if (v) cfg_value_free(v);
    dt_free(v);
    yaml_parser_delete(&ld->parser);
    return st;
}
