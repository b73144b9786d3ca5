/* Internals shared by the launch/config*.c files (not part of the public interface).
 *
 * The key table (config_keys.c) names every config key, its type and the dt_config field(s) it
 * fills; the YAML loader (config_yaml.c), the validator (config.c) and the printer
 * (config_print.c) are all driven by it, so a key exists in all three or in none. */
#ifndef DT_CONFIG_IMPL_H
#define DT_CONFIG_IMPL_H

#include <stddef.h>

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

#endif
