/*
 * tde.h — transparent data encryption: the engine-independent page cipher,
 * the tablespace key header, the temp-file cipher, and the SQLite adapter.
 *
 * A tablespace (one database file) has a UUID, a cipher chosen at creation
 * (AES-256-GCM or ChaCha20-Poly1305) and up to SR_TDE_MAX_KEY_VERSIONS data
 * keys (DEK), each wrapped by the key provider's master key in the key header
 * at the start of the file. Every page image written to the data file, the WAL
 * or a rollback journal is encrypted and authenticated on its own:
 *
 *   page on disk = ciphertext[page_size - 32] | nonce[12] | key_version u32 BE | tag[16]
 *   AAD          = "SRTDE1" | tablespace UUID | file kind u8 | location u64 BE | key_version u32 BE
 *                  | binding (0..40 bytes)
 *
 * so a page moved within a file, copied to another file kind or copied from
 * another tablespace fails authentication. The binding is what SQLite stores
 * in plaintext beside the page and acts on (a WAL frame's page number, commit
 * size and salts; a journal record's page number and its journal's id):
 * editing it fails the page too. The 32 trailer bytes are SQLite's per-page
 * reserved bytes; on decrypt they are returned as zeros.
 *
 * Nonces are random (96 bits from OpenSSL's DRBG). NIST SP 800-38D allows at
 * most 2^32 random-nonce encryptions under one key: the count is reserved
 * ahead of use in the key header (so a crash never lets it go backwards) and
 * at the limit the tablespace rolls to a new key version by itself.
 *
 * Format details: docs/tde-format.md.
 */
#ifndef STRONGROOM_TDE_H
#define STRONGROOM_TDE_H

#include "common.h"
#include "keymgr.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SR_TDE_KEY_BYTES 32
#define SR_TDE_PAGE_TRAILER 32
#define SR_TDE_NONCE_BYTES 12
#define SR_TDE_TAG_BYTES 16
#define SR_TDE_HEADER_REGION 8192 /* two key-header slots before SQLite's page 1 */
#define SR_TDE_HEADER_SLOT 4096
#define SR_TDE_MAX_KEY_VERSIONS 16
#define SR_TDE_NONCE_LIMIT (UINT64_C(1) << 32) /* encryptions per key version */
#define SR_TDE_RESERVE_FIRST (UINT64_C(1) << 8) /* first reservation of a process, doubling ... */
#define SR_TDE_RESERVE_BLOCK (UINT64_C(1) << 20) /* ... up to this; the unused rest is given back at close */
#define SR_TDE_BIND_MAX 40  /* bytes of plaintext context a page or seal may be bound to */
#define SR_TDE_MIN_PAGE 512
#define SR_TDE_MAX_PAGE 65536

typedef enum sr_tde_cipher {
    SR_TDE_CIPHER_AES_256_GCM = 1,
    SR_TDE_CIPHER_CHACHA20_POLY1305 = 2,
} sr_tde_cipher_t;

/* "aes-256-gcm" / "chacha20-poly1305" */
SR_API sr_err_t sr_tde_cipher_parse(const char *name, sr_tde_cipher_t *out);
SR_API const char *sr_tde_cipher_name(sr_tde_cipher_t cipher);

typedef enum sr_tde_file_kind {
    SR_TDE_FILE_DB = 1,        /* location = page number (1-based) */
    SR_TDE_FILE_WAL = 2,       /* location = frame index (0-based) */
    SR_TDE_FILE_JOURNAL = 3,   /* location = byte offset of the page image */
    SR_TDE_FILE_SUBJOURNAL = 4, /* location = byte offset of the page image */
    SR_TDE_FILE_JOURNAL_HEADER = 5 /* a seal: location = byte offset of the journal header */
} sr_tde_file_kind_t;
SR_API const char *sr_tde_file_kind_name(sr_tde_file_kind_t kind);

/* Where a page image (or a seal) belongs: what its AAD binds. */
typedef struct sr_tde_place {
    sr_tde_file_kind_t kind;
    uint64_t location;
    const uint8_t *bind; /* plaintext stored beside it that must not change (NULL: none) */
    size_t bind_len;     /* <= SR_TDE_BIND_MAX */
} sr_tde_place_t;

/* ---- tablespace ---------------------------------------------------------- */

/* A tablespace in memory: UUID, cipher, DEKs by version (secure memory) and
 * their encryption counters. Shared by every file of the tablespace in the
 * process; thread-safe. */
typedef struct sr_tde_space sr_tde_space_t;

/* What the owner of the key header does for the space (the VFS).
 * reserve: claim the next `block` encryptions of `version` in the persisted
 *   header (shared by every process using the file) and return where the
 *   claimed range starts; the header's mark becomes min(start + block, limit).
 *   A start >= limit means the key is used up.
 * roll: make a new key version (or load one another process made), then
 *   sr_tde_space_add_key + sr_tde_space_set_active before returning. */
