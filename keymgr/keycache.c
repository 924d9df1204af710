/*
 * keycache.c — a small cache of unwrapped keys in locked memory.
 *
 * All entries live in one sodium_malloc'd table (mlock'd, guard pages, never
 * swapped). An entry expires after its TTL (monotonic clock) and is wiped
 * when it is found expired, purged, replaced or the cache is freed. A full
 * cache evicts the entry closest to expiry. Thread-safe (one mutex).
 */
#include "keymgr.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define KEYCACHE_KEY_MAX 64

typedef struct keycache_entry {
    int used;
    sr_uuid_t id;
    uint32_t version;
    uint32_t key_len;
    uint64_t expires_ms;
    uint8_t key[KEYCACHE_KEY_MAX];
} keycache_entry_t;

struct sr_keycache {
    pthread_mutex_t lock;
    size_t cap;
    uint64_t default_ttl_ms;
    keycache_entry_t *entries; /* secure memory */
};

sr_err_t sr_keycache_new(size_t max_entries, uint64_t default_ttl_ms, sr_keycache_t **out)
{
    if (max_entries == 0 || max_entries > 65536)
        return sr_err_set(SR_ERR_INVALID_ARG, "key cache size %zu is out of range 1..65536", max_entries);
    sr_keycache_t *kc = calloc(1, sizeof *kc);
    if (!kc) return sr_err_set(SR_ERR_NOMEM, "cannot allocate the key cache");
    kc->entries = sr_secure_alloc(max_entries * sizeof *kc->entries);
    if (!kc->entries) {
        free(kc);
        return SR_ERR_NOMEM;
    }
    memset(kc->entries, 0, max_entries * sizeof *kc->entries);
    pthread_mutex_init(&kc->lock, NULL);
    kc->cap = max_entries;
    kc->default_ttl_ms = default_ttl_ms;
    *out = kc;
    return SR_OK;
}

static void entry_wipe(keycache_entry_t *e) { sr_secure_wipe(e, sizeof *e); }

static keycache_entry_t *entry_find(sr_keycache_t *kc, const sr_uuid_t *id, uint32_t version)
{
    for (size_t i = 0; i < kc->cap; i++) {
        keycache_entry_t *e = &kc->entries[i];
        if (e->used && e->version == version && sr_uuid_equal(&e->id, id)) return e;
    }
    return NULL;
}

/* A free slot, else the one that expires first (wiped). */
static keycache_entry_t *entry_slot(sr_keycache_t *kc)
{
    keycache_entry_t *victim = &kc->entries[0];
    for (size_t i = 0; i < kc->cap; i++) {
        keycache_entry_t *e = &kc->entries[i];
        if (!e->used) return e;
        if (e->expires_ms < victim->expires_ms) victim = e;
    }
    entry_wipe(victim);
    return victim;
}

sr_err_t sr_keycache_put(sr_keycache_t *kc, const sr_uuid_t *id, uint32_t version, const uint8_t *key, size_t key_len,
                         uint64_t ttl_ms)
{
    if (key_len == 0 || key_len > KEYCACHE_KEY_MAX)
        return sr_err_set(SR_ERR_INVALID_ARG, "a cached key is 1..%d bytes, not %zu", KEYCACHE_KEY_MAX, key_len);
    pthread_mutex_lock(&kc->lock);
    keycache_entry_t *e = entry_find(kc, id, version);
    if (e) entry_wipe(e);
    else e = entry_slot(kc);
    e->used = 1;
    e->id = *id;
    e->version = version;
    e->key_len = (uint32_t)key_len;
    e->expires_ms = sr_time_mono_ms() + (ttl_ms ? ttl_ms : kc->default_ttl_ms);
    memcpy(e->key, key, key_len);
    pthread_mutex_unlock(&kc->lock);
    return SR_OK;
}

sr_err_t sr_keycache_get(sr_keycache_t *kc, const sr_uuid_t *id, uint32_t version, uint8_t *key_out, size_t key_cap,
                         size_t *key_len)
{
    char uuid[SR_UUID_STR_LEN + 1];
    sr_uuid_format(id, uuid);
    pthread_mutex_lock(&kc->lock);
    keycache_entry_t *e = entry_find(kc, id, version);
    sr_err_t rc = SR_OK;
    if (!e) {
        rc = sr_err_set(SR_ERR_NOT_FOUND, "key %s version %u is not cached", uuid, version);
    } else if (sr_time_mono_ms() >= e->expires_ms) {
        entry_wipe(e);
        rc = sr_err_set(SR_ERR_KEY_EXPIRED, "cached key %s version %u expired and was wiped", uuid, version);
    } else if (key_cap < e->key_len) {
        rc = sr_err_set(SR_ERR_BUFFER_TOO_SMALL, "key %s needs %u bytes", uuid, e->key_len);
    } else {
        memcpy(key_out, e->key, e->key_len);
        *key_len = e->key_len;
    }
    pthread_mutex_unlock(&kc->lock);
    return rc;
}

void sr_keycache_purge(sr_keycache_t *kc, const sr_uuid_t *id)
{
    pthread_mutex_lock(&kc->lock);
    for (size_t i = 0; i < kc->cap; i++)
        if (kc->entries[i].used && (!id || sr_uuid_equal(&kc->entries[i].id, id))) entry_wipe(&kc->entries[i]);
    pthread_mutex_unlock(&kc->lock);
}

size_t sr_keycache_count(sr_keycache_t *kc)
{
    size_t n = 0;
    uint64_t now = sr_time_mono_ms();
    pthread_mutex_lock(&kc->lock);
    for (size_t i = 0; i < kc->cap; i++) n += kc->entries[i].used && now < kc->entries[i].expires_ms;
    pthread_mutex_unlock(&kc->lock);
    return n;
}

void sr_keycache_free(sr_keycache_t *kc)
{
    if (!kc) return;
    sr_secure_wipe(kc->entries, kc->cap * sizeof *kc->entries);
    sr_secure_free(kc->entries);
    pthread_mutex_destroy(&kc->lock);
    free(kc);
}
