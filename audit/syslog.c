/*
 * syslog.c — a copy of each audit record, as written, to a syslog collector
 * in RFC 5424 format, for sites with an existing log pipeline.
 *
 *   <PRI>1 TIMESTAMP HOST strongroom PID EVENT [strongroom@32473 seq="N"
 *   component="C" outcome="O"] {the record's JSON line}
 *
 * Facility authpriv (10); severity notice for success, warning otherwise.
 * Targets: "udp:HOST:PORT" or "unix:/dev/log" (datagrams). Syslog is a
 * courtesy copy: the signed, hash-chained log file stays the record of truth
 * (a lost datagram loses nothing there), so a send failure is logged, not
 * fatal.
 */
#include "audit_internal.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SYSLOG_FACILITY_AUTHPRIV 10
#define SYSLOG_NOTICE 5
#define SYSLOG_WARNING 4
#define SYSLOG_MAX 8192

struct sr_audit_syslog {
    int fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host[256];
};

sr_err_t sr_audit_syslog_open(const char *target, sr_audit_syslog_t **out)
{
    sr_audit_syslog_t *s = calloc(1, sizeof *s);
    if (!s) return sr_err_set(SR_ERR_NOMEM, "syslog");
    gethostname(s->host, sizeof s->host - 1);
    sr_err_t rc = SR_OK;
    if (strncmp(target, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&s->addr;
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof un->sun_path, "%s", target + 5);
        s->addr_len = sizeof *un;
        s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    } else if (strncmp(target, "udp:", 4) == 0) {
        char host[256];
        const char *colon = strrchr(target + 4, ':');
        struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res = NULL;
        snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - target - 4) : 0, target + 4);
        if (!colon || getaddrinfo(host, colon + 1, &hints, &res) != 0) {
            rc = sr_err_set(SR_ERR_CONFIG, "syslog target %s: want udp:HOST:PORT", target);
        } else {
            memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
            s->addr_len = res->ai_addrlen;
            s->fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            freeaddrinfo(res);
        }
    } else {
        rc = sr_err_set(SR_ERR_CONFIG, "syslog target %s: want udp:HOST:PORT or unix:/dev/log", target);
    }
    if (rc == SR_OK && s->fd < 0) rc = sr_err_set_errno(SR_ERR_NETWORK, errno, "syslog socket");
    if (rc != SR_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return SR_OK;
}

/* RFC 5424 PARAM-VALUE: escape '"', '\' and ']'. */
static size_t sd_value(char *out, size_t cap, const char *v)
{
    size_t n = 0;
    for (; *v && n + 2 < cap; v++) {
        if (*v == '"' || *v == '\\' || *v == ']') out[n++] = '\\';
        out[n++] = *v;
    }
    out[n] = '\0';
    return n;
}

/* A token for APP-NAME/MSGID fields: printable ASCII without spaces, or "-". */
static void token(char *out, size_t cap, const char *v)
{
    size_t n = 0;
    for (; v && *v && n + 1 < cap && n < 32; v++) out[n++] = *v > 32 && *v < 127 ? *v : '_';
    if (!n) out[n++] = '-';
    out[n] = '\0';
}

void sr_audit_syslog_send(sr_audit_syslog_t *s, const char *line, size_t len)
{
    char copy[SR_AUDIT_LINE_MAX + 512];
    if (len >= sizeof copy) return;
    memcpy(copy, line, len);
    copy[len] = '\0';
    sr_audit_record_t r;
    if (sr_audit_record_parse(copy, len, &r) != SR_OK) return; /* cannot happen: we just wrote it */
    int sev = strcmp(r.outcome, "success") == 0 ? SYSLOG_NOTICE : SYSLOG_WARNING;
    char ts[40], msgid[40], comp[256], outcome[64], host[64], msg[SYSLOG_MAX];
    sr_time_format_rfc3339(r.ts_us, 6, ts, sizeof ts);
    token(msgid, sizeof msgid, r.event);
    token(host, sizeof host, s->host);
    sd_value(comp, sizeof comp, r.component);
    sd_value(outcome, sizeof outcome, r.outcome);
    int n = snprintf(msg, sizeof msg, "<%d>1 %s %s strongroom %ld %s [strongroom@32473 seq=\"%llu\" component=\"%s\" "
                     "outcome=\"%s\"] %.*s", SYSLOG_FACILITY_AUTHPRIV * 8 + sev, ts, host, (long)getpid(), msgid,
                     (unsigned long long)r.seq, comp, outcome, (int)len, line);
    if (n < 0) return;
    if (sendto(s->fd, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1, MSG_NOSIGNAL,
               (struct sockaddr *)&s->addr, s->addr_len) < 0)
        sr_log(SR_LOG_WARN, "audit: syslog copy not sent: %s (the audit log itself is unaffected)", strerror(errno));
}

void sr_audit_syslog_close(sr_audit_syslog_t *s)
{
    if (!s) return;
    close(s->fd);
    free(s);
}
