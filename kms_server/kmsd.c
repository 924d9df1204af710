/*
 * kmsd — the strongroom key server: KMIP over mutual TLS.
 *
 *   kmsd --config kmsd.conf [--foreground]
 *
 * One epoll set for every connection, served by a pool of 32 threads, up to
 * max_connections (a connection over the cap is closed
 * at once). A connection has handshake_timeout to finish its TLS handshake,
 * idle_timeout between requests, and message_timeout to send a whole request
 * (and to take its answer); a request's length is checked against
 * max_message before its body is read. SIGTERM: stop accepting, let requests
 * in flight finish, exit. SIGHUP: reload the certificates and limits (a bad
 * file keeps the old ones and says why).
 */
#include "audit.h"
#include "kms.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

static const sr_config_key_t schema[] = {
    {"server", "listen", SR_CONFIG_STRING, "127.0.0.1", 0},
    {"server", "port", SR_CONFIG_INT, "5696", 0},
    {"server", "min_tls", SR_CONFIG_STRING, "1.2", 0},
    {"server", "max_connections", SR_CONFIG_INT, "1024", 0},
    {"server", "handshake_timeout", SR_CONFIG_DURATION, "5s", 0},
    {"server", "idle_timeout", SR_CONFIG_DURATION, "300s", 0},
    {"server", "message_timeout", SR_CONFIG_DURATION, "10s", 0},
    {"server", "max_message", SR_CONFIG_SIZE, "1M", 0},
    {"server", "log", SR_CONFIG_PATH, NULL, 0},
    {"server", "log_level", SR_CONFIG_STRING, "info", 0},
    {"tls", "cert", SR_CONFIG_PATH, NULL, 1},
    {"tls", "key", SR_CONFIG_PATH, NULL, 1},
    {"tls", "ca", SR_CONFIG_PATH, NULL, 1},
    {"store", "path", SR_CONFIG_PATH, NULL, 0},
    {"store", "url", SR_CONFIG_STRING, NULL, 0},
    {"store", "root_key_file", SR_CONFIG_PATH, NULL, 0},
    {"store", "passphrase_file", SR_CONFIG_PATH, NULL, 0},
    {"audit", "socket", SR_CONFIG_PATH, NULL, 0},
    {"audit", "log", SR_CONFIG_PATH, NULL, 0},
    {"audit", "sign_key", SR_CONFIG_PATH, NULL, 0},
    {"enrolment", "enabled", SR_CONFIG_BOOL, "false", 0},
    {"enrolment", "ca_cert", SR_CONFIG_PATH, NULL, 0},
    {"enrolment", "ca_key", SR_CONFIG_PATH, NULL, 0},
    {"enrolment", "lease", SR_CONFIG_DURATION, "30s", 0},
    {"enrolment", "grace", SR_CONFIG_DURATION, "5s", 0},
    {"enrolment", "retention", SR_CONFIG_DURATION, "7d", 0},
    {"enrolment", "cert_days", SR_CONFIG_INT, "30", 0},
};
#define N_SCHEMA (sizeof schema / sizeof schema[0])

typedef struct limits {
    int64_t max_connections;
    uint64_t handshake_ms, idle_ms, message_ms, max_message;
} limits_t;

static struct {
    pthread_mutex_t lock;
    sr_ssl_ctx_t *ctx; /* swapped on SIGHUP */
    limits_t limits;
    kms_store_t *store;
    const char *config_path;
} server = {.lock = PTHREAD_MUTEX_INITIALIZER};

static volatile sig_atomic_t stop_requested, reload_requested;
static void on_stop(int sig) { (void)sig, stop_requested = 1; }
static void on_reload(int sig) { (void)sig, reload_requested = 1; }

/* ---- configuration ---------------------------------------------------------------------- */

static sr_err_t read_limits(const sr_config_t *cfg, limits_t *l)
{
    sr_err_t rc = sr_config_get_int(cfg, "server", "max_connections", &l->max_connections);
    if (rc == SR_OK) rc = sr_config_get_duration_ms(cfg, "server", "handshake_timeout", &l->handshake_ms);
    if (rc == SR_OK) rc = sr_config_get_duration_ms(cfg, "server", "idle_timeout", &l->idle_ms);
    if (rc == SR_OK) rc = sr_config_get_duration_ms(cfg, "server", "message_timeout", &l->message_ms);
    if (rc == SR_OK) rc = sr_config_get_size(cfg, "server", "max_message", &l->max_message);
    if (rc == SR_OK && (l->max_connections < 1 || l->max_connections > 4096))
        rc = sr_err_set(SR_ERR_CONFIG, "max_connections must be 1 to 4096");
    if (rc == SR_OK && (l->max_message < 1024 || l->max_message > SR_KMIP_MAX_MESSAGE))
        rc = sr_err_set(SR_ERR_CONFIG, "max_message must be 1k to 16M");
    return rc;
}

