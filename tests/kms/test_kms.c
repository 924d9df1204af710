/*
 * kmsd end to end, over real mutual TLS on loopback: every KMIP state
 * transition and refusal with its result reason; ownership and roles (an
 * application's keys invisible to another, a node only with a grant, an
 * auditor without key material); batches and the request's protocol
 * version; hostile clients (garbage, a 2 GiB length, no or a revoked
 * certificate, idle and slowloris connections) while a well-behaved client
 * keeps working; SIGKILL during a burst of creates; a wrong root key or
 * passphrase; every request an audit record.
 */
#include "db.h"
#include "kmip.h"
#include "kms.h"
#include "kmsd_server.h"
#include "sr_test.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[512];
static uint16_t port;

static sr_kmip_client_t *client_as(const char *name, sr_kmip_version_t v) { return kmsd_client(dir, port, name, v); }

static sr_kmip_client_t *client(const char *name) { return client_as(name, (sr_kmip_version_t){1, 4}); }

/* The Result Reason in the last error's detail ("... (reason 11) ..."); 0 if none. */
static unsigned last_reason(void)
{
    const char *p = strstr(sr_err_detail(), "(reason ");
    return p ? (unsigned)strtoul(p + 8, NULL, 10) : 0;
}

static const sr_kmip_key_template_t usage_all = {.bits = 256, .usage_mask = SR_KMIP_USAGE_ENCRYPT |
                                                 SR_KMIP_USAGE_DECRYPT | SR_KMIP_USAGE_WRAP | SR_KMIP_USAGE_UNWRAP};

static void create_key(sr_kmip_client_t *c, const char *name, char uid[SR_KMIP_UID_MAX])
{
    sr_kmip_key_template_t t = usage_all;
    t.name = name;
    SR_CHECK_OK(sr_kmip_create_aes_key(c, &t, uid));
}

/* ---- states ------------------------------------------------------------------------------ */

enum { PRE_ACTIVE = 1, ACTIVE, DEACTIVATED, COMPROMISED, DESTROYED, DESTROYED_COMPROMISED };
enum { OK = 0, NOT_FOUND = 1, WRONG_STATE = 0x0B };
enum { OP_ACTIVATE, OP_REVOKE, OP_COMPROMISE, OP_DESTROY, OP_GET, OP_ENCRYPT, OP_DECRYPT, N_OPS };
static const char *const op_names[] = {"Activate", "Revoke", "Revoke (compromise)", "Destroy", "Get", "Encrypt",
                                       "Decrypt"};

/* A key brought to `state` by the operations KMIP defines. */
static void key_in_state(sr_kmip_client_t *c, int state, char uid[SR_KMIP_UID_MAX], uint8_t ct[64], size_t *ct_len)
{
    static const uint8_t iv[12] = {9};
    create_key(c, "state-table", uid);
    if (state == ACTIVE || state == DEACTIVATED) SR_CHECK_OK(sr_kmip_activate(c, uid));
    if (state == ACTIVE) SR_CHECK_OK(sr_kmip_encrypt(c, uid, iv, 12, (const uint8_t *)"dek", 3, ct, 64, ct_len));
    if (state == DEACTIVATED) SR_CHECK_OK(sr_kmip_revoke(c, uid, SR_KMIP_REVOKE_CESSATION, NULL));
    if (state == COMPROMISED) SR_CHECK_OK(sr_kmip_revoke(c, uid, SR_KMIP_REVOKE_KEY_COMPROMISE, NULL));
    if (state == DESTROYED || state == DESTROYED_COMPROMISED) SR_CHECK_OK(sr_kmip_destroy(c, uid));
    if (state == DESTROYED_COMPROMISED) SR_CHECK_OK(sr_kmip_revoke(c, uid, SR_KMIP_REVOKE_KEY_COMPROMISE, NULL));
}

static sr_err_t apply(sr_kmip_client_t *c, int op, const char *uid, const uint8_t *ct, size_t ct_len)
{
    static const uint8_t iv[12] = {9};
    uint8_t buf[64];
    size_t n = 0;
    switch (op) {
    case OP_ACTIVATE: return sr_kmip_activate(c, uid);
    case OP_REVOKE: return sr_kmip_revoke(c, uid, SR_KMIP_REVOKE_CESSATION, "table");
    case OP_COMPROMISE: return sr_kmip_revoke(c, uid, SR_KMIP_REVOKE_KEY_COMPROMISE, "table");
    case OP_DESTROY: return sr_kmip_destroy(c, uid);
    case OP_GET: return sr_kmip_get_key(c, uid, buf, sizeof buf, &n);
    case OP_ENCRYPT: return sr_kmip_encrypt(c, uid, iv, 12, (const uint8_t *)"dek", 3, buf, sizeof buf, &n);
    default: return sr_kmip_decrypt(c, uid, iv, 12, ct_len ? ct : (const uint8_t *)"0123456789abcdefXYZ",
                                    ct_len ? ct_len : 19, buf, sizeof buf, &n);
    }
}

static void test_state_transitions(void)
{
    /* expected[state][op]: OK, or the result reason; after[state][op]: the state an OK leaves */
    static const unsigned expected[7][N_OPS] = {
        [PRE_ACTIVE] = {OK, WRONG_STATE, OK, OK, OK, WRONG_STATE, WRONG_STATE},
        [ACTIVE] = {WRONG_STATE, OK, OK, WRONG_STATE, OK, OK, OK},
        [DEACTIVATED] = {WRONG_STATE, WRONG_STATE, OK, OK, OK, WRONG_STATE, WRONG_STATE},
        [COMPROMISED] = {WRONG_STATE, WRONG_STATE, WRONG_STATE, OK, OK, WRONG_STATE, WRONG_STATE},
        [DESTROYED] = {WRONG_STATE, WRONG_STATE, OK, WRONG_STATE, NOT_FOUND, WRONG_STATE, WRONG_STATE},
        [DESTROYED_COMPROMISED] = {WRONG_STATE, WRONG_STATE, WRONG_STATE, WRONG_STATE, NOT_FOUND, WRONG_STATE,
                                   WRONG_STATE},
    };
    static const int after[7][N_OPS] = {
        [PRE_ACTIVE] = {ACTIVE, 0, COMPROMISED, DESTROYED, PRE_ACTIVE},
        [ACTIVE] = {0, DEACTIVATED, COMPROMISED, 0, ACTIVE, ACTIVE, ACTIVE},
        [DEACTIVATED] = {0, 0, COMPROMISED, DESTROYED, DEACTIVATED},
        [COMPROMISED] = {0, 0, 0, DESTROYED_COMPROMISED, COMPROMISED},
        [DESTROYED] = {0, 0, DESTROYED_COMPROMISED},
    };
    sr_kmip_client_t *c = client("client");
    for (int state = PRE_ACTIVE; state <= DESTROYED_COMPROMISED; state++) {
        for (int op = 0; op < N_OPS; op++) {
            char uid[SR_KMIP_UID_MAX];
            uint8_t ct[64];
            size_t ct_len = 0;
            key_in_state(c, state, uid, ct, &ct_len);
            sr_err_t rc = apply(c, op, uid, ct, ct_len);
            unsigned want = expected[state][op];
            SR_CHECK_MSG(want == OK ? rc == SR_OK : rc == SR_ERR_KMIP_RESULT && last_reason() == want,
                         "state %d, %s: got %s (%s), want reason %u", state, op_names[op], sr_err_name(rc),
                         rc ? sr_err_detail() : "ok", want);
            sr_kmip_key_attributes_t a;
            SR_CHECK_OK(sr_kmip_get_attributes(c, uid, &a));
            int now = want == OK ? after[state][op] : state;
            SR_CHECK_MSG((int)a.state == now, "state %d, %s: now %u, want %d", state, op_names[op], a.state, now);
            if (op == OP_ACTIVATE && want == OK) SR_CHECK(a.activation_date > 0);
        }
    }
    sr_kmip_client_free(c);
}

