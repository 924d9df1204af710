/*
 * collect.c — store-and-forward of audit records to a collector.
 *
 * Wire protocol, over mutual TLS, frames of: type (1 byte) | length (u32 BE) | payload
 *   forwarder -> collector   'H' hello (empty; the source is the client certificate's CN)
 *   collector -> forwarder   'L' "<last seq> <last hash hex>" it holds for this source (0 and zeros: none)
 *   forwarder -> collector   'R' one record line, as written (no newline), seq > last
 *   forwarder -> collector   'S' sync request
 *   collector -> forwarder   'A' "<seq>": everything up to seq is fsync'd
 *   collector -> forwarder   'E' "<reason>": a record was refused; the connection closes
 *
 * The collector verifies each source's chain on receipt (hash, seq, prev and,
 * with a verify key, checkpoint signatures) and appends the line verbatim to
 * DIR/<certificate SHA-256>.log, so the stored file verifies with `tde-audit
 * verify` like the original. The fingerprint, not the CN, names the store:
 * two certificates can never share one (CNs "db1 prod" and "db1_prod" did);
 * DIR/sources.tsv lists "fingerprint <TAB> CN <TAB> file" for people. A record with a seq it already holds is skipped: resending
 * after a lost acknowledgement duplicates nothing. At start the collector
 * re-verifies each source file, cutting a torn last line.
 *
 * The forwarder keeps no state of its own: the collector's last seq says
 * where to resume, and the local log (with its rotated files) is the spool.
 * It retries every failure with back-off (0.2-5 s), a refused record too (the
 * collector's disk may be full), except chains that diverge (the same
 * certificate on two hosts), which only an operator can settle.
 */
#include "audit_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FRAME_MAX (SR_AUDIT_LINE_MAX + 1024)
#define SYNC_EVERY 500
#define HANDSHAKE_MS 10000
#define IDLE_MS 10000  /* between frames (a forwarder syncs every poll, 0.2 s by default) */
#define FRAME_MS 10000 /* for the rest of a frame once its first byte came: no dribbling */

/* ---- framing -------------------------------------------------------------------------- */

static sr_err_t frame_send(sr_tls_conn_t *c, char type, const void *payload, size_t len)
{
    uint8_t head[5] = {(uint8_t)type};
    sr_put_be32(head + 1, (uint32_t)len);
    sr_err_t rc = sr_tls_write_all(c, head, sizeof head);
    return rc == SR_OK && len ? sr_tls_write_all(c, payload, len) : rc;
}

/* Reads one frame into buf (NUL-terminated); *type and *len out. The
 * connection may be idle up to its timeout before a frame; once the first
 * byte came the whole frame must within FRAME_MS, so an authenticated peer
 * that sends a byte at a time cannot hold a slot (or a source) for ever. */
static sr_err_t frame_recv(sr_tls_conn_t *c, char *type, char *buf, size_t cap, size_t *len)
{
    uint8_t head[5];
    sr_err_t rc = sr_tls_read_exact(c, head, 1);
    uint64_t deadline = sr_time_mono_ms() + FRAME_MS;
    if (rc == SR_OK) rc = sr_tls_read_exact_by(c, head + 1, sizeof head - 1, deadline);
    if (rc != SR_OK) return rc;
    size_t n = sr_get_be32(head + 1);
    if (n >= cap) return sr_err_set(SR_ERR_PROTOCOL, "audit frame of %zu bytes is too long", n);
    if (n && (rc = sr_tls_read_exact_by(c, buf, n, deadline)) != SR_OK) return rc;
    buf[n] = '\0';
    *type = (char)head[0];
    *len = n;
    return SR_OK;
}

/* ---- collector ---------------------------------------------------------------------------- */

