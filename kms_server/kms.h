/*
 * kms.h — the key server's parts: the key store, principals and roles, and
 * the KMIP request handler that kmsd runs for each message (and the fuzzer
 * runs against an in-memory store).
 *
 * Objects are AES symmetric keys with KMIP's attributes and states. Their
 * material is kept wrapped (AES-256-GCM, AAD = the object's UID) under the
 * store wrapping key SWK; SWK itself is a data key of the store's root key
 * provider, so key material never sits in the database, nor in SQLite's page
 * cache, in clear. The store is an SQLite file, in turn encrypted page by page
 * by our own TDE (kmsd dogfoods strongroom), or a PostgreSQL database shared
 * by several kmsd (db.h), where the rest (names, states, grants) is in clear.
 */
#ifndef STRONGROOM_KMS_H
#define STRONGROOM_KMS_H

#include "keymgr.h"
#include "kmip.h"

#include <stdint.h>

typedef enum kms_role {
    KMS_ROLE_NONE = 0, /* unknown principal: refused */
    KMS_ROLE_ADMIN,    /* everything, on every object */
    KMS_ROLE_APPLICATION, /* creates keys; full use of its own and granted ones */
    KMS_ROLE_NODE,     /* uses (Get Attributes, Encrypt, Decrypt) only keys granted to it */
    KMS_ROLE_AUDITOR,  /* reads attributes of every object; no key material, no changes */
} kms_role_t;

const char *kms_role_name(kms_role_t role);
sr_err_t kms_role_parse(const char *text, kms_role_t *out);

typedef struct kms_principal {
    char name[256];       /* certificate subject CN ("": a connection without a certificate) */
    char fingerprint[65]; /* SHA-256 of that certificate, hex ("": none), checked for revocation per request */
    kms_role_t role;
    char source[80];      /* peer address, for audit records */
    char refused[200];    /* non-empty: every request is refused with this (a revoked certificate) */
} kms_principal_t;

enum {
    KMS_STATE_PRE_ACTIVE = 1, KMS_STATE_ACTIVE = 2, KMS_STATE_DEACTIVATED = 3, KMS_STATE_COMPROMISED = 4,
    KMS_STATE_DESTROYED = 5, KMS_STATE_DESTROYED_COMPROMISED = 6,
};
const char *kms_state_name(uint32_t state);

#define KMS_UID_MAX 64
#define KMS_TEXT_MAX 256

typedef struct kms_object {
    char uid[KMS_UID_MAX];
    char owner[KMS_TEXT_MAX];
    uint32_t object_type, algorithm, state, usage_mask;
    int32_t length; /* bits */
    int64_t initial_date, activation_date, deactivation_date, destroy_date, compromise_date,
        compromise_occurrence_date, last_change_date; /* unix seconds; 0: not set */
    uint32_t revocation_code;
    char revocation_message[KMS_TEXT_MAX];
    char replaces[KMS_UID_MAX], replaced_by[KMS_UID_MAX];
} kms_object_t;

/* One value of a multi-valued attribute (Name, Object Group, custom x-/y-). */
typedef struct kms_attr {
    char name[KMS_TEXT_MAX];
    int32_t index;
    uint8_t type;           /* a KMIP item type */
    int64_t num;            /* Integer, Long, Enumeration, Boolean, Date-Time, Interval */
    uint8_t *bytes;         /* Text or Byte String (malloc'd; NUL-terminated) */
    uint32_t len;
} kms_attr_t;
void kms_attrs_free(kms_attr_t *attrs, size_t n);

/* ---- the store ------------------------------------------------------------------ */
typedef struct kms_store kms_store_t;

/* Opens (creating the schema) the store at `location`: an SQLite URI (kmsd
 * passes one through the strongroom VFS, the fuzzer ":memory:") or a
 * PostgreSQL connection URI. `provider` wraps the store wrapping key; the
 * store keeps neither. */
sr_err_t kms_store_open(const char *location, sr_keyprov_t *provider, kms_store_t **out) SR_MUST_CHECK;
void kms_store_close(kms_store_t *s);
/* Whether other kmsd may share this store (PostgreSQL). */
int kms_store_shared(const kms_store_t *s);
/* Serialises the handle for one request (one database connection per handle). */
void kms_store_lock(kms_store_t *s);
void kms_store_unlock(kms_store_t *s);
sr_err_t kms_store_begin(kms_store_t *s) SR_MUST_CHECK;      /* a change: the write lock at once */
sr_err_t kms_store_begin_read(kms_store_t *s) SR_MUST_CHECK; /* a read: no write lock */
sr_err_t kms_store_commit(kms_store_t *s) SR_MUST_CHECK;
void kms_store_rollback(kms_store_t *s);

