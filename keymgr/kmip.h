/*
 * kmip.h — KMIP: the TTLV codec, the message layer, and a blocking client.
 *
 * TTLV: every item is Tag (3 bytes, 0x42xxxx; 0x54xxxx for extensions),
 * Type (1 byte), Length (4 bytes, big-endian), Value padded with zeros to a
 * multiple of 8. The decoder is strict (exact lengths per type, zero padding,
 * booleans 0/1, structures filled exactly, UTF-8 text, a nesting limit) and
 * never reads past its input; values of text, bytes and big integers point
 * into the input buffer (no copies).
 */
#ifndef STRONGROOM_KMIP_H
#define STRONGROOM_KMIP_H

#include "common.h"
#include "kmip_tags.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sr_kmip_type {
    SR_KMIP_STRUCTURE = 0x01,
    SR_KMIP_INTEGER = 0x02,
    SR_KMIP_LONG_INTEGER = 0x03,
    SR_KMIP_BIG_INTEGER = 0x04,
    SR_KMIP_ENUMERATION = 0x05,
    SR_KMIP_BOOLEAN = 0x06,
    SR_KMIP_TEXT_STRING = 0x07,
    SR_KMIP_BYTE_STRING = 0x08,
    SR_KMIP_DATE_TIME = 0x09,
    SR_KMIP_INTERVAL = 0x0A,
    SR_KMIP_DATE_TIME_EXTENDED = 0x0B,
} sr_kmip_type_t;

#define SR_KMIP_TAG_ENUM_(name, value) SR_KMIP_TAG_##name = value,
typedef enum sr_kmip_tag { SR_KMIP_TAG_TABLE(SR_KMIP_TAG_ENUM_) } sr_kmip_tag_t;
#undef SR_KMIP_TAG_ENUM_

/* "UniqueIdentifier"-style names; NULL for a tag not in the table. */
SR_API const char *sr_kmip_tag_name(uint32_t tag);
SR_API const char *sr_kmip_type_name(uint8_t type);

#define SR_KMIP_MAX_DEPTH 16
#define SR_KMIP_MAX_MESSAGE (16u << 20)

/* ---- decoded tree ------------------------------------------------------------ */

typedef struct sr_kmip_item {
    uint32_t tag;
    uint8_t type;
    uint32_t len;           /* value length without padding */
    union {
        int32_t i32;        /* Integer */
        int64_t i64;        /* Long Integer, Date-Time (seconds), Date-Time Extended (µs) */
        uint32_t u32;       /* Enumeration, Interval */
        int boolean;
        const uint8_t *ptr; /* Text String, Byte String, Big Integer (into the input) */
    } v;
    int32_t first_child, next; /* indices into the tree; -1: none */
} sr_kmip_item_t;

typedef struct sr_kmip_tree {
    sr_kmip_item_t *items; /* items[0] is the root */
    size_t n, cap;
} sr_kmip_tree_t;

/* Decodes exactly one item (the whole buffer). SR_ERR_KMIP_DECODE with the
 * offset and reason, SR_ERR_KMIP_DEPTH past SR_KMIP_MAX_DEPTH. */
SR_API sr_err_t sr_kmip_decode(const uint8_t *buf, size_t len, sr_kmip_tree_t *tree) SR_MUST_CHECK;
SR_API void sr_kmip_tree_free(sr_kmip_tree_t *tree);
/* The first child of `parent` with `tag` (and `type` unless 0); -1 if none. */
SR_API int32_t sr_kmip_child(const sr_kmip_tree_t *t, int32_t parent, uint32_t tag, uint8_t type);
/* The next sibling after `after` with the same tag; -1 if none. */
SR_API int32_t sr_kmip_next_same(const sr_kmip_tree_t *t, int32_t after);
/* Pretty JSON for debugging (malloc'd; free it). */
SR_API char *sr_kmip_to_json(const sr_kmip_tree_t *t, int32_t root);

/* ---- encoder ----------------------------------------------------------------- */

