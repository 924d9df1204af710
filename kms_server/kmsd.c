/*
 * kmsd — the strongroom key server: KMIP over mutual TLS.
 *
 *   kmsd --config kmsd.conf [--foreground]
 *
 * One thread per connection, up to max_connections (a connection over the
 * cap is closed at once). A connection has handshake_timeout to finish its
 * TLS handshake, idle_timeout between requests, and message_timeout to send
 * a whole request; a request's length is checked against max_message before
 * its body is read. SIGTERM: stop accepting, let requests in flight finish,
 * exit. SIGHUP: reload the certificates and limits (a bad file keeps the old
 * ones and says why).
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
    int active;           /* connection threads */
    int fds[4096];        /* a dup of each socket, to end idle reads on SIGTERM without racing its close */
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

static void audit_connection(const char *who, const char *source, const char *outcome, const char *detail)
{
    sr_event_t ev = {.component = "kms", .event = "tls.connection", .subject = who, .outcome = outcome,
                     .detail = detail, .source = source};
    (void)sr_event_emit(&ev);
}

/* Reads one request: header, length check, body within the message deadline. */
static sr_err_t read_request(sr_tls_conn_t *conn, const limits_t *l, uint8_t **buf, size_t *len)
{
    uint8_t head[8];
    sr_tls_set_timeout(conn, (int)l->idle_ms);
    sr_err_t rc = sr_tls_read_exact(conn, head, 1); /* idle: waiting for the next request */
    uint64_t deadline = sr_time_mono_ms() + l->message_ms;
    sr_tls_set_timeout(conn, (int)l->message_ms);
    if (rc == SR_OK) rc = sr_tls_read_exact_by(conn, head + 1, 7, deadline);
    if (rc != SR_OK) return rc;
    uint32_t tag = (uint32_t)head[0] << 16 | (uint32_t)head[1] << 8 | head[2];
    uint32_t n = sr_get_be32(head + 4);
    if (tag != SR_KMIP_TAG_REQUEST_MESSAGE || head[3] != SR_KMIP_STRUCTURE)
        return sr_err_set(SR_ERR_PROTOCOL, "not a KMIP request message (tag 0x%06x type %u)", tag, head[3]);
    if (n > l->max_message - 8)
        return sr_err_set(SR_ERR_LIMIT, "request of %u bytes is over max_message (%llu)", n,
                          (unsigned long long)l->max_message);
    *buf = malloc((size_t)n + 8);
    if (!*buf) return SR_ERR_NOMEM;
    memcpy(*buf, head, 8);
    rc = sr_tls_read_exact_by(conn, *buf + 8, n, deadline);
    if (rc != SR_OK) free(*buf), *buf = NULL;
    *len = (size_t)n + 8;
    return rc;
}

/* A request we refuse to read (wrong tag, too long): one Invalid Message answer. */
static void answer_refused(sr_tls_conn_t *conn, const kms_principal_t *p)
{
    static const uint8_t garbage[8] = {0};
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    if (kms_handle(server.store, p, garbage, sizeof garbage, &e) == SR_OK && sr_tls_write_all(conn, e.buf, e.len) != SR_OK)
        sr_log_info("%s: could not send the refusal: %s", p->name, sr_err_detail());
    sr_kmip_enc_free(&e);
}

static int cert_revoked(const char *fingerprint)
{
    kms_store_lock(server.store);
    int revoked = fingerprint && kms_cert_revoked(server.store, fingerprint);
    kms_store_unlock(server.store);
    return revoked;
}

/* Per request, under one lock: the principal's role now, and whether its
 * certificate was revoked since it connected. */
