/*
 * secmem.c — secure memory, randomness, hex, and process hardening.
 *
 * Keys live in libsodium's guarded allocations: mlock'd (never swapped),
 * surrounded by guard pages, wiped on free; small ones (keys) in slots of
 * such an allocation. Randomness comes from OpenSSL's
 * DRBG (the same generator our ciphers use for nonces).
 */
#include "common.h"

#include <errno.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/prctl.h>
#include <sys/resource.h>

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_status = -1;

/* A fork while another thread holds the slots' lock would leave the child's
 * copy locked for ever: the lock is taken around every fork. */
static void slots_lock(void);
static void slots_unlock(void);

static void sodium_init_once(void)
{
    sodium_status = sodium_init();
    pthread_atfork(slots_lock, slots_unlock, slots_unlock);
}

sr_err_t sr_secure_init(void)
{
    pthread_once(&sodium_once, sodium_init_once);
    if (sodium_status < 0) return sr_err_set(SR_ERR_CRYPTO, "libsodium failed to initialise");
    return SR_OK;
}

/* ---- small secrets: slots of one locked, guarded chunk --------------------------------------------------
 * A sodium_malloc is ~7 system calls (mmap, mprotect x3, mlock, madvise) and
 * its free as many again, ~14 us: six of them made up a third of a
 * tablespace open. Regions up to SLOT_MAX bytes (keys) are slots of a chunk
 * that is itself one sodium_malloc (locked, guard pages at both ends); each
 * slot is wiped when freed, and the bytes after a region hold a canary
 * checked when it is freed (AddressSanitizer's poisoning instead, in its
 * builds). A slot has no guard page of its own and no page protection. */
#define SLOT_BYTES 128
#define SLOT_MAX (SLOT_BYTES - 16) /* at least 16 bytes of canary after each region */
#define CHUNK_SLOTS 128
#define CHUNK_BYTES (SLOT_BYTES * CHUNK_SLOTS)
#define MAX_CHUNKS 64 /* 1 MiB locked at most; beyond, sodium_malloc */

#if defined(__SANITIZE_ADDRESS__)
#define SR_SLOT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SR_SLOT_ASAN 1
#endif
#endif
#ifdef SR_SLOT_ASAN
#include <sanitizer/asan_interface.h>
#endif

static struct {
    pthread_mutex_t lock;
    int chunks;
    struct {
        uint8_t *base;
        uint64_t used[CHUNK_SLOTS / 64];
        uint8_t len[CHUNK_SLOTS];
    } chunk[MAX_CHUNKS];
    uint8_t canary[SLOT_BYTES - 1];
} slots = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void slots_lock(void) { pthread_mutex_lock(&slots.lock); }
static void slots_unlock(void) { pthread_mutex_unlock(&slots.lock); }

static void canary_mark(uint8_t *p, size_t len)
{
#ifdef SR_SLOT_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, len);
    ASAN_POISON_MEMORY_REGION(p + len, SLOT_BYTES - len);
#else
    memcpy(p + len, slots.canary, SLOT_BYTES - len);
#endif
}

static void canary_check(uint8_t *p, size_t len)
{
#ifdef SR_SLOT_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, SLOT_BYTES);
    (void)len;
#else
    if (sodium_memcmp(p + len, slots.canary, SLOT_BYTES - len) != 0) {
        fprintf(stderr, "strongroom: a secure-memory region was overrun (canary changed): aborting\n");
        abort(); /* memory that held keys was corrupted: nothing after this can be trusted */
    }
#endif
}