/* ---- ownership and roles -------------------------------------------------------------------- */

static void test_ownership_and_roles(void)
{
    sr_kmip_client_t *app = client("client"), *other = client("client2"), *node = client("node1"),
                     *aud = client("auditor1");
    char uid[SR_KMIP_UID_MAX], found[8][SR_KMIP_UID_MAX], out[4096];
    size_t n = 0, len = 0;
    uint8_t buf[128], iv[12] = {1}, ct[64];
    create_key(app, "owned-by-client", uid);
    SR_CHECK_OK(sr_kmip_activate(app, uid));
    /* another application: not found, not in its Locate, cannot destroy */
    SR_CHECK_OK(sr_kmip_locate_by_name(other, "owned-by-client", found, 8, &n));
    SR_CHECK_EQ_INT(n, 0);
    SR_CHECK_ERR(sr_kmip_get_key(other, uid, buf, sizeof buf, &len), SR_ERR_KMIP_RESULT);
    SR_CHECK_EQ_INT(last_reason(), NOT_FOUND);
    SR_CHECK_ERR(sr_kmip_destroy(other, uid), SR_ERR_KMIP_RESULT);
    /* a node: nothing until granted; then Encrypt/Decrypt, never Get, never Create */
    SR_CHECK_ERR(sr_kmip_encrypt(node, uid, iv, 12, (const uint8_t *)"dek", 3, ct, sizeof ct, &len), SR_ERR_KMIP_RESULT);
    SR_CHECK_EQ_INT(last_reason(), NOT_FOUND);
    char args[300];
    snprintf(args, sizeof args, "key grant %s node1", uid);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, args) == 0, "%s", out);
    SR_CHECK_OK(sr_kmip_encrypt(node, uid, iv, 12, (const uint8_t *)"dek", 3, ct, sizeof ct, &len));
    SR_CHECK_OK(sr_kmip_decrypt(node, uid, iv, 12, ct, len, buf, sizeof buf, &n));
    SR_CHECK(n == 3 && !memcmp(buf, "dek", 3));
    SR_CHECK_ERR(sr_kmip_get_key(node, uid, buf, sizeof buf, &len), SR_ERR_KMIP_RESULT);
    SR_CHECK_EQ_INT(last_reason(), 0x0C);
    SR_CHECK_ERR(sr_kmip_revoke(node, uid, SR_KMIP_REVOKE_CESSATION, NULL), SR_ERR_KMIP_RESULT);
    SR_CHECK_EQ_INT(last_reason(), 0x0C);
    char other_uid[SR_KMIP_UID_MAX];
    SR_CHECK_ERR(sr_kmip_create_aes_key(node, &usage_all, other_uid), SR_ERR_KMIP_RESULT);
    SR_CHECK_EQ_INT(last_reason(), 0x0C);
    /* the grant listed, taken back (the next request refused, as before the grant), and not taken twice */
    snprintf(args, sizeof args, "key grants --json %s", uid);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, args) == 0 && strstr(out, "\"granted_to\": [\"node1\"]"), "%s", out);
    snprintf(args, sizeof args, "key ungrant %s node1", uid);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, args) == 0 && strstr(out, "node1 may no longer use key"), "%s", out);
    SR_CHECK_ERR(sr_kmip_decrypt(node, uid, iv, 12, ct, len, buf, sizeof buf, &n), SR_ERR_KMIP_RESULT);
    SR_CHECK_EQ_INT(last_reason(), NOT_FOUND);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, args) == 1 && strstr(out, "is not granted to node1"), "%s", out);
    snprintf(args, sizeof args, "key grants --json %s", uid);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, args) == 0 && strstr(out, "\"granted_to\": []"), "%s", out);
    /* an auditor: sees every key's attributes, never material, changes nothing */
    sr_kmip_key_attributes_t a;
    SR_CHECK_OK(sr_kmip_get_attributes(aud, uid, &a));
    SR_CHECK(a.state == ACTIVE && !strcmp(a.name, "owned-by-client"));
    SR_CHECK_OK(sr_kmip_locate_by_name(aud, "owned-by-client", found, 8, &n));
    SR_CHECK_EQ_INT(n, 1);
    SR_CHECK_ERR(sr_kmip_get_key(aud, uid, buf, sizeof buf, &len), SR_ERR_KMIP_RESULT);
    SR_CHECK_EQ_INT(last_reason(), 0x0C);
    SR_CHECK_ERR(sr_kmip_encrypt(aud, uid, iv, 12, (const uint8_t *)"dek", 3, ct, sizeof ct, &len), SR_ERR_KMIP_RESULT);
    /* a client certificate from this CA whose CN kmsctl never registered */
    sr_kmip_client_t *stranger = client("stranger");
    SR_CHECK_ERR(sr_kmip_locate_by_name(stranger, "owned-by-client", found, 8, &n), SR_ERR_KMIP_RESULT);
    SR_CHECK_EQ_INT(last_reason(), 0x0C);
    sr_kmip_client_free(stranger), sr_kmip_client_free(app), sr_kmip_client_free(other), sr_kmip_client_free(node), sr_kmip_client_free(aud);
}

/* ---- raw messages ------------------------------------------------------------------------------ */

static sr_tls_conn_t *raw_connect(const char *name)
{
    char ca[600], crt[600], key[600];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(crt, sizeof crt, "%s/%s.pem", dir, name ? name : "");
    snprintf(key, sizeof key, "%s/%s.key", dir, name ? name : "");
    sr_tls_options_t o = {.ca_file = ca, .cert_file = name ? crt : NULL, .key_file = name ? key : NULL};
    sr_ssl_ctx_t *ctx = NULL;
    sr_tls_conn_t *conn = NULL;
    SR_CHECK_OK(sr_tls_client_ctx_new(&o, &ctx));
    sr_err_t rc = sr_tls_connect(ctx, "127.0.0.1", port, "localhost", 5000, &conn);
    sr_tls_ctx_free(ctx);
    return rc == SR_OK ? conn : NULL;
}

