/*
 * page_cipher.c — the tablespace in memory and the per-page AEAD.
 *
 * Speed: each sr_tde_pagectx keeps one EVP context for encryption (keyed once
 * for the active key version) and one for decryption (re-keyed only when a
 * page of another key version comes by). Per page the work is: set the IV,
 * feed the 35-byte AAD, one update over the page body, final, tag. No
 * allocation, no copy besides the cipher's own in->out pass; nonces come from
 * a buffer refilled by RAND_bytes every 256 pages.
 *
 * Nonce budget: a context leases encryptions from the space in blocks of
 * LEASE pages. The space makes sure every leased encryption is below the mark
 * reserved in the key header (the reserve hook persists a higher mark before
 * the lease is granted), and at the 2^32 limit calls the roll hook, which adds
 * and activates a new key version. Reservations start small and double (a
 * process that writes a few pages reserves a few hundred encryptions, a bulk
 * load reaches 2^20 per header write); what a process did not use is given
 * back at close (sr_tde_space_unused). A crash loses at most the unused part
 * of one reservation, never reuses one. The space lock is recursive because
 * the roll hook adds the new key through this API while the lease is granted.
 *
 * Fork: a child process inherits the parent's pre-generated nonces and its
 * reserved range. Both are dropped in the child (an atfork handler bumps an
 * epoch that contexts and spaces compare before they encrypt), so a
 * connection used on both sides of a fork never repeats a nonce.
 */
#include "tde.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/kdf.h>
#include <openssl/core_names.h>

#define AAD_FIXED (6 + SR_UUID_BYTES + 1 + 8 + 4)
#define NONCE_BUFFER_PAGES 256
#define LEASE 64

/* Bumped in every child after fork(): pre-generated nonces and reserved
 * ranges of the parent must not be used by the child. */
static volatile unsigned fork_epoch;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { fork_epoch++; }
static void atfork_install(void) { pthread_atfork(NULL, NULL, on_fork_child); }

typedef struct space_key {
    uint32_t version;          /* 0: unused slot */
    uint8_t *key;              /* SR_TDE_KEY_BYTES of secure memory */
    uint64_t assigned;         /* encryptions handed out under this key */
    uint64_t reserved;         /* the mark persisted in the key header */
    uint64_t next_claim;       /* size of the next reservation (doubles up to reserve_block) */
    uint64_t returned;         /* handed out in leases but given back unused by their contexts */
    sr_tde_cipher_t cipher;    /* 0: the space's */
} space_key_t;

struct sr_tde_space {
    pthread_mutex_t lock;      /* recursive */
    sr_uuid_t id;
    sr_tde_cipher_t cipher;
    uint32_t active;
    uint64_t nonce_limit, reserve_block;
    sr_tde_space_hooks_t hooks;
    unsigned epoch;            /* fork_epoch when the reserved ranges were claimed */
    space_key_t keys[SR_TDE_MAX_KEY_VERSIONS];
};

struct sr_tde_pagectx {
    sr_tde_space_t *space;
    const EVP_CIPHER *evp;
    EVP_CIPHER_CTX *enc, *dec;
    uint32_t enc_version, dec_version; /* which key each context holds; 0 = none */
    uint64_t lease_left;               /* encryptions left under enc_version */
    unsigned epoch;                    /* fork_epoch of the nonces and lease */
    size_t nonce_used;
    uint8_t nonces[NONCE_BUFFER_PAGES * SR_TDE_NONCE_BYTES];
    uint8_t aad[AAD_FIXED + SR_TDE_BIND_MAX];
};

sr_err_t sr_tde_cipher_parse(const char *name, sr_tde_cipher_t *out)
{
    if (name && strcmp(name, "aes-256-gcm") == 0) *out = SR_TDE_CIPHER_AES_256_GCM;
    else if (name && strcmp(name, "chacha20-poly1305") == 0) *out = SR_TDE_CIPHER_CHACHA20_POLY1305;
    else return sr_err_set(SR_ERR_INVALID_ARG, "unknown cipher '%s' (use aes-256-gcm or chacha20-poly1305)",
                           name ? name : "");
    return SR_OK;
}