typedef struct source {
    struct source *next;
    char name[128];        /* the certificate's CN, for messages */
    char fingerprint[65];  /* the certificate's SHA-256: the store's name */
    int fd;
    off_t size;           /* bytes of whole records in the file */
    uint8_t key[SR_AUDIT_SIGN_PUBLIC_BYTES]; /* what its checkpoints are verified with */
    int has_key;
    int loaded;           /* the file and chain are in step (a failed reload is retried) */
    sr_audit_chain_t chain;
    pthread_mutex_t lock; /* one connection of a source at a time appends */
} source_t;

typedef struct collector {
    const sr_audit_collector_options_t *o;
    pthread_mutex_t lock;
    source_t *sources;
    int active; /* connections being served (under lock) */
} collector_t;

/* A new source: one line in DIR/sources.tsv (control characters of the CN
 * shown as '?', so the index stays one line per certificate). */
static void source_index(collector_t *col, const source_t *s)
{
    char path[4096], cn[sizeof s->name];
    snprintf(path, sizeof path, "%s/sources.tsv", col->o->dir);
    snprintf(cn, sizeof cn, "%s", s->name);
    for (char *p = cn; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    FILE *f = fopen(path, "a");
    if (!f || fprintf(f, "%s\t%s\t%s.log\n", s->fingerprint, cn, s->fingerprint) < 0 || fclose(f) != 0)
        sr_log(SR_LOG_WARN, "audit collector: cannot add %s to %s", s->name, path);
}

/* The key a source's checkpoints must be signed with: its own, registered
 * in the store as DIR/<fingerprint>.pub (tde-audit register), else the
 * collector's --key; with neither, the chain alone is checked, unless keys
 * are required. */
static sr_err_t source_key(collector_t *col, const char *fingerprint, const char *cn,
                           uint8_t key[SR_AUDIT_SIGN_PUBLIC_BYTES], int *has_key)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.pub", col->o->dir, fingerprint);
    *has_key = 1;
    if (access(path, F_OK) == 0) return sr_audit_verify_key_load(path, key);
    *has_key = col->o->verify_key != NULL;
    if (*has_key) memcpy(key, col->o->verify_key, SR_AUDIT_SIGN_PUBLIC_BYTES);
    else if (col->o->require_key)
        return sr_err_set(SR_ERR_AUTH, "no verify key registered for the certificate of %s (%s): "
                          "tde-audit register --dir DIR --cert CERT --key PUB", cn, fingerprint);
    return SR_OK;
}

/* Opens DIR/<fingerprint>.log, cuts a torn tail, and replays it into the
 * chain under the source's key. */
static sr_err_t source_load(collector_t *col, source_t *s)
{
    char path[4096];
    sr_err_t rc = source_key(col, s->fingerprint, s->name, s->key, &s->has_key);
    if (rc != SR_OK) return rc;
    snprintf(path, sizeof path, "%s/%s.log", col->o->dir, s->fingerprint);
    if (access(path, F_OK) != 0) source_index(col, s);
    s->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (s->fd < 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot open %s", path);
    struct stat st;
    off_t size = 0, cut = 0;
    if (fstat(s->fd, &st) != 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot stat %s", path);
    size = st.st_size;
    rc = audit_cut_torn_tail(s->fd, path, &size, &cut);
    if (rc != SR_OK) return rc;
    if (cut) sr_log(SR_LOG_WARN, "audit collector: %s: cut %lld bytes of a torn last record", path, (long long)cut);
    s->size = size;
    sr_audit_chain_init(&s->chain, s->has_key ? s->key : NULL);
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    while (rc == SR_OK && f && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] == '\n') line[--n] = '\0';
        rc = sr_audit_chain_feed(&s->chain, line, (size_t)n, NULL);
        if (rc != SR_OK) sr_err_set(rc, "%s:%zu: %s (the stored chain is damaged: fix or move the file)", path, lineno,
                                    sr_err_detail());
    }
    free(line);
    if (f) fclose(f);
    return rc;
}

