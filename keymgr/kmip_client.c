/*
 * kmip_client.c — a blocking KMIP client over (mutual) TLS, and the
 * operations database TDE needs.
 *
 * One connection, kept and reused for every request; TLS 1.2 (AEAD suites)
 * or 1.3, the server's certificate chain and host name verified, our client
 * certificate presented, every read and write bounded by the timeout.
 *
 * Retries: a network failure on an idempotent operation (Get, Locate, Query,
 * Discover Versions, Get Attributes, Encrypt, Decrypt) reconnects and sends
 * the request once more. A non-idempotent one (Create, Register, Activate,
 * Revoke, Destroy) is never repeated behind the caller's back: the error
 * says the server may or may not have done it.
 */
#include "kmip.h"

#include <stdlib.h>
#include <string.h>

struct sr_kmip_client {
    sr_kmip_client_options_t o; /* its strings are the copies below */
    char *host, *verify_name, *ca_file, *cert_file, *key_file;
    sr_ssl_ctx_t *ctx;          /* NULL until needed by a client that carried on another's connection */
    sr_tls_conn_t *conn;
};

static char *copy(const char *s, int *ok)
{
    char *c = s ? strdup(s) : NULL;
    if (s && !c) *ok = 0;
    return c;
}

/* A client with o's settings (its own copies), without a TLS context yet. */
static sr_err_t client_alloc(const sr_kmip_client_options_t *o, sr_kmip_client_t **out)
{
    if (!o || !o->host || !o->port || !o->ca_file)
        return sr_err_set(SR_ERR_INVALID_ARG, "a KMIP client needs a host, a port and a CA file");
    sr_kmip_client_t *c = calloc(1, sizeof *c);
    if (!c) return sr_err_set(SR_ERR_NOMEM, "KMIP client");
    int ok = 1;
    c->o = *o;
    c->o.host = c->host = copy(o->host, &ok);
    c->o.verify_name = c->verify_name = copy(o->verify_name ? o->verify_name : o->host, &ok);
    c->o.ca_file = c->ca_file = copy(o->ca_file, &ok);
    c->o.cert_file = c->cert_file = copy(o->cert_file, &ok);
    c->o.key_file = c->key_file = copy(o->key_file, &ok);
    if (!c->o.timeout_ms) c->o.timeout_ms = 10000;
    if (!c->o.version.major) c->o.version = (sr_kmip_version_t){1, 4};
    if (!ok) {
        sr_kmip_client_free(c);
        return sr_err_set(SR_ERR_NOMEM, "KMIP client");
    }
    *out = c;
    return SR_OK;
}

static sr_err_t client_ctx(sr_kmip_client_t *c)
{
    sr_tls_options_t tls = {.ca_file = c->o.ca_file, .cert_file = c->o.cert_file, .key_file = c->o.key_file};
    return c->ctx ? SR_OK : sr_tls_client_ctx_new(&tls, &c->ctx);
}

sr_err_t sr_kmip_client_new(const sr_kmip_client_options_t *o, sr_kmip_client_t **out)
{
    sr_kmip_client_t *c = NULL;
    sr_err_t rc = client_alloc(o, &c);
    if (rc == SR_OK && (rc = client_ctx(c)) != SR_OK) sr_kmip_client_free(c); /* a bad CA, certificate or key: now */
    if (rc == SR_OK) *out = c;
    return rc;
}

sr_err_t sr_kmip_client_carry_on(const sr_kmip_client_options_t *o, sr_kmip_client_t *from, sr_kmip_client_t **out)
{
    if (!from || !from->conn) return sr_err_set(SR_ERR_INVALID_ARG, "no connection to carry on");
    sr_kmip_client_t *c = NULL;
    sr_err_t rc = client_alloc(o, &c);
    if (rc != SR_OK) return rc;
    c->conn = from->conn, from->conn = NULL;
    sr_tls_set_timeout(c->conn, c->o.timeout_ms);
    *out = c;
    return SR_OK;
}

void sr_kmip_client_free(sr_kmip_client_t *c)
{
    if (!c) return;
    sr_tls_close(c->conn);
    sr_tls_ctx_free(c->ctx);
    free(c->host), free(c->verify_name), free(c->ca_file), free(c->cert_file), free(c->key_file);
    free(c);
}

