/*
 * sr_error.h — error codes, the thread-local detail message, exit statuses.
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_ERROR_H
#define STRONGROOM_SR_ERROR_H

#include "sr_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Errors
 *
 * One table, grouped by module. To add a code, add one line in your
 * module's group; the enum value and sr_strerror() text come from it.
 * Codes are stable once released: append, never renumber.
 * ---------------------------------------------------------------------- */
#define SR_ERROR_TABLE(X)                                                          \
    X(SR_OK, 0, "success")                                                         \
    /* general */                                                                  \
    X(SR_ERR_NOMEM, 1, "out of memory")                                            \
    X(SR_ERR_INVALID_ARG, 2, "invalid argument")                                   \
    X(SR_ERR_IO, 3, "input/output error")                                          \
    X(SR_ERR_NOT_FOUND, 4, "not found")                                            \
    X(SR_ERR_EXISTS, 5, "already exists")                                          \
    X(SR_ERR_PERMISSION, 6, "permission denied")                                   \
    X(SR_ERR_TIMEOUT, 7, "timed out")                                              \
    X(SR_ERR_BUFFER_TOO_SMALL, 8, "buffer too small")                              \
    X(SR_ERR_UNSUPPORTED, 9, "not supported")                                      \
    X(SR_ERR_INTERNAL, 10, "internal error")                                       \
    X(SR_ERR_CRYPTO, 11, "cryptographic library failure")                          \
    X(SR_ERR_RANDOM, 12, "random number generator failure")                        \
    X(SR_ERR_CONFIG, 13, "invalid configuration")                                  \
    X(SR_ERR_PARSE, 14, "malformed input")                                         \
    X(SR_ERR_AUTH, 15, "authentication failed")                                    \
    X(SR_ERR_CORRUPT, 16, "data is corrupt")                                       \
    X(SR_ERR_VERSION, 17, "unsupported format version")                            \
    X(SR_ERR_STATE, 18, "operation not allowed in the current state")              \
    X(SR_ERR_LIMIT, 19, "limit reached")                                           \
    X(SR_ERR_CLOSED, 20, "connection or object closed")                            \
    X(SR_ERR_NETWORK, 21, "network error")                                         \
    X(SR_ERR_TLS, 22, "TLS error")                                                 \
    X(SR_ERR_PROTOCOL, 23, "protocol violation by peer")                           \
    X(SR_ERR_DISK_FULL, 24, "no space left on device")                             \
    X(SR_ERR_TRUNCATED, 25, "input is truncated")                                  \
    /* keys and tablespaces (SR_ERR_WRONG_KEY: a data key wrapped by another     \
     * master key, whoever notices: keymgr or tde; it was SR_ERR_TDE_WRONG_KEY) */ \
    X(SR_ERR_WRONG_KEY, 100, "wrong master key for this data key")                 \
    X(SR_ERR_TDE_NO_HEADER, 101, "no tablespace key header")                       \
    X(SR_ERR_TDE_PAGE_AUTH, 102, "page failed authentication")                     \
    X(SR_ERR_TDE_NONCE_LIMIT, 103, "encryption limit for this key version reached") \
    X(SR_ERR_TDE_KEY_VERSION, 104, "unknown key version")                          \
    /* keymgr / kmip */                                                            \
    X(SR_ERR_KMIP_DECODE, 200, "malformed KMIP message")                           \
    X(SR_ERR_KMIP_DEPTH, 201, "KMIP nesting too deep")                             \
    X(SR_ERR_KMIP_RESULT, 202, "KMIP operation failed on the server")              \
    X(SR_ERR_KMIP_UNEXPECTED, 203, "unexpected KMIP item")                         \
    X(SR_ERR_WRAP_INTEGRITY, 204, "wrapped key failed its integrity check")        \
    X(SR_ERR_KEY_EXPIRED, 205, "cached key expired")                               \
    /* audit */                                                                    \
    X(SR_ERR_AUDIT_CHAIN, 300, "audit hash chain broken")                          \
    X(SR_ERR_AUDIT_SIGNATURE, 301, "audit checkpoint signature invalid")           \
    X(SR_ERR_AUDIT_SEQUENCE, 302, "audit sequence out of order")                   \
    X(SR_ERR_AUDIT_UNSEALED, 303, "audit records after the last checkpoint")       \
    /* access control */                                                           \
    X(SR_ERR_ACCESS_DENIED, 400, "access denied by policy")

typedef enum sr_err {
#define SR_ERR_ENUM_(name, value, text) name = value,
    SR_ERROR_TABLE(SR_ERR_ENUM_)
#undef SR_ERR_ENUM_
} sr_err_t;
#define SR_ERR_TDE_WRONG_KEY SR_ERR_WRONG_KEY /* its name before 0.2, for code written against it */

/* Short fixed text for a code ("page failed authentication"). Never NULL. */
SR_API const char *sr_strerror(sr_err_t err);
/* The symbolic name of a code ("SR_ERR_TDE_PAGE_AUTH"). Never NULL. */
SR_API const char *sr_err_name(sr_err_t err);

/* Records a detail message for the calling thread and returns `err`, so a
 * failure path reads: return sr_err_set(SR_ERR_PARSE, "%s:%d: ...", f, l); */
SR_API sr_err_t sr_err_set(sr_err_t err, const char *fmt, ...) SR_PRINTF(2, 3);
/* Like sr_err_set, appending ": <strerror(errno_value)>". */
SR_API sr_err_t sr_err_set_errno(sr_err_t err, int errno_value, const char *fmt, ...) SR_PRINTF(3, 4);
/* Like sr_err_set, appending the newest OpenSSL error (and clearing its queue). */
SR_API sr_err_t sr_err_set_openssl(sr_err_t err, const char *fmt, ...) SR_PRINTF(2, 3);
/* The calling thread's last detail message, or sr_strerror() of the last code
 * if none was recorded. Valid until the thread's next sr_err_set*. */
SR_API const char *sr_err_detail(void);
/* The code recorded with the last detail message on this thread. */
SR_API sr_err_t sr_err_last(void);
SR_API void sr_err_clear(void);
/* Exit statuses, the same in every strongroom tool: 0 ok, 1 a check failed
 * (tampering, verification, a refusal), 2 usage, 3 and above could not do or
 * check it: 3 in general (a missing file, I/O), refined where a tool can
 * tell: 4 wrong or missing key, 5 the database is busy, 6 disk full. */
enum {
    SR_EXIT_OK = 0,
    SR_EXIT_FAILED = 1,
    SR_EXIT_USAGE = 2,
    SR_EXIT_CANNOT = 3,
    SR_EXIT_KEY = 4,
    SR_EXIT_BUSY = 5,
    SR_EXIT_DISK_FULL = 6,
};
/* The exit status for a failure with this code. */
SR_API int sr_exit_status(sr_err_t err);

/* Maps an errno value to the closest code (ENOSPC -> SR_ERR_DISK_FULL, ...). */
SR_API sr_err_t sr_err_from_errno(int errno_value);

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_ERROR_H */
