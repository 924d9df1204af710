/*
 * sealer.c — one sealer per host: the only process that holds the signing key
 * and writes the log; every other process sends it events over a Unix socket.
 *
 * Wire protocol (SOCK_STREAM, AF_UNIX), per event:
 *   client -> sealer   length (u32 BE) | component \0 event \0 subject \0 object \0 outcome \0 source \0 detail
 *   sealer -> client   'A'                              recorded and durable (group commit)
 *                      'E' | length (u32 BE) | reason   not recorded: the client fails closed
 *
 * The record's subject is the kernel's view of the sending process —
 * "uid=U gid=G pid=P exe=PATH" from SO_PEERCRED and /proc/PID/exe — never
 * what the client claims; a claimed subject is kept in the detail as
 * "claimed subject: ...", so a lie is recorded next to the truth. Clients
 * need neither the signing key nor write access to the log.
 */
#include "audit_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define EVENT_MAX 16384
#define FIELDS 7

/* ---- framing ---------------------------------------------------------------------- */

#define sock_write sr_fd_write_all
#define sock_read sr_fd_read_exact

/* ---- sealer ------------------------------------------------------------------------- */

typedef struct sealer {
    sr_audit_writer_t *w;
    pthread_mutex_t lock;
    int active;
} sealer_t;

typedef struct client {
    sealer_t *s;
    int fd;
} client_t;

/* "uid=U gid=G pid=P exe=PATH" of the process at the other end. */
static int peer_subject(int fd, char *out, size_t cap)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    char link[64], exe[1024] = "?";
    snprintf(link, sizeof link, "/proc/%d/exe", (int)cred.pid);
    ssize_t n = readlink(link, exe, sizeof exe - 1);
    if (n > 0) exe[n] = '\0';
    else snprintf(exe, sizeof exe, "?");
    snprintf(out, cap, "uid=%u gid=%u pid=%d exe=%s", (unsigned)cred.uid, (unsigned)cred.gid, (int)cred.pid, exe);
    return 0;
}

static void reply_error(int fd, const char *why)
{
    uint8_t head[5] = {'E'};
    size_t n = strlen(why);
    sr_put_be32(head + 1, (uint32_t)n);
    if (sock_write(fd, head, sizeof head) == SR_OK && sock_write(fd, why, n) != SR_OK)
        sr_log(SR_LOG_DEBUG, "audit sealer: a client left before hearing why: %s", why);
}

/* One event: split the fields, put the kernel's subject in, append durably. */
static sr_err_t seal_one(sealer_t *s, const char *subject, char *payload, size_t len)
{
    const char *f[FIELDS];
    size_t at = 0;
    for (int i = 0; i < FIELDS; i++) {
        if (at > len) return sr_err_set(SR_ERR_PROTOCOL, "audit event with %d of %d fields", i, FIELDS);
        f[i] = payload + at;
        at += strnlen(payload + at, len - at) + 1;
    }
    if (at != len + 1) return sr_err_set(SR_ERR_PROTOCOL, "audit event: bytes after its last field");
    char detail[EVENT_MAX];
    const char *d = f[6];
    if (*f[2]) { /* what the client claims about itself, beside the truth */
        snprintf(detail, sizeof detail, "claimed subject: %s%s%s", f[2], *f[6] ? "; " : "", f[6]);
        d = detail;
    }
    sr_event_t ev = {.component = f[0], .event = f[1], .subject = subject, .object = f[3], .outcome = f[4],
                     .source = *f[5] ? f[5] : "local", .detail = d};
    return sr_audit_append(s->w, &ev);
}

static void *client_thread(void *p)
{
    client_t *c = p;
    char subject[1200];
    uint8_t *buf = malloc(EVENT_MAX + 1), head[4];
    if (!buf || peer_subject(c->fd, subject, sizeof subject) != 0) {
        reply_error(c->fd, "the sealer cannot tell who is sending (SO_PEERCRED)");
    } else {
        while (sock_read(c->fd, head, sizeof head) == SR_OK) {
            uint32_t n = sr_get_be32(head);
            if (n > EVENT_MAX) {
                reply_error(c->fd, "audit event too long");
                break;
            }
            if (sock_read(c->fd, buf, n) != SR_OK) break;
            buf[n] = '\0';
            if (seal_one(c->s, subject, (char *)buf, n) == SR_OK) {
                if (sock_write(c->fd, "A", 1) != SR_OK) break;
            } else {
                reply_error(c->fd, sr_err_detail());
            }
        }
    }
    free(buf);
    close(c->fd);
    pthread_mutex_lock(&c->s->lock);
    c->s->active--;
    pthread_mutex_unlock(&c->s->lock);
    free(c);
    return NULL;
}

static sr_err_t listen_unix(const char *path, int *out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) return sr_err_set(SR_ERR_INVALID_ARG, "socket path %s is too long", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot create a Unix socket");
    unlink(path); /* a socket left by a sealer that died */
    /* Every local process may send events: who it is comes from the kernel. */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || chmod(path, 0666) != 0 || listen(fd, 128) != 0) {
        sr_err_t rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot listen on %s", path);
        close(fd);
        return rc;
    }
    *out = fd;
    return SR_OK;
}