static sr_err_t source_get(collector_t *col, const char *fingerprint, const char *cn, source_t **out)
{
    pthread_mutex_lock(&col->lock);
    source_t *s = col->sources;
    while (s && strcmp(s->fingerprint, fingerprint) != 0) s = s->next;
    sr_err_t rc = SR_OK;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) rc = sr_err_set(SR_ERR_NOMEM, "audit source");
        else {
            snprintf(s->name, sizeof s->name, "%s", cn);
            snprintf(s->fingerprint, sizeof s->fingerprint, "%s", fingerprint);
            pthread_mutex_init(&s->lock, NULL);
            s->fd = -1;
            rc = source_load(col, s);
            if (rc == SR_OK) s->loaded = 1, s->next = col->sources, col->sources = s;
            else {
                if (s->fd >= 0) close(s->fd);
                free(s);
                s = NULL;
            }
        }
    }
    pthread_mutex_unlock(&col->lock);
    if (rc == SR_OK) *out = s;
    return rc;
}

/* A key registered (or replaced) while the collector runs applies from the
 * source's next connection: the stored chain is verified again under it. */
static sr_err_t source_refresh_key(collector_t *col, source_t *s)
{
    uint8_t key[SR_AUDIT_SIGN_PUBLIC_BYTES];
    int has_key = 0;
    sr_err_t rc = source_key(col, s->fingerprint, s->name, key, &has_key);
    if (rc != SR_OK) return rc;
    if (s->loaded && has_key == s->has_key && (!has_key || memcmp(key, s->key, sizeof key) == 0)) return SR_OK;
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    rc = source_load(col, s);
    s->loaded = rc == SR_OK;
    return rc;
}

static sr_err_t send_last(sr_tls_conn_t *c, const source_t *s)
{
    char msg[128], hex[2 * SR_AUDIT_HASH_BYTES + 1];
    sr_hex_encode(s->chain.last_hash, SR_AUDIT_HASH_BYTES, hex);
    int n = snprintf(msg, sizeof msg, "%llu %s", (unsigned long long)s->chain.last_seq, hex);
    return frame_send(c, 'L', msg, (size_t)n);
}

/* One record: skip what we hold, verify and append the rest. The chain
 * moves on only once the whole line is in the file: a short write (a full
 * disk) is cut back and the record refused, so the forwarder sends it again
 * when there is room, and the stored copy never holds a torn line. */
static sr_err_t take_record(source_t *s, char *line, size_t len, char *copy)
{
    unsigned long long seq = 0;
    if (sscanf(line, "{\"seq\":%llu", &seq) == 1 && seq <= s->chain.last_seq) return SR_OK; /* a resend */
    memcpy(copy, line, len);
    sr_audit_chain_t next = s->chain;
    sr_err_t rc = sr_audit_chain_feed(&next, line, len, NULL);
    if (rc != SR_OK) return rc;
    copy[len] = '\n';
    errno = 0;
    ssize_t w = write(s->fd, copy, len + 1);
    if (w != (ssize_t)(len + 1)) {
        int err = errno ? errno : ENOSPC; /* a short write: the rest did not fit */
        if (w > 0 && ftruncate(s->fd, s->size) != 0)
            sr_log(SR_LOG_ERROR, "audit collector: %s: cannot cut a partial record back: %s", s->name, strerror(errno));
        return sr_err_set_errno(err == ENOSPC || err == EFBIG || err == EDQUOT ? SR_ERR_DISK_FULL : SR_ERR_IO, err,
                                "cannot append record %llu to the collected log of %s (it will be sent again)", seq,
                                s->name);
    }
    s->chain = next;
    s->size += (off_t)(len + 1);
    return SR_OK;
}

