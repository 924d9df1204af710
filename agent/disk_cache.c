/*
 * disk_cache.c — the optional on-disk key cache (disk_cache = true).
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the on-disk key cache (disk_cache = true) ------------------------------------------------------------ */
/*
 * For a restart while the KMS cannot be reached: the data keys this agent
 * fetched, each wrapped (AES-256-GCM) under the node key NK — AAD: the node's
 * UUID, the tablespace, the key version and the entry's expiry — in
 * state_dir/keycache, and NK itself (read once with Get: a node may read its
 * own key) in state_dir/nk.key; both 0600. They are wiped and removed when
 * the membership ends (left, expired, revoked), when a start finds the node
 * refused, and when the option is off. A start that reaches the KMS does not
 * use them (fresh keys follow the KMS's state); one that cannot loads the
 * unexpired ones. Off by default: on disk they are only as safe as the state
 * directory.
 */
#define DISK_MAGIC "srkc1\n"
#define DISK_MAX 1024

typedef struct disk_entry {
    sr_uuid_t ts;
    uint32_t version;
    int64_t expires;
    uint16_t len;
    uint8_t blob[SR_WRAPPED_KEY_ENCODED_MAX];
} disk_entry_t;

static struct {
    int on;
    int64_t ttl_s;
    uint8_t *nk; /* SR_KEYMGR_KEY_BYTES, locked; NULL until known */
    disk_entry_t v[DISK_MAX];
    size_t n;
    uint64_t generation; /* agent.keys_dropped at the last drop: a key fetched before it is not added */
    pthread_mutex_t lock;
} disk = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t disk_aad(const disk_entry_t *e, uint8_t aad[80])
{
    size_t n = strlen(agent.node_uuid) > 36 ? 36 : strlen(agent.node_uuid);
    memcpy(aad, agent.node_uuid, n);
    memcpy(aad + n, e->ts.bytes, SR_UUID_BYTES);
    sr_put_be32(aad + n + 16, e->version);
    sr_put_be64(aad + n + 20, (uint64_t)e->expires);
    return n + 28;
}

static void disk_forget_nk(void)
{
    if (disk.nk) sr_secure_wipe(disk.nk, SR_KEYMGR_KEY_BYTES), sr_secure_free(disk.nk);
    disk.nk = NULL;
}

/* Every trace gone: entries, NK, both files. */
void disk_cache_purge(const char *why)
{
    char path[4200];
    pthread_mutex_lock(&disk.lock);
    int had = disk.n || disk.nk;
    sr_secure_wipe(disk.v, sizeof disk.v);
    disk.n = 0;
    disk_forget_nk();
    state_path(path, sizeof path, "keycache");
    had |= unlink(path) == 0;
    state_path(path, sizeof path, "nk.key");
    had |= unlink(path) == 0;
    pthread_mutex_unlock(&disk.lock);
    if (had) sr_log_notice("on-disk key cache removed: %s", why);
}

/* The unexpired entries, whole, through a temporary file (lock held). */
static sr_err_t disk_write(void)
{
    uint8_t *buf = malloc(sizeof DISK_MAGIC + disk.n * (SR_UUID_BYTES + 14 + SR_WRAPPED_KEY_ENCODED_MAX));
    if (!buf) return SR_ERR_NOMEM;
    size_t at = sizeof DISK_MAGIC - 1, kept = 0;
    memcpy(buf, DISK_MAGIC, at);
    int64_t now = sr_time_now_us() / 1000000;
    for (size_t i = 0; i < disk.n; i++) {
        const disk_entry_t *e = &disk.v[i];
        if (e->expires <= now) continue;
        disk.v[kept++] = *e;
        memcpy(buf + at, e->ts.bytes, SR_UUID_BYTES), at += SR_UUID_BYTES;
        sr_put_be32(buf + at, e->version), sr_put_be64(buf + at + 4, (uint64_t)e->expires);
        buf[at + 12] = (uint8_t)(e->len >> 8), buf[at + 13] = (uint8_t)e->len, at += 14;
        memcpy(buf + at, e->blob, e->len), at += e->len;
    }
    disk.n = kept;
    char path[4200];
    state_path(path, sizeof path, "keycache");
    sr_err_t rc = sr_file_write_atomic(path, buf, at, 0600, 0);
    free(buf);
    return rc;
}