int sr_kmip_client_connected(const sr_kmip_client_t *c) { return c && c->conn; }

static int idempotent(uint32_t op)
{
    return op == SR_KMIP_OP_GET || op == SR_KMIP_OP_LOCATE || op == SR_KMIP_OP_QUERY ||
           op == SR_KMIP_OP_DISCOVER_VERSIONS || op == SR_KMIP_OP_GET_ATTRIBUTES || op == SR_KMIP_OP_ENCRYPT ||
           op == SR_KMIP_OP_DECRYPT;
}

static int network_error(sr_err_t rc)
{
    return rc == SR_ERR_NETWORK || rc == SR_ERR_TLS || rc == SR_ERR_CLOSED || rc == SR_ERR_TIMEOUT || rc == SR_ERR_IO;
}

/* Sends the request and reads one whole response message. */
static sr_err_t exchange(sr_kmip_client_t *c, const sr_kmip_enc_t *req, uint8_t **resp, size_t *resp_len)
{
    sr_err_t rc = SR_OK;
    /* One deadline for the whole response: a server that dribbles bytes
     * cannot stretch a call past the timeout. */
    uint64_t deadline = sr_time_mono_ms() + (uint64_t)c->o.timeout_ms;
    if (!c->conn && (rc = client_ctx(c)) == SR_OK)
        rc = sr_tls_connect(c->ctx, c->host, c->o.port, c->verify_name, c->o.timeout_ms, &c->conn);
    if (rc == SR_OK) rc = sr_tls_write_all(c->conn, req->buf, req->len);
    uint8_t head[8];
    if (rc == SR_OK) rc = sr_tls_read_exact_by(c->conn, head, sizeof head, deadline);
    if (rc != SR_OK) return rc;
    uint32_t tag = (uint32_t)head[0] << 16 | (uint32_t)head[1] << 8 | head[2];
    uint32_t len = sr_get_be32(head + 4);
    if (tag != SR_KMIP_TAG_RESPONSE_MESSAGE || head[3] != SR_KMIP_STRUCTURE || len > SR_KMIP_MAX_MESSAGE - 8)
        return sr_err_set(SR_ERR_PROTOCOL, "KMIP server sent tag 0x%06x type %u length %u: not a response message",
                          tag, head[3], len);
    uint8_t *buf = malloc((size_t)len + 8);
    if (!buf) return sr_err_set(SR_ERR_NOMEM, "KMIP response of %u bytes", len);
    memcpy(buf, head, 8);
    rc = sr_tls_read_exact_by(c->conn, buf + 8, len, deadline);
    if (rc != SR_OK) {
        free(buf);
        return rc;
    }
    *resp = buf;
    *resp_len = (size_t)len + 8;
    return SR_OK;
}

static void drop_connection(sr_kmip_client_t *c)
{
    sr_tls_close(c->conn);
    c->conn = NULL;
}

sr_err_t sr_kmip_client_call(sr_kmip_client_t *c, const sr_kmip_enc_t *req, uint32_t operation,
                             sr_kmip_response_t *out)
{
    memset(out, 0, sizeof *out);
    out->payload = -1;
    sr_err_t rc = req->err ? req->err : SR_OK;
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    for (int attempt = 0; rc == SR_OK; attempt++) {
        rc = exchange(c, req, &resp, &resp_len);
        if (rc == SR_OK || !network_error(rc)) break;
        drop_connection(c);
        if (!idempotent(operation))
            return sr_err_set(rc, "KMIP operation %u to %s:%u: %s; the server may or may not have performed it "
                              "(not retried: check its state before trying again)", operation, c->host, c->o.port,
                              sr_err_detail());
        if (attempt == 1) return rc;
    }
    if (rc != SR_OK) {
        if (rc == SR_ERR_PROTOCOL) drop_connection(c);
        return rc;
    }
    rc = sr_kmip_response_parse(resp, resp_len, operation, out);
    out->raw = resp, out->raw_len = resp_len; /* the tree points into it; freed (wiped) with the response */
    if (rc == SR_ERR_KMIP_DECODE || rc == SR_ERR_KMIP_UNEXPECTED) drop_connection(c); /* out of step: start afresh */
    return rc;
}

/* ---- operations ------------------------------------------------------------------------- */