static void serve_source(collector_t *col, sr_tls_conn_t *c, source_t *s)
{
    char *buf = malloc(FRAME_MAX), *copy = malloc(FRAME_MAX + 1);
    char type = 0;
    size_t len = 0;
    sr_err_t rc = buf && copy ? send_last(c, s) : SR_ERR_NOMEM;
    while (rc == SR_OK && (rc = frame_recv(c, &type, buf, FRAME_MAX, &len)) == SR_OK) {
        if (type == 'R') {
            rc = take_record(s, buf, len, copy);
            if (rc != SR_OK) {
                char why[600];
                snprintf(why, sizeof why, "record refused: %s", sr_err_detail());
                sr_log(SR_LOG_WARN, "audit collector: source %s: %s", s->name, why);
                sr_event_emit(&(sr_event_t){.component = "audit", .event = "collect.refused", .subject = s->name,
                                            .outcome = "failure", .source = sr_tls_peer_addr(c), .detail = why});
                (void)frame_send(c, 'E', why, strlen(why));
            }
        } else if (type == 'S') {
            char ack[32];
            int n = snprintf(ack, sizeof ack, "%llu", (unsigned long long)s->chain.last_seq);
            rc = fdatasync(s->fd) == 0 ? frame_send(c, 'A', ack, (size_t)n)
                                       : sr_err_set_errno(SR_ERR_IO, errno, "cannot sync the log of %s", s->name);
        } else {
            rc = sr_err_set(SR_ERR_PROTOCOL, "unexpected audit frame '%c'", type);
        }
    }
    (void)col;
    free(buf), free(copy);
}

typedef struct conn_arg {
    collector_t *col;
    sr_ssl_ctx_t *ctx;
    int fd;
    sr_tls_conn_t *conn;
} conn_arg_t;

/* One connection, in its own thread: the handshake, then the source's records. */
static void serve_connection(conn_arg_t *a);

static void *connection(void *p)
{
    conn_arg_t *a = p;
    if (sr_tls_accept(a->ctx, a->fd, HANDSHAKE_MS, &a->conn) == SR_OK) {
        sr_tls_set_timeout(a->conn, IDLE_MS);
        serve_connection(a);
    } else {
        sr_log(SR_LOG_WARN, "audit collector: %s", sr_err_detail()); /* a refused or failed handshake */
    }
    pthread_mutex_lock(&a->col->lock); /* the slot is free again, whatever happened */
    a->col->active--;
    pthread_mutex_unlock(&a->col->lock);
    free(a);
    return NULL;
}

static void serve_connection(conn_arg_t *a)
{
    char buf[64], type = 0;
    size_t len = 0;
    source_t *s = NULL;
    const char *cn = sr_tls_peer_cn(a->conn), *fingerprint = sr_tls_peer_fingerprint(a->conn);
    if (frame_recv(a->conn, &type, buf, sizeof buf, &len) == SR_OK && type == 'H' && fingerprint &&
        source_get(a->col, fingerprint, cn ? cn : "(no CN)", &s) == SR_OK) {
        pthread_mutex_lock(&s->lock);
        if (source_refresh_key(a->col, s) == SR_OK) {
            serve_source(a->col, a->conn, s);
            fdatasync(s->fd);
        } else {
            char why[600];
            snprintf(why, sizeof why, "cannot take records: %s", sr_err_detail());
            (void)frame_send(a->conn, 'E', why, strlen(why));
        }
        pthread_mutex_unlock(&s->lock);
    } else if (type == 'H') {
        char why[600];
        snprintf(why, sizeof why, "cannot take records: %s", sr_err_detail());
        (void)frame_send(a->conn, 'E', why, strlen(why));
    }
    sr_tls_close(a->conn);
}

/* Whether another connection may be taken: at the cap, or out of
 * descriptors, the listener waits (connections queue in the backlog)
 * instead of accepting and failing in a loop. */
static int collector_has_room(collector_t *col, int max)
{
    pthread_mutex_lock(&col->lock);
    int room = col->active < max;
    if (room) col->active++;
    pthread_mutex_unlock(&col->lock);
    return room;
}

