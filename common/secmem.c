/*
 * secmem.c — secure memory, randomness, hex, and process hardening.
 *
 * Keys live in libsodium's guarded allocations: mlock'd (never swapped),
 * surrounded by guard pages, wiped on free. Randomness comes from OpenSSL's
 * DRBG (the same generator our ciphers use for nonces).
 */
#include "common.h"

#include <errno.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sodium.h>
#include <sys/prctl.h>
#include <sys/resource.h>

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_status = -1;

static void sodium_init_once(void) { sodium_status = sodium_init(); }

sr_err_t sr_secure_init(void)
{
    pthread_once(&sodium_once, sodium_init_once);
    if (sodium_status < 0) return sr_err_set(SR_ERR_CRYPTO, "libsodium failed to initialise");
    return SR_OK;
}

void *sr_secure_alloc(size_t len)
{
    if (sr_secure_init() != SR_OK) return NULL;
    void *p = sodium_malloc(len ? len : 1);
    if (!p)
        sr_err_set_errno(SR_ERR_NOMEM, errno,
                         "cannot allocate %zu bytes of locked memory (raise RLIMIT_MEMLOCK / ulimit -l)", len);
    return p;
}

void sr_secure_free(void *ptr)
{
    if (ptr) sodium_free(ptr);
}

void sr_secure_wipe(void *ptr, size_t len)
{
    if (ptr && len) sodium_memzero(ptr, len);
}

int sr_secure_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

sr_err_t sr_secure_protect_readonly(void *ptr)
{
    return sodium_mprotect_readonly(ptr) == 0 ? SR_OK
                                              : sr_err_set_errno(SR_ERR_INTERNAL, errno, "mprotect(readonly) failed");
}

sr_err_t sr_secure_protect_readwrite(void *ptr)
{
    return sodium_mprotect_readwrite(ptr) == 0 ? SR_OK
                                               : sr_err_set_errno(SR_ERR_INTERNAL, errno, "mprotect(readwrite) failed");
}

sr_err_t sr_secure_protect_noaccess(void *ptr)
{
    return sodium_mprotect_noaccess(ptr) == 0 ? SR_OK
                                              : sr_err_set_errno(SR_ERR_INTERNAL, errno, "mprotect(noaccess) failed");
}

sr_err_t sr_random_bytes(void *buf, size_t len)
{
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        if (RAND_bytes(buf, chunk) != 1) return sr_err_set_openssl(SR_ERR_RANDOM, "RAND_bytes failed");
        buf = (uint8_t *)buf + chunk;
        len -= (size_t)chunk;
    }
    return SR_OK;
}

sr_err_t sr_process_harden(void)
{
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0)
        return sr_err_set_errno(SR_ERR_INTERNAL, errno, "cannot disable core dumps (RLIMIT_CORE)");
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return sr_err_set_errno(SR_ERR_INTERNAL, errno, "prctl(PR_SET_DUMPABLE, 0) failed");
    return sr_secure_init();
}

void sr_hex_encode(const void *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * len] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

sr_err_t sr_hex_decode(const char *hex, void *out, size_t len)
{
    uint8_t *o = out;
    for (size_t i = 0; i < 2 * len; i++)
        if (hex[i] == '\0' || hex_value(hex[i]) < 0)
            return sr_err_set(SR_ERR_PARSE, "expected %zu hex digits, found a bad digit at position %zu", 2 * len, i);
    if (hex[2 * len] != '\0')
        return sr_err_set(SR_ERR_PARSE, "expected exactly %zu hex digits, found more", 2 * len);
    for (size_t i = 0; i < len; i++) o[i] = (uint8_t)(hex_value(hex[2 * i]) << 4 | hex_value(hex[2 * i + 1]));
    return SR_OK;
}
