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
 */
#include "tablespace.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
    pthread_mutex_t hdr_lock;
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

static sr_err_t full_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fd, (const uint8_t *)buf + done, len - done, off + (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot write the key header");
        done += (size_t)w;
    }
    return fdatasync(fd) == 0 ? SR_OK : sr_err_set_errno(SR_ERR_IO, errno, "cannot sync the key header");
}

/* Reads and picks the header; explains a plaintext or truncated file. */
static sr_err_t header_load(int fd, const char *path, sr_tde_header_t *hdr, int *slot)
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
    rc = sr_tde_header_pick(region, hdr, slot);
    if (rc != SR_OK) sr_err_set(rc, "%s: %s", path, sr_err_detail());
    return rc;
}

typedef sr_err_t (*header_edit_fn)(sr_tde_header_t *hdr, void *arg, int *dirty);

/* Locked read-modify-write: the edit goes into the slot not holding the newest header. */
static sr_err_t header_modify(int fd, const char *path, header_edit_fn edit, void *arg, sr_tde_header_t *out)
{
    sr_err_t rc = region_lock(fd, F_WRLCK);
    if (rc != SR_OK) return rc;
    sr_tde_header_t hdr;
    int slot = 0, dirty = 0;
    rc = header_load(fd, path, &hdr, &slot);
    if (rc == SR_OK) rc = edit(&hdr, arg, &dirty);
    if (rc == SR_OK && dirty) {
        uint8_t buf[SR_TDE_HEADER_SLOT];
        hdr.generation++;
        hdr.updated_us = sr_time_now_us();
        rc = sr_tde_header_encode(&hdr, buf);
        if (rc == SR_OK) rc = full_pwrite(fd, buf, sizeof buf, (off_t)(1 - slot) * SR_TDE_HEADER_SLOT);
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
    if (rc != SR_OK) return rc;
    uint8_t region[SR_TDE_HEADER_REGION] = {0};
    rc = sr_tde_header_encode(hdr, region);
    return rc == SR_OK ? full_pwrite(fd, region, sizeof region, 0) : rc;
}

/* ---- keys ----------------------------------------------------------------------- */

/* Unwraps every key of the header into the space (existing versions keep theirs). */
static sr_err_t space_load_keys(sr_tde_space_t *space, sr_keyprov_t *prov, sr_tde_header_t *hdr)
{
    uint8_t *dek = sr_secure_alloc(SR_TDE_KEY_BYTES);
    if (!dek) return SR_ERR_NOMEM;
    sr_err_t rc = SR_OK;
    for (uint32_t i = 0; i < hdr->n_keys && rc == SR_OK; i++) {
        sr_tde_header_key_t *k = &hdr->keys[i];
        rc = sr_keyprov_dek_unwrap(prov, &hdr->tablespace, k->version, &k->wrapped, dek);
        if (rc == SR_OK) rc = sr_tde_space_add_key(space, k->version, dek, k->encryptions_reserved);
        sr_secure_wipe(dek, SR_TDE_KEY_BYTES);
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
    sr_err_t rc = header_modify(ts->fd, ts->path, edit_reserve, &a, NULL);
    pthread_mutex_unlock(&ts->hdr_lock);
    if (rc == SR_OK) *range_start = a.start;
    return rc;
}

typedef struct roll_arg {
    sr_keyprov_t *prov;
    uint32_t exhausted;
    uint8_t *dek; /* secure memory; set when a new key was made */
    int made;
} roll_arg_t;

static sr_err_t edit_add_key(sr_tde_header_t *hdr, void *arg, int *dirty)
{
    roll_arg_t *a = arg;
    if (a->exhausted && hdr->active_version != a->exhausted) return SR_OK; /* another process rolled already */
    if (hdr->n_keys == SR_TDE_MAX_KEY_VERSIONS)
        return sr_err_set(SR_ERR_LIMIT, "the tablespace already has %d key versions: copy it into a new tablespace "
                          "(tdectl copy) to start a fresh key history", SR_TDE_MAX_KEY_VERSIONS);
    /* Only the holder of the master key may add a key (else later opens would fail). */
    sr_tde_header_key_t *active = sr_tde_header_find_key(hdr, hdr->active_version);
    sr_err_t rc = sr_keyprov_dek_unwrap(a->prov, &hdr->tablespace, active->version, &active->wrapped, a->dek);
    sr_secure_wipe(a->dek, SR_TDE_KEY_BYTES);
    if (rc != SR_OK) return rc;
    sr_tde_header_key_t *k = &hdr->keys[hdr->n_keys];
    memset(k, 0, sizeof *k);
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
    sr_err_t rc = header_modify(ts->fd, ts->path, edit_add_key, &a, &hdr);
    pthread_mutex_unlock(&ts->hdr_lock);
    sr_secure_wipe(a.dek, SR_TDE_KEY_BYTES);
    sr_secure_free(a.dek);
    /* Load whatever the header now has (our new key or another process's). */
    if (rc == SR_OK) rc = space_load_keys(ts->space, ts->prov, &hdr);
    if (rc == SR_OK) {
        char uuid[SR_UUID_STR_LEN + 1];
        sr_uuid_format(&hdr.tablespace, uuid);
        sr_log(SR_LOG_INFO, "tde: %s: key version %u used up its nonce budget; now using version %u", ts->path,
               exhausted, hdr.active_version);
        sr_event_emit(&(sr_event_t){.component = "tde", .event = "key.rolled", .object = uuid,
                                    .outcome = "success", .detail = "data key rolled at its encryption limit"});
    }
    return rc;
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
    pthread_mutex_destroy(&ts->hdr_lock);
    free(ts->path);
    free(ts);
}

static sr_err_t ts_new(const char *path, sr_tde_ts_t **out)
{
    sr_tde_ts_t *ts = calloc(1, sizeof *ts);
    if (!ts || !(ts->path = strdup(path))) {
        free(ts);
        return sr_err_set(SR_ERR_NOMEM, "cannot allocate a tablespace");
    }
    pthread_mutex_init(&ts->hdr_lock, NULL);
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
static sr_err_t ts_load(sr_tde_ts_t *ts, sr_keyprov_t *prov, const sr_tde_ts_options_t *o, sr_tde_header_t *hdr)
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
            sr_event_emit(&(sr_event_t){.component = "tde", .event = "tablespace.created", .object = uuid,
                                        .outcome = "success", .detail = ts->path});
        }
    } else {
        rc = header_load(ts->fd, ts->path, hdr, NULL);
    }
    region_lock(ts->fd, F_UNLCK);
    if (dek) sr_secure_wipe(dek, SR_TDE_KEY_BYTES), sr_secure_free(dek);
    return rc;
}

