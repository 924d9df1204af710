/*
 * membership.c — the node and kmsd: requests through [kms] servers (failing
 * over while one cannot be reached), the enrolment, the heartbeats that keep
 * the lease, and the access policy the KMS pushes.
 */
#include "agent.h"

#include <errno.h>
#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
        if (k == i) return n && sr_parse_host_port(one, host, cap, port) == SR_OK ? 0 : -1;
        p += n;
    }
    return -1;
}

/* Whether another server may answer: this one could not be reached (a
 * certificate refused as revoked is an answer, the same from every kmsd). */
int kms_unreachable(sr_err_t rc)
{
    if (rc == SR_ERR_TLS) return !strstr(sr_err_detail(), "revoked");
    return rc == SR_ERR_NETWORK || rc == SR_ERR_CLOSED || rc == SR_ERR_TIMEOUT || rc == SR_ERR_IO;
}

/* The enrolment's connection, kept when kmsd bound it to the node it
 * enrolled: the node's KMS key provider goes on with it (no second TLS
 * handshake for the node's first requests, on either side). */
static struct {
    sr_kmip_client_t *client;
    char host[256];
    uint16_t port;
} enrolment_link;

/* The enrolment's request, to the first of [kms] servers that can be
 * reached, as an anonymous client (the node has no certificate yet): never
 * repeated on one server, since a join token's use is spent. Its client is
 * kept in enrolment_link. The node's own requests go through its KMS key
 * provider's connection (node_call). */
static sr_err_t kms_anonymous(sr_kmip_call_fn fn, void *arg)
{
    int n = 0;
    char host[256];
    uint16_t port = 0;
    while (kms_server_at(n, host, sizeof host, &port) == 0) n++;
    if (!n) return sr_err_set(SR_ERR_CONFIG, "[kms] servers: no host:port");
    sr_err_t rc = SR_ERR_NETWORK;
    for (int i = 0; i < n; i++) {
        if (kms_server_at(i, host, sizeof host, &port) != 0)
            return sr_err_set(SR_ERR_CONFIG, "[kms] servers: entry %d is not host:port", i + 1);
        sr_kmip_client_options_t o = {.host = host, .port = port,
                                      .verify_name = sr_config_get(agent.cfg, "kms", "server_name"),
                                      .ca_file = sr_config_get(agent.cfg, "kms", "ca"), .timeout_ms = 5000,
                                      .version = {1, 4}};
        sr_kmip_client_t *c = NULL;
        rc = sr_kmip_client_new(&o, &c);
        if (rc == SR_OK) rc = fn(c, arg);
        if (rc == SR_OK) {
            enrolment_link.client = c, enrolment_link.port = port;
            snprintf(enrolment_link.host, sizeof enrolment_link.host, "%s", host);
            return rc;
        }
        sr_kmip_client_free(c);
        if (!kms_unreachable(rc)) return rc;
        if (i + 1 < n) sr_log_warn("KMS %s:%u: %s; trying the next server", host, port, sr_err_detail());
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

/* The node's requests (heartbeat, policy, leave) are safe to repeat: one
 * sent on a kept connection kmsd has since closed (a restart, idle_timeout)
 * fails and drops it, and goes once more on a new one. */
static sr_err_t call_repeatable(sr_kmip_client_t *c, void *arg)
{
    int kept = sr_kmip_client_connected(c);
    sr_err_t rc = call_once(c, arg);
    return kept && kms_unreachable(rc) ? call_once(c, arg) : rc;
}

/* A request of the node's, on the connection of its KMS key provider (the
 * one its tablespace keys are unwrapped on: one TLS handshake per node, and
 * none per heartbeat), failing over through [kms] servers as it does. */
sr_err_t node_call(uint32_t op, sr_kmip_response_t *r)
{
    sr_kmip_enc_t e;
    memset(r, 0, sizeof *r); /* the caller frees it, whatever the outcome */
    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 4}, op);
    sr_kmip_request_end(&e);
    sr_err_t rc = sr_kmip_enc_finish(&e);
    call_arg_t a = {.e = &e, .op = op, .r = r};
    if (rc == SR_OK) rc = sr_keyprov_kmip_call(agent.kms, call_repeatable, &a);
    sr_kmip_enc_free(&e);
    return rc;
}

