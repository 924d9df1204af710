/*
 * wrap.c — wrapping data keys under a key-encryption key (the master key).
 *
 * Two algorithms, both through OpenSSL EVP:
 *   - AES-256-GCM (default): blob = nonce(12) || ciphertext || tag(16). The
 *     caller's AAD (e.g. tablespace UUID + DEK version) is bound, so a wrapped
 *     key copied to another tablespace does not unwrap.
 *   - AES Key Wrap with Padding (RFC 5649, EVP_aes_*_wrap_pad): what KMIP
 *     servers and HSMs call "NIST key wrap"; it carries no AAD, so it is refused
 *     when the caller asks for AAD binding.
 *
 * Every wrapped blob carries the UUID and version of the key that wrapped it,
 * so an unwrap names the key it needs and a wrong key is told apart from a
 * tampered blob.
 *
 * Encoded form (sr_wrapped_key_encode), big-endian, for on-disk headers:
 *   "SRWK" | format u8 (1) | alg u8 | kek_id[16] | kek_version u32 | blob_len u16 | blob
 */
#include "keymgr.h"

#include <openssl/evp.h>
#include <string.h>

#define WRAP_GCM_NONCE 12
#define WRAP_GCM_TAG 16
#define WRAP_KWP_OVERHEAD 8
#define WRAPPED_MAGIC "SRWK"
#define WRAPPED_FORMAT 1
#define WRAPPED_FIXED (4 + 1 + 1 + 16 + 4 + 2)

static sr_err_t wrap_gcm(const uint8_t *kek, const uint8_t *aad, size_t aad_len, const uint8_t *key,
                         size_t key_len, uint8_t *blob, uint32_t *blob_len)
{
    if (WRAP_GCM_NONCE + key_len + WRAP_GCM_TAG > SR_KEYMGR_WRAPPED_MAX)
        return sr_err_set(SR_ERR_INVALID_ARG, "key of %zu bytes is too long to wrap", key_len);
    sr_err_t rc = sr_random_bytes(blob, WRAP_GCM_NONCE);
    if (rc != SR_OK) return rc;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c) return sr_err_set(SR_ERR_NOMEM, "EVP_CIPHER_CTX_new failed");
    int n = 0, ok = EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, kek, blob) == 1 &&
                    (aad_len == 0 || EVP_EncryptUpdate(c, NULL, &n, aad, (int)aad_len) == 1) &&
                    EVP_EncryptUpdate(c, blob + WRAP_GCM_NONCE, &n, key, (int)key_len) == 1 &&
                    EVP_EncryptFinal_ex(c, blob + WRAP_GCM_NONCE + n, &n) == 1 &&
                    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, WRAP_GCM_TAG, blob + WRAP_GCM_NONCE + key_len) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) return sr_err_set_openssl(SR_ERR_CRYPTO, "AES-256-GCM key wrap failed");
    *blob_len = (uint32_t)(WRAP_GCM_NONCE + key_len + WRAP_GCM_TAG);
    return SR_OK;
}

static sr_err_t unwrap_gcm(const uint8_t *kek, const sr_wrapped_key_t *wk, const uint8_t *aad, size_t aad_len,
                           uint8_t *key_out, size_t key_cap, size_t *key_len)
{
    if (wk->blob_len < WRAP_GCM_NONCE + WRAP_GCM_TAG)
        return sr_err_set(SR_ERR_WRAP_INTEGRITY, "AES-GCM wrapped key is %u bytes, too short", wk->blob_len);
    size_t len = wk->blob_len - WRAP_GCM_NONCE - WRAP_GCM_TAG;
    if (len > key_cap) return sr_err_set(SR_ERR_BUFFER_TOO_SMALL, "unwrapped key needs %zu bytes", len);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c) return sr_err_set(SR_ERR_NOMEM, "EVP_CIPHER_CTX_new failed");
    uint8_t tag[WRAP_GCM_TAG];
    memcpy(tag, wk->blob + WRAP_GCM_NONCE + len, WRAP_GCM_TAG);
    int n = 0, ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, kek, wk->blob) == 1 &&
                    (aad_len == 0 || EVP_DecryptUpdate(c, NULL, &n, aad, (int)aad_len) == 1) &&
                    EVP_DecryptUpdate(c, key_out, &n, wk->blob + WRAP_GCM_NONCE, (int)len) == 1 &&
                    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, WRAP_GCM_TAG, tag) == 1 &&
                    EVP_DecryptFinal_ex(c, key_out + n, &n) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        sr_secure_wipe(key_out, len);
        return sr_err_set(SR_ERR_WRAP_INTEGRITY,
                          "wrapped key does not authenticate under its key-encryption key (altered blob or AAD)");
    }
    *key_len = len;
    return SR_OK;
}