/* A free slot (under slots.lock), adding a chunk when all are taken; NULL past MAX_CHUNKS. */
static uint8_t *slot_take(size_t len)
{
    for (int c = 0;; c++) {
        if (c == slots.chunks) {
            if (c == MAX_CHUNKS || !(slots.chunk[c].base = sodium_malloc(CHUNK_BYTES))) return NULL;
            if (c == 0) randombytes_buf(slots.canary, sizeof slots.canary);
            sodium_memzero(slots.chunk[c].base, CHUNK_BYTES);
            slots.chunks++;
        }
        for (int w = 0; w < CHUNK_SLOTS / 64; w++) {
            if (slots.chunk[c].used[w] == UINT64_MAX) continue;
            int bit = __builtin_ctzll(~slots.chunk[c].used[w]);
            slots.chunk[c].used[w] |= 1ull << bit;
            int i = w * 64 + bit;
            slots.chunk[c].len[i] = (uint8_t)len;
            uint8_t *p = slots.chunk[c].base + (size_t)i * SLOT_BYTES;
            canary_mark(p, len);
            return p;
        }
    }
}

/* The chunk holding p, or -1 (not a slot: sodium_malloc'd). */
static int slot_chunk(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    for (int c = 0; c < slots.chunks; c++)
        if (a >= (uintptr_t)slots.chunk[c].base && a < (uintptr_t)slots.chunk[c].base + CHUNK_BYTES) return c;
    return -1;
}

void *sr_secure_alloc(size_t len)
{
    if (sr_secure_init() != SR_OK) return NULL;
    void *p = NULL;
    if (len <= SLOT_MAX) {
        slots_lock();
        p = slot_take(len ? len : 1);
        slots_unlock();
    }
    if (!p) p = sodium_malloc(len ? len : 1);
    if (!p)
        sr_err_set_errno(SR_ERR_NOMEM, errno,
                         "cannot allocate %zu bytes of locked memory (raise RLIMIT_MEMLOCK / ulimit -l)", len);
    return p;
}

void sr_secure_free(void *ptr)
{
    if (!ptr) return;
    slots_lock();
    int c = slot_chunk(ptr);
    if (c >= 0) {
        size_t i = (size_t)((uint8_t *)ptr - slots.chunk[c].base) / SLOT_BYTES;
        uint8_t *p = slots.chunk[c].base + i * SLOT_BYTES;
        if (p != ptr || !(slots.chunk[c].used[i / 64] >> (i % 64) & 1)) {
            fprintf(stderr, "strongroom: sr_secure_free of a pointer it did not allocate: aborting\n");
            abort();
        }
        canary_check(p, slots.chunk[c].len[i]);
        sodium_memzero(p, SLOT_BYTES);
#ifdef SR_SLOT_ASAN
        ASAN_POISON_MEMORY_REGION(p, SLOT_BYTES); /* a use after free is reported */
#endif
        slots.chunk[c].used[i / 64] &= ~(1ull << (i % 64));
    }
    slots_unlock();
    if (c < 0) sodium_free(ptr);
}

int sr_secure_is_slot(const void *ptr)
{
    slots_lock();
    int c = slot_chunk(ptr);
    slots_unlock();
    return c >= 0;
}

void sr_secure_wipe(void *ptr, size_t len)
{
    if (ptr && len) sodium_memzero(ptr, len);
}

int sr_secure_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

/* Page protection of a region of its own (a slot shares its page with other keys: refused). */
static sr_err_t protect(void *ptr, int (*mprotect_fn)(void *), const char *how)
{
    if (sr_secure_is_slot(ptr))
        return sr_err_set(SR_ERR_INVALID_ARG, "page protection needs a region of more than %d bytes (smaller ones "
                                              "share a locked page)", SLOT_MAX);
    return mprotect_fn(ptr) == 0 ? SR_OK : sr_err_set_errno(SR_ERR_INTERNAL, errno, "mprotect(%s) failed", how);
}

sr_err_t sr_secure_protect_readonly(void *ptr) { return protect(ptr, sodium_mprotect_readonly, "readonly"); }
sr_err_t sr_secure_protect_readwrite(void *ptr) { return protect(ptr, sodium_mprotect_readwrite, "readwrite"); }
sr_err_t sr_secure_protect_noaccess(void *ptr) { return protect(ptr, sodium_mprotect_noaccess, "noaccess"); }

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