/* Builds, sends and checks one request; `out` holds the response on success. */
static sr_err_t call(sr_kmip_client_t *c, uint32_t op, void (*build)(sr_kmip_enc_t *, const void *), const void *arg,
                     sr_kmip_response_t *out)
{
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, c->o.version, op);
    build(&e, arg);
    sr_kmip_request_end(&e);
    sr_err_t rc = sr_kmip_enc_finish(&e);
    if (rc == SR_OK) rc = sr_kmip_client_call(c, &e, op, out);
    sr_kmip_enc_free(&e);
    if (rc != SR_OK) sr_kmip_response_free(out);
    return rc;
}

static void put_attribute_enum(sr_kmip_enc_t *e, const char *name, uint32_t v)
{
    sr_kmip_begin(e, SR_KMIP_TAG_ATTRIBUTE);
    sr_kmip_put_text(e, SR_KMIP_TAG_ATTRIBUTE_NAME, name);
    sr_kmip_put_enum(e, SR_KMIP_TAG_ATTRIBUTE_VALUE, v);
    sr_kmip_end(e);
}

static void put_attribute_int(sr_kmip_enc_t *e, const char *name, int32_t v)
{
    sr_kmip_begin(e, SR_KMIP_TAG_ATTRIBUTE);
    sr_kmip_put_text(e, SR_KMIP_TAG_ATTRIBUTE_NAME, name);
    sr_kmip_put_int(e, SR_KMIP_TAG_ATTRIBUTE_VALUE, v);
    sr_kmip_end(e);
}

static void put_attribute_datetime(sr_kmip_enc_t *e, const char *name, int64_t unix_seconds)
{
    sr_kmip_begin(e, SR_KMIP_TAG_ATTRIBUTE);
    sr_kmip_put_text(e, SR_KMIP_TAG_ATTRIBUTE_NAME, name);
    sr_kmip_put_datetime(e, SR_KMIP_TAG_ATTRIBUTE_VALUE, unix_seconds);
    sr_kmip_end(e);
}

static void put_attribute_text(sr_kmip_enc_t *e, const char *name, const char *v)
{
    sr_kmip_begin(e, SR_KMIP_TAG_ATTRIBUTE);
    sr_kmip_put_text(e, SR_KMIP_TAG_ATTRIBUTE_NAME, name);
    sr_kmip_put_text(e, SR_KMIP_TAG_ATTRIBUTE_VALUE, v);
    sr_kmip_end(e);
}

static void put_attribute_name(sr_kmip_enc_t *e, const char *name)
{
    sr_kmip_begin(e, SR_KMIP_TAG_ATTRIBUTE);
    sr_kmip_put_text(e, SR_KMIP_TAG_ATTRIBUTE_NAME, "Name");
    sr_kmip_begin(e, SR_KMIP_TAG_ATTRIBUTE_VALUE);
    sr_kmip_put_text(e, SR_KMIP_TAG_NAME_VALUE, name);
    sr_kmip_put_enum(e, SR_KMIP_TAG_NAME_TYPE, SR_KMIP_NAME_TEXT);
    sr_kmip_end(e);
    sr_kmip_end(e);
}

/* The Unique Identifier of a response payload into uid. */
static sr_err_t response_uid(const sr_kmip_response_t *r, char uid[SR_KMIP_UID_MAX])
{
    int32_t i = sr_kmip_child(&r->tree, r->payload, SR_KMIP_TAG_UNIQUE_IDENTIFIER, SR_KMIP_TEXT_STRING);
    if (i < 0) return sr_err_set(SR_ERR_KMIP_DECODE, "KMIP response payload has no Unique Identifier");
    const sr_kmip_item_t *it = &r->tree.items[i];
    if (it->len >= SR_KMIP_UID_MAX) return sr_err_set(SR_ERR_KMIP_DECODE, "Unique Identifier of %u bytes", it->len);
    memcpy(uid, it->v.ptr, it->len);
    uid[it->len] = '\0';
    return SR_OK;
}