/* Sends bytes; reads one response into r (0), or -1 when the server closed. */
static int raw_exchange(sr_tls_conn_t *conn, const uint8_t *req, size_t len, sr_kmip_response_t *r, uint8_t **keep)
{
    uint8_t head[8];
    *keep = NULL;
    memset(r, 0, sizeof *r);
    if (sr_tls_write_all(conn, req, len) != SR_OK || sr_tls_read_exact(conn, head, 8) != SR_OK) return -1;
    uint32_t n = sr_get_be32(head + 4);
    uint8_t *buf = malloc(n + 8);
    memcpy(buf, head, 8);
    if (sr_tls_read_exact(conn, buf + 8, n) != SR_OK) return free(buf), -1;
    sr_err_t rc = sr_kmip_response_parse(buf, n + 8, 0, r); /* a failed item is SR_ERR_KMIP_RESULT: r holds it */
    *keep = buf;
    return rc == SR_OK || rc == SR_ERR_KMIP_RESULT ? 0 : -2;
}

static void test_batch_and_versions(void)
{
    sr_tls_conn_t *conn = raw_connect("client");
    SR_CHECK(conn != NULL);
    /* Create + Activate (ID placeholder) + Get Attributes in one message, KMIP 1.1 */
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    sr_kmip_begin(&e, SR_KMIP_TAG_REQUEST_MESSAGE);
    sr_kmip_begin(&e, SR_KMIP_TAG_REQUEST_HEADER);
    sr_kmip_begin(&e, SR_KMIP_TAG_PROTOCOL_VERSION);
    sr_kmip_put_int(&e, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
    sr_kmip_put_int(&e, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, 1);
    sr_kmip_end(&e);
    sr_kmip_put_int(&e, SR_KMIP_TAG_BATCH_COUNT, 3);
    sr_kmip_end(&e);
    static const uint32_t ops[3] = {SR_KMIP_OP_CREATE, SR_KMIP_OP_ACTIVATE, SR_KMIP_OP_GET_ATTRIBUTES};
    for (int i = 0; i < 3; i++) {
        sr_kmip_begin(&e, SR_KMIP_TAG_BATCH_ITEM);
        sr_kmip_put_enum(&e, SR_KMIP_TAG_OPERATION, ops[i]);
        uint8_t id = (uint8_t)(i + 1);
        sr_kmip_put_bytes(&e, SR_KMIP_TAG_UNIQUE_BATCH_ITEM_ID, &id, 1);
        sr_kmip_begin(&e, SR_KMIP_TAG_REQUEST_PAYLOAD);
        if (i == 0) {
            sr_kmip_put_enum(&e, SR_KMIP_TAG_OBJECT_TYPE, SR_KMIP_OBJECT_SYMMETRIC_KEY);
            sr_kmip_begin(&e, SR_KMIP_TAG_TEMPLATE_ATTRIBUTE);
            sr_kmip_begin(&e, SR_KMIP_TAG_ATTRIBUTE);
            sr_kmip_put_text(&e, SR_KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Algorithm");
            sr_kmip_put_enum(&e, SR_KMIP_TAG_ATTRIBUTE_VALUE, SR_KMIP_ALG_AES);
            sr_kmip_end(&e);
            sr_kmip_begin(&e, SR_KMIP_TAG_ATTRIBUTE);
            sr_kmip_put_text(&e, SR_KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Length");
            sr_kmip_put_int(&e, SR_KMIP_TAG_ATTRIBUTE_VALUE, 128);
            sr_kmip_end(&e);
            sr_kmip_end(&e);
        }
        if (i == 2) sr_kmip_put_text(&e, SR_KMIP_TAG_ATTRIBUTE_NAME, "State");
        sr_kmip_end(&e);
        sr_kmip_end(&e);
    }
    sr_kmip_end(&e);
    SR_CHECK_OK(sr_kmip_enc_finish(&e));
    uint8_t head[8], *resp;
    SR_CHECK_OK(sr_tls_write_all(conn, e.buf, e.len));
    SR_CHECK_OK(sr_tls_read_exact(conn, head, 8));
    uint32_t n = sr_get_be32(head + 4);
    resp = malloc(n + 8);
    memcpy(resp, head, 8);
    SR_CHECK_OK(sr_tls_read_exact(conn, resp + 8, n));
    sr_kmip_tree_t t = {0};
    SR_CHECK_OK(sr_kmip_decode(resp, n + 8, &t));
    int32_t hdr = sr_kmip_child(&t, 0, SR_KMIP_TAG_RESPONSE_HEADER, 0);
    int32_t pv = sr_kmip_child(&t, hdr, SR_KMIP_TAG_PROTOCOL_VERSION, 0);
    SR_CHECK_EQ_INT(t.items[sr_kmip_child(&t, pv, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, 0)].v.i32, 1);
    SR_CHECK_EQ_INT(t.items[sr_kmip_child(&t, hdr, SR_KMIP_TAG_BATCH_COUNT, 0)].v.i32, 3);
    int items = 0;
    for (int32_t bi = sr_kmip_child(&t, 0, SR_KMIP_TAG_BATCH_ITEM, 0); bi >= 0; bi = sr_kmip_next_same(&t, bi), items++) {
        int32_t st = sr_kmip_child(&t, bi, SR_KMIP_TAG_RESULT_STATUS, 0);
        int32_t id = sr_kmip_child(&t, bi, SR_KMIP_TAG_UNIQUE_BATCH_ITEM_ID, 0);
        SR_CHECK(st >= 0 && t.items[st].v.u32 == SR_KMIP_STATUS_SUCCESS);
        SR_CHECK(id >= 0 && t.items[id].len == 1 && t.items[id].v.ptr[0] == items + 1);
        if (items == 2) {
            int32_t pl = sr_kmip_child(&t, bi, SR_KMIP_TAG_RESPONSE_PAYLOAD, 0);
            int32_t at = sr_kmip_child(&t, pl, SR_KMIP_TAG_ATTRIBUTE, 0);
            int32_t v = sr_kmip_child(&t, at, SR_KMIP_TAG_ATTRIBUTE_VALUE, 0);
            SR_CHECK(v >= 0 && t.items[v].v.u32 == ACTIVE); /* the placeholder carried the new key through */
        }
    }
    SR_CHECK_EQ_INT(items, 3);
    sr_kmip_tree_free(&t), free(resp);
    /* a reason KMIP 1.0 does not define is sent as one it does: Get in another key format */
    sr_kmip_enc_rewind(&e, 0, 0);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 0}, SR_KMIP_OP_GET);
    sr_kmip_put_text(&e, SR_KMIP_TAG_UNIQUE_IDENTIFIER, "whatever");
    sr_kmip_put_enum(&e, SR_KMIP_TAG_KEY_FORMAT_TYPE, 7);
    sr_kmip_request_end(&e);
    SR_CHECK_OK(sr_kmip_enc_finish(&e));
    sr_kmip_response_t r;
    SR_CHECK(raw_exchange(conn, e.buf, e.len, &r, &resp) == 0);
    SR_CHECK(r.version.major == 1 && r.version.minor == 0 && r.status == SR_KMIP_STATUS_FAILED);
    SR_CHECK_EQ_INT(r.reason, NOT_FOUND); /* the object is checked first */
    sr_kmip_response_free(&r), free(resp);
    /* an operation we do not implement: Operation Not Supported, the connection stays */
    sr_kmip_enc_rewind(&e, 0, 0);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 2}, 2 /* Create Key Pair */);
    sr_kmip_request_end(&e);
    SR_CHECK_OK(sr_kmip_enc_finish(&e));
    SR_CHECK(raw_exchange(conn, e.buf, e.len, &r, &resp) == 0);
    SR_CHECK(r.status == SR_KMIP_STATUS_FAILED && r.reason == 5 && r.version.minor == 2);
    sr_kmip_response_free(&r), free(resp);
    /* garbage inside a well-framed message: Invalid Message, the connection stays */
    uint8_t garbage[64] = {0x42, 0x00, 0x78, 0x01, 0, 0, 0, 56};
    memset(garbage + 8, 0xA5, 56);
    SR_CHECK(raw_exchange(conn, garbage, sizeof garbage, &r, &resp) == 0);
    SR_CHECK(r.status == SR_KMIP_STATUS_FAILED && r.reason == 4);
    sr_kmip_response_free(&r), free(resp);
    SR_CHECK(raw_exchange(conn, e.buf, e.len, &r, &resp) == 0); /* still served */
    sr_kmip_response_free(&r), free(resp);
    /* a length of 2 GiB: refused from the header, the connection closed, nothing allocated */
    uint8_t huge[8] = {0x42, 0x00, 0x78, 0x01, 0x80, 0, 0, 0};
    SR_CHECK(raw_exchange(conn, huge, sizeof huge, &r, &resp) == 0);
    SR_CHECK(r.status == SR_KMIP_STATUS_FAILED && r.reason == 4);
    sr_kmip_response_free(&r), free(resp);
    SR_CHECK(raw_exchange(conn, e.buf, e.len, &r, &resp) == -1);
    sr_tls_close(conn);
    sr_kmip_enc_free(&e);
}