typedef struct sr_kmip_enc {
    uint8_t *buf;
    size_t len, cap;
    size_t open[SR_KMIP_MAX_DEPTH]; /* offsets of open structures */
    int depth;
    sr_err_t err; /* sticky: the first failure */
} sr_kmip_enc_t;

SR_API void sr_kmip_enc_init(sr_kmip_enc_t *e);
SR_API void sr_kmip_enc_free(sr_kmip_enc_t *e);
SR_API void sr_kmip_begin(sr_kmip_enc_t *e, uint32_t tag);
SR_API void sr_kmip_end(sr_kmip_enc_t *e);
SR_API void sr_kmip_put_int(sr_kmip_enc_t *e, uint32_t tag, int32_t v);
SR_API void sr_kmip_put_long(sr_kmip_enc_t *e, uint32_t tag, int64_t v);
SR_API void sr_kmip_put_bigint(sr_kmip_enc_t *e, uint32_t tag, const uint8_t *be, size_t len); /* len % 8 == 0 */
SR_API void sr_kmip_put_enum(sr_kmip_enc_t *e, uint32_t tag, uint32_t v);
SR_API void sr_kmip_put_bool(sr_kmip_enc_t *e, uint32_t tag, int v);
SR_API void sr_kmip_put_text(sr_kmip_enc_t *e, uint32_t tag, const char *s);
SR_API void sr_kmip_put_bytes(sr_kmip_enc_t *e, uint32_t tag, const uint8_t *b, size_t len);
SR_API void sr_kmip_put_datetime(sr_kmip_enc_t *e, uint32_t tag, int64_t unix_seconds);
SR_API void sr_kmip_put_interval(sr_kmip_enc_t *e, uint32_t tag, uint32_t seconds);
SR_API void sr_kmip_put_datetime_ext(sr_kmip_enc_t *e, uint32_t tag, int64_t unix_us);
/* Drops what was encoded after (len, depth), a point taken earlier from
 * e->len and e->depth, and clears a failure since then (a server answering
 * a failed operation without its half-written payload). */
SR_API void sr_kmip_enc_rewind(sr_kmip_enc_t *e, size_t len, int depth);
/* Checks every structure is closed; the bytes stay in e->buf / e->len. */
SR_API sr_err_t sr_kmip_enc_finish(sr_kmip_enc_t *e) SR_MUST_CHECK;

/* ---- specification enumerations we use ----------------------------------------- */

enum {
    SR_KMIP_OP_CREATE = 1, SR_KMIP_OP_REGISTER = 3, SR_KMIP_OP_REKEY = 4, SR_KMIP_OP_LOCATE = 8, SR_KMIP_OP_GET = 10,
    SR_KMIP_OP_GET_ATTRIBUTES = 11, SR_KMIP_OP_ACTIVATE = 18, SR_KMIP_OP_REVOKE = 19, SR_KMIP_OP_DESTROY = 20,
    SR_KMIP_OP_QUERY = 24, SR_KMIP_OP_DISCOVER_VERSIONS = 30, SR_KMIP_OP_ENCRYPT = 31, SR_KMIP_OP_DECRYPT = 32,
};
enum { SR_KMIP_OBJECT_SYMMETRIC_KEY = 2, SR_KMIP_OBJECT_SECRET_DATA = 7 };
enum { SR_KMIP_ALG_AES = 3 };
enum { SR_KMIP_STATUS_SUCCESS = 0, SR_KMIP_STATUS_FAILED = 1, SR_KMIP_STATUS_PENDING = 2, SR_KMIP_STATUS_UNDONE = 3 };
enum {
    SR_KMIP_REASON_ITEM_NOT_FOUND = 1, SR_KMIP_REASON_OPERATION_NOT_SUPPORTED = 5, SR_KMIP_REASON_PERMISSION_DENIED = 0x0C,
    SR_KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE = 0x0B /* "Illegal Operation" in 1.0 */,
};
enum { SR_KMIP_NAME_TEXT = 1 };
enum { SR_KMIP_KEY_FORMAT_RAW = 1 };
enum { SR_KMIP_MODE_CBC = 1, SR_KMIP_MODE_GCM = 9 };
enum { SR_KMIP_USAGE_ENCRYPT = 0x04, SR_KMIP_USAGE_DECRYPT = 0x08, SR_KMIP_USAGE_WRAP = 0x10, SR_KMIP_USAGE_UNWRAP = 0x20 };
enum { SR_KMIP_REVOKE_UNSPECIFIED = 1, SR_KMIP_REVOKE_KEY_COMPROMISE = 2, SR_KMIP_REVOKE_CESSATION = 6 };
enum { SR_KMIP_STATE_PRE_ACTIVE = 1, SR_KMIP_STATE_ACTIVE = 2, SR_KMIP_STATE_DEACTIVATED = 3 };

