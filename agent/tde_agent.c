/*
 * tde-agent — one per database node: joins the KMS with a one-time token,
 * keeps its lease with heartbeats, serves the local engines' data keys over
 * a Unix socket, and leaves on SIGTERM (the scale-in path).
 *
 *   tde-agent run --config agent.conf       (stays in the foreground: systemd, a container)
 *   tde-agent status --config agent.conf [--json]
 *
 * Enrolment (first start): an EC P-256 key and a certificate request made
 * here (the private key never leaves the node), the join token from
 * token_file or $STRONGROOM_JOIN_TOKEN, KMIP vendor operation Enrol over TLS
 * without a client certificate -> node UUID, node key NK (UUID-tagged,
 * Active, in kmsd), a client certificate for CN=<node UUID>. Kept in
 * state_dir (0700): node.key (0600), node.pem, kms.conf, then node.conf last
 * (its presence means enrolled). Later starts reuse it. A node whose
 * membership ended (left, lease expired, revoked) must enrol again with a new
 * token: it gets a new UUID.
 *
 * Key service: each request's peer (SO_PEERCRED: uid, pid, executable) is
 * checked against the access policy (account = the user name, source
 * `local`, service `tde-key`) when one is configured; keys come from kmsd
 * (the KMS provider, with the node's certificate: the master key must be
 * granted to the node or its group) and are cached in locked memory for
 * cache_ttl, so open tablespaces and new opens keep working through a short
 * KMS outage. Every decision is an audit event (component "agent").
 */
#include "access_ctl.h"
#include "audit.h"
#include "keymgr.h"
#include "kmip.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>


static const sr_config_key_t schema[] = {
    {"agent", "state_dir", SR_CONFIG_PATH, NULL, 1},
    {"agent", "socket", SR_CONFIG_PATH, NULL, 1},
    {"agent", "name", SR_CONFIG_STRING, NULL, 0},
    {"agent", "token_file", SR_CONFIG_PATH, NULL, 0},
    {"agent", "heartbeat", SR_CONFIG_DURATION, "10s", 0},
    {"agent", "cache_ttl", SR_CONFIG_DURATION, "300s", 0},
    {"agent", "master_key", SR_CONFIG_STRING, NULL, 1},
    {"agent", "policy", SR_CONFIG_PATH, NULL, 0},
    {"agent", "policy_push", SR_CONFIG_BOOL, "false", 0},
    {"agent", "disk_cache", SR_CONFIG_BOOL, "false", 0},
    {"agent", "disk_cache_ttl", SR_CONFIG_DURATION, "1h", 0},
    {"audit", "socket", SR_CONFIG_PATH, NULL, 0},
    {"audit", "log", SR_CONFIG_PATH, NULL, 0},
    {"audit", "sign_key", SR_CONFIG_PATH, NULL, 0},
    {"kms", "servers", SR_CONFIG_STRING, NULL, 1},
    {"kms", "server_name", SR_CONFIG_STRING, "localhost", 0},
    {"kms", "ca", SR_CONFIG_PATH, NULL, 1},
};

static struct {
    sr_config_t *cfg;
    char state[4096], node_uuid[64], nk[128];
    sr_keyprov_t *kms;
    sr_keycache_t *cache;
    uint64_t cache_ttl_ms, heartbeat_ms;
    sr_acl_t *policy;            /* NULL: none configured (or, with policy_push, none received yet) */
    int policy_push;             /* install what `kmsctl policy push` stored in the KMS at the policy path */
    int64_t policy_version;      /* the pushed version in force (0: a local file) */
    int64_t policy_rejected;     /* the last pushed version that did not compile here */
    pthread_mutex_t lock;
    int revoked;
    char revoked_why[256];
    int64_t last_heartbeat_ok, lease_s;
    sr_kmip_client_t *node_client; /* the node's connection to the KMS, kept between calls: one thread at a time
                                      uses it (at start, then the heartbeat thread, then leaving after it ended) */
} agent = {.lock = PTHREAD_MUTEX_INITIALIZER};

static volatile sig_atomic_t stop_requested;
static void on_stop(int sig) { (void)sig, stop_requested = 1; }

static void event(const char *name, const char *subject, const char *object, const char *outcome, const char *detail)
{
    sr_event_t ev = {.component = "agent", .event = name, .subject = subject, .object = object, .outcome = outcome,
                     .detail = detail, .source = "local"};
    (void)sr_event_emit(&ev);
}

static void state_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", agent.state, name); }

/* ---- talking to kmsd ----------------------------------------------------------------------------- */

/* Server i of [kms] servers ("host:port, host:port"); 0, or -1 past the end. */
static int kms_server_at(int i, char *host, size_t cap, uint16_t *port)
{
    const char *p = sr_config_get(agent.cfg, "kms", "servers");
    for (int k = 0; *p; k++) {
        p += strspn(p, ", ");
        size_t n = strcspn(p, ", ");
        char one[256];
        snprintf(one, sizeof one, "%.*s", (int)n, p);
        if (k == i) return n && sr_kmip_server_parse(one, host, cap, port) == SR_OK ? 0 : -1;
        p += n;
    }
    return -1;
}

/* Whether another server may answer: this one could not be reached (a
 * certificate refused as revoked is an answer, the same from every kmsd). */
static int kms_unreachable(sr_err_t rc)
{
    if (rc == SR_ERR_TLS) return !strstr(sr_err_detail(), "revoked");
    return rc == SR_ERR_NETWORK || rc == SR_ERR_CLOSED || rc == SR_ERR_TIMEOUT || rc == SR_ERR_IO;
}

typedef sr_err_t (*kms_fn)(sr_kmip_client_t *c, void *arg);

/* Runs fn with a client of the server that answered last, as the node
 * (cert) or anonymously (NULL), moving on through [kms] servers while one
 * cannot be reached: kmsd instances sharing a store are interchangeable.
 * keep: a client kept between calls (its TLS connection with it: a
 * heartbeat costs a request, not a handshake), tried first; a kept
 * connection the server has since closed (kmsd restarted, idle_timeout) is
 * replaced, and fn runs again on the new one, so fn must be safe to repeat
 * (heartbeat, policy, leave, get). */
static sr_err_t kms_with_failover(const char *cert, const char *key, kms_fn fn, void *arg, sr_kmip_client_t **keep)
{
    if (keep && *keep) {
        sr_err_t rc = fn(*keep, arg);
        if (!kms_unreachable(rc)) return rc;
        sr_kmip_client_free(*keep), *keep = NULL;
    }
    static _Atomic int current; /* the heartbeat thread and the main thread (leave) both call */
    int n = 0;
    char host[256];
    uint16_t port = 0;
    while (kms_server_at(n, host, sizeof host, &port) == 0) n++;
    if (!n) return sr_err_set(SR_ERR_CONFIG, "[kms] servers: no host:port");
    sr_err_t rc = SR_ERR_NETWORK;
    for (int tried = 0; tried < n; tried++) {
        int i = (current + tried) % n;
        if (kms_server_at(i, host, sizeof host, &port) != 0)
            return sr_err_set(SR_ERR_CONFIG, "[kms] servers: entry %d is not host:port", i + 1);
        sr_kmip_client_options_t o = {.host = host, .port = port,
                                      .verify_name = sr_config_get(agent.cfg, "kms", "server_name"),
                                      .ca_file = sr_config_get(agent.cfg, "kms", "ca"), .cert_file = cert,
                                      .key_file = key, .timeout_ms = 5000, .version = {1, 4}};
        sr_kmip_client_t *c = NULL;
        rc = sr_kmip_client_new(&o, &c);
        if (rc == SR_OK) rc = fn(c, arg);
        if (!kms_unreachable(rc)) {
            current = i;
            if (keep) *keep = c;
            else sr_kmip_client_free(c);
            return rc;
        }
        sr_kmip_client_free(c);
        if (tried + 1 < n) sr_log_warn("KMS %s:%u: %s; trying the next server", host, port, sr_err_detail());
    }
    return rc;
}

typedef struct call_arg {
    const sr_kmip_enc_t *e;
    uint32_t op;
    sr_kmip_response_t *r;
} call_arg_t;