const char *sr_tde_cipher_name(sr_tde_cipher_t cipher)
{
    return cipher == SR_TDE_CIPHER_AES_256_GCM ? "aes-256-gcm"
         : cipher == SR_TDE_CIPHER_CHACHA20_POLY1305 ? "chacha20-poly1305" : "unknown";
}

const char *sr_tde_file_kind_name(sr_tde_file_kind_t kind)
{
    switch (kind) {
    case SR_TDE_FILE_DB: return "database";
    case SR_TDE_FILE_WAL: return "wal";
    case SR_TDE_FILE_JOURNAL: return "journal";
    case SR_TDE_FILE_SUBJOURNAL: return "subjournal";
    case SR_TDE_FILE_JOURNAL_HEADER: return "journal header";
    }
    return "unknown";
}

static const EVP_CIPHER *cipher_evp(sr_tde_cipher_t cipher)
{
    return cipher == SR_TDE_CIPHER_AES_256_GCM ? EVP_aes_256_gcm()
         : cipher == SR_TDE_CIPHER_CHACHA20_POLY1305 ? EVP_chacha20_poly1305() : NULL;
}

int sr_tde_page_size_valid(size_t page_size)
{
    return page_size >= SR_TDE_MIN_PAGE && page_size <= SR_TDE_MAX_PAGE && (page_size & (page_size - 1)) == 0;
}

/* ---- space ----------------------------------------------------------------- */

sr_err_t sr_tde_space_new(const sr_uuid_t *id, sr_tde_cipher_t cipher, sr_tde_space_t **out)
{
    if (!cipher_evp(cipher)) return sr_err_set(SR_ERR_UNSUPPORTED, "unknown cipher id %d", (int)cipher);
    pthread_once(&atfork_once, atfork_install);
    sr_tde_space_t *s = calloc(1, sizeof *s);
    if (!s) return sr_err_set(SR_ERR_NOMEM, "cannot allocate a tablespace");
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&s->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    s->id = *id;
    s->cipher = cipher;
    s->nonce_limit = SR_TDE_NONCE_LIMIT;
    s->reserve_block = SR_TDE_RESERVE_BLOCK;
    s->epoch = fork_epoch;
    *out = s;
    return SR_OK;
}

static space_key_t *space_find(sr_tde_space_t *s, uint32_t version)
{
    for (int i = 0; i < SR_TDE_MAX_KEY_VERSIONS; i++)
        if (s->keys[i].version == version && version != 0) return &s->keys[i];
    return NULL;
}

sr_err_t sr_tde_space_set_key_cipher(sr_tde_space_t *s, uint32_t version, sr_tde_cipher_t cipher)
{
    if (!cipher_evp(cipher)) return sr_err_set(SR_ERR_UNSUPPORTED, "unknown cipher id %d", (int)cipher);
    pthread_mutex_lock(&s->lock);
    space_key_t *k = space_find(s, version);
    if (k) k->cipher = cipher;
    pthread_mutex_unlock(&s->lock);
    return k ? SR_OK : sr_err_set(SR_ERR_TDE_KEY_VERSION, "key version %u is not loaded", version);
}

