/*
 * keyheader.c — the tablespace key header: pure encode/decode, no I/O.
 *
 * The first 8192 bytes of an encrypted database file are two 4096-byte slots.
 * An update writes the slot holding the older generation and fsyncs; a reader
 * takes the valid slot with the highest generation. A crash during a write
 * leaves at most that one slot torn (its checksum fails) and the other one
 * intact, so the header is never lost.
 *
 * Slot layout (big-endian, fixed offsets):
 *     0  magic "SRTDEKH\0"            8
 *     8  format version u16          (2)
 *    10  generation u64
 *    18  tablespace UUID             16
 *    34  cipher u8, 35 state u8
 *    36  page size u32
 *    40  conversion progress u64     (pages; for online encrypt/rekey)
 *    48  active key version u32
 *    52  number of keys u32          (<= 16)
 *    56  created, 64 updated          i64 unix microseconds
 *    72  flags u32                   (bit 0: SQLite pages were written)
 *    76  reserved u32                (zero)
 *    80  16 key records of 142 bytes: version u32 | encryptions reserved u64 |
 *        wrapped-key length u16 | encoded wrapped key (128 bytes, zero padded)
 *  2352  SHA-256 over bytes [0, 2352)                    (a torn write, no key needed)
 *  2384  HMAC-SHA256(header key, "SRTDEKH2" | that SHA-256) (an edit: needs the key)
 *  2416  zero to the end of the slot
 *
 * The header key is derived from the active DEK (SR_TDE_HEADER_KEY_LABEL), so
 * whoever lacks the tablespace's keys cannot write a header that verifies:
 * setting the active version back, raising the generation, or editing the
 * nonce marks is detected at open. Replaying a complete older slot is not
 * (docs/threat-model.md).
 */
#include "tde.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define MAGIC "SRTDEKH"
#define OFF_FLAGS 72
#define OFF_KEYS 80
#define KEY_RECORD (4 + 8 + 2 + SR_WRAPPED_KEY_ENCODED_MAX)
#define OFF_SUM (OFF_KEYS + SR_TDE_MAX_KEY_VERSIONS * KEY_RECORD)
#define OFF_MAC (OFF_SUM + SHA256_DIGEST_LENGTH)
_Static_assert(OFF_MAC + 32 <= SR_TDE_HEADER_SLOT, "the key header fits its slot");


const char *sr_tde_state_name(sr_tde_state_t state)
{
    static const char *names[] = {"plain", "encrypting", "encrypted", "rekeying", "decrypting"};
    return (unsigned)state < sizeof names / sizeof names[0] ? names[state] : "unknown";
}

int sr_tde_header_is_present(const uint8_t *buf, size_t len)
{
    return len >= sizeof MAGIC && memcmp(buf, MAGIC, sizeof MAGIC) == 0;
}

sr_tde_header_key_t *sr_tde_header_find_key(sr_tde_header_t *hdr, uint32_t version)
{
    for (uint32_t i = 0; i < hdr->n_keys && i < SR_TDE_MAX_KEY_VERSIONS; i++)
        if (hdr->keys[i].version == version) return &hdr->keys[i];
    return NULL;
}

/* libsodium's HMAC-SHA256: OpenSSL 3's one-shot HMAC() looks the digest up
 * in its providers on every call, which dominated the cost of an open. */
static sr_err_t header_mac(const uint8_t checksum[32], const uint8_t key[SR_TDE_HEADER_KEY_BYTES], uint8_t mac[32])
{
    uint8_t msg[8 + 32];
    memcpy(msg, "SRTDEKH2", 8);
    memcpy(msg + 8, checksum, 32);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, SR_TDE_HEADER_KEY_BYTES);
    crypto_auth_hmacsha256_update(&st, msg, sizeof msg);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
    return SR_OK;
}

sr_err_t sr_tde_header_verify(const sr_tde_header_t *h, const uint8_t key[SR_TDE_HEADER_KEY_BYTES])
{
    uint8_t mac[32];
    sr_err_t rc = header_mac(h->checksum, key, mac);
    if (rc != SR_OK) return rc;
    if (CRYPTO_memcmp(mac, h->mac, sizeof mac) != 0)
        return sr_err_set(SR_ERR_AUTH, "key header (generation %llu) fails its MAC: edited without the key, or the "
                          "file was replaced by another tablespace's", (unsigned long long)h->generation);
    return SR_OK;
}