static sr_err_t call_once(sr_kmip_client_t *c, void *arg)
{
    call_arg_t *a = arg;
    sr_kmip_response_free(a->r);
    memset(a->r, 0, sizeof *a->r);
    return sr_kmip_client_call(c, a->e, a->op, a->r);
}

/* One request, answered by the first kmsd that can be reached. */
static sr_err_t kms_call(const char *cert, const char *key, const sr_kmip_enc_t *e, uint32_t op,
                         sr_kmip_response_t *r, sr_kmip_client_t **keep)
{
    call_arg_t a = {.e = e, .op = op, .r = r};
    return kms_with_failover(cert, key, call_once, &a, keep);
}

static sr_err_t node_call(uint32_t op, sr_kmip_response_t *r)
{
    char cert[4200], key[4200];
    state_path(cert, sizeof cert, "node.pem"), state_path(key, sizeof key, "node.key");
    sr_kmip_enc_t e;
    memset(r, 0, sizeof *r); /* the caller frees it, whatever the outcome */
    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 4}, op);
    sr_kmip_request_end(&e);
    sr_err_t rc = sr_kmip_enc_finish(&e);
    if (rc == SR_OK) rc = kms_call(cert, key, &e, op, r, &agent.node_client);
    sr_kmip_enc_free(&e);
    return rc;
}

/* ---- enrolment -------------------------------------------------------------------------------------- */

/* A fresh key (PEM, for node.key) and a certificate request for it (DER). */
static sr_err_t make_request(const char *name, char **key_pem, size_t *key_len, uint8_t **csr, size_t *csr_len)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    BIO *bio = BIO_new(BIO_s_mem());
    sr_err_t rc = key && req && bio ? SR_OK : sr_err_set_openssl(SR_ERR_CRYPTO, "cannot make the node key");
    if (rc == SR_OK &&
        (!X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8, (const unsigned char *)name,
                                     -1, -1, 0) ||
         !X509_REQ_set_pubkey(req, key) || !X509_REQ_sign(req, key, EVP_sha256()) ||
         !PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)))
        rc = sr_err_set_openssl(SR_ERR_CRYPTO, "cannot make the certificate request");
    unsigned char *der = NULL;
    int n = rc == SR_OK ? i2d_X509_REQ(req, &der) : -1;
    char *pem = NULL;
    long pem_len = rc == SR_OK ? BIO_get_mem_data(bio, &pem) : 0;
    if (rc == SR_OK && (n <= 0 || pem_len <= 0)) rc = sr_err_set_openssl(SR_ERR_CRYPTO, "cannot encode the request");
    if (rc == SR_OK) {
        *key_pem = sr_secure_alloc((size_t)pem_len);
        *csr = malloc((size_t)n);
        if (!*key_pem || !*csr) rc = SR_ERR_NOMEM;
        else memcpy(*key_pem, pem, (size_t)pem_len), *key_len = (size_t)pem_len, memcpy(*csr, der, (size_t)n),
             *csr_len = (size_t)n;
    }
    OPENSSL_free(der);
    BIO_free(bio);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return rc;
}

static sr_err_t read_token(char *token, size_t cap)
{
    const char *file = sr_config_get(agent.cfg, "agent", "token_file"), *env = getenv("STRONGROOM_JOIN_TOKEN");
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f) return sr_err_set_errno(SR_ERR_NOT_FOUND, errno, "cannot read the join token %s", file);
        if (!fgets(token, (int)cap, f)) token[0] = '\0';
        fclose(f);
    } else if (env) {
        snprintf(token, cap, "%s", env);
    } else {
        return sr_err_set(SR_ERR_CONFIG, "not enrolled and no join token: set token_file or STRONGROOM_JOIN_TOKEN "
                          "(kmsctl token create)");
    }
    token[strcspn(token, "\r\n")] = '\0';
    return token[0] ? SR_OK : sr_err_set(SR_ERR_CONFIG, "the join token is empty");
}

static sr_err_t save_enrolment(const sr_kmip_response_t *r, const char *key_pem, size_t key_len)
{
    const sr_kmip_tree_t *t = &r->tree;
    int32_t uuid = sr_kmip_child(t, r->payload, SR_KMIP_TAG_X_NODE_UUID, SR_KMIP_TEXT_STRING);
    int32_t nk = sr_kmip_child(t, r->payload, SR_KMIP_TAG_UNIQUE_IDENTIFIER, SR_KMIP_TEXT_STRING);
    int32_t cert = sr_kmip_child(t, r->payload, SR_KMIP_TAG_X_NODE_CERTIFICATE, SR_KMIP_BYTE_STRING);
    int32_t lease = sr_kmip_child(t, r->payload, SR_KMIP_TAG_X_LEASE_SECONDS, SR_KMIP_INTEGER);
    if (uuid < 0 || nk < 0 || cert < 0 || lease < 0 || t->items[uuid].len >= 64 || t->items[nk].len >= 128)
        return sr_err_set(SR_ERR_KMIP_DECODE, "the Enrol response lacks the node UUID, key or certificate");
    snprintf(agent.node_uuid, sizeof agent.node_uuid, "%.*s", (int)t->items[uuid].len, t->items[uuid].v.ptr);
    snprintf(agent.nk, sizeof agent.nk, "%.*s", (int)t->items[nk].len, t->items[nk].v.ptr);
    const unsigned char *p = t->items[cert].v.ptr;
    X509 *x = d2i_X509(NULL, &p, (long)t->items[cert].len);
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL;
    long pem_len = x && bio && PEM_write_bio_X509(bio, x) ? BIO_get_mem_data(bio, &pem) : 0;
    char path[4200], text[8192];
    sr_err_t rc = pem_len > 0 ? SR_OK : sr_err_set(SR_ERR_KMIP_DECODE, "the node certificate does not decode");
    state_path(path, sizeof path, "node.key");
    if (rc == SR_OK) rc = sr_file_write_atomic(path, key_pem, key_len, 0600, SR_WRITE_NO_DIR_SYNC);
    state_path(path, sizeof path, "node.pem");
    if (rc == SR_OK) rc = sr_file_write_atomic(path, pem, (size_t)pem_len, 0644, SR_WRITE_NO_DIR_SYNC);
    int n = snprintf(text, sizeof text, "[kms]\nservers = %s\nserver_name = %s\nca = %s\ncert = node.pem\nkey = node.key\n"
                     "master_key = %s\ntimeout = 5s\n", sr_config_get(agent.cfg, "kms", "servers"),
                     sr_config_get(agent.cfg, "kms", "server_name"), sr_config_get(agent.cfg, "kms", "ca"),
                     sr_config_get(agent.cfg, "agent", "master_key"));
    state_path(path, sizeof path, "kms.conf");
    if (rc == SR_OK) rc = sr_file_write_atomic(path, text, (size_t)n, 0600, SR_WRITE_NO_DIR_SYNC);
    n = snprintf(text, sizeof text, "%s %s %d\n", agent.node_uuid, agent.nk, t->items[lease].v.i32);
    state_path(path, sizeof path, "node.conf"); /* last: its presence means enrolled (one directory sync for all four) */
    if (rc == SR_OK) rc = sr_file_write_atomic(path, text, (size_t)n, 0600, 0);
    agent.lease_s = t->items[lease].v.i32;
    BIO_free(bio);
    X509_free(x);
    return rc;
}

static sr_err_t enrol(void)
{
    char token[256], name[256] = "", *key_pem = NULL;
    uint8_t *csr = NULL;
    size_t key_len = 0, csr_len = 0;
    const char *cfg_name = sr_config_get(agent.cfg, "agent", "name");
    if (cfg_name) snprintf(name, sizeof name, "%s", cfg_name);
    else gethostname(name, sizeof name - 1);
    sr_err_t rc = read_token(token, sizeof token);
    if (rc == SR_OK) rc = make_request(name, &key_pem, &key_len, &csr, &csr_len);
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 4}, SR_KMIP_OP_ENROL);
    sr_kmip_put_text(&e, SR_KMIP_TAG_X_JOIN_TOKEN, token);
    sr_kmip_put_bytes(&e, SR_KMIP_TAG_X_CSR, csr ? csr : (const uint8_t *)"", csr_len);
    sr_kmip_put_text(&e, SR_KMIP_TAG_X_NODE_NAME, name);
    sr_kmip_request_end(&e);
    sr_secure_wipe(token, sizeof token);
    sr_kmip_response_t r;
    memset(&r, 0, sizeof r);
    if (rc == SR_OK) rc = sr_kmip_enc_finish(&e);
    if (rc == SR_OK) rc = kms_call(NULL, NULL, &e, SR_KMIP_OP_ENROL, &r, NULL); /* never repeated: a token's use */
    if (rc == SR_OK) rc = save_enrolment(&r, key_pem, key_len);
    sr_kmip_response_free(&r);
    sr_kmip_enc_free(&e);
    free(csr);
    if (key_pem) sr_secure_wipe(key_pem, key_len), sr_secure_free(key_pem);
    return rc;
}