sr_err_t sr_tde_space_add_key(sr_tde_space_t *s, uint32_t version, const uint8_t key[SR_TDE_KEY_BYTES],
                              uint64_t encryptions_reserved)
{
    if (version == 0) return sr_err_set(SR_ERR_INVALID_ARG, "key versions start at 1");
    pthread_mutex_lock(&s->lock);
    sr_err_t rc = SR_OK;
    space_key_t *k = space_find(s, version);
    if (k) {
        /* Another connection loaded it already; keep the higher mark. */
        if (encryptions_reserved > k->reserved) k->assigned = k->reserved = encryptions_reserved;
    } else {
        for (int i = 0; i < SR_TDE_MAX_KEY_VERSIONS && !k; i++)
            if (s->keys[i].version == 0) k = &s->keys[i];
        if (!k) {
            rc = sr_err_set(SR_ERR_LIMIT, "tablespace already holds %d key versions", SR_TDE_MAX_KEY_VERSIONS);
        } else if (!(k->key = sr_secure_alloc(SR_TDE_KEY_BYTES))) {
            rc = SR_ERR_NOMEM;
        } else {
            memcpy(k->key, key, SR_TDE_KEY_BYTES);
            sr_log_secret_register(k->key, SR_TDE_KEY_BYTES);
            k->version = version;
            /* Counting resumes at the persisted mark: what was reserved before
             * a crash may have been used. */
            k->assigned = k->reserved = encryptions_reserved;
            k->next_claim = SR_TDE_RESERVE_FIRST;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

sr_err_t sr_tde_space_set_active(sr_tde_space_t *s, uint32_t version)
{
    pthread_mutex_lock(&s->lock);
    int known = space_find(s, version) != NULL;
    if (known) s->active = version;
    pthread_mutex_unlock(&s->lock);
    return known ? SR_OK : sr_err_set(SR_ERR_TDE_KEY_VERSION, "key version %u is not loaded", version);
}

uint32_t sr_tde_space_active(const sr_tde_space_t *s) { return s->active; }
const sr_uuid_t *sr_tde_space_id(const sr_tde_space_t *s) { return &s->id; }
sr_tde_cipher_t sr_tde_space_cipher(const sr_tde_space_t *s) { return s->cipher; }

void sr_tde_space_set_hooks(sr_tde_space_t *s, const sr_tde_space_hooks_t *hooks)
{
    pthread_mutex_lock(&s->lock);
    s->hooks = *hooks;
    pthread_mutex_unlock(&s->lock);
}

void sr_tde_space_set_limits(sr_tde_space_t *s, uint64_t nonce_limit, uint64_t reserve_block)
{
    pthread_mutex_lock(&s->lock);
    s->nonce_limit = nonce_limit ? nonce_limit : SR_TDE_NONCE_LIMIT;
    s->reserve_block = reserve_block ? reserve_block : SR_TDE_RESERVE_BLOCK;
    pthread_mutex_unlock(&s->lock);
}

uint64_t sr_tde_space_encryptions(sr_tde_space_t *s, uint32_t version)
{
    pthread_mutex_lock(&s->lock);
    space_key_t *k = space_find(s, version);
    uint64_t n = k ? k->assigned : 0;
    pthread_mutex_unlock(&s->lock);
    return n;
}

size_t sr_tde_space_unused(sr_tde_space_t *s, sr_tde_unused_t out[SR_TDE_MAX_KEY_VERSIONS])
{
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    /* The header's mark only bounds how many encryptions were made (nonces
     * are random: which counts were used does not matter), so leases given
     * back out of order still come off the count. */
    for (int i = 0; i < SR_TDE_MAX_KEY_VERSIONS && s->epoch == fork_epoch; i++) {
        space_key_t *k = &s->keys[i];
        uint64_t used = k->assigned - (k->returned < k->assigned ? k->returned : k->assigned);
        if (k->version && k->reserved > used) out[n++] = (sr_tde_unused_t){k->version, used, k->reserved};
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

int sr_tde_space_has_key(sr_tde_space_t *s, uint32_t version)
{
    pthread_mutex_lock(&s->lock);
    int has = space_find(s, version) != NULL;
    pthread_mutex_unlock(&s->lock);
    return has;
}

/* HKDF fetched once: OpenSSL 3 looks the algorithm up in its providers on
 * every fetch, which costs more than the derivation. */
static EVP_KDF *hkdf;
static pthread_once_t hkdf_once = PTHREAD_ONCE_INIT;
static void hkdf_fetch(void) { hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL); }

sr_err_t sr_tde_key_derive(const uint8_t dek[SR_TDE_KEY_BYTES], const sr_uuid_t *id, const char *label,
                           uint8_t out[32])
{
    pthread_once(&hkdf_once, hkdf_fetch);
    EVP_KDF_CTX *kctx = hkdf ? EVP_KDF_CTX_new(hkdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)dek, SR_TDE_KEY_BYTES),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)id->bytes, SR_UUID_BYTES),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)label, strlen(label)),
        OSSL_PARAM_construct_end()};
    sr_err_t rc = kctx && EVP_KDF_derive(kctx, out, 32, params) == 1
                      ? SR_OK : sr_err_set_openssl(SR_ERR_CRYPTO, "cannot derive the %s key", label);
    EVP_KDF_CTX_free(kctx);
    return rc;
}