sr_err_t sr_tde_header_encode(const sr_tde_header_t *h, const uint8_t key[SR_TDE_HEADER_KEY_BYTES],
                              uint8_t slot[SR_TDE_HEADER_SLOT])
{
    if (h->n_keys > SR_TDE_MAX_KEY_VERSIONS)
        return sr_err_set(SR_ERR_INVALID_ARG, "key header holds at most %d keys", SR_TDE_MAX_KEY_VERSIONS);
    memset(slot, 0, SR_TDE_HEADER_SLOT);
    memcpy(slot, MAGIC, sizeof MAGIC);
    /* format 3 while some version's pages are under another cipher than the
     * header's: 2 bits per key record in the otherwise reserved word */
    uint32_t ciphers = 0;
    for (uint32_t i = 0; i < h->n_keys; i++)
        if (h->keys[i].cipher && h->keys[i].cipher != h->cipher) ciphers |= (uint32_t)h->keys[i].cipher << (2 * i);
    sr_put_be16(slot + 8, ciphers ? SR_TDE_HEADER_FORMAT_MIXED : SR_TDE_HEADER_FORMAT);
    sr_put_be32(slot + OFF_FLAGS + 4, ciphers);
    sr_put_be64(slot + 10, h->generation);
    memcpy(slot + 18, h->tablespace.bytes, SR_UUID_BYTES);
    slot[34] = (uint8_t)h->cipher;
    slot[35] = (uint8_t)h->state;
    sr_put_be32(slot + 36, h->page_size);
    sr_put_be64(slot + 40, h->progress_pages);
    sr_put_be32(slot + 48, h->active_version);
    sr_put_be32(slot + 52, h->n_keys);
    sr_put_be64(slot + 56, (uint64_t)h->created_us);
    sr_put_be64(slot + 64, (uint64_t)h->updated_us);
    sr_put_be32(slot + OFF_FLAGS, h->flags);
    for (uint32_t i = 0; i < h->n_keys; i++) {
        uint8_t *r = slot + OFF_KEYS + i * KEY_RECORD;
        size_t len = 0;
        sr_put_be32(r, h->keys[i].version);
        sr_put_be64(r + 4, h->keys[i].encryptions_reserved);
        sr_err_t rc = sr_wrapped_key_encode(&h->keys[i].wrapped, r + 14, SR_WRAPPED_KEY_ENCODED_MAX, &len);
        if (rc != SR_OK) return rc;
        sr_put_be16(r + 12, (uint16_t)len);
    }
    SHA256(slot, OFF_SUM, slot + OFF_SUM);
    return header_mac(slot + OFF_SUM, key, slot + OFF_MAC);
}

static sr_err_t decode_keys(const uint8_t *slot, sr_tde_header_t *h)
{
    for (uint32_t i = 0; i < h->n_keys; i++) {
        const uint8_t *r = slot + OFF_KEYS + i * KEY_RECORD;
        h->keys[i].version = sr_get_be32(r);
        h->keys[i].encryptions_reserved = sr_get_be64(r + 4);
        uint16_t len = sr_get_be16(r + 12);
        if (len > SR_WRAPPED_KEY_ENCODED_MAX)
            return sr_err_set(SR_ERR_CORRUPT, "key header: key record %u is %u bytes long", i, len);
        sr_err_t rc = sr_wrapped_key_decode(r + 14, len, &h->keys[i].wrapped);
        if (rc != SR_OK) return rc;
        if (h->keys[i].version == 0 || (i && h->keys[i].version <= h->keys[i - 1].version))
            return sr_err_set(SR_ERR_CORRUPT, "key header: key versions are not increasing");
    }
    return SR_OK;
}