/* Node membership (kmsd and tde-agent): KMIP has no enrolment or lease
 * operation, so these are vendor extensions in the ranges KMIP reserves for
 * them (operations 0x8xxxxxxx, tags 0x54xxxx), on the same port and codec. */
enum { SR_KMIP_OP_ENROL = 0x80000001u, SR_KMIP_OP_HEARTBEAT = 0x80000002u, SR_KMIP_OP_LEAVE = 0x80000003u,
       SR_KMIP_OP_GET_POLICY = 0x80000004u };
enum { SR_KMIP_TAG_X_JOIN_TOKEN = 0x540001, SR_KMIP_TAG_X_CSR = 0x540002, SR_KMIP_TAG_X_NODE_NAME = 0x540003,
       SR_KMIP_TAG_X_NODE_UUID = 0x540004, SR_KMIP_TAG_X_NODE_CERTIFICATE = 0x540005,
       SR_KMIP_TAG_X_LEASE_SECONDS = 0x540006,
       /* the access policy pushed to agents: its version (Integer, in every Heartbeat response), text, digest */
       SR_KMIP_TAG_X_POLICY_VERSION = 0x540007, SR_KMIP_TAG_X_POLICY_TEXT = 0x540008,
       SR_KMIP_TAG_X_POLICY_DIGEST = 0x540009,
       /* in an Enrol response (Boolean): kmsd binds the connection to the node it enrolled */
       SR_KMIP_TAG_X_CONNECTION_BOUND = 0x54000A,
       /* in every Heartbeat response (Integer): moves when a key stops being usable or a grant is taken back; an
        * agent that sees it move drops the data keys it cached */
       SR_KMIP_TAG_X_ACCESS_EPOCH = 0x54000B };

/* ---- messages ------------------------------------------------------------------- */

typedef struct sr_kmip_version {
    int32_t major, minor;
} sr_kmip_version_t;

/* Starts a one-batch-item request; the caller adds the payload's fields
 * between sr_kmip_request_begin() and sr_kmip_request_end(). */
SR_API void sr_kmip_request_begin(sr_kmip_enc_t *e, sr_kmip_version_t v, uint32_t operation);
SR_API void sr_kmip_request_end(sr_kmip_enc_t *e);

/* A decoded response's single batch item. */
typedef struct sr_kmip_response {
    sr_kmip_tree_t tree;
    sr_kmip_version_t version;
    int64_t time_stamp;
    uint32_t operation, status, reason;
    const char *message; /* NUL-terminated copy; "" if none */
    int32_t payload;     /* tree index of the Response Payload; -1 if none */
    char message_buf[256];
    uint8_t *raw;        /* the received bytes (owned; wiped and freed by sr_kmip_response_free) */
    size_t raw_len;
} sr_kmip_response_t;

/* Parses a Response Message with one batch item; a failed operation is
 * SR_ERR_KMIP_RESULT with status, reason and message in the detail. */
SR_API sr_err_t sr_kmip_response_parse(const uint8_t *buf, size_t len, uint32_t expect_operation,
                                sr_kmip_response_t *out) SR_MUST_CHECK;
SR_API void sr_kmip_response_free(sr_kmip_response_t *r);

/* ---- client ------------------------------------------------------------------------- */