/* ---- enrolment -------------------------------------------------------------------------------------- */

/* The request's SubjectPublicKeyInfo: the P-256 point under its OIDs, set
 * as they are (X509_REQ_set_pubkey encodes the key and decodes it back
 * through OpenSSL 3.0's decoders: 0.55 ms of an enrolment's CPU). */
static int set_request_key(X509_REQ *req, const unsigned char point[65])
{
    unsigned char *copy = OPENSSL_memdup(point, 65);
    if (copy && X509_PUBKEY_set0_param(X509_REQ_get_X509_PUBKEY(req), OBJ_nid2obj(NID_X9_62_id_ecPublicKey),
                                       V_ASN1_OBJECT, OBJ_nid2obj(NID_X9_62_prime256v1), copy, 65))
        return 1;
    OPENSSL_free(copy);
    return 0;
}

/* What the node sends kmsd to enrol, and keeps. */
typedef struct node_request {
    char *key_pem;     /* the fresh key, for node.key (locked memory) */
    size_t key_len;
    uint8_t *csr;      /* the certificate request for it, DER */
    size_t csr_len;
    uint8_t spki[128]; /* its SubjectPublicKeyInfo, DER: the certificate must carry exactly this */
    size_t spki_len;
} node_request_t;

static void node_request_free(node_request_t *q)
{
    free(q->csr);
    if (q->key_pem) sr_secure_wipe(q->key_pem, q->key_len), sr_secure_free(q->key_pem);
}

/* SEC1's ECPrivateKey (RFC 5915) as PKCS#8 carries it: the curve is named by
 * the PKCS#8 algorithm, so its [0] parameters are left out. */
typedef struct {
    ASN1_INTEGER *version;
    ASN1_OCTET_STRING *private_key;
    ASN1_BIT_STRING *public_key;
} SR_EC_PRIVATE_KEY;

ASN1_SEQUENCE(SR_EC_PRIVATE_KEY) = {
    ASN1_SIMPLE(SR_EC_PRIVATE_KEY, version, ASN1_INTEGER),
    ASN1_SIMPLE(SR_EC_PRIVATE_KEY, private_key, ASN1_OCTET_STRING),
    ASN1_EXP_OPT(SR_EC_PRIVATE_KEY, public_key, ASN1_BIT_STRING, 1),
} static_ASN1_SEQUENCE_END(SR_EC_PRIVATE_KEY)

/* The node key as the PKCS#8 PEM OpenSSL writes, encoded from its values by
 * OpenSSL's ASN.1 templates: PEM_write_bio_PrivateKey gets there through
 * OpenSSL 3.0's encoders, whose first use costs 0.4 ms of an enrolment's ~7
 * (measured). The test suite checks the two agree byte for byte. */
