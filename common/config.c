/*
 * config.c — the one configuration format every strongroom daemon reads.
 *
 *   # comment  /  ; comment
 *   [section]
 *   key = value            (value may be "quoted" with \" and \\ escapes)
 *
 * Strict by design (a typo in a security setting must not pass silently):
 * unknown sections and keys, duplicates, values of the wrong type, missing
 * required keys and malformed lines are all errors that name file:line.
 * Values are validated at load time so later getters cannot fail on them.
 */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SR_CONFIG_LINE_MAX 4096
#define SR_CONFIG_FILE_MAX (1u << 20)

typedef struct config_entry {
    const sr_config_key_t *schema;
    char *value;
    char where[300];
} config_entry_t;

struct sr_config {
    char *name;
    char *base_dir; /* for relative paths */
    const sr_config_key_t *schema;
    size_t schema_len;
    config_entry_t *entries; /* one per schema key; value NULL when unset */
};

/* ---- value parsers ---------------------------------------------------- */

sr_err_t sr_parse_bool(const char *text, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) return *out = 1, SR_OK;
        if (strcasecmp(text, no[i]) == 0) return *out = 0, SR_OK;
    }
    return sr_err_set(SR_ERR_PARSE, "'%s' is not a boolean (use true/false, yes/no, on/off, 1/0)", text);
}

sr_err_t sr_parse_int64(const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE)
        return sr_err_set(SR_ERR_PARSE, "'%s' is not a whole number", text);
    *out = v;
    return SR_OK;
}

sr_err_t sr_parse_host_port(const char *text, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(text, ':'), *name = text;
    size_t len = colon ? (size_t)(colon - text) : 0;
    if (len >= 2 && text[0] == '[' && text[len - 1] == ']') name++, len -= 2; /* [IPv6]:port */
    int64_t n = 0;
    if (!colon || !len || len >= cap || memchr(name, '[', len) || memchr(name, ']', len) ||
        !isdigit((unsigned char)colon[1]) || sr_parse_int64(colon + 1, &n) != SR_OK || n < 1 || n > 65535)
        return sr_err_set(SR_ERR_PARSE, "'%s' is not HOST:PORT (a port from 1 to 65535; [an IPv6 address]:PORT)",
                          text);
    memcpy(host, name, len), host[len] = '\0';
    *port = (uint16_t)n;
    return SR_OK;
}

/* A non-negative number followed by a unit from `units`; returns value * factor. */
typedef struct {
    const char *suffix;
    uint64_t factor;
} unit_t;

static sr_err_t parse_with_units(const char *text, const unit_t *units, size_t n, const char *what,
                                 uint64_t *out)
{
    char *end;
    errno = 0;
    if (*text == '-' || *text == '\0') return sr_err_set(SR_ERR_PARSE, "'%s' is not a %s", text, what);
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || errno == ERANGE) return sr_err_set(SR_ERR_PARSE, "'%s' is not a %s", text, what);
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            if (units[i].factor && v > UINT64_MAX / units[i].factor)
                return sr_err_set(SR_ERR_PARSE, "'%s' is too large", text);
            *out = v * units[i].factor;
            return SR_OK;
        }
    }
    return sr_err_set(SR_ERR_PARSE, "'%s' is not a %s", text, what);
}

sr_err_t sr_parse_duration_ms(const char *text, uint64_t *out)
{
    static const unit_t units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000},
                                   {"h", 3600000}, {"d", 86400000}};
    return parse_with_units(text, units, sizeof units / sizeof units[0], "duration (e.g. 500ms, 30s, 5m, 2h, 7d)",
                            out);
}

sr_err_t sr_parse_size(const char *text, uint64_t *out)
{
    static const unit_t units[] = {{"", 1}, {"k", 1u << 10}, {"kb", 1u << 10}, {"kib", 1u << 10},
                                   {"m", 1u << 20}, {"mb", 1u << 20}, {"mib", 1u << 20},
                                   {"g", 1u << 30}, {"gb", 1u << 30}, {"gib", 1u << 30}};
    return parse_with_units(text, units, sizeof units / sizeof units[0], "size (e.g. 4096, 64k, 10M, 2G)", out);
}