/* ---- certificates --------------------------------------------------------------------------------- */

static void test_certificates(void)
{
    char out[4096], found[2][SR_KMIP_UID_MAX];
    size_t n = 0;
    sr_tls_conn_t *anon = raw_connect(NULL); /* no client certificate: the handshake or the first read fails */
    if (anon) {
        uint8_t b[8];
        SR_CHECK(sr_tls_read_exact(anon, b, 8) != SR_OK);
        sr_tls_close(anon);
    }
    sr_kmip_client_t *rogue = client("rogue-client");
    SR_CHECK(sr_kmip_locate_by_name(rogue, "x", found, 2, &n) != SR_OK); /* another CA */
    sr_kmip_client_free(rogue);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, "cert issue leaver --role application") == 0, "%s", out);
    sr_kmip_client_t *c = client("leaver");
    SR_CHECK_OK(sr_kmip_locate_by_name(c, "x", found, 2, &n));
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, "cert revoke leaver --yes") == 0, "%s", out);
    SR_CHECK(sr_kmip_locate_by_name(c, "x", found, 2, &n) != SR_OK); /* the open connection: refused at once */
    SR_CHECK(sr_kmip_locate_by_name(c, "x", found, 2, &n) != SR_OK); /* and a new one */
    sr_kmip_client_free(c);
    SR_CHECK(kmsctl_run(dir, out, sizeof out, "cert list --json") == 0 && strstr(out, "\"name\": \"leaver\", \"role\": "
                                                                              "\"application\", \"status\": \"revoked\""));
}

/* A request of `type` ("EC" P-256, "RSA" 2048, "ED25519"), DER, signed by
 * its key (or, bad_signature, with a byte of its signature flipped). */
static uint8_t *make_csr(const char *type, int bad_signature, EVP_PKEY **key, size_t *len)
{
    *key = !strcmp(type, "EC") ? EVP_EC_gen("P-256") : !strcmp(type, "RSA") ? EVP_RSA_gen(2048)
                                                                             : EVP_PKEY_Q_keygen(NULL, NULL, type);
    X509_REQ *req = X509_REQ_new();
    unsigned char *der = NULL;
    int n = -1;
    if (*key && req && X509_REQ_set_pubkey(req, *key) &&
        X509_REQ_sign(req, *key, !strcmp(type, "ED25519") ? NULL : EVP_sha256()) > 0)
        n = i2d_X509_REQ(req, &der);
    X509_REQ_free(req);
    if (n <= 0) return NULL;
    if (bad_signature) der[n - 3] ^= 0x01; /* inside the signature, the last field */
    uint8_t *out = malloc((size_t)n);
    if (out) memcpy(out, der, (size_t)n), *len = (size_t)n;
    OPENSSL_free(der);
    return out;
}

/* kmsd signs a node's request: the certificate carries the request's key
 * exactly (copied as encoded: an EC key with its named curve, an RSA key
 * with NULL parameters, an Ed25519 key with none), is signed by the CA, and
 * a request whose signature does not verify gets nothing. */
static void test_requests_are_signed_with_their_own_key(void)
{
    char ca_cert[700], ca_key[700];
    snprintf(ca_cert, sizeof ca_cert, "%s/ca.pem", dir), snprintf(ca_key, sizeof ca_key, "%s/ca.key", dir);
    kms_pki_ca_t *ca = NULL;
    SR_CHECK(chmod(ca_key, 0644) == 0); /* a CA key others can read signs for them too: refused */
    SR_CHECK_ERR(kms_pki_ca_load(ca_cert, ca_key, &ca), SR_ERR_PERMISSION);
    SR_CHECK_CONTAINS(sr_err_detail(), "CA key");
    SR_CHECK(chmod(ca_key, 0600) == 0);
    SR_CHECK_OK(kms_pki_ca_load(ca_cert, ca_key, &ca));
    FILE *f = fopen(ca_cert, "r");
    X509 *ca_x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    SR_CHECK(ca && ca_x);
    static const char *const types[] = {"EC", "RSA", "ED25519"};
    for (int t = 0; ca && ca_x && t < 3; t++) {
        EVP_PKEY *key = NULL;
        size_t len = 0, cert_len = 0;
        uint8_t *csr = make_csr(types[t], 0, &key, &len), *cert = NULL;
        kms_cert_info_t info;
        SR_CHECK(csr != NULL);
        SR_CHECK_OK(kms_pki_sign_csr(ca, csr, len, "node-x", 1, &cert, &cert_len, &info));
        const unsigned char *p = cert;
        X509 *x = cert ? d2i_X509(NULL, &p, (long)cert_len) : NULL;
        SR_CHECK_MSG(x && EVP_PKEY_eq(X509_get0_pubkey(x), key) == 1, "%s: the certificate's key is not the request's",
                     types[t]);
        SR_CHECK_MSG(x && X509_verify(x, X509_get0_pubkey(ca_x)) == 1, "%s: not signed by the CA", types[t]);
        X509_free(x), free(cert), free(csr), EVP_PKEY_free(key);
        cert = NULL;
        csr = make_csr(types[t], 1, &key, &len);
        SR_CHECK_ERR(kms_pki_sign_csr(ca, csr, len, "node-x", 1, &cert, &cert_len, &info), SR_ERR_AUTH);
        SR_CHECK(cert == NULL);
        free(csr), EVP_PKEY_free(key);
    }
    X509_free(ca_x);
    kms_pki_ca_free(ca);
}

/* ---- hostile load ------------------------------------------------------------------------------------ */

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) close(fd), fd = -1;
    return fd;
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kib = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kib;
}

