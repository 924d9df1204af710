/*
 * tablespace.c — the key header on disk and the tablespace registry.
 *
 * One sr_tde_ts per database file (by device and inode) per process, shared
 * by every connection and by the file's WAL and journal. It holds its own
 * descriptor on the file for header I/O, kept open for the tablespace's life:
 * closing a descriptor would drop the POSIX locks SQLite holds on the same
 * file (POSIX semantics), so it is closed only when no connection remains.
 *
 * Header updates (reservations of the nonce budget, key rolls, page size)
 * are read-modify-write of the newest slot into the other slot, under an OFD
 * lock on the header region (other processes; OFD locks do not interfere with
 * SQLite's own locks, which live at other offsets) and a mutex (threads of
 * this process share the descriptor, so its OFD lock does not exclude them).
 *
 * Every header read is authenticated (sr_tde_header_pick with a MAC check
 * under the header key, derived from the active DEK) before it is used or
 * edited, so an edited header is never re-signed by a legitimate writer.
 * Connections notice header changes by other processes (a rekey, a roll) at
 * the start of each write transaction: sr_tde_ts_check_fresh compares the two
 * slots' generations with the one last loaded, two 8-byte reads.
 */
#include "tablespace.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PLAIN_SQLITE_MAGIC "SQLite format 3"

struct sr_tde_ts {
    sr_tde_ts_t *next;
    int refs;
    dev_t dev;
    ino_t ino;
    int fd;
    int writable;
    char *path;
    sr_tde_space_t *space;
    sr_keyprov_t *prov;  /* the provider of the latest open: makes new key versions */
    uint32_t page_size;
    uint32_t flags;      /* SR_TDE_HEADER_HAS_PAGES, as last loaded */
    uint64_t generation; /* of the header last loaded or written */
    uint8_t *mac_key;    /* secure memory: the header key of mac_version (cache) */
    uint32_t mac_version;
    pthread_mutex_t hdr_lock; /* header I/O and the fields above; never held while taking the space's lock */
    /* One open at a time loads the tablespace or proves its caller's key: a key service's round trip (a KMS,
     * the agent; seconds when it is down) holds this tablespace's opens, never the registry, so the other
     * tablespaces of the process open meanwhile. Taken before hdr_lock. */
    pthread_mutex_t open_lock;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static sr_tde_ts_t *registry;

/* ---- header I/O on a descriptor ------------------------------------------------ */

static sr_err_t region_lock(int fd, short type)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = SR_TDE_HEADER_REGION};
    while (fcntl(fd, F_OFD_SETLKW, &fl) != 0)
        if (errno != EINTR) return sr_err_set_errno(SR_ERR_IO, errno, "cannot lock the key header");
    return SR_OK;
}

static sr_err_t full_pread(int fd, void *buf, size_t len, off_t off, size_t *got_out)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, (uint8_t *)buf + got, len - got, off + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot read the key header");
        if (r == 0) break;
        got += (size_t)r;
    }
    *got_out = got;
    return SR_OK;
}

static sr_err_t full_pwrite(int fd, const void *buf, size_t len, off_t off, int durable)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fd, (const uint8_t *)buf + done, len - done, off + (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot write the key header");
        done += (size_t)w;
    }
    if (!durable) return SR_OK;
    return fdatasync(fd) == 0 ? SR_OK : sr_err_set_errno(SR_ERR_IO, errno, "cannot sync the key header");
}

/* Where a header's MAC key comes from: the tablespace's cached header key
 * (caller holds its hdr_lock) or the provider, which unwraps the active DEK.
 * Both NULL: no authentication (status without a key). */
/* An open unwraps the active DEK to authenticate the header, then loads
 * every DEK: the memo keeps the first unwrap for the second, so a key
 * service (a KMS round trip each) is asked once per key per open. */
typedef struct dek_memo {
    int have;
    uint32_t version;
    sr_wrapped_key_t wrapped;
    uint8_t *dek; /* SR_TDE_KEY_BYTES of secure memory, owned by the caller */
} dek_memo_t;

typedef struct header_keys {
    sr_tde_ts_t *ts;
    sr_keyprov_t *prov;
    dek_memo_t *memo; /* NULL: none */
} header_keys_t;

static int memo_holds(const dek_memo_t *m, const sr_tde_header_key_t *k)
{
    return m && m->have && m->version == k->version && !memcmp(&m->wrapped, &k->wrapped, sizeof m->wrapped);
}

/* The DEK of key k: from the memo, else unwrapped (and then remembered). */
static sr_err_t dek_of(sr_keyprov_t *prov, dek_memo_t *m, const sr_uuid_t *ts, const sr_tde_header_key_t *k,
                       uint8_t *dek)
{
    if (memo_holds(m, k)) return memcpy(dek, m->dek, SR_TDE_KEY_BYTES), SR_OK;
    sr_err_t rc = sr_keyprov_dek_unwrap(prov, ts, k->version, &k->wrapped, dek);
    if (rc == SR_OK && m && m->dek) {
        memcpy(m->dek, dek, SR_TDE_KEY_BYTES);
        m->version = k->version, m->wrapped = k->wrapped, m->have = 1;
    }
    return rc;
}