static int load_enrolment(void)
{
    char path[4200];
    state_path(path, sizeof path, "node.conf");
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long lease = 0;
    int ok = fscanf(f, "%63s %127s %ld", agent.node_uuid, agent.nk, &lease) == 3;
    fclose(f);
    agent.lease_s = lease;
    return ok;
}

/* ---- the on-disk key cache (disk_cache = true) ------------------------------------------------------------ */
/*
 * For a restart while the KMS cannot be reached: the data keys this agent
 * fetched, each wrapped (AES-256-GCM) under the node key NK — AAD: the node's
 * UUID, the tablespace, the key version and the entry's expiry — in
 * state_dir/keycache, and NK itself (read once with Get: a node may read its
 * own key) in state_dir/nk.key; both 0600. They are wiped and removed when
 * the membership ends (left, expired, revoked), when a start finds the node
 * refused, and when the option is off. A start that reaches the KMS does not
 * use them (fresh keys follow the KMS's state); one that cannot loads the
 * unexpired ones. Off by default: on disk they are only as safe as the state
 * directory.
 */
#define DISK_MAGIC "srkc1\n"
#define DISK_MAX 1024

typedef struct disk_entry {
    sr_uuid_t ts;
    uint32_t version;
    int64_t expires;
    uint16_t len;
    uint8_t blob[SR_WRAPPED_KEY_ENCODED_MAX];
} disk_entry_t;

static struct {
    int on;
    int64_t ttl_s;
    uint8_t *nk; /* SR_KEYMGR_KEY_BYTES, locked; NULL until known */
    disk_entry_t v[DISK_MAX];
    size_t n;
    pthread_mutex_t lock;
} disk = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t disk_aad(const disk_entry_t *e, uint8_t aad[80])
{
    size_t n = strlen(agent.node_uuid) > 36 ? 36 : strlen(agent.node_uuid);
    memcpy(aad, agent.node_uuid, n);
    memcpy(aad + n, e->ts.bytes, SR_UUID_BYTES);
    sr_put_be32(aad + n + 16, e->version);
    sr_put_be64(aad + n + 20, (uint64_t)e->expires);
    return n + 28;
}

static void disk_forget_nk(void)
{
    if (disk.nk) sr_secure_wipe(disk.nk, SR_KEYMGR_KEY_BYTES), sr_secure_free(disk.nk);
    disk.nk = NULL;
}

/* Every trace gone: entries, NK, both files. */
static void disk_cache_purge(const char *why)
{
    char path[4200];
    pthread_mutex_lock(&disk.lock);
    int had = disk.n || disk.nk;
    sr_secure_wipe(disk.v, sizeof disk.v);
    disk.n = 0;
    disk_forget_nk();
    state_path(path, sizeof path, "keycache");
    had |= unlink(path) == 0;
    state_path(path, sizeof path, "nk.key");
    had |= unlink(path) == 0;
    pthread_mutex_unlock(&disk.lock);
    if (had) sr_log_notice("on-disk key cache removed: %s", why);
}

/* The unexpired entries, whole, through a temporary file (lock held). */
static sr_err_t disk_write(void)
{
    uint8_t *buf = malloc(sizeof DISK_MAGIC + disk.n * (SR_UUID_BYTES + 14 + SR_WRAPPED_KEY_ENCODED_MAX));
    if (!buf) return SR_ERR_NOMEM;
    size_t at = sizeof DISK_MAGIC - 1, kept = 0;
    memcpy(buf, DISK_MAGIC, at);
    int64_t now = sr_time_now_us() / 1000000;
    for (size_t i = 0; i < disk.n; i++) {
        const disk_entry_t *e = &disk.v[i];
        if (e->expires <= now) continue;
        disk.v[kept++] = *e;
        memcpy(buf + at, e->ts.bytes, SR_UUID_BYTES), at += SR_UUID_BYTES;
        sr_put_be32(buf + at, e->version), sr_put_be64(buf + at + 4, (uint64_t)e->expires);
        buf[at + 12] = (uint8_t)(e->len >> 8), buf[at + 13] = (uint8_t)e->len, at += 14;
        memcpy(buf + at, e->blob, e->len), at += e->len;
    }
    disk.n = kept;
    char path[4200];
    state_path(path, sizeof path, "keycache");
    sr_err_t rc = sr_file_write_atomic(path, buf, at, 0600, 0);
    free(buf);
    return rc;
}

/* A data key just fetched from the KMS, kept for disk_cache_ttl. */
static void disk_cache_add(const sr_uuid_t *ts, uint32_t version, const uint8_t *dek)
{
    if (!disk.on) return;
    pthread_mutex_lock(&disk.lock);
    size_t i = 0;
    while (i < disk.n && !(sr_uuid_equal(&disk.v[i].ts, ts) && disk.v[i].version == version)) i++;
    sr_uuid_t node;
    sr_wrapped_key_t wk;
    disk_entry_t e = {.ts = *ts, .version = version, .expires = sr_time_now_us() / 1000000 + disk.ttl_s};
    uint8_t aad[80];
    size_t aad_len = disk_aad(&e, aad), len = 0;
    sr_err_t rc = disk.nk && i < DISK_MAX ? sr_uuid_parse(agent.node_uuid, &node) : SR_ERR_STATE;
    if (rc == SR_OK)
        rc = sr_keymgr_wrap(SR_WRAP_AES_256_GCM, disk.nk, SR_KEYMGR_KEY_BYTES, &node, 1, aad, aad_len, dek,
                            SR_KEYMGR_KEY_BYTES, &wk);
    if (rc == SR_OK) rc = sr_wrapped_key_encode(&wk, e.blob, sizeof e.blob, &len);
    if (rc == SR_OK) {
        e.len = (uint16_t)len;
        disk.v[i] = e;
        if (i == disk.n) disk.n++;
        rc = disk_write();
    }
    pthread_mutex_unlock(&disk.lock);
    if (rc != SR_OK && rc != SR_ERR_STATE) sr_log_warn("on-disk key cache: %s", sr_err_detail());
}