/* The Template-Attribute of a key: algorithm, length, usage, name, group, custom. */
static void put_key_template(sr_kmip_enc_t *e, const sr_kmip_key_template_t *t)
{
    sr_kmip_begin(e, SR_KMIP_TAG_TEMPLATE_ATTRIBUTE);
    put_attribute_enum(e, "Cryptographic Algorithm", SR_KMIP_ALG_AES);
    put_attribute_int(e, "Cryptographic Length", t->bits ? t->bits : 256);
    if (t->usage_mask) put_attribute_int(e, "Cryptographic Usage Mask", (int32_t)t->usage_mask);
    if (t->name) put_attribute_name(e, t->name);
    if (t->group) put_attribute_text(e, "Object Group", t->group);
    if (t->custom_name && t->custom_value) put_attribute_text(e, t->custom_name, t->custom_value);
    if (t->deactivation_date) put_attribute_datetime(e, "Deactivation Date", t->deactivation_date);
    sr_kmip_end(e);
}

static void build_create(sr_kmip_enc_t *e, const void *p)
{
    sr_kmip_put_enum(e, SR_KMIP_TAG_OBJECT_TYPE, SR_KMIP_OBJECT_SYMMETRIC_KEY);
    put_key_template(e, p);
}

static sr_err_t check_template(const sr_kmip_key_template_t *t)
{
    if (t->bits && t->bits != 128 && t->bits != 192 && t->bits != 256)
        return sr_err_set(SR_ERR_INVALID_ARG, "an AES key is 128, 192 or 256 bits, not %d", t->bits);
    if (t->custom_name && strncmp(t->custom_name, "x-", 2) != 0 && strncmp(t->custom_name, "y-", 2) != 0)
        return sr_err_set(SR_ERR_INVALID_ARG, "custom attribute '%s' must start with x- (client) or y- (server)",
                          t->custom_name);
    return SR_OK;
}

sr_err_t sr_kmip_create_aes_key(sr_kmip_client_t *c, const sr_kmip_key_template_t *t, char uid[SR_KMIP_UID_MAX])
{
    sr_kmip_response_t r;
    sr_err_t rc = check_template(t);
    if (rc == SR_OK) rc = call(c, SR_KMIP_OP_CREATE, build_create, t, &r);
    if (rc == SR_OK) rc = response_uid(&r, uid), sr_kmip_response_free(&r);
    return rc;
}

typedef struct register_arg {
    const sr_kmip_key_template_t *t;
    const uint8_t *key;
    size_t len;
} register_arg_t;

static void build_register(sr_kmip_enc_t *e, const void *p)
{
    const register_arg_t *a = p;
    sr_kmip_put_enum(e, SR_KMIP_TAG_OBJECT_TYPE, SR_KMIP_OBJECT_SYMMETRIC_KEY);
    put_key_template(e, a->t);
    sr_kmip_begin(e, SR_KMIP_TAG_SYMMETRIC_KEY);
    sr_kmip_begin(e, SR_KMIP_TAG_KEY_BLOCK);
    sr_kmip_put_enum(e, SR_KMIP_TAG_KEY_FORMAT_TYPE, SR_KMIP_KEY_FORMAT_RAW);
    sr_kmip_begin(e, SR_KMIP_TAG_KEY_VALUE);
    sr_kmip_put_bytes(e, SR_KMIP_TAG_KEY_MATERIAL, a->key, a->len);
    sr_kmip_end(e);
    sr_kmip_put_enum(e, SR_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, SR_KMIP_ALG_AES);
    sr_kmip_put_int(e, SR_KMIP_TAG_CRYPTOGRAPHIC_LENGTH, (int32_t)(a->len * 8));
    sr_kmip_end(e);
    sr_kmip_end(e);
}

sr_err_t sr_kmip_register_aes_key(sr_kmip_client_t *c, const sr_kmip_key_template_t *t, const uint8_t *key,
                                  size_t key_len, char uid[SR_KMIP_UID_MAX])
{
    sr_kmip_key_template_t tt = *t;
    tt.bits = (int)(key_len * 8);
    register_arg_t a = {.t = &tt, .key = key, .len = key_len};
    sr_kmip_response_t r;
    sr_err_t rc = check_template(&tt);
    if (rc == SR_OK) rc = call(c, SR_KMIP_OP_REGISTER, build_register, &a, &r);
    if (rc == SR_OK) rc = response_uid(&r, uid), sr_kmip_response_free(&r);
    return rc;
}

static const char *const wanted_attributes[] = {"State", "Activation Date", "Cryptographic Algorithm",
                                                "Cryptographic Length", "Cryptographic Usage Mask", "Object Group",
                                                "Name"};

