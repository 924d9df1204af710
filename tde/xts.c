/*
 * xts.c — the cipher for files that die with the connection (temp databases,
 * temp and sub-journals, sorter and transient files).
 *
 * Each such file gets an ephemeral random key (never persisted, in locked
 * memory, wiped at close). AES-256-XTS is size-preserving, so any write at any
 * offset maps to the same offset on disk; the VFS cuts a file into 4096-byte
 * units and passes the unit index as the tweak. XTS needs at least 16 bytes:
 * a unit shorter than that (only ever a file's last few bytes) is XORed with
 * an AES-256-CTR keystream under a second ephemeral key, with the unit index
 * as the IV. These files are not authenticated (no room for a tag without
 * changing their size); they exist only while the connection that made them
 * is open, and their keys die with them (docs/threat-model.md).
 */
#include "tde.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define XTS_KEY 64
#define CTR_KEY 32

struct sr_tde_xts {
    EVP_CIPHER_CTX *enc, *dec, *ctr;
};

sr_err_t sr_tde_xts_new(sr_tde_xts_t **out)
{
    sr_tde_xts_t *x = calloc(1, sizeof *x);
    uint8_t *key = sr_secure_alloc(XTS_KEY + CTR_KEY);
    sr_err_t rc = x && key ? SR_OK : sr_err_set(SR_ERR_NOMEM, "cannot allocate a temp-file cipher");
    if (rc == SR_OK) rc = sr_random_bytes(key, XTS_KEY + CTR_KEY);
    if (rc == SR_OK) {
        x->enc = EVP_CIPHER_CTX_new(), x->dec = EVP_CIPHER_CTX_new(), x->ctr = EVP_CIPHER_CTX_new();
        if (!x->enc || !x->dec || !x->ctr || EVP_EncryptInit_ex(x->enc, EVP_aes_256_xts(), NULL, key, NULL) != 1 ||
            EVP_DecryptInit_ex(x->dec, EVP_aes_256_xts(), NULL, key, NULL) != 1 ||
            EVP_EncryptInit_ex(x->ctr, EVP_aes_256_ctr(), NULL, key + XTS_KEY, NULL) != 1)
            rc = sr_err_set_openssl(SR_ERR_CRYPTO, "cannot set up AES-256-XTS");
    }
    if (key) sr_secure_wipe(key, XTS_KEY + CTR_KEY), sr_secure_free(key);
    if (rc != SR_OK) {
        sr_tde_xts_free(x);
        return rc;
    }
    *out = x;
    return SR_OK;
}

static void tweak_iv(uint64_t tweak, uint8_t iv[16])
{
    memset(iv, 0, 16);
    for (int i = 0; i < 8; i++) iv[i] = (uint8_t)(tweak >> (8 * i)); /* IEEE 1619: little-endian unit number */
}

static sr_err_t xts_run(EVP_CIPHER_CTX *ctx, int enc, uint64_t tweak, const uint8_t *in, uint8_t *out, size_t len)
{
    if (len < 16) return sr_err_set(SR_ERR_INVALID_ARG, "XTS needs at least 16 bytes, got %zu", len);
    uint8_t iv[16];
    tweak_iv(tweak, iv);
    int n = 0;
    int ok = enc ? EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) == 1 && EVP_EncryptUpdate(ctx, out, &n, in, (int)len) == 1
                 : EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, iv) == 1 && EVP_DecryptUpdate(ctx, out, &n, in, (int)len) == 1;
    return ok ? SR_OK : sr_err_set_openssl(SR_ERR_CRYPTO, "AES-256-XTS failed");
}

sr_err_t sr_tde_xts_encrypt(sr_tde_xts_t *x, uint64_t tweak, const uint8_t *in, uint8_t *out, size_t len)
{
    return xts_run(x->enc, 1, tweak, in, out, len);
}

sr_err_t sr_tde_xts_decrypt(sr_tde_xts_t *x, uint64_t tweak, const uint8_t *in, uint8_t *out, size_t len)
{
    return xts_run(x->dec, 0, tweak, in, out, len);
}

sr_err_t sr_tde_xts_tail(sr_tde_xts_t *x, uint64_t tweak, const uint8_t *in, uint8_t *out, size_t len)
{
    uint8_t iv[16];
    tweak_iv(tweak, iv);
    int n = 0;
    int ok = EVP_EncryptInit_ex(x->ctr, NULL, NULL, NULL, iv) == 1 && EVP_EncryptUpdate(x->ctr, out, &n, in, (int)len) == 1;
    return ok ? SR_OK : sr_err_set_openssl(SR_ERR_CRYPTO, "AES-256-CTR failed");
}

void sr_tde_xts_free(sr_tde_xts_t *x)
{
    if (!x) return;
    EVP_CIPHER_CTX_free(x->enc);
    EVP_CIPHER_CTX_free(x->dec);
    EVP_CIPHER_CTX_free(x->ctr);
    free(x);
}