typedef struct sr_tde_space_hooks {
    sr_err_t (*reserve)(void *ctx, uint32_t version, uint64_t block, uint64_t limit, uint64_t *range_start);
    sr_err_t (*roll)(void *ctx, uint32_t exhausted_version);
    void *ctx;
} sr_tde_space_hooks_t;

SR_API sr_err_t sr_tde_space_new(const sr_uuid_t *id, sr_tde_cipher_t cipher, sr_tde_space_t **out) SR_MUST_CHECK;
/* `encryptions_reserved` is the mark from the header: counting resumes there. */
SR_API sr_err_t sr_tde_space_add_key(sr_tde_space_t *space, uint32_t version, const uint8_t key[SR_TDE_KEY_BYTES],
                              uint64_t encryptions_reserved) SR_MUST_CHECK;
SR_API sr_err_t sr_tde_space_set_active(sr_tde_space_t *space, uint32_t version) SR_MUST_CHECK;
/* The cipher of one key version's pages (default: the space's). */
SR_API sr_err_t sr_tde_space_set_key_cipher(sr_tde_space_t *space, uint32_t version, sr_tde_cipher_t cipher) SR_MUST_CHECK;
SR_API uint32_t sr_tde_space_active(const sr_tde_space_t *space);
SR_API const sr_uuid_t *sr_tde_space_id(const sr_tde_space_t *space);
SR_API sr_tde_cipher_t sr_tde_space_cipher(const sr_tde_space_t *space);
SR_API void sr_tde_space_set_hooks(sr_tde_space_t *space, const sr_tde_space_hooks_t *hooks);
/* Tests only: a lower limit than SR_TDE_NONCE_LIMIT, and the largest reservation step. */
SR_API void sr_tde_space_set_limits(sr_tde_space_t *space, uint64_t nonce_limit, uint64_t reserve_block);
/* Encryptions counted under `version` (for status output and tests). */
SR_API uint64_t sr_tde_space_encryptions(sr_tde_space_t *space, uint32_t version);
/* What this process reserved but did not use, for giving it back at close:
 * for each key, [used, reserved). Returns how many entries were filled. */
typedef struct sr_tde_unused {
    uint32_t version;
    uint64_t used, reserved;
} sr_tde_unused_t;
SR_API size_t sr_tde_space_unused(sr_tde_space_t *space, sr_tde_unused_t out[SR_TDE_MAX_KEY_VERSIONS]);
/* HKDF-SHA256 of the DEK of `version` with `label`: a key for something other
 * than pages (the key header's MAC), never the DEK itself. SR_ERR_TDE_KEY_VERSION
 * if that version is not loaded. */
SR_API sr_err_t sr_tde_space_derive(sr_tde_space_t *space, uint32_t version, const char *label, uint8_t out[32]) SR_MUST_CHECK;
/* The same derivation from a DEK in hand (a header being created). */
SR_API sr_err_t sr_tde_key_derive(const uint8_t dek[SR_TDE_KEY_BYTES], const sr_uuid_t *id, const char *label,
                           uint8_t out[32]) SR_MUST_CHECK;
SR_API int sr_tde_space_has_key(sr_tde_space_t *space, uint32_t version);
SR_API void sr_tde_space_free(sr_tde_space_t *space);

/* ---- page cipher ---------------------------------------------------------- */

/* Per-file (per-thread) context: EVP contexts created once and reused. */
typedef struct sr_tde_pagectx sr_tde_pagectx_t;
SR_API sr_err_t sr_tde_pagectx_new(sr_tde_space_t *space, sr_tde_pagectx_t **out) SR_MUST_CHECK;
SR_API void sr_tde_pagectx_free(sr_tde_pagectx_t *ctx);

/* in -> out (distinct buffers of page_size bytes); writes the trailer. The
 * plaintext's last 32 bytes are not encrypted (they are the trailer's place). */
SR_API sr_err_t sr_tde_page_encrypt(sr_tde_pagectx_t *ctx, const sr_tde_place_t *place, const uint8_t *in, uint8_t *out,
                             size_t page_size) SR_MUST_CHECK;
/* In place; on success the trailer bytes are zeroed. SR_ERR_TDE_PAGE_AUTH (the
 * detail names kind, location, key version and reason) or SR_ERR_TDE_KEY_VERSION. */
SR_API sr_err_t sr_tde_page_decrypt(sr_tde_pagectx_t *ctx, const sr_tde_place_t *place, uint8_t *page,
                             size_t page_size) SR_MUST_CHECK;