static void test_hostile_clients_do_not_starve_others(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int want = 1000 + 200 + 64;
    int idle_n = rl.rlim_cur >= (rlim_t)want + 64 ? 1000 : (int)rl.rlim_cur - 300;
    int slow_n = 200;
    int *idle = calloc((size_t)idle_n, sizeof *idle), *slow = calloc((size_t)slow_n, sizeof *slow);
    for (int i = 0; i < idle_n; i++) idle[i] = tcp_connect();
    for (int i = 0; i < slow_n; i++) { /* a valid TLS record header announcing 512 bytes, then a byte at a time */
        slow[i] = tcp_connect();
        if (slow[i] >= 0 && send(slow[i], "\x16\x03\x01\x02\x00", 5, MSG_NOSIGNAL) != 5) close(slow[i]), slow[i] = -1;
    }
    printf("  %d idle and %d slowloris connections (descriptor limit %ld)\n", idle_n, slow_n, (long)rl.rlim_cur);
    sr_kmip_client_t *c = client("client");
    char uid[SR_KMIP_UID_MAX];
    uint64_t worst_ms = 0;
    int ok = 0;
    uint64_t end = sr_time_mono_ms() + 5000; /* past handshake_timeout (2 s): the watchdog has cut the dribblers */
    for (int round = 0; sr_time_mono_ms() < end; round++) {
        for (int i = 0; i < slow_n; i++) /* a TLS ClientHello, one byte at a time */
            if (slow[i] >= 0 && send(slow[i], "\x01", 1, MSG_NOSIGNAL) != 1) close(slow[i]), slow[i] = -1;
        uint64_t t0 = sr_time_mono_ms();
        sr_kmip_key_template_t t = usage_all;
        t.name = "under-attack";
        if (sr_kmip_create_aes_key(c, &t, uid) == SR_OK) ok++;
        else SR_CHECK_MSG(0, "well-behaved create failed under load: %s", sr_err_detail());
        uint64_t dt = sr_time_mono_ms() - t0;
        if (dt > worst_ms) worst_ms = dt;
        usleep(100000);
    }
    int cut = 0;
    for (int i = 0; i < slow_n; i++) cut += slow[i] < 0;
    long rss = rss_kib(kmsd_pid());
    printf("  well-behaved client: %d creates, slowest %llu ms; %d of %d dribblers cut; kmsd RSS %ld KiB\n", ok,
           (unsigned long long)worst_ms, cut, slow_n, rss);
    SR_CHECK(ok >= 20);
    SR_CHECK_MSG(cut == slow_n, "%d dribblers still connected after the handshake deadline", slow_n - cut);
    SR_CHECK_MSG(rss > 0 && rss < 256 * 1024, "kmsd RSS %ld KiB", rss);
    for (int i = 0; i < idle_n; i++)
        if (idle[i] >= 0) close(idle[i]);
    for (int i = 0; i < slow_n; i++)
        if (slow[i] >= 0) close(slow[i]);
    free(idle), free(slow);
    sr_kmip_client_free(c);
}

/* ---- crash ---------------------------------------------------------------------------------------- */

/* Each child creates keys as fast as it can and writes every acknowledged UID to its pipe. */
static void create_burst(int fd, int child)
{
    sr_kmip_client_t *c = client("client");
    char uid[SR_KMIP_UID_MAX], name[64], line[200];
    for (int i = 0;; i++) {
        snprintf(name, sizeof name, "burst-%d-%d", child, i);
        sr_kmip_key_template_t t = usage_all;
        t.name = name, t.group = "burst";
        if (sr_kmip_create_aes_key(c, &t, uid) != SR_OK) break;
        int n = snprintf(line, sizeof line, "%s %s\n", uid, name);
        if (write(fd, line, (size_t)n) != n) break;
    }
    _exit(0);
}

static void test_sigkill_loses_no_acknowledged_key(void)
{
    enum { CHILDREN = 4 };
    int fds[2];
    SR_CHECK(pipe(fds) == 0);
    pid_t kids[CHILDREN];
    for (int k = 0; k < CHILDREN; k++)
        if ((kids[k] = fork()) == 0) close(fds[0]), create_burst(fds[1], k);
    close(fds[1]);
    usleep(1500000);
    SR_CHECK_EQ_INT(kmsd_stop(SIGKILL), 128 + SIGKILL);
    static char acked[1 << 22];
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], acked + len, sizeof acked - 1 - len)) > 0) len += (size_t)r; /* until every child is gone */
    acked[len] = '\0';
    close(fds[0]);
    for (int k = 0; k < CHILDREN; k++) waitpid(kids[k], NULL, 0);
    SR_CHECK(kmsd_start(dir, port) == 0);
    sr_kmip_client_t *c = client("client"), *admin = client("admin");
    int n_acked = 0;
    for (char *line = strtok(acked, "\n"); line; line = strtok(NULL, "\n"), n_acked++) {
        char uid[SR_KMIP_UID_MAX], name[64];
        SR_CHECK(sscanf(line, "%127s %63s", uid, name) == 2);
        sr_kmip_key_attributes_t a;
        SR_CHECK_MSG(sr_kmip_get_attributes(c, uid, &a) == SR_OK && !strcmp(a.name, name) && a.length == 256,
                     "acknowledged key %s (%s) lost: %s", uid, name, sr_err_detail());
    }
    /* none half-made: every key of the burst, acknowledged or not, is whole */
    static char all[4096][SR_KMIP_UID_MAX];
    size_t n = 0;
    SR_CHECK_OK(sr_kmip_locate(admin, NULL, "burst", all, 4096, &n));
    for (size_t i = 0; i < n && i < 4096; i++) {
        uint8_t key[64];
        size_t klen = 0;
        sr_kmip_key_attributes_t a;
        SR_CHECK_OK(sr_kmip_get_attributes(admin, all[i], &a));
        SR_CHECK(a.name[0] && !strcmp(a.group, "burst") && a.state == PRE_ACTIVE);
        SR_CHECK_OK(sr_kmip_get_key(admin, all[i], key, sizeof key, &klen));
        SR_CHECK_EQ_INT(klen, 32);
    }
    printf("  SIGKILL during %d clients' creates: %d acknowledged, %zu in the store, all whole\n", CHILDREN, n_acked, n);
    SR_CHECK(n_acked > 10 && n >= (size_t)n_acked && n <= (size_t)n_acked + CHILDREN);
    sr_kmip_client_free(c), sr_kmip_client_free(admin);
}

/* ---- SIGHUP ------------------------------------------------------------------------------------------ */