static sr_err_t read_small(const char *name, uint8_t *out, size_t cap, size_t *len)
{
    char path[4200];
    state_path(path, sizeof path, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sr_err_set_errno(SR_ERR_NOT_FOUND, errno, "cannot open %s", path);
    ssize_t n = read(fd, out, cap);
    close(fd);
    if (n < 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot read %s", path);
    *len = (size_t)n;
    return SR_OK;
}

/* The unexpired entries into the memory cache, each for what is left of its time. */
static int disk_load(void)
{
    static uint8_t buf[sizeof DISK_MAGIC + DISK_MAX * (SR_UUID_BYTES + 14 + SR_WRAPPED_KEY_ENCODED_MAX)];
    size_t len = 0, at = sizeof DISK_MAGIC - 1;
    int loaded = 0;
    if (read_small("keycache", buf, sizeof buf, &len) != SR_OK || len < at || memcmp(buf, DISK_MAGIC, at) != 0) return 0;
    uint8_t *dek = sr_secure_alloc(SR_KEYMGR_KEY_BYTES);
    int64_t now = sr_time_now_us() / 1000000;
    for (disk.n = 0; dek && at + SR_UUID_BYTES + 14 <= len && disk.n < DISK_MAX;) {
        disk_entry_t *e = &disk.v[disk.n];
        memcpy(e->ts.bytes, buf + at, SR_UUID_BYTES), at += SR_UUID_BYTES;
        e->version = sr_get_be32(buf + at), e->expires = (int64_t)sr_get_be64(buf + at + 4);
        e->len = (uint16_t)(buf[at + 12] << 8 | buf[at + 13]), at += 14;
        if (e->len > sizeof e->blob || at + e->len > len) break;
        memcpy(e->blob, buf + at, e->len), at += e->len;
        uint8_t aad[80];
        size_t aad_len = disk_aad(e, aad), n = 0;
        sr_wrapped_key_t wk;
        if (e->expires <= now || sr_wrapped_key_decode(e->blob, e->len, &wk) != SR_OK ||
            sr_keymgr_unwrap(disk.nk, SR_KEYMGR_KEY_BYTES, &wk, aad, aad_len, dek, SR_KEYMGR_KEY_BYTES, &n) != SR_OK)
            continue; /* expired, or not this node's: dropped at the next write */
        if (sr_keycache_put(agent.cache, &e->ts, e->version, dek, n, (uint64_t)(e->expires - now) * 1000) == SR_OK)
            loaded++;
        disk.n++;
    }
    if (dek) sr_secure_wipe(dek, SR_KEYMGR_KEY_BYTES), sr_secure_free(dek);
    return loaded;
}

typedef struct nk_fetch {
    uint8_t *key;
    size_t len;
} nk_fetch_t;

static sr_err_t get_nk(sr_kmip_client_t *c, void *arg)
{
    nk_fetch_t *f = arg;
    return sr_kmip_get_key(c, agent.nk, f->key, SR_KEYMGR_KEY_BYTES, &f->len);
}

/* At start: a node the KMS refuses keeps nothing on disk; one it accepts
 * fetches NK (once) and starts afresh; one that cannot reach it serves the
 * cached keys. */
static sr_err_t disk_cache_start(void)
{
    int64_t ttl_ms = 0;
    sr_err_t rc = sr_config_get_bool(agent.cfg, "agent", "disk_cache", &disk.on);
    if (rc == SR_OK) rc = sr_config_get_duration_ms(agent.cfg, "agent", "disk_cache_ttl", (uint64_t *)&ttl_ms);
    if (rc != SR_OK) return rc;
    disk.ttl_s = ttl_ms / 1000 > 0 ? ttl_ms / 1000 : 1;
    if (!disk.on) {
        disk_cache_purge("disk_cache is off");
        return SR_OK;
    }
    sr_kmip_response_t r;
    rc = node_call(SR_KMIP_OP_HEARTBEAT, &r);
    sr_kmip_response_free(&r);
    if (rc != SR_OK && !kms_unreachable(rc)) {
        disk_cache_purge("the KMS refuses this node");
        return SR_OK; /* the heartbeat thread ends the membership */
    }
    size_t len = 0;
    if (!(disk.nk = sr_secure_alloc(SR_KEYMGR_KEY_BYTES))) return SR_ERR_NOMEM;
    sr_err_t have = read_small("nk.key", disk.nk, SR_KEYMGR_KEY_BYTES, &len);
    if (rc == SR_OK) { /* reachable: fresh keys from the KMS; the old entries go */
        nk_fetch_t f = {.key = disk.nk};
        char path[4200], cert[4200], key[4200];
        state_path(path, sizeof path, "nk.key");
        state_path(cert, sizeof cert, "node.pem"), state_path(key, sizeof key, "node.key");
        if (have != SR_OK || len != SR_KEYMGR_KEY_BYTES) {
            rc = kms_with_failover(cert, key, get_nk, &f, &agent.node_client);
            if (rc != SR_OK) return sr_err_set(rc, "the disk cache needs the node key: %s", sr_err_detail());
            rc = sr_file_write_atomic(path, disk.nk, SR_KEYMGR_KEY_BYTES, 0600, 0);
        }
        pthread_mutex_lock(&disk.lock);
        disk.n = 0;
        if (rc == SR_OK) rc = disk_write();
        pthread_mutex_unlock(&disk.lock);
        return rc;
    }
    if (have != SR_OK || len != SR_KEYMGR_KEY_BYTES) {
        disk_forget_nk();
        sr_log_warn("the KMS cannot be reached and there is no node key on disk: no cached keys");
        return SR_OK;
    }
    int n = disk_load();
    sr_log_notice("the KMS cannot be reached: %d data key(s) from the on-disk cache", n);
    return SR_OK;
}

/* ---- heartbeats ---------------------------------------------------------------------------------------- */

static void end_membership(const char *why)
{
    pthread_mutex_lock(&agent.lock);
    int was = agent.revoked;
    agent.revoked = 1;
    snprintf(agent.revoked_why, sizeof agent.revoked_why, "%s", why);
    sr_keycache_purge(agent.cache, NULL);
    pthread_mutex_unlock(&agent.lock);
    disk_cache_purge("the membership ended");
    if (!was) {
        sr_log_error("node %s: %s; cached keys purged, new requests refused (enrol again with a new token)",
                     agent.node_uuid, why);
        event("node.membership_ended", agent.node_uuid, agent.nk, "failure", why);
    }
}

/* ---- the access policy pushed by the KMS ------------------------------------------------------------- */

static void record_policy_version(int64_t version, const char *digest)
{
    char path[4200], text[96];
    state_path(path, sizeof path, "policy.version");
    int n = snprintf(text, sizeof text, "%lld %s\n", (long long)version, digest);
    if (sr_file_write_atomic(path, text, (size_t)n, 0600, 0) != SR_OK) sr_log_warn("policy: %s", sr_err_detail());
}

/* The pushed version in force and its digest, from the state directory (0: none). */
static int64_t installed_policy_version(char digest[32])
{
    char path[4200];
    long long v = 0;
    state_path(path, sizeof path, "policy.version");
    FILE *f = fopen(path, "r");
    digest[0] = '\0';
    if (f && fscanf(f, "%lld %31s", &v, digest) != 2) v = 0, digest[0] = '\0';
    if (f) fclose(f);
    return v;
}

/* Puts the policy a response carries in force: compiled here first (a bad
 * one never replaces a good one), written beside the old one and renamed
 * over it (the PAM module sees the old file or the new, never half), then
 * the key service's handle reloaded. */
static sr_err_t install_policy(const sr_kmip_response_t *r, int64_t *version)
{
    const sr_kmip_tree_t *t = &r->tree;
    int32_t v = sr_kmip_child(t, r->payload, SR_KMIP_TAG_X_POLICY_VERSION, SR_KMIP_INTEGER);
    int32_t body = sr_kmip_child(t, r->payload, SR_KMIP_TAG_X_POLICY_TEXT, SR_KMIP_BYTE_STRING);
    if (v < 0 || body < 0) return sr_err_set(SR_ERR_KMIP_DECODE, "the Get Policy response lacks the version or text");
    *version = t->items[v].v.i32;
    const char *path = sr_config_get(agent.cfg, "agent", "policy");
    char *text = malloc(t->items[body].len + 1);
    if (!text) return SR_ERR_NOMEM;
    memcpy(text, t->items[body].v.ptr, t->items[body].len), text[t->items[body].len] = '\0';
    sr_acl_policy_t *p = NULL;
    sr_err_t rc = strlen(text) == t->items[body].len ? sr_acl_compile_standalone(path, text, &p)
                                                     : sr_err_set(SR_ERR_PARSE, "%s: a NUL byte: not a text file", path);
    char digest[32] = "";
    if (rc == SR_OK) snprintf(digest, sizeof digest, "%s", sr_acl_policy_version(p)), sr_acl_policy_free(p);
    if (rc == SR_OK) rc = sr_file_write_atomic(path, text, t->items[body].len, 0644, 0);
    free(text);
    pthread_mutex_lock(&agent.lock);
    sr_acl_t *policy = agent.policy;
    pthread_mutex_unlock(&agent.lock);
    if (rc == SR_OK && policy) rc = sr_acl_reload(policy);
    else if (rc == SR_OK && (rc = sr_acl_open(path, &policy)) == SR_OK) {
        pthread_mutex_lock(&agent.lock);
        agent.policy = policy;
        pthread_mutex_unlock(&agent.lock);
    }
    if (rc == SR_OK) record_policy_version(*version, digest);
    return rc;
}

/* A heartbeat said the KMS holds policy `newest`: fetch and install it. */
static void follow_policy(int64_t newest)
{
    if (!agent.policy_push || newest <= agent.policy_version || newest == agent.policy_rejected) return;
    sr_kmip_response_t r;
    int64_t version = newest;
    char object[40];
    sr_err_t rc = node_call(SR_KMIP_OP_GET_POLICY, &r);
    if (rc == SR_OK) rc = install_policy(&r, &version);
    sr_kmip_response_free(&r);
    snprintf(object, sizeof object, "policy v%lld", (long long)version);
    if (rc == SR_OK) {
        char digest[32], detail[300];
        installed_policy_version(digest);
        snprintf(detail, sizeof detail, "%s at %.200s", digest, sr_config_get(agent.cfg, "agent", "policy"));
        agent.policy_version = version;
        sr_log_notice("access policy v%lld (%s) in force", (long long)version, digest);
        event("policy.installed", agent.node_uuid, object, "success", detail);
    } else if (rc == SR_ERR_PARSE || rc == SR_ERR_LIMIT) {
        agent.policy_rejected = version;
        sr_log_error("access policy v%lld refused, v%lld stays in force: %s", (long long)version,
                     (long long)agent.policy_version, sr_err_detail());
        event("policy.rejected", agent.node_uuid, object, "failure", sr_err_detail());
    } else {
        sr_log_warn("access policy v%lld: %s (tried again at the next heartbeat)", (long long)version, sr_err_detail());
    }
}

static void *heartbeat_main(void *arg)
{
    /* just enrolled: the lease is new, so the first heartbeat waits an interval (200 nodes joining at once
     * would otherwise each make a second TLS handshake in the same second), unless a pushed policy is awaited */
    int skip = *(const int *)arg && !(agent.policy_push && !agent.policy);
    while (!stop_requested && !agent.revoked) {
        for (uint64_t slept = 0; skip && slept < agent.heartbeat_ms && !stop_requested; slept += 100) usleep(100000);
        skip = 1;
        if (stop_requested) break;
        sr_kmip_response_t r;
        sr_err_t rc = node_call(SR_KMIP_OP_HEARTBEAT, &r);
        int32_t newest = rc == SR_OK ? sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_X_POLICY_VERSION, SR_KMIP_INTEGER) : -1;
        int64_t newest_version = newest >= 0 ? r.tree.items[newest].v.i32 : 0;
        sr_kmip_response_free(&r);
        if (rc == SR_OK) follow_policy(newest_version);
        if (rc == SR_OK) {
            pthread_mutex_lock(&agent.lock);
            agent.last_heartbeat_ok = sr_time_now_us() / 1000000;
            pthread_mutex_unlock(&agent.lock);
        } else if (rc == SR_ERR_KMIP_RESULT || (rc == SR_ERR_TLS && strstr(sr_err_detail(), "revoked"))) {
            end_membership(sr_err_detail()); /* the KMS ended it: lease expired, revoked */
        } else {
            sr_log_warn("heartbeat: %s (the KMS is unreachable: cached keys stay usable)", sr_err_detail());
        }
    }
    return NULL;
}

/* ---- the key service ----------------------------------------------------------------------------------- */

typedef struct peer {
    uid_t uid;
    pid_t pid;
    char user[64], exe[256], subject[400];
} peer_t;

/* uid -> user name, remembered for a minute (a lookup reads /etc/passwd or
 * asks NSS: tens of microseconds on every open otherwise). */
static void user_name(uid_t uid, char *out, size_t cap)
{
    static struct {
        uid_t uid;
        int64_t until;
        char name[64];
    } memo[64];
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    int64_t now = sr_time_mono_ms();
    size_t i = (size_t)uid % (sizeof memo / sizeof memo[0]);
    pthread_mutex_lock(&lock);
    int hit = memo[i].until > now && memo[i].uid == uid;
    if (hit) snprintf(out, cap, "%s", memo[i].name);
    pthread_mutex_unlock(&lock);
    if (hit) return;
    struct passwd pw, *res = NULL;
    char buf[1024];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res) snprintf(out, cap, "%s", pw.pw_name);
    else snprintf(out, cap, "uid%u", (unsigned)uid);
    pthread_mutex_lock(&lock);
    memo[i].uid = uid, memo[i].until = now + 60000;
    snprintf(memo[i].name, sizeof memo[i].name, "%s", out);
    pthread_mutex_unlock(&lock);
}

