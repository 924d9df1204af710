/*
 * sqlite_vfs.c — the "strongroom" SQLite VFS: a shim over the default VFS that
 * encrypts and authenticates every page SQLite writes (notes/sqlite-vfs.md).
 *
 * What each file becomes on disk:
 *   main database   8192-byte key header, then SQLite's pages, each encrypted
 *                   with the page cipher (kind DB, location = page number).
 *                   Every offset SQLite uses is shifted by 8192. A read smaller
 *                   than a page (the 100-byte header read, the 16-byte change
 *                   counter read) is served from the decrypted page.
 *   WAL             32-byte header and 24-byte frame headers as SQLite wrote
 *                   them (salts, page numbers, checksums over the plaintext);
 *                   each frame's page encrypted (kind WAL, location = frame
 *                   index). Frame reads of header+page decrypt the page part.
 *   rollback journal  headers and record page numbers/checksums as written;
 *                   each page image (the only writes of a page's size at an
 *                   offset = 4 mod 8) encrypted (kind JOURNAL, location = offset).
 *   temp db, temp/sub-journal, sorter, transient files: AES-256-XTS under an
 *                   ephemeral per-file key, 4096-byte units, size preserving.
 *   super-journal, -shm: as SQLite wrote them (file names; the WAL index).
 *
 * New databases: SQLite reads the first 100 bytes of a file even when it is
 * empty, to learn the page size and the reserved-byte count. For an empty
 * encrypted file this shim answers with a header that says "page size P,
 * 32 reserved bytes", so every page SQLite ever builds has room for the
 * 32-byte trailer (nonce, key version, tag). P comes from the URI parameter
 * page_size= (default 4096) and is fixed at creation, like the cipher
 * (PRAGMA page_size has no effect on a new encrypted database; VACUUM can
 * still change it on an existing one).
 *
 * Keys: URI keyfile=PATH, else $STRONGROOM_KEYFILE, else the provider given to
 * sr_sqlite_register(). Key-file providers are cached per path and reloaded
 * when the file changes (master-key rotation by tdectl).
 */
#include "sr_sqlite.h"
#include "tablespace.h"
#include "tde.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHIFT SR_TDE_HEADER_REGION
#define WAL_HDR 32
#define WAL_FRAME_HDR 24
#define TEMP_UNIT 4096
#define DEFAULT_PAGE 4096

typedef enum file_role {
    ROLE_PASS = 0,  /* no transform (super-journal, plaintext=1 databases) */
    ROLE_MAIN,      /* the main database of an encrypted tablespace */
    ROLE_WAL,
    ROLE_JOURNAL,
    ROLE_TEMP,      /* XTS, ephemeral key */
    ROLE_MAIN_PASSTHROUGH /* benchmark shim: shifted, not transformed */
} file_role_t;

typedef struct sr_file {
    sqlite3_file base;
    sqlite3_file *lower; /* right after this struct, in the same allocation */
    file_role_t role;
    int lower_open;
    sr_tde_ts_t *ts;         /* MAIN, WAL, JOURNAL */
    sr_tde_pagectx_t *pc;    /* MAIN, WAL, JOURNAL */
    sr_tde_xts_t *xts;       /* TEMP */
    sqlite3_int64 temp_size; /* TEMP: bytes SQLite has written */
    uint32_t wal_page;       /* WAL: page size from the WAL header */
    uint8_t *scratch;        /* one page (+ frame header) or two temp units */
    const char *name;        /* for messages; NULL for anonymous temp files */
} sr_file_t;

typedef struct provider_entry {
    struct provider_entry *next;
    char *path;
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    sr_keyprov_t *prov; /* kept for the process's life: open tablespaces point at it */
} provider_entry_t;

static pthread_mutex_t vfs_lock = PTHREAD_MUTEX_INITIALIZER;
static provider_entry_t *providers;
static sr_keyprov_t *default_provider;
static sqlite3_vfs vfs_main, vfs_pass;
static int registered_main, registered_pass;

static sqlite3_vfs *lower_vfs(sqlite3_vfs *v) { return (sqlite3_vfs *)v->pAppData; }
static int is_passthrough_vfs(sqlite3_vfs *v) { return v == &vfs_pass; }

/* ---- errors ------------------------------------------------------------------------ */

/* To SQLite's error log (what applications capture) and to ours (stderr by
 * default: a shell user sees why the open failed, not only "not a database"). */
static int log_failure(int sqlite_rc, const sr_file_t *f, const char *what)
{
    const char *name = f && f->name ? f->name : "(temp file)";
    sqlite3_log(sqlite_rc, "strongroom: %s: %s: %s", name, what, sr_err_detail());
    sr_log(SR_LOG_WARN, "strongroom: %s: %s: %s", name, what, sr_err_detail());
    return sqlite_rc;
}

/* The local principal of an event: the process's user (the pid goes in the detail). */
static const char *event_subject(void)
{
    static __thread char subject[32];
    snprintf(subject, sizeof subject, "uid=%ld", (long)getuid());
    return subject;
}

static int page_auth_failure(sr_file_t *f)
{
    char object[512], detail[1024];
    snprintf(object, sizeof object, "%s", f->name ? f->name : "(temp)");
    snprintf(detail, sizeof detail, "pid=%ld %s", (long)getpid(), sr_err_detail());
    sr_event_emit(&(sr_event_t){.component = "tde", .event = "page.auth_failed", .subject = event_subject(),
                                .object = object, .outcome = "failure", .source = "local", .detail = detail});
    return log_failure(SQLITE_IOERR_DATA, f, "page failed authentication");
}