static sr_err_t make_tls(const sr_config_t *cfg, sr_ssl_ctx_t **out)
{
    const char *min = sr_config_get(cfg, "server", "min_tls");
    int enrolment = 0; /* a node enrols before it has a certificate: then one is optional (and the handler allows
                          nothing but Enrol without one) */
    (void)sr_config_get_bool(cfg, "enrolment", "enabled", &enrolment);
    if (strcmp(min, "1.2") != 0 && strcmp(min, "1.3") != 0)
        return sr_err_set(SR_ERR_CONFIG, "min_tls is 1.2 or 1.3, not %s", min);
    sr_tls_options_t o = {.cert_file = sr_config_get(cfg, "tls", "cert"), .key_file = sr_config_get(cfg, "tls", "key"),
                          .ca_file = sr_config_get(cfg, "tls", "ca"),
                          .min_version = !strcmp(min, "1.2") ? SR_TLS_1_2 : SR_TLS_1_3,
                          .require_client_cert = !enrolment};
    return sr_tls_server_ctx_new(&o, out);
}

static void reload(void)
{
    sr_config_t *cfg = NULL;
    sr_ssl_ctx_t *ctx = NULL;
    limits_t l;
    sr_err_t rc = sr_config_load(server.config_path, schema, N_SCHEMA, &cfg);
    if (rc == SR_OK) rc = read_limits(cfg, &l);
    if (rc == SR_OK) rc = make_tls(cfg, &ctx);
    sr_config_free(cfg);
    if (rc != SR_OK) {
        sr_log_error("reload refused, the running configuration stays: %s", sr_err_detail());
        return;
    }
    pthread_mutex_lock(&server.lock);
    sr_ssl_ctx_t *old = server.ctx;
    server.ctx = ctx, server.limits = l;
    pthread_mutex_unlock(&server.lock);
    sr_tls_ctx_free(old); /* connections keep their own reference */
    sr_log_notice("reloaded certificates and limits from %s", server.config_path);
}

/* ---- connections --------------------------------------------------------------------------- */

/* An event of kmsd's own (not a request's: those fail closed in the handler); a warning if it is not recorded. */
static void record(const sr_event_t *ev)
{
    if (sr_event_emit(ev) != SR_OK) sr_log_warn("audit: kms.%s not recorded: %s", ev->event, sr_err_detail());
}

static void audit_connection(const char *who, const char *source, const char *outcome, const char *detail)
{
    sr_event_t ev = {.component = "kms", .event = "tls.connection", .subject = who, .outcome = outcome,
                     .detail = detail, .source = source};
    record(&ev);
}

/* Per request, under one lock: the principal's role now, and whether its
 * certificate was revoked since it connected. */
static int refresh(kms_principal_t *p)
{
    kms_store_lock(server.store);
    int revoked = p->fingerprint[0] && kms_cert_revoked(server.store, p->fingerprint);
    p->role = kms_principal_role(server.store, p->name);
    kms_store_unlock(server.store);
    return revoked;
}

/* Why a revoked certificate is refused: a node's ended membership, or a revocation. */
static void refusal(kms_principal_t *p)
{
    kms_node_t n;
    kms_store_lock(server.store);
    int node = kms_node_load(server.store, p->name, &n) == SR_OK;
    kms_store_unlock(server.store);
    if (node && strcmp(n.state, "active") != 0)
        snprintf(p->refused, sizeof p->refused, "node %.40s is %s (%.80s): enrol again with a new token", n.uuid,
                 n.state, n.reason);
    else snprintf(p->refused, sizeof p->refused, "certificate of %.80s revoked", p->name);
}

/*
 * Connections: one epoll set, served by a fixed pool of 32 threads (requests
 * spend most of their time waiting for the audit log's group commit: more
 * in flight share each fsync).
 * Every socket is non-blocking and armed one-shot, so exactly one thread
 * owns a connection while it acts on it: a TLS handshake step, the request
 * bytes that have arrived (the header's tag and length checked against
 * max_message before anything is allocated), the request itself once whole
 * (the principal refreshed, the handler run), the answer as far as the peer
 * takes it — then the socket is armed again for what it waits for. A slow or
 * silent peer costs a slot and its TLS state, never a thread. A timer thread
 * cuts what overstays its phase (handshake_timeout, idle_timeout,
 * message_timeout for a request or for taking its answer) by shutting the
 * socket down, which wakes its owner to close it.
 */
