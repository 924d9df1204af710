/*
 * sr_config.h — the one configuration format every daemon and CLI reads.
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_CONFIG_H
#define STRONGROOM_SR_CONFIG_H

#include "sr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Configuration: one INI-like format for every daemon and CLI.
 *
 *   # comment            ; comment
 *   [section]
 *   key = value          values may be "double quoted" (\" and \\ escapes)
 *
 * The caller passes a schema; a key or section it does not list, a
 * duplicate key, or a value of the wrong type is an SR_ERR_CONFIG whose
 * detail starts with "file:line: ". Keys before any [section] belong to
 * section "". Missing keys take the schema default.
 * ---------------------------------------------------------------------- */
typedef enum sr_config_type {
    SR_CONFIG_STRING,
    SR_CONFIG_INT,      /* signed 64-bit decimal */
    SR_CONFIG_BOOL,     /* true/false/yes/no/on/off/1/0 */
    SR_CONFIG_DURATION, /* 500ms, 30s, 5m, 2h, 7d; a bare number is seconds */
    SR_CONFIG_SIZE,     /* 4096, 64k, 10M, 2G (powers of 1024) */
    SR_CONFIG_PATH,     /* a string; relative paths resolve against the file's directory */
} sr_config_type_t;

typedef struct sr_config_key {
    const char *section; /* "" for the top level */
    const char *key;
    sr_config_type_t type;
    const char *default_value; /* NULL: no default */
    int required;              /* nonzero: must appear in the file */
} sr_config_key_t;

typedef struct sr_config sr_config_t;

SR_API sr_err_t sr_config_load(const char *path, const sr_config_key_t *schema, size_t schema_len,
                        sr_config_t **out) SR_MUST_CHECK;
/* Parses text already in memory; `name` stands for the file in messages and
 * relative paths resolve against the current directory. */
SR_API sr_err_t sr_config_parse(const char *name, const char *text, size_t text_len,
                         const sr_config_key_t *schema, size_t schema_len,
                         sr_config_t **out) SR_MUST_CHECK;
SR_API void sr_config_free(sr_config_t *cfg);
/* NULL when the key is absent and has no default. */
SR_API const char *sr_config_get(const sr_config_t *cfg, const char *section, const char *key);
SR_API sr_err_t sr_config_get_int(const sr_config_t *cfg, const char *section, const char *key, int64_t *out);
SR_API sr_err_t sr_config_get_bool(const sr_config_t *cfg, const char *section, const char *key, int *out);
SR_API sr_err_t sr_config_get_duration_ms(const sr_config_t *cfg, const char *section, const char *key,
                                   uint64_t *out);
SR_API sr_err_t sr_config_get_size(const sr_config_t *cfg, const char *section, const char *key, uint64_t *out);
/* The file:line where the key was set, or "<default>". */
SR_API const char *sr_config_where(const sr_config_t *cfg, const char *section, const char *key);

/* Value parsers the config uses, exported for CLIs and URI parameters. */
SR_API sr_err_t sr_parse_bool(const char *text, int *out);
SR_API sr_err_t sr_parse_int64(const char *text, int64_t *out);
SR_API sr_err_t sr_parse_duration_ms(const char *text, uint64_t *out);
SR_API sr_err_t sr_parse_size(const char *text, uint64_t *out);
/* "host:port" (the last colon separates them; "[v6 address]:port") into
 * host and port; the host is not empty, the port 1 to 65535. */
SR_API sr_err_t sr_parse_host_port(const char *text, char *host, size_t cap, uint16_t *port);

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_CONFIG_H */
