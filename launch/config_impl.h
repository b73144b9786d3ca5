/* Internals shared by the launch/config*.c files (not part of the public interface).
 *
 * The key table (config_keys.c) names every config key, its type and the dt_config field(s) it
 * fills; the YAML loader (config_yaml.c, with config_scalar.c typing the values and
 * config_override.c applying key.path=value overrides), the validator (config.c) and the printer
 * (config_print.c) are all driven by it, so a key exists in all three or in none. */
#ifndef DT_CONFIG_IMPL_H
#define DT_CONFIG_IMPL_H

#include <stddef.h>

#include <yaml.h>

#include "launch/config.h"

typedef enum cfg_kind {
    CFG_INT,    /* int field; exact integers only */
    CFG_U64,    /* uint64_t field; exact non-negative integers */
    CFG_NUM,    /* double field; finite numbers */
    CFG_BOOL,   /* int field, 0/1; true | false */
    CFG_ENUM,   /* enum field (int-sized); one of names[] (index = enum value) */
    CFG_STR,    /* char[size] field; any scalar, null = "" */
    CFG_PATHS,  /* int count at off, char[DT_MAX_PATHS][DT_PATH_MAX] at off2; string or list */
    CFG_BETAS,  /* double at off and off2; a list of two numbers */
    CFG_LAMBDA, /* int schedule flag at off, double constant at off2; "schedule" or a number */
    CFG_DP,     /* int field; "auto" (stored as 0) or an integer >= 1 */
} cfg_kind;

typedef struct cfg_key {
    const char *path; /* "model.d_model" */
    cfg_kind kind;
    size_t off;
    size_t size; /* of the field at off (the char buffer for CFG_STR) */
    size_t off2;
    const char *const *names; /* CFG_ENUM: NULL-terminated, indexed by the enum value */
} cfg_key;

typedef enum cfg_from { CFG_FROM_DEFAULT = 0, CFG_FROM_FILE, CFG_FROM_OVERRIDE } cfg_from;

/* Where a key got its value: the file position of the value, or the override's index. */
typedef struct cfg_origin {
    cfg_from from;
    int line, col; /* 1-based, CFG_FROM_FILE */
    int override;  /* index into the overrides array, CFG_FROM_OVERRIDE */
} cfg_origin;

#define CFG_MAX_KEYS 64 /* capacity of the per-load origin table */

extern const cfg_key cfg_keys[];
extern const int cfg_n_keys;

/* Index of a leaf key, or -1. */
int cfg_key_find(const char *path);
/* 1 when path names a section ("model", "launch.slurm") that has keys below it. */
int cfg_is_section(const char *path);
/* The closest known key or section to an unknown path, or NULL when none is close. */
const char *cfg_suggest(const char *path);
/* "an integer", "one of diff, diff_v2, transformer", ...: what a key's value must look like. */
void cfg_key_expect(const cfg_key *k, char *buf, size_t n);

/* "NAME:LINE:COL", "override 'TEXT'" or "NAME" (defaulted) for a key's origin; origins may be
 * NULL (everything defaulted). */
void cfg_where(char *buf, size_t n, const char *name, const cfg_origin *o, char *const *overrides);
/* Reports "WHERE: KEY: MESSAGE" through dt_error, keeps it for config_last_error, and returns
 * DT_ERR_INPUT. key may be NULL (then the message follows WHERE directly). */
dt_status cfg_fail(const char *where, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Validation with the origins of the keys (NULL: all defaulted), used by the loaders so that a
 * range or consistency error points at the line (or override) that set the offending key. */
dt_status cfg_validate_origins(const dt_config *cfg, const cfg_origin *origins,
                               char *const *overrides);

/* Shortest "%.*g" text that strtod reads back to exactly v. */
void cfg_format_double(char *buf, size_t n, double v);

/* ---- the loader (config_yaml.c, config_scalar.c, config_override.c) ---- */

/* The longest list kept (data paths); longer lists are counted, not stored. */
#define CFG_VALUE_MAX_ITEMS (DT_MAX_PATHS + 1)
#define CFG_KEY_PATH_MAX 256

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
    int n_items;       /* is_list: items seen; the first CFG_VALUE_MAX_ITEMS are kept */
    cfg_scalar items[CFG_VALUE_MAX_ITEMS];
    yaml_mark_t mark;
    yaml_event_t events[CFG_VALUE_MAX_ITEMS]; /* owners of the texts above */
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
    char path[CFG_KEY_PATH_MAX]; /* key being read, for syntax errors */
    cfg_origin origins[CFG_MAX_KEYS];
} cfg_loader;

/* config_yaml.c: the event walk. */

/* Reports "WHERE: KEY: MESSAGE" (cfg_fail) with WHERE the file position of mark, or the override
 * being applied. */
dt_status cfg_fail_at(const cfg_loader *ld, const yaml_mark_t *mark, const char *key,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* "a list", "a mapping", "an alias (...)" or "a scalar": what an event starts. */
const char *cfg_describe_event(const yaml_event_t *ev);
/* The next parser event; a syntax error is reported naming the key being read (ld->path). */
dt_status cfg_next_event(cfg_loader *ld, yaml_event_t *ev);
/* Fills s from a scalar event (s points into the event's text). */
void cfg_scalar_from_event(cfg_scalar *s, const yaml_event_t *ev);
/* Reads the value of key k whose first event is *first (taken over: deleted by cfg_value_free):
 * a scalar or a flat list of scalars; anything deeper is a type error. */
dt_status cfg_value_read(cfg_loader *ld, const cfg_key *k, yaml_event_t *first, cfg_value *v);
/* Deletes the events that own a value's texts. */
void cfg_value_free(cfg_value *v);

/* config_scalar.c: typing. */

/* "'abc'", "the string 'abc'" (quoted), "nothing (null)": a short, printable echo of a value. */
void cfg_describe_scalar(const cfg_scalar *s, char *buf, size_t n);
/* Stores a value read for key k into ld->cfg, checking only its type (ranges and the relations
 * between keys are the validator's job). */
dt_status cfg_value_apply(const cfg_loader *ld, const cfg_key *k, const cfg_value *v);

/* config_override.c: applies overrides[i] ("key.path=value") to ld->cfg and records its origin. */
dt_status cfg_apply_override(cfg_loader *ld, int i);

#endif
