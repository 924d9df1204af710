/*
 * log.c — leveled logging to stderr or a file, with secret redaction.
 *
 * Line format: "<RFC 3339 UTC ms> <ident>[<pid>] <LEVEL> <message>\n".
 * Control characters in messages are replaced by '?' so a hostile string
 * cannot forge log lines. Before a line is written it is searched for every
 * registered secret in three spellings (raw bytes, hex in either case,
 * base64); each occurrence becomes "[REDACTED]". Registration stores a
 * pointer, never a copy, so the registry itself holds no secret.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <unistd.h>

#define SR_LOG_LINE_MAX 4096
#define SR_LOG_SECRETS_MAX 256
#define SR_LOG_SECRET_LEN_MAX 512
#define REDACTED "[REDACTED]"

typedef struct {
    const void *ptr;
    size_t len;
} secret_ref_t;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = 2;
static int log_fd_owned;
static sr_log_level_t log_min = SR_LOG_INFO;
static char log_ident[64] = "strongroom";
static secret_ref_t secrets[SR_LOG_SECRETS_MAX];
static size_t secrets_count;

static const char *const level_names[] = {"DEBUG", "INFO", "NOTICE", "WARN", "ERROR"};

sr_err_t sr_log_open(const char *ident, const char *path, sr_log_level_t min_level)
{
    int fd = 2;
    if (path && strcmp(path, "-") != 0) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open log file %s", path);
    }
    pthread_mutex_lock(&log_lock);
    if (log_fd_owned) close(log_fd);
    log_fd = fd;
    log_fd_owned = fd != 2;
    log_min = min_level;
    snprintf(log_ident, sizeof log_ident, "%s", ident ? ident : "strongroom");
    pthread_mutex_unlock(&log_lock);
    return SR_OK;
}

void sr_log_close(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_fd_owned) close(log_fd);
    log_fd = 2;
    log_fd_owned = 0;
    pthread_mutex_unlock(&log_lock);
}

void sr_log_set_level(sr_log_level_t min_level)
{
    pthread_mutex_lock(&log_lock);
    log_min = min_level;
    pthread_mutex_unlock(&log_lock);
}

sr_err_t sr_log_level_parse(const char *text, sr_log_level_t *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (text && strcasecmp(text, level_names[i]) == 0) {
            *out = (sr_log_level_t)i;
            return SR_OK;
        }
    }
    if (text && strcasecmp(text, "warning") == 0) {
        *out = SR_LOG_WARN;
        return SR_OK;
    }
    return sr_err_set(SR_ERR_CONFIG, "unknown log level '%s' (use debug, info, notice, warn or error)",
                      text ? text : "");
}

sr_err_t sr_log_secret_register(const void *secret, size_t len)
{
    if (!secret || len == 0 || len > SR_LOG_SECRET_LEN_MAX)
        return sr_err_set(SR_ERR_INVALID_ARG, "secret to register must be 1..%d bytes", SR_LOG_SECRET_LEN_MAX);
    pthread_mutex_lock(&log_lock);
    sr_err_t rc = SR_OK;
    if (secrets_count == SR_LOG_SECRETS_MAX)
        rc = sr_err_set(SR_ERR_LIMIT, "too many registered secrets (%d)", SR_LOG_SECRETS_MAX);
    else
        secrets[secrets_count++] = (secret_ref_t){secret, len};
    pthread_mutex_unlock(&log_lock);
    return rc;
}

void sr_log_secret_unregister(const void *secret)
{
    pthread_mutex_lock(&log_lock);
    for (size_t i = 0; i < secrets_count; i++) {
        if (secrets[i].ptr == secret) {
            secrets[i] = secrets[--secrets_count];
            break;
        }
    }
    pthread_mutex_unlock(&log_lock);
}

/* Replaces every occurrence of needle in line (NUL-terminated, capacity cap). */
static void redact_spelling(char *line, size_t cap, const char *needle, size_t needle_len)
{
    if (needle_len < 4) return; /* too short to be a meaningful match */
    size_t redacted_len = strlen(REDACTED);
    char *hit;
    size_t line_len = strlen(line);
    char *from = line;
    while ((hit = memmem(from, line_len - (size_t)(from - line), needle, needle_len)) != NULL) {
        size_t tail = line_len - (size_t)(hit - line) - needle_len;
        if ((size_t)(hit - line) + redacted_len + tail + 1 > cap) tail = cap - 1 - (size_t)(hit - line) - redacted_len;
        memmove(hit + redacted_len, hit + needle_len, tail);
        memcpy(hit, REDACTED, redacted_len);
        line_len = (size_t)(hit - line) + redacted_len + tail;
        line[line_len] = '\0';
        from = hit + redacted_len;
    }
}

static void redact_secrets(char *line, size_t cap)
{
    char spelled[SR_LOG_SECRET_LEN_MAX * 2 + 1];
    for (size_t i = 0; i < secrets_count; i++) {
        const secret_ref_t *s = &secrets[i];
        redact_spelling(line, cap, s->ptr, s->len);
        sr_hex_encode(s->ptr, s->len, spelled);
        redact_spelling(line, cap, spelled, s->len * 2);
        for (size_t k = 0; k < s->len * 2; k++)
            if (spelled[k] >= 'a' && spelled[k] <= 'f') spelled[k] = (char)(spelled[k] - 'a' + 'A');
        redact_spelling(line, cap, spelled, s->len * 2);
        int b64 = EVP_EncodeBlock((unsigned char *)spelled, s->ptr, (int)s->len);
        /* Trailing '=' padding may be absent where the secret is embedded. */
        while (b64 > 0 && spelled[b64 - 1] == '=') b64--;
        redact_spelling(line, cap, spelled, (size_t)b64);
        sr_secure_wipe(spelled, sizeof spelled);
    }
}

void sr_log_v(sr_log_level_t level, const char *fmt, va_list ap)
{
    if (level < log_min) return;
    char line[SR_LOG_LINE_MAX + 192]; /* message + stamp, ident, pid, level */
    char stamp[SR_TIME_RFC3339_MAX];
    if (sr_time_format_rfc3339(sr_time_now_us(), 3, stamp, sizeof stamp) != SR_OK) strcpy(stamp, "-");

    char message[SR_LOG_LINE_MAX];
    int n = vsnprintf(message, sizeof message, fmt, ap);
    if (n < 0) snprintf(message, sizeof message, "(unformattable log message)");
    for (char *p = message; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';

    pthread_mutex_lock(&log_lock);
    int len = snprintf(line, sizeof line - 1, "%s %s[%ld] %s %s", stamp, log_ident, (long)getpid(),
                       level_names[level <= SR_LOG_ERROR ? level : SR_LOG_ERROR], message);
    if (len < 0) len = 0;
    line[sizeof line - 2] = '\0';
    redact_secrets(line, sizeof line - 1);
    len = (int)strlen(line);
    line[len++] = '\n';
    ssize_t off = 0;
    while (off < len) {
        ssize_t w = write(log_fd, line + off, (size_t)(len - off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break; /* nowhere left to report a logging failure */
        off += w;
    }
    pthread_mutex_unlock(&log_lock);
    sr_secure_wipe(message, sizeof message);
    sr_secure_wipe(line, sizeof line);
}

void sr_log(sr_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sr_log_v(level, fmt, ap);
    va_end(ap);
}