/* ---- key providers ---------------------------------------------------------------- */

static int same_file(const provider_entry_t *e, const struct stat *st)
{
    return e->dev == st->st_dev && e->ino == st->st_ino && e->mtime.tv_sec == st->st_mtim.tv_sec &&
           e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* The cached provider for a key file, reloaded if the file changed. */
static sr_err_t provider_for_keyfile(const char *path, sr_keyprov_t **out)
{
    struct stat st;
    if (stat(path, &st) != 0) return sr_err_set_errno(SR_ERR_NOT_FOUND, errno, "cannot open key file %s", path);
    pthread_mutex_lock(&vfs_lock);
    provider_entry_t *e = providers;
    while (e && !(strcmp(e->path, path) == 0 && same_file(e, &st))) e = e->next;
    sr_err_t rc = SR_OK;
    if (!e) {
        sr_keyprov_t *kp = NULL;
        rc = sr_keyprov_keyfile_open(path, &kp);
        if (rc == SR_OK && (!(e = calloc(1, sizeof *e)) || !(e->path = strdup(path)))) {
            free(e);
            sr_keyprov_free(kp);
            rc = sr_err_set(SR_ERR_NOMEM, "cannot cache key provider");
        }
        if (rc == SR_OK) {
            e->dev = st.st_dev, e->ino = st.st_ino, e->mtime = st.st_mtim, e->prov = kp;
            e->next = providers, providers = e;
        }
    }
    if (rc == SR_OK) *out = e->prov;
    pthread_mutex_unlock(&vfs_lock);
    return rc;
}

static sr_err_t provider_for_open(const char *zName, sr_keyprov_t **out)
{
    const char *keyfile = sqlite3_uri_parameter(zName, "keyfile");
    if (!keyfile || !*keyfile) keyfile = getenv("STRONGROOM_KEYFILE");
    if (keyfile && *keyfile) return provider_for_keyfile(keyfile, out);
    pthread_mutex_lock(&vfs_lock);
    *out = default_provider;
    pthread_mutex_unlock(&vfs_lock);
    if (*out) return SR_OK;
    return sr_err_set(SR_ERR_NOT_FOUND, "no key for an encrypted database: add keyfile=PATH to the URI, set "
                      "STRONGROOM_KEYFILE, or register a key provider (create a key with: tdectl keygen PATH)");
}

/* ---- offsets and page numbers ------------------------------------------------------ */

static int valid_page_size(int amt) { return amt > 0 && sr_tde_page_size_valid((size_t)amt); }

/* ---- main database ------------------------------------------------------------------ */

/* The 100 bytes SQLite reads from an empty database: page size and reserve. */
static void synth_header(uint8_t *buf, int amt, uint32_t page_size)
{
    uint8_t hdr[100] = "SQLite format 3";
    hdr[16] = (uint8_t)(page_size == 65536 ? 0 : page_size >> 8);
    hdr[17] = (uint8_t)(page_size == 65536 ? 1 : 0);
    hdr[18] = hdr[19] = 1;
    hdr[20] = SR_TDE_PAGE_TRAILER;
    hdr[21] = 64, hdr[22] = 32, hdr[23] = 32;
    memset(buf, 0, (size_t)amt);
    memcpy(buf, hdr, amt < 100 ? (size_t)amt : 100);
}

/* Before decrypting, make sure the page's key version is loaded (another
 * process may have rolled or rotated the key since this one opened). */
static void ensure_key_loaded(sr_file_t *f, const uint8_t *page, size_t page_size)
{
    uint32_t v = sr_tde_page_key_version(page, page_size);
    if (v > sr_tde_space_active(sr_tde_ts_space(f->ts))) sr_tde_ts_refresh(f->ts);
}

static int main_read(sr_file_t *f, uint8_t *buf, int amt, sqlite3_int64 off)
{
    uint32_t ps = f->ts ? sr_tde_ts_page_size(f->ts) : DEFAULT_PAGE;
    if (valid_page_size(amt) && off % amt == 0) {
        int rc = f->lower->pMethods->xRead(f->lower, buf, amt, off + SHIFT);
        if (rc == SQLITE_IOERR_SHORT_READ) {
            int empty = 1;
            for (int i = 0; i < amt && empty; i++) empty = buf[i] == 0;
            if (empty) return rc;
            sr_err_set(SR_ERR_TDE_PAGE_AUTH, "database page %lld is cut short (truncated file)",
                       (long long)(off / amt + 1));
            return page_auth_failure(f);
        }
        if (rc != SQLITE_OK || f->role == ROLE_MAIN_PASSTHROUGH) return rc;
        ensure_key_loaded(f, buf, (size_t)amt);
        if (sr_tde_page_decrypt(f->pc, SR_TDE_FILE_DB, (uint64_t)(off / amt + 1), buf, (size_t)amt) != SR_OK)
            return page_auth_failure(f);
        return SQLITE_OK;
    }
    /* A read inside one page (the header reads): decrypt the page, copy. */
    sqlite3_int64 pgno = off / ps + 1, in_page = off % ps;
    if (in_page + amt > (sqlite3_int64)ps) {
        sr_err_set(SR_ERR_INVALID_ARG, "read of %d bytes at %lld crosses a page boundary", amt, (long long)off);
        return log_failure(SQLITE_IOERR_READ, f, "unexpected read");
    }
    sqlite3_int64 size = 0;
    int rc = f->lower->pMethods->xFileSize(f->lower, &size);
    if (rc != SQLITE_OK) return rc;
    if (size <= SHIFT) { /* a new database */
        synth_header(buf, amt, ps);
        if (in_page != 0) memset(buf, 0, (size_t)amt);
        return SQLITE_IOERR_SHORT_READ;
    }
    rc = main_read(f, f->scratch, (int)ps, (pgno - 1) * ps);
    if (rc == SQLITE_OK || rc == SQLITE_IOERR_SHORT_READ) memcpy(buf, f->scratch + in_page, (size_t)amt);
    return rc;
}

static int main_write(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    if (!valid_page_size(amt) || off % amt != 0) {
        sr_err_set(SR_ERR_INVALID_ARG, "write of %d bytes at offset %lld is not one whole page", amt, (long long)off);
        return log_failure(SQLITE_IOERR_WRITE, f, "refused write");
    }
    if (off == 0 && buf[20] < SR_TDE_PAGE_TRAILER) {
        sr_err_set(SR_ERR_INVALID_ARG, "page 1 reserves %u bytes per page, an encrypted database needs %d (a plaintext "
                   "database cannot be copied in page by page; use tdectl encrypt)", buf[20], SR_TDE_PAGE_TRAILER);
        return log_failure(SQLITE_IOERR_WRITE, f, "refused write");
    }
    if (off == 0 && f->ts && sr_tde_ts_set_page_size(f->ts, (uint32_t)amt) != SR_OK)
        return log_failure(SQLITE_IOERR_WRITE, f, "cannot record the new page size");
    if (f->role == ROLE_MAIN_PASSTHROUGH) return f->lower->pMethods->xWrite(f->lower, buf, amt, off + SHIFT);
    if (sr_tde_page_encrypt(f->pc, SR_TDE_FILE_DB, (uint64_t)(off / amt + 1), buf, f->scratch, (size_t)amt) != SR_OK)
        return log_failure(SQLITE_IOERR_WRITE, f, "page encryption failed");
    return f->lower->pMethods->xWrite(f->lower, f->scratch, amt, off + SHIFT);
}

/* ---- WAL ------------------------------------------------------------------------------ */

static uint32_t wal_header_page_size(const uint8_t *h)
{
    uint32_t ps = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
    return ps == 1 ? 65536 : ps;
}

/* Where an access falls: the frame index and the offset inside the frame. */
static void wal_locate(const sr_file_t *f, sqlite3_int64 off, sqlite3_int64 *frame, sqlite3_int64 *rel)
{
    sqlite3_int64 fsz = WAL_FRAME_HDR + f->wal_page;
    *frame = (off - WAL_HDR) / fsz;
    *rel = (off - WAL_HDR) % fsz;
}

static int wal_decrypt(sr_file_t *f, uint8_t *page, sqlite3_int64 frame)
{
    ensure_key_loaded(f, page, f->wal_page);
    return sr_tde_page_decrypt(f->pc, SR_TDE_FILE_WAL, (uint64_t)frame, page, f->wal_page) == SR_OK
               ? SQLITE_OK : page_auth_failure(f);
}

static uint32_t be32_at(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Is there, after frame `frame`, a commit frame of the same WAL generation
 * (same salts as `hdr`)? Then `frame` is inside committed history. */
static int wal_commit_follows(sr_file_t *f, sqlite3_int64 frame, const uint8_t *hdr)
{
    uint8_t next[WAL_FRAME_HDR];
    for (sqlite3_int64 j = frame + 1;; j++) {
        sqlite3_int64 off = WAL_HDR + j * (WAL_FRAME_HDR + (sqlite3_int64)f->wal_page);
        if (f->lower->pMethods->xRead(f->lower, next, WAL_FRAME_HDR, off) != SQLITE_OK) return 0;
        if (memcmp(next + 8, hdr + 8, 8) != 0) return 0; /* an older generation: the log ends before it */
        if (be32_at(next + 4) != 0) return 1;           /* a commit frame */
    }
}

/* A frame read during recovery (header + page) whose page fails
 * authentication. A write torn by a crash can only be in the unfinished
 * transaction at the end of the log: that frame is handed back with a zeroed
 * page, so SQLite's own frame checksum fails and recovery ends the log there,
 * as it does for a torn frame without encryption. Inside committed history
 * (a commit frame of the same generation follows) it is tampering: refused. */
static int wal_recovery_frame(sr_file_t *f, uint8_t *frame_buf, sqlite3_int64 frame)
{
    ensure_key_loaded(f, frame_buf + WAL_FRAME_HDR, f->wal_page);
    if (sr_tde_page_decrypt(f->pc, SR_TDE_FILE_WAL, (uint64_t)frame, frame_buf + WAL_FRAME_HDR, f->wal_page) == SR_OK)
        return SQLITE_OK;
    if (wal_commit_follows(f, frame, frame_buf)) return page_auth_failure(f);
    char detail[600];
    snprintf(detail, sizeof detail, "wal frame %lld fails authentication and no commit follows it: a write torn by a "
             "crash, treated as the end of the log (%s)", (long long)frame, sr_err_detail());
    sr_log(SR_LOG_WARN, "strongroom: %s: %s", f->name ? f->name : "(wal)", detail);
    sr_event_emit(&(sr_event_t){.component = "tde", .event = "wal.torn_frame", .subject = event_subject(),
                                .object = f->name, .outcome = "failure", .source = "local", .detail = detail});
    memset(frame_buf + WAL_FRAME_HDR, 0, f->wal_page);
    return SQLITE_OK;
}

static int wal_read(sr_file_t *f, uint8_t *buf, int amt, sqlite3_int64 off)
{
    int rc = f->lower->pMethods->xRead(f->lower, buf, amt, off);
    if (rc != SQLITE_OK) return rc; /* a short read is a torn tail: SQLite's checksums reject it */
    if (off < WAL_HDR) {
        if (off == 0 && amt >= WAL_HDR) f->wal_page = wal_header_page_size(buf);
        return SQLITE_OK;
    }
    sqlite3_int64 frame, rel;
    wal_locate(f, off, &frame, &rel);
    if (rel == WAL_FRAME_HDR && amt == (int)f->wal_page) return wal_decrypt(f, buf, frame);
    if (rel == 0 && amt == WAL_FRAME_HDR + (int)f->wal_page) return wal_recovery_frame(f, buf, frame);
    if (rel + amt <= WAL_FRAME_HDR) return SQLITE_OK; /* frame header fields */
    sr_err_set(SR_ERR_INVALID_ARG, "WAL read of %d bytes at %lld is not a frame, a page or a frame header", amt,
               (long long)off);
    return log_failure(SQLITE_IOERR_READ, f, "unexpected WAL read");
}

static int wal_write(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    sqlite3_file *lo = f->lower;
    if (off < WAL_HDR) {
        if (off == 0 && amt >= WAL_HDR) f->wal_page = wal_header_page_size(buf);
        return lo->pMethods->xWrite(lo, buf, amt, off);
    }
    sqlite3_int64 frame, rel;
    wal_locate(f, off, &frame, &rel);
    int ps = (int)f->wal_page, hdr = 0;
    if (rel == 0 && amt == WAL_FRAME_HDR + ps) { /* a whole frame at once */
        memcpy(f->scratch, buf, WAL_FRAME_HDR);
        hdr = WAL_FRAME_HDR;
    } else if (!(rel == WAL_FRAME_HDR && amt == ps)) {
        if (rel + amt <= WAL_FRAME_HDR) return lo->pMethods->xWrite(lo, buf, amt, off);
        sr_err_set(SR_ERR_INVALID_ARG, "WAL write of %d bytes at %lld splits a page", amt, (long long)off);
        return log_failure(SQLITE_IOERR_WRITE, f, "refused write");
    }
    if (sr_tde_page_encrypt(f->pc, SR_TDE_FILE_WAL, (uint64_t)frame, buf + hdr, f->scratch + hdr, (size_t)ps) != SR_OK)
        return log_failure(SQLITE_IOERR_WRITE, f, "page encryption failed");
    return lo->pMethods->xWrite(lo, f->scratch, amt, off);
}

/* ---- rollback journal ---------------------------------------------------------------- */

/* Page images sit at record offset + 4; records start on sector boundaries
 * and are page + 8 bytes long, so an image always starts at 4 mod 8, which
 * no header chunk (sector aligned) or super-journal record does. */
static int journal_is_page(int amt, sqlite3_int64 off) { return valid_page_size(amt) && off % 8 == 4; }

static int journal_read(sr_file_t *f, uint8_t *buf, int amt, sqlite3_int64 off)
{
    int rc = f->lower->pMethods->xRead(f->lower, buf, amt, off);
    if (rc != SQLITE_OK || !journal_is_page(amt, off)) return rc;
    ensure_key_loaded(f, buf, (size_t)amt);
    return sr_tde_page_decrypt(f->pc, SR_TDE_FILE_JOURNAL, (uint64_t)off, buf, (size_t)amt) == SR_OK
               ? SQLITE_OK : page_auth_failure(f);
}

static int journal_write(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    if (!journal_is_page(amt, off)) return f->lower->pMethods->xWrite(f->lower, buf, amt, off);
    if (sr_tde_page_encrypt(f->pc, SR_TDE_FILE_JOURNAL, (uint64_t)off, buf, f->scratch, (size_t)amt) != SR_OK)
        return log_failure(SQLITE_IOERR_WRITE, f, "page encryption failed");
    return f->lower->pMethods->xWrite(f->lower, f->scratch, amt, off);
}

/* ---- temp files (XTS) ------------------------------------------------------------------ */

static sr_err_t temp_unit_crypt(sr_file_t *f, int enc, sqlite3_int64 unit, const uint8_t *in, uint8_t *out,
                                size_t len)
{
    if (len < 16) return sr_tde_xts_tail(f->xts, (uint64_t)unit, in, out, len);
    return enc ? sr_tde_xts_encrypt(f->xts, (uint64_t)unit, in, out, len)
               : sr_tde_xts_decrypt(f->xts, (uint64_t)unit, in, out, len);
}

/* The plaintext of unit `unit` as it is now (length min(unit, size - start)). */
static int temp_unit_load(sr_file_t *f, sqlite3_int64 unit, uint8_t *plain, size_t *len)
{
    sqlite3_int64 start = unit * TEMP_UNIT;
    sqlite3_int64 have = f->temp_size - start;
    *len = have <= 0 ? 0 : have > TEMP_UNIT ? TEMP_UNIT : (size_t)have;
    memset(plain, 0, TEMP_UNIT);
    if (*len == 0) return SQLITE_OK;
    uint8_t *cipher = f->scratch + TEMP_UNIT;
    int rc = f->lower->pMethods->xRead(f->lower, cipher, (int)*len, start);
    if (rc != SQLITE_OK) return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_IOERR_READ : rc;
    return temp_unit_crypt(f, 0, unit, cipher, plain, *len) == SR_OK ? SQLITE_OK
                                                                        : log_failure(SQLITE_IOERR_READ, f, "temp");
}

static int temp_unit_store(sr_file_t *f, sqlite3_int64 unit, const uint8_t *plain, size_t len)
{
    uint8_t *cipher = f->scratch + TEMP_UNIT;
    if (temp_unit_crypt(f, 1, unit, plain, cipher, len) != SR_OK) return log_failure(SQLITE_IOERR_WRITE, f, "temp");
    return f->lower->pMethods->xWrite(f->lower, cipher, (int)len, unit * TEMP_UNIT);
}

static int temp_read(sr_file_t *f, uint8_t *buf, int amt, sqlite3_int64 off)
{
    int done = 0;
    while (done < amt) {
        sqlite3_int64 pos = off + done, unit = pos / TEMP_UNIT;
        int in_unit = (int)(pos % TEMP_UNIT), n = TEMP_UNIT - in_unit < amt - done ? TEMP_UNIT - in_unit : amt - done;
        if (pos >= f->temp_size) {
            memset(buf + done, 0, (size_t)(amt - done));
            return SQLITE_IOERR_SHORT_READ;
        }
        size_t len = 0;
        int rc = temp_unit_load(f, unit, f->scratch, &len);
        if (rc != SQLITE_OK) return rc;
        memcpy(buf + done, f->scratch + in_unit, (size_t)n); /* past the end: zeros from the load */
        done += n;
    }
    return off + amt > f->temp_size ? SQLITE_IOERR_SHORT_READ : SQLITE_OK;
}

/* Read-modify-write of every unit the write touches; the file grows through
 * zero-filled units so a later read of a gap is zeros, as SQLite expects. */
static int temp_write(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    if (off > f->temp_size) {
        static const uint8_t zeros[TEMP_UNIT];
        while (f->temp_size < off) {
            sqlite3_int64 gap = off - f->temp_size;
            int rc = temp_write(f, zeros, gap > TEMP_UNIT ? TEMP_UNIT : (int)gap, f->temp_size);
            if (rc != SQLITE_OK) return rc;
        }
    }
    int done = 0;
    while (done < amt) {
        sqlite3_int64 pos = off + done, unit = pos / TEMP_UNIT;
        int in_unit = (int)(pos % TEMP_UNIT), n = TEMP_UNIT - in_unit < amt - done ? TEMP_UNIT - in_unit : amt - done;
        size_t len = 0;
        int rc = SQLITE_OK;
        if (in_unit == 0 && (n == TEMP_UNIT || pos + n >= f->temp_size)) memset(f->scratch, 0, TEMP_UNIT), len = 0;
        else rc = temp_unit_load(f, unit, f->scratch, &len);
        if (rc != SQLITE_OK) return rc;
        memcpy(f->scratch + in_unit, buf + done, (size_t)n);
        if ((size_t)(in_unit + n) > len) len = (size_t)(in_unit + n);
        if ((rc = temp_unit_store(f, unit, f->scratch, len)) != SQLITE_OK) return rc;
        if (pos + n > f->temp_size) f->temp_size = pos + n;
        done += n;
    }
    return SQLITE_OK;
}

static int temp_truncate(sr_file_t *f, sqlite3_int64 size)
{
    if (size >= f->temp_size) return f->lower->pMethods->xTruncate(f->lower, size);
    sqlite3_int64 unit = size / TEMP_UNIT;
    size_t cut = (size_t)(size % TEMP_UNIT), len = 0;
    int rc = cut ? temp_unit_load(f, unit, f->scratch, &len) : SQLITE_OK;
    if (rc == SQLITE_OK) rc = f->lower->pMethods->xTruncate(f->lower, size);
    if (rc != SQLITE_OK) return rc;
    f->temp_size = size;
    return cut ? temp_unit_store(f, unit, f->scratch, cut) : SQLITE_OK; /* re-encrypt the shortened unit */
}

/* ---- io methods ------------------------------------------------------------------------ */

static int x_close(sqlite3_file *file)
{
    sr_file_t *f = (sr_file_t *)file;
    int rc = f->lower_open ? f->lower->pMethods->xClose(f->lower) : SQLITE_OK;
    sr_tde_pagectx_free(f->pc);
    sr_tde_ts_release(f->ts);
    sr_tde_xts_free(f->xts);
    free(f->scratch);
    return rc;
}

static int x_read(sqlite3_file *file, void *buf, int amt, sqlite3_int64 off)
{
    sr_file_t *f = (sr_file_t *)file;
    switch (f->role) {
    case ROLE_MAIN:
    case ROLE_MAIN_PASSTHROUGH: return main_read(f, buf, amt, off);
    case ROLE_WAL: return wal_read(f, buf, amt, off);
    case ROLE_JOURNAL: return journal_read(f, buf, amt, off);
    case ROLE_TEMP: return temp_read(f, buf, amt, off);
    case ROLE_PASS: break;
    }
    return f->lower->pMethods->xRead(f->lower, buf, amt, off);
}

static int x_write(sqlite3_file *file, const void *buf, int amt, sqlite3_int64 off)
{
    sr_file_t *f = (sr_file_t *)file;
    switch (f->role) {
    case ROLE_MAIN:
    case ROLE_MAIN_PASSTHROUGH: return main_write(f, buf, amt, off);
    case ROLE_WAL: return wal_write(f, buf, amt, off);
    case ROLE_JOURNAL: return journal_write(f, buf, amt, off);
    case ROLE_TEMP: return temp_write(f, buf, amt, off);
    case ROLE_PASS: break;
    }
    return f->lower->pMethods->xWrite(f->lower, buf, amt, off);
}

static int is_main(const sr_file_t *f) { return f->role == ROLE_MAIN || f->role == ROLE_MAIN_PASSTHROUGH; }

static int x_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    sr_file_t *f = (sr_file_t *)file;
    if (f->role == ROLE_TEMP) return temp_truncate(f, size);
    return f->lower->pMethods->xTruncate(f->lower, size + (is_main(f) ? SHIFT : 0));
}

static int x_sync(sqlite3_file *file, int flags)
{
    sr_file_t *f = (sr_file_t *)file;
    return f->lower->pMethods->xSync(f->lower, flags);
}

static int x_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    sr_file_t *f = (sr_file_t *)file;
    if (f->role == ROLE_TEMP) {
        *size = f->temp_size;
        return SQLITE_OK;
    }
    int rc = f->lower->pMethods->xFileSize(f->lower, size);
    if (rc == SQLITE_OK && is_main(f)) *size = *size > SHIFT ? *size - SHIFT : 0;
    return rc;
}