static int write_private_key(BIO *bio, EVP_PKEY *key, const unsigned char point[65])
{
    BIGNUM *d = NULL;
    unsigned char scalar[32], *inner = NULL;
    SR_EC_PRIVATE_KEY k = {ASN1_INTEGER_new(), ASN1_OCTET_STRING_new(), ASN1_BIT_STRING_new()};
    PKCS8_PRIV_KEY_INFO *p8 = PKCS8_PRIV_KEY_INFO_new();
    int ok = k.version && k.private_key && k.public_key && p8 && ASN1_INTEGER_set(k.version, 1) &&
             EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &d) && BN_bn2binpad(d, scalar, 32) == 32 &&
             ASN1_OCTET_STRING_set(k.private_key, scalar, 32) &&
             ASN1_BIT_STRING_set(k.public_key, (unsigned char *)point, 65);
    if (ok) k.public_key->flags = ASN1_STRING_FLAG_BITS_LEFT; /* no unused bits (else counted from the last byte) */
    int inner_len = ok ? ASN1_item_i2d((ASN1_VALUE *)&k, &inner, ASN1_ITEM_rptr(SR_EC_PRIVATE_KEY)) : -1;
    ok = inner_len > 0 && PKCS8_pkey_set0(p8, OBJ_nid2obj(NID_X9_62_id_ecPublicKey), 0, V_ASN1_OBJECT,
                                          OBJ_nid2obj(NID_X9_62_prime256v1), inner, inner_len);
    if (ok) inner = NULL; /* p8's now: PKCS8_PRIV_KEY_INFO_free clears it */
    ok = ok && PEM_write_bio_PKCS8_PRIV_KEY_INFO(bio, p8);
    OPENSSL_cleanse(scalar, sizeof scalar);
    if (inner) OPENSSL_clear_free(inner, (size_t)inner_len);
    PKCS8_PRIV_KEY_INFO_free(p8);
    ASN1_STRING_clear_free(k.private_key);
    ASN1_INTEGER_free(k.version);
    ASN1_BIT_STRING_free(k.public_key);
    BN_clear_free(d);
    return ok;
}

/* A fresh key and a certificate request for it. */
static sr_err_t make_request(const char *name, node_request_t *q)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    BIO *bio = BIO_new(BIO_s_secmem()); /* cleared when freed */
    unsigned char point[65];
    size_t point_len = 0;
    sr_err_t rc = key && req && bio ? SR_OK : sr_err_set_openssl(SR_ERR_CRYPTO, "cannot make the node key");
    if (rc == SR_OK &&
        (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &point_len) ||
         point_len != sizeof point ||
         !X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8, (const unsigned char *)name,
                                     -1, -1, 0) ||
         !set_request_key(req, point) || !X509_REQ_sign(req, key, EVP_sha256()) ||
         !write_private_key(bio, key, point)))
        rc = sr_err_set_openssl(SR_ERR_CRYPTO, "cannot make the certificate request");
    unsigned char *der = NULL, *spki = q->spki;
    int n = rc == SR_OK ? i2d_X509_REQ(req, &der) : -1;
    int spki_len = rc == SR_OK ? i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), NULL) : -1;
    char *pem = NULL;
    long pem_len = rc == SR_OK ? BIO_get_mem_data(bio, &pem) : 0;
    if (rc == SR_OK && (n <= 0 || pem_len <= 0 || spki_len <= 0 || spki_len > (int)sizeof q->spki ||
                        i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &spki) != spki_len))
        rc = sr_err_set_openssl(SR_ERR_CRYPTO, "cannot encode the request");
    if (rc == SR_OK) {
        q->key_pem = sr_secure_alloc((size_t)pem_len);
        q->csr = malloc((size_t)n);
        if (!q->key_pem || !q->csr) rc = SR_ERR_NOMEM;
        else memcpy(q->key_pem, pem, (size_t)pem_len), q->key_len = (size_t)pem_len, memcpy(q->csr, der, (size_t)n),
             q->csr_len = (size_t)n, q->spki_len = (size_t)spki_len;
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
        struct stat st;
        if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
            sr_log_warn("the join token %s is readable by other users (mode %03o): whoever reads it first can enrol "
                        "with it; give it mode 0600 and remove it once the node is enrolled", file,
                        (unsigned)(st.st_mode & 0777));
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

/* The node certificate, as PEM: one DER structure that carries the request's
 * key exactly (kmsd copies it). It is not decoded here (OpenSSL 3.0 decodes
 * a certificate's key through its decoders, 0.14 ms): the TLS library reads
 * it when the node connects anew. */
static sr_err_t certificate_pem(const sr_kmip_item_t *cert, const node_request_t *q, BIO *bio, char **pem, long *len)
{
    const unsigned char *p = cert->v.ptr;
    long body = 0;
    int tag = 0, cls = 0;
    int ret = ASN1_get_object(&p, &body, &tag, &cls, (long)cert->len);
    if (ret != V_ASN1_CONSTRUCTED || tag != V_ASN1_SEQUENCE || p + body != cert->v.ptr + cert->len)
        return sr_err_set(SR_ERR_KMIP_DECODE, "the node certificate is not one DER structure");
    if (!memmem(cert->v.ptr, cert->len, q->spki, q->spki_len))
        return sr_err_set(SR_ERR_KMIP_DECODE, "the node certificate does not carry the node's key");
    int written = bio && PEM_write_bio(bio, "CERTIFICATE", "", cert->v.ptr, (long)cert->len) > 0;
    *len = written ? BIO_get_mem_data(bio, pem) : 0;
    return *len > 0 ? SR_OK : sr_err_set_openssl(SR_ERR_NOMEM, "cannot encode the node certificate");
}

static sr_err_t save_enrolment(const sr_kmip_response_t *r, const node_request_t *q)
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
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL, path[4200], text[8192];
    long pem_len = 0;
    sr_err_t rc = certificate_pem(&t->items[cert], q, bio, &pem, &pem_len);
    state_path(path, sizeof path, "node.key");
    if (rc == SR_OK) rc = sr_file_write_atomic(path, q->key_pem, q->key_len, 0600, SR_WRITE_NO_DIR_SYNC);
    state_path(path, sizeof path, "node.pem");
    if (rc == SR_OK) rc = sr_file_write_atomic(path, pem, (size_t)pem_len, 0644, SR_WRITE_NO_DIR_SYNC);
    int n = snprintf(text, sizeof text, "%s %s %d\n", agent.node_uuid, agent.nk, t->items[lease].v.i32);
    state_path(path, sizeof path, "node.conf"); /* last: its presence means enrolled (one directory sync for the 3) */
    if (rc == SR_OK) rc = sr_file_write_atomic(path, text, (size_t)n, 0600, 0);
    agent.lease_s = t->items[lease].v.i32;
    BIO_free(bio);
    return rc;
}