static sr_err_t header_key(const header_keys_t *k, const sr_tde_header_t *hdr, uint8_t *key)
{
    if (k->ts && k->ts->mac_version == hdr->active_version) {
        memcpy(key, k->ts->mac_key, SR_TDE_HEADER_KEY_BYTES);
        return SR_OK;
    }
    sr_tde_header_t copy = *hdr;
    const sr_tde_header_key_t *active = sr_tde_header_find_key(&copy, hdr->active_version);
    uint8_t *dek = sr_secure_alloc(SR_TDE_KEY_BYTES);
    if (!dek) return SR_ERR_NOMEM;
    sr_err_t rc = dek_of(k->prov, k->memo, &hdr->tablespace, active, dek);
    if (rc == SR_OK) rc = sr_tde_key_derive(dek, &hdr->tablespace, SR_TDE_HEADER_KEY_LABEL, key);
    sr_secure_wipe(dek, SR_TDE_KEY_BYTES);
    sr_secure_free(dek);
    if (rc == SR_OK && k->ts) {
        memcpy(k->ts->mac_key, key, SR_TDE_HEADER_KEY_BYTES);
        k->ts->mac_version = hdr->active_version;
    }
    return rc;
}

static sr_err_t header_auth(void *ctx, const sr_tde_header_t *hdr)
{
    uint8_t *key = sr_secure_alloc(SR_TDE_HEADER_KEY_BYTES);
    if (!key) return SR_ERR_NOMEM;
    sr_err_t rc = header_key(ctx, hdr, key);
    if (rc == SR_OK) rc = sr_tde_header_verify(hdr, key);
    sr_secure_wipe(key, SR_TDE_HEADER_KEY_BYTES);
    sr_secure_free(key);
    return rc;
}

static sr_err_t header_seal(const header_keys_t *k, const sr_tde_header_t *hdr, uint8_t slot[SR_TDE_HEADER_SLOT])
{
    uint8_t *key = sr_secure_alloc(SR_TDE_HEADER_KEY_BYTES);
    if (!key) return SR_ERR_NOMEM;
    sr_err_t rc = header_key(k, hdr, key);
    if (rc == SR_OK) rc = sr_tde_header_encode(hdr, key, slot);
    sr_secure_wipe(key, SR_TDE_HEADER_KEY_BYTES);
    sr_secure_free(key);
    return rc;
}

/* Reads and picks the header (authenticated when keys are given); explains a
 * plaintext or truncated file. */
static sr_err_t header_load(int fd, const char *path, const header_keys_t *keys, sr_tde_header_t *hdr, int *slot)
{
    uint8_t region[SR_TDE_HEADER_REGION];
    size_t got = 0;
    sr_err_t rc = full_pread(fd, region, sizeof region, 0, &got);
    if (rc != SR_OK) return rc;
    if (got >= sizeof PLAIN_SQLITE_MAGIC && memcmp(region, PLAIN_SQLITE_MAGIC, sizeof PLAIN_SQLITE_MAGIC) == 0)
        return sr_err_set(SR_ERR_TDE_NO_HEADER, "%s is a plaintext SQLite database (open it with plaintext=1, or "
                          "encrypt it with: tdectl encrypt %s)", path, path);
    if (got < sizeof region) {
        if (got == 0) return sr_err_set(SR_ERR_TDE_NO_HEADER, "%s is empty: no key header", path);
        return sr_err_set(SR_ERR_TRUNCATED, "%s is %zu bytes, shorter than the %d-byte key header (truncated?)", path,
                          got, SR_TDE_HEADER_REGION);
    }
    int authenticate = keys && (keys->ts || keys->prov);
    rc = sr_tde_header_pick(region, authenticate ? header_auth : NULL, (void *)keys, hdr, slot);
    if (rc != SR_OK && rc != SR_ERR_WRONG_KEY) sr_err_set(rc, "%s: %s", path, sr_err_detail());
    return rc;
}

typedef sr_err_t (*header_edit_fn)(sr_tde_header_t *hdr, void *arg, int *dirty);

/* Locked read-modify-write: the authenticated newest header is edited and
 * written, sealed, into the other slot. `durable`: fdatasync before returning
 * (everything but giving unused encryptions back, where a lost write is safe). */
static sr_err_t header_modify(int fd, const char *path, const header_keys_t *keys, header_edit_fn edit, void *arg,
                              int durable, sr_tde_header_t *out)
{
    sr_err_t rc = region_lock(fd, F_WRLCK);
    if (rc != SR_OK) return rc;
    sr_tde_header_t hdr;
    int slot = 0, dirty = 0;
    rc = header_load(fd, path, keys, &hdr, &slot);
    if (rc == SR_OK) rc = edit(&hdr, arg, &dirty);
    if (rc == SR_OK && dirty && hdr.generation == UINT64_MAX)
        rc = sr_err_set(SR_ERR_CORRUPT, "%s: key header generation is at its maximum", path);
    if (rc == SR_OK && dirty) {
        uint8_t buf[SR_TDE_HEADER_SLOT];
        hdr.generation++;
        hdr.updated_us = sr_time_now_us();
        rc = header_seal(keys, &hdr, buf);
        if (rc == SR_OK) rc = full_pwrite(fd, buf, sizeof buf, (off_t)(1 - slot) * SR_TDE_HEADER_SLOT, durable);
    }
    region_lock(fd, F_UNLCK);
    if (rc == SR_OK && out) *out = hdr;
    return rc;
}