static int x_lock(sqlite3_file *file, int lock)
{
    sr_file_t *f = (sr_file_t *)file;
    return f->lower->pMethods->xLock(f->lower, lock);
}

static int x_unlock(sqlite3_file *file, int lock)
{
    sr_file_t *f = (sr_file_t *)file;
    return f->lower->pMethods->xUnlock(f->lower, lock);
}

static int x_check_reserved_lock(sqlite3_file *file, int *out)
{
    sr_file_t *f = (sr_file_t *)file;
    return f->lower->pMethods->xCheckReservedLock(f->lower, out);
}

static int x_file_control(sqlite3_file *file, int op, void *arg)
{
    sr_file_t *f = (sr_file_t *)file;
    if (op == SQLITE_FCNTL_MMAP_SIZE && f->role != ROLE_PASS) {
        *(sqlite3_int64 *)arg = 0; /* pages must pass through xRead to be decrypted */
        return SQLITE_OK;
    }
    if (op == SQLITE_FCNTL_SIZE_HINT && is_main(f)) {
        sqlite3_int64 hint = *(sqlite3_int64 *)arg + SHIFT;
        return f->lower->pMethods->xFileControl(f->lower, op, &hint);
    }
    if (op == SQLITE_FCNTL_SIZE_HINT && f->role == ROLE_TEMP) return SQLITE_OK;
    return f->lower->pMethods->xFileControl(f->lower, op, arg);
}