sr_err_t enrol(void)
{
    char token[256], name[256] = "";
    node_request_t q = {0};
    const char *cfg_name = sr_config_get(agent.cfg, "agent", "name");
    if (cfg_name) snprintf(name, sizeof name, "%s", cfg_name);
    else gethostname(name, sizeof name - 1);
    sr_err_t rc = read_token(token, sizeof token);
    if (rc == SR_OK) rc = make_request(name, &q);
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 4}, SR_KMIP_OP_ENROL);
    sr_kmip_put_text(&e, SR_KMIP_TAG_X_JOIN_TOKEN, token);
    sr_kmip_put_bytes(&e, SR_KMIP_TAG_X_CSR, q.csr ? q.csr : (const uint8_t *)"", q.csr_len);
    sr_kmip_put_text(&e, SR_KMIP_TAG_X_NODE_NAME, name);
    sr_kmip_request_end(&e);
    sr_secure_wipe(token, sizeof token);
    sr_kmip_response_t r;
    memset(&r, 0, sizeof r);
    if (rc == SR_OK) rc = sr_kmip_enc_finish(&e);
    call_arg_t a = {.e = &e, .op = SR_KMIP_OP_ENROL, .r = &r};
    if (rc == SR_OK) rc = kms_anonymous(call_once, &a);
    if (rc == SR_OK) rc = save_enrolment(&r, &q);
    int32_t bound = rc == SR_OK ? sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_X_CONNECTION_BOUND, SR_KMIP_BOOLEAN)
                                : -1;
    if (bound < 0 || !r.tree.items[bound].v.boolean) /* failed, or a kmsd that does not bind it */
        sr_kmip_client_free(enrolment_link.client), enrolment_link.client = NULL;
    sr_kmip_response_free(&r);
    sr_kmip_enc_free(&e);
    node_request_free(&q);
    return rc;
}

void hand_on_enrolment_connection(void)
{
    if (!enrolment_link.client) return;
    if (agent.kms &&
        sr_keyprov_kmip_adopt(agent.kms, enrolment_link.host, enrolment_link.port, enrolment_link.client) != SR_OK)
        sr_log_info("the enrolment's connection is not carried on (%s): the node connects anew", sr_err_detail());
    sr_kmip_client_free(enrolment_link.client);
    enrolment_link.client = NULL;
}

