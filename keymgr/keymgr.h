/*
 * keymgr.h — the key hierarchy's client side: key wrapping, key providers,
 * the locked-memory key cache, and the KMIP codec and client.
 *
 * Master keys (MK) wrap tablespace data keys (DEK). A key provider is how an
 * engine gets a tablespace's DEK: the local key-file provider (single box,
 * tests) holds an MK in locked memory; the agent/KMS provider (later) asks
 * tde-agent, which asks kmsd. Engines only ever see sr_keyprov_t.
 */
#ifndef STRONGROOM_KEYMGR_H
#define STRONGROOM_KEYMGR_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SR_KEYMGR_KEY_BYTES 32      /* AES-256 master and data keys */
#define SR_KEYMGR_WRAPPED_MAX 96    /* largest wrapped blob (GCM: 12 + 32 + 16; KWP: 40) */

/* ---- key wrapping ----------------------------------------------------- */
typedef enum sr_wrap_alg {
    SR_WRAP_AES_256_GCM = 1, /* blob = nonce(12) || ciphertext || tag(16); binds AAD */
    SR_WRAP_AES_256_KWP = 2, /* RFC 5649 AES Key Wrap with Padding; no AAD */
    SR_WRAP_KMIP_AES_GCM = 3, /* wrapped by a KMS (KMIP Encrypt, AES-GCM): iv(12) || ct || tag(16); unwrapped
                                 only by that KMS. kek_id: the master key's UUID, or nil with kek_version
                                 holding a decimal Unique Identifier (PyKMIP's "1", "2", ...) */
    SR_WRAP_KMIP_GET_GCM = 4, /* wrapped here, as SR_WRAP_AES_256_GCM, under a master key read from a KMS with
                                 KMIP Get (for servers that cannot Encrypt); kek_id as SR_WRAP_KMIP_AES_GCM */
} sr_wrap_alg_t;

typedef struct sr_wrapped_key {
    sr_wrap_alg_t alg;
    sr_uuid_t kek_id;     /* UUID of the key that wrapped this one (the MK) */
    uint32_t kek_version; /* its version */
    uint32_t blob_len;
    uint8_t blob[SR_KEYMGR_WRAPPED_MAX];
} sr_wrapped_key_t;

/* Fixed-layout serialisation for on-disk headers (versioned, length-checked). */
#define SR_WRAPPED_KEY_ENCODED_MAX 128
SR_API sr_err_t sr_wrapped_key_encode(const sr_wrapped_key_t *wk, uint8_t *out, size_t out_cap, size_t *out_len);
SR_API sr_err_t sr_wrapped_key_decode(const uint8_t *in, size_t in_len, sr_wrapped_key_t *out);

SR_API sr_err_t sr_keymgr_wrap(sr_wrap_alg_t alg, const uint8_t *kek, size_t kek_len, const sr_uuid_t *kek_id,
                        uint32_t kek_version, const uint8_t *aad, size_t aad_len, const uint8_t *key,
                        size_t key_len, sr_wrapped_key_t *out) SR_MUST_CHECK;
/* SR_ERR_WRAP_INTEGRITY when the blob, the AAD or the KEK does not match. */
SR_API sr_err_t sr_keymgr_unwrap(const uint8_t *kek, size_t kek_len, const sr_wrapped_key_t *wk, const uint8_t *aad,
                          size_t aad_len, uint8_t *key_out, size_t key_cap, size_t *key_len) SR_MUST_CHECK;
/* Raw RFC 5649 (AES Key Wrap with Padding; KEK of 16, 24 or 32 bytes): output
 * is the key length rounded up to 8, plus 8. */
SR_API sr_err_t sr_keymgr_kwp_wrap(const uint8_t *kek, size_t kek_len, const uint8_t *key, size_t key_len, uint8_t *out,
                            size_t out_cap, size_t *out_len) SR_MUST_CHECK;
SR_API sr_err_t sr_keymgr_kwp_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len, uint8_t *out,
                              size_t out_cap, size_t *out_len) SR_MUST_CHECK;

/* ---- key providers ------------------------------------------------------ */
/* What every provider binds a wrapped DEK to: "SRDEK1" | tablespace UUID |
 * DEK version (u32 BE), so a wrapped DEK copied into another tablespace's
 * header, or presented as another version, does not unwrap. */
#define SR_KEYMGR_DEK_AAD_LEN (6 + SR_UUID_BYTES + 4)
SR_API void sr_keymgr_dek_aad(const sr_uuid_t *tablespace, uint32_t dek_version, uint8_t aad[SR_KEYMGR_DEK_AAD_LEN]);

typedef struct sr_keyprov sr_keyprov_t;

typedef struct sr_keyprov_ops {
    const char *kind; /* "keyfile", "agent", ... */
    /* A fresh random DEK for (tablespace, version), returned in clear into the
     * caller's SR_KEYMGR_KEY_BYTES of secure memory and wrapped for storage. */
    sr_err_t (*dek_create)(void *impl, const sr_uuid_t *tablespace, uint32_t dek_version, uint8_t *dek_out,
                           sr_wrapped_key_t *wrapped_out);
    /* Unwraps a stored DEK; SR_ERR_WRONG_KEY if this provider's master key
     * is not the one that wrapped it, SR_ERR_WRAP_INTEGRITY if it was altered. */
    sr_err_t (*dek_unwrap)(void *impl, const sr_uuid_t *tablespace, uint32_t dek_version,
                           const sr_wrapped_key_t *wrapped, uint8_t *dek_out);
    /* Re-wraps a DEK under the provider's current master key (MK rotation). */
    sr_err_t (*dek_rewrap)(void *impl, const sr_uuid_t *tablespace, uint32_t dek_version,
                           const sr_wrapped_key_t *old_wrapped, sr_wrapped_key_t *new_wrapped);
    void (*destroy)(void *impl);
} sr_keyprov_ops_t;