typedef struct sr_kmip_client_options {
    const char *host;
    uint16_t port;
    const char *verify_name;   /* host name the server certificate must carry; NULL: host */
    const char *ca_file, *cert_file, *key_file;
    int timeout_ms;            /* 0: 10 s */
    sr_kmip_version_t version; /* 0.0: 1.4 (AES-GCM needs 1.4: its tag and AAD fields) */
} sr_kmip_client_options_t;

typedef struct sr_kmip_client sr_kmip_client_t;

SR_API sr_err_t sr_kmip_client_new(const sr_kmip_client_options_t *o, sr_kmip_client_t **out) SR_MUST_CHECK;
/* A client with o's settings that goes on with the connection `from` holds
 * (`from` is left without one): the enrolment's connection, which kmsd
 * binds to the node it enrolled, becomes the node's. Its own TLS context
 * (o's certificate) is made only when it must connect anew. */
SR_API sr_err_t sr_kmip_client_carry_on(const sr_kmip_client_options_t *o, sr_kmip_client_t *from,
                                        sr_kmip_client_t **out) SR_MUST_CHECK;
SR_API void sr_kmip_client_free(sr_kmip_client_t *c);
/* Whether the client holds a connection (kept from its last call). */
SR_API int sr_kmip_client_connected(const sr_kmip_client_t *c);
/* One request, one response, on the kept connection. Idempotent operations
 * (Get, Locate, Query, Discover Versions, Get Attributes, Encrypt, Decrypt)
 * are retried once on a fresh connection after a network failure; others
 * are not: their error says the outcome is unknown. */
SR_API sr_err_t sr_kmip_client_call(sr_kmip_client_t *c, const sr_kmip_enc_t *request, uint32_t operation,
                             sr_kmip_response_t *out) SR_MUST_CHECK;

/* Runs fn with a client of a KMS key provider (sr_keyprov_kmip_open): its
 * kept connection to the server that answered last, moving on through its
 * servers while one cannot be reached, one call at a time. A process that
 * talks to the KMS beyond the key operations, as the same client (tde-agent:
 * heartbeats, policy, leave), shares the provider's one connection and TLS
 * context instead of making its own. SR_ERR_INVALID_ARG if kp is another
 * kind of provider. */
typedef struct sr_keyprov sr_keyprov_t; /* keymgr.h */
typedef sr_err_t (*sr_kmip_call_fn)(sr_kmip_client_t *c, void *arg);
SR_API sr_err_t sr_keyprov_kmip_call(sr_keyprov_t *kp, sr_kmip_call_fn fn, void *arg) SR_MUST_CHECK;
/* The provider goes on with the connection `from` holds to host:port, one
 * of its servers, as its own (sr_kmip_client_carry_on; `from` is left
 * without it): tde-agent's enrolment connection, which kmsd binds to the
 * node, spares the node a second TLS handshake (and the loading of its
 * certificate and key until a reconnection needs them). */
SR_API sr_err_t sr_keyprov_kmip_adopt(sr_keyprov_t *kp, const char *host, uint16_t port,
                                      sr_kmip_client_t *from) SR_MUST_CHECK;

/* The operations database TDE uses. Unique identifiers are NUL-terminated. */
#define SR_KMIP_UID_MAX 128

/* The attributes DB clients set on a key; NULL/0 fields are left out. */
typedef struct sr_kmip_key_template {
    const char *name;         /* Name (text) */
    const char *group;        /* Object Group */
    int bits;                 /* Cryptographic Length: 128, 192 or 256 (0: 256) */
    uint32_t usage_mask;      /* Cryptographic Usage Mask (SR_KMIP_USAGE_*) */
    const char *custom_name;  /* a custom attribute, "x-..." (e.g. x-strongroom-tablespace) */
    const char *custom_value; /* its text value */
    int64_t deactivation_date; /* Deactivation Date, Unix seconds: the end of the key's use */
} sr_kmip_key_template_t;

SR_API sr_err_t sr_kmip_create_aes_key(sr_kmip_client_t *c, const sr_kmip_key_template_t *t,
                                char uid[SR_KMIP_UID_MAX]) SR_MUST_CHECK;