static int x_sector_size(sqlite3_file *file)
{
    sr_file_t *f = (sr_file_t *)file;
    return f->lower->pMethods->xSectorSize(f->lower);
}

static int x_device_characteristics(sqlite3_file *file)
{
    sr_file_t *f = (sr_file_t *)file;
    int caps = f->lower->pMethods->xDeviceCharacteristics(f->lower);
#ifdef SQLITE_IOCAP_SUBPAGE_READ
    caps &= ~SQLITE_IOCAP_SUBPAGE_READ; /* pages are decrypted whole */
#endif
    return caps;
}

static int x_shm_map(sqlite3_file *file, int pg, int pgsz, int extend, void volatile **pp)
{
    sr_file_t *f = (sr_file_t *)file;
    return f->lower->pMethods->xShmMap(f->lower, pg, pgsz, extend, pp);
}

static int x_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    sr_file_t *f = (sr_file_t *)file;
    return f->lower->pMethods->xShmLock(f->lower, offset, n, flags);
}

static void x_shm_barrier(sqlite3_file *file)
{
    sr_file_t *f = (sr_file_t *)file;
    f->lower->pMethods->xShmBarrier(f->lower);
}

static int x_shm_unmap(sqlite3_file *file, int del)
{
    sr_file_t *f = (sr_file_t *)file;
    return f->lower->pMethods->xShmUnmap(f->lower, del);
}