static void describe_peer(const struct ucred *c, peer_t *p)
{
    struct ucred cred = *c;
    memset(p, 0, sizeof *p);
    p->uid = cred.uid, p->pid = cred.pid;
    user_name(cred.uid, p->user, sizeof p->user);
    char link[64];
    snprintf(link, sizeof link, "/proc/%d/exe", (int)cred.pid);
    ssize_t n = readlink(link, p->exe, sizeof p->exe - 1);
    p->exe[n > 0 ? n : 0] = '\0';
    snprintf(p->subject, sizeof p->subject, "uid=%u (%s) pid=%d exe=%s", (unsigned)cred.uid, p->user, (int)cred.pid,
             p->exe[0] ? p->exe : "?");
}

static void answer(int fd, char status, const uint8_t *data, size_t len)
{
    uint8_t head[5];
    sr_put_be32(head, (uint32_t)(len + 1));
    head[4] = (uint8_t)status;
    struct iovec iov[2] = {{head, 5}, {(void *)data, len}}; /* one write: one wake-up of the engine */
    ssize_t n = writev(fd, iov, len ? 2 : 1);
    if (n >= 0 && (size_t)n < 5 + len) { /* a short write (a full socket buffer): the rest in order */
        size_t done = (size_t)n;
        if (done < 5 && sr_fd_write_all(fd, head + done, 5 - done) == SR_OK) done = 5;
        if (done >= 5 && len) (void)!sr_fd_write_all(fd, data + (done - 5), len - (done - 5));
    }
}

static void refuse(int fd, const peer_t *p, const char *object, const char *why)
{
    event("key.request", p->subject, object, "denied", why);
    answer(fd, 'E', (const uint8_t *)why, strlen(why));
}

/* The policy's word on this peer; 1 allowed. `why` names the rule and the
 * policy's digest (empty when no policy is configured: every peer allowed). */
static int permitted(const peer_t *p, char *why, size_t cap)
{
    pthread_mutex_lock(&agent.lock);
    sr_acl_t *policy = agent.policy;
    pthread_mutex_unlock(&agent.lock);
    why[0] = '\0';
    if (!policy && agent.policy_push) /* fail closed until the KMS's policy is here */
        return snprintf(why, cap, "deny: no access policy received from the KMS yet (policy_push)"), 0;
    if (!policy) return 1;
    sr_acl_request_t req = {.account = p->user, .source = "local", .service = "tde-key"};
    sr_acl_decision_t d;
    sr_acl_file_id_t id;
    sr_acl_evaluate_current(policy, &req, &d, &id); /* a file replaced since (tde-acl install) is compiled again */
    snprintf(why, cap, "%s; policy %s", d.why, d.policy);
    return d.allow;
}

/* D: the policy's decision for a login, asked by the PAM module: the module
 * compiles nothing when this agent's policy is its policy file as it is now
 * (it compares the file identity sent back). When the agent's events are
 * recorded (its embedded sealer, or a sealer it sends to), it records the
 * decision itself, durably, before it answers, naming the asking process as
 * the kernel sees it: the login then costs one round trip, not two (the
 * module records it otherwise). The request: NUL-terminated policy path,
 * server, account, source, service; the answer: allow (1) | recorded (1) |
 * file identity (4 x u64 BE) | why NUL | digest NUL. The policy file is
 * world-readable, so answering any local process tells it nothing new. */