typedef enum { C_HANDSHAKE, C_IDLE, C_READING, C_WORKING, C_WRITING } conn_state_t;

typedef struct conn {
    sr_tls_conn_t *tls;
    int fd, slot;
    _Atomic conn_state_t state; /* the timer reads it too */
    _Atomic uint64_t deadline; /* sr_time_mono_ms(); the timer reads it */
    _Atomic int expired;       /* the timer cut it */
    uint8_t head[8];
    uint8_t *msg;              /* the request, header included */
    size_t have, need;
    int refuse;                /* the framing was refused: answer Invalid Message, then close */
    sr_kmip_enc_t resp;        /* the answer, written as the peer takes it */
    size_t sent;
    kms_principal_t p;
} conn_t;

#define MAX_CONNS 4096
#define WORKERS 32
#define NEVER UINT64_MAX

static struct {
    int ep, wake, lfd; /* epoll; an eventfd rung at stop; the listener */
    pthread_mutex_t lock; /* slots, open */
    conn_t *slots[MAX_CONNS];
    int open, workers;
    pthread_t thread[WORKERS], timer;
    _Atomic int stopping;
    uint64_t stop_at;
} loop = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void arm(int fd, void *ptr, int events)
{
    struct epoll_event ev = {.events = (uint32_t)events | EPOLLONESHOT, .data.ptr = ptr};
    epoll_ctl(loop.ep, EPOLL_CTL_MOD, fd, &ev);
}

static void conn_close(conn_t *c)
{
    pthread_mutex_lock(&loop.lock); /* out of the slots before the descriptor can be reused */
    loop.slots[c->slot] = NULL, loop.open--;
    pthread_mutex_unlock(&loop.lock);
    epoll_ctl(loop.ep, EPOLL_CTL_DEL, c->fd, NULL);
    sr_tls_close(c->tls); /* closes the socket */
    if (c->msg) sr_secure_wipe(c->msg, c->need), free(c->msg);
    sr_kmip_enc_free(&c->resp);
    free(c);
}

static void limits_now(limits_t *l)
{
    pthread_mutex_lock(&server.lock);
    *l = server.limits;
    pthread_mutex_unlock(&server.lock);
}

/* The request, whole: the principal's standing now, the handler, the answer. */
static void run_request(conn_t *c, const limits_t *l)
{
    static const uint8_t garbage[8] = {0};
    c->state = C_WORKING;
    c->deadline = NEVER;
    if (!c->refuse && refresh(&c->p) && !c->p.refused[0]) {
        audit_connection(c->p.name, c->p.source, "denied", "certificate revoked");
        refusal(&c->p); /* refused from now on: answered with the reason, nothing else */
    }
    sr_kmip_enc_free(&c->resp);
    sr_kmip_enc_init(&c->resp);
    sr_err_t rc = c->refuse ? kms_handle(server.store, &c->p, garbage, sizeof garbage, &c->resp)
                            : kms_handle(server.store, &c->p, c->msg, c->need, &c->resp);
    if (c->msg) sr_secure_wipe(c->msg, c->need), free(c->msg), c->msg = NULL;
    if (rc != SR_OK) c->resp.len = 0, c->refuse = 1;
    c->sent = 0;
    c->deadline = sr_time_mono_ms() + l->message_ms;
    c->state = C_WRITING;
}

static void set_idle(conn_t *c, const limits_t *l)
{
    c->have = c->need = c->sent = 0;
    c->state = C_IDLE;
    c->deadline = sr_time_mono_ms() + l->idle_ms;
}