/* No memory-mapped pages: they would be ciphertext. SQLite falls back to xRead. */
static int x_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **pp)
{
    (void)file, (void)off, (void)amt;
    *pp = NULL;
    return SQLITE_OK;
}

static int x_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
    (void)file, (void)off, (void)p;
    return SQLITE_OK;
}

static const sqlite3_io_methods io_methods = {
    3,          x_close,       x_read,        x_write,   x_truncate,  x_sync,
    x_file_size, x_lock,       x_unlock,      x_check_reserved_lock, x_file_control,
    x_sector_size, x_device_characteristics, x_shm_map, x_shm_lock, x_shm_barrier,
    x_shm_unmap, x_fetch,      x_unfetch,
};

/* ---- opening ------------------------------------------------------------------------------ */

/* Who opened which tablespace: an audit event for every successful open.
 * If it cannot be recorded the open fails (fail closed). */
static sr_err_t audit_open(sr_file_t *f, const char *path, sr_keyprov_t *prov)
{
    char object[SR_UUID_STR_LEN + 1], detail[4200];
    sr_uuid_format(sr_tde_space_id(sr_tde_ts_space(f->ts)), object);
    snprintf(detail, sizeof detail, "pid=%ld path=%s key=%s", (long)getpid(), path, sr_keyprov_description(prov));
    sr_err_t rc = sr_event_emit(&(sr_event_t){.component = "tde", .event = "tablespace.open", .subject = event_subject(),
                                              .object = object, .outcome = "success", .source = "local",
                                              .detail = detail});
    if (rc != SR_OK) sr_err_set(rc, "cannot record the open in the audit log (%s): refusing it", sr_err_detail());
    return rc;
}