static void decide_for(int fd, const peer_t *p, const uint8_t *body, size_t len)
{
    const char *f[5];
    size_t at = 0;
    for (int i = 0; i < 5; i++) {
        const uint8_t *end = at < len ? memchr(body + at, '\0', len - at) : NULL;
        if (!end) return refuse(fd, p, NULL, "malformed decision request");
        f[i] = (const char *)body + at, at = (size_t)(end - body) + 1;
    }
    const char *mine = sr_config_get(agent.cfg, "agent", "policy");
    pthread_mutex_lock(&agent.lock);
    sr_acl_t *policy = agent.policy;
    pthread_mutex_unlock(&agent.lock);
    struct stat a, b; /* the same file, however each names it */
    if (!policy || !mine || stat(mine, &a) != 0 || stat(f[0], &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        const char *why = "this agent does not hold that policy file";
        return answer(fd, 'E', (const uint8_t *)why, strlen(why));
    }
    sr_acl_request_t req = {.server = *f[1] ? f[1] : NULL, .account = f[2], .source = *f[3] ? f[3] : NULL,
                            .service = *f[4] ? f[4] : NULL};
    sr_acl_decision_t d;
    sr_acl_file_id_t id;
    sr_acl_evaluate_current(policy, &req, &d, &id);
    int recorded = 0;
    if (sr_event_has_sink()) {
        char detail[700];
        snprintf(detail, sizeof detail, "account %.64s: %s; policy %s (decided and recorded by tde-agent)", f[2], d.why,
                 d.policy);
        sr_event_t ev = {.component = "pam", .event = "login", .subject = p->subject, .object = *f[4] ? f[4] : NULL,
                         .outcome = d.allow ? "success" : "denied", .detail = detail, .source = *f[3] ? f[3] : "local"};
        recorded = sr_event_emit(&ev) == SR_OK;
    }
    uint8_t out[2 + 32 + sizeof d.why + sizeof d.policy];
    out[0] = (uint8_t)(d.allow != 0), out[1] = (uint8_t)recorded;
    sr_put_be64(out + 2, id.dev), sr_put_be64(out + 10, id.ino), sr_put_be64(out + 18, id.size);
    sr_put_be64(out + 26, (uint64_t)id.mtime_ns);
    size_t n = 34;
    n += (size_t)snprintf((char *)out + n, sizeof d.why, "%s", d.why) + 1;
    n += (size_t)snprintf((char *)out + n, sizeof d.policy, "%s", d.policy) + 1;
    answer(fd, 'K', out, n);
}

/* U: the DEK (cache, else the KMS); C: a new DEK wrapped by the KMS; R: re-wrapped. */
static sr_err_t serve_key(char op, const sr_uuid_t *ts, uint32_t version, const sr_wrapped_key_t *in, uint8_t *dek,
                          sr_wrapped_key_t *out, int *cached)
{
    size_t len = 0;
    *cached = 0;
    if (op == 'U' && sr_keycache_get(agent.cache, ts, version, dek, SR_KEYMGR_KEY_BYTES, &len) == SR_OK)
        return *cached = 1, SR_OK;
    sr_err_t rc = op == 'C' ? sr_keyprov_dek_create(agent.kms, ts, version, dek, out)
                  : op == 'U' ? sr_keyprov_dek_unwrap(agent.kms, ts, version, in, dek)
                              : sr_keyprov_dek_rewrap(agent.kms, ts, version, in, out);
    if (rc == SR_OK && op != 'R') rc = sr_keycache_put(agent.cache, ts, version, dek, SR_KEYMGR_KEY_BYTES, agent.cache_ttl_ms);
    if (rc == SR_OK && op != 'R') disk_cache_add(ts, version, dek);
    return rc;
}

/* At least `need` bytes (up to cap) before the deadline; *got counts across calls. */
static int read_some_by(int fd, uint8_t *buf, size_t cap, size_t need, uint64_t deadline_ms, size_t *got)
{
    while (*got < need) {
        uint64_t now = sr_time_mono_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t r = recv(fd, buf + *got, cap - *got, MSG_DONTWAIT); /* what is there: usually the whole request */
        if (r > 0) {
            *got += (size_t)r;
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return -1;
        if (now >= deadline_ms || poll(&pfd, 1, (int)(deadline_ms - now)) <= 0) return -1;
    }
    return 0;
}

#define REQUEST_MS 2000 /* a whole request, from the connection: local processes send ~100 bytes at once */
#define WORKERS 64      /* connections served at once; more wait in the listen backlog */
#define REPLY_BYTES (SR_KEYMGR_KEY_BYTES + SR_WRAPPED_KEY_ENCODED_MAX)

static void handle(int fd, const struct ucred *cred, uint8_t *reply)
{
    peer_t p;
    describe_peer(cred, &p);
    struct timeval tv = {.tv_sec = 5}; /* for the answer (not inherited from the listening socket) */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    uint8_t req[1 + SR_UUID_BYTES + 4 + SR_WRAPPED_KEY_ENCODED_MAX];
    uint64_t deadline = sr_time_mono_ms() + REQUEST_MS;
    uint8_t msg[4 + SR_AGENT_REQUEST_MAX];
    size_t got = 0;
    if (read_some_by(fd, msg, sizeof msg, 4, deadline, &got) != 0) return;
    uint32_t n = sr_get_be32(msg);
    if (n < 1 || n > SR_AGENT_REQUEST_MAX || read_some_by(fd, msg, 4 + n, 4 + n, deadline, &got) != 0)
        return refuse(fd, &p, NULL, "malformed or incomplete request");
    if (msg[4] == 'D') return decide_for(fd, &p, msg + 5, n - 1);
    if (n < 1 + SR_UUID_BYTES + 4 || n > sizeof req) return refuse(fd, &p, NULL, "malformed request");
    memcpy(req, msg + 4, n);
    sr_uuid_t ts;
    memcpy(ts.bytes, req + 1, SR_UUID_BYTES);
    uint32_t version = sr_get_be32(req + 1 + SR_UUID_BYTES);
    char object[64], why[300];
    sr_uuid_format(&ts, object);
    char op = (char)req[0];
    sr_wrapped_key_t in, out;
    size_t at = 1 + SR_UUID_BYTES + 4;
    if (op != 'C' && op != 'U' && op != 'R') return refuse(fd, &p, object, "unknown request");
    if (op != 'C' && sr_wrapped_key_decode(req + at, n - at, &in) != SR_OK) return refuse(fd, &p, object, "bad wrapped key");
    pthread_mutex_lock(&agent.lock);
    int revoked = agent.revoked;
    snprintf(why, sizeof why, "this node's membership ended: %s", agent.revoked_why);
    pthread_mutex_unlock(&agent.lock);
    if (revoked) return refuse(fd, &p, object, why);
    if (!permitted(&p, why, sizeof why)) return refuse(fd, &p, object, why);
    char allowed_by[300];
    snprintf(allowed_by, sizeof allowed_by, "%s", why);
    int cached = 0;
    size_t len = 0, enc = 0;
    sr_err_t rc = serve_key(op, &ts, version, &in, reply, &out, &cached);
    if (rc == SR_OK && op != 'R') len = SR_KEYMGR_KEY_BYTES;
    if (rc == SR_OK && op != 'U')
        rc = sr_wrapped_key_encode(&out, reply + len, SR_WRAPPED_KEY_ENCODED_MAX, &enc), len += enc;
    if (rc == SR_OK) {
        snprintf(why, sizeof why, "%s data key v%u%s%s%.200s", op == 'C' ? "created" : op == 'U' ? "unwrapped" : "re-wrapped",
                 version, cached ? " (cached)" : "", allowed_by[0] ? "; " : "", allowed_by);
        event("key.request", p.subject, object, "success", why);
        answer(fd, 'K', reply, len);
    } else {
        refuse(fd, &p, object, sr_err_detail());
    }
    sr_secure_wipe(reply, REPLY_BYTES);
}

/* A pool of workers, each with its own locked reply buffer, each accepting
 * connections itself (the kernel hands a connection to one waiting accept:
 * no queue, no second wake-up per open). Two to begin with; one more when
 * the last idle one takes a connection, up to WORKERS (they stay: a node
 * with 200 agents does not pay 64 threads each). One slow or silent local
 * process holds one worker for at most REQUEST_MS, never the service; a
 * request costs no thread creation and no mmap (both showed in the cached
 * open's cost). */
#define PER_UID 8 /* connections one user may have served at once */

static struct {
    pthread_mutex_t lock;
    int lfd, busy, started;
    _Atomic int stopping;
    struct { uid_t uid; int n; } users[WORKERS]; /* connections per user (n > 0) */
    pthread_t thread[WORKERS];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .lfd = -1};

/* Adds delta to uid's connections (under pool.lock); its count after, or
 * -1 if the table is full (it cannot be: at most WORKERS connections). */
static int user_count(uid_t uid, int delta)
{
    int free_slot = -1;
    for (int i = 0; i < WORKERS; i++) {
        if (pool.users[i].n > 0 && pool.users[i].uid == uid) return pool.users[i].n += delta;
        if (pool.users[i].n <= 0 && free_slot < 0) free_slot = i;
    }
    if (free_slot < 0 || delta <= 0) return -1;
    pool.users[free_slot].uid = uid;
    return pool.users[free_slot].n = delta;
}

static int worker_add(void);

/* A user with PER_UID connections served already is answered at once that
 * it has too many: one user's stalled or flooding processes can hold up
 * that user, never another. 1 if the connection is to be served. */
static int admit(int fd, struct ucred *peer)
{
    struct ucred cred = {0};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
    *peer = cred;
    pthread_mutex_lock(&pool.lock);
    int mine = user_count(cred.uid, +1);
    if (mine < 0 || mine > PER_UID) {
        if (mine > 0) user_count(cred.uid, -1);
        pthread_mutex_unlock(&pool.lock);
        char why[96];
        snprintf(why, sizeof why, "uid %u has %d connections to the key service already: try again", (unsigned)cred.uid,
                 PER_UID);
        answer(fd, 'E', (const uint8_t *)why, strlen(why));
        return 0;
    }
    if (++pool.busy == pool.started && pool.started < WORKERS && worker_add() != 0) /* none left waiting */
        sr_log(SR_LOG_WARN, "key service: cannot add a worker (%d serve)", pool.started);
    pthread_mutex_unlock(&pool.lock);
    return 1;
}

static void *worker_main(void *arg)
{
    uint8_t *reply = arg;
    while (!pool.stopping) {
        int fd = accept4(pool.lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) usleep(50000); /* out of descriptors: do not spin */
            continue;
        }
        struct ucred peer = {0};
        if (admit(fd, &peer)) {
            handle(fd, &peer, reply);
            pthread_mutex_lock(&pool.lock);
            pool.busy--;
            user_count(peer.uid, -1);
            pthread_mutex_unlock(&pool.lock);
        }
        close(fd);
    }
    sr_secure_free(reply);
    return NULL;
}

/* One more worker (under pool.lock); 0 or -1. */
static int worker_add(void)
{
    uint8_t *reply = sr_secure_alloc(REPLY_BYTES);
    if (!reply || pthread_create(&pool.thread[pool.started], NULL, worker_main, reply) != 0) {
        sr_secure_free(reply);
        return -1;
    }
    pool.started++;
    return 0;
}

static sr_err_t workers_start(int lfd)
{
    pool.lfd = lfd;
    pthread_mutex_lock(&pool.lock);
    int ok = worker_add() == 0 && worker_add() == 0;
    pthread_mutex_unlock(&pool.lock);
    return ok ? SR_OK : sr_err_set(SR_ERR_NOMEM, "cannot start the key service's workers");
}

/* At shutdown: the listener shut (waiting accepts return), running requests
 * finish (each within REQUEST_MS and its KMS call), then the workers end. */
static void workers_stop(void)
{
    pool.stopping = 1;
    shutdown(pool.lfd, SHUT_RDWR);
    pthread_mutex_lock(&pool.lock);
    int started = pool.started;
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < started; i++) pthread_join(pool.thread[i], NULL);
}