/* The same from `in` into `out` (distinct buffers of page_size bytes): the
 * page lands where the caller wants it without a copy. On failure `out`'s
 * body is wiped. */
SR_API sr_err_t sr_tde_page_decrypt_to(sr_tde_pagectx_t *ctx, const sr_tde_place_t *place, const uint8_t *in, uint8_t *out,
                                size_t page_size) SR_MUST_CHECK;
/* A seal: a trailer (nonce | key version | tag) authenticating the place and
 * its binding with no body, for plaintext structures SQLite acts on (the
 * rollback journal's header). Checking returns SR_ERR_TDE_PAGE_AUTH on mismatch. */
SR_API sr_err_t sr_tde_seal_make(sr_tde_pagectx_t *ctx, const sr_tde_place_t *place,
                          uint8_t seal[SR_TDE_PAGE_TRAILER]) SR_MUST_CHECK;
SR_API sr_err_t sr_tde_seal_check(sr_tde_pagectx_t *ctx, const sr_tde_place_t *place,
                           const uint8_t seal[SR_TDE_PAGE_TRAILER]) SR_MUST_CHECK;
/* The trailer's key version, without decrypting (status, verify). */
SR_API uint32_t sr_tde_page_key_version(const uint8_t *page, size_t page_size);
SR_API int sr_tde_page_size_valid(size_t page_size);

/* ---- key header ------------------------------------------------------------ */

typedef enum sr_tde_state {
    SR_TDE_STATE_PLAIN = 0,
    SR_TDE_STATE_ENCRYPTING = 1,
    SR_TDE_STATE_ENCRYPTED = 2,
    SR_TDE_STATE_REKEYING = 3,
    SR_TDE_STATE_DECRYPTING = 4,
} sr_tde_state_t;
SR_API const char *sr_tde_state_name(sr_tde_state_t state);

typedef struct sr_tde_header_key {
    uint32_t version;
    uint64_t encryptions_reserved;
    sr_wrapped_key_t wrapped;
    sr_tde_cipher_t cipher; /* its pages' cipher; 0: the header's (a cipher switch leaves older versions on theirs) */
} sr_tde_header_key_t;

#define SR_TDE_HEADER_FORMAT 2
#define SR_TDE_HEADER_FORMAT_MIXED 3 /* some key version under another cipher than the header's (a switch under way) */
#define SR_TDE_HEADER_HAS_PAGES 1u /* flags: SQLite pages were written (a file with none was cut) */
typedef struct sr_tde_header {
    uint16_t format_version;
    uint64_t generation;
    sr_uuid_t tablespace;
    sr_tde_cipher_t cipher;
    uint32_t page_size;
    sr_tde_state_t state;
    uint64_t progress_pages;
    uint32_t active_version;
    uint32_t n_keys;
    sr_tde_header_key_t keys[SR_TDE_MAX_KEY_VERSIONS];
    int64_t created_us, updated_us;
    uint32_t flags;                  /* SR_TDE_HEADER_HAS_PAGES */
    uint8_t checksum[32];            /* decoded: SHA-256 of the fields (torn-write check) */
    uint8_t mac[32];                 /* decoded: HMAC-SHA256 under the header key */
} sr_tde_header_t;

/* The header key: HKDF-SHA256 of the active DEK (sr_tde_space_derive with
 * this label), so only a holder of the tablespace's keys can write a header
 * that verifies; editing the active version changes which key checks it. */
#define SR_TDE_HEADER_KEY_LABEL "strongroom key header v2"
#define SR_TDE_HEADER_KEY_BYTES 32

/* header_key: the key derived from hdr's active DEK. */
SR_API sr_err_t sr_tde_header_encode(const sr_tde_header_t *hdr, const uint8_t header_key[SR_TDE_HEADER_KEY_BYTES],
                              uint8_t slot[SR_TDE_HEADER_SLOT]) SR_MUST_CHECK;
/* Structure and checksum only: the MAC needs the key (sr_tde_header_verify). */
SR_API sr_err_t sr_tde_header_decode(const uint8_t *slot, size_t len, sr_tde_header_t *out) SR_MUST_CHECK;
/* SR_ERR_AUTH if the MAC does not verify under header_key. */
SR_API sr_err_t sr_tde_header_verify(const sr_tde_header_t *hdr, const uint8_t header_key[SR_TDE_HEADER_KEY_BYTES]) SR_MUST_CHECK;
/* Checks a decoded header's MAC (returns SR_OK, SR_ERR_AUTH, or why it could not). */
typedef sr_err_t (*sr_tde_header_auth_fn)(void *ctx, const sr_tde_header_t *hdr);
/* The newest slot of the region that decodes and, with `auth`, authenticates.
 * A newer slot that decodes but fails authentication is an edit: SR_ERR_CORRUPT
 * naming the slot (never silently the older one). Without `auth` (status
 * without a key) the newest decodable slot. SR_ERR_TDE_NO_HEADER if neither
 * slot has the magic; SR_ERR_CORRUPT / SR_ERR_VERSION otherwise. */