sr_err_t sr_audit_serve(const sr_audit_sealer_options_t *o, volatile int *stop)
{
    sealer_t *s = calloc(1, sizeof *s);
    if (!s) return sr_err_set(SR_ERR_NOMEM, "audit sealer");
    int lfd = -1;
    sr_err_t rc = sr_audit_open(&o->log, &s->w);
    if (rc == SR_OK) rc = listen_unix(o->socket_path, &lfd);
    if (rc != SR_OK) {
        if (s->w) (void)sr_audit_close(s->w);
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->lock, NULL);
    int max = o->max_clients > 0 ? o->max_clients : 1024;
    sr_log(SR_LOG_NOTICE, "audit sealer on %s, writing %s", o->socket_path, o->log.path);
    while (!*stop) {
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        if (poll(&pfd, 1, 500) <= 0) continue;
        pthread_mutex_lock(&s->lock);
        int room = s->active < max;
        if (room) s->active++;
        pthread_mutex_unlock(&s->lock);
        if (!room) {
            poll(NULL, 0, 50);
            continue;
        }
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        client_t *c = fd >= 0 ? calloc(1, sizeof *c) : NULL;
        pthread_t th;
        if (c) c->s = s, c->fd = fd;
        if (c && pthread_create(&th, NULL, client_thread, c) == 0) {
            pthread_detach(th);
            continue;
        }
        if (fd >= 0) close(fd);
        free(c);
        pthread_mutex_lock(&s->lock);
        s->active--;
        pthread_mutex_unlock(&s->lock);
        poll(NULL, 0, 100); /* out of descriptors or threads: do not spin */
    }
    close(lfd);
    unlink(o->socket_path);
    int left = 1;
    for (int waited = 0; waited < 500 && left; waited++) { /* clients still sending: up to 5 s */
        pthread_mutex_lock(&s->lock);
        left = s->active;
        pthread_mutex_unlock(&s->lock);
        if (left) poll(NULL, 0, 10);
    }
    rc = left ? SR_OK : sr_audit_close(s->w); /* sealed at close; never freed under a client */
    if (!left) pthread_mutex_destroy(&s->lock), free(s);
    return rc;
}

/* ---- client: the event sink of every other process ---------------------------------- */

struct sr_audit_client {
    char path[108];
    int fd;
    pthread_mutex_t lock;
};

static sr_err_t client_connect(sr_audit_client_t *c)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", c->path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        sr_err_t rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot reach the audit sealer at %s", c->path);
        if (c->fd >= 0) close(c->fd);
        c->fd = -1;
        return rc;
    }
    struct timeval tv = {10, 0}; /* a sealer that hangs fails the event, never the caller forever */
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return SR_OK;
}

sr_err_t sr_audit_client_open(const char *socket_path, sr_audit_client_t **out)
{
    sr_audit_client_t *c = calloc(1, sizeof *c);
    if (!c) return sr_err_set(SR_ERR_NOMEM, "audit client");
    if (strlen(socket_path) >= sizeof c->path) {
        free(c);
        return sr_err_set(SR_ERR_INVALID_ARG, "socket path %s is too long", socket_path);
    }
    snprintf(c->path, sizeof c->path, "%s", socket_path);
    pthread_mutex_init(&c->lock, NULL);
    sr_err_t rc = client_connect(c);
    if (rc != SR_OK) {
        pthread_mutex_destroy(&c->lock);
        free(c);
        return rc;
    }
    *out = c;
    return SR_OK;
}

static sr_err_t client_send_once(sr_audit_client_t *c, const uint8_t *frame, size_t len)
{
    if (c->fd < 0) {
        sr_err_t rc = client_connect(c);
        if (rc != SR_OK) return rc;
    }
    uint8_t status = 0;
    sr_err_t rc = sock_write(c->fd, frame, len);
    if (rc == SR_OK) rc = sock_read(c->fd, &status, 1);
    if (rc == SR_OK && status == 'A') return SR_OK;
    if (rc == SR_OK && status == 'E') {
        uint8_t head[4];
        char why[1024] = "";
        if (sock_read(c->fd, head, 4) == SR_OK) {
            uint32_t n = sr_get_be32(head);
            if (n < sizeof why && sock_read(c->fd, why, n) == SR_OK) why[n] = '\0';
        }
        return sr_err_set(SR_ERR_IO, "the audit sealer did not record the event: %s", why);
    }
    close(c->fd), c->fd = -1;
    return rc == SR_OK ? sr_err_set(SR_ERR_PROTOCOL, "the audit sealer answered '%c'", status) : rc;
}

sr_err_t sr_audit_client_send(sr_audit_client_t *c, const sr_event_t *e)
{
    const char *f[FIELDS] = {e->component, e->event, e->subject, e->object, e->outcome, e->source, e->detail};
    uint8_t *frame = malloc(4 + EVENT_MAX);
    if (!frame) return sr_err_set(SR_ERR_NOMEM, "audit event");
    size_t len = 0;
    for (int i = 0; i < FIELDS; i++) {
        size_t n = f[i] ? strlen(f[i]) : 0;
        if (len + n + 1 > EVENT_MAX) {
            free(frame);
            return sr_err_set(SR_ERR_INVALID_ARG, "audit event longer than %d bytes", EVENT_MAX);
        }
        if (n) memcpy(frame + 4 + len, f[i], n);
        frame[4 + len + n] = '\0';
        len += n + 1;
    }
    sr_put_be32(frame, (uint32_t)(len - 1)); /* the last NUL is implied */
    pthread_mutex_lock(&c->lock);
    sr_err_t rc = client_send_once(c, frame, 4 + len - 1);
    if (rc != SR_OK && c->fd < 0) rc = client_send_once(c, frame, 4 + len - 1); /* a sealer restarted: once more */
    pthread_mutex_unlock(&c->lock);
    free(frame);
    return rc;
}

void sr_audit_client_close(sr_audit_client_t *c)
{
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static sr_err_t client_sink(void *ctx, const sr_event_t *e) { return sr_audit_client_send(ctx, e); }

void sr_audit_client_install_as_event_sink(sr_audit_client_t *c)
{
    sr_event_set_sink(c ? client_sink : NULL, c);
}