/* What one wake-up of a connection allows; 0 once it is armed again or closed. */
static int step(conn_t *c, const limits_t *l)
{
    if (c->state == C_HANDSHAKE) {
        int r = sr_tls_handshake_step(c->tls);
        if (r == SR_TLS_FAILED || c->expired) {
            audit_connection("(handshake)", sr_tls_peer_addr(c->tls), "failure",
                             c->expired ? "the TLS handshake did not finish in handshake_timeout" : sr_err_detail());
            return conn_close(c), 0;
        }
        if (r != SR_TLS_DONE) return arm(c->fd, c, r == SR_TLS_WANT_WRITE ? EPOLLOUT : EPOLLIN), 0;
        const char *cn = sr_tls_peer_cn(c->tls), *fp = sr_tls_peer_fingerprint(c->tls);
        snprintf(c->p.name, sizeof c->p.name, "%s", cn ? cn : "");
        snprintf(c->p.source, sizeof c->p.source, "%s", sr_tls_peer_addr(c->tls));
        snprintf(c->p.fingerprint, sizeof c->p.fingerprint, "%s", fp ? fp : "");
        set_idle(c, l);
        return 1;
    }
    if (c->state == C_WRITING) {
        while (c->sent < c->resp.len) {
            size_t n = 0;
            int r = sr_tls_write_some(c->tls, c->resp.buf + c->sent, c->resp.len - c->sent, &n);
            if (r == SR_TLS_FAILED || c->expired) {
                if (c->expired) sr_log_info("%s (%s): did not take its answer within message_timeout; closing",
                                            c->p.name, c->p.source);
                return conn_close(c), 0;
            }
            if (r != SR_TLS_DONE) return arm(c->fd, c, r == SR_TLS_WANT_WRITE ? EPOLLOUT : EPOLLIN), 0;
            c->sent += n;
        }
        sr_kmip_enc_free(&c->resp);
        if (c->refuse || loop.stopping) return conn_close(c), 0;
        set_idle(c, l);
        return 1;
    }
    /* idle or reading: the bytes that have come */
    uint8_t *dst = c->have < 8 ? c->head + c->have : c->msg + c->have;
    size_t want = c->have < 8 ? 8 - c->have : c->need - c->have, n = 0;
    int r = c->expired ? SR_TLS_FAILED : sr_tls_read_some(c->tls, dst, want, &n);
    if (r == SR_TLS_FAILED) {
        if (c->expired && c->state == C_READING)
            sr_log_info("%s (%s): request not whole within message_timeout; closing", c->p.name, c->p.source);
        return conn_close(c), 0; /* closed by the peer, idle too long, or broken */
    }
    if (r != SR_TLS_DONE) return arm(c->fd, c, r == SR_TLS_WANT_WRITE ? EPOLLOUT : EPOLLIN), 0;
    if (c->state == C_IDLE) {
        c->deadline = sr_time_mono_ms() + l->message_ms;
        c->state = C_READING;
    }
    c->have += n;
    if (c->have == 8 && !c->msg) {
        uint32_t tag = (uint32_t)c->head[0] << 16 | (uint32_t)c->head[1] << 8 | c->head[2];
        uint32_t len = sr_get_be32(c->head + 4);
        if (tag != SR_KMIP_TAG_REQUEST_MESSAGE || c->head[3] != SR_KMIP_STRUCTURE || len > l->max_message - 8) {
            sr_log_warn("%s (%s): %s; closing", c->p.name, c->p.source,
                        len > l->max_message - 8 ? "request over max_message" : "not a KMIP request message");
            c->refuse = 1;
            run_request(c, l);
            return 1;
        }
        c->need = (size_t)len + 8;
        if (!(c->msg = malloc(c->need))) return conn_close(c), 0;
        memcpy(c->msg, c->head, 8);
    }
    if (c->msg && c->have == c->need) run_request(c, l);
    return 1;
}

/* Accepts what waits: over max_connections a connection is closed at once, not queued. */
static void accept_all(const limits_t *l)
{
    for (;;) {
        int fd = accept4(loop.lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) { /* out of descriptors: wait, don't spin */
                sr_log_warn("out of file descriptors (%d connections): accepting again in 100 ms", loop.open);
                usleep(100000);
            }
            break;
        }
        conn_t *c = calloc(1, sizeof *c);
        if (c) { /* whole before the timer can see it in the slots: a deadline of 0 would cut it at once */
            c->fd = fd, c->state = C_HANDSHAKE;
            c->deadline = sr_time_mono_ms() + l->handshake_ms;
        }
        pthread_mutex_lock(&loop.lock);
        int slot = 1;
        while (slot < MAX_CONNS && loop.slots[slot]) slot++;
        int room = c && loop.open < l->max_connections && slot < MAX_CONNS;
        if (room) loop.slots[slot] = c, loop.open++;
        pthread_mutex_unlock(&loop.lock);
        sr_err_t made = SR_ERR_LIMIT;
        if (room) { /* the context SIGHUP may swap */
            pthread_mutex_lock(&server.lock);
            made = sr_tls_accept_nonblocking(server.ctx, fd, &c->tls);
            pthread_mutex_unlock(&server.lock);
        }
        if (made != SR_OK) {
            if (room) {
                pthread_mutex_lock(&loop.lock);
                loop.slots[slot] = NULL, loop.open--;
                pthread_mutex_unlock(&loop.lock);
            } else {
                sr_log_warn("connection refused: %d connections open (max_connections)", loop.open);
            }
            free(c);
            close(fd);
            continue;
        }
        c->slot = slot;
        sr_kmip_enc_init(&c->resp);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = c};
        epoll_ctl(loop.ep, EPOLL_CTL_ADD, fd, &ev); /* armed: the ClientHello wakes one thread */
    }
    arm(loop.lfd, &loop.lfd, EPOLLIN);
}