/* The entries dropped (agent.keys_dropped moved to `generation`); the node key stays. */
void disk_cache_drop_keys(uint64_t generation)
{
    pthread_mutex_lock(&disk.lock);
    disk.generation = generation;
    int had = disk.n > 0;
    sr_secure_wipe(disk.v, sizeof disk.v);
    disk.n = 0;
    sr_err_t rc = disk.on && had ? disk_write() : SR_OK;
    pthread_mutex_unlock(&disk.lock);
    if (rc != SR_OK) sr_log_warn("on-disk key cache: %s", sr_err_detail());
}

/* A data key just fetched from the KMS (while the cached keys had been dropped `generation` times), kept for
 * disk_cache_ttl. */
void disk_cache_add(const sr_uuid_t *ts, uint32_t version, const uint8_t *dek, uint64_t generation)
{
    if (!disk.on) return;
    pthread_mutex_lock(&disk.lock);
    if (generation != disk.generation) return (void)pthread_mutex_unlock(&disk.lock);
    size_t i = 0;
    while (i < disk.n && !(sr_uuid_equal(&disk.v[i].ts, ts) && disk.v[i].version == version)) i++;
    sr_uuid_t node;
    sr_wrapped_key_t wk;
    disk_entry_t e = {.ts = *ts, .version = version, .expires = sr_time_now_us() / 1000000 + disk.ttl_s};
    uint8_t aad[80];
    size_t aad_len = disk_aad(&e, aad), len = 0;
    sr_err_t rc = disk.nk && i < DISK_MAX ? sr_uuid_parse(agent.node_uuid, &node) : SR_ERR_STATE;
    if (rc == SR_OK)
        rc = sr_keymgr_wrap(SR_WRAP_AES_256_GCM, disk.nk, SR_KEYMGR_KEY_BYTES, &node, 1, aad, aad_len, dek,
                            SR_KEYMGR_KEY_BYTES, &wk);
    if (rc == SR_OK) rc = sr_wrapped_key_encode(&wk, e.blob, sizeof e.blob, &len);
    if (rc == SR_OK) {
        e.len = (uint16_t)len;
        disk.v[i] = e;
        if (i == disk.n) disk.n++;
        rc = disk_write();
    }
    pthread_mutex_unlock(&disk.lock);
    if (rc != SR_OK && rc != SR_ERR_STATE) sr_log_warn("on-disk key cache: %s", sr_err_detail());
}

