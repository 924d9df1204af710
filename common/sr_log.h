/*
 * sr_log.h — logging that never prints a registered secret.
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_LOG_H
#define STRONGROOM_SR_LOG_H

#include <stdarg.h>
#include "sr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Logging
 *
 * Lines look like "2026-11-23T03:20:21.123Z kmsd[1234] WARN message".
 * Every line is checked against the registered secrets before it is written:
 * a line that contains one (raw, hex or base64) has it replaced by
 * "[REDACTED]". Register each key as soon as it is in memory.
 * ---------------------------------------------------------------------- */
typedef enum sr_log_level {
    SR_LOG_DEBUG = 0,
    SR_LOG_INFO = 1,
    SR_LOG_NOTICE = 2,
    SR_LOG_WARN = 3,
    SR_LOG_ERROR = 4,
} sr_log_level_t;

/* `path` NULL or "-" means stderr. `ident` names the component. */
SR_API sr_err_t sr_log_open(const char *ident, const char *path, sr_log_level_t min_level);
SR_API void sr_log_close(void);
SR_API void sr_log_set_level(sr_log_level_t min_level);
/* Parses "debug", "info", "notice", "warn", "error". */
SR_API sr_err_t sr_log_level_parse(const char *text, sr_log_level_t *out);
SR_API void sr_log(sr_log_level_t level, const char *fmt, ...) SR_PRINTF(2, 3);
SR_API void sr_log_v(sr_log_level_t level, const char *fmt, va_list ap) SR_PRINTF(2, 0);
/* The secret is referenced, not copied: keep it alive (and registered) for as
 * long as it lives, and unregister before wiping it. */
SR_API sr_err_t sr_log_secret_register(const void *secret, size_t len);
SR_API void sr_log_secret_unregister(const void *secret);

#define sr_log_debug(...) sr_log(SR_LOG_DEBUG, __VA_ARGS__)
#define sr_log_info(...) sr_log(SR_LOG_INFO, __VA_ARGS__)
#define sr_log_notice(...) sr_log(SR_LOG_NOTICE, __VA_ARGS__)
#define sr_log_warn(...) sr_log(SR_LOG_WARN, __VA_ARGS__)
#define sr_log_error(...) sr_log(SR_LOG_ERROR, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_LOG_H */