static sr_err_t validate_value(const sr_config_key_t *key, const char *value)
{
    int b;
    int64_t i;
    uint64_t u;
    switch (key->type) {
    case SR_CONFIG_INT: return sr_parse_int64(value, &i);
    case SR_CONFIG_BOOL: return sr_parse_bool(value, &b);
    case SR_CONFIG_DURATION: return sr_parse_duration_ms(value, &u);
    case SR_CONFIG_SIZE: return sr_parse_size(value, &u);
    case SR_CONFIG_STRING:
    case SR_CONFIG_PATH: return SR_OK;
    }
    return SR_OK;
}

/* ---- parsing -------------------------------------------------------------- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) *--e = '\0';
    return s;
}

/* Unquotes a "double quoted" value in place; plain values drop a trailing comment. */
static sr_err_t unquote(char *v, const char *name, int line)
{
    if (*v != '"') {
        char *hash = strstr(v, " #");
        if (hash) *hash = '\0';
        trim(v);
        return SR_OK;
    }
    char *out = v, *in = v + 1;
    while (*in && *in != '"') {
        if (*in == '\\') {
            in++;
            if (*in != '"' && *in != '\\')
                return sr_err_set(SR_ERR_CONFIG, "%s:%d: unknown escape '\\%c' in quoted value (use \\\" or \\\\)",
                                  name, line, *in ? *in : ' ');
        }
        *out++ = *in++;
    }
    if (*in != '"') return sr_err_set(SR_ERR_CONFIG, "%s:%d: unterminated quoted value", name, line);
    char *rest = trim(in + 1);
    if (*rest && *rest != '#' && *rest != ';')
        return sr_err_set(SR_ERR_CONFIG, "%s:%d: unexpected text after quoted value: %s", name, line, rest);
    *out = '\0';
    return SR_OK;
}

static int section_known(const sr_config_t *cfg, const char *section)
{
    for (size_t i = 0; i < cfg->schema_len; i++)
        if (strcmp(cfg->schema[i].section, section) == 0) return 1;
    return 0;
}

static config_entry_t *find_entry(const sr_config_t *cfg, const char *section, const char *key)
{
    for (size_t i = 0; i < cfg->schema_len; i++)
        if (strcmp(cfg->schema[i].section, section) == 0 && strcmp(cfg->schema[i].key, key) == 0)
            return &cfg->entries[i];
    return NULL;
}

static sr_err_t resolve_path(const sr_config_t *cfg, const char *value, char **out)
{
    size_t len = strlen(cfg->base_dir) + strlen(value) + 2;
    *out = malloc(len);
    if (!*out) return sr_err_set(SR_ERR_NOMEM, "out of memory reading %s", cfg->name);
    if (value[0] == '/' || value[0] == '\0' || cfg->base_dir[0] == '\0')
        snprintf(*out, len, "%s", value);
    else
        snprintf(*out, len, "%s/%s", cfg->base_dir, value);
    return SR_OK;
}