/* A fresh header with DEK version 1 into an empty file (caller holds the lock). */
static sr_err_t header_create(int fd, sr_keyprov_t *prov, const sr_tde_ts_options_t *o, sr_tde_header_t *hdr,
                              uint8_t *dek)
{
    memset(hdr, 0, sizeof *hdr);
    hdr->format_version = SR_TDE_HEADER_FORMAT;
    hdr->generation = 1;
    sr_uuid_generate(&hdr->tablespace);
    hdr->cipher = o && o->cipher ? o->cipher : SR_TDE_CIPHER_AES_256_GCM;
    hdr->page_size = o && o->page_size ? o->page_size : 4096;
    if (!sr_tde_page_size_valid(hdr->page_size))
        return sr_err_set(SR_ERR_INVALID_ARG, "page size %u is not a power of two in 512..65536", hdr->page_size);
    hdr->state = SR_TDE_STATE_ENCRYPTED;
    hdr->active_version = 1;
    hdr->n_keys = 1;
    hdr->keys[0].version = 1;
    hdr->created_us = hdr->updated_us = sr_time_now_us();
    sr_err_t rc = sr_keyprov_dek_create(prov, &hdr->tablespace, 1, dek, &hdr->keys[0].wrapped);
    uint8_t *key = rc == SR_OK ? sr_secure_alloc(SR_TDE_HEADER_KEY_BYTES) : NULL;
    if (rc == SR_OK && !key) rc = SR_ERR_NOMEM;
    uint8_t region[SR_TDE_HEADER_REGION] = {0};
    if (rc == SR_OK) rc = sr_tde_key_derive(dek, &hdr->tablespace, SR_TDE_HEADER_KEY_LABEL, key);
    if (rc == SR_OK) rc = sr_tde_header_encode(hdr, key, region);
    if (key) sr_secure_wipe(key, SR_TDE_HEADER_KEY_BYTES), sr_secure_free(key);
    return rc == SR_OK ? full_pwrite(fd, region, sizeof region, 0, 1) : rc;
}

/* ---- keys ----------------------------------------------------------------------- */

/* Unwraps the keys of the header into the space. `all`: every key, even
 * versions already loaded (an open proves its caller's key); otherwise only
 * the new ones (a refresh), the others just take the header's mark. */
static sr_err_t space_load_keys(sr_tde_space_t *space, sr_keyprov_t *prov, sr_tde_header_t *hdr, int all,
                                dek_memo_t *memo)
{
    uint8_t *dek = sr_secure_alloc(SR_TDE_KEY_BYTES);
    if (!dek) return SR_ERR_NOMEM;
    sr_err_t rc = SR_OK;
    for (uint32_t i = 0; i < hdr->n_keys && rc == SR_OK; i++) {
        sr_tde_header_key_t *k = &hdr->keys[i];
        if (!all && sr_tde_space_has_key(space, k->version)) {
            memset(dek, 0, SR_TDE_KEY_BYTES); /* the key is ignored for a loaded version */
            rc = sr_tde_space_add_key(space, k->version, dek, k->encryptions_reserved);
        } else {
            rc = dek_of(prov, memo, &hdr->tablespace, k, dek);
            if (rc == SR_OK) rc = sr_tde_space_add_key(space, k->version, dek, k->encryptions_reserved);
            sr_secure_wipe(dek, SR_TDE_KEY_BYTES);
        }
        /* each version under its own cipher (a switch leaves the older ones on theirs) */
        if (rc == SR_OK) rc = sr_tde_space_set_key_cipher(space, k->version, k->cipher ? k->cipher : hdr->cipher);
    }
    sr_secure_free(dek);
    if (rc == SR_OK) rc = sr_tde_space_set_active(space, hdr->active_version);
    return rc;
}

typedef struct reserve_arg {
    uint32_t version;
    uint64_t block, limit, start;
} reserve_arg_t;

static sr_err_t edit_reserve(sr_tde_header_t *hdr, void *arg, int *dirty)
{
    reserve_arg_t *a = arg;
    sr_tde_header_key_t *k = sr_tde_header_find_key(hdr, a->version);
    if (!k) return sr_err_set(SR_ERR_TDE_KEY_VERSION, "key version %u is not in the key header", a->version);
    a->start = k->encryptions_reserved;
    if (a->start < a->limit) {
        k->encryptions_reserved = a->start + a->block < a->limit ? a->start + a->block : a->limit;
        *dirty = 1;
    }
    return SR_OK;
}

static sr_err_t ts_reserve(void *ctx, uint32_t version, uint64_t block, uint64_t limit, uint64_t *range_start)
{
    sr_tde_ts_t *ts = ctx;
    reserve_arg_t a = {.version = version, .block = block, .limit = limit};
    pthread_mutex_lock(&ts->hdr_lock);
    sr_tde_header_t hdr;
    sr_err_t rc = header_modify(ts->fd, ts->path, &(header_keys_t){ts, ts->prov, NULL}, edit_reserve, &a, 1, &hdr);
    if (rc == SR_OK) ts->generation = hdr.generation;
    pthread_mutex_unlock(&ts->hdr_lock);
    if (rc == SR_OK) *range_start = a.start;
    return rc;
}