static int open_main(sqlite3_vfs *vfs, sr_file_t *f, const char *zName, int flags)
{
    if (is_passthrough_vfs(vfs)) {
        f->role = ROLE_MAIN_PASSTHROUGH;
        sqlite3_int64 size = 0;
        int rc = f->lower->pMethods->xFileSize(f->lower, &size);
        if (rc == SQLITE_OK && size == 0 && (flags & SQLITE_OPEN_READWRITE)) {
            static const uint8_t zeros[SHIFT];
            rc = f->lower->pMethods->xWrite(f->lower, zeros, SHIFT, 0);
        }
        return rc;
    }
    if (sqlite3_uri_boolean(zName, "plaintext", 0)) {
        f->role = ROLE_PASS;
        return SQLITE_OK;
    }
    sr_keyprov_t *prov = NULL;
    if (provider_for_open(zName, &prov) != SR_OK) return log_failure(SQLITE_CANTOPEN, f, "no key");
    sr_tde_ts_options_t opts = {.may_create = (flags & SQLITE_OPEN_CREATE) != 0};
    const char *cipher = sqlite3_uri_parameter(zName, "cipher");
    if (cipher && sr_tde_cipher_parse(cipher, &opts.cipher) != SR_OK) return log_failure(SQLITE_MISUSE, f, "cipher=");
    opts.page_size = (uint32_t)sqlite3_uri_int64(zName, "page_size", DEFAULT_PAGE);
    if (!sr_tde_page_size_valid(opts.page_size)) {
        sr_err_set(SR_ERR_INVALID_ARG, "page_size=%u is not a power of two in 512..65536", opts.page_size);
        return log_failure(SQLITE_MISUSE, f, "page_size=");
    }
    sr_err_t rc = sr_tde_ts_open(zName, prov, &opts, &f->ts);
    if (rc == SR_ERR_NOMEM) return SQLITE_NOMEM;
    if (rc == SR_ERR_IO) return log_failure(SQLITE_IOERR, f, "cannot open the tablespace");
    if (rc != SR_OK) {
        char detail[1024];
        snprintf(detail, sizeof detail, "pid=%ld %s", (long)getpid(), sr_err_detail());
        sr_event_emit(&(sr_event_t){.component = "tde", .event = "tablespace.open", .subject = event_subject(),
                                    .object = zName, .outcome = "failure", .source = "local", .detail = detail});
        return log_failure(SQLITE_NOTADB, f, rc == SR_ERR_TDE_WRONG_KEY ? "wrong key" : "not an encrypted database");
    }
    f->role = ROLE_MAIN;
    if (audit_open(f, zName, prov) != SR_OK) return log_failure(SQLITE_CANTOPEN, f, "audit log unavailable");
    return sr_tde_pagectx_new(sr_tde_ts_space(f->ts), &f->pc) == SR_OK ? SQLITE_OK : SQLITE_NOMEM;
}