SR_API sr_err_t sr_tde_header_pick(const uint8_t region[SR_TDE_HEADER_REGION], sr_tde_header_auth_fn auth, void *auth_ctx,
                            sr_tde_header_t *out, int *slot_out) SR_MUST_CHECK;
SR_API int sr_tde_header_is_present(const uint8_t *buf, size_t len);
SR_API sr_tde_header_key_t *sr_tde_header_find_key(sr_tde_header_t *hdr, uint32_t version);

/* ---- temp files: AES-256-XTS under an ephemeral key ------------------------ */
typedef struct sr_tde_xts sr_tde_xts_t;
SR_API sr_err_t sr_tde_xts_new(sr_tde_xts_t **out) SR_MUST_CHECK; /* fresh random key in secure memory */
/* len >= 16; tweak = the unit's index in the file. */
SR_API sr_err_t sr_tde_xts_encrypt(sr_tde_xts_t *x, uint64_t tweak, const uint8_t *in, uint8_t *out, size_t len) SR_MUST_CHECK;
SR_API sr_err_t sr_tde_xts_decrypt(sr_tde_xts_t *x, uint64_t tweak, const uint8_t *in, uint8_t *out, size_t len) SR_MUST_CHECK;
/* Units shorter than 16 bytes (a file's tail): a keystream from AES-256-CTR. */
SR_API sr_err_t sr_tde_xts_tail(sr_tde_xts_t *x, uint64_t tweak, const uint8_t *in, uint8_t *out, size_t len) SR_MUST_CHECK;
SR_API void sr_tde_xts_free(sr_tde_xts_t *x);

/* ---- the SQLite adapter (tde/sqlite_vfs.c) ----------------------------------- */
typedef struct sqlite3 sqlite3;

/* Registers the "strongroom" VFS over the current default VFS (idempotent).
 * default_provider (may be NULL) serves opens that name no key; the caller
 * keeps it alive while databases are open. make_default: also make
 * strongroom the default VFS. Returns an SQLite result code. */
SR_API int sr_sqlite_register(sr_keyprov_t *default_provider, int make_default);

/* An operation of the strongroom VFS for sqlite3_file_control(db, "main",
 * SR_FCNTL_REWRITE_PAGES, &batch): pages [first, first + count) of the
 * database file that are not under the active key version are re-encrypted
 * under it, in place, with the same plaintext (tdectl rekey --rewrite, one
 * short batch at a time). Crash-safe: the new pages go to DB-srrewrite first
 * (fsynced), then in place (fsynced), then the journal is removed; `repair`
 * finishes what a journal left after a crash (a page that fails
 * authentication gets the journal's copy; a whole page is left alone). The
 * caller must hold the write lock: in rollback-journal mode an EXCLUSIVE
 * lock (BEGIN EXCLUSIVE); in WAL mode the WAL write lock (BEGIN IMMEDIATE),
 * and the VFS takes the checkpoint lock for the batch (SQLITE_BUSY while a
 * checkpoint runs). Readers of other processes keep reading meanwhile (in
 * WAL mode a page read while it is being rewritten is read again). */
#define SR_FCNTL_REWRITE_PAGES 0x53520001
typedef struct sr_rewrite_batch {
    int64_t first; /* 1-based */
    int count;     /* at most 4 MiB of pages */
    int wal;       /* the database is in WAL mode */
    int repair;    /* finish a journal left by a crash instead */
    int rewritten; /* out: pages re-encrypted */
    int64_t pages; /* out: pages in the database file */
} sr_rewrite_batch_t;
#define SR_REWRITE_JOURNAL_SUFFIX "-srrewrite"

/* sqlite3_file_control(db, "main", SR_FCNTL_DROP_UNUSED_KEYS, &d): the key
 * versions no page of the database or of its WAL carries (and that are not
 * active) leave the key header, after a rewrite. The caller holds the write
 * lock (BEGIN IMMEDIATE; in WAL mode after a checkpoint), so no page is
 * written under a dropped version meanwhile. Done through the VFS because it
 * must read the file through a descriptor SQLite's locks survive. */
#define SR_FCNTL_DROP_UNUSED_KEYS 0x53520002
typedef struct sr_unused_keys {
    int wal;         /* the database is in WAL mode */
    uint32_t before; /* out: key versions in the header before */
    uint32_t after;  /* out: and after */
} sr_unused_keys_t;

#ifdef __cplusplus
}
#endif
#endif