typedef struct roll_arg {
    sr_keyprov_t *prov;
    sr_tde_cipher_t cipher; /* the new version's, when it changes the tablespace's (0: the same) */
    uint32_t exhausted;
    uint8_t *dek; /* secure memory; set when a new key was made */
    int made;
} roll_arg_t;

static sr_err_t edit_add_key(sr_tde_header_t *hdr, void *arg, int *dirty)
{
    roll_arg_t *a = arg;
    if (a->exhausted && hdr->active_version != a->exhausted) return SR_OK; /* another process rolled already */
    if (hdr->n_keys == SR_TDE_MAX_KEY_VERSIONS)
        return sr_err_set(SR_ERR_LIMIT, "the tablespace already has %d key versions: re-encrypt every page under the "
                          "newest one (tdectl rekey --rewrite), which drops the versions no page uses",
                          SR_TDE_MAX_KEY_VERSIONS);
    /* Only the holder of the master key may add a key (else later opens would fail). */
    sr_tde_header_key_t *active = sr_tde_header_find_key(hdr, hdr->active_version);
    sr_err_t rc = sr_keyprov_dek_unwrap(a->prov, &hdr->tablespace, active->version, &active->wrapped, a->dek);
    sr_secure_wipe(a->dek, SR_TDE_KEY_BYTES);
    if (rc != SR_OK) return rc;
    if (a->cipher && a->cipher != hdr->cipher) { /* a cipher switch: the versions so far keep theirs */
        for (uint32_t i = 0; i < hdr->n_keys; i++)
            if (!hdr->keys[i].cipher) hdr->keys[i].cipher = hdr->cipher;
        hdr->cipher = a->cipher;
    }
    sr_tde_header_key_t *k = &hdr->keys[hdr->n_keys];
    memset(k, 0, sizeof *k);
    k->cipher = hdr->cipher;
    k->version = hdr->keys[hdr->n_keys - 1].version + 1;
    rc = sr_keyprov_dek_create(a->prov, &hdr->tablespace, k->version, a->dek, &k->wrapped);
    if (rc != SR_OK) return rc;
    hdr->n_keys++;
    hdr->active_version = k->version;
    a->made = 1;
    *dirty = 1;
    return SR_OK;
}

static sr_err_t ts_roll(void *ctx, uint32_t exhausted)
{
    sr_tde_ts_t *ts = ctx;
    roll_arg_t a = {.prov = ts->prov, .exhausted = exhausted, .dek = sr_secure_alloc(SR_TDE_KEY_BYTES)};
    if (!a.dek) return SR_ERR_NOMEM;
    sr_tde_header_t hdr;
    pthread_mutex_lock(&ts->hdr_lock);
    sr_err_t rc = header_modify(ts->fd, ts->path, &(header_keys_t){ts, ts->prov, NULL}, edit_add_key, &a, 1, &hdr);
    if (rc == SR_OK) ts->generation = hdr.generation;
    pthread_mutex_unlock(&ts->hdr_lock);
    sr_secure_wipe(a.dek, SR_TDE_KEY_BYTES);
    sr_secure_free(a.dek);
    /* Load whatever the header now has (our new key or another process's). */
    if (rc == SR_OK) rc = space_load_keys(ts->space, ts->prov, &hdr, 0, NULL);
    if (rc == SR_OK) {
        char uuid[SR_UUID_STR_LEN + 1];
        sr_uuid_format(&hdr.tablespace, uuid);
        sr_log(SR_LOG_INFO, "tde: %s: key version %u used up its nonce budget; now using version %u", ts->path,
               exhausted, hdr.active_version);
        char detail[128];
        snprintf(detail, sizeof detail, "tablespace %s: data key version %u rolled at its encryption limit", uuid,
                 exhausted);
        (void)sr_tde_event("key.rolled", ts->path, 1, detail);
    }
    return rc;
}

sr_err_t sr_tde_event(const char *event, const char *path, int ok, const char *detail)
{
    char subject[64];
    snprintf(subject, sizeof subject, "uid=%ld pid=%ld", (long)getuid(), (long)getpid());
    return sr_event_emit(&(sr_event_t){.component = "tde", .event = event, .subject = subject,
                                       .object = path && *path ? path : "(temporary file)",
                                       .outcome = ok ? "success" : "failure", .source = "local", .detail = detail});
}

/* ---- registry ---------------------------------------------------------------- */

static sr_tde_ts_t *registry_find(dev_t dev, ino_t ino)
{
    for (sr_tde_ts_t *t = registry; t; t = t->next)
        if (t->dev == dev && t->ino == ino) return t;
    return NULL;
}

static void ts_destroy(sr_tde_ts_t *ts)
{
    if (!ts) return;
    sr_tde_space_free(ts->space);
    if (ts->fd >= 0) close(ts->fd);
    if (ts->mac_key) sr_secure_wipe(ts->mac_key, SR_TDE_HEADER_KEY_BYTES), sr_secure_free(ts->mac_key);
    pthread_mutex_destroy(&ts->hdr_lock);
    pthread_mutex_destroy(&ts->open_lock);
    free(ts->path);
    free(ts);
}