static sr_err_t listen_socket(const char *path, int *fd_out)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) return sr_err_set(SR_ERR_CONFIG, "socket path too long: %s", path);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || chmod(path, 0666) != 0 || listen(fd, 64) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return sr_err_set_errno(SR_ERR_IO, e, "cannot listen on %s", path);
    }
    *fd_out = fd;
    return SR_OK;
}

/* ---- the host's audit sealer, embedded ([audit] socket, log, sign_key) ------------------------------------- */
/*
 * The agent can be the host's sealer: the only process holding the signing
 * key and writing the log, local processes (engines with
 * STRONGROOM_AUDIT_SOCKET, tdectl, the PAM module) sending it events, each
 * record's subject the kernel's view of its sender. The agent's own events
 * go through the same socket. It starts before enrolment (so that is
 * recorded) and stops last (after the leave), sealing the log.
 */
static struct {
    pthread_t thread;
    int running;
    volatile int stop;
    _Atomic int ended;
    sr_err_t rc;
    sr_audit_sealer_options_t o;
    sr_audit_client_t *client;
} sealer;

static void *sealer_main(void *arg)
{
    (void)arg;
    sealer.rc = sr_audit_serve(&sealer.o, &sealer.stop);
    sealer.ended = 1;
    return NULL;
}

static sr_err_t sealer_start(void)
{
    const char *sock = sr_config_get(agent.cfg, "audit", "socket"), *log = sr_config_get(agent.cfg, "audit", "log");
    const char *key = sr_config_get(agent.cfg, "audit", "sign_key");
    if (!log && !key) return SR_OK; /* not the sealer: events go where STRONGROOM_AUDIT_* say */
    if (!sock || !log || !key)
        return sr_err_set(SR_ERR_CONFIG, "[audit]: the embedded sealer needs socket, log and sign_key, all three");
    sealer.o = (sr_audit_sealer_options_t){.socket_path = sock, .log = {.path = log, .signing_key = key}};
    if (pthread_create(&sealer.thread, NULL, sealer_main, NULL) != 0)
        return sr_err_set(SR_ERR_INTERNAL, "cannot start the audit sealer");
    sealer.running = 1;
    sr_err_t rc = SR_ERR_TIMEOUT;
    for (int waited = 0; waited < 10000 && !sealer.ended && rc != SR_OK; waited += 20) {
        rc = sr_audit_client_open(sock, &sealer.client);
        if (rc != SR_OK) usleep(20000);
    }
    if (sealer.ended) return sr_err_set(sealer.rc ? sealer.rc : SR_ERR_IO, "the audit sealer stopped: %s", sr_err_detail());
    if (rc != SR_OK) return sr_err_set(rc, "the audit sealer on %s does not answer", sock);
    sr_audit_client_install_as_event_sink(sealer.client);
    return SR_OK;
}

/* The last thing the agent does: its own client closed, the log sealed. */
static void sealer_finish(void)
{
    if (!sealer.running) return;
    sr_audit_client_install_as_event_sink(NULL);
    sr_audit_client_close(sealer.client);
    sealer.stop = 1;
    pthread_join(sealer.thread, NULL);
    sealer.running = 0;
    if (sealer.rc != SR_OK) fprintf(stderr, "tde-agent: audit sealer: %s\n", sr_err_detail());
}

/* ---- run ----------------------------------------------------------------------------------------------------- */

static sr_err_t start_services(void)
{
    char path[4200];
    uint64_t ms = 0;
    sr_err_t rc = sr_config_get_duration_ms(agent.cfg, "agent", "heartbeat", &agent.heartbeat_ms);
    if (rc == SR_OK) rc = sr_config_get_duration_ms(agent.cfg, "agent", "cache_ttl", &ms);
    agent.cache_ttl_ms = ms;
    if (rc == SR_OK) rc = sr_keycache_new(1024, ms, &agent.cache);
    state_path(path, sizeof path, "kms.conf");
    if (rc == SR_OK) rc = sr_keyprov_kmip_open(path, &agent.kms);
    const char *policy = sr_config_get(agent.cfg, "agent", "policy");
    if (rc == SR_OK) rc = sr_config_get_bool(agent.cfg, "agent", "policy_push", &agent.policy_push);
    if (rc == SR_OK && agent.policy_push && !policy)
        rc = sr_err_set(SR_ERR_CONFIG, "[agent] policy_push needs policy = PATH (where the pushed policy is installed)");
    char digest[32];
    if (rc == SR_OK && agent.policy_push) agent.policy_version = installed_policy_version(digest);
    /* with policy_push and nothing received yet, keys are refused until the first policy arrives */
    if (rc == SR_OK && policy && !(agent.policy_push && access(policy, F_OK) != 0)) rc = sr_acl_open(policy, &agent.policy);
    if (rc == SR_OK) rc = disk_cache_start();
    return rc;
}

