/*
 * keyprov_kmip.c — the KMS key provider: a tablespace's DEKs are wrapped and
 * unwrapped by a KMIP server (kmsd, or any KMIP 1.4 server with AES-GCM)
 * under a master key that never leaves it.
 *
 *   wrap:    KMIP Encrypt(master key, AES-GCM, fresh 12-byte IV, AAD = the
 *            DEK binding of keymgr.h) -> iv || ciphertext || tag
 *   unwrap:  KMIP Decrypt with the master key the blob names
 *
 * With `wrap = get`, for a KMIP server that cannot Encrypt: the master key is
 * read with KMIP Get into locked memory for each wrap or unwrap, used here
 * (AES-256-GCM, the same AAD) and wiped; the server still decides (a revoked
 * key is refused to Get), but the master key visits this process. A blob
 * says which way it was wrapped, so either setting opens either kind.
 *
 * The server decides: a revoked, destroyed or not-granted master key makes
 * the open fail with the server's reason. Servers are tried in the order
 * configured; one that cannot be reached is skipped (failover), a refusal is
 * final. One mutex serialises calls (the VFS may open from several threads).
 */
#include "keymgr.h"
#include "kmip.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERVERS 8
#define IV_LEN 12
#define TAG_LEN 16

typedef struct kmip_provider {
    pthread_mutex_t lock;
    char *hosts[MAX_SERVERS];
    uint16_t ports[MAX_SERVERS];
    sr_kmip_client_t *clients[MAX_SERVERS];
    int n, current;
    sr_kmip_client_options_t base;
    char *ca, *cert, *key, *server_name;
    char master[SR_KMIP_UID_MAX];
    int wrap_here; /* wrap = get */
} kmip_provider_t;

static const sr_config_key_t schema[] = {
    {"kms", "servers", SR_CONFIG_STRING, NULL, 1},  {"kms", "server_name", SR_CONFIG_STRING, "localhost", 0},
    {"kms", "ca", SR_CONFIG_PATH, NULL, 1},         {"kms", "cert", SR_CONFIG_PATH, NULL, 1},
    {"kms", "key", SR_CONFIG_PATH, NULL, 1},        {"kms", "master_key", SR_CONFIG_STRING, NULL, 1},
    {"kms", "timeout", SR_CONFIG_DURATION, "5s", 0},
    {"kms", "wrap", SR_CONFIG_STRING, "encrypt", 0},
};

/* ---- the master key's identifier in a wrapped blob ------------------------------------ */

static sr_err_t uid_to_blob(const char *uid, sr_wrapped_key_t *wk)
{
    memset(&wk->kek_id, 0, sizeof wk->kek_id);
    wk->kek_version = 0;
    if (sr_uuid_parse(uid, &wk->kek_id) == SR_OK) return SR_OK;
    int64_t n = 0;
    if (sr_parse_int64(uid, &n) == SR_OK && n > 0 && n <= UINT32_MAX) return wk->kek_version = (uint32_t)n, SR_OK;
    return sr_err_set(SR_ERR_UNSUPPORTED, "master key identifier '%s' is neither a UUID nor a number: a tablespace "
                      "header cannot name it", uid);
}

static void uid_from_blob(const sr_wrapped_key_t *wk, char uid[SR_KMIP_UID_MAX])
{
    if (!sr_uuid_is_nil(&wk->kek_id)) sr_uuid_format(&wk->kek_id, uid);
    else snprintf(uid, SR_KMIP_UID_MAX, "%u", wk->kek_version);
}

/* ---- servers ------------------------------------------------------------------------------ */

static int unreachable(sr_err_t rc)
{
    return rc == SR_ERR_NETWORK || rc == SR_ERR_TLS || rc == SR_ERR_CLOSED || rc == SR_ERR_TIMEOUT || rc == SR_ERR_IO;
}