static void collector_free(collector_t *col)
{
    for (source_t *s = col->sources, *next; s; s = next) {
        next = s->next;
        if (s->fd >= 0) close(s->fd);
        pthread_mutex_destroy(&s->lock);
        free(s);
    }
    pthread_mutex_destroy(&col->lock);
    free(col);
}

/* Takes one connection into its own thread (the slot counted already). */
static void collector_accept(collector_t *col, sr_ssl_ctx_t *ctx, int lfd, time_t *warned)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    conn_arg_t *a = fd >= 0 ? calloc(1, sizeof *a) : NULL;
    pthread_t th;
    if (a) a->col = col, a->ctx = ctx, a->fd = fd;
    if (a && pthread_create(&th, NULL, connection, a) == 0) {
        pthread_detach(th);
        return;
    }
    int err = fd < 0 ? errno : EAGAIN;
    if (fd >= 0) close(fd);
    free(a);
    pthread_mutex_lock(&col->lock);
    col->active--;
    pthread_mutex_unlock(&col->lock);
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == EAGAIN) {
        if (time(NULL) - *warned >= 10)
            *warned = time(NULL), sr_log(SR_LOG_WARN, "audit collector: cannot take a connection (%s): waiting "
                                         "for others to end", strerror(err));
        poll(NULL, 0, 100); /* the connection stays queued: do not spin on it */
    }
}

sr_err_t sr_audit_collect(const sr_audit_collector_options_t *o, volatile int *stop)
{
    if (mkdir(o->dir, 0700) != 0 && errno != EEXIST) return sr_err_set_errno(SR_ERR_IO, errno, "cannot create %s", o->dir);
    sr_tls_options_t tls = o->tls;
    tls.require_client_cert = 1; /* the source is the client certificate */
    sr_ssl_ctx_t *ctx = NULL;
    int lfd = -1;
    /* On the heap: connection threads use it until they end, which can be
     * after the accept loop stops. */
    collector_t *col = calloc(1, sizeof *col);
    sr_err_t rc = col ? sr_tls_server_ctx_new(&tls, &ctx) : sr_err_set(SR_ERR_NOMEM, "audit collector");
    if (rc == SR_OK) rc = sr_tls_listen(o->host, o->port, 64, &lfd);
    if (rc != SR_OK) {
        sr_tls_ctx_free(ctx);
        free(col);
        return rc;
    }
    col->o = o;
    pthread_mutex_init(&col->lock, NULL);
    sr_log(SR_LOG_NOTICE, "audit collector listening on %s:%u, storing in %s", o->host, sr_tls_listener_port(lfd), o->dir);
    int max = o->max_connections > 0 ? o->max_connections : SR_AUDIT_COLLECT_MAX_CONNECTIONS;
    time_t warned = 0;
    while (!*stop) {
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        if (poll(&pfd, 1, 500) <= 0) continue; /* look at *stop twice a second */
        if (collector_has_room(col, max)) collector_accept(col, ctx, lfd, &warned);
        else poll(NULL, 0, 50); /* at the cap: they wait in the backlog */
    }
    close(lfd);
    /* Let the connections being served end (every read times out in 10 s);
     * the state is freed only if they all did, never under them. */
    int left = 1;
    for (int waited = 0; waited < 1200 && left; waited++) {
        pthread_mutex_lock(&col->lock);
        left = col->active;
        pthread_mutex_unlock(&col->lock);
        if (left) poll(NULL, 0, 10);
    }
    if (!left) {
        collector_free(col);
        sr_tls_ctx_free(ctx);
    }
    return SR_OK;
}