/* kms.conf, the node's KMS key provider: derived from agent.conf at each
 * start (so [kms] servers edited there apply at the next start) and never
 * synced (a crash that loses it loses nothing: the next start writes it). */
sr_err_t write_kms_conf(void)
{
    char path[4200], text[8192];
    int n = snprintf(text, sizeof text,
                     "[kms]\nservers = %s\nserver_name = %s\nca = %s\ncert = node.pem\nkey = node.key\n"
                     "master_key = %s\ntimeout = 5s\n", sr_config_get(agent.cfg, "kms", "servers"),
                     sr_config_get(agent.cfg, "kms", "server_name"), sr_config_get(agent.cfg, "kms", "ca"),
                     sr_config_get(agent.cfg, "agent", "master_key"));
    if (n < 0 || (size_t)n >= sizeof text) return sr_err_set(SR_ERR_CONFIG, "[kms]: settings too long");
    state_path(path, sizeof path, "kms.conf");
    return sr_file_write_atomic(path, text, (size_t)n, 0600, SR_WRITE_NO_SYNC);
}

int load_enrolment(void)
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
int64_t installed_policy_version(char digest[32])
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

/* ---- keys the KMS takes back ------------------------------------------------------------------------ */

/* A heartbeat's access epoch: if it moved (a key revoked or destroyed, a
 * grant taken back), the data keys this agent cached are dropped, in memory
 * and on disk, and the next opens ask the KMS, which refuses what it took
 * back. Which key it was the KMS does not say, so all go: a revocation is
 * rare, a fetch cheap. The first heartbeat drops what was fetched before it
 * (a revocation before it would go unseen otherwise). */
static void follow_access_epoch(int32_t epoch)
{
    pthread_mutex_lock(&agent.lock);
    int64_t was = agent.access_epoch;
    int drop = was != epoch && (was >= 0 || sr_keycache_count(agent.cache) > 0);
    agent.access_epoch = epoch;
    uint64_t generation = drop ? ++agent.keys_dropped : agent.keys_dropped;
    if (drop) sr_keycache_purge(agent.cache, NULL);
    pthread_mutex_unlock(&agent.lock);
    if (!drop) return;
    disk_cache_drop_keys(generation);
    if (was < 0) return;
    char detail[120];
    snprintf(detail, sizeof detail, "access epoch %lld -> %d: cached data keys dropped", (long long)was, (int)epoch);
    sr_log_notice("the KMS revoked a key or took back a grant (%s); the next opens ask it", detail);
    event("node.keys_dropped", agent.node_uuid, agent.nk, "success", detail);
}

void *heartbeat_main(void *arg)
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
        int32_t epoch = rc == SR_OK ? sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_X_ACCESS_EPOCH, SR_KMIP_INTEGER)
                                    : -1;
        int64_t newest_version = newest >= 0 ? r.tree.items[newest].v.i32 : 0;
        int32_t epoch_value = epoch >= 0 ? r.tree.items[epoch].v.i32 : -1;
        sr_kmip_response_free(&r);
        if (rc == SR_OK) follow_policy(newest_version);
        if (epoch_value >= 0) follow_access_epoch(epoch_value);
        int ended = rc == SR_ERR_KMIP_RESULT || (rc == SR_ERR_TLS && strstr(sr_err_detail(), "revoked"));
        pthread_mutex_lock(&agent.lock);
        if (rc == SR_OK) agent.last_heartbeat_ok = sr_time_now_us() / 1000000;
        snprintf(agent.kms_error, sizeof agent.kms_error, "%s", rc == SR_OK || ended ? "" : sr_err_detail());
        pthread_mutex_unlock(&agent.lock);
        if (ended) end_membership(sr_err_detail()); /* the KMS ended it: lease expired, revoked */
        else if (rc != SR_OK) sr_log_warn("heartbeat: %s (the KMS is unreachable: cached keys stay usable)", sr_err_detail());
    }
    return NULL;
}