sr_err_t sr_tde_ts_open(const char *path, sr_keyprov_t *prov, const sr_tde_ts_options_t *opts, sr_tde_ts_t **out)
{
    struct stat st;
    if (stat(path, &st) != 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot stat %s", path);
    pthread_mutex_lock(&registry_lock);
    sr_tde_ts_t *ts = registry_find(st.st_dev, st.st_ino);
    int fresh = ts == NULL;
    sr_err_t rc = fresh ? ts_new(path, &ts) : SR_OK;
    sr_tde_header_t hdr;
    if (rc == SR_OK) rc = ts_load(ts, prov, opts, &hdr);
    if (rc == SR_OK && fresh) rc = sr_tde_space_new(&hdr.tablespace, hdr.cipher, &ts->space);
    if (rc == SR_OK) rc = space_load_keys(ts->space, prov, &hdr); /* proves this caller's key, every time */
    if (rc == SR_OK) {
        ts->prov = prov;
        ts->page_size = hdr.page_size;
        ts->refs++;
        if (fresh) {
            sr_tde_space_set_hooks(ts->space, &(sr_tde_space_hooks_t){.reserve = ts_reserve, .roll = ts_roll, .ctx = ts});
            ts->next = registry, registry = ts;
        }
        *out = ts;
    } else if (fresh) {
        ts_destroy(ts);
    }
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

sr_tde_ts_t *sr_tde_ts_retain(sr_tde_ts_t *ts)
{
    pthread_mutex_lock(&registry_lock);
    ts->refs++;
    pthread_mutex_unlock(&registry_lock);
    return ts;
}

void sr_tde_ts_release(sr_tde_ts_t *ts)
{
    if (!ts) return;
    pthread_mutex_lock(&registry_lock);
    if (--ts->refs == 0) {
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

sr_err_t sr_tde_ts_set_page_size(sr_tde_ts_t *ts, uint32_t page_size)
{
    if (ts->page_size == page_size) return SR_OK;
    pthread_mutex_lock(&ts->hdr_lock);
    sr_err_t rc = header_modify(ts->fd, ts->path, edit_page_size, &page_size, NULL);
    if (rc == SR_OK) ts->page_size = page_size;
    pthread_mutex_unlock(&ts->hdr_lock);
    return rc;
}

sr_err_t sr_tde_ts_refresh(sr_tde_ts_t *ts)
{
    sr_tde_header_t hdr;
    sr_err_t rc = region_lock(ts->fd, F_RDLCK);
    if (rc != SR_OK) return rc;
    rc = header_load(ts->fd, ts->path, &hdr, NULL);
    region_lock(ts->fd, F_UNLCK);
    return rc == SR_OK ? space_load_keys(ts->space, ts->prov, &hdr) : rc;
}

/* ---- on a path (tdectl) ------------------------------------------------------------ */

static sr_err_t path_open(const char *path, int writable, int create, int *fd)
{
    *fd = open(path, (writable ? O_RDWR : O_RDONLY) | (create ? O_CREAT : 0) | O_CLOEXEC, 0600);
    return *fd >= 0 ? SR_OK : sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open %s", path);
}

sr_err_t sr_tde_file_header_read(const char *path, sr_tde_header_t *out, int *slot_out)
{
    int fd;
    sr_err_t rc = path_open(path, 0, 0, &fd);
    if (rc != SR_OK) return rc;
    rc = region_lock(fd, F_RDLCK);
    if (rc == SR_OK) rc = header_load(fd, path, out, slot_out);
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
    rc = header_modify(fd, path, edit_rewrap, prov, out);
    close(fd);
    return rc;
}

sr_err_t sr_tde_file_add_key(const char *path, sr_keyprov_t *prov, sr_tde_header_t *out)
{
    int fd;
    sr_err_t rc = path_open(path, 1, 0, &fd);
    if (rc != SR_OK) return rc;
    roll_arg_t a = {.prov = prov, .dek = sr_secure_alloc(SR_TDE_KEY_BYTES)};
    rc = a.dek ? header_modify(fd, path, edit_add_key, &a, out) : SR_ERR_NOMEM;
    if (a.dek) sr_secure_wipe(a.dek, SR_TDE_KEY_BYTES), sr_secure_free(a.dek);
    close(fd);
    return rc;
}