static void test_sighup_reload_keeps_a_good_config(void)
{
    char conf[600], saved[600], cmd[2048], out[4096], found[2][SR_KMIP_UID_MAX];
    size_t n = 0;
    snprintf(conf, sizeof conf, "%s/kmsd.conf", dir);
    snprintf(saved, sizeof saved, "%s/kmsd.conf.good", dir);
    snprintf(cmd, sizeof cmd, "cp %s %s && sed -i 's/^cert = server.pem$/cert = missing.pem/' %s", conf, saved, conf);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    kill(kmsd_pid(), SIGHUP);
    usleep(500000);
    sr_kmip_client_t *c = client("client"); /* a new connection: the running certificates still serve */
    SR_CHECK_OK(sr_kmip_locate_by_name(c, "x", found, 2, &n));
    sr_kmip_client_free(c);
    snprintf(cmd, sizeof cmd, "grep -c 'reload refused, the running configuration stays' %s/kmsd.stderr", dir);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);
    snprintf(cmd, sizeof cmd, "cp %s %s", saved, conf);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    kill(kmsd_pid(), SIGHUP);
    usleep(500000);
    snprintf(cmd, sizeof cmd, "grep -c 'reloaded certificates and limits' %s/kmsd.stderr", dir);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);
    c = client("client");
    SR_CHECK_OK(sr_kmip_locate_by_name(c, "x", found, 2, &n));
    sr_kmip_client_free(c);
}

static void test_store_backup_and_restore(void)
{
    char out[4096], cmd[2048], backup[700], found[2][SR_KMIP_UID_MAX];
    size_t n = 0;
    snprintf(backup, sizeof backup, "%s/store-backup.db", sr_test_tmpdir());
    if (kmsd_postgres()) { /* PostgreSQL's own tools back it up; kmsctl says so */
        snprintf(cmd, sizeof cmd, "store backup %s", backup);
        SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, cmd) == 3 && strstr(out, "pg_dump"), "%s", out);
        return;
    }
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, "key create kept-by-the-backup") == 0, "%s", out);
    snprintf(cmd, sizeof cmd, "store backup %s", backup);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, cmd) == 0, "%s", out);
    SR_CHECK(!sr_test_file_contains(backup, "kept-by-the-backup", 18)); /* encrypted like the store */
    SR_CHECK(kmsctl_run(dir, out, sizeof out, cmd) == 1);                 /* never overwrites */
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, "key create made-after-the-backup") == 0, "%s", out);
    snprintf(cmd, sizeof cmd, "store restore %s --yes", backup);
    SR_CHECK(kmsctl_run(dir, out, sizeof out, cmd) == 1 && strstr(out, "kmsd is running"));
    SR_CHECK_EQ_INT(kmsd_stop(SIGTERM), 0);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, cmd) == 0, "%s", out);
    SR_CHECK(kmsd_start(dir, port) == 0);
    sr_kmip_client_t *admin = client("admin");
    SR_CHECK_OK(sr_kmip_locate_by_name(admin, "kept-by-the-backup", found, 2, &n));
    SR_CHECK_EQ_INT(n, 1);
    SR_CHECK_OK(sr_kmip_locate_by_name(admin, "made-after-the-backup", found, 2, &n));
    SR_CHECK_EQ_INT(n, 0);
    sr_kmip_client_free(admin);
}

/* A full disk under kmsd's store (SQLite, WAL, synchronous=FULL): a small
 * tmpfs the test mounts (root only; skipped where it cannot, and for a
 * PostgreSQL store), filled to a few hundred KiB, then keys created until one
 * is refused. The refusal is a KMIP error on a connection that stays up,
 * kmsd keeps answering, creates work again once there is room, and after a
 * SIGKILL every acknowledged key is there. */
static void test_full_disk_under_the_store(void)
{
    if (kmsd_postgres()) return (void)printf("  skipped: the store is in PostgreSQL\n");
    char mnt[700], cmd[4096], conf[800], log[800], store[800], filler[800], out_buf[4096];
    snprintf(mnt, sizeof mnt, "%s/small-store", sr_test_tmpdir());
    snprintf(store, sizeof store, "%s/store.db", mnt);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    snprintf(conf, sizeof conf, "%s/kmsd-full.conf", dir);
    snprintf(log, sizeof log, "%s/kmsd-full.stderr", dir);
    SR_CHECK_EQ_INT(kmsd_stop(SIGTERM), 0);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && mount -t tmpfs -o size=%dk tmpfs %s", mnt, 8192, mnt);
    if (geteuid() != 0 || sr_test_command(out_buf, sizeof out_buf, cmd) != 0) {
        printf("  skipped: cannot mount a tmpfs here (%s)\n", geteuid() ? "not root" : "mount refused");
        SR_CHECK(kmsd_start(dir, port) == 0);
        return;
    }
    snprintf(cmd, sizeof cmd, "cp %s/store.db %s && sed 's|^path = .*|path = %s|' %s/kmsd.conf > %s", dir, store,
             store, dir, conf);
    SR_CHECK(sr_test_command(out_buf, sizeof out_buf, cmd) == 0);
    /* all but 256 KiB taken */
    snprintf(cmd, sizeof cmd, "free=$(df -k --output=avail %s | tail -1) && dd if=/dev/zero of=%s bs=1k "
             "count=$((free - 256)) status=none", mnt, filler);
    SR_CHECK(sr_test_command(out_buf, sizeof out_buf, cmd) == 0);
    pid_t full = kmsd_spawn(conf, log, port);
    SR_CHECK(full > 0);
    sr_kmip_client_t *c = client("admin");
    static char acked[4000][SR_KMIP_UID_MAX];
    int n = 0, refused = 0;
    while (n < 4000) {
        char name[32];
        snprintf(name, sizeof name, "full-%d", n);
        sr_kmip_key_template_t t = usage_all;
        t.name = name;
        if (sr_kmip_create_aes_key(c, &t, acked[n]) != SR_OK) {
            refused = 1;
            break;
        }
        n++;
    }
    printf("  a store on a tmpfs with 256 KiB left: %d keys created, then refused: %s\n", n, sr_err_detail());
    SR_CHECK_MSG(refused && n > 0, "never refused (%d keys)", n);
    SR_CHECK_MSG(strstr(sr_err_detail(), "no space left on device"), "the refusal does not say why: %s",
                 sr_err_detail());
    sr_kmip_key_attributes_t a;
    SR_CHECK_MSG(sr_kmip_get_attributes(c, acked[0], &a) == SR_OK, "after the refusal: %s", sr_err_detail());
    SR_CHECK(kill(full, 0) == 0);
    SR_CHECK(unlink(filler) == 0); /* room again */
    sr_kmip_key_template_t t = usage_all;
    t.name = "after-the-full-disk";
    SR_CHECK_MSG(sr_kmip_create_aes_key(c, &t, acked[n]) == SR_OK, "with room again: %s", sr_err_detail());
    n++;
    sr_kmip_client_free(c);
    kill(full, SIGKILL), waitpid(full, NULL, 0);
    full = kmsd_spawn(conf, log, port);
    SR_CHECK(full > 0);
    c = client("admin");
    for (int i = 0; i < n; i++)
        SR_CHECK_MSG(sr_kmip_get_attributes(c, acked[i], &a) == SR_OK, "acknowledged key %s lost: %s", acked[i],
                     sr_err_detail());
    sr_kmip_client_free(c);
    kill(full, SIGTERM), waitpid(full, NULL, 0);
    snprintf(cmd, sizeof cmd, "umount %s", mnt);
    SR_CHECK(sr_test_command(out_buf, sizeof out_buf, cmd) == 0);
    SR_CHECK(kmsd_start(dir, port) == 0);
}