/* ---- forwarder ------------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The rotated files PATH.<12 digits>, oldest first, then PATH. */
static size_t log_files(const char *log, char ***out)
{
    char dir[4096], base[1024];
    const char *slash = strrchr(log, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - log) : 1, slash ? log : ".");
    snprintf(base, sizeof base, "%s.", slash ? slash + 1 : log);
    size_t n = 0, cap = 16;
    char **files = malloc(cap * sizeof *files);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && files && (e = readdir(d));) {
        size_t bl = strlen(base), el = strlen(e->d_name);
        if (el != bl + 12 || strncmp(e->d_name, base, bl) != 0 || strspn(e->d_name + bl, "0123456789") != 12) continue;
        if (n + 2 >= cap) files = realloc(files, (cap *= 2) * sizeof *files);
        char path[4096 + 1100];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        files[n++] = strdup(path);
    }
    if (d) closedir(d);
    if (!files) return 0;
    qsort(files, n, sizeof *files, cmp_str);
    files[n++] = strdup(log);
    *out = files;
    return n;
}

typedef struct fwd {
    const sr_audit_forwarder_options_t *o;
    sr_ssl_ctx_t *ctx;
    sr_tls_conn_t *conn;
    uint64_t acked, sent;
    uint8_t collector_hash[SR_AUDIT_HASH_BYTES];
    int junction_checked;
    ino_t live_ino; /* where the last round stopped in the live file */
    off_t live_off;
} fwd_t;

static sr_err_t wait_ack(fwd_t *f)
{
    char buf[FRAME_MAX], type = 0;
    size_t len = 0;
    sr_err_t rc = frame_send(f->conn, 'S', NULL, 0);
    if (rc == SR_OK) rc = frame_recv(f->conn, &type, buf, sizeof buf, &len);
    if (rc != SR_OK) return rc;
    if (type == 'E') return sr_err_set(SR_ERR_AUDIT_CHAIN, "collector refused a record: %s", buf);
    if (type != 'A') return sr_err_set(SR_ERR_PROTOCOL, "collector sent '%c', not an acknowledgement", type);
    f->acked = strtoull(buf, NULL, 10);
    return SR_OK;
}

static sr_err_t hello(fwd_t *f)
{
    sr_err_t rc = sr_tls_connect(f->ctx, f->o->host, f->o->port, f->o->verify_name ? f->o->verify_name : f->o->host,
                                 10000, &f->conn);
    char buf[256], type = 0, hex[2 * SR_AUDIT_HASH_BYTES + 1] = "";
    size_t len = 0;
    unsigned long long last = 0;
    if (rc == SR_OK) rc = frame_send(f->conn, 'H', NULL, 0);
    if (rc == SR_OK) rc = frame_recv(f->conn, &type, buf, sizeof buf, &len);
    if (rc == SR_OK && type == 'E') rc = sr_err_set(SR_ERR_AUDIT_CHAIN, "collector refused us: %s", buf);
    else if (rc == SR_OK && (type != 'L' || sscanf(buf, "%llu %64s", &last, hex) != 2 ||
                             sr_hex_decode(hex, f->collector_hash, SR_AUDIT_HASH_BYTES) != SR_OK))
        rc = sr_err_set(SR_ERR_PROTOCOL, "collector greeting is malformed");
    if (rc == SR_OK) f->acked = f->sent = last, f->junction_checked = last == 0, f->live_ino = 0, f->live_off = 0;
    return rc;
}

/* The collector's last record must be ours, or the chains diverge. */
static sr_err_t check_junction(const fwd_t *f, const char *line, unsigned long long seq)
{
    const char *h = strstr(line, AUDIT_HASH_FIELD);
    char hex[2 * SR_AUDIT_HASH_BYTES + 1];
    sr_hex_encode(f->collector_hash, SR_AUDIT_HASH_BYTES, hex);
    if (h && strncmp(h + strlen(AUDIT_HASH_FIELD), hex, 2 * SR_AUDIT_HASH_BYTES) == 0) return SR_OK;
    return sr_err_set(SR_ERR_AUDIT_CHAIN, "the collector's record %llu differs from the local log's: the chains "
                      "diverge (another host using the same certificate?)", seq);
}