/* RFC 5649 through OpenSSL: the wrap-pad cipher must be allowed explicitly. */
static const EVP_CIPHER *kwp_cipher(size_t kek_len)
{
    return kek_len == 16 ? EVP_aes_128_wrap_pad() : kek_len == 24 ? EVP_aes_192_wrap_pad()
         : kek_len == 32 ? EVP_aes_256_wrap_pad() : NULL;
}

static sr_err_t kwp_run(int enc, const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len, uint8_t *out,
                        size_t *out_len)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c) return sr_err_set(SR_ERR_NOMEM, "EVP_CIPHER_CTX_new failed");
    EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    int n = 0, m = 0;
    int ok = EVP_CipherInit_ex(c, kwp_cipher(kek_len), NULL, kek, NULL, enc) == 1 &&
             EVP_CipherUpdate(c, out, &n, in, (int)in_len) == 1 && EVP_CipherFinal_ex(c, out + n, &m) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) return SR_ERR_WRAP_INTEGRITY;
    *out_len = (size_t)(n + m);
    return SR_OK;
}

sr_err_t sr_keymgr_kwp_wrap(const uint8_t *kek, size_t kek_len, const uint8_t *key, size_t key_len, uint8_t *out,
                            size_t out_cap, size_t *out_len)
{
    if (!kwp_cipher(kek_len)) return sr_err_set(SR_ERR_INVALID_ARG, "an AES key wrap key is 16, 24 or 32 bytes");
    size_t need = ((key_len + 7) / 8) * 8 + WRAP_KWP_OVERHEAD;
    if (key_len == 0 || out_cap < need) return sr_err_set(SR_ERR_BUFFER_TOO_SMALL, "KWP output needs %zu bytes", need);
    if (kwp_run(1, kek, kek_len, key, key_len, out, out_len) != SR_OK)
        return sr_err_set_openssl(SR_ERR_CRYPTO, "AES-256 key wrap with padding failed");
    return SR_OK;
}

sr_err_t sr_keymgr_kwp_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len, uint8_t *out,
                              size_t out_cap, size_t *out_len)
{
    if (!kwp_cipher(kek_len)) return sr_err_set(SR_ERR_INVALID_ARG, "an AES key wrap key is 16, 24 or 32 bytes");
    if (in_len < 16 || in_len % 8 != 0)
        return sr_err_set(SR_ERR_WRAP_INTEGRITY, "KWP blob of %zu bytes is not a multiple of 8 of at least 16", in_len);
    if (out_cap < in_len - WRAP_KWP_OVERHEAD)
        return sr_err_set(SR_ERR_BUFFER_TOO_SMALL, "KWP output needs %zu bytes", in_len - WRAP_KWP_OVERHEAD);
    if (kwp_run(0, kek, kek_len, in, in_len, out, out_len) != SR_OK) {
        sr_secure_wipe(out, in_len - WRAP_KWP_OVERHEAD);
        return sr_err_set(SR_ERR_WRAP_INTEGRITY, "KWP blob fails its integrity check (RFC 5649 ICV/padding)");
    }
    return SR_OK;
}

sr_err_t sr_keymgr_wrap(sr_wrap_alg_t alg, const uint8_t *kek, size_t kek_len, const sr_uuid_t *kek_id,
                        uint32_t kek_version, const uint8_t *aad, size_t aad_len, const uint8_t *key, size_t key_len,
                        sr_wrapped_key_t *out)
{
    if (!kek || kek_len != SR_KEYMGR_KEY_BYTES || !kek_id || !key || !out)
        return sr_err_set(SR_ERR_INVALID_ARG, "key wrap needs a 256-bit key-encryption key, its id and a key");
    sr_wrapped_key_t wk = {.alg = alg, .kek_id = *kek_id, .kek_version = kek_version};
    sr_err_t rc;
    if (alg == SR_WRAP_AES_256_GCM || alg == SR_WRAP_KMIP_GET_GCM) {
        rc = wrap_gcm(kek, aad, aad_len, key, key_len, wk.blob, &wk.blob_len);
    } else if (alg == SR_WRAP_AES_256_KWP) {
        if (aad_len) return sr_err_set(SR_ERR_INVALID_ARG, "AES key wrap (RFC 5649) cannot bind AAD; use AES-256-GCM");
        size_t n = 0;
        rc = sr_keymgr_kwp_wrap(kek, kek_len, key, key_len, wk.blob, sizeof wk.blob, &n);
        wk.blob_len = (uint32_t)n;
    } else {
        return sr_err_set(SR_ERR_UNSUPPORTED, "unknown key wrapping algorithm %d", (int)alg);
    }
    if (rc == SR_OK) *out = wk;
    return rc;
}