/* ---- root key ------------------------------------------------------------------------------------------ */

static void test_wrong_root_key_refused(void)
{
    char cmd[2048], out[4096];
    SR_CHECK_EQ_INT(kmsd_stop(SIGTERM), 0);
    snprintf(cmd, sizeof cmd, "cd %s && mv root.key root.key.good && %s keygen root.key", dir,
             sr_test_build_path("tde/tdectl"));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);
    snprintf(cmd, sizeof cmd, "%s --config %s/kmsd.conf --foreground", sr_test_build_path("kms_server/kmsd"), dir);
    int status = sr_test_command(out, sizeof out, cmd);
    SR_CHECK_MSG(status == 3 && strstr(out, "wrong") && strstr(out, "root key"), "status %d: %s", status, out);
    snprintf(cmd, sizeof cmd, "cd %s && mv root.key.good root.key", dir);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    SR_CHECK(kmsd_start(dir, port) == 0);
}

static void test_passphrase_store(void)
{
    char pdir[600], cmd[2048], out[4096];
    snprintf(pdir, sizeof pdir, "%s/pass", sr_test_tmpdir());
    snprintf(cmd, sizeof cmd, "KMSD_PASSPHRASE='correct horse battery staple' %s init --dir %s --port %u",
             sr_test_build_path("kms_server/kmsctl"), pdir, sr_test_free_port());
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);
    snprintf(cmd, sizeof cmd, "test ! -e %s/root.key && grep -q '^salt ' %s/store.db.kdf", pdir, pdir);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    snprintf(cmd, sizeof cmd, "KMSD_PASSPHRASE='wrong horse battery staple' KMSCTL_CONFIG=%s/kmsctl.conf %s cert list",
             pdir, sr_test_build_path("kms_server/kmsctl"));
    int status = sr_test_command(out, sizeof out, cmd);
    SR_CHECK_MSG(status == 3 && strstr(out, "wrong passphrase or root key"), "status %d: %s", status, out);
    snprintf(cmd, sizeof cmd, "KMSD_PASSPHRASE='correct horse battery staple' KMSCTL_CONFIG=%s/kmsctl.conf %s cert list",
             pdir, sr_test_build_path("kms_server/kmsctl"));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0 && strstr(out, "admin"), "%s", out);
    /* a passphrase file others can read is refused, saying what to run */
    snprintf(cmd, sizeof cmd, "cd %s && printf 'correct horse battery staple\\n' > loose && chmod 644 loose && "
             "%s init --dir %s/pass2 --port %u --passphrase-file loose", sr_test_tmpdir(),
             sr_test_build_path("kms_server/kmsctl"), sr_test_tmpdir(), sr_test_free_port());
    status = sr_test_command(out, sizeof out, cmd);
    SR_CHECK_MSG(status != 0 && strstr(out, "passphrase file loose is readable by group or others (mode 644)"),
                 "status %d: %s", status, out);
}

/* ---- audit ----------------------------------------------------------------------------------------------- */

static void test_every_request_audited(void)
{
    char cmd[2048], out[1 << 16], path[600];
    snprintf(path, sizeof path, "%s/audit.log", sr_test_tmpdir());
    SR_CHECK_EQ_INT(kmsd_stop(SIGTERM), 0); /* stopped: the log is sealed */
    snprintf(cmd, sizeof cmd, "%s verify %s --key %s/audit.pub --strict", sr_test_build_path("audit/tde-audit"),
             path, sr_test_tmpdir());
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);
    size_t len = 0;
    uint8_t *log = sr_test_read_file(path, &len);
    SR_CHECK(log != NULL);
    if (!log) return;
    char *text = malloc(len + 1);
    memcpy(text, log, len), text[len] = '\0';
    SR_CHECK(strstr(text, "\"component\":\"kms\",\"event\":\"kmip.create\"") != NULL);
    SR_CHECK(strstr(text, "\"subject\":\"client2\"") && strstr(text, "\"outcome\":\"denied\""));
    SR_CHECK(strstr(text, "\"event\":\"tls.connection\"") && strstr(text, "certificate revoked"));
    SR_CHECK(strstr(text, "\"source\":\"127.0.0.1:") != NULL);
    free(log), free(text);
    SR_CHECK(kmsd_start(dir, port) == 0);
}

/* kmsctl's changes to the store are recorded before they are committed: with
 * the host's sealer, a certificate issued and revoked and a grant are in its
 * log; a grant whose record the sealer cannot take (a principal name past
 * the 16 KiB event limit) is not made, nor a store backup whose record it
 * refuses. */
static void test_kmsctl_records_before_it_commits(void)
{
    char sock[700], log[700], sign[700], cmd[4096], out[8192], uid[128] = "";
    snprintf(sock, sizeof sock, "%s/sealer.sock", sr_test_tmpdir());
    snprintf(log, sizeof log, "%s/kmsctl-audit.log", sr_test_tmpdir());
    snprintf(sign, sizeof sign, "%s/kmsctl-audit", sr_test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s keygen %s >/dev/null", sr_test_build_path("audit/tde-audit"), sign);
    SR_CHECK_EQ_INT(sr_test_command(out, sizeof out, cmd), 0);
    strcat(sign, ".sign");
    pid_t sealer = sr_test_start_sealer(sock, log, sign);
    setenv("STRONGROOM_AUDIT_SOCKET", sock, 1);
    SR_CHECK_MSG(kmsctl_run(dir, uid, sizeof uid, "key create recorded-grants 2>/dev/null") == 0, "%s", uid);
    uid[strcspn(uid, "\n")] = '\0';
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, "cert issue recorded1 --role application") == 0, "%s", out);
    snprintf(cmd, sizeof cmd, "key grant %s recorded1", uid);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, cmd) == 0, "%s", out);
    snprintf(cmd, sizeof cmd, "key grant %s \"$(head -c 17000 /dev/zero | tr '\\0' x)\"", uid);
    SR_CHECK_EQ_INT(kmsctl_run(dir, out, sizeof out, cmd), 3);
    SR_CHECK_CONTAINS(out, "the audit log cannot record this change, so it is not made");
    snprintf(cmd, sizeof cmd, "key grants --json %s", uid);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, cmd) == 0 && strstr(out, "[\"recorded1\"]"), "%s", out);
    SR_CHECK_MSG(kmsctl_run(dir, out, sizeof out, "cert revoke recorded1 --yes") == 0, "%s", out);
    /* a store backup whose record the sealer refuses (a relay refusing it) is not made; then it is */
    char relay[700], backup[700];
    snprintf(relay, sizeof relay, "%s/refusing.sock", sr_test_tmpdir());
    snprintf(backup, sizeof backup, "%s/recorded-backup.db", sr_test_tmpdir());
    snprintf(cmd, sizeof cmd, "store backup %s", backup);
    int sqlite_store = !kmsd_postgres(); /* PostgreSQL stores are backed up with pg_dump */
    pid_t refusing = sqlite_store ? sr_test_refusing_relay(relay, sock, "store.backup") : -1;
    setenv("STRONGROOM_AUDIT_SOCKET", relay, 1);
    SR_CHECK(!sqlite_store || kmsctl_run(dir, out, sizeof out, cmd) == 3);
    SR_CHECK(!sqlite_store || strstr(out, "the audit log cannot record this store.backup, so it is not made"));
    SR_CHECK_MSG(access(backup, F_OK) != 0, "a backup was made without its record");
    setenv("STRONGROOM_AUDIT_SOCKET", sock, 1);
    SR_CHECK_MSG(!sqlite_store || kmsctl_run(dir, out, sizeof out, cmd) == 0, "%s", out);
    if (refusing > 0) kill(refusing, SIGTERM), waitpid(refusing, NULL, 0);
    unsetenv("STRONGROOM_AUDIT_SOCKET");
    kill(sealer, SIGTERM), waitpid(sealer, NULL, 0);
    static const char *const recorded[] = {"\"event\":\"cert.issued\"", "\"event\":\"key.grant\"",
                                           "\"event\":\"cert.revoked\""};
    SR_CHECK(!sqlite_store || sr_test_file_contains(log, "\"event\":\"store.backup\"", 22));
    for (size_t i = 0; i < sizeof recorded / sizeof recorded[0]; i++) {
        snprintf(cmd, sizeof cmd, "grep -c '%s' %s", recorded[i], log);
        SR_CHECK_EQ_INT(sr_test_command(out, sizeof out, cmd), 0);
        SR_CHECK_MSG(atoi(out) == 1, "%s: %s", recorded[i], out);
    }
    char refused_name[65]; /* a run of the refused grant's principal name */
    memset(refused_name, 'x', 64), refused_name[64] = '\0';
    SR_CHECK_MSG(!sr_test_file_contains(log, refused_name, 64), "the refused grant was recorded");
}