/* Sends the records of one file after f->sent, from byte `from`; returns
 * where the last complete line ended. */
static sr_err_t send_file(fwd_t *f, const char *path, off_t from, off_t *end, size_t *since_sync)
{
    FILE *fp = fopen(path, "r");
    if (!fp) return SR_OK; /* rotated away between the listing and now: its records are in the next file */
    if (from) fseeko(fp, from, SEEK_SET);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    off_t pos = from;
    sr_err_t rc = SR_OK;
    while (rc == SR_OK && (n = getline(&line, &cap, fp)) > 0) {
        if (line[n - 1] != '\n') break; /* still being written: next round */
        pos += n;
        unsigned long long seq = 0;
        if (sscanf(line, "{\"seq\":%llu", &seq) != 1) continue; /* verify reports it; the collector would refuse it */
        if (seq <= f->sent) {
            if (seq == f->sent && seq == f->acked && !f->junction_checked)
                rc = check_junction(f, line, seq), f->junction_checked = 1;
            continue;
        }
        rc = frame_send(f->conn, 'R', line, (size_t)n - 1);
        if (rc == SR_OK) f->sent = seq;
        if (rc == SR_OK && ++*since_sync == SYNC_EVERY) rc = wait_ack(f), *since_sync = 0;
    }
    free(line);
    fclose(fp);
    *end = pos;
    return rc;
}

/* Sends everything after f->sent: from where the last round stopped in the
 * live file, or (first round, after a reconnect or a rotation) from the
 * oldest rotated file. */
static sr_err_t send_new(fwd_t *f)
{
    struct stat st;
    if (stat(f->o->log, &st) != 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot stat %s", f->o->log);
    size_t since_sync = 0;
    sr_err_t rc = SR_OK;
    if (f->live_ino == st.st_ino && f->live_off) {
        rc = send_file(f, f->o->log, f->live_off, &f->live_off, &since_sync);
    } else {
        char **files = NULL;
        size_t nfiles = log_files(f->o->log, &files);
        if (!nfiles) return sr_err_set(SR_ERR_NOMEM, "log file list");
        off_t end = 0;
        for (size_t i = 0; rc == SR_OK && i < nfiles; i++) rc = send_file(f, files[i], 0, &end, &since_sync);
        for (size_t i = 0; i < nfiles; i++) free(files[i]);
        free(files);
        f->live_ino = st.st_ino, f->live_off = end;
    }
    return rc == SR_OK ? wait_ack(f) : rc;
}

sr_err_t sr_audit_forward(const sr_audit_forwarder_options_t *o, volatile int *stop)
{
    fwd_t f = {.o = o};
    sr_err_t rc = sr_tls_client_ctx_new(&o->tls, &f.ctx);
    if (rc != SR_OK) return rc;
    uint64_t backoff = 200, poll_ms = o->poll_ms ? o->poll_ms : 200;
    while (!*stop) {
        if (!f.conn) rc = hello(&f);
        if (rc == SR_OK) rc = send_new(&f);
        if (o->once && rc == SR_OK) break;
        if (rc == SR_ERR_AUDIT_CHAIN && strstr(sr_err_detail(), "diverge")) break; /* the operator must act */
        if (rc != SR_OK) {
            if (o->once) break;
            sr_log(SR_LOG_WARN, "audit forwarder: %s; retrying in %llu ms", sr_err_detail(), (unsigned long long)backoff);
            sr_tls_close(f.conn), f.conn = NULL;
            usleep((useconds_t)backoff * 1000);
            backoff = backoff < 5000 ? backoff * 2 : 5000;
            continue;
        }
        backoff = 200;
        usleep((useconds_t)poll_ms * 1000);
    }
    sr_tls_close(f.conn);
    sr_tls_ctx_free(f.ctx);
    return *stop && !o->once ? SR_OK : rc;
}
