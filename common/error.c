/*
 * error.c — one error table, and a thread-local detail message.
 *
 * Codes say what kind of failure happened; the detail message says what,
 * where and what to do ("master.key: mode 0644 is readable by others; run
 * chmod 600 master.key"). The message is per thread so concurrent callers
 * never see each other's details.
 */
#include "common.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

#define SR_ERR_DETAIL_MAX 1024

static _Thread_local char detail[SR_ERR_DETAIL_MAX];
static _Thread_local sr_err_t last_code;

const char *sr_strerror(sr_err_t err)
{
    switch (err) {
#define SR_ERR_TEXT_(name, value, text) case name: return text;
        SR_ERROR_TABLE(SR_ERR_TEXT_)
#undef SR_ERR_TEXT_
    }
    return "unknown error";
}

const char *sr_err_name(sr_err_t err)
{
    switch (err) {
#define SR_ERR_NAME_(name, value, text) case name: return #name;
        SR_ERROR_TABLE(SR_ERR_NAME_)
#undef SR_ERR_NAME_
    }
    return "SR_ERR_UNKNOWN";
}

int sr_exit_status(sr_err_t err)
{
    switch (err) {
    case SR_OK: return SR_EXIT_OK;
    case SR_ERR_TDE_PAGE_AUTH:
    case SR_ERR_CORRUPT:
    case SR_ERR_AUDIT_CHAIN:
    case SR_ERR_AUDIT_SIGNATURE:
    case SR_ERR_AUDIT_SEQUENCE:
    case SR_ERR_AUDIT_UNSEALED:
    case SR_ERR_ACCESS_DENIED: return SR_EXIT_FAILED;
    case SR_ERR_WRONG_KEY:
    case SR_ERR_TDE_KEY_VERSION:
    case SR_ERR_WRAP_INTEGRITY:
    case SR_ERR_KEY_EXPIRED:
    case SR_ERR_AUTH: return SR_EXIT_KEY;
    case SR_ERR_DISK_FULL: return SR_EXIT_DISK_FULL;
    default: return SR_EXIT_CANNOT;
    }
}

static sr_err_t record(sr_err_t err, const char *suffix, const char *fmt, va_list ap) SR_PRINTF(3, 0);
static sr_err_t record(sr_err_t err, const char *suffix, const char *fmt, va_list ap)
{
    /* Format into a local buffer first: callers may pass sr_err_detail() as
     * an argument to wrap an earlier message with more context. */
    char buf[SR_ERR_DETAIL_MAX];
    if (vsnprintf(buf, sizeof buf, fmt, ap) < 0) buf[0] = '\0';
    if (suffix) {
        size_t used = strlen(buf);
        snprintf(buf + used, sizeof buf - used, ": %s", suffix);
    }
    memcpy(detail, buf, sizeof detail);
    last_code = err;
    return err;
}

sr_err_t sr_err_set(sr_err_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(err, NULL, fmt, ap);
    va_end(ap);
    return err;
}

sr_err_t sr_err_set_errno(sr_err_t err, int errno_value, const char *fmt, ...)
{
    char buf[256];
    const char *text = strerror_r(errno_value, buf, sizeof buf);
    va_list ap;
    va_start(ap, fmt);
    record(err, text, fmt, ap);
    va_end(ap);
    return err;
}

sr_err_t sr_err_set_openssl(sr_err_t err, const char *fmt, ...)
{
    char buf[256] = "no OpenSSL error recorded";
    unsigned long e = ERR_peek_last_error();
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    va_list ap;
    va_start(ap, fmt);
    record(err, buf, fmt, ap);
    va_end(ap);
    return err;
}

const char *sr_err_detail(void)
{
    if (detail[0]) return detail;
    return sr_strerror(last_code);
}

sr_err_t sr_err_last(void) { return last_code; }

void sr_err_clear(void)
{
    detail[0] = '\0';
    last_code = SR_OK;
}

sr_err_t sr_err_from_errno(int errno_value)
{
    switch (errno_value) {
    case 0: return SR_OK;
    case ENOMEM: return SR_ERR_NOMEM;
    case ENOENT: return SR_ERR_NOT_FOUND;
    case EEXIST: return SR_ERR_EXISTS;
    case EACCES:
    case EPERM:
    case EROFS: return SR_ERR_PERMISSION;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return SR_ERR_DISK_FULL;
    case ETIMEDOUT:
    case EAGAIN: return SR_ERR_TIMEOUT;
    case EINVAL: return SR_ERR_INVALID_ARG;
    case ECONNREFUSED:
    case ECONNRESET:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EPIPE: return SR_ERR_NETWORK;
    default: return SR_ERR_IO;
    }
}