static void *worker_main(void *arg)
{
    (void)arg;
    while (!(loop.stopping && (loop.open == 0 || sr_time_mono_ms() >= loop.stop_at))) {
        struct epoll_event ev;
        if (epoll_wait(loop.ep, &ev, 1, 200) != 1 || ev.data.ptr == &loop.wake) continue;
        limits_t l;
        limits_now(&l);
        if (ev.data.ptr == &loop.lfd) {
            if (!loop.stopping) accept_all(&l);
            continue;
        }
        conn_t *c = ev.data.ptr;
        while (step(c, &l)) {}
    }
    return NULL;
}

/* Every 100 ms: what overstayed its phase is shut down (its owner closes it). */
static void *timer_main(void *arg)
{
    (void)arg;
    while (!(loop.stopping && (loop.open == 0 || sr_time_mono_ms() >= loop.stop_at))) {
        usleep(100000);
        if (reload_requested) reload_requested = 0, reload();
        uint64_t now = sr_time_mono_ms();
        pthread_mutex_lock(&loop.lock);
        for (int i = 1; i < MAX_CONNS; i++) {
            conn_t *c = loop.slots[i];
            int idle_at_stop = loop.stopping && c && (c->state == C_IDLE || c->state == C_HANDSHAKE);
            if (c && !c->expired && (now >= c->deadline || idle_at_stop)) {
                c->expired = 1;
                shutdown(c->fd, SHUT_RDWR);
            }
        }
        pthread_mutex_unlock(&loop.lock);
    }
    return NULL;
}

static sr_err_t loop_start(int lfd)
{
    loop.lfd = lfd;
    loop.ep = epoll_create1(EPOLL_CLOEXEC);
    loop.wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop.ep < 0 || loop.wake < 0) return sr_err_set_errno(SR_ERR_INTERNAL, errno, "cannot make the event loop");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &loop.wake}; /* level: wakes every thread at stop */
    epoll_ctl(loop.ep, EPOLL_CTL_ADD, loop.wake, &ev);
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK); /* accepted until none is left */
    ev = (struct epoll_event){.events = EPOLLIN | EPOLLONESHOT, .data.ptr = &loop.lfd};
    epoll_ctl(loop.ep, EPOLL_CTL_ADD, lfd, &ev);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (; loop.workers < WORKERS; loop.workers++)
        if (pthread_create(&loop.thread[loop.workers], &attr, worker_main, NULL) != 0) break;
    int timer = loop.workers && pthread_create(&loop.timer, &attr, timer_main, NULL) == 0;
    pthread_attr_destroy(&attr);
    return timer ? SR_OK : sr_err_set(SR_ERR_INTERNAL, "cannot start the connection threads");
}

/* Until SIGTERM; then no more accepts, idle connections closed, requests in
 * flight finished (up to 10 s). */
static void serve_connections(void)
{
    while (!stop_requested) usleep(100000); /* SIGTERM may land on any thread: its flag is looked at here */
    loop.stop_at = sr_time_mono_ms() + 10000;
    loop.stopping = 1;
    epoll_ctl(loop.ep, EPOLL_CTL_DEL, loop.lfd, NULL);
    uint64_t one = 1;
    if (write(loop.wake, &one, sizeof one) != sizeof one) sr_log_warn("cannot wake the connection threads");
    for (int i = 0; i < loop.workers; i++) pthread_join(loop.thread[i], NULL);
    pthread_join(loop.timer, NULL);
    if (loop.open) sr_log_warn("%d connection(s) still busy after 10 s; exiting", loop.open);
}

/* ---- leases ------------------------------------------------------------------------------------------ */

static int64_t retention_s;

typedef struct expired {
    kms_node_t *v;
    size_t n, cap;
} expired_t;