/* Runs fn on the current server, moving on to the next while one cannot be reached. */
static sr_err_t with_failover(kmip_provider_t *p, sr_kmip_call_fn fn, void *arg)
{
    pthread_mutex_lock(&p->lock);
    sr_err_t rc = SR_ERR_NETWORK;
    for (int tried = 0; tried < p->n; tried++) {
        int i = (p->current + tried) % p->n;
        if (!p->clients[i]) {
            sr_kmip_client_options_t o = p->base;
            o.host = p->hosts[i], o.port = p->ports[i];
            if ((rc = sr_kmip_client_new(&o, &p->clients[i])) != SR_OK) break; /* configuration: final */
        }
        rc = fn(p->clients[i], arg);
        if (!unreachable(rc)) {
            p->current = i;
            break;
        }
        sr_log_warn("KMS %s:%u unreachable (%s); trying the next server", p->hosts[i], p->ports[i], sr_err_detail());
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

typedef struct crypt_call {
    const char *uid;
    const uint8_t *iv, *aad, *in;
    size_t in_len;
    uint8_t *out;
    size_t cap, out_len;
} crypt_call_t;

static sr_err_t call_encrypt(sr_kmip_client_t *c, void *arg)
{
    crypt_call_t *a = arg;
    return sr_kmip_encrypt_aead(c, a->uid, a->iv, IV_LEN, a->aad, SR_KEYMGR_DEK_AAD_LEN, a->in, a->in_len, a->out,
                                a->cap, &a->out_len);
}

static sr_err_t call_decrypt(sr_kmip_client_t *c, void *arg)
{
    crypt_call_t *a = arg;
    return sr_kmip_decrypt_aead(c, a->uid, a->iv, IV_LEN, a->aad, SR_KEYMGR_DEK_AAD_LEN, a->in, a->in_len, a->out,
                                a->cap, &a->out_len);
}

/* A KMS call that failed, as the caller should see it: the KMS's refusal
 * (a revoked, ungranted or inactive master key) is SR_ERR_PERMISSION, a KMS
 * that could not be reached is said to be one (an outage, not a refusal),
 * anything else keeps its class. The format says what was asked: "unwrap
 * data key version 3 with master key M". */
static sr_err_t kms_failed(sr_err_t rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static sr_err_t kms_failed(sr_err_t rc, const char *fmt, ...)
{
    char what[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *how = rc == SR_ERR_KMIP_RESULT ? "the KMS refused to"
                      : unreachable(rc)        ? "no KMS could be reached to"
                                               : "the KMS failed to";
    return sr_err_set(rc == SR_ERR_KMIP_RESULT ? SR_ERR_PERMISSION : rc, "%s %s: %s", how, what, sr_err_detail());
}

typedef struct get_call {
    const char *uid;
    uint8_t *key;
    size_t len;
} get_call_t;

/* KMIP lets a Deactivated or Compromised key be read (to decrypt old data),
 * so the state is asked first: only an Active master key is used. */
static sr_err_t call_get(sr_kmip_client_t *c, void *arg)
{
    get_call_t *a = arg;
    sr_kmip_key_attributes_t at;
    sr_err_t rc = sr_kmip_get_attributes(c, a->uid, &at);
    if (rc == SR_OK && at.state != SR_KMIP_STATE_ACTIVE)
        return sr_err_set(SR_ERR_KMIP_RESULT, "master key %s is not Active (state %u): only an Active key is used",
                          a->uid, at.state);
    return rc == SR_OK ? sr_kmip_get_key(c, a->uid, a->key, SR_KEYMGR_KEY_BYTES, &a->len) : rc;
}

/* wrap = get: the master key for one wrap or unwrap, in locked memory (the caller wipes and frees it). */
static sr_err_t get_master(kmip_provider_t *p, const char *uid, uint8_t **key)
{
    get_call_t a = {.uid = uid, .key = sr_secure_alloc(SR_KEYMGR_KEY_BYTES)};
    sr_err_t rc = a.key ? with_failover(p, call_get, &a) : SR_ERR_NOMEM;
    if (rc != SR_OK && rc != SR_ERR_NOMEM) rc = kms_failed(rc, "hand out master key %s", uid);
    if (rc == SR_OK && a.len != SR_KEYMGR_KEY_BYTES)
        rc = sr_err_set(SR_ERR_UNSUPPORTED, "master key %s is AES-%zu: wrap = get needs AES-256", uid, a.len * 8);
    if (rc != SR_OK && a.key) sr_secure_wipe(a.key, SR_KEYMGR_KEY_BYTES), sr_secure_free(a.key), a.key = NULL;
    *key = a.key;
    return rc;
}

static void forget_master(uint8_t *key)
{
    if (key) sr_secure_wipe(key, SR_KEYMGR_KEY_BYTES), sr_secure_free(key);
}

/* ---- provider operations -------------------------------------------------------------------- */

static sr_err_t wrap_dek(kmip_provider_t *p, const sr_uuid_t *ts, uint32_t version, const uint8_t *dek,
                         sr_wrapped_key_t *out)
{
    uint8_t aad[SR_KEYMGR_DEK_AAD_LEN];
    sr_keymgr_dek_aad(ts, version, aad);
    memset(out, 0, sizeof *out);
    if (p->wrap_here) {
        sr_wrapped_key_t id;
        uint8_t *mk = NULL;
        sr_err_t rc = uid_to_blob(p->master, &id);
        if (rc == SR_OK) rc = get_master(p, p->master, &mk);
        if (rc == SR_OK)
            rc = sr_keymgr_wrap(SR_WRAP_KMIP_GET_GCM, mk, SR_KEYMGR_KEY_BYTES, &id.kek_id, id.kek_version, aad,
                                sizeof aad, dek, SR_KEYMGR_KEY_BYTES, out);
        forget_master(mk);
        return rc;
    }
    out->alg = SR_WRAP_KMIP_AES_GCM;
    sr_err_t rc = uid_to_blob(p->master, out);
    if (rc == SR_OK) rc = sr_random_bytes(out->blob, IV_LEN);
    if (rc != SR_OK) return rc;
    crypt_call_t a = {.uid = p->master, .iv = out->blob, .aad = aad, .in = dek, .in_len = SR_KEYMGR_KEY_BYTES,
                      .out = out->blob + IV_LEN, .cap = sizeof out->blob - IV_LEN};
    rc = with_failover(p, call_encrypt, &a);
    if (rc != SR_OK) return kms_failed(rc, "wrap a data key under master key %s", p->master);
    out->blob_len = (uint32_t)(IV_LEN + a.out_len);
    return SR_OK;
}

static sr_err_t kmip_dek_create(void *impl, const sr_uuid_t *ts, uint32_t version, uint8_t *dek_out,
                                sr_wrapped_key_t *wrapped_out)
{
    sr_err_t rc = sr_random_bytes(dek_out, SR_KEYMGR_KEY_BYTES);
    if (rc == SR_OK) rc = wrap_dek(impl, ts, version, dek_out, wrapped_out);
    if (rc != SR_OK) sr_secure_wipe(dek_out, SR_KEYMGR_KEY_BYTES);
    return rc;
}

static sr_err_t kmip_dek_unwrap(void *impl, const sr_uuid_t *ts, uint32_t version, const sr_wrapped_key_t *wk,
                                uint8_t *dek_out)
{
    kmip_provider_t *p = impl;
    if (wk->alg == SR_WRAP_KMIP_GET_GCM) {
        char uid[SR_KMIP_UID_MAX];
        uint8_t aad[SR_KEYMGR_DEK_AAD_LEN], *mk = NULL;
        size_t len = 0;
        uid_from_blob(wk, uid);
        sr_keymgr_dek_aad(ts, version, aad);
        sr_err_t rc = get_master(p, uid, &mk); /* its failure says whether the KMS refused or was not reached */
        if (rc == SR_OK) rc = sr_keymgr_unwrap(mk, SR_KEYMGR_KEY_BYTES, wk, aad, sizeof aad, dek_out, SR_KEYMGR_KEY_BYTES, &len);
        forget_master(mk);
        if (rc == SR_OK && len != SR_KEYMGR_KEY_BYTES) rc = sr_err_set(SR_ERR_CORRUPT, "unwrapped DEK of %zu bytes", len);
        if (rc != SR_OK) sr_secure_wipe(dek_out, SR_KEYMGR_KEY_BYTES);
        return rc;
    }
    if (wk->alg != SR_WRAP_KMIP_AES_GCM)
        return sr_err_set(SR_ERR_WRONG_KEY, "this data key was wrapped by a local key file, not by a KMS");
    if (wk->blob_len != IV_LEN + SR_KEYMGR_KEY_BYTES + TAG_LEN)
        return sr_err_set(SR_ERR_CORRUPT, "KMS-wrapped data key of %u bytes", wk->blob_len);
    char uid[SR_KMIP_UID_MAX];
    uint8_t aad[SR_KEYMGR_DEK_AAD_LEN];
    uid_from_blob(wk, uid);
    sr_keymgr_dek_aad(ts, version, aad);
    crypt_call_t a = {.uid = uid, .iv = wk->blob, .aad = aad, .in = wk->blob + IV_LEN,
                      .in_len = wk->blob_len - IV_LEN, .out = dek_out, .cap = SR_KEYMGR_KEY_BYTES};
    sr_err_t rc = with_failover(p, call_decrypt, &a);
    if (rc != SR_OK) rc = kms_failed(rc, "unwrap data key version %u with master key %s", version, uid);
    else if (a.out_len != SR_KEYMGR_KEY_BYTES) rc = sr_err_set(SR_ERR_CORRUPT, "unwrapped DEK of %zu bytes", a.out_len);
    if (rc != SR_OK) sr_secure_wipe(dek_out, SR_KEYMGR_KEY_BYTES);
    return rc;
}

static sr_err_t kmip_dek_rewrap(void *impl, const sr_uuid_t *ts, uint32_t version, const sr_wrapped_key_t *old,
                                sr_wrapped_key_t *new_wrapped)
{
    uint8_t *dek = sr_secure_alloc(SR_KEYMGR_KEY_BYTES);
    if (!dek) return SR_ERR_NOMEM;
    sr_err_t rc = kmip_dek_unwrap(impl, ts, version, old, dek);
    if (rc == SR_OK) rc = wrap_dek(impl, ts, version, dek, new_wrapped);
    sr_secure_wipe(dek, SR_KEYMGR_KEY_BYTES), sr_secure_free(dek);
    return rc;
}

static void kmip_destroy(void *impl)
{
    kmip_provider_t *p = impl;
    if (!p) return;
    for (int i = 0; i < p->n; i++) sr_kmip_client_free(p->clients[i]), free(p->hosts[i]);
    free(p->ca), free(p->cert), free(p->key), free(p->server_name);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static const sr_keyprov_ops_t kmip_ops = {
    .kind = "kms",
    .dek_create = kmip_dek_create,
    .dek_unwrap = kmip_dek_unwrap,
    .dek_rewrap = kmip_dek_rewrap,
    .destroy = kmip_destroy,
};

static sr_err_t not_kms(sr_keyprov_t *kp)
{
    return sr_err_set(SR_ERR_INVALID_ARG, "%s is not a KMS key provider", kp ? sr_keyprov_description(kp) : "(none)");
}

sr_err_t sr_keyprov_kmip_call(sr_keyprov_t *kp, sr_kmip_call_fn fn, void *arg)
{
    kmip_provider_t *p = sr_keyprov_impl(kp, &kmip_ops);
    if (!p) return not_kms(kp);
    return with_failover(p, fn, arg);
}

sr_err_t sr_keyprov_kmip_adopt(sr_keyprov_t *kp, const char *host, uint16_t port, sr_kmip_client_t *from)
{
    kmip_provider_t *p = sr_keyprov_impl(kp, &kmip_ops);
    if (!p) return not_kms(kp);
    int i = 0;
    while (i < p->n && (p->ports[i] != port || strcmp(p->hosts[i], host) != 0)) i++;
    if (i == p->n) return sr_err_set(SR_ERR_INVALID_ARG, "%s:%u is not one of the provider's servers", host, port);
    sr_kmip_client_options_t o = p->base;
    o.host = p->hosts[i], o.port = p->ports[i];
    sr_kmip_client_t *c = NULL;
    sr_err_t rc = sr_kmip_client_carry_on(&o, from, &c);
    if (rc != SR_OK) return rc;
    pthread_mutex_lock(&p->lock);
    sr_kmip_client_free(p->clients[i]);
    p->clients[i] = c, p->current = i;
    pthread_mutex_unlock(&p->lock);
    return SR_OK;
}

/* ---- configuration ------------------------------------------------------------------------------ */

static sr_err_t parse_servers(const char *path, const char *list, kmip_provider_t *p)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        char host[256];
        if (sr_parse_host_port(tok, host, sizeof host, &p->ports[p->n]) != SR_OK)
            return sr_err_set(SR_ERR_CONFIG, "%s: servers: %s", path, sr_err_detail());
        if (p->n == MAX_SERVERS) return sr_err_set(SR_ERR_CONFIG, "%s: more than %d servers", path, MAX_SERVERS);
        if (!(p->hosts[p->n++] = strdup(host))) return SR_ERR_NOMEM;
    }
    return p->n ? SR_OK : sr_err_set(SR_ERR_CONFIG, "%s: servers is empty", path);
}

static char *dup_config(const sr_config_t *cfg, const char *key)
{
    const char *v = sr_config_get(cfg, "kms", key);
    return v ? strdup(v) : NULL;
}

sr_err_t sr_keyprov_kmip_open(const char *config_path, sr_keyprov_t **out)
{
    sr_config_t *cfg = NULL;
    sr_err_t rc = sr_config_load(config_path, schema, sizeof schema / sizeof schema[0], &cfg);
    if (rc != SR_OK) return rc;
    kmip_provider_t *p = calloc(1, sizeof *p);
    uint64_t timeout = 0;
    if (!p) rc = SR_ERR_NOMEM;
    if (rc == SR_OK) {
        pthread_mutex_init(&p->lock, NULL);
        rc = parse_servers(config_path, sr_config_get(cfg, "kms", "servers"), p);
    }
    if (rc == SR_OK) rc = sr_config_get_duration_ms(cfg, "kms", "timeout", &timeout);
    if (rc == SR_OK) {
        p->ca = dup_config(cfg, "ca"), p->cert = dup_config(cfg, "cert"), p->key = dup_config(cfg, "key");
        p->server_name = dup_config(cfg, "server_name");
        snprintf(p->master, sizeof p->master, "%s", sr_config_get(cfg, "kms", "master_key"));
        const char *wrap = sr_config_get(cfg, "kms", "wrap");
        p->wrap_here = !strcmp(wrap, "get");
        if (!p->wrap_here && strcmp(wrap, "encrypt") != 0)
            rc = sr_err_set(SR_ERR_CONFIG, "%s: wrap is encrypt (the KMS wraps) or get (read the master key, wrap here), "
                            "not '%s'", config_path, wrap);
        p->base = (sr_kmip_client_options_t){.verify_name = p->server_name, .ca_file = p->ca, .cert_file = p->cert,
                                             .key_file = p->key, .timeout_ms = (int)timeout, .version = {1, 4}};
        if (!p->ca || !p->cert || !p->key || !p->server_name) rc = SR_ERR_NOMEM;
    }
    sr_wrapped_key_t probe;
    if (rc == SR_OK) rc = uid_to_blob(p->master, &probe);
    char desc[4200];
    snprintf(desc, sizeof desc, "kms:%s (master key %s)", config_path, p ? p->master : "?");
    sr_config_free(cfg);
    if (rc != SR_OK) {
        kmip_destroy(p);
        return rc;
    }
    return sr_keyprov_new(&kmip_ops, p, desc, out);
}