static int cmd_run(const char *config)
{
    if (sr_config_load(config, schema, sizeof schema / sizeof schema[0], &agent.cfg) != SR_OK)
        return fprintf(stderr, "tde-agent: %s (%s)\n", sr_err_detail(), sr_err_name(sr_err_last())), SR_EXIT_CANNOT;
    snprintf(agent.state, sizeof agent.state, "%s", sr_config_get(agent.cfg, "agent", "state_dir"));
    if (mkdir(agent.state, 0700) != 0 && errno != EEXIST)
        return fprintf(stderr, "tde-agent: cannot create %s: %s\n", agent.state, strerror(errno)), SR_EXIT_CANNOT;
    chmod(agent.state, 0700);
    sr_err_t rc = sealer_start();
    if (rc != SR_OK) {
        sealer_finish();
        return fprintf(stderr, "tde-agent: %s (%s)\n", sr_err_detail(), sr_err_name(rc)), SR_EXIT_CANNOT;
    }
    int just_enrolled = !load_enrolment();
    if (just_enrolled) {
        rc = enrol();
        if (rc != SR_OK) {
            fprintf(stderr, "tde-agent: enrolment refused or failed: %s (%s)\n", sr_err_detail(), sr_err_name(rc));
            event("node.enrol", "tde-agent", NULL, "failure", sr_err_detail());
            sealer_finish();
            return SR_EXIT_FAILED;
        }
        printf("tde-agent: enrolled as node %s (node key %s, lease %llds)\n", agent.node_uuid, agent.nk,
               (long long)agent.lease_s);
        event("node.enrol", agent.node_uuid, agent.nk, "success", "enrolled");
        agent.last_heartbeat_ok = sr_time_now_us() / 1000000; /* the enrolment renewed the lease */
    } else {
        printf("tde-agent: node %s (enrolled before; state in %s)\n", agent.node_uuid, agent.state);
    }
    fflush(stdout);
    int lfd = -1;
    if (rc == SR_OK) rc = start_services();
    if (rc == SR_OK) rc = listen_socket(sr_config_get(agent.cfg, "agent", "socket"), &lfd);
    if (rc == SR_OK) rc = workers_start(lfd);
    if (rc != SR_OK) {
        fprintf(stderr, "tde-agent: %s\n", sr_err_detail());
        sealer_finish();
        return SR_EXIT_CANNOT;
    }
    pthread_t hb;
    pthread_create(&hb, NULL, heartbeat_main, &just_enrolled);
    while (!stop_requested) usleep(100000); /* the workers serve; SIGTERM may land on any thread */
    workers_stop();
    close(lfd);
    unlink(sr_config_get(agent.cfg, "agent", "socket"));
    pthread_join(hb, NULL);
    sr_keycache_purge(agent.cache, NULL);
    disk_cache_purge("the node leaves");
    /* scale-in: leave at once, so the node key is revoked now, not at lease expiry */
    sr_kmip_response_t r;
    sr_err_t left = agent.revoked ? SR_ERR_STATE : node_call(SR_KMIP_OP_LEAVE, &r);
    if (!agent.revoked) sr_kmip_response_free(&r);
    if (left == SR_OK) {
        printf("tde-agent: node %s left; its node key is revoked\n", agent.node_uuid);
        event("node.leave", agent.node_uuid, agent.nk, "success", "graceful leave");
    } else if (!agent.revoked) {
        fprintf(stderr, "tde-agent: could not tell the KMS we leave (%s): the lease will expire\n", sr_err_detail());
    }
    sr_keycache_free(agent.cache);
    sr_keyprov_free(agent.kms);
    sr_kmip_client_free(agent.node_client);
    sr_acl_close(agent.policy);
    sealer_finish();
    sr_config_free(agent.cfg);
    return 0;
}

static int cmd_status(const char *config, int json)
{
    if (sr_config_load(config, schema, sizeof schema / sizeof schema[0], &agent.cfg) != SR_OK)
        return fprintf(stderr, "tde-agent: %s (%s)\n", sr_err_detail(), sr_err_name(sr_err_last())), SR_EXIT_CANNOT;
    snprintf(agent.state, sizeof agent.state, "%s", sr_config_get(agent.cfg, "agent", "state_dir"));
    int enrolled = load_enrolment();
    const char *sock = sr_config_get(agent.cfg, "agent", "socket");
    int serving = 0, fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0); /* a live agent accepts */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
    if (fd >= 0) serving = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, close(fd);
    sr_kmip_response_t r;
    int member = 0;
    char why[256] = "";
    if (enrolled) {
        sr_err_t rc = node_call(SR_KMIP_OP_HEARTBEAT, &r); /* also renews the lease */
        member = rc == SR_OK;
        if (!member) snprintf(why, sizeof why, "%s", sr_err_detail());
        sr_kmip_response_free(&r);
    }
    /* the policy in force: the file's digest as the key service and the PAM module compile it */
    const char *policy_path = sr_config_get(agent.cfg, "agent", "policy");
    char digest[32] = "", pushed_digest[32];
    int64_t pushed = installed_policy_version(pushed_digest);
    sr_acl_policy_t *p = NULL;
    if (policy_path && sr_acl_compile_file(policy_path, &p) == SR_OK)
        snprintf(digest, sizeof digest, "%s", sr_acl_policy_version(p)), sr_acl_policy_free(p);
    char policy[300];
    if (!policy_path) snprintf(policy, sizeof policy, "no policy (every local process gets keys)");
    else if (!digest[0]) snprintf(policy, sizeof policy, "policy %.200s: none in force (keys refused)", policy_path);
    else if (pushed && !strcmp(digest, pushed_digest)) snprintf(policy, sizeof policy, "policy v%lld %s", (long long)pushed, digest);
    else snprintf(policy, sizeof policy, "policy %.200s %s", policy_path, digest);
    if (json)
        printf("{\"enrolled\": %s, \"node\": \"%s\", \"node_key\": \"%s\", \"lease_seconds\": %lld, \"kms_accepts_node\": "
               "%s, \"serving\": %s, \"socket\": \"%s\", \"policy_version\": %lld, \"policy_digest\": \"%s\"}\n",
               enrolled ? "true" : "false", agent.node_uuid, agent.nk, (long long)agent.lease_s, member ? "true" : "false",
               serving ? "true" : "false", sock, digest[0] && !strcmp(digest, pushed_digest) ? (long long)pushed : 0LL,
               digest);
    else if (!enrolled)
        printf("not enrolled (state %s)\n", agent.state);
    else
        printf("node %s, node key %s, lease %llds; KMS %s; key service %s (%s); %s\n", agent.node_uuid, agent.nk,
               (long long)agent.lease_s, member ? "accepts this node" : why, serving ? "listening" : "not running", sock,
               policy);
    sr_config_free(agent.cfg);
    return enrolled && member ? 0 : SR_EXIT_FAILED;
}

static int usage(FILE *f, int status)
{
    fprintf(f, "usage: tde-agent run --config FILE\n"
               "       tde-agent status --config FILE [--json]\n"
               "Exit status: 0 ok, 1 refused (enrolment, membership), 2 usage, 3 could not run.\n");
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage(stderr, SR_EXIT_USAGE);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return usage(stdout, 0);
    if (!strcmp(argv[1], "--version")) return puts("tde-agent (strongroom)"), 0;
    if (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "status") != 0)
        return fprintf(stderr, "tde-agent: unknown command '%s'\n", argv[1]), usage(stderr, SR_EXIT_USAGE);
    const char *config = NULL;
    int json = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout, 0);
        if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
        else if (!strcmp(argv[i], "--json") && !strcmp(argv[1], "status")) json = 1;
        else
            return fprintf(stderr, "tde-agent: %s: option %s does not apply\n", argv[1], argv[i]),
                   usage(stderr, SR_EXIT_USAGE);
    }
    if (!config) return fprintf(stderr, "tde-agent: %s: --config FILE is required\n", argv[1]), SR_EXIT_USAGE;
    if (sr_secure_init() != SR_OK) return SR_EXIT_CANNOT;
    sr_audit_writer_t *w = NULL;
    if (sr_audit_open_from_env(&w) != SR_OK) return fprintf(stderr, "tde-agent: %s\n", sr_err_detail()), SR_EXIT_CANNOT;
    if (!strcmp(argv[1], "status")) return cmd_status(config, json);
    if (strcmp(argv[1], "run") != 0) return usage(stderr, SR_EXIT_USAGE);
    if (sr_process_harden() != SR_OK) return SR_EXIT_CANNOT;
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return cmd_run(config);
}