/* Wraps an implementation (takes ownership of impl: ops->destroy frees it). */
SR_API sr_err_t sr_keyprov_new(const sr_keyprov_ops_t *ops, void *impl, const char *description,
                        sr_keyprov_t **out) SR_MUST_CHECK;
SR_API sr_err_t sr_keyprov_dek_create(sr_keyprov_t *kp, const sr_uuid_t *tablespace, uint32_t dek_version,
                               uint8_t *dek_out, sr_wrapped_key_t *wrapped_out) SR_MUST_CHECK;
SR_API sr_err_t sr_keyprov_dek_unwrap(sr_keyprov_t *kp, const sr_uuid_t *tablespace, uint32_t dek_version,
                               const sr_wrapped_key_t *wrapped, uint8_t *dek_out) SR_MUST_CHECK;
SR_API sr_err_t sr_keyprov_dek_rewrap(sr_keyprov_t *kp, const sr_uuid_t *tablespace, uint32_t dek_version,
                               const sr_wrapped_key_t *old_wrapped, sr_wrapped_key_t *new_wrapped) SR_MUST_CHECK;
/* The implementation kp wraps if it was made with ops, else NULL: a provider's own calls (kmip.h). */
SR_API void *sr_keyprov_impl(const sr_keyprov_t *kp, const sr_keyprov_ops_t *ops);
/* "keyfile:/etc/strongroom/master.key" — for messages; never secret. */
SR_API const char *sr_keyprov_description(const sr_keyprov_t *kp);
SR_API void sr_keyprov_free(sr_keyprov_t *kp);

/* Local key-file provider. The file holds one master key (one UUID) in one or
 * more versions of 256 bits each; it is created mode 0600 and refused if group
 * or world can read it. Unwrap uses the version a blob names; create and
 * rewrap use the newest. */
SR_API sr_err_t sr_keyfile_create(const char *path) SR_MUST_CHECK;       /* refuses to overwrite */
SR_API sr_err_t sr_keyfile_rotate(const char *path, uint32_t *new_version) SR_MUST_CHECK; /* adds a version */
/* Master key id and newest version, without keeping the key material. */
SR_API sr_err_t sr_keyfile_describe(const char *path, sr_uuid_t *id, uint32_t *newest_version) SR_MUST_CHECK;
SR_API sr_err_t sr_keyprov_keyfile_open(const char *path, sr_keyprov_t **out) SR_MUST_CHECK;
/* The same provider over one master key held by the caller (version 1), e.g.
 * a root key derived from a passphrase; the key is copied into locked memory. */
SR_API sr_err_t sr_keyprov_rawkey_new(const sr_uuid_t *id, const uint8_t key[SR_KEYMGR_KEY_BYTES], const char *description,
                               sr_keyprov_t **out) SR_MUST_CHECK;

/* KMS provider: DEKs wrapped by a master key that never leaves the KMS (KMIP
 * Encrypt/Decrypt with AES-GCM, AAD binding tablespace and DEK version).
 * The config file ([kms] servers = host:port[, host:port...], server_name,
 * ca, cert, key, master_key = UID, timeout) lists servers tried in order: a
 * server that cannot be reached is skipped, a refusal is final. Works with
 * kmsd and any KMIP 1.4 server with AES-GCM (PyKMIP's among them). */
SR_API sr_err_t sr_keyprov_kmip_open(const char *config_path, sr_keyprov_t **out) SR_MUST_CHECK;

/* Agent provider: asks the host's tde-agent over its Unix socket (the wire
 * format is in keyprov_agent.c); the agent checks the caller and asks kmsd. */
SR_API sr_err_t sr_keyprov_agent_open(const char *socket_path, sr_keyprov_t **out) SR_MUST_CHECK;
/* One request to the agent and its answer (u32 BE length, then the bytes,
 * each way; the answer starts 'K', or 'E' and a message: SR_ERR_PERMISSION
 * with that message). The key requests above and the PAM module's policy
 * decisions ('D', agent/key_service.c) go through it. */
#define SR_AGENT_REQUEST_MAX 8192
SR_API sr_err_t sr_agent_request(const char *socket_path, const uint8_t *req, size_t len, uint8_t *answer, size_t cap,
                                 size_t *answer_len) SR_MUST_CHECK;

/* ---- key cache (locked memory, TTL, explicit purge) ------------------------ */
typedef struct sr_keycache sr_keycache_t;
SR_API sr_err_t sr_keycache_new(size_t max_entries, uint64_t default_ttl_ms, sr_keycache_t **out) SR_MUST_CHECK;
SR_API sr_err_t sr_keycache_put(sr_keycache_t *kc, const sr_uuid_t *id, uint32_t version, const uint8_t *key,
                         size_t key_len, uint64_t ttl_ms) SR_MUST_CHECK;
/* Copies the key into the caller's buffer; SR_ERR_NOT_FOUND or SR_ERR_KEY_EXPIRED. */
SR_API sr_err_t sr_keycache_get(sr_keycache_t *kc, const sr_uuid_t *id, uint32_t version, uint8_t *key_out,
                         size_t key_cap, size_t *key_len) SR_MUST_CHECK;
/* Wipes one key (all versions), or every key when id is NULL. */
SR_API void sr_keycache_purge(sr_keycache_t *kc, const sr_uuid_t *id);
/* How many keys it holds unexpired (for status: never which, never the keys). */
SR_API size_t sr_keycache_count(sr_keycache_t *kc);
SR_API void sr_keycache_free(sr_keycache_t *kc);

/* The KMIP codec, messages and client are declared in kmip.h. */

#ifdef __cplusplus
}
#endif
#endif