/* In a child (opening an SQLite store registers the VFS with its root key):
 * a store (SQLite, or a new PostgreSQL database under with-postgres) whose
 * node leases are kept to the second, as stores were before leases were
 * kept in milliseconds; kmsd's store opening converts it once. */
static int old_store_converted(const char *store, const char *root)
{
    sr_keyprov_t *kp = NULL;
    kms_store_t *s = NULL;
    kms_db_t *db = NULL;
    kms_node_t n = {.uuid = "00000000-0000-4000-8000-000000000001", .name = "old", .state = "active",
                    .lease_expires_ms = 1900000123456, .joined = 1700000000};
    char uri[1200];
    snprintf(uri, sizeof uri, kms_db_is_postgres(store) ? "%s" : "file:%s?vfs=strongroom", store);
    if (kms_root_provider(store, root, NULL, 1, &kp) != SR_OK || kms_store_open_encrypted(store, kp, &s) != SR_OK ||
        kms_store_begin(s) != SR_OK || kms_node_save(s, &n) != SR_OK || kms_store_commit(s) != SR_OK)
        return fprintf(stderr, "make the store: %s\n", sr_err_detail()), 1;
    kms_store_close(s);
    if (kms_db_open(uri, &db) != SR_OK ||
        kms_db_exec(db, "ALTER TABLE nodes RENAME COLUMN lease_expires_ms TO lease_expires;"
                        "UPDATE nodes SET lease_expires = lease_expires / 1000", "make it old") != SR_OK)
        return fprintf(stderr, "make it old: %s\n", sr_err_detail()), 1;
    kms_db_close(db);
    for (int open = 0; open < 2; open++) { /* converted once: a second opening changes nothing */
        kms_node_t got;
        if (kms_store_open_encrypted(store, kp, &s) != SR_OK || kms_node_load(s, n.uuid, &got) != SR_OK)
            return fprintf(stderr, "open the old store: %s\n", sr_err_detail()), 1;
        kms_store_close(s);
        if (got.lease_expires_ms != 1900000123000)
            return fprintf(stderr, "lease %lld\n", (long long)got.lease_expires_ms), 1;
    }
    sr_keyprov_free(kp);
    return 0;
}

static void test_store_with_leases_to_the_second_is_converted(void)
{
    char store[700], root[700];
    snprintf(store, sizeof store, "%s/old-leases.db", dir);
    SR_CHECK(!kmsd_postgres() || kmsd_new_database(store, sizeof store) == 0);
    snprintf(root, sizeof root, "%s/old-leases.key", dir);
    pid_t pid = fork();
    if (pid == 0) _exit(old_store_converted(store, root));
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    static const char *const certs[] = {"client:application", "client2:application", "node1:node",
                                        "auditor1:auditor", NULL};
    char cmd[2048], out[4096];
    snprintf(dir, sizeof dir, "%s", sr_test_path("kms"));
    if (kmsd_init(dir, certs, &port) != 0) return 1;
    /* a certificate from this CA for a CN kmsctl never registered, and one from another CA */
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout stranger.key "
             "-subj /CN=stranger -out stranger.csr 2>/dev/null && printf 'extendedKeyUsage=clientAuth\\n' > ext && "
             "openssl x509 -req -in stranger.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext "
             "-out stranger.pem 2>/dev/null && %s rogue >/dev/null && cp rogue/rogue-client.* .",
             dir, sr_test_source_path("tests/pki/make-test-pki"));
    if (sr_test_command(out, sizeof out, cmd) != 0) return fprintf(stderr, "%s\n", out), 1;
    /* short timeouts, so the hostile-client test does not wait minutes; an audit log */
    snprintf(cmd, sizeof cmd,
             "cd %s && %s keygen --out %s/audit && sed -i 's/^\\[server\\]$/[server]\\nhandshake_timeout = 2s\\n"
             "idle_timeout = 30s\\nmessage_timeout = 2s\\nmax_connections = 2048/' kmsd.conf && "
             "printf '\\n[audit]\\nlog = %s/audit.log\\nsign_key = %s/audit.sign\\n' >> kmsd.conf",
             dir, sr_test_build_path("audit/tde-audit"), sr_test_tmpdir(), sr_test_tmpdir(), sr_test_tmpdir());
    if (sr_test_command(out, sizeof out, cmd) != 0) return fprintf(stderr, "%s\n", out), 1;
    struct rlimit rl; /* the hostile test opens over a thousand sockets; kmsd inherits the limit */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) rl.rlim_cur = rl.rlim_max, setrlimit(RLIMIT_NOFILE, &rl);
    if (kmsd_start(dir, port) != 0) return 1;
    SR_RUN(test_store_with_leases_to_the_second_is_converted);
    SR_RUN(test_state_transitions);
    SR_RUN(test_ownership_and_roles);
    SR_RUN(test_batch_and_versions);
    SR_RUN(test_certificates);
    SR_RUN(test_requests_are_signed_with_their_own_key);
    SR_RUN(test_hostile_clients_do_not_starve_others);
    SR_RUN(test_sigkill_loses_no_acknowledged_key);
    SR_RUN(test_sighup_reload_keeps_a_good_config);
    SR_RUN(test_store_backup_and_restore);
    SR_RUN(test_full_disk_under_the_store);
    SR_RUN(test_wrong_root_key_refused);
    SR_RUN(test_passphrase_store);
    SR_RUN(test_kmsctl_records_before_it_commits);
    SR_RUN(test_every_request_audited);
    kmsd_stop(SIGTERM);
    return sr_test_finish();
}