static sr_err_t read_small(const char *name, uint8_t *out, size_t cap, size_t *len)
{
    char path[4200];
    state_path(path, sizeof path, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sr_err_set_errno(SR_ERR_NOT_FOUND, errno, "cannot open %s", path);
    ssize_t n = read(fd, out, cap);
    close(fd);
    if (n < 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot read %s", path);
    *len = (size_t)n;
    return SR_OK;
}

/* The unexpired entries into the memory cache, each for what is left of its time. */
static int disk_load(void)
{
    static uint8_t buf[sizeof DISK_MAGIC + DISK_MAX * (SR_UUID_BYTES + 14 + SR_WRAPPED_KEY_ENCODED_MAX)];
    size_t len = 0, at = sizeof DISK_MAGIC - 1;
    int loaded = 0;
    if (read_small("keycache", buf, sizeof buf, &len) != SR_OK || len < at || memcmp(buf, DISK_MAGIC, at) != 0) return 0;
    uint8_t *dek = sr_secure_alloc(SR_KEYMGR_KEY_BYTES);
    int64_t now = sr_time_now_us() / 1000000;
    for (disk.n = 0; dek && at + SR_UUID_BYTES + 14 <= len && disk.n < DISK_MAX;) {
        disk_entry_t *e = &disk.v[disk.n];
        memcpy(e->ts.bytes, buf + at, SR_UUID_BYTES), at += SR_UUID_BYTES;
        e->version = sr_get_be32(buf + at), e->expires = (int64_t)sr_get_be64(buf + at + 4);
        e->len = (uint16_t)(buf[at + 12] << 8 | buf[at + 13]), at += 14;
        if (e->len > sizeof e->blob || at + e->len > len) break;
        memcpy(e->blob, buf + at, e->len), at += e->len;
        uint8_t aad[80];
        size_t aad_len = disk_aad(e, aad), n = 0;
        sr_wrapped_key_t wk;
        if (e->expires <= now || sr_wrapped_key_decode(e->blob, e->len, &wk) != SR_OK ||
            sr_keymgr_unwrap(disk.nk, SR_KEYMGR_KEY_BYTES, &wk, aad, aad_len, dek, SR_KEYMGR_KEY_BYTES, &n) != SR_OK)
            continue; /* expired, or not this node's: dropped at the next write */
        if (sr_keycache_put(agent.cache, &e->ts, e->version, dek, n, (uint64_t)(e->expires - now) * 1000) == SR_OK)
            loaded++;
        disk.n++;
    }
    if (dek) sr_secure_wipe(dek, SR_KEYMGR_KEY_BYTES), sr_secure_free(dek);
    return loaded;
}

typedef struct nk_fetch {
    uint8_t *key;
    size_t len;
} nk_fetch_t;

static sr_err_t get_nk(sr_kmip_client_t *c, void *arg)
{
    nk_fetch_t *f = arg;
    return sr_kmip_get_key(c, agent.nk, f->key, SR_KEYMGR_KEY_BYTES, &f->len);
}

/* At start: a node the KMS refuses keeps nothing on disk; one it accepts
 * fetches NK (once) and starts afresh; one that cannot reach it serves the
 * cached keys. */
sr_err_t disk_cache_start(void)
{
    int64_t ttl_ms = 0;
    sr_err_t rc = sr_config_get_bool(agent.cfg, "agent", "disk_cache", &disk.on);
    if (rc == SR_OK) rc = sr_config_get_duration_ms(agent.cfg, "agent", "disk_cache_ttl", (uint64_t *)&ttl_ms);
    if (rc != SR_OK) return rc;
    disk.ttl_s = ttl_ms / 1000 > 0 ? ttl_ms / 1000 : 1;
    if (!disk.on) {
        disk_cache_purge("disk_cache is off");
        return SR_OK;
    }
    sr_kmip_response_t r;
    rc = node_call(SR_KMIP_OP_HEARTBEAT, &r);
    sr_kmip_response_free(&r);
    if (rc != SR_OK && !kms_unreachable(rc)) {
        disk_cache_purge("the KMS refuses this node");
        return SR_OK; /* the heartbeat thread ends the membership */
    }
    size_t len = 0;
    if (!(disk.nk = sr_secure_alloc(SR_KEYMGR_KEY_BYTES))) return SR_ERR_NOMEM;
    sr_err_t have = read_small("nk.key", disk.nk, SR_KEYMGR_KEY_BYTES, &len);
    if (rc == SR_OK) { /* reachable: fresh keys from the KMS; the old entries go */
        nk_fetch_t f = {.key = disk.nk};
        char path[4200];
        state_path(path, sizeof path, "nk.key");
        if (have != SR_OK || len != SR_KEYMGR_KEY_BYTES) {
            rc = sr_keyprov_kmip_call(agent.kms, get_nk, &f);
            if (rc != SR_OK) return sr_err_set(rc, "the disk cache needs the node key: %s", sr_err_detail());
            rc = sr_file_write_atomic(path, disk.nk, SR_KEYMGR_KEY_BYTES, 0600, 0);
        }
        pthread_mutex_lock(&disk.lock);
        disk.n = 0;
        if (rc == SR_OK) rc = disk_write();
        pthread_mutex_unlock(&disk.lock);
        return rc;
    }
    if (have != SR_OK || len != SR_KEYMGR_KEY_BYTES) {
        disk_forget_nk();
        sr_log_warn("the KMS cannot be reached and there is no node key on disk: no cached keys");
        return SR_OK;
    }
    int n = disk_load();
    sr_log_notice("the KMS cannot be reached: %d data key(s) from the on-disk cache", n);
    return SR_OK;
}