static void build_get_attributes(sr_kmip_enc_t *e, const void *uid)
{
    sr_kmip_put_text(e, SR_KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    for (size_t i = 0; i < sizeof wanted_attributes / sizeof wanted_attributes[0]; i++)
        sr_kmip_put_text(e, SR_KMIP_TAG_ATTRIBUTE_NAME, wanted_attributes[i]);
}

static void copy_text(const sr_kmip_item_t *it, char out[SR_KMIP_UID_MAX])
{
    size_t n = it->len < SR_KMIP_UID_MAX - 1 ? it->len : SR_KMIP_UID_MAX - 1;
    memcpy(out, it->v.ptr, n);
    out[n] = '\0';
}

static void take_attribute(const sr_kmip_tree_t *t, int32_t attr, sr_kmip_key_attributes_t *out)
{
    int32_t name = sr_kmip_child(t, attr, SR_KMIP_TAG_ATTRIBUTE_NAME, SR_KMIP_TEXT_STRING);
    int32_t value = sr_kmip_child(t, attr, SR_KMIP_TAG_ATTRIBUTE_VALUE, 0);
    if (name < 0 || value < 0) return;
    char n[SR_KMIP_UID_MAX];
    copy_text(&t->items[name], n);
    const sr_kmip_item_t *v = &t->items[value];
    if (!strcmp(n, "State") && v->type == SR_KMIP_ENUMERATION) out->state = v->v.u32;
    else if (!strcmp(n, "Activation Date") && v->type == SR_KMIP_DATE_TIME) out->activation_date = v->v.i64;
    else if (!strcmp(n, "Cryptographic Algorithm") && v->type == SR_KMIP_ENUMERATION) out->algorithm = v->v.u32;
    else if (!strcmp(n, "Cryptographic Length") && v->type == SR_KMIP_INTEGER) out->length = v->v.i32;
    else if (!strcmp(n, "Cryptographic Usage Mask") && v->type == SR_KMIP_INTEGER) out->usage_mask = (uint32_t)v->v.i32;
    else if (!strcmp(n, "Object Group") && v->type == SR_KMIP_TEXT_STRING) copy_text(v, out->group);
    else if (!strcmp(n, "Name") && v->type == SR_KMIP_STRUCTURE) {
        int32_t nv = sr_kmip_child(t, value, SR_KMIP_TAG_NAME_VALUE, SR_KMIP_TEXT_STRING);
        if (nv >= 0) copy_text(&t->items[nv], out->name);
    }
}

sr_err_t sr_kmip_get_attributes(sr_kmip_client_t *c, const char *uid, sr_kmip_key_attributes_t *out)
{
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_GET_ATTRIBUTES, build_get_attributes, uid, &r);
    if (rc != SR_OK) return rc;
    sr_kmip_key_attributes_t a;
    memset(&a, 0, sizeof a);
    for (int32_t i = sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_ATTRIBUTE, SR_KMIP_STRUCTURE); i >= 0;
         i = sr_kmip_next_same(&r.tree, i))
        take_attribute(&r.tree, i, &a);
    sr_kmip_response_free(&r);
    *out = a;
    return SR_OK;
}

static void build_query(sr_kmip_enc_t *e, const void *p)
{
    (void)p;
    sr_kmip_put_enum(e, SR_KMIP_TAG_QUERY_FUNCTION, 1); /* Query Operations */
}

sr_err_t sr_kmip_query_operations(sr_kmip_client_t *c, uint32_t *ops, size_t max, size_t *n)
{
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_QUERY, build_query, NULL, &r);
    if (rc != SR_OK) return rc;
    size_t k = 0;
    for (int32_t i = sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_OPERATION, SR_KMIP_ENUMERATION); i >= 0;
         i = sr_kmip_next_same(&r.tree, i), k++)
        if (k < max) ops[k] = r.tree.items[i].v.u32;
    sr_kmip_response_free(&r);
    *n = k;
    return SR_OK;
}

static void build_uid(sr_kmip_enc_t *e, const void *uid) { sr_kmip_put_text(e, SR_KMIP_TAG_UNIQUE_IDENTIFIER, uid); }