/* WAL and journal share their database's tablespace. */
static int open_companion(sr_file_t *f, const char *zName, int flags)
{
    sqlite3_file *db = sqlite3_database_file_object(zName);
    sr_file_t *main = db && db->pMethods == &io_methods ? (sr_file_t *)db : NULL;
    if (!main) {
        sr_err_set(SR_ERR_INTERNAL, "cannot find the database this WAL or journal belongs to");
        return log_failure(SQLITE_CANTOPEN, f, "open");
    }
    if (main->role != ROLE_MAIN) {
        f->role = ROLE_PASS; /* plaintext=1 database or the benchmark's pass-through shim */
        return SQLITE_OK;
    }
    f->ts = sr_tde_ts_retain(main->ts);
    f->role = flags & SQLITE_OPEN_WAL ? ROLE_WAL : ROLE_JOURNAL;
    f->wal_page = sr_tde_ts_page_size(f->ts);
    return sr_tde_pagectx_new(sr_tde_ts_space(f->ts), &f->pc) == SR_OK ? SQLITE_OK : SQLITE_NOMEM;
}

static int x_open(sqlite3_vfs *vfs, sqlite3_filename zName, sqlite3_file *file, int flags, int *out_flags)
{
    sr_file_t *f = (sr_file_t *)file;
    memset(f, 0, sizeof *f);
    f->lower = (sqlite3_file *)(f + 1);
    f->name = zName;
    sqlite3_vfs *lo = lower_vfs(vfs);
    int rc = lo->xOpen(lo, zName, f->lower, flags, out_flags);
    if (rc != SQLITE_OK) return rc;
    f->lower_open = 1;
    size_t scratch = SR_TDE_MAX_PAGE + WAL_FRAME_HDR;
    if (!(f->scratch = malloc(scratch))) rc = SQLITE_NOMEM;
    else if (flags & SQLITE_OPEN_MAIN_DB) rc = open_main(vfs, f, zName, flags);
    else if (flags & (SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL)) rc = open_companion(f, zName, flags);
    else if (flags & SQLITE_OPEN_SUPER_JOURNAL) f->role = ROLE_PASS;
    else if (is_passthrough_vfs(vfs)) f->role = ROLE_PASS;
    else if (sr_tde_xts_new(&f->xts) == SR_OK) f->role = ROLE_TEMP;
    else rc = SQLITE_NOMEM;
    if (rc == SQLITE_OK && f->role == ROLE_TEMP) rc = f->lower->pMethods->xFileSize(f->lower, &f->temp_size);
    if (rc != SQLITE_OK) {
        x_close(file);
        file->pMethods = NULL;
        return rc;
    }
    file->pMethods = &io_methods;
    return SQLITE_OK;
}