static sr_err_t parse_line(sr_config_t *cfg, char *raw, int line, char *section, size_t section_cap)
{
    char *s = trim(raw);
    if (*s == '\0' || *s == '#' || *s == ';') return SR_OK;
    if (*s == '[') {
        char *close = strchr(s, ']');
        if (!close || *trim(close + 1) != '\0')
            return sr_err_set(SR_ERR_CONFIG, "%s:%d: malformed section header (want [name])", cfg->name, line);
        *close = '\0';
        char *name = trim(s + 1);
        if (!section_known(cfg, name))
            return sr_err_set(SR_ERR_CONFIG, "%s:%d: unknown section [%s]", cfg->name, line, name);
        snprintf(section, section_cap, "%s", name);
        return SR_OK;
    }
    char *eq = strchr(s, '=');
    if (!eq) return sr_err_set(SR_ERR_CONFIG, "%s:%d: expected 'key = value'", cfg->name, line);
    *eq = '\0';
    char *key = trim(s), *value = trim(eq + 1);
    if (*key == '\0') return sr_err_set(SR_ERR_CONFIG, "%s:%d: missing key before '='", cfg->name, line);
    config_entry_t *e = find_entry(cfg, section, key);
    if (!e)
        return sr_err_set(SR_ERR_CONFIG, "%s:%d: unknown key '%s' in %s%s%s", cfg->name, line, key,
                          section[0] ? "[" : "the top level", section, section[0] ? "]" : "");
    if (e->value)
        return sr_err_set(SR_ERR_CONFIG, "%s:%d: duplicate key '%s' (first set at %s)", cfg->name, line, key,
                          e->where);
    sr_err_t rc = unquote(value, cfg->name, line);
    if (rc != SR_OK) return rc;
    if (validate_value(e->schema, value) != SR_OK)
        return sr_err_set(SR_ERR_CONFIG, "%s:%d: %s: %s", cfg->name, line, key, sr_err_detail());
    if (e->schema->type == SR_CONFIG_PATH)
        rc = resolve_path(cfg, value, &e->value);
    else if (!(e->value = strdup(value)))
        rc = sr_err_set(SR_ERR_NOMEM, "out of memory reading %s", cfg->name);
    snprintf(e->where, sizeof e->where, "%s:%d", cfg->name, line);
    return rc;
}

static sr_err_t check_schema_defaults(sr_config_t *cfg)
{
    for (size_t i = 0; i < cfg->schema_len; i++) {
        const sr_config_key_t *k = &cfg->schema[i];
        if (cfg->entries[i].value) continue;
        if (k->required)
            return sr_err_set(SR_ERR_CONFIG, "%s: required key '%s' missing from %s%s%s", cfg->name, k->key,
                              k->section[0] ? "[" : "the top level", k->section, k->section[0] ? "]" : "");
        if (k->default_value && validate_value(k, k->default_value) != SR_OK)
            return sr_err_set(SR_ERR_INTERNAL, "bad built-in default for %s.%s: %s", k->section, k->key,
                              sr_err_detail());
    }
    return SR_OK;
}

sr_err_t sr_config_parse(const char *name, const char *text, size_t text_len, const sr_config_key_t *schema,
                         size_t schema_len, sr_config_t **out)
{
    sr_config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg) return sr_err_set(SR_ERR_NOMEM, "out of memory reading %s", name);
    cfg->name = strdup(name);
    cfg->schema = schema;
    cfg->schema_len = schema_len;
    cfg->entries = calloc(schema_len ? schema_len : 1, sizeof *cfg->entries);
    const char *slash = strrchr(name, '/');
    cfg->base_dir = slash ? strndup(name, (size_t)(slash - name)) : strdup("");
    if (!cfg->name || !cfg->entries || !cfg->base_dir) {
        sr_config_free(cfg);
        return sr_err_set(SR_ERR_NOMEM, "out of memory reading %s", name);
    }
    for (size_t i = 0; i < schema_len; i++) cfg->entries[i].schema = &schema[i];

    char section[256] = "";
    char line_buf[SR_CONFIG_LINE_MAX];
    size_t pos = 0;
    int line = 0;
    sr_err_t rc = SR_OK;
    while (rc == SR_OK && pos < text_len) {
        line++;
        const char *nl = memchr(text + pos, '\n', text_len - pos);
        size_t len = nl ? (size_t)(nl - (text + pos)) : text_len - pos;
        if (len >= sizeof line_buf) {
            rc = sr_err_set(SR_ERR_CONFIG, "%s:%d: line longer than %d bytes", name, line, SR_CONFIG_LINE_MAX - 1);
            break;
        }
        if (memchr(text + pos, '\0', len)) {
            rc = sr_err_set(SR_ERR_CONFIG, "%s:%d: NUL byte in configuration", name, line);
            break;
        }
        memcpy(line_buf, text + pos, len);
        line_buf[len] = '\0';
        rc = parse_line(cfg, line_buf, line, section, sizeof section);
        pos += len + 1;
    }
    if (rc == SR_OK) rc = check_schema_defaults(cfg);
    if (rc != SR_OK) {
        sr_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return SR_OK;
}