sr_err_t sr_tde_header_decode(const uint8_t *slot, size_t len, sr_tde_header_t *out)
{
    if (len < SR_TDE_HEADER_SLOT || !sr_tde_header_is_present(slot, len))
        return sr_err_set(SR_ERR_TDE_NO_HEADER, "no strongroom key header (magic SRTDEKH missing)");
    uint16_t format = sr_get_be16(slot + 8);
    if (format == 1)
        return sr_err_set(SR_ERR_VERSION, "key header format 1 (a development build without the authenticated header); "
                          "this strongroom reads format %d: decrypt the file with that build and encrypt it again",
                          SR_TDE_HEADER_FORMAT);
    if (format != SR_TDE_HEADER_FORMAT && format != SR_TDE_HEADER_FORMAT_MIXED)
        return sr_err_set(SR_ERR_VERSION, "key header format %u; this strongroom reads format %d (and %d during a "
                          "cipher switch): upgrade strongroom", format, SR_TDE_HEADER_FORMAT, SR_TDE_HEADER_FORMAT_MIXED);
    uint8_t sum[SHA256_DIGEST_LENGTH];
    SHA256(slot, OFF_SUM, sum);
    if (memcmp(sum, slot + OFF_SUM, sizeof sum) != 0)
        return sr_err_set(SR_ERR_CORRUPT, "key header checksum mismatch");
    sr_tde_header_t h;
    memset(&h, 0, sizeof h);
    h.format_version = format;
    h.generation = sr_get_be64(slot + 10);
    memcpy(h.tablespace.bytes, slot + 18, SR_UUID_BYTES);
    h.cipher = (sr_tde_cipher_t)slot[34];
    h.state = (sr_tde_state_t)slot[35];
    h.page_size = sr_get_be32(slot + 36);
    h.progress_pages = sr_get_be64(slot + 40);
    h.active_version = sr_get_be32(slot + 48);
    h.n_keys = sr_get_be32(slot + 52);
    h.created_us = (int64_t)sr_get_be64(slot + 56);
    h.updated_us = (int64_t)sr_get_be64(slot + 64);
    h.flags = sr_get_be32(slot + OFF_FLAGS);
    memcpy(h.checksum, sum, sizeof sum);
    memcpy(h.mac, slot + OFF_MAC, sizeof h.mac);
    if (h.flags & ~SR_TDE_HEADER_HAS_PAGES) return sr_err_set(SR_ERR_CORRUPT, "key header flags %#x unknown", h.flags);
    uint32_t ciphers = sr_get_be32(slot + OFF_FLAGS + 4);
    if ((format == SR_TDE_HEADER_FORMAT) != (ciphers == 0))
        return sr_err_set(SR_ERR_CORRUPT, "key header format %u with key ciphers %#x", format, ciphers);
    if (h.cipher != SR_TDE_CIPHER_AES_256_GCM && h.cipher != SR_TDE_CIPHER_CHACHA20_POLY1305)
        return sr_err_set(SR_ERR_CORRUPT, "key header names unknown cipher %u", slot[34]);
    if (h.state > SR_TDE_STATE_DECRYPTING) return sr_err_set(SR_ERR_CORRUPT, "key header state %u unknown", slot[35]);
    if (!sr_tde_page_size_valid(h.page_size))
        return sr_err_set(SR_ERR_CORRUPT, "key header page size %u is invalid", h.page_size);
    if (h.n_keys == 0 || h.n_keys > SR_TDE_MAX_KEY_VERSIONS)
        return sr_err_set(SR_ERR_CORRUPT, "key header holds %u keys (1..%d allowed)", h.n_keys, SR_TDE_MAX_KEY_VERSIONS);
    for (uint32_t i = 0; i < SR_TDE_MAX_KEY_VERSIONS; i++) {
        uint32_t code = ciphers >> (2 * i) & 3;
        if (code == 3 || (code && (i >= h.n_keys || code == (uint32_t)h.cipher)))
            return sr_err_set(SR_ERR_CORRUPT, "key header: key record %u names cipher %u", i, code);
        if (i < h.n_keys) h.keys[i].cipher = code ? (sr_tde_cipher_t)code : h.cipher;
    }
    sr_err_t rc = decode_keys(slot, &h);
    if (rc != SR_OK) return rc;
    if (!sr_tde_header_find_key(&h, h.active_version))
        return sr_err_set(SR_ERR_CORRUPT, "key header's active key version %u is not among its keys", h.active_version);
    *out = h;
    return SR_OK;
}

sr_err_t sr_tde_header_pick(const uint8_t region[SR_TDE_HEADER_REGION], sr_tde_header_auth_fn auth, void *auth_ctx,
                            sr_tde_header_t *out, int *slot_out)
{
    sr_tde_header_t h[2];
    sr_err_t rc[2];
    char why[2][256];
    for (int i = 0; i < 2; i++) {
        rc[i] = sr_tde_header_decode(region + i * SR_TDE_HEADER_SLOT, SR_TDE_HEADER_SLOT, &h[i]);
        snprintf(why[i], sizeof why[i], "%s", rc[i] == SR_OK ? "" : sr_err_detail());
    }
    int best = -1;
    for (int i = 0; i < 2; i++)
        if (rc[i] == SR_OK && (best < 0 || h[i].generation > h[best].generation)) best = i;
    if (best < 0) {
        if (rc[0] == SR_ERR_TDE_NO_HEADER && rc[1] == SR_ERR_TDE_NO_HEADER)
            return sr_err_set(SR_ERR_TDE_NO_HEADER, "no strongroom key header in either slot");
        sr_err_t err = rc[0] == SR_ERR_VERSION || rc[1] == SR_ERR_VERSION ? SR_ERR_VERSION : SR_ERR_CORRUPT;
        return sr_err_set(err, "no valid key header: slot 0: %s; slot 1: %s", why[0], why[1]);
    }
    /* Only the newest decodable slot counts: a torn write fails the checksum
     * and drops out above; one that decodes but fails the MAC was edited. */
    sr_err_t arc = auth ? auth(auth_ctx, &h[best]) : SR_OK;
    if (arc == SR_ERR_AUTH)
        return sr_err_set(SR_ERR_CORRUPT, "key header slot %d: %s (refusing the tablespace)", best, sr_err_detail());
    if (arc != SR_OK) return arc;
    *out = h[best];
    if (slot_out) *slot_out = best;
    return SR_OK;
}