static sr_err_t ts_new(const char *path, sr_tde_ts_t **out)
{
    sr_tde_ts_t *ts = calloc(1, sizeof *ts);
    if (!ts || !(ts->path = strdup(path)) || !(ts->mac_key = sr_secure_alloc(SR_TDE_HEADER_KEY_BYTES))) {
        if (ts) free(ts->path);
        free(ts);
        return sr_err_set(SR_ERR_NOMEM, "cannot allocate a tablespace");
    }
    pthread_mutex_init(&ts->hdr_lock, NULL);
    pthread_mutex_init(&ts->open_lock, NULL);
    ts->writable = 1;
    ts->fd = open(path, O_RDWR | O_CLOEXEC);
    if (ts->fd < 0 && (errno == EACCES || errno == EROFS)) ts->writable = 0, ts->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (ts->fd < 0 || fstat(ts->fd, &st) != 0) {
        sr_err_t rc = sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open %s", path);
        ts_destroy(ts);
        return rc;
    }
    ts->dev = st.st_dev, ts->ino = st.st_ino;
    *out = ts;
    return SR_OK;
}

/* Reads (or, for an empty file, creates) the header of a new registry entry. */
static sr_err_t ts_load(sr_tde_ts_t *ts, sr_keyprov_t *prov, const sr_tde_ts_options_t *o, sr_tde_header_t *hdr,
                        dek_memo_t *memo)
{
    sr_err_t rc = region_lock(ts->fd, ts->writable ? F_WRLCK : F_RDLCK);
    if (rc != SR_OK) return rc;
    struct stat st;
    uint8_t *dek = NULL;
    if (fstat(ts->fd, &st) != 0) {
        rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot stat %s", ts->path);
    } else if (st.st_size == 0 && o && o->may_create && ts->writable) {
        dek = sr_secure_alloc(SR_TDE_KEY_BYTES);
        rc = dek ? header_create(ts->fd, prov, o, hdr, dek) : SR_ERR_NOMEM;
        if (rc == SR_OK) {
            char uuid[SR_UUID_STR_LEN + 1];
            sr_uuid_format(&hdr->tablespace, uuid);
            char detail[64];
            snprintf(detail, sizeof detail, "tablespace %s", uuid);
            (void)sr_tde_event("tablespace.created", ts->path, 1, detail);
        }
    } else {
        pthread_mutex_lock(&ts->hdr_lock);
        rc = header_load(ts->fd, ts->path, &(header_keys_t){ts->prov ? ts : NULL, prov, memo}, hdr, NULL);
        pthread_mutex_unlock(&ts->hdr_lock);
    }
    region_lock(ts->fd, F_UNLCK);
    if (dek) sr_secure_wipe(dek, SR_TDE_KEY_BYTES), sr_secure_free(dek);
    return rc;
}