sr_err_t sr_kmip_get_key(sr_kmip_client_t *c, const char *uid, uint8_t *key, size_t cap, size_t *len)
{
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_GET, build_uid, uid, &r);
    if (rc != SR_OK) return rc;
    const sr_kmip_tree_t *t = &r.tree;
    char got_uid[SR_KMIP_UID_MAX];
    if ((rc = response_uid(&r, got_uid)) != SR_OK || strcmp(got_uid, uid) != 0) {
        sr_kmip_response_free(&r);
        return rc != SR_OK ? rc : sr_err_set(SR_ERR_KMIP_UNEXPECTED, "Get of %s answered with object %s", uid, got_uid);
    }
    int32_t sk = sr_kmip_child(t, r.payload, SR_KMIP_TAG_SYMMETRIC_KEY, SR_KMIP_STRUCTURE);
    int32_t alg = sr_kmip_child(t, sr_kmip_child(t, sk, SR_KMIP_TAG_KEY_BLOCK, SR_KMIP_STRUCTURE),
                                SR_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, SR_KMIP_ENUMERATION);
    int32_t kb = sr_kmip_child(t, sk, SR_KMIP_TAG_KEY_BLOCK, SR_KMIP_STRUCTURE);
    int32_t fmt = sr_kmip_child(t, kb, SR_KMIP_TAG_KEY_FORMAT_TYPE, SR_KMIP_ENUMERATION);
    int32_t kv = sr_kmip_child(t, kb, SR_KMIP_TAG_KEY_VALUE, SR_KMIP_STRUCTURE);
    int32_t km = sr_kmip_child(t, kv, SR_KMIP_TAG_KEY_MATERIAL, SR_KMIP_BYTE_STRING);
    if (km < 0) rc = sr_err_set(SR_ERR_KMIP_DECODE, "Get response for %s has no symmetric key material", uid);
    else if (fmt < 0 || t->items[fmt].v.u32 != SR_KMIP_KEY_FORMAT_RAW)
        rc = sr_err_set(SR_ERR_UNSUPPORTED, "key %s is not in Raw format", uid);
    else if (alg < 0 || t->items[alg].v.u32 != SR_KMIP_ALG_AES)
        rc = sr_err_set(SR_ERR_KMIP_UNEXPECTED, "Get of %s returned a key that is not AES", uid);
    else if (t->items[km].len != 16 && t->items[km].len != 24 && t->items[km].len != 32)
        rc = sr_err_set(SR_ERR_KMIP_UNEXPECTED, "Get of %s returned a %u-byte AES key", uid, t->items[km].len);
    else if (t->items[km].len > cap) rc = sr_err_set(SR_ERR_BUFFER_TOO_SMALL, "key %s is %u bytes", uid, t->items[km].len);
    else memcpy(key, t->items[km].v.ptr, t->items[km].len), *len = t->items[km].len;
    sr_kmip_response_free(&r); /* wipes the response, which held the key */
    return rc;
}

sr_err_t sr_kmip_activate(sr_kmip_client_t *c, const char *uid)
{
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_ACTIVATE, build_uid, uid, &r);
    if (rc == SR_OK) sr_kmip_response_free(&r);
    return rc;
}

sr_err_t sr_kmip_destroy(sr_kmip_client_t *c, const char *uid)
{
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_DESTROY, build_uid, uid, &r);
    if (rc == SR_OK) sr_kmip_response_free(&r);
    return rc;
}

sr_err_t sr_kmip_rekey(sr_kmip_client_t *c, const char *uid, char new_uid[SR_KMIP_UID_MAX])
{
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_REKEY, build_uid, uid, &r);
    if (rc == SR_OK) rc = response_uid(&r, new_uid), sr_kmip_response_free(&r);
    return rc;
}

typedef struct revoke_arg {
    const char *uid, *message;
    uint32_t code;
} revoke_arg_t;

static void build_revoke(sr_kmip_enc_t *e, const void *p)
{
    const revoke_arg_t *a = p;
    sr_kmip_put_text(e, SR_KMIP_TAG_UNIQUE_IDENTIFIER, a->uid);
    sr_kmip_begin(e, SR_KMIP_TAG_REVOCATION_REASON);
    sr_kmip_put_enum(e, SR_KMIP_TAG_REVOCATION_REASON_CODE, a->code);
    if (a->message) sr_kmip_put_text(e, SR_KMIP_TAG_REVOCATION_MESSAGE, a->message);
    sr_kmip_end(e);
    if (a->code == SR_KMIP_REVOKE_KEY_COMPROMISE)
        sr_kmip_put_datetime(e, SR_KMIP_TAG_COMPROMISE_OCCURRENCE_DATE, sr_time_now_us() / 1000000);
}