static int refresh(kms_principal_t *p, const char *fingerprint)
{
    kms_store_lock(server.store);
    int revoked = fingerprint && kms_cert_revoked(server.store, fingerprint);
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

static void serve(sr_tls_conn_t *conn, kms_principal_t *p, const char *fingerprint)
{
    for (;;) {
        pthread_mutex_lock(&server.lock);
        limits_t l = server.limits;
        pthread_mutex_unlock(&server.lock);
        uint8_t *req = NULL;
        size_t len = 0;
        sr_err_t rc = read_request(conn, &l, &req, &len);
        if (rc == SR_ERR_PROTOCOL || rc == SR_ERR_LIMIT) {
            sr_log_warn("%s (%s): %s; closing", p->name, p->source, sr_err_detail());
            answer_refused(conn, p);
        }
        if (rc != SR_OK || stop_requested) {
            free(req);
            return;
        }
        if (refresh(p, fingerprint) && !p->refused[0]) { /* revoked while connected: refused from now on */
            audit_connection(p->name, p->source, "denied", "certificate revoked");
            refusal(p);
        }
        sr_kmip_enc_t e;
        sr_kmip_enc_init(&e);
        rc = kms_handle(server.store, p, req, len, &e);
        sr_secure_wipe(req, len), free(req);
        if (rc == SR_OK) rc = sr_tls_write_all(conn, e.buf, e.len);
        sr_kmip_enc_free(&e);
        if (rc != SR_OK) return;
    }
}

typedef struct conn_arg {
    int fd, slot;
} conn_arg_t;

static void *connection_main(void *arg)
{
    conn_arg_t a = *(conn_arg_t *)arg;
    free(arg);
    pthread_mutex_lock(&server.lock);
    sr_ssl_ctx_t *ctx = server.ctx;
    SSL_CTX_up_ref((SSL_CTX *)ctx);
    int handshake_ms = (int)server.limits.handshake_ms;
    pthread_mutex_unlock(&server.lock);
    sr_tls_conn_t *conn = NULL;
    /* handshake_ms for the whole handshake (a byte-at-a-time sender is cut off then); closes fd on failure */
    sr_err_t rc = sr_tls_accept(ctx, a.fd, handshake_ms, &conn);
    sr_tls_ctx_free(ctx);
    if (rc != SR_OK) {
        audit_connection("(handshake)", NULL, "failure", sr_err_detail());
    } else {
        kms_principal_t p;
        memset(&p, 0, sizeof p);
        snprintf(p.name, sizeof p.name, "%s", sr_tls_peer_cn(conn) ? sr_tls_peer_cn(conn) : "");
        snprintf(p.source, sizeof p.source, "%s", sr_tls_peer_addr(conn));
        const char *fp = sr_tls_peer_fingerprint(conn);
        if (cert_revoked(fp)) audit_connection(p.name, p.source, "denied", "certificate revoked"), refusal(&p);
        serve(conn, &p, fp); /* a revoked certificate gets its refusal as a KMIP answer, then nothing else */
        sr_tls_close(conn);
    }
    pthread_mutex_lock(&server.lock);
    close(server.fds[a.slot]);
    server.fds[a.slot] = -1;
    server.active--;
    pthread_mutex_unlock(&server.lock);
    return NULL;
}

static int take_slot(int fd)
{
    pthread_mutex_lock(&server.lock);
    int slot = -1, copy = server.active < server.limits.max_connections ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    for (int i = 0; copy >= 0 && i < (int)(sizeof server.fds / sizeof server.fds[0]) && slot < 0; i++)
        if (server.fds[i] < 0) slot = i, server.fds[i] = copy, server.active++;
    if (copy >= 0 && slot < 0) close(copy);
    pthread_mutex_unlock(&server.lock);
    return slot;
}

static void start_connection(int fd)
{
    int slot = take_slot(fd);
    if (slot < 0) { /* over the cap: closed at once, not queued */
        close(fd);
        sr_log_warn("connection refused: %d connections open (max_connections)", server.active);
        return;
    }
    conn_arg_t *a = malloc(sizeof *a);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t t;
    if (a) a->fd = fd, a->slot = slot;
    if (!a || pthread_create(&t, &attr, connection_main, a) != 0) {
        free(a);
        close(fd);
        pthread_mutex_lock(&server.lock);
        close(server.fds[slot]);
        server.fds[slot] = -1, server.active--;
        pthread_mutex_unlock(&server.lock);
    }
    pthread_attr_destroy(&attr);
}

static void accept_loop(int lfd)
{
    while (!stop_requested) {
        if (reload_requested) reload_requested = 0, reload();
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        if (poll(&pfd, 1, 200) <= 0) continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) start_connection(fd);
        else if (errno == EMFILE || errno == ENFILE) usleep(100000); /* out of descriptors: wait, don't spin */
    }
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
    (void)sr_event_emit(&ev);
}

static char instance_id[SR_UUID_STR_LEN + 1]; /* this kmsd among those sharing a store */

/* Revokes the node key of every node whose lease (plus the grace) ran out,
 * and destroys node keys past the retention period. One write transaction:
 * kmsd instances sharing a PostgreSQL store sweep one at a time, each seeing
 * what the last one ended, so no node is ended twice. */