/* The registry's entry for path's file, with a reference for the caller: found, or made (not loaded yet). */
static sr_err_t registry_take(const char *path, sr_tde_ts_t **out)
{
    struct stat st;
    if (stat(path, &st) != 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot stat %s", path);
    pthread_mutex_lock(&registry_lock);
    sr_tde_ts_t *ts = registry_find(st.st_dev, st.st_ino);
    sr_err_t rc = ts ? SR_OK : ts_new(path, &ts);
    if (rc == SR_OK && ts->refs++ == 0) ts->next = registry, registry = ts;
    pthread_mutex_unlock(&registry_lock);
    *out = rc == SR_OK ? ts : NULL;
    return rc;
}

/* Under ts->open_lock: the header read (or created), the space made if this is its first open, and every key
 * of the header unwrapped with this caller's provider. */
static sr_err_t ts_open_locked(sr_tde_ts_t *ts, sr_keyprov_t *prov, const sr_tde_ts_options_t *opts)
{
    sr_tde_header_t hdr;
    dek_memo_t memo = {.dek = sr_secure_alloc(SR_TDE_KEY_BYTES)};
    sr_err_t rc = memo.dek ? ts_load(ts, prov, opts, &hdr, &memo) : SR_ERR_NOMEM;
    int fresh = !ts->space;
    if (rc == SR_OK && fresh) rc = sr_tde_space_new(&hdr.tablespace, hdr.cipher, &ts->space);
    if (rc == SR_OK && fresh)
        sr_tde_space_set_hooks(ts->space, &(sr_tde_space_hooks_t){.reserve = ts_reserve, .roll = ts_roll, .ctx = ts});
    if (rc == SR_OK) rc = space_load_keys(ts->space, prov, &hdr, 1, &memo); /* proves this caller's key, every time */
    if (memo.dek) sr_secure_wipe(memo.dek, SR_TDE_KEY_BYTES), sr_secure_free(memo.dek);
    if (rc == SR_OK) {
        pthread_mutex_lock(&ts->hdr_lock);
        ts->prov = prov;
        ts->page_size = hdr.page_size;
        ts->flags = hdr.flags;
        ts->generation = hdr.generation;
        pthread_mutex_unlock(&ts->hdr_lock);
    }
    return rc;
}

sr_err_t sr_tde_ts_open(const char *path, sr_keyprov_t *prov, const sr_tde_ts_options_t *opts, sr_tde_ts_t **out)
{
    sr_tde_ts_t *ts = NULL;
    sr_err_t rc = registry_take(path, &ts);
    if (rc != SR_OK) return rc;
    pthread_mutex_lock(&ts->open_lock);
    rc = ts_open_locked(ts, prov, opts);
    pthread_mutex_unlock(&ts->open_lock);
    if (rc != SR_OK) {
        sr_err_t why = rc; /* the release below must not change what the caller is told */
        char detail[1024];
        snprintf(detail, sizeof detail, "%s", sr_err_detail());
        sr_tde_ts_release(ts);
        return sr_err_set(why, "%s", detail);
    }
    *out = ts;
    return SR_OK;
}

sr_tde_ts_t *sr_tde_ts_retain(sr_tde_ts_t *ts)
{
    pthread_mutex_lock(&registry_lock);
    ts->refs++;
    pthread_mutex_unlock(&registry_lock);
    return ts;
}

static sr_err_t edit_give_back(sr_tde_header_t *hdr, void *arg, int *dirty)
{
    const sr_tde_unused_t *u = arg;
    for (; u->version; u++) {
        sr_tde_header_key_t *k = sr_tde_header_find_key(hdr, u->version);
        /* Only if nobody reserved after us: then nothing at or above `used` was handed out. */
        if (k && k->encryptions_reserved == u->reserved) k->encryptions_reserved = u->used, *dirty = 1;
    }
    return SR_OK;
}

/* The last user of the tablespace in this process is leaving: what it
 * reserved and did not use goes back to the header, so short sessions do not
 * burn the key's budget. Not synced: if the write is lost the mark just stays
 * higher, which is safe. */
static void give_back_unused(sr_tde_ts_t *ts)
{
    sr_tde_unused_t unused[SR_TDE_MAX_KEY_VERSIONS + 1];
    size_t n = ts->space && ts->writable ? sr_tde_space_unused(ts->space, unused) : 0;
    if (!n) return;
    memset(&unused[n], 0, sizeof unused[n]);
    pthread_mutex_lock(&ts->hdr_lock);
    if (header_modify(ts->fd, ts->path, &(header_keys_t){ts, ts->prov, NULL}, edit_give_back, unused, 0, NULL) != SR_OK)
        sr_log(SR_LOG_DEBUG, "tde: %s: unused encryptions not given back: %s", ts->path, sr_err_detail());
    pthread_mutex_unlock(&ts->hdr_lock);
}

void sr_tde_ts_release(sr_tde_ts_t *ts)
{
    if (!ts) return;
    pthread_mutex_lock(&registry_lock);
    if (--ts->refs == 0) {
        give_back_unused(ts);
        for (sr_tde_ts_t **p = &registry; *p; p = &(*p)->next)
            if (*p == ts) {
                *p = ts->next;
                break;
            }
        ts_destroy(ts);
    }
    pthread_mutex_unlock(&registry_lock);
}

sr_tde_space_t *sr_tde_ts_space(sr_tde_ts_t *ts) { return ts->space; }
uint32_t sr_tde_ts_page_size(sr_tde_ts_t *ts) { return ts->page_size; }
const char *sr_tde_ts_path(sr_tde_ts_t *ts) { return ts->path; }

static sr_err_t edit_page_size(sr_tde_header_t *hdr, void *arg, int *dirty)
{
    uint32_t ps = *(uint32_t *)arg;
    if (hdr->page_size != ps) hdr->page_size = ps, *dirty = 1;
    return SR_OK;
}

/* Runs an edit on the tablespace's header and takes in what it wrote. */
static sr_err_t ts_modify(sr_tde_ts_t *ts, header_edit_fn edit, void *arg)
{
    sr_tde_header_t hdr;
    pthread_mutex_lock(&ts->hdr_lock);
    sr_err_t rc = header_modify(ts->fd, ts->path, &(header_keys_t){ts, ts->prov, NULL}, edit, arg, 1, &hdr);
    if (rc == SR_OK) ts->page_size = hdr.page_size, ts->flags = hdr.flags, ts->generation = hdr.generation;
    pthread_mutex_unlock(&ts->hdr_lock);
    return rc;
}

sr_err_t sr_tde_ts_set_page_size(sr_tde_ts_t *ts, uint32_t page_size)
{
    if (ts->page_size == page_size) return SR_OK;
    return ts_modify(ts, edit_page_size, &page_size);
}

static sr_err_t edit_has_pages(sr_tde_header_t *hdr, void *arg, int *dirty)
{
    uint32_t want = *(int *)arg ? SR_TDE_HEADER_HAS_PAGES : 0;
    if ((hdr->flags & SR_TDE_HEADER_HAS_PAGES) != want)
        hdr->flags = (hdr->flags & ~SR_TDE_HEADER_HAS_PAGES) | want, *dirty = 1;
    return SR_OK;
}

sr_err_t sr_tde_ts_set_has_pages(sr_tde_ts_t *ts, int has_pages)
{
    if (((ts->flags & SR_TDE_HEADER_HAS_PAGES) != 0) == (has_pages != 0)) return SR_OK;
    return ts_modify(ts, edit_has_pages, &has_pages);
}

int sr_tde_ts_has_pages(sr_tde_ts_t *ts) { return (ts->flags & SR_TDE_HEADER_HAS_PAGES) != 0; }

sr_err_t sr_tde_ts_refresh(sr_tde_ts_t *ts)
{
    sr_tde_header_t hdr;
    pthread_mutex_lock(&ts->hdr_lock);
    sr_err_t rc = region_lock(ts->fd, F_RDLCK);
    if (rc == SR_OK) {
        rc = header_load(ts->fd, ts->path, &(header_keys_t){ts, ts->prov, NULL}, &hdr, NULL);
        region_lock(ts->fd, F_UNLCK);
    }
    if (rc == SR_OK) ts->page_size = hdr.page_size, ts->flags = hdr.flags, ts->generation = hdr.generation;
    pthread_mutex_unlock(&ts->hdr_lock);
    if (rc == SR_OK) rc = space_load_keys(ts->space, ts->prov, &hdr, 0, NULL);
    if (rc == SR_OK && sr_tde_space_active(ts->space) != hdr.active_version)
        rc = sr_tde_space_set_active(ts->space, hdr.active_version);
    return rc;
}

sr_err_t sr_tde_ts_check_fresh(sr_tde_ts_t *ts)
{
    uint8_t g[2][8];
    size_t got0 = 0, got1 = 0;
    sr_err_t rc = full_pread(ts->fd, g[0], 8, 10, &got0);
    if (rc == SR_OK) rc = full_pread(ts->fd, g[1], 8, SR_TDE_HEADER_SLOT + 10, &got1);
    if (rc != SR_OK) return rc;
    uint64_t newest = 0;
    for (int i = 0; i < 2; i++) {
        uint64_t v = sr_get_be64(g[i]);
        if ((i ? got1 : got0) == 8 && v > newest) newest = v;
    }
    pthread_mutex_lock(&ts->hdr_lock);
    int stale = newest != ts->generation;
    pthread_mutex_unlock(&ts->hdr_lock);
    return stale ? sr_tde_ts_refresh(ts) : SR_OK;
}

/* ---- on a path (tdectl) ------------------------------------------------------------ */

static sr_err_t path_open(const char *path, int writable, int create, int *fd)
{
    *fd = open(path, (writable ? O_RDWR : O_RDONLY) | (create ? O_CREAT : 0) | O_CLOEXEC, 0600);
    return *fd >= 0 ? SR_OK : sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open %s", path);
}

sr_err_t sr_tde_file_header_read(const char *path, sr_keyprov_t *prov, sr_tde_header_t *out, int *slot_out)
{
    int fd;
    sr_err_t rc = path_open(path, 0, 0, &fd);
    if (rc != SR_OK) return rc;
    rc = region_lock(fd, F_RDLCK);
    if (rc == SR_OK) rc = header_load(fd, path, &(header_keys_t){NULL, prov, NULL}, out, slot_out);
    close(fd);
    return rc;
}

sr_err_t sr_tde_file_create(const char *path, sr_keyprov_t *prov, const sr_tde_ts_options_t *opts,
                            sr_tde_header_t *out)
{
    int fd;
    sr_err_t rc = path_open(path, 1, 1, &fd);
    if (rc != SR_OK) return rc;
    struct stat st;
    uint8_t *dek = sr_secure_alloc(SR_TDE_KEY_BYTES);
    rc = dek ? region_lock(fd, F_WRLCK) : SR_ERR_NOMEM;
    if (rc == SR_OK && fstat(fd, &st) == 0 && st.st_size != 0)
        rc = sr_err_set(SR_ERR_EXISTS, "%s is not empty; refusing to overwrite it", path);
    if (rc == SR_OK) rc = header_create(fd, prov, opts, out, dek);
    if (dek) sr_secure_wipe(dek, SR_TDE_KEY_BYTES), sr_secure_free(dek);
    close(fd);
    return rc;
}

static sr_err_t edit_rewrap(sr_tde_header_t *hdr, void *arg, int *dirty)
{
    sr_keyprov_t *prov = arg;
    sr_wrapped_key_t rewrapped[SR_TDE_MAX_KEY_VERSIONS];
    for (uint32_t i = 0; i < hdr->n_keys; i++) {
        sr_err_t rc = sr_keyprov_dek_rewrap(prov, &hdr->tablespace, hdr->keys[i].version, &hdr->keys[i].wrapped,
                                            &rewrapped[i]);
        if (rc != SR_OK) return rc; /* nothing written: all or none */
    }
    for (uint32_t i = 0; i < hdr->n_keys; i++) hdr->keys[i].wrapped = rewrapped[i];
    *dirty = 1;
    return SR_OK;
}

sr_err_t sr_tde_file_rewrap(const char *path, sr_keyprov_t *prov, sr_tde_header_t *out)
{
    int fd;
    sr_err_t rc = path_open(path, 1, 0, &fd);
    if (rc != SR_OK) return rc;
    rc = header_modify(fd, path, &(header_keys_t){NULL, prov, NULL}, edit_rewrap, prov, 1, out);
    close(fd);
    return rc;
}

sr_err_t sr_tde_file_add_key(const char *path, sr_keyprov_t *prov, sr_tde_header_t *out)
{
    return sr_tde_file_add_key_cipher(path, prov, 0, out);
}

sr_err_t sr_tde_file_add_key_cipher(const char *path, sr_keyprov_t *prov, sr_tde_cipher_t cipher, sr_tde_header_t *out)
{
    int fd;
    sr_err_t rc = path_open(path, 1, 0, &fd);
    if (rc != SR_OK) return rc;
    roll_arg_t a = {.prov = prov, .cipher = cipher, .dek = sr_secure_alloc(SR_TDE_KEY_BYTES)};
    rc = a.dek ? header_modify(fd, path, &(header_keys_t){NULL, prov, NULL}, edit_add_key, &a, 1, out) : SR_ERR_NOMEM;
    if (a.dek) sr_secure_wipe(a.dek, SR_TDE_KEY_BYTES), sr_secure_free(a.dek);
    close(fd);
    return rc;
}

static sr_err_t edit_state(sr_tde_header_t *hdr, void *arg, int *dirty)
{
    sr_tde_state_t want = *(const sr_tde_state_t *)arg;
    if (hdr->state != want) hdr->state = want, *dirty = 1;
    return SR_OK;
}

sr_err_t sr_tde_file_set_state(const char *path, sr_keyprov_t *prov, sr_tde_state_t state, sr_tde_header_t *out)
{
    int fd;
    sr_err_t rc = path_open(path, 1, 0, &fd);
    if (rc != SR_OK) return rc;
    rc = header_modify(fd, path, &(header_keys_t){NULL, prov, NULL}, edit_state, &state, 1, out);
    close(fd);
    return rc;
}

/* ---- key versions in use -------------------------------------------------------- */

void sr_tde_count_version(sr_tde_version_count_t *vc, uint32_t v)
{
    if (v == 0) return; /* a page SQLite never wrote (the lock-byte page): no key version */
    int i = 0;
    while (i < SR_TDE_MAX_KEY_VERSIONS && vc->versions[i] && vc->versions[i] != v) i++;
    if (i < SR_TDE_MAX_KEY_VERSIONS) vc->versions[i] = v, vc->count[i]++;
    else vc->other++;
    vc->pages++;
}

sr_err_t sr_tde_count_versions_fd(int fd, off_t first, size_t skip, size_t stride, uint32_t page_size,
                                  sr_tde_version_count_t *vc)
{
    uint8_t *page = malloc(page_size);
    if (!page) return sr_err_set(SR_ERR_NOMEM, "cannot allocate a page");
    ssize_t got = 0;
    for (off_t off = first; (got = pread(fd, page, page_size, off + (off_t)skip)) == (ssize_t)page_size;
         off += (off_t)stride)
        sr_tde_count_version(vc, sr_tde_page_key_version(page, page_size));
    free(page);
    return got < 0 ? sr_err_set_errno(SR_ERR_IO, errno, "cannot read the pages") : SR_OK;
}

typedef struct drop_arg {
    const sr_tde_version_count_t *in_use;
    uint32_t before, after;
} drop_arg_t;

static sr_err_t edit_drop_keys(sr_tde_header_t *hdr, void *arg, int *dirty)
{
    drop_arg_t *a = arg;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < hdr->n_keys; i++) {
        int used = hdr->keys[i].version == hdr->active_version;
        for (size_t j = 0; j < SR_TDE_MAX_KEY_VERSIONS && !used; j++)
            used = a->in_use->versions[j] == hdr->keys[i].version;
        if (used) hdr->keys[kept++] = hdr->keys[i];
    }
    a->before = hdr->n_keys, a->after = kept;
    if (kept != hdr->n_keys) {
        memset(&hdr->keys[kept], 0, (hdr->n_keys - kept) * sizeof hdr->keys[0]);
        hdr->n_keys = kept, *dirty = 1;
    }
    return SR_OK;
}