sr_err_t sr_kmip_revoke(sr_kmip_client_t *c, const char *uid, uint32_t reason_code, const char *message)
{
    revoke_arg_t a = {.uid = uid, .message = message, .code = reason_code};
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_REVOKE, build_revoke, &a, &r);
    if (rc == SR_OK) sr_kmip_response_free(&r);
    return rc;
}

typedef struct locate_arg {
    const char *name, *group;
} locate_arg_t;

static void build_locate(sr_kmip_enc_t *e, const void *p)
{
    const locate_arg_t *a = p;
    if (a->name) put_attribute_name(e, a->name);
    if (a->group) put_attribute_text(e, "Object Group", a->group);
}

sr_err_t sr_kmip_locate_by_name(sr_kmip_client_t *c, const char *name, char (*uids)[SR_KMIP_UID_MAX], size_t max,
                                size_t *found)
{
    return sr_kmip_locate(c, name, NULL, uids, max, found);
}

sr_err_t sr_kmip_locate(sr_kmip_client_t *c, const char *name, const char *group, char (*uids)[SR_KMIP_UID_MAX],
                        size_t max, size_t *found)
{
    sr_kmip_response_t r;
    locate_arg_t a = {.name = name, .group = group};
    sr_err_t rc = call(c, SR_KMIP_OP_LOCATE, build_locate, &a, &r);
    if (rc != SR_OK) return rc;
    size_t n = 0;
    for (int32_t i = sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_UNIQUE_IDENTIFIER, SR_KMIP_TEXT_STRING); i >= 0;
         i = sr_kmip_next_same(&r.tree, i)) {
        const sr_kmip_item_t *it = &r.tree.items[i];
        if (n < max && it->len < SR_KMIP_UID_MAX) memcpy(uids[n], it->v.ptr, it->len), uids[n][it->len] = '\0';
        n++;
    }
    sr_kmip_response_free(&r);
    *found = n;
    return SR_OK;
}

typedef struct crypt_arg {
    const char *uid;
    const uint8_t *iv, *data, *tag, *aad;
    size_t iv_len, data_len, tag_len, aad_len;
} crypt_arg_t;

static void build_crypt(sr_kmip_enc_t *e, const void *p)
{
    const crypt_arg_t *a = p;
    sr_kmip_put_text(e, SR_KMIP_TAG_UNIQUE_IDENTIFIER, a->uid);
    sr_kmip_begin(e, SR_KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    sr_kmip_put_enum(e, SR_KMIP_TAG_BLOCK_CIPHER_MODE, SR_KMIP_MODE_GCM);
    sr_kmip_put_enum(e, SR_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, SR_KMIP_ALG_AES);
    sr_kmip_put_int(e, SR_KMIP_TAG_TAG_LENGTH, 16);
    sr_kmip_end(e);
    sr_kmip_put_bytes(e, SR_KMIP_TAG_DATA, a->data, a->data_len);
    sr_kmip_put_bytes(e, SR_KMIP_TAG_IV_COUNTER_NONCE, a->iv, a->iv_len);
    if (a->aad) sr_kmip_put_bytes(e, SR_KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, a->aad, a->aad_len);
    if (a->tag) sr_kmip_put_bytes(e, SR_KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, a->tag, a->tag_len);
}

/* Copies payload byte strings (tags in order) into out, one after another;
 * exactly `want` bytes, or nothing is left in out and *out_len is untouched
 * (out-parameters are written only on success). */
static sr_err_t gather(const sr_kmip_response_t *r, const uint32_t *tags, int n, uint8_t *out, size_t cap,
                       size_t want, const char *what, size_t *out_len)
{
    size_t used = 0;
    sr_err_t rc = SR_OK;
    for (int k = 0; k < n && rc == SR_OK; k++) {
        int32_t i = sr_kmip_child(&r->tree, r->payload, tags[k], SR_KMIP_BYTE_STRING);
        if (i < 0) rc = sr_err_set(SR_ERR_KMIP_DECODE, "KMIP response lacks %s", sr_kmip_tag_name(tags[k]));
        else if (used + r->tree.items[i].len > cap) rc = sr_err_set(SR_ERR_BUFFER_TOO_SMALL, "KMIP result too large");
        else memcpy(out + used, r->tree.items[i].v.ptr, r->tree.items[i].len), used += r->tree.items[i].len;
    }
    if (rc == SR_OK && used != want)
        rc = sr_err_set(SR_ERR_KMIP_UNEXPECTED, "%s returned %zu bytes, not %zu", what, used, want);
    if (rc != SR_OK) sr_secure_wipe(out, used); /* a partial plaintext never stays behind */
    else *out_len = used;
    return rc;
}

sr_err_t sr_kmip_encrypt_aead(sr_kmip_client_t *c, const char *uid, const uint8_t *iv, size_t iv_len,
                              const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t in_len, uint8_t *out,
                              size_t cap, size_t *out_len)
{
    crypt_arg_t a = {.uid = uid, .iv = iv, .iv_len = iv_len, .data = in, .data_len = in_len, .aad = aad,
                     .aad_len = aad_len};
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_ENCRYPT, build_crypt, &a, &r);
    if (rc != SR_OK) return rc;
    static const uint32_t tags[] = {SR_KMIP_TAG_DATA, SR_KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG};
    rc = gather(&r, tags, 2, out, cap, in_len + 16, "Encrypt (data and tag)", out_len);
    sr_kmip_response_free(&r);
    return rc;
}