sr_err_t kms_object_insert(kms_store_t *s, const kms_object_t *o, const uint8_t *material, size_t len) SR_MUST_CHECK;
/* SR_ERR_NOT_FOUND for an unknown UID. */
sr_err_t kms_object_load(kms_store_t *s, const char *uid, kms_object_t *o) SR_MUST_CHECK;
sr_err_t kms_object_update(kms_store_t *s, const kms_object_t *o) SR_MUST_CHECK;
/* Unwraps the material into the caller's locked memory (cap: at least
 * SR_KEYMGR_WRAPPED_MAX); the caller wipes it after use. */
sr_err_t kms_object_material(kms_store_t *s, const char *uid, uint8_t *material, size_t cap,
                             size_t *len) SR_MUST_CHECK;
sr_err_t kms_object_wipe_material(kms_store_t *s, const char *uid) SR_MUST_CHECK;

sr_err_t kms_attr_list(kms_store_t *s, const char *uid, kms_attr_t **out, size_t *n) SR_MUST_CHECK;
/* index < 0: the next free index. */
sr_err_t kms_attr_add(kms_store_t *s, const char *uid, const kms_attr_t *a, int32_t *index_out) SR_MUST_CHECK;
/* SR_ERR_NOT_FOUND when that name/index is not set. */
sr_err_t kms_attr_replace(kms_store_t *s, const char *uid, const kms_attr_t *a) SR_MUST_CHECK;
sr_err_t kms_attr_delete(kms_store_t *s, const char *uid, const char *name, int32_t index) SR_MUST_CHECK;

/* Locate: every field optional (0/NULL: any). Results newest first. */
typedef struct kms_filter {
    uint32_t object_type, algorithm, state;
    int32_t length;
    const char *name, *group;
    const char *custom_name, *custom_text;
    int64_t activation_from, activation_to; /* both 0: any */
    int64_t initial_from, initial_to;
    const char *visible_to; /* NULL: all (admin, auditor); else owner or grantee */
    int64_t offset, max_items; /* max_items 0: no limit */
} kms_filter_t;
sr_err_t kms_locate(kms_store_t *s, const kms_filter_t *f, char (**uids)[KMS_UID_MAX], size_t *n) SR_MUST_CHECK;
/* Keys the store still holds Active or Pre-Active though their Deactivation Date has passed (a request applies the
 * date to the key it loads; kmsd's sweeper saves it, so the access epoch moves). The caller frees *uids. */
sr_err_t kms_objects_past_deactivation(kms_store_t *s, int64_t now, char (**uids)[KMS_UID_MAX],
                                       size_t *n) SR_MUST_CHECK;

/* Grants: a node or application may use another principal's key. */
sr_err_t kms_grant(kms_store_t *s, const char *uid, const char *principal) SR_MUST_CHECK;
/* The grant taken back; SR_ERR_NOT_FOUND if there was none. */
sr_err_t kms_ungrant(kms_store_t *s, const char *uid, const char *principal) SR_MUST_CHECK;
/* Each principal (or "@group") granted uid, in name order. */
sr_err_t kms_grant_each(kms_store_t *s, const char *uid, void (*fn)(void *, const char *), void *ctx) SR_MUST_CHECK;
int kms_granted(kms_store_t *s, const char *uid, const char *principal);

/* Principals and certificates (kmsctl writes, kmsd reads at every request). */
sr_err_t kms_principal_set(kms_store_t *s, const char *name, kms_role_t role) SR_MUST_CHECK;
kms_role_t kms_principal_role(kms_store_t *s, const char *name);
sr_err_t kms_cert_record(kms_store_t *s, const char *fingerprint, const char *name, const char *serial,
                         int64_t not_after) SR_MUST_CHECK;
/* Revokes every certificate issued to `name`; n_out: how many. */
sr_err_t kms_cert_revoke(kms_store_t *s, const char *name, int *n_out) SR_MUST_CHECK;
int kms_cert_revoked(kms_store_t *s, const char *fingerprint);
/* Calls fn for each certificate: name, role, fingerprint, not_after, revoked. */
sr_err_t kms_cert_each(kms_store_t *s, void (*fn)(void *, const char *, const char *, const char *, int64_t, int),
                       void *ctx) SR_MUST_CHECK;