sr_err_t sr_keymgr_unwrap(const uint8_t *kek, size_t kek_len, const sr_wrapped_key_t *wk, const uint8_t *aad,
                          size_t aad_len, uint8_t *key_out, size_t key_cap, size_t *key_len)
{
    if (!kek || kek_len != SR_KEYMGR_KEY_BYTES || !wk || !key_out || !key_len)
        return sr_err_set(SR_ERR_INVALID_ARG, "key unwrap needs a 256-bit key-encryption key and a blob");
    if (wk->blob_len > sizeof wk->blob)
        return sr_err_set(SR_ERR_WRAP_INTEGRITY, "wrapped key length %u exceeds %zu", wk->blob_len, sizeof wk->blob);
    if (wk->alg == SR_WRAP_AES_256_GCM || wk->alg == SR_WRAP_KMIP_GET_GCM)
        return unwrap_gcm(kek, wk, aad, aad_len, key_out, key_cap, key_len);
    if (wk->alg == SR_WRAP_AES_256_KWP) {
        if (aad_len) return sr_err_set(SR_ERR_INVALID_ARG, "an RFC 5649 wrapped key carries no AAD to check");
        return sr_keymgr_kwp_unwrap(kek, kek_len, wk->blob, wk->blob_len, key_out, key_cap, key_len);
    }
    return sr_err_set(SR_ERR_UNSUPPORTED, "unknown key wrapping algorithm %d", (int)wk->alg);
}

sr_err_t sr_wrapped_key_encode(const sr_wrapped_key_t *wk, uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (wk->blob_len > SR_KEYMGR_WRAPPED_MAX) return sr_err_set(SR_ERR_INVALID_ARG, "wrapped key too long");
    size_t need = WRAPPED_FIXED + wk->blob_len;
    if (out_cap < need) return sr_err_set(SR_ERR_BUFFER_TOO_SMALL, "encoded wrapped key needs %zu bytes", need);
    memcpy(out, WRAPPED_MAGIC, 4);
    out[4] = WRAPPED_FORMAT;
    out[5] = (uint8_t)wk->alg;
    memcpy(out + 6, wk->kek_id.bytes, 16);
    sr_put_be32(out + 22, wk->kek_version);
    sr_put_be16(out + 26, (uint16_t)wk->blob_len);
    memcpy(out + WRAPPED_FIXED, wk->blob, wk->blob_len);
    *out_len = need;
    return SR_OK;
}

sr_err_t sr_wrapped_key_decode(const uint8_t *in, size_t in_len, sr_wrapped_key_t *out)
{
    if (in_len < WRAPPED_FIXED || memcmp(in, WRAPPED_MAGIC, 4) != 0)
        return sr_err_set(SR_ERR_CORRUPT, "not an encoded wrapped key (bad magic or %zu bytes)", in_len);
    if (in[4] != WRAPPED_FORMAT)
        return sr_err_set(SR_ERR_VERSION, "wrapped key format %u, this build reads format %d", in[4], WRAPPED_FORMAT);
    sr_wrapped_key_t wk = {.alg = (sr_wrap_alg_t)in[5]};
    if (wk.alg != SR_WRAP_AES_256_GCM && wk.alg != SR_WRAP_AES_256_KWP && wk.alg != SR_WRAP_KMIP_AES_GCM &&
        wk.alg != SR_WRAP_KMIP_GET_GCM)
        return sr_err_set(SR_ERR_CORRUPT, "wrapped key names unknown algorithm %u", in[5]);
    memcpy(wk.kek_id.bytes, in + 6, 16);
    wk.kek_version = sr_get_be32(in + 22);
    wk.blob_len = sr_get_be16(in + 26);
    if (wk.blob_len > SR_KEYMGR_WRAPPED_MAX || WRAPPED_FIXED + wk.blob_len > in_len)
        return sr_err_set(SR_ERR_CORRUPT, "wrapped key blob length %u overruns its %zu-byte record", wk.blob_len, in_len);
    memcpy(wk.blob, in + WRAPPED_FIXED, wk.blob_len);
    *out = wk;
    return SR_OK;
}