sr_err_t sr_kmip_decrypt_aead(sr_kmip_client_t *c, const char *uid, const uint8_t *iv, size_t iv_len,
                              const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t in_len, uint8_t *out,
                              size_t cap, size_t *out_len)
{
    if (in_len < 16) return sr_err_set(SR_ERR_INVALID_ARG, "AES-GCM ciphertext shorter than its tag");
    crypt_arg_t a = {.uid = uid, .iv = iv, .iv_len = iv_len, .data = in, .data_len = in_len - 16,
                     .tag = in + in_len - 16, .tag_len = 16, .aad = aad, .aad_len = aad_len};
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_DECRYPT, build_crypt, &a, &r);
    if (rc != SR_OK) return rc;
    static const uint32_t tags[] = {SR_KMIP_TAG_DATA};
    rc = gather(&r, tags, 1, out, cap, in_len - 16, "Decrypt", out_len);
    sr_kmip_response_free(&r);
    return rc;
}

sr_err_t sr_kmip_encrypt(sr_kmip_client_t *c, const char *uid, const uint8_t *iv, size_t iv_len, const uint8_t *in,
                         size_t in_len, uint8_t *out, size_t cap, size_t *out_len)
{
    return sr_kmip_encrypt_aead(c, uid, iv, iv_len, NULL, 0, in, in_len, out, cap, out_len);
}

sr_err_t sr_kmip_decrypt(sr_kmip_client_t *c, const char *uid, const uint8_t *iv, size_t iv_len, const uint8_t *in,
                         size_t in_len, uint8_t *out, size_t cap, size_t *out_len)
{
    return sr_kmip_decrypt_aead(c, uid, iv, iv_len, NULL, 0, in, in_len, out, cap, out_len);
}

static void build_nothing(sr_kmip_enc_t *e, const void *p) { (void)e, (void)p; }

sr_err_t sr_kmip_discover_versions(sr_kmip_client_t *c, sr_kmip_version_t *versions, size_t max, size_t *n)
{
    sr_kmip_response_t r;
    sr_err_t rc = call(c, SR_KMIP_OP_DISCOVER_VERSIONS, build_nothing, NULL, &r);
    if (rc != SR_OK) return rc;
    size_t k = 0;
    for (int32_t i = sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_PROTOCOL_VERSION, SR_KMIP_STRUCTURE); i >= 0;
         i = sr_kmip_next_same(&r.tree, i), k++) {
        int32_t ma = sr_kmip_child(&r.tree, i, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, SR_KMIP_INTEGER);
        int32_t mi = sr_kmip_child(&r.tree, i, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, SR_KMIP_INTEGER);
        if (k < max && ma >= 0 && mi >= 0)
            versions[k] = (sr_kmip_version_t){r.tree.items[ma].v.i32, r.tree.items[mi].v.i32};
    }
    sr_kmip_response_free(&r);
    *n = k;
    return SR_OK;
}