static void collect_node(void *ctx, const kms_node_t *n)
{
    expired_t *e = ctx;
    if (e->n == e->cap) {
        kms_node_t *v = realloc(e->v, (e->cap = e->cap ? 2 * e->cap : 16) * sizeof *v);
        if (!v) return;
        e->v = v;
    }
    e->v[e->n++] = *n;
}

static void node_event(const kms_node_t *n, const char *event, const char *detail)
{
    sr_event_t ev = {.component = "kms", .event = event, .subject = n->uuid, .object = n->nk, .outcome = "success",
                     .detail = detail, .source = "kmsd"};
    record(&ev);
}

static char instance_id[SR_UUID_STR_LEN + 1]; /* this kmsd among those sharing a store */

/* Keys whose Deactivation Date has passed, saved Deactivated (a request
 * would only apply the date to the key it loads): the access epoch moves, so
 * the agents drop what they cached under them, as for a revocation. */
static sr_err_t deactivate_past_dates(int64_t now)
{
    char(*uids)[KMS_UID_MAX] = NULL;
    size_t n = 0, saved = 0;
    sr_err_t rc = kms_objects_past_deactivation(server.store, now, &uids, &n);
    for (size_t i = 0; rc == SR_OK && i < n; i++) {
        kms_object_t o;
        if (kms_object_load(server.store, uids[i], &o) != SR_OK) continue;
        o.state = KMS_STATE_DEACTIVATED;
        if ((rc = kms_object_update(server.store, &o)) != SR_OK) break;
        saved++;
        sr_event_t ev = {.component = "kms", .event = "key.deactivated", .subject = "kmsd", .object = o.uid,
                         .outcome = "success", .detail = "its Deactivation Date passed", .source = "kmsd"};
        record(&ev);
    }
    free(uids);
    return rc == SR_OK && saved ? kms_access_epoch_bump(server.store) : rc;
}

/* Revokes the node key of every node whose lease (plus the grace) ran out,
 * and destroys node keys past the retention period. One write transaction:
 * kmsd instances sharing a PostgreSQL store sweep one at a time, each seeing
 * what the last one ended, so no node is ended twice. */
static void sweep(int64_t grace_ms)
{
    int64_t now_ms = sr_time_now_us() / 1000, now = now_ms / 1000;
    expired_t ex = {0}, old = {0};
    kms_store_lock(server.store);
    sr_err_t rc = kms_store_begin(server.store);
    static int64_t recorded; /* kmsd instances sharing a store: this one is alive (once a second) */
    if (rc == SR_OK && kms_store_shared(server.store) && now != recorded) {
        rc = kms_instance_seen(server.store, instance_id, now);
        recorded = now;
    }
    static int64_t deactivations; /* once a second */
    if (rc == SR_OK && now != deactivations) rc = deactivate_past_dates(now), deactivations = now;
    if (rc == SR_OK) rc = kms_node_each(server.store, "active", now_ms - grace_ms, collect_node, &ex);
    for (size_t i = 0; rc == SR_OK && i < ex.n; i++)
        rc = kms_node_end(server.store, &ex.v[i], "expired", "the lease expired: no heartbeat");
    if (rc == SR_OK) rc = kms_node_each(server.store, NULL, 0, collect_node, &old);
    for (size_t i = 0; rc == SR_OK && i < old.n; i++) {
        kms_object_t nk;
        kms_node_t *n = &old.v[i];
        if (!strcmp(n->state, "active") || !n->left || n->left + retention_s > now) continue;
        if (kms_object_load(server.store, n->nk, &nk) != SR_OK || nk.state >= KMS_STATE_DESTROYED) continue;
        nk.state = KMS_STATE_DESTROYED, nk.destroy_date = nk.last_change_date = now;
        rc = kms_object_wipe_material(server.store, nk.uid);
        if (rc == SR_OK) rc = kms_object_update(server.store, &nk);
        if (rc == SR_OK) node_event(n, "node.key_destroyed", "retention period over");
    }
    for (size_t i = 0; rc == SR_OK && i < ex.n; i++) node_event(&ex.v[i], "node.lease_expired", "node key revoked");
    if (rc == SR_OK) rc = kms_store_commit(server.store);
    if (rc != SR_OK) {
        kms_store_rollback(server.store);
        sr_log_error("lease sweep: %s", sr_err_detail());
    }
    kms_store_unlock(server.store);
    free(ex.v), free(old.v);
}