/* ---- the root key and the encrypted store (root.c) --------------------------------------- */
/* The root key provider: a key file (created if `create`), else a passphrase
 * (passphrase_file's first line, or $KMSD_PASSPHRASE) through Argon2id with
 * parameters in STORE.kdf (written if `create`). */
sr_err_t kms_root_provider(const char *store_path, const char *root_key_file, const char *passphrase_file,
                           int create, sr_keyprov_t **out) SR_MUST_CHECK;
/* The store's location from a configuration: `path` (an SQLite file) or
 * `url` (postgresql://...), exactly one. */
sr_err_t kms_store_location(const char *path, const char *url, const char **out) SR_MUST_CHECK;
/* Opens the store: an SQLite file through the strongroom VFS, encrypted
 * under `root`, or a PostgreSQL database whose key material is wrapped under
 * `root` (kept alive by the caller while the store is open). */
sr_err_t kms_store_open_encrypted(const char *store_path, sr_keyprov_t *root, kms_store_t **out) SR_MUST_CHECK;

/* A consistent copy of a store (SQLite's backup API) into a new file through
 * the strongroom VFS: the copy is encrypted like the store, under the same
 * root key (`kmsctl store backup|restore`; the VFS must be registered with
 * the root provider: kms_store_open_encrypted does it). */
sr_err_t kms_store_copy(const char *from, const char *to, int overwrite) SR_MUST_CHECK;
/* SR_OK if kms_store_copy may start (neither side in PostgreSQL, `to` new unless overwriting): checked before the
 * copy is recorded. */
sr_err_t kms_store_copy_allowed(const char *from, const char *to, int overwrite) SR_MUST_CHECK;

/* ---- the private CA (pki.c) ------------------------------------------------------------- */
typedef struct kms_cert_info {
    char fingerprint[65]; /* SHA-256 of the DER certificate, hex (what kmsd sees) */
    char serial[64];
    int64_t not_after;
} kms_cert_info_t;
/* dir/ca.pem and dir/ca.key (0600); refuses to overwrite. */
sr_err_t kms_pki_make_ca(const char *dir, int days) SR_MUST_CHECK;
/* file_prefix.pem / file_prefix.key signed by dir's CA: a server certificate
 * (serverAuth, SAN dns_name, localhost and loopback) or a client one
 * (clientAuth; the CN is the principal). */
sr_err_t kms_pki_issue(const char *dir, const char *file_prefix, const char *cn, int server, const char *dns_name,
                       int days, kms_cert_info_t *info) SR_MUST_CHECK;
/* The CA that signs node certificates, read once (kmsd's start): reading
 * and decoding its PEM key was a third of kmsd's work per enrolment. */
typedef struct kms_pki_ca kms_pki_ca_t;
sr_err_t kms_pki_ca_load(const char *cert_path, const char *key_path, kms_pki_ca_t **out) SR_MUST_CHECK;
void kms_pki_ca_free(kms_pki_ca_t *ca);
/* Signs a node's certificate request (DER; its own signature checked) as a
 * clientAuth certificate for CN=cn; the certificate (DER, malloc'd) out. */
sr_err_t kms_pki_sign_csr(const kms_pki_ca_t *ca, const uint8_t *csr, size_t csr_len, const char *cn, int days,
                          uint8_t **cert, size_t *cert_len, kms_cert_info_t *info) SR_MUST_CHECK;

/* ---- join tokens and nodes (enrolment, leases) ------------------------------------------------ */
/* A one-time (or `uses`-time) join token for nodes of `group`; only its
 * SHA-256 is stored. */
sr_err_t kms_token_create(kms_store_t *s, const char *group, int uses, int64_t ttl_s, char token[65]) SR_MUST_CHECK;
/* Uses the token once; SR_ERR_AUTH: unknown, expired or used up. */
sr_err_t kms_token_take(kms_store_t *s, const char *token, char group[KMS_TEXT_MAX]) SR_MUST_CHECK;
sr_err_t kms_principal_set_group(kms_store_t *s, const char *name, const char *group) SR_MUST_CHECK;

typedef struct kms_node {
    char uuid[KMS_UID_MAX], name[KMS_TEXT_MAX], group[KMS_TEXT_MAX];
    char state[16];         /* active, left, expired, revoked */
    int64_t lease_expires_ms; /* milliseconds since the epoch: leases are a few seconds */
    int64_t joined, left;     /* seconds since the epoch */
    char nk[KMS_UID_MAX];   /* the node key's UID */
    char reason[KMS_TEXT_MAX];
} kms_node_t;
sr_err_t kms_node_save(kms_store_t *s, const kms_node_t *n) SR_MUST_CHECK;
sr_err_t kms_node_load(kms_store_t *s, const char *uuid, kms_node_t *n) SR_MUST_CHECK;
/* Every active lease ending before `until_ms` now ends then (kmsd's start:
 * nodes could not renew while it was down). */