sr_err_t sr_config_load(const char *path, const sr_config_key_t *schema, size_t schema_len, sr_config_t **out)
{
    char *text = NULL;
    size_t len = 0;
    sr_err_t rc = sr_file_read_all(path, SR_CONFIG_FILE_MAX, &text, &len);
    if (rc == SR_ERR_LIMIT) return sr_err_set(SR_ERR_CONFIG, "%s: larger than %u bytes", path, SR_CONFIG_FILE_MAX);
    if (rc == SR_ERR_NOMEM) return rc;
    if (rc != SR_OK) return sr_err_set(SR_ERR_CONFIG, "configuration file: %s", sr_err_detail());
    rc = sr_config_parse(path, text, len, schema, schema_len, out);
    free(text);
    return rc;
}

void sr_config_free(sr_config_t *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; cfg->entries && i < cfg->schema_len; i++) free(cfg->entries[i].value);
    free(cfg->entries);
    free(cfg->name);
    free(cfg->base_dir);
    free(cfg);
}

const char *sr_config_get(const sr_config_t *cfg, const char *section, const char *key)
{
    config_entry_t *e = find_entry(cfg, section, key);
    if (!e) return NULL;
    return e->value ? e->value : e->schema->default_value;
}

const char *sr_config_where(const sr_config_t *cfg, const char *section, const char *key)
{
    config_entry_t *e = find_entry(cfg, section, key);
    return e && e->value ? e->where : "<default>";
}

/* Typed getters: values were validated at load, so failure means "absent"
 * or a key the schema declares with another type. */
static const char *typed_value(const sr_config_t *cfg, const char *section, const char *key,
                               sr_config_type_t type, sr_err_t *rc)
{
    config_entry_t *e = find_entry(cfg, section, key);
    const char *v = e ? (e->value ? e->value : e->schema->default_value) : NULL;
    if (!e) *rc = sr_err_set(SR_ERR_INVALID_ARG, "configuration key %s.%s is not in the schema", section, key);
    else if (e->schema->type != type)
        *rc = sr_err_set(SR_ERR_INVALID_ARG, "configuration key %s.%s read with the wrong type", section, key);
    else if (!v) *rc = sr_err_set(SR_ERR_NOT_FOUND, "%s: key %s.%s is not set and has no default", cfg->name,
                                  section, key);
    else *rc = SR_OK;
    return *rc == SR_OK ? v : NULL;
}

sr_err_t sr_config_get_int(const sr_config_t *cfg, const char *section, const char *key, int64_t *out)
{
    sr_err_t rc;
    const char *v = typed_value(cfg, section, key, SR_CONFIG_INT, &rc);
    return v ? sr_parse_int64(v, out) : rc;
}

sr_err_t sr_config_get_bool(const sr_config_t *cfg, const char *section, const char *key, int *out)
{
    sr_err_t rc;
    const char *v = typed_value(cfg, section, key, SR_CONFIG_BOOL, &rc);
    return v ? sr_parse_bool(v, out) : rc;
}

sr_err_t sr_config_get_duration_ms(const sr_config_t *cfg, const char *section, const char *key, uint64_t *out)
{
    sr_err_t rc;
    const char *v = typed_value(cfg, section, key, SR_CONFIG_DURATION, &rc);
    return v ? sr_parse_duration_ms(v, out) : rc;
}

sr_err_t sr_config_get_size(const sr_config_t *cfg, const char *section, const char *key, uint64_t *out)
{
    sr_err_t rc;
    const char *v = typed_value(cfg, section, key, SR_CONFIG_SIZE, &rc);
    return v ? sr_parse_size(v, out) : rc;
}