static void *sweeper_main(void *arg)
{
    int64_t grace_ms = *(int64_t *)arg;
    while (!stop_requested) {
        sweep(grace_ms);
        usleep(100000); /* a vanished node is revoked at most 0.1 s after its lease and grace */
    }
    return NULL;
}

static int64_t grace_ms, lease_ms;

/* Nodes could not renew while the KMS was down: a full lease from now before
 * any expiry — unless another kmsd sharing the store served them meanwhile
 * (it recorded itself within the last 2 s), when their leases are kept. */
static void start_leases(void)
{
    sr_uuid_t id;
    sr_uuid_generate(&id);
    sr_uuid_format(&id, instance_id);
    int64_t now_ms = sr_time_now_us() / 1000, now = now_ms / 1000;
    kms_store_lock(server.store);
    sr_err_t rc = kms_store_begin(server.store);
    int others = rc == SR_OK && kms_store_shared(server.store) ? kms_instances_alive(server.store, instance_id, now - 2) : 0;
    if (rc == SR_OK && !others) rc = kms_node_extend_leases(server.store, now_ms + lease_ms);
    if (rc == SR_OK) rc = kms_instance_seen(server.store, instance_id, now);
    if (rc == SR_OK) rc = kms_store_commit(server.store);
    if (rc != SR_OK) kms_store_rollback(server.store), sr_log_error("cannot start the leases: %s", sr_err_detail());
    else if (others) sr_log_notice("%d other kmsd serve this store: node leases kept as they are", others);
    kms_store_unlock(server.store);
}

static sr_err_t configure_enrolment(const sr_config_t *cfg, int *on_out)
{
    static kms_pki_ca_t *ca; /* for the process's life */
    int on = 0;
    *on_out = 0;
    uint64_t lease = 0, grace = 0, retention = 0;
    int64_t days = 0;
    sr_err_t rc = sr_config_get_bool(cfg, "enrolment", "enabled", &on);
    if (rc != SR_OK || !on) return rc;
    const char *cert = sr_config_get(cfg, "enrolment", "ca_cert"), *key = sr_config_get(cfg, "enrolment", "ca_key");
    if (!cert || !key) return sr_err_set(SR_ERR_CONFIG, "[enrolment] needs ca_cert and ca_key to sign node certificates");
    rc = sr_config_get_duration_ms(cfg, "enrolment", "lease", &lease);
    if (rc == SR_OK) rc = sr_config_get_duration_ms(cfg, "enrolment", "grace", &grace);
    if (rc == SR_OK) rc = sr_config_get_duration_ms(cfg, "enrolment", "retention", &retention);
    if (rc == SR_OK) rc = sr_config_get_int(cfg, "enrolment", "cert_days", &days);
    if (rc == SR_OK && (lease < 1000 || days < 1)) rc = sr_err_set(SR_ERR_CONFIG, "[enrolment] lease >= 1s, cert_days >= 1");
    if (rc == SR_OK && !ca) rc = kms_pki_ca_load(cert, key, &ca);
    if (rc != SR_OK) return rc;
    kms_enrolment_t e = {.ca = ca, .lease_ms = (int64_t)lease, .grace_ms = (int64_t)grace, .cert_days = days};
    kms_enrolment_configure(&e);
    grace_ms = e.grace_ms, lease_ms = e.lease_ms, retention_s = (int64_t)(retention / 1000);
    *on_out = 1;
    return SR_OK;
}

/* ---- start-up ------------------------------------------------------------------------------------- */

static sr_err_t open_audit(const sr_config_t *cfg)
{
    const char *sock = sr_config_get(cfg, "audit", "socket"), *log = sr_config_get(cfg, "audit", "log");
    const char *key = sr_config_get(cfg, "audit", "sign_key");
    if (sock) setenv("STRONGROOM_AUDIT_SOCKET", sock, 1);
    if (log) setenv("STRONGROOM_AUDIT_LOG", log, 1);
    if (key) setenv("STRONGROOM_AUDIT_KEY", key, 1);
    sr_audit_writer_t *w = NULL;
    return sr_audit_open_from_env(&w);
}

static int usage(FILE *f, int status)
{
    fprintf(f, "usage: kmsd --config FILE [--foreground]\n"
               "  The strongroom KMIP key server (see README, \"kmsd and kmsctl\").\n"
               "  --config FILE   kmsd.conf, as written by kmsctl init\n"
               "  --foreground    stay attached to the terminal, log to stderr\n"
               "  --version\n");
    return status;
}