/* ---- the VFS object ------------------------------------------------------------------------ */

static int x_delete(sqlite3_vfs *v, const char *name, int sync) { return lower_vfs(v)->xDelete(lower_vfs(v), name, sync); }
static int x_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    return lower_vfs(v)->xAccess(lower_vfs(v), name, flags, out);
}
static int x_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    return lower_vfs(v)->xFullPathname(lower_vfs(v), name, n, out);
}
static void *x_dl_open(sqlite3_vfs *v, const char *path) { return lower_vfs(v)->xDlOpen(lower_vfs(v), path); }
static void x_dl_error(sqlite3_vfs *v, int n, char *msg) { lower_vfs(v)->xDlError(lower_vfs(v), n, msg); }
static void (*x_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    return lower_vfs(v)->xDlSym(lower_vfs(v), h, sym);
}
static void x_dl_close(sqlite3_vfs *v, void *h) { lower_vfs(v)->xDlClose(lower_vfs(v), h); }
static int x_randomness(sqlite3_vfs *v, int n, char *out) { return lower_vfs(v)->xRandomness(lower_vfs(v), n, out); }
static int x_sleep(sqlite3_vfs *v, int us) { return lower_vfs(v)->xSleep(lower_vfs(v), us); }
static int x_current_time(sqlite3_vfs *v, double *t) { return lower_vfs(v)->xCurrentTime(lower_vfs(v), t); }
static int x_get_last_error(sqlite3_vfs *v, int n, char *msg)
{
    return lower_vfs(v)->xGetLastError ? lower_vfs(v)->xGetLastError(lower_vfs(v), n, msg) : 0;
}
static int x_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *t)
{
    return lower_vfs(v)->xCurrentTimeInt64(lower_vfs(v), t);
}

static int vfs_setup(sqlite3_vfs *vfs, const char *name, int make_default, int *registered)
{
    if (*registered) return make_default ? sqlite3_vfs_register(vfs, 1) : SQLITE_OK;
    sqlite3_vfs *lo = sqlite3_vfs_find(NULL);
    if (!lo) return SQLITE_ERROR;
    if (lo == &vfs_main || lo == &vfs_pass) lo = lower_vfs(lo);
    *vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(sr_file_t) + lo->szOsFile,
        .mxPathname = lo->mxPathname,
        .zName = name,
        .pAppData = lo,
        .xOpen = x_open,
        .xDelete = x_delete,
        .xAccess = x_access,
        .xFullPathname = x_full_pathname,
        .xDlOpen = x_dl_open,
        .xDlError = x_dl_error,
        .xDlSym = x_dl_sym,
        .xDlClose = x_dl_close,
        .xRandomness = x_randomness,
        .xSleep = x_sleep,
        .xCurrentTime = x_current_time,
        .xGetLastError = x_get_last_error,
        .xCurrentTimeInt64 = x_current_time_int64,
    };
    int rc = sqlite3_vfs_register(vfs, make_default);
    if (rc == SQLITE_OK) *registered = 1;
    return rc;
}

int sr_sqlite_register(sr_keyprov_t *provider, int make_default)
{
    if (sr_secure_init() != SR_OK) return SQLITE_ERROR;
    pthread_mutex_lock(&vfs_lock);
    if (provider) default_provider = provider;
    int rc = vfs_setup(&vfs_main, "strongroom", make_default, &registered_main);
    pthread_mutex_unlock(&vfs_lock);
    return rc;
}

int sr_sqlite_register_passthrough(void)
{
    pthread_mutex_lock(&vfs_lock);
    int rc = vfs_setup(&vfs_pass, "strongroom-passthrough", 0, &registered_pass);
    pthread_mutex_unlock(&vfs_lock);
    return rc;
}