/* Register: the server stores a key we made (Raw AES key material). */
SR_API sr_err_t sr_kmip_register_aes_key(sr_kmip_client_t *c, const sr_kmip_key_template_t *t, const uint8_t *key,
                                  size_t key_len, char uid[SR_KMIP_UID_MAX]) SR_MUST_CHECK;

typedef struct sr_kmip_key_attributes {
    uint32_t state;          /* SR_KMIP_STATE_* */
    int64_t activation_date; /* unix seconds; 0 if none */
    uint32_t algorithm, usage_mask;
    int32_t length;
    char name[SR_KMIP_UID_MAX], group[SR_KMIP_UID_MAX];
} sr_kmip_key_attributes_t;
SR_API sr_err_t sr_kmip_get_attributes(sr_kmip_client_t *c, const char *uid, sr_kmip_key_attributes_t *out) SR_MUST_CHECK;
/* Re-key: a new key replacing `uid` (same attributes, new material); new_uid out. */
SR_API sr_err_t sr_kmip_rekey(sr_kmip_client_t *c, const char *uid, char new_uid[SR_KMIP_UID_MAX]) SR_MUST_CHECK;
/* Query Operations: what the server supports. */
SR_API sr_err_t sr_kmip_query_operations(sr_kmip_client_t *c, uint32_t *ops, size_t max, size_t *n) SR_MUST_CHECK;
SR_API sr_err_t sr_kmip_get_key(sr_kmip_client_t *c, const char *uid, uint8_t *key, size_t cap, size_t *len) SR_MUST_CHECK;
SR_API sr_err_t sr_kmip_activate(sr_kmip_client_t *c, const char *uid) SR_MUST_CHECK;
SR_API sr_err_t sr_kmip_revoke(sr_kmip_client_t *c, const char *uid, uint32_t reason_code, const char *message) SR_MUST_CHECK;
SR_API sr_err_t sr_kmip_destroy(sr_kmip_client_t *c, const char *uid) SR_MUST_CHECK;
SR_API sr_err_t sr_kmip_locate_by_name(sr_kmip_client_t *c, const char *name, char (*uids)[SR_KMIP_UID_MAX], size_t max,
                                size_t *found) SR_MUST_CHECK;
/* Locate by name and/or object group (NULL: any); found counts every match,
 * uids holds the first max of them, newest first. */
SR_API sr_err_t sr_kmip_locate(sr_kmip_client_t *c, const char *name, const char *group, char (*uids)[SR_KMIP_UID_MAX],
                        size_t max, size_t *found) SR_MUST_CHECK;
/* AES-GCM through the server: iv in, ciphertext || tag out (and back). */
SR_API sr_err_t sr_kmip_encrypt(sr_kmip_client_t *c, const char *uid, const uint8_t *iv, size_t iv_len, const uint8_t *in,
                         size_t in_len, uint8_t *out, size_t cap, size_t *out_len) SR_MUST_CHECK;
SR_API sr_err_t sr_kmip_decrypt(sr_kmip_client_t *c, const char *uid, const uint8_t *iv, size_t iv_len, const uint8_t *in,
                         size_t in_len, uint8_t *out, size_t cap, size_t *out_len) SR_MUST_CHECK;
/* The same with Authenticated Encryption Additional Data (KMIP 1.4). */
SR_API sr_err_t sr_kmip_encrypt_aead(sr_kmip_client_t *c, const char *uid, const uint8_t *iv, size_t iv_len,
                              const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t in_len, uint8_t *out,
                              size_t cap, size_t *out_len) SR_MUST_CHECK;
SR_API sr_err_t sr_kmip_decrypt_aead(sr_kmip_client_t *c, const char *uid, const uint8_t *iv, size_t iv_len,
                              const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t in_len, uint8_t *out,
                              size_t cap, size_t *out_len) SR_MUST_CHECK;
/* The protocol versions the server offers, newest first. */
SR_API sr_err_t sr_kmip_discover_versions(sr_kmip_client_t *c, sr_kmip_version_t *versions, size_t max,
                                   size_t *n) SR_MUST_CHECK;

#ifdef __cplusplus
}
#endif
#endif