static int start(const char *config_path, int foreground)
{
    sr_config_t *cfg = NULL;
    sr_keyprov_t *root = NULL;
    int lfd = -1;
    int64_t port = 0;
    server.config_path = config_path;
    sr_err_t rc = sr_config_load(config_path, schema, N_SCHEMA, &cfg);
    sr_log_level_t level = SR_LOG_INFO;
    if (rc == SR_OK) rc = sr_log_level_parse(sr_config_get(cfg, "server", "log_level"), &level);
    if (rc == SR_OK) rc = sr_log_open("kmsd", foreground ? NULL : sr_config_get(cfg, "server", "log"), level);
    if (rc == SR_OK) rc = read_limits(cfg, &server.limits);
    if (rc == SR_OK) rc = sr_config_get_int(cfg, "server", "port", &port);
    if (rc == SR_OK && (port < 1 || port > 65535)) rc = sr_err_set(SR_ERR_CONFIG, "port %lld", (long long)port);
    if (rc == SR_OK) rc = make_tls(cfg, &server.ctx);
    if (rc == SR_OK) rc = open_audit(cfg);
    const char *store = NULL;
    if (rc == SR_OK) rc = kms_store_location(sr_config_get(cfg, "store", "path"), sr_config_get(cfg, "store", "url"), &store);
    if (rc == SR_OK)
        rc = kms_root_provider(store, sr_config_get(cfg, "store", "root_key_file"),
                               sr_config_get(cfg, "store", "passphrase_file"), 0, &root);
    if (rc == SR_OK) rc = kms_store_open_encrypted(store, root, &server.store);
    pthread_t sweeper;
    int enrolling = 0, sweeping = 0;
    if (rc == SR_OK) rc = configure_enrolment(cfg, &enrolling);
    /* the system's longest listen queue: a fleet scaling out connects at once, and a dropped SYN waits 1 s */
    if (rc == SR_OK) rc = sr_tls_listen(sr_config_get(cfg, "server", "listen"), (uint16_t)port, SOMAXCONN, &lfd);
    if (rc != SR_OK) {
        fprintf(stderr, "kmsd: %s (%s)\n", sr_err_detail(), sr_err_name(rc));
        sr_config_free(cfg);
        kms_store_close(server.store);
        sr_keyprov_free(root);
        return rc == SR_ERR_CONFIG || rc == SR_ERR_INVALID_ARG ? 2 : 3;
    }
    printf("kmsd: listening on %s:%lld (KMIP 1.0-1.4, mutual TLS)\n", sr_config_get(cfg, "server", "listen"),
           (long long)port);
    fflush(stdout);
    sr_config_free(cfg);
    if (!foreground && daemon(1, 0) != 0) return fprintf(stderr, "kmsd: cannot detach: %s\n", strerror(errno)), 3;
    sr_log_notice("started%s", enrolling ? " (enrolment on: lease sweeper running)" : "");
    if (enrolling) start_leases();
    /* after daemon(): threads do not survive a fork */
    sweeping = enrolling && pthread_create(&sweeper, NULL, sweeper_main, &grace_ms) == 0;
    if (enrolling && !sweeping) sr_log_error("cannot start the lease sweeper: leases will not expire");
    if (loop_start(lfd) != SR_OK) {
        sr_log_error("%s", sr_err_detail());
        stop_requested = 1;
    }
    serve_connections();
    close(lfd);
    sr_log_notice("stopping: requests in flight finished");
    if (sweeping) pthread_join(sweeper, NULL);
    kms_store_close(server.store);
    sr_keyprov_free(root);
    sr_tls_ctx_free(server.ctx);
    sr_log_notice("stopped");
    return 0;
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    int foreground = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
        else if (!strcmp(argv[i], "--foreground")) foreground = 1;
        else if (!strcmp(argv[i], "--help")) return usage(stdout, 0);
        else if (!strcmp(argv[i], "--version")) return puts("kmsd (strongroom) " SR_VERSION_STRING), 0;
        else return fprintf(stderr, "kmsd: unknown option %s\n", argv[i]), usage(stderr, 2);
    }
    if (!config) return usage(stderr, 2);
    struct rlimit nofile; /* two descriptors per connection: raise the soft limit to the hard one */
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max)
        nofile.rlim_cur = nofile.rlim_max, setrlimit(RLIMIT_NOFILE, &nofile);
    if (sr_secure_init() != SR_OK || sr_process_harden() != SR_OK)
        return fprintf(stderr, "kmsd: %s\n", sr_err_detail()), 3;
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_reload;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return start(config, foreground);
}