sr_err_t kms_node_extend_leases(kms_store_t *s, int64_t until_ms) SR_MUST_CHECK;
/* Nodes in a state (NULL: any) whose lease ends before `lease_before_ms` (0: any). */
sr_err_t kms_node_each(kms_store_t *s, const char *state, int64_t lease_before_ms,
                       void (*fn)(void *, const kms_node_t *), void *ctx) SR_MUST_CHECK;
/* Access policies (kmsctl policy push; agents fetch the newest): versions
 * count up from 1, the text is kept as pushed (validated by the pusher and
 * again by every agent before it is installed). */
typedef struct kms_policy {
    int64_t version, pushed;
    char digest[32], pushed_by[KMS_TEXT_MAX];
    char *text; /* malloc'd, NUL-terminated */
    size_t len;
} kms_policy_t;
sr_err_t kms_policy_push(kms_store_t *s, const char *text, const char *digest, const char *by,
                         int64_t *version) SR_MUST_CHECK;
int64_t kms_policy_newest(kms_store_t *s); /* 0: none */
/* A counter moved (in the caller's transaction) whenever a key stops being
 * usable or a grant is taken back; every heartbeat answer carries it, and an
 * agent that sees it move drops the data keys it cached, so the change
 * reaches cached keys within a heartbeat instead of their cache_ttl. */
int64_t kms_access_epoch(kms_store_t *s); /* 0: never moved */
sr_err_t kms_access_epoch_bump(kms_store_t *s) SR_MUST_CHECK;
/* The newest; SR_ERR_NOT_FOUND when none was pushed. Free p->text. */
sr_err_t kms_policy_load(kms_store_t *s, kms_policy_t *p) SR_MUST_CHECK;

/* kmsd instances of one store: each records itself every sweep; another seen
 * since `since` means the service was up (its nodes could renew). */
sr_err_t kms_instance_seen(kms_store_t *s, const char *id, int64_t now) SR_MUST_CHECK;
int kms_instances_alive(kms_store_t *s, const char *except_id, int64_t since);

/* Enrolment settings (kmsd's [enrolment]); without them Enrol is refused. */
typedef struct kms_enrolment {
    const kms_pki_ca_t *ca; /* signs node certificates */
    int64_t lease_ms, grace_ms, cert_days;
} kms_enrolment_t;
void kms_enrolment_configure(const kms_enrolment_t *e);
/* Ends a node's membership: its node key revoked (Cessation of Operation),
 * its certificates refused, state `state` ("left", "expired", "revoked"). */
sr_err_t kms_node_end(kms_store_t *s, kms_node_t *n, const char *state, const char *reason) SR_MUST_CHECK;

/* KMIP vendor extensions for node membership: kmip.h (SR_KMIP_OP_ENROL, ...). */
enum { KMS_OP_ENROL = SR_KMIP_OP_ENROL, KMS_OP_HEARTBEAT = SR_KMIP_OP_HEARTBEAT, KMS_OP_LEAVE = SR_KMIP_OP_LEAVE };
enum { KMS_TAG_JOIN_TOKEN = SR_KMIP_TAG_X_JOIN_TOKEN, KMS_TAG_CSR = SR_KMIP_TAG_X_CSR,
       KMS_TAG_NODE_NAME = SR_KMIP_TAG_X_NODE_NAME, KMS_TAG_NODE_UUID = SR_KMIP_TAG_X_NODE_UUID,
       KMS_TAG_NODE_CERTIFICATE = SR_KMIP_TAG_X_NODE_CERTIFICATE, KMS_TAG_LEASE_SECONDS = SR_KMIP_TAG_X_LEASE_SECONDS,
       KMS_TAG_CONNECTION_BOUND = SR_KMIP_TAG_X_CONNECTION_BOUND };

/* ---- the request handler ------------------------------------------------------------- */
/* Answers one KMIP request message (any bytes: malformed input is answered
 * with Invalid Message). The response is in `resp` (sr_kmip_enc_init'd by
 * the caller). Each batch item is one audit event (component "kms"). */
sr_err_t kms_handle(kms_store_t *s, kms_principal_t *p, const uint8_t *req, size_t len,
                    sr_kmip_enc_t *resp) SR_MUST_CHECK;

#endif