/* The database's pages are read through the tablespace's own descriptor:
 * opening and closing another one would drop every POSIX lock SQLite holds
 * on the file, the caller's write lock included (rekey --rewrite did, and a
 * writer of another process took the lock it still thought it held: both
 * then waited for each other until their busy timeouts). SQLite locks no
 * byte of a WAL, so the WAL gets a descriptor of its own. */
sr_err_t sr_tde_ts_drop_unused_keys(sr_tde_ts_t *ts, const char *wal_path, uint32_t *before, uint32_t *after)
{
    sr_tde_version_count_t vc = {0};
    uint32_t ps = ts->page_size;
    sr_err_t rc = sr_tde_count_versions_fd(ts->fd, SR_TDE_HEADER_REGION, 0, ps, ps, &vc);
    int wal = rc == SR_OK && wal_path ? open(wal_path, O_RDONLY | O_CLOEXEC) : -1;
    if (rc == SR_OK && wal_path && wal < 0 && errno != ENOENT)
        rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot open %s", wal_path);
    if (wal >= 0) {
        rc = sr_tde_count_versions_fd(wal, 32, 24, 24 + (size_t)ps, ps, &vc); /* WAL header, then frames */
        close(wal);
    }
    if (rc == SR_OK && vc.other) /* more versions on pages than a header holds: a trailer is damaged */
        rc = sr_err_set(SR_ERR_CORRUPT, "%s: pages carry more key versions than the header can hold", ts->path);
    drop_arg_t a = {.in_use = &vc};
    if (rc == SR_OK) rc = ts_modify(ts, edit_drop_keys, &a);
    if (rc == SR_OK) *before = a.before, *after = a.after;
    return rc;
}