sr_err_t sr_tde_space_derive(sr_tde_space_t *s, uint32_t version, const char *label, uint8_t out[32])
{
    pthread_mutex_lock(&s->lock);
    space_key_t *k = space_find(s, version);
    sr_err_t rc = k ? sr_tde_key_derive(k->key, &s->id, label, out)
                    : sr_err_set(SR_ERR_TDE_KEY_VERSION, "key version %u is not loaded", version);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void sr_tde_space_free(sr_tde_space_t *s)
{
    if (!s) return;
    for (int i = 0; i < SR_TDE_MAX_KEY_VERSIONS; i++) {
        if (!s->keys[i].key) continue;
        sr_log_secret_unregister(s->keys[i].key);
        sr_secure_wipe(s->keys[i].key, SR_TDE_KEY_BYTES);
        sr_secure_free(s->keys[i].key);
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Claims the next range of encryptions of the active key: in the header
 * when a reserve hook is set (shared with other processes), else in memory. */
static sr_err_t space_claim(sr_tde_space_t *s, space_key_t *k, uint64_t *start, uint64_t *block)
{
    *block = k->next_claim < s->reserve_block ? k->next_claim : s->reserve_block;
    if (k->next_claim < s->reserve_block) k->next_claim *= 2;
    *start = k->reserved;
    if (!s->hooks.reserve) return SR_OK;
    return s->hooks.reserve(s->hooks.ctx, k->version, *block, s->nonce_limit, start);
}

/* In a forked child: forget the parent's reserved ranges (the parent goes on
 * using them); the next encryption claims a fresh range from the header. */
static void space_after_fork(sr_tde_space_t *s)
{
    if (s->epoch == fork_epoch) return;
    for (int i = 0; i < SR_TDE_MAX_KEY_VERSIONS; i++) s->keys[i].reserved = s->keys[i].assigned, s->keys[i].returned = 0;
    s->epoch = fork_epoch;
}

static sr_err_t space_roll(sr_tde_space_t *s, uint32_t exhausted)
{
    if (!s->hooks.roll)
        return sr_err_set(SR_ERR_TDE_NONCE_LIMIT, "key version %u reached %llu encryptions and no new key can be made "
                          "here", exhausted, (unsigned long long)s->nonce_limit);
    sr_err_t rc = s->hooks.roll(s->hooks.ctx, exhausted);
    if (rc == SR_OK && s->active == exhausted)
        rc = sr_err_set(SR_ERR_TDE_NONCE_LIMIT, "rolling key version %u gave no fresh key", exhausted);
    return rc;
}

/* Grants up to LEASE encryptions under the active key, claiming a new range
 * (persisted before use) or rolling to a new key at the limit. Lock held. */
static sr_err_t space_lease(sr_tde_space_t *s, uint32_t *version, uint64_t *granted)
{
    space_after_fork(s);
    for (int attempt = 0; attempt < SR_TDE_MAX_KEY_VERSIONS + 1; attempt++) {
        space_key_t *k = space_find(s, s->active);
        if (!k) return sr_err_set(SR_ERR_TDE_KEY_VERSION, "tablespace has no active key version");
        if (k->assigned >= k->reserved) {
            uint64_t start = 0, block = 0;
            sr_err_t rc = space_claim(s, k, &start, &block);
            if (rc != SR_OK) return rc;
            if (start >= s->nonce_limit) {
                k->assigned = k->reserved = s->nonce_limit;
                if ((rc = space_roll(s, k->version)) != SR_OK) return rc;
                continue;
            }
            k->assigned = start;
            k->reserved = start + block < s->nonce_limit ? start + block : s->nonce_limit;
        }
        uint64_t left = k->reserved - k->assigned;
        *granted = left < LEASE ? left : LEASE;
        k->assigned += *granted;
        *version = k->version;
        return SR_OK;
    }
    return sr_err_set(SR_ERR_TDE_NONCE_LIMIT, "no key version with encryptions left");
}

/* ---- page context ------------------------------------------------------------ */

sr_err_t sr_tde_pagectx_new(sr_tde_space_t *space, sr_tde_pagectx_t **out)
{
    sr_tde_pagectx_t *c = calloc(1, sizeof *c);
    if (!c) return sr_err_set(SR_ERR_NOMEM, "cannot allocate a page cipher context");
    c->space = space;
    c->evp = cipher_evp(space->cipher);
    c->enc = EVP_CIPHER_CTX_new();
    c->dec = EVP_CIPHER_CTX_new();
    c->nonce_used = NONCE_BUFFER_PAGES;
    c->epoch = fork_epoch;
    memcpy(c->aad, "SRTDE1", 6);
    memcpy(c->aad + 6, space->id.bytes, SR_UUID_BYTES);
    if (!c->enc || !c->dec || EVP_EncryptInit_ex(c->enc, c->evp, NULL, NULL, NULL) != 1 ||
        EVP_DecryptInit_ex(c->dec, c->evp, NULL, NULL, NULL) != 1) {
        sr_tde_pagectx_free(c);
        return sr_err_set_openssl(SR_ERR_CRYPTO, "cannot set up %s", sr_tde_cipher_name(space->cipher));
    }
    *out = c;
    return SR_OK;
}

/* The unused rest of a lease is counted as given back (sr_tde_space_unused). */
static void lease_return(sr_tde_pagectx_t *c)
{
    if (!c->lease_left || c->epoch != fork_epoch) return;
    pthread_mutex_lock(&c->space->lock);
    space_key_t *k = space_find(c->space, c->enc_version);
    if (k && c->space->epoch == fork_epoch) k->returned += c->lease_left;
    pthread_mutex_unlock(&c->space->lock);
    c->lease_left = 0;
}

void sr_tde_pagectx_free(sr_tde_pagectx_t *c)
{
    if (!c) return;
    lease_return(c);
    EVP_CIPHER_CTX_free(c->enc); /* OpenSSL wipes the key schedule */
    EVP_CIPHER_CTX_free(c->dec);
    free(c);
}

/* The AAD for a place under a key version; returns its length. */
static sr_err_t aad_fill(sr_tde_pagectx_t *c, const sr_tde_place_t *p, uint32_t version, int *len)
{
    if (p->bind_len > SR_TDE_BIND_MAX || (p->bind_len && !p->bind))
        return sr_err_set(SR_ERR_INVALID_ARG, "page binding of %zu bytes (at most %d)", p->bind_len, SR_TDE_BIND_MAX);
    c->aad[22] = (uint8_t)p->kind;
    sr_put_be64(c->aad + 23, p->location);
    sr_put_be32(c->aad + 31, version);
    if (p->bind_len) memcpy(c->aad + AAD_FIXED, p->bind, p->bind_len);
    *len = AAD_FIXED + (int)p->bind_len;
    return SR_OK;
}

/* Keys ctx with the key of `version` and its cipher (looked up under the space lock). */
static sr_err_t ctx_key(sr_tde_pagectx_t *c, EVP_CIPHER_CTX *ctx, int enc, uint32_t version)
{
    pthread_mutex_lock(&c->space->lock);
    space_key_t *k = space_find(c->space, version);
    const uint8_t *key = k ? k->key : NULL;
    const EVP_CIPHER *evp = cipher_evp(k && k->cipher ? k->cipher : c->space->cipher);
    pthread_mutex_unlock(&c->space->lock);
    if (!key) return SR_ERR_TDE_KEY_VERSION;
    int ok = enc ? EVP_EncryptInit_ex(ctx, evp, NULL, key, NULL) : EVP_DecryptInit_ex(ctx, evp, NULL, key, NULL);
    return ok == 1 ? SR_OK : sr_err_set_openssl(SR_ERR_CRYPTO, "cannot load key version %u", version);
}

static sr_err_t next_nonce(sr_tde_pagectx_t *c, uint8_t *nonce)
{
    if (c->nonce_used == NONCE_BUFFER_PAGES) {
        if (RAND_bytes(c->nonces, sizeof c->nonces) != 1)
            return sr_err_set_openssl(SR_ERR_RANDOM, "RAND_bytes failed: no nonce, page not written");
        c->nonce_used = 0;
    }
    memcpy(nonce, c->nonces + c->nonce_used * SR_TDE_NONCE_BYTES, SR_TDE_NONCE_BYTES);
    c->nonce_used++;
    return SR_OK;
}

static sr_err_t take_encryption(sr_tde_pagectx_t *c, uint32_t *version)
{
    if (c->epoch != fork_epoch) { /* a forked child: the parent keeps these */
        c->nonce_used = NONCE_BUFFER_PAGES;
        c->lease_left = 0;
        c->epoch = fork_epoch;
    }
    if (c->lease_left == 0 || c->enc_version != c->space->active) {
        lease_return(c);
        pthread_mutex_lock(&c->space->lock);
        uint32_t v = 0;
        uint64_t granted = 0;
        sr_err_t rc = space_lease(c->space, &v, &granted);
        pthread_mutex_unlock(&c->space->lock);
        if (rc != SR_OK) return rc;
        if (v != c->enc_version) {
            c->enc_version = 0;
            if ((rc = ctx_key(c, c->enc, 1, v)) != SR_OK) return rc;
            c->enc_version = v;
        }
        c->lease_left = granted;
    }
    c->lease_left--;
    *version = c->enc_version;
    return SR_OK;
}

/* AEAD over `body` bytes of in (may be 0: a seal) into out, trailer written. */
static sr_err_t encrypt_body(sr_tde_pagectx_t *c, const sr_tde_place_t *p, const uint8_t *in, uint8_t *out,
                             size_t body, uint8_t *trailer)
{
    uint32_t version = 0;
    int aad_len = 0;
    sr_err_t rc = aad_fill(c, p, 0, &aad_len);
    if (rc == SR_OK) rc = take_encryption(c, &version);
    if (rc == SR_OK) rc = next_nonce(c, trailer);
    if (rc != SR_OK) return rc;
    sr_put_be32(trailer + SR_TDE_NONCE_BYTES, version);
    sr_put_be32(c->aad + 31, version);
    uint8_t none[16];
    if (!body) out = none; /* a seal: GCM/Poly1305 finals write nothing */
    int n = 0, m = 0;
    int ok = EVP_EncryptInit_ex(c->enc, NULL, NULL, NULL, trailer) == 1 &&
             EVP_EncryptUpdate(c->enc, NULL, &n, c->aad, aad_len) == 1 &&
             (body == 0 || EVP_EncryptUpdate(c->enc, out, &n, in, (int)body) == 1) &&
             EVP_EncryptFinal_ex(c->enc, out + n, &m) == 1 &&
             EVP_CIPHER_CTX_ctrl(c->enc, EVP_CTRL_AEAD_GET_TAG, SR_TDE_TAG_BYTES, trailer + 16) == 1;
    return ok ? SR_OK : sr_err_set_openssl(SR_ERR_CRYPTO, "page encryption failed");
}

sr_err_t sr_tde_page_encrypt(sr_tde_pagectx_t *c, const sr_tde_place_t *place, const uint8_t *in, uint8_t *out,
                             size_t page_size)
{
    if (!sr_tde_page_size_valid(page_size))
        return sr_err_set(SR_ERR_INVALID_ARG, "page size %zu is not a power of two in 512..65536", page_size);
    size_t body = page_size - SR_TDE_PAGE_TRAILER;
    return encrypt_body(c, place, in, out, body, out + body);
}

sr_err_t sr_tde_seal_make(sr_tde_pagectx_t *c, const sr_tde_place_t *place, uint8_t seal[SR_TDE_PAGE_TRAILER])
{
    return encrypt_body(c, place, NULL, NULL, 0, seal);
}

uint32_t sr_tde_page_key_version(const uint8_t *page, size_t page_size)
{
    return sr_get_be32(page + page_size - SR_TDE_PAGE_TRAILER + SR_TDE_NONCE_BYTES);
}

static sr_err_t auth_failure(const sr_tde_place_t *p, uint32_t version, const char *reason)
{
    const char *what = p->kind == SR_TDE_FILE_DB ? "page" : p->kind == SR_TDE_FILE_WAL ? "frame" : "at offset";
    if (p->kind == SR_TDE_FILE_JOURNAL || p->kind == SR_TDE_FILE_SUBJOURNAL) what = "record at offset";
    return sr_err_set(SR_ERR_TDE_PAGE_AUTH, "%s %s %llu (key version %u): %s", sr_tde_file_kind_name(p->kind), what,
                      (unsigned long long)p->location, version, reason);
}

/* AEAD open of `body` bytes of `in` into `data` (the same buffer, or not)
 * against the trailer; 0 bytes: a seal. */
static sr_err_t decrypt_body(sr_tde_pagectx_t *c, const sr_tde_place_t *p, const uint8_t *in, uint8_t *data,
                             size_t body, const uint8_t *trailer, int *auth_ok)
{
    *auth_ok = 0;
    uint32_t version = sr_get_be32(trailer + SR_TDE_NONCE_BYTES);
    int aad_len = 0;
    sr_err_t rc = aad_fill(c, p, version, &aad_len);
    if (rc != SR_OK) return rc;
    if (version != c->dec_version) {
        c->dec_version = 0;
        rc = ctx_key(c, c->dec, 0, version);
        if (rc == SR_ERR_TDE_KEY_VERSION) {
            int zero = sr_bytes_all_zero(trailer, SR_TDE_PAGE_TRAILER) && (!body || sr_bytes_all_zero(in, body));
            return auth_failure(p, version, zero ? "all zeros (never written)" : "unknown key version");
        }
        if (rc != SR_OK) return rc;
        c->dec_version = version;
    }
    uint8_t tag[SR_TDE_TAG_BYTES], none[16];
    memcpy(tag, trailer + 16, sizeof tag);
    if (!body) data = none;
    int n = 0, m = 0;
    int ok = EVP_DecryptInit_ex(c->dec, NULL, NULL, NULL, trailer) == 1 &&
             EVP_DecryptUpdate(c->dec, NULL, &n, c->aad, aad_len) == 1 &&
             (body == 0 || EVP_DecryptUpdate(c->dec, data, &n, in, (int)body) == 1) &&
             EVP_CIPHER_CTX_ctrl(c->dec, EVP_CTRL_AEAD_SET_TAG, SR_TDE_TAG_BYTES, tag) == 1;
    *auth_ok = ok && EVP_DecryptFinal_ex(c->dec, data + n, &m) == 1;
    if (*auth_ok) return SR_OK;
    if (body) memset(data, 0, body); /* never hand back what failed */
    return auth_failure(p, version, "authentication tag mismatch (altered, moved or foreign)");
}

sr_err_t sr_tde_page_decrypt_to(sr_tde_pagectx_t *c, const sr_tde_place_t *place, const uint8_t *in, uint8_t *out,
                                size_t page_size)
{
    if (!sr_tde_page_size_valid(page_size))
        return sr_err_set(SR_ERR_INVALID_ARG, "page size %zu is not a power of two in 512..65536", page_size);
    size_t body = page_size - SR_TDE_PAGE_TRAILER;
    int ok = 0;
    sr_err_t rc = decrypt_body(c, place, in, out, body, in + body, &ok);
    if (ok) memset(out + body, 0, SR_TDE_PAGE_TRAILER);
    return rc;
}

sr_err_t sr_tde_page_decrypt(sr_tde_pagectx_t *c, const sr_tde_place_t *place, uint8_t *page, size_t page_size)
{
    return sr_tde_page_decrypt_to(c, place, page, page, page_size);
}

sr_err_t sr_tde_seal_check(sr_tde_pagectx_t *c, const sr_tde_place_t *place, const uint8_t seal[SR_TDE_PAGE_TRAILER])
{
    int ok = 0;
    return decrypt_body(c, place, NULL, NULL, 0, seal, &ok);
}