static void sweep(int64_t grace_s)
{
    int64_t now = sr_time_now_us() / 1000000;
    expired_t ex = {0}, old = {0};
    kms_store_lock(server.store);
    sr_err_t rc = kms_store_begin(server.store);
    if (rc == SR_OK) rc = kms_instance_seen(server.store, instance_id, now);
    if (rc == SR_OK) rc = kms_node_each(server.store, "active", now - grace_s, collect_node, &ex);
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
    int64_t grace_s = *(int64_t *)arg;
    while (!stop_requested) {
        sweep(grace_s);
        usleep(200000); /* a vanished node is revoked at most 0.2 s after its lease and grace */
    }
    return NULL;
}

static int64_t grace_s, lease_s;

/* Nodes could not renew while the KMS was down: a full lease from now before
 * any expiry — unless another kmsd sharing the store served them meanwhile
 * (it recorded itself within the last 2 s), when their leases are kept. */
static void start_leases(void)
{
    sr_uuid_t id;
    sr_uuid_generate(&id);
    sr_uuid_format(&id, instance_id);
    int64_t now = sr_time_now_us() / 1000000;
    kms_store_lock(server.store);
    sr_err_t rc = kms_store_begin(server.store);
    int others = rc == SR_OK && kms_store_shared(server.store) ? kms_instances_alive(server.store, instance_id, now - 2) : 0;
    if (rc == SR_OK && !others) rc = kms_node_extend_leases(server.store, now + lease_s);
    if (rc == SR_OK) rc = kms_instance_seen(server.store, instance_id, now);
    if (rc == SR_OK) rc = kms_store_commit(server.store);
    if (rc != SR_OK) kms_store_rollback(server.store), sr_log_error("cannot start the leases: %s", sr_err_detail());
    else if (others) sr_log_notice("%d other kmsd serve this store: node leases kept as they are", others);
    kms_store_unlock(server.store);
}

static sr_err_t configure_enrolment(const sr_config_t *cfg, int *on_out)
{
    static char ca_cert[4096], ca_key[4096];
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
    if (rc != SR_OK) return rc;
    snprintf(ca_cert, sizeof ca_cert, "%s", cert), snprintf(ca_key, sizeof ca_key, "%s", key);
    kms_enrolment_t e = {.ca_cert = ca_cert, .ca_key = ca_key, .lease_s = (int64_t)(lease / 1000),
                         .grace_s = (int64_t)(grace / 1000), .cert_days = days};
    kms_enrolment_configure(&e);
    grace_s = e.grace_s, lease_s = e.lease_s, retention_s = (int64_t)(retention / 1000);
    *on_out = 1;
    return SR_OK;
}

/* Ends idle reads, then waits (up to 10 s) for requests in flight. */
static void drain(void)
{
    pthread_mutex_lock(&server.lock);
    for (size_t i = 0; i < sizeof server.fds / sizeof server.fds[0]; i++)
        if (server.fds[i] >= 0) shutdown(server.fds[i], SHUT_RD);
    pthread_mutex_unlock(&server.lock);
    for (int i = 0; i < 100; i++) {
        pthread_mutex_lock(&server.lock);
        int active = server.active;
        pthread_mutex_unlock(&server.lock);
        if (!active) return;
        usleep(100000);
    }
    sr_log_warn("%d connection(s) still busy after 10 s; exiting", server.active);
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
    for (size_t i = 0; i < sizeof server.fds / sizeof server.fds[0]; i++) server.fds[i] = -1;
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
    if (rc == SR_OK) rc = sr_tls_listen(sr_config_get(cfg, "server", "listen"), (uint16_t)port, 128, &lfd);
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
    sweeping = enrolling && pthread_create(&sweeper, NULL, sweeper_main, &grace_s) == 0;
    if (enrolling && !sweeping) sr_log_error("cannot start the lease sweeper: leases will not expire");
    accept_loop(lfd);
    close(lfd);
    sr_log_notice("stopping: finishing requests in flight");
    drain();
    if (sweeping) pthread_join(sweeper, NULL);
    pthread_mutex_lock(&server.lock);
    int busy = server.active;
    pthread_mutex_unlock(&server.lock);
    if (!busy) {
        kms_store_close(server.store);
        sr_keyprov_free(root);
        sr_tls_ctx_free(server.ctx);
    }
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
