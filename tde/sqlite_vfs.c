/*
 * sqlite_vfs.c — the "strongroom" SQLite VFS: a shim over the default VFS that
 * encrypts and authenticates every page SQLite writes (SQLite's I/O path:
 * https://sqlite.org/vfs.html and os_unix.c; docs/tde-format.md).
 *
 * What each file becomes on disk (docs/tde-format.md has the byte layouts):
 *   main database   8192-byte key header, then SQLite's pages, each encrypted
 *                   with the page cipher (kind DB, location = page number).
 *                   Every offset SQLite uses is shifted by 8192. Reads of any
 *                   length and offset are served from decrypted pages.
 *   WAL             32-byte header and 24-byte frame headers as SQLite wrote
 *                   them; each frame's page encrypted (kind WAL, location =
 *                   frame index) and bound to its frame header's page number,
 *                   commit size and salts, so a frame renumbered, turned into
 *                   a commit or carried into another WAL generation fails.
 *   rollback journal  headers and record page numbers/checksums as written;
 *                   every journal header carries, in bytes SQLite leaves
 *                   unused, a random journal id [28, 40) and a seal [40, 72)
 *                   over its 28 bytes and the id, so a journal strongroom did
 *                   not write is never played back; each page image is
 *                   encrypted (kind JOURNAL, location = offset) and bound to its
 *                   record's page number and to the id of the journal's first
 *                   header (one journal instance).
 *   temp db, temp/sub-journal, sorter, transient files: AES-256-XTS under an
 *                   ephemeral per-file key, 4096-byte units, size preserving.
 *   super-journal, -shm: as SQLite wrote them (file names; the WAL index).
 *
 * New databases: SQLite builds every page with room for the 32-byte trailer
 * once the connection asks for 32 reserved bytes per page. SQLite hands each
 * main database file its connection (SQLITE_FCNTL_PDB); at the first shared
 * lock on a tablespace with no pages yet, this shim finds the schema name of
 * the file in that connection and asks for the reserve there
 * (SQLITE_FCNTL_RESERVE_BYTES), the documented way, for main and attached
 * databases alike. Nothing else is fixed: PRAGMA page_size and auto_vacuum
 * work on a new encrypted database as on any other, and the first page
 * written records the page size in the key header. Afterwards the page size
 * is fixed (every page is encrypted at that size): a PRAGMA page_size that
 * asks for another is refused with an error (SQLITE_FCNTL_PRAGMA), and so is
 * any write of another size, so a page-size change never leaves pages
 * encrypted at the wrong size.
 *
 * A database whose header says pages were written but whose file holds none
 * was cut behind SQLite's back: it is refused (SQLITE_CORRUPT), not opened
 * as empty. The flag is cleared, before the cut, when SQLite itself empties
 * the file (rolling back a new database's first transaction).
 *
 * Keys: URI keyfile=PATH, kms=CONFIG or agent=SOCKET, else
 * $STRONGROOM_KEYFILE, $STRONGROOM_KMS or $STRONGROOM_AGENT, else the
 * provider given to sr_sqlite_register(). Providers are cached per file and
 * reloaded when it changes (master-key rotation).
 */
#include "sr_sqlite.h"
#include "tablespace.h"
#include "tde.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHIFT SR_TDE_HEADER_REGION
#define WAL_HDR 32
#define WAL_FRAME_HDR 24
#define WAL_FRAME_BIND 16 /* page number, commit size, salt-1, salt-2 */
#define JOURNAL_HDR 28
#define JOURNAL_ID 12                                                   /* random, per header */
#define JOURNAL_SEALED (JOURNAL_HDR + JOURNAL_ID + SR_TDE_PAGE_TRAILER) /* header + id + seal */
#define JOURNAL_BIND (4 + JOURNAL_ID)                                   /* page number + first header's id */
#define TEMP_UNIT 4096
#define WARN_PER_SECOND 10

static const uint8_t journal_magic[8] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};

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
    int wal_page_known;      /* WAL: this handle has read or written the WAL header */
    sqlite3_int64 wal_hdr_frame; /* WAL: frame whose header is cached (-1: none) */
    uint8_t wal_hdr[WAL_FRAME_HDR];
    sqlite3_int64 jrec_off;  /* JOURNAL: offset of the last 4-byte write (a record's page number) */
    uint8_t jrec_pgno[4];
    int jid_valid;           /* JOURNAL: the first header's journal id is cached */
    uint8_t jid[JOURNAL_ID];
    sqlite3 *db;             /* MAIN: the connection (SQLITE_FCNTL_PDB) */
    int lock;                /* MAIN: the file lock this handle holds (SQLITE_LOCK_*) */
    int connections;         /* MAIN: PDB hints seen: more than one means a shared cache */
    int reserve_asked;       /* MAIN: the connection was asked for the trailer's reserve */
    uint8_t *scratch;        /* one frame (header + page) or two temp units */
    uint8_t *merge;          /* MAIN, WAL: a page being assembled from a partial write (allocated on first use) */
    const char *name;        /* for messages; NULL for anonymous temp files */
    struct sr_file *next_main; /* main databases, plaintext ones too: in the list of open ones */
    int listed;                /* in that list */
    dev_t dev;                 /* listed: the file's identity */
    ino_t ino;
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
static sr_file_t *open_mains; /* under vfs_lock: whose WAL or journal is being opened */
static sr_keyprov_t *default_provider;
static sqlite3_vfs vfs_main, vfs_pass;
static int registered_main;
#ifdef SR_BENCH_PASSTHROUGH
static int registered_pass;
#endif

static sqlite3_vfs *lower_vfs(sqlite3_vfs *v) { return (sqlite3_vfs *)v->pAppData; }
static int is_passthrough_vfs(sqlite3_vfs *v) { return v == &vfs_pass; }
static int lower_read(sr_file_t *f, void *buf, int amt, sqlite3_int64 off)
{
    return f->lower->pMethods->xRead(f->lower, buf, amt, off);
}
static int lower_write(sr_file_t *f, const void *buf, int amt, sqlite3_int64 off)
{
    return f->lower->pMethods->xWrite(f->lower, buf, amt, off);
}

/* ---- errors ------------------------------------------------------------------------ */

/* Repeated failures (a damaged file read in a loop) must not flood stderr:
 * at most WARN_PER_SECOND lines a second, then one line counting the rest.
 * SQLite's error log and the audit event stay one per failure. */
static int warning_allowed(unsigned *suppressed_out)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static time_t window;
    static unsigned in_window, suppressed;
    time_t now = time(NULL);
    pthread_mutex_lock(&lock);
    if (now != window) window = now, in_window = 0;
    int ok = in_window < WARN_PER_SECOND;
    if (ok) in_window++, *suppressed_out = suppressed, suppressed = 0;
    else suppressed++;
    pthread_mutex_unlock(&lock);
    return ok;
}

static void warn(const char *fmt, ...) SR_PRINTF(1, 2);
static void warn(const char *fmt, ...)
{
    unsigned suppressed = 0;
    if (!warning_allowed(&suppressed)) return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (suppressed) sr_log(SR_LOG_WARN, "strongroom: (%u similar warnings suppressed)", suppressed);
    sr_log(SR_LOG_WARN, "%s", line);
}

/* To SQLite's error log (what applications capture) and to ours (stderr by
 * default: a shell user sees why the open failed, not only "not a database"). */
static int log_failure(int sqlite_rc, const sr_file_t *f, const char *what)
{
    const char *name = f && f->name ? f->name : "(temp file)";
    sqlite3_log(sqlite_rc, "strongroom: %s: %s: %s", name, what, sr_err_detail());
    warn("strongroom: %s: %s: %s", name, what, sr_err_detail());
    return sqlite_rc;
}

static void tde_event(const sr_file_t *f, const char *event, const char *detail)
{
    (void)sr_tde_event(event, f->name, 0, detail);
}

static int rewrite_journal_exists(const sr_file_t *f);

static int page_auth_failure(sr_file_t *f)
{
    if (f->role == ROLE_MAIN && rewrite_journal_exists(f)) { /* a rewrite interrupted by a crash: tdectl finishes it */
        char why[512];
        snprintf(why, sizeof why, "%s", sr_err_detail());
        sr_err_set(sr_err_last(), "%s (a page rewrite was interrupted: run tdectl rekey --rewrite on it to finish)", why);
    }
    tde_event(f, "page.auth_failed", sr_err_detail());
    return log_failure(SQLITE_IOERR_DATA, f, "page failed authentication");
}

/* ---- key providers ---------------------------------------------------------------- */

static int same_file(const provider_entry_t *e, const struct stat *st)
{
    return e->dev == st->st_dev && e->ino == st->st_ino && e->mtime.tv_sec == st->st_mtim.tv_sec &&
           e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* The cached provider for a key file or a KMS configuration (`open` makes
 * one), reloaded if the file changed. */
static sr_err_t provider_for_file(const char *path, sr_err_t (*open_fn)(const char *, sr_keyprov_t **),
                                  sr_keyprov_t **out)
{
    struct stat st;
    if (stat(path, &st) != 0) return sr_err_set_errno(SR_ERR_NOT_FOUND, errno, "cannot open key file %s", path);
    pthread_mutex_lock(&vfs_lock);
    provider_entry_t *e = providers;
    while (e && !(strcmp(e->path, path) == 0 && same_file(e, &st))) e = e->next;
    sr_err_t rc = SR_OK;
    if (!e) {
        sr_keyprov_t *kp = NULL;
        rc = open_fn(path, &kp);
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

/* URI keyfile=, kms=, agent= (a socket), else $STRONGROOM_KEYFILE, _KMS,
 * _AGENT, else the registered default provider. */
static sr_err_t provider_for_open(const char *zName, sr_keyprov_t **out)
{
    const char *keyfile = sqlite3_uri_parameter(zName, "keyfile"), *kms = sqlite3_uri_parameter(zName, "kms");
    const char *agent = sqlite3_uri_parameter(zName, "agent");
    if (keyfile && *keyfile) return provider_for_file(keyfile, sr_keyprov_keyfile_open, out);
    if (kms && *kms) return provider_for_file(kms, sr_keyprov_kmip_open, out);
    if (agent && *agent) return provider_for_file(agent, sr_keyprov_agent_open, out);
    keyfile = getenv("STRONGROOM_KEYFILE"), kms = getenv("STRONGROOM_KMS"), agent = getenv("STRONGROOM_AGENT");
    if (keyfile && *keyfile) return provider_for_file(keyfile, sr_keyprov_keyfile_open, out);
    if (kms && *kms) return provider_for_file(kms, sr_keyprov_kmip_open, out);
    if (agent && *agent) return provider_for_file(agent, sr_keyprov_agent_open, out);
    pthread_mutex_lock(&vfs_lock);
    *out = default_provider;
    pthread_mutex_unlock(&vfs_lock);
    if (*out) return SR_OK;
    return sr_err_set(SR_ERR_NOT_FOUND, "no key for an encrypted database: add keyfile=PATH or kms=CONFIG to the URI, "
                      "set STRONGROOM_KEYFILE or STRONGROOM_KMS, or register a key provider (create a key with: "
                      "tdectl keygen PATH)");
}

/* ---- URI parameters: an invalid value is an error naming the parameter ------------- */

/* page_size= in the URI meant "fix the page size at creation" in earlier
 * builds; PRAGMA page_size now works as in SQLite, so the parameter is
 * refused rather than silently ignored. */
static sr_err_t uri_page_size_refused(const char *zName)
{
    const char *v = sqlite3_uri_parameter(zName, "page_size");
    if (!v) return SR_OK;
    return sr_err_set(SR_ERR_INVALID_ARG, "URI parameter page_size=%s is not used: run PRAGMA page_size=N before the "
                      "first table is created, as with any SQLite database", v);
}

static sr_err_t uri_plaintext(const char *zName, int *out)
{
    const char *v = sqlite3_uri_parameter(zName, "plaintext");
    *out = 0;
    if (v && sr_parse_bool(v, out) != SR_OK)
        return sr_err_set(SR_ERR_INVALID_ARG, "URI parameter plaintext=%s: 1 or 0 (true/false, yes/no, on/off)", v);
    return SR_OK;
}

/* ---- main database ------------------------------------------------------------------ */

/* Before decrypting, make sure the page's key version is loaded (another
 * process may have rolled or rotated the key since this one opened). */
static sr_err_t ensure_key_loaded(sr_file_t *f, const uint8_t *page, size_t page_size)
{
    uint32_t v = sr_tde_page_key_version(page, page_size);
    if (v == 0 || sr_tde_space_has_key(sr_tde_ts_space(f->ts), v)) return SR_OK;
    sr_err_t rc = sr_tde_ts_refresh(f->ts);
    if (rc != SR_OK) warn("strongroom: %s: cannot reload the key header: %s", f->name, sr_err_detail());
    return rc;
}

static int decrypt_page(sr_file_t *f, const sr_tde_place_t *place, uint8_t *page, size_t page_size)
{
    (void)ensure_key_loaded(f, page, page_size);
    return sr_tde_page_decrypt(f->pc, place, page, page_size) == SR_OK ? SQLITE_OK : page_auth_failure(f);
}

/* The file holds no page although the header says pages were written:
 * someone cut it. Another process may have emptied it legitimately (and
 * cleared the flag), so the header is read again before refusing. */
static int main_check_not_cut(sr_file_t *f)
{
    if (!sr_tde_ts_has_pages(f->ts)) return SQLITE_OK;
    if (sr_tde_ts_refresh(f->ts) != SR_OK) return log_failure(SQLITE_IOERR_READ, f, "cannot read the key header");
    if (!sr_tde_ts_has_pages(f->ts)) return SQLITE_OK;
    sr_err_set(SR_ERR_TRUNCATED, "the key header says SQLite pages were written but the file holds none: it was cut "
               "(refusing to open it as an empty database; restore it from a backup)");
    tde_event(f, "tablespace.truncated", sr_err_detail());
    return log_failure(SQLITE_CORRUPT, f, "database file truncated");
}

/* Page pgno (1-based) of size ps, decrypted into buf. SQLITE_IOERR_SHORT_READ
 * with zeros past the end of the file, as SQLite expects. */
static int main_read_page(sr_file_t *f, uint8_t *buf, uint32_t ps, sqlite3_int64 pgno)
{
    int rc = lower_read(f, buf, (int)ps, SHIFT + (pgno - 1) * ps);
    if (rc == SQLITE_IOERR_SHORT_READ) {
        int empty = 1;
        for (uint32_t i = 0; i < ps && empty; i++) empty = buf[i] == 0;
        if (empty) return rc;
        sr_err_set(SR_ERR_TDE_PAGE_AUTH, "database page %lld is cut short (truncated file)", (long long)pgno);
        return page_auth_failure(f);
    }
    if (rc != SQLITE_OK || f->role == ROLE_MAIN_PASSTHROUGH) return rc;
    sr_tde_place_t place = {.kind = SR_TDE_FILE_DB, .location = (uint64_t)pgno};
    /* While tdectl rekey --rewrite writes a batch in place (its journal
     * exists), a page may be read half-written: read it again. */
    for (int tries = 0;; tries++) {
        (void)ensure_key_loaded(f, buf, ps);
        if (sr_tde_page_decrypt(f->pc, &place, buf, ps) == SR_OK) return SQLITE_OK;
        if (tries == 20 || !rewrite_journal_exists(f)) return page_auth_failure(f);
        usleep(500);
        if ((rc = lower_read(f, buf, (int)ps, SHIFT + (pgno - 1) * ps)) != SQLITE_OK) return rc;
    }
}

static int main_read(sr_file_t *f, uint8_t *buf, int amt, sqlite3_int64 off)
{
    if (f->role == ROLE_MAIN_PASSTHROUGH) return lower_read(f, buf, amt, off + SHIFT);
    /* While this process has seen no page, another one may write the first
     * and with it the page size: take in the header first. (Once pages
     * exist the page size cannot change.) */
    if (!sr_tde_ts_has_pages(f->ts) && sr_tde_ts_refresh(f->ts) != SR_OK)
        return log_failure(SQLITE_IOERR_READ, f, "cannot read the key header");
    uint32_t ps = sr_tde_ts_page_size(f->ts);
    if (amt == (int)ps && off % ps == 0) return main_read_page(f, buf, ps, off / ps + 1);
    sqlite3_int64 size = 0;
    int rc = f->lower->pMethods->xFileSize(f->lower, &size);
    if (rc != SQLITE_OK) return rc;
    if (size <= SHIFT) { /* no pages: a new database, or one cut short */
        if ((rc = main_check_not_cut(f)) != SQLITE_OK) return rc;
        memset(buf, 0, (size_t)amt);
        return SQLITE_IOERR_SHORT_READ;
    }
    /* Any other length or offset (a header read, .recover, several pages at
     * once): every page it touches, decrypted whole, then copied. */
    int done = 0, short_read = 0;
    while (done < amt) {
        sqlite3_int64 pos = off + done, pgno = pos / ps + 1, in_page = pos % ps;
        int n = (int)(ps - in_page) < amt - done ? (int)(ps - in_page) : amt - done;
        rc = main_read_page(f, f->scratch, ps, pgno);
        if (rc == SQLITE_IOERR_SHORT_READ) short_read = 1;
        else if (rc != SQLITE_OK) return rc;
        memcpy(buf + done, f->scratch + in_page, (size_t)n);
        done += n;
    }
    return short_read ? SQLITE_IOERR_SHORT_READ : SQLITE_OK;
}

static int refuse_write(sr_file_t *f, const char *why)
{
    sr_err_set(SR_ERR_UNSUPPORTED, "%s", why);
    return log_failure(SQLITE_IOERR_WRITE, f, "refused write");
}

#define PAGE_SIZE_FIXED "the page size of an encrypted database is fixed once its first page is written " \
                        "(every page is encrypted at that size): a page-size change (PRAGMA page_size + VACUUM, " \
                        "or a backup from a database of another page size) is refused; copy the data into a " \
                        "new encrypted database whose page size is set before its first table instead"

/* One whole page, encrypted at its place. */
static int main_write_page(sr_file_t *f, const uint8_t *page, uint32_t ps, sqlite3_int64 pgno)
{
    if (pgno == 1 && memcmp(page, "SQLite format 3", 16) == 0 && page[20] < SR_TDE_PAGE_TRAILER) {
        sr_err_set(SR_ERR_INVALID_ARG, "page 1 reserves %u bytes per page, an encrypted database needs %d (a plaintext "
                   "database cannot be copied in page by page; use tdectl encrypt)", page[20], SR_TDE_PAGE_TRAILER);
        return log_failure(SQLITE_IOERR_WRITE, f, "refused write");
    }
    sr_tde_place_t place = {.kind = SR_TDE_FILE_DB, .location = (uint64_t)pgno};
    if (sr_tde_page_encrypt(f->pc, &place, page, f->scratch, ps) != SR_OK)
        return log_failure(SQLITE_IOERR_WRITE, f, "page encryption failed");
    int rc = lower_write(f, f->scratch, (int)ps, SHIFT + (pgno - 1) * ps);
    if (rc == SQLITE_OK && !sr_tde_ts_has_pages(f->ts) && sr_tde_ts_set_has_pages(f->ts, 1) != SR_OK)
        return log_failure(SQLITE_IOERR_WRITE, f, "cannot record in the key header that pages exist");
    return rc;
}

static uint8_t *merge_buffer(sr_file_t *f)
{
    if (!f->merge) f->merge = malloc(SR_TDE_MAX_PAGE);
    return f->merge;
}

/* The page size this write implies: page 1's header field when the write
 * holds page 1 (a multiplexor's later chunk files also start at offset 0,
 * with other pages: page 1 starts with SQLite's magic), else a whole
 * page-sized write's size while the database has no pages, else the
 * tablespace's. Another size once pages exist is refused. */
static int main_page_size(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off, uint32_t *ps)
{
    uint32_t want = sr_tde_ts_page_size(f->ts);
    if (off == 0 && amt >= 100 && memcmp(buf, "SQLite format 3", 16) == 0)
        want = (uint32_t)buf[16] << 8 | (uint32_t)buf[17] << 16;
    else if (!sr_tde_ts_has_pages(f->ts) && sr_tde_page_size_valid((size_t)amt) && off % amt == 0)
        want = (uint32_t)amt;
    if (!sr_tde_page_size_valid(want)) return refuse_write(f, "page 1 names an invalid page size");
    if (want != sr_tde_ts_page_size(f->ts)) {
        /* The first page of a new database sets the page size; afterwards it is fixed. */
        if (sr_tde_ts_has_pages(f->ts)) return refuse_write(f, PAGE_SIZE_FIXED);
        if (sr_tde_ts_set_page_size(f->ts, want) != SR_OK)
            return log_failure(SQLITE_IOERR_WRITE, f, "cannot record the page size in the key header");
    }
    *ps = want;
    return SQLITE_OK;
}

/* SQLite writes whole pages; a VFS stacked above (the crash simulator
 * flushing sectors) may write any span: whole pages in it are encrypted as
 * usual, a partial one is read, merged and encrypted whole. */
static int main_write(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    if (f->role == ROLE_MAIN_PASSTHROUGH) return lower_write(f, buf, amt, off + SHIFT);
    uint32_t ps = 0;
    int rc = main_page_size(f, buf, amt, off, &ps);
    if (rc != SQLITE_OK) return rc;
    if (amt == (int)ps && off % ps == 0) return main_write_page(f, buf, ps, off / ps + 1);
    int done = 0;
    while (done < amt && rc == SQLITE_OK) {
        sqlite3_int64 pos = off + done, pgno = pos / ps + 1, in_page = pos % ps;
        int n = (int)(ps - in_page) < amt - done ? (int)(ps - in_page) : amt - done;
        if (n == (int)ps) {
            rc = main_write_page(f, buf + done, ps, pgno);
        } else {
            uint8_t *page = merge_buffer(f);
            if (!page) return SQLITE_NOMEM;
            rc = main_read_page(f, page, ps, pgno); /* zeros past the end */
            if (rc == SQLITE_IOERR_SHORT_READ) rc = SQLITE_OK;
            memcpy(page + in_page, buf + done, (size_t)n);
            if (rc == SQLITE_OK) rc = main_write_page(f, page, ps, pgno);
        }
        done += n;
    }
    return rc;
}

/* SQLITE_FCNTL_PRAGMA: another page size for a database whose pages exist
 * is an error the application sees, where SQLite would apply it at the next
 * VACUUM (which would be refused). In WAL mode SQLite ignores it, and so do
 * we (page 1's read version 2 says WAL). */
static int main_pragma(sr_file_t *f, char **arg)
{
    const char *name = arg[1], *value = arg[2];
    int64_t want = 0;
    uint8_t hdr[20];
    if (!value || f->role != ROLE_MAIN || strcasecmp(name, "page_size") != 0 || !sr_tde_ts_has_pages(f->ts))
        return SQLITE_NOTFOUND;
    if (main_read(f, hdr, sizeof hdr, 0) == SQLITE_OK && hdr[18] == 2) return SQLITE_NOTFOUND;
    if (sr_parse_int64(value, &want) != SR_OK || want < 0 || !sr_tde_page_size_valid((size_t)want) ||
        want == (int64_t)sr_tde_ts_page_size(f->ts))
        return SQLITE_NOTFOUND; /* SQLite ignores invalid sizes itself; the same size changes nothing */
    arg[0] = sqlite3_mprintf("strongroom: PRAGMA page_size=%s: %s (this database: %u)", value, PAGE_SIZE_FIXED,
                             sr_tde_ts_page_size(f->ts));
    return SQLITE_ERROR;
}

/* A tablespace with no pages yet: ask the connection that opened it for 32
 * reserved bytes per page, before SQLite builds page 1. The schema name is
 * the one whose file is this file ("main" is found even while the
 * connection is still being opened). */
static void ask_for_reserve(sr_file_t *f)
{
    if (f->reserve_asked || !f->db || sr_tde_ts_has_pages(f->ts)) return;
    const char *name = "main", *file = sqlite3_db_filename(f->db, name);
    for (int i = 1; (!file || strcmp(file, f->name) != 0) && (name = sqlite3_db_name(f->db, i)) != NULL; i++)
        file = sqlite3_db_filename(f->db, name);
    if (!name || !file || strcmp(file, f->name) != 0) return; /* an ATTACH still under way: at the first lock */
    int reserve = SR_TDE_PAGE_TRAILER;
    f->reserve_asked = 1;
    sqlite3_file_control(f->db, name, SQLITE_FCNTL_RESERVE_BYTES, &reserve);
}

/* SQLITE_FCNTL_PDB comes at the end of sqlite3BtreeOpen, where SQLite holds
 * no b-tree lock: the safe moment to ask. An attached database is not yet
 * among the connection's schemas then; it is asked at its first shared lock,
 * unless a shared cache puts several connections on this file (their b-tree
 * lock may be held then): a new encrypted database attached in shared-cache
 * mode gets no reserve, and SQLite's first write of it is refused. */
static void connection_hint(sr_file_t *f, sqlite3 *db)
{
    f->db = db;
    f->connections++;
    ask_for_reserve(f);
}

/* ---- WAL ------------------------------------------------------------------------------ */

/* The page size a WAL header names; a header that names none (torn, or
 * garbage a crash left) leaves the one in use. */
static void wal_take_header(sr_file_t *f, const uint8_t *h)
{
    uint32_t ps = sr_get_be32(h + 8);
    if (ps == 1) ps = 65536;
    if (sr_tde_page_size_valid(ps)) f->wal_page = ps, f->wal_page_known = 1;
    f->wal_hdr_frame = -1;
}

/* Before a handle touches frames it must know their size: a connection
 * writing to a WAL another one started takes the page size from the shared
 * index and never reads the WAL header itself. */
static int wal_know_page_size(sr_file_t *f)
{
    if (f->wal_page_known) return SQLITE_OK;
    uint8_t hdr[WAL_HDR];
    int rc = lower_read(f, hdr, WAL_HDR, 0);
    if (rc == SQLITE_OK) wal_take_header(f, hdr);
    return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_OK : rc; /* none yet: SQLite writes it first */
}

static sqlite3_int64 wal_frame_offset(const sr_file_t *f, sqlite3_int64 frame)
{
    return WAL_HDR + frame * (WAL_FRAME_HDR + (sqlite3_int64)f->wal_page);
}

/* Where an access falls: the frame index and the offset inside the frame. */
static void wal_locate(const sr_file_t *f, sqlite3_int64 off, sqlite3_int64 *frame, sqlite3_int64 *rel)
{
    sqlite3_int64 fsz = WAL_FRAME_HDR + f->wal_page;
    *frame = (off - WAL_HDR) / fsz;
    *rel = (off - WAL_HDR) % fsz;
}

static sr_tde_place_t wal_place(sqlite3_int64 frame, const uint8_t *frame_hdr)
{
    return (sr_tde_place_t){.kind = SR_TDE_FILE_WAL, .location = (uint64_t)frame, .bind = frame_hdr,
                            .bind_len = WAL_FRAME_BIND};
}

/* How many commit frames of the same WAL generation (same salts as `hdr`)
 * follow frame `frame`: the committed transactions a cut there discards. */
static int wal_commits_after(sr_file_t *f, sqlite3_int64 frame, const uint8_t *hdr)
{
    uint8_t next[WAL_FRAME_HDR];
    int commits = 0;
    for (sqlite3_int64 j = frame + 1; commits < 1000000; j++) {
        if (lower_read(f, next, WAL_FRAME_HDR, wal_frame_offset(f, j)) != SQLITE_OK) break;
        if (memcmp(next + 8, hdr + 8, 8) != 0) break; /* an older generation: the log ends before it */
        if (sr_get_be32(next + 4) != 0) commits++;
    }
    return commits;
}

/* A frame read during recovery (header + page) whose page fails
 * authentication is handed back with a zeroed page: SQLite's own frame
 * checksum then fails and recovery ends the log there, exactly as SQLite
 * does for a frame a crash tore. That is right for a crash: disks reorder
 * writes until a sync completes, so a crash during a commit can leave a
 * later frame (even the commit frame) written and an earlier one torn. It
 * is also all that damage or tampering inside committed history can
 * achieve: the log is cut there (docs/threat-model.md, cutting the WAL
 * short), the bad page is never applied, and the cut is reported loudly —
 * SQLite's error log, a WARN line and an audit event, naming the
 * transactions discarded when later commits exist. */
static int wal_recovery_frame(sr_file_t *f, uint8_t *frame_buf, sqlite3_int64 frame)
{
    sr_tde_place_t place = wal_place(frame, frame_buf);
    (void)ensure_key_loaded(f, frame_buf + WAL_FRAME_HDR, f->wal_page);
    if (sr_tde_page_decrypt(f->pc, &place, frame_buf + WAL_FRAME_HDR, f->wal_page) == SR_OK) return SQLITE_OK;
    int commits = wal_commits_after(f, frame, frame_buf);
    char detail[700];
    if (commits)
        snprintf(detail, sizeof detail, "wal frame %lld fails authentication (%s): the log ends before it and the %d "
                 "later committed transaction(s) in it are discarded (a crash that reordered writes, damage, or "
                 "tampering)", (long long)frame, sr_err_detail(), commits);
    else
        snprintf(detail, sizeof detail, "wal frame %lld fails authentication and no commit follows it: a write torn "
                 "by a crash, treated as the end of the log (%s)", (long long)frame, sr_err_detail());
    if (commits) /* SQLite's log keeps about 210 characters: what happened first */
        sqlite3_log(SQLITE_IOERR_DATA, "strongroom: wal frame %lld fails authentication: the log ends before it, %d "
                    "later commit(s) discarded (%s)", (long long)frame, commits, f->name ? f->name : "(wal)");
    warn("strongroom: %s: %s", f->name ? f->name : "(wal)", detail);
    tde_event(f, commits ? "wal.frames_discarded" : "wal.torn_frame", detail);
    memset(frame_buf + WAL_FRAME_HDR, 0, f->wal_page);
    return SQLITE_OK;
}

/* The whole frame `frame`, page decrypted, into f->scratch. */
static int wal_load_frame(sr_file_t *f, sqlite3_int64 frame)
{
    int rc = lower_read(f, f->scratch, WAL_FRAME_HDR + (int)f->wal_page, wal_frame_offset(f, frame));
    if (rc != SQLITE_OK) return rc;
    sr_tde_place_t place = wal_place(frame, f->scratch);
    return decrypt_page(f, &place, f->scratch + WAL_FRAME_HDR, f->wal_page);
}

static int wal_read(sr_file_t *f, uint8_t *buf, int amt, sqlite3_int64 off)
{
    if (off < WAL_HDR) {
        int rc = lower_read(f, buf, amt, off);
        if (rc == SQLITE_OK && off == 0 && amt >= WAL_HDR) wal_take_header(f, buf);
        if (rc != SQLITE_OK || off + amt <= WAL_HDR) return rc;
        return amt - (WAL_HDR - off) > 0 ? wal_read(f, buf + (WAL_HDR - off), amt - (int)(WAL_HDR - off), WAL_HDR) : rc;
    }
    int krc = wal_know_page_size(f);
    if (krc != SQLITE_OK) return krc;
    sqlite3_int64 frame, rel;
    wal_locate(f, off, &frame, &rel);
    if (rel == 0 && amt == WAL_FRAME_HDR + (int)f->wal_page) {
        int rc = lower_read(f, buf, amt, off);
        if (rc != SQLITE_OK) return rc; /* short: a torn tail SQLite rejects */
        memcpy(f->wal_hdr, buf, WAL_FRAME_HDR), f->wal_hdr_frame = frame;
        return wal_recovery_frame(f, buf, frame);
    }
    if (rel + amt <= WAL_FRAME_HDR) return lower_read(f, buf, amt, off); /* frame header fields */
    if (rel == WAL_FRAME_HDR && amt == (int)f->wal_page) { /* a page: decrypted straight into SQLite's buffer */
        int rc = lower_read(f, f->scratch, WAL_FRAME_HDR + amt, off - WAL_FRAME_HDR);
        if (rc != SQLITE_OK) return rc;
        sr_tde_place_t place = wal_place(frame, f->scratch);
        (void)ensure_key_loaded(f, f->scratch + WAL_FRAME_HDR, f->wal_page);
        return sr_tde_page_decrypt_to(f->pc, &place, f->scratch + WAL_FRAME_HDR, buf, f->wal_page) == SR_OK
                   ? SQLITE_OK : page_auth_failure(f);
    }
    /* A page (the usual read) or any other span: each frame it touches is read
     * whole, so the page is checked against its own frame header. */
    int done = 0;
    while (done < amt) {
        wal_locate(f, off + done, &frame, &rel);
        int n = (int)(WAL_FRAME_HDR + f->wal_page - rel) < amt - done ? (int)(WAL_FRAME_HDR + f->wal_page - rel)
                                                                     : amt - done;
        int rc = wal_load_frame(f, frame);
        if (rc != SQLITE_OK) return rc;
        memcpy(buf + done, f->scratch + rel, (size_t)n);
        done += n;
    }
    return SQLITE_OK;
}

/* While a transaction overwrites its own frames, SQLite appends new frames
 * with zeroed salts and writes the real salts at commit (walRewriteChecksums:
 * read the whole frame, write its header). The page was bound to the zero
 * salts, so it is encrypted again under the new header first. Recognised by
 * the header just read for that frame: same page number and commit size,
 * zero salts becoming non-zero. */
static int wal_rebind(sr_file_t *f, sqlite3_int64 frame, const uint8_t *new_hdr)
{
    static const uint8_t zero_salts[8];
    if (f->wal_hdr_frame != frame || memcmp(f->wal_hdr, new_hdr, 8) != 0 ||
        memcmp(f->wal_hdr + 8, zero_salts, 8) != 0 || memcmp(new_hdr + 8, zero_salts, 8) == 0)
        return SQLITE_OK;
    sqlite3_int64 page_off = wal_frame_offset(f, frame) + WAL_FRAME_HDR;
    uint8_t *page = f->scratch + WAL_FRAME_HDR;
    int rc = lower_read(f, page, (int)f->wal_page, page_off);
    if (rc != SQLITE_OK) return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_OK : rc;
    sr_tde_place_t old_place = wal_place(frame, f->wal_hdr), new_place = wal_place(frame, new_hdr);
    if (sr_tde_page_decrypt(f->pc, &old_place, page, f->wal_page) != SR_OK) return SQLITE_OK; /* reads will say */
    uint8_t *out = malloc(f->wal_page); /* rare: only transactions that overwrite their own frames */
    if (!out) return SQLITE_NOMEM;
    rc = sr_tde_page_encrypt(f->pc, &new_place, page, out, f->wal_page) == SR_OK
             ? lower_write(f, out, (int)f->wal_page, page_off)
             : log_failure(SQLITE_IOERR_WRITE, f, "page encryption failed");
    sr_secure_wipe(page, f->wal_page);
    free(out);
    return rc;
}

/* The header of frame `frame` as on disk (SQLite writes it just before the
 * page, so it is usually the one cached from that write, used once). */
static int wal_frame_header(sr_file_t *f, sqlite3_int64 frame, uint8_t *hdr)
{
    if (f->wal_hdr_frame == frame) { /* used once: another connection may rewrite it later */
        memcpy(hdr, f->wal_hdr, WAL_FRAME_HDR);
        f->wal_hdr_frame = -1;
        return SQLITE_OK;
    }
    return lower_read(f, hdr, WAL_FRAME_HDR, wal_frame_offset(f, frame));
}

/* A frame header (or part of one) as written; the cached header follows. */
static int wal_write_header(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 frame, sqlite3_int64 rel)
{
    int whole = rel == 0 && amt == WAL_FRAME_HDR;
    int rc = whole ? wal_rebind(f, frame, buf) : SQLITE_OK;
    if (rc == SQLITE_OK) rc = lower_write(f, buf, amt, wal_frame_offset(f, frame) + rel);
    if (rc == SQLITE_OK && whole) memcpy(f->wal_hdr, buf, WAL_FRAME_HDR), f->wal_hdr_frame = frame;
    else if (f->wal_hdr_frame == frame) f->wal_hdr_frame = -1;
    return rc;
}

/* The page of frame `frame`, whole, encrypted under the frame's header. */
static int wal_write_page(sr_file_t *f, sqlite3_int64 frame, const uint8_t *frame_hdr, const uint8_t *page)
{
    sr_tde_place_t place = wal_place(frame, frame_hdr);
    if (sr_tde_page_encrypt(f->pc, &place, page, f->scratch + WAL_FRAME_HDR, f->wal_page) != SR_OK)
        return log_failure(SQLITE_IOERR_WRITE, f, "page encryption failed");
    return lower_write(f, f->scratch + WAL_FRAME_HDR, (int)f->wal_page, wal_frame_offset(f, frame) + WAL_FRAME_HDR);
}

/* Part of a page (a VFS stacked above writing sectors): the page as it is
 * (zeros if it cannot be read back) with the new bytes merged in. */
static int wal_merge_page(sr_file_t *f, sqlite3_int64 frame, int in_page, const uint8_t *buf, int n)
{
    uint8_t hdr[WAL_FRAME_HDR], *page = merge_buffer(f);
    if (!page) return SQLITE_NOMEM;
    int rc = wal_frame_header(f, frame, hdr);
    if (rc != SQLITE_OK) return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_IOERR_WRITE : rc;
    sr_tde_place_t place = wal_place(frame, hdr);
    rc = lower_read(f, page, (int)f->wal_page, wal_frame_offset(f, frame) + WAL_FRAME_HDR);
    if (rc != SQLITE_OK || sr_tde_page_decrypt(f->pc, &place, page, f->wal_page) != SR_OK)
        memset(page, 0, f->wal_page); /* not written yet, or torn: the rest comes in later writes */
    memcpy(page + in_page, buf, (size_t)n);
    return wal_write_page(f, frame, hdr, page);
}

static int wal_write(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    if (off < WAL_HDR) { /* the WAL header; anything after it is frames */
        int n = amt < WAL_HDR - off ? amt : (int)(WAL_HDR - off);
        if (off == 0 && n == WAL_HDR) wal_take_header(f, buf);
        int rc = lower_write(f, buf, n, off);
        return rc != SQLITE_OK || n == amt ? rc : wal_write(f, buf + n, amt - n, WAL_HDR);
    }
    int krc = wal_know_page_size(f);
    if (krc != SQLITE_OK) return krc;
    sqlite3_int64 frame, rel;
    wal_locate(f, off, &frame, &rel);
    int ps = (int)f->wal_page;
    uint8_t frame_hdr[WAL_FRAME_HDR];
    if (rel == WAL_FRAME_HDR && amt == ps) { /* SQLite: the page right after its header */
        int rc = wal_frame_header(f, frame, frame_hdr);
        if (rc != SQLITE_OK) return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_IOERR_WRITE : rc;
        return wal_write_page(f, frame, frame_hdr, buf);
    }
    /* Headers, whole frames or any other span, frame by frame. */
    int done = 0, rc = SQLITE_OK;
    while (done < amt && rc == SQLITE_OK) {
        wal_locate(f, off + done, &frame, &rel);
        int n;
        if (rel < WAL_FRAME_HDR) {
            n = (int)(WAL_FRAME_HDR - rel) < amt - done ? (int)(WAL_FRAME_HDR - rel) : amt - done;
            rc = wal_write_header(f, buf + done, n, frame, rel);
        } else {
            int in_page = (int)(rel - WAL_FRAME_HDR);
            n = ps - in_page < amt - done ? ps - in_page : amt - done;
            if (n == ps) {
                rc = wal_frame_header(f, frame, frame_hdr);
                if (rc == SQLITE_OK) rc = wal_write_page(f, frame, frame_hdr, buf + done);
                else if (rc == SQLITE_IOERR_SHORT_READ) rc = SQLITE_IOERR_WRITE;
            } else {
                rc = wal_merge_page(f, frame, in_page, buf + done, n);
            }
        }
        done += n;
    }
    return rc;
}

/* ---- rollback journal ---------------------------------------------------------------- */

/* Page images sit at record offset + 4; records start on sector boundaries
 * and are page + 8 bytes long, so an image always starts at 4 mod 8, which
 * no header chunk (sector aligned) or super-journal record does. */
static int journal_is_page(const sr_file_t *f, int amt, sqlite3_int64 off)
{
    return amt == (int)sr_tde_ts_page_size(f->ts) && off % 8 == 4;
}

/* A journal header chunk as SQLite writes it: sector-aligned, valid sector
 * and page sizes, magic (or zeros until synced). */
static int journal_is_header(const uint8_t *h, int amt, sqlite3_int64 off)
{
    if (amt < JOURNAL_HDR) return 0;
    uint32_t sector = sr_get_be32(h + 20), page = sr_get_be32(h + 24);
    int magic_or_zero = memcmp(h, journal_magic, 8) == 0 || sr_get_be32(h) == 0;
    return magic_or_zero && sector >= 32 && sector <= 65536 && (sector & (sector - 1)) == 0 &&
           sr_tde_page_size_valid(page) && off % sector == 0;
}

/* h: the 28 header bytes followed by the journal id. */
static sr_tde_place_t journal_header_place(sqlite3_int64 off, const uint8_t *h)
{
    return (sr_tde_place_t){.kind = SR_TDE_FILE_JOURNAL_HEADER, .location = (uint64_t)off, .bind = h,
                            .bind_len = JOURNAL_HDR + JOURNAL_ID};
}

static int journal_seal(sr_file_t *f, sqlite3_int64 off, uint8_t *h)
{
    sr_tde_place_t place = journal_header_place(off, h);
    if (sr_tde_seal_make(f->pc, &place, h + JOURNAL_HDR + JOURNAL_ID) != SR_OK)
        return log_failure(SQLITE_IOERR_WRITE, f, "cannot seal the journal header");
    if (off == 0) memcpy(f->jid, h + JOURNAL_HDR, JOURNAL_ID), f->jid_valid = 1;
    return SQLITE_OK;
}

/* Writes a header chunk with a new journal id and its seal after the 28 bytes. */
static int journal_write_header(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    if (amt < JOURNAL_SEALED) return refuse_write(f, "journal header chunk too small for its seal (sector size < 128)");
    memcpy(f->scratch, buf, (size_t)amt);
    if (sr_random_bytes(f->scratch + JOURNAL_HDR, JOURNAL_ID) != SR_OK)
        return log_failure(SQLITE_IOERR_WRITE, f, "no random journal id");
    int rc = journal_seal(f, off, f->scratch);
    return rc == SQLITE_OK ? lower_write(f, f->scratch, amt, off) : rc;
}

/* The header at `off` on disk, checked against its seal (h: JOURNAL_SEALED bytes). */
static int journal_header_check(sr_file_t *f, sqlite3_int64 off, uint8_t *h)
{
    int rc = lower_read(f, h, JOURNAL_SEALED, off);
    if (rc == SQLITE_IOERR_SHORT_READ) return SQLITE_IOERR_DATA;
    if (rc != SQLITE_OK) return rc;
    sr_tde_place_t place = journal_header_place(off, h);
    const uint8_t *seal = h + JOURNAL_HDR + JOURNAL_ID;
    if (!journal_is_header(h, JOURNAL_SEALED, off)) return SQLITE_IOERR_DATA;
    (void)ensure_key_loaded(f, seal, SR_TDE_PAGE_TRAILER); /* the seal is laid out as a trailer */
    if (sr_tde_seal_check(f->pc, &place, seal) != SR_OK) return SQLITE_IOERR_DATA;
    if (off == 0) memcpy(f->jid, h + JOURNAL_HDR, JOURNAL_ID), f->jid_valid = 1;
    return SQLITE_OK;
}

/* SQLite marks a header valid after syncing the records (magic + record
 * count, 12 bytes): the seal is made again over the new bytes, in the same
 * write, so the header and its seal never disagree on disk. */
static int journal_update_header(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    uint8_t h[JOURNAL_SEALED];
    if (journal_header_check(f, off, h) != SQLITE_OK) return lower_write(f, buf, amt, off);
    memcpy(h, buf, (size_t)amt);
    int rc = journal_seal(f, off, h); /* same journal id, fresh seal */
    return rc == SQLITE_OK ? lower_write(f, h, JOURNAL_SEALED, off) : rc;
}

/* A record's binding: its page number (4 bytes before the image) and the
 * journal id of the journal's first header. */
static int journal_record_bind(sr_file_t *f, sqlite3_int64 image_off, int writing, uint8_t bind[JOURNAL_BIND])
{
    int rc = SQLITE_OK;
    if (writing && f->jrec_off == image_off - 4) memcpy(bind, f->jrec_pgno, 4);
    else rc = lower_read(f, bind, 4, image_off - 4);
    if (rc == SQLITE_OK && !f->jid_valid) {
        uint8_t h[JOURNAL_SEALED];
        rc = journal_header_check(f, 0, h);
        if (rc == SQLITE_IOERR_DATA) {
            sr_err_set(SR_ERR_TDE_PAGE_AUTH, "journal record at offset %lld: the journal's first header is not "
                       "sealed by strongroom", (long long)image_off);
            return page_auth_failure(f);
        }
    }
    if (rc == SQLITE_OK) memcpy(bind + 4, f->jid, JOURNAL_ID);
    return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_IOERR_READ : rc;
}

/* The magic that ends a super-journal record: SQLite reads it as the last 8
 * bytes of the journal, where it never reads a header (it needs 28 bytes). */
static int journal_is_super_magic(sr_file_t *f, int amt, sqlite3_int64 off)
{
    sqlite3_int64 size = 0;
    return amt == 8 && f->lower->pMethods->xFileSize(f->lower, &size) == SQLITE_OK && off + 8 == size;
}

static int journal_read(sr_file_t *f, uint8_t *buf, int amt, sqlite3_int64 off)
{
    int rc = lower_read(f, buf, amt, off);
    if (rc != SQLITE_OK) return rc;
    if (amt >= 8 && off % 8 == 0 && memcmp(buf, journal_magic, 8) == 0 && !journal_is_super_magic(f, amt, off)) {
        /* SQLite reads a header's magic before it trusts the header: only a
         * sealed one is shown as valid. Any other reads as "no header", so
         * SQLite plays nothing back (and deletes a forged hot journal). */
        uint8_t h[JOURNAL_SEALED];
        int hrc = journal_header_check(f, off, h);
        if (hrc == SQLITE_OK) return SQLITE_OK;
        if (hrc != SQLITE_IOERR_DATA) return hrc;
        char detail[256];
        snprintf(detail, sizeof detail, "journal header at offset %lld is not sealed by strongroom for this "
                 "tablespace (forged or altered): not played back", (long long)off);
        warn("strongroom: %s: %s", f->name, detail);
        tde_event(f, "journal.unsealed", detail);
        memset(buf, 0, 8);
        return SQLITE_OK;
    }
    if (!journal_is_page(f, amt, off)) return rc;
    uint8_t bind[JOURNAL_BIND];
    if ((rc = journal_record_bind(f, off, 0, bind)) != SQLITE_OK) return rc;
    sr_tde_place_t place = {.kind = SR_TDE_FILE_JOURNAL, .location = (uint64_t)off, .bind = bind,
                            .bind_len = JOURNAL_BIND};
    return decrypt_page(f, &place, buf, (size_t)amt);
}

/* The super-journal name SQLite appends to a journal: a file name (no NUL
 * byte) right after the 4-byte record number written before it (the
 * locking page's, which no page image has; its value moves with the
 * pending byte, so the shape is what is checked). */
static int journal_super_name(const sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    return f->jrec_off == off - 4 && amt <= 4096 && memchr(buf, 0, (size_t)amt) == NULL;
}

static int journal_write(sr_file_t *f, const uint8_t *buf, int amt, sqlite3_int64 off)
{
    if (journal_is_page(f, amt, off)) {
        uint8_t bind[JOURNAL_BIND];
        int rc = journal_record_bind(f, off, 1, bind);
        if (rc != SQLITE_OK) return rc;
        sr_tde_place_t place = {.kind = SR_TDE_FILE_JOURNAL, .location = (uint64_t)off, .bind = bind,
                                .bind_len = JOURNAL_BIND};
        if (sr_tde_page_encrypt(f->pc, &place, buf, f->scratch, (size_t)amt) != SR_OK)
            return log_failure(SQLITE_IOERR_WRITE, f, "page encryption failed");
        return lower_write(f, f->scratch, amt, off);
    }
    if (journal_is_header(buf, amt, off)) return journal_write_header(f, buf, amt, off);
    if (amt == 12 && off % 8 == 0 && memcmp(buf, journal_magic, 8) == 0) return journal_update_header(f, buf, amt, off);
    /* (PERSIST mode zeroes a header in place: zeros reveal nothing) */
    if (amt > 12 && !journal_is_header(buf, amt, 0) && !journal_super_name(f, buf, amt, off) &&
        !sr_bytes_all_zero(buf, (size_t)amt)) {
        /* Not a shape SQLite writes (a VFS stacked above merging writes):
         * it could hold part of a page image, which must not reach the
         * disk in plaintext. */
        sr_err_set(SR_ERR_UNSUPPORTED, "journal write of %d bytes at %lld is not a page image, a journal header or a "
                   "super-journal name: refused (it could hold part of a page)", amt, (long long)off);
        return log_failure(SQLITE_IOERR_WRITE, f, "refused write");
    }
    if (amt == 4) memcpy(f->jrec_pgno, buf, 4), f->jrec_off = off;
    if (off == 0) f->jid_valid = 0; /* the first header changed (zeroed at commit) */
    return lower_write(f, buf, amt, off);
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
    int rc = lower_read(f, cipher, (int)*len, start);
    if (rc != SQLITE_OK) return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_IOERR_READ : rc;
    return temp_unit_crypt(f, 0, unit, cipher, plain, *len) == SR_OK ? SQLITE_OK
                                                                        : log_failure(SQLITE_IOERR_READ, f, "temp");
}

static int temp_unit_store(sr_file_t *f, sqlite3_int64 unit, const uint8_t *plain, size_t len)
{
    uint8_t *cipher = f->scratch + TEMP_UNIT;
    if (temp_unit_crypt(f, 1, unit, plain, cipher, len) != SR_OK) return log_failure(SQLITE_IOERR_WRITE, f, "temp");
    return lower_write(f, cipher, (int)len, unit * TEMP_UNIT);
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

static void open_mains_add(sr_file_t *f)
{
    struct stat st;
    if (stat(f->name, &st) == 0) f->dev = st.st_dev, f->ino = st.st_ino;
    pthread_mutex_lock(&vfs_lock);
    f->next_main = open_mains, open_mains = f, f->listed = 1;
    pthread_mutex_unlock(&vfs_lock);
}

static void open_mains_remove(sr_file_t *f)
{
    pthread_mutex_lock(&vfs_lock);
    for (sr_file_t **p = &open_mains; *p; p = &(*p)->next_main)
        if (*p == f) {
            *p = f->next_main;
            break;
        }
    pthread_mutex_unlock(&vfs_lock);
}

static int x_close(sqlite3_file *file)
{
    sr_file_t *f = (sr_file_t *)file;
    if (f->listed) open_mains_remove(f);
    int rc = f->lower_open ? f->lower->pMethods->xClose(f->lower) : SQLITE_OK;
    sr_tde_pagectx_free(f->pc);
    sr_tde_ts_release(f->ts);
    sr_tde_xts_free(f->xts);
    if (f->merge) sr_secure_wipe(f->merge, SR_TDE_MAX_PAGE);
    free(f->merge);
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
    return lower_read(f, buf, amt, off);
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
    return lower_write(f, buf, amt, off);
}

static int is_main(const sr_file_t *f) { return f->role == ROLE_MAIN || f->role == ROLE_MAIN_PASSTHROUGH; }

static int x_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    sr_file_t *f = (sr_file_t *)file;
    if (f->role == ROLE_TEMP) return temp_truncate(f, size);
    if (f->role == ROLE_JOURNAL) f->jid_valid = 0, f->jrec_off = -1;
    if (f->role == ROLE_WAL) f->wal_hdr_frame = -1;
    /* SQLite empties the database itself (rolling back a new database's first
     * transaction): say so in the header first, so the empty file is not
     * taken for a cut one. */
    if (f->role == ROLE_MAIN && size == 0 && sr_tde_ts_set_has_pages(f->ts, 0) != SR_OK)
        return log_failure(SQLITE_IOERR_TRUNCATE, f, "cannot record the emptied database in the key header");
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

/* A write transaction starts: take in a header another process changed
 * (tdectl rekey: every connection writes under the new key from now on). */
/* ---- rewriting pages under the active key version (tdectl rekey --rewrite) ---------------- */

#define REWRITE_MAGIC "SRRWJ1\n"
#define WAL_CKPT_LOCK 1

static void rewrite_journal_path(const sr_file_t *f, char *out, size_t cap)
{
    snprintf(out, cap, "%s" SR_REWRITE_JOURNAL_SUFFIX, f->name);
}

static int rewrite_journal_exists(const sr_file_t *f)
{
    char path[4200];
    rewrite_journal_path(f, path, sizeof path);
    return f->name && access(path, F_OK) == 0;
}

/* journal: magic (8) | page size (u32) | count (u32) | count x (page number u64 | page) | SHA-256 of all before */
static sr_err_t rewrite_journal_write(const char *path, const uint8_t *body, size_t len)
{
    uint8_t md[32];
    unsigned md_len = 0;
    EVP_Digest(body, len, md, &md_len, EVP_sha256(), NULL);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    sr_err_t rc = fd >= 0 ? sr_fd_write_all(fd, body, len) : sr_err_set_errno(SR_ERR_IO, errno, "cannot create %s", path);
    if (rc == SR_OK) rc = sr_fd_write_all(fd, md, sizeof md);
    if (rc == SR_OK && fsync(fd) != 0) rc = sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot sync %s", path);
    if (fd >= 0) close(fd);
    if (rc == SR_OK) rc = sr_fsync_parent_dir(path);
    return rc;
}

static sr_err_t rewrite_journal_remove(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT) return sr_err_set_errno(SR_ERR_IO, errno, "cannot remove %s", path);
    return sr_fsync_parent_dir(path);
}

static int rewrite_fail(sr_file_t *f, int sqlite_rc, const char *what)
{
    return log_failure(sqlite_rc, f, what);
}

/* Pages of the file, from its size. */
static int main_pages(sr_file_t *f, uint32_t ps, int64_t *pages)
{
    sqlite3_int64 size = 0;
    int rc = f->lower->pMethods->xFileSize(f->lower, &size);
    *pages = size > SHIFT ? (size - SHIFT) / ps : 0;
    return rc;
}

/* One batch: the pages not under the active version, re-encrypted into a
 * journal (synced), then written in place (synced), then the journal removed. */
static int rewrite_batch(sr_file_t *f, sr_rewrite_batch_t *b)
{
    uint32_t ps = sr_tde_ts_page_size(f->ts), target = sr_tde_space_active(sr_tde_ts_space(f->ts));
    int64_t pages = 0;
    int rc = main_pages(f, ps, &pages);
    b->pages = pages, b->rewritten = 0;
    if (rc != SQLITE_OK || b->first < 1 || b->first > pages || b->count < 1) return rc;
    int64_t last = b->first + b->count - 1 > pages ? pages : b->first + b->count - 1;
    if ((last - b->first + 1) * (int64_t)ps > (4 << 20)) last = b->first + (4 << 20) / ps - 1;
    size_t n = (size_t)(last - b->first + 1), header = 16, entry = 8 + ps;
    uint8_t *body = malloc(header + n * entry), *plain = malloc(ps);
    if (!body || !plain) return free(body), free(plain), SQLITE_NOMEM;
    memcpy(body, REWRITE_MAGIC, 8);
    sr_put_be32(body + 8, ps);
    size_t count = 0;
    for (int64_t pgno = b->first; rc == SQLITE_OK && pgno <= last; pgno++) {
        uint8_t *e = body + header + count * entry;
        rc = lower_read(f, e + 8, (int)ps, SHIFT + (pgno - 1) * ps);
        if (rc != SQLITE_OK) break;
        uint32_t v = sr_tde_page_key_version(e + 8, ps);
        if (v == target) continue;
        /* all zeros: never written. A WAL checkpoint that could not backfill every frame (a reader held an
         * older snapshot) still grows the file to the database's size; those pages live in the WAL for now */
        if (v == 0 && sr_bytes_all_zero(e + 8, ps)) continue;
        (void)ensure_key_loaded(f, e + 8, ps);
        sr_tde_place_t place = {.kind = SR_TDE_FILE_DB, .location = (uint64_t)pgno};
        if (sr_tde_page_decrypt_to(f->pc, &place, e + 8, plain, ps) != SR_OK)
            rc = page_auth_failure(f); /* never rewrite a page that does not authenticate */
        else if (sr_tde_page_encrypt(f->pc, &place, plain, e + 8, ps) != SR_OK)
            rc = rewrite_fail(f, SQLITE_IOERR_WRITE, "page encryption failed");
        else
            sr_put_be64(e, (uint64_t)pgno), count++;
    }
    sr_secure_wipe(plain, ps), free(plain);
    sr_put_be32(body + 12, (uint32_t)count);
    char path[4200];
    rewrite_journal_path(f, path, sizeof path);
    if (rc == SQLITE_OK && count && rewrite_journal_write(path, body, header + count * entry) != SR_OK)
        rc = rewrite_fail(f, SQLITE_IOERR_WRITE, "cannot write the rewrite journal");
    for (size_t i = 0; rc == SQLITE_OK && i < count; i++) {
        const uint8_t *e = body + header + i * entry;
        rc = lower_write(f, e + 8, (int)ps, SHIFT + ((int64_t)sr_get_be64(e) - 1) * ps);
    }
    if (rc == SQLITE_OK && count) rc = f->lower->pMethods->xSync(f->lower, SQLITE_SYNC_FULL);
    if (rc == SQLITE_OK && count && rewrite_journal_remove(path) != SR_OK)
        rc = rewrite_fail(f, SQLITE_IOERR_DELETE, "cannot remove the rewrite journal");
    free(body);
    if (rc == SQLITE_OK) b->rewritten = (int)count;
    return rc;
}

/* After a crash mid-batch: pages that do not authenticate get the journal's
 * copy (the same plaintext under the new version); whole ones are left as
 * they are (old, new, or written since). A journal that does not check out
 * was cut before any page was written in place: it is removed. */
static int rewrite_repair(sr_file_t *f, sr_rewrite_batch_t *b)
{
    char path[4200];
    rewrite_journal_path(f, path, sizeof path);
    size_t len = 0;
    uint8_t *j = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) return errno == ENOENT ? SQLITE_OK : rewrite_fail(f, SQLITE_IOERR_READ, "cannot open the rewrite journal");
    if (fstat(fd, &st) == 0 && st.st_size >= 48 && st.st_size < (64 << 20) && (j = malloc((size_t)st.st_size)))
        len = read(fd, j, (size_t)st.st_size) == st.st_size ? (size_t)st.st_size : 0;
    close(fd);
    uint32_t ps = sr_tde_ts_page_size(f->ts);
    uint8_t md[32];
    unsigned md_len = 0;
    int whole = len >= 48 && !memcmp(j, REWRITE_MAGIC, 8) && sr_get_be32(j + 8) == ps &&
                len == 16 + (size_t)sr_get_be32(j + 12) * (8 + ps) + 32 &&
                EVP_Digest(j, len - 32, md, &md_len, EVP_sha256(), NULL) == 1 && !memcmp(md, j + len - 32, 32);
    int rc = SQLITE_OK, repaired = 0;
    uint8_t *page = whole ? malloc(2 * (size_t)ps) : NULL;
    for (uint32_t i = 0; whole && page && rc == SQLITE_OK && i < sr_get_be32(j + 12); i++) {
        const uint8_t *e = j + 16 + (size_t)i * (8 + ps);
        int64_t pgno = (int64_t)sr_get_be64(e);
        sr_tde_place_t place = {.kind = SR_TDE_FILE_DB, .location = (uint64_t)pgno};
        rc = lower_read(f, page, (int)ps, SHIFT + (pgno - 1) * ps);
        if (rc == SQLITE_IOERR_SHORT_READ) rc = SQLITE_OK;
        if (rc != SQLITE_OK) break;
        (void)ensure_key_loaded(f, page, ps);
        if (sr_tde_page_decrypt_to(f->pc, &place, page, page + ps, ps) == SR_OK) continue;
        (void)ensure_key_loaded(f, e + 8, ps);
        if (sr_tde_page_decrypt_to(f->pc, &place, e + 8, page + ps, ps) != SR_OK) continue; /* only an authentic copy */
        rc = lower_write(f, e + 8, (int)ps, SHIFT + (pgno - 1) * ps), repaired++;
    }
    if (page) sr_secure_wipe(page, 2 * (size_t)ps), free(page);
    free(j);
    if (rc == SQLITE_OK && repaired) rc = f->lower->pMethods->xSync(f->lower, SQLITE_SYNC_FULL);
    if (rc == SQLITE_OK && rewrite_journal_remove(path) != SR_OK)
        rc = rewrite_fail(f, SQLITE_IOERR_DELETE, "cannot remove the rewrite journal");
    b->rewritten = repaired;
    return rc;
}

static int main_rewrite(sr_file_t *f, sr_rewrite_batch_t *b)
{
    if (!b->wal && f->lock < SQLITE_LOCK_EXCLUSIVE) {
        sr_err_set(SR_ERR_STATE, "a page rewrite needs the database's exclusive lock (BEGIN EXCLUSIVE)");
        return rewrite_fail(f, SQLITE_MISUSE, "page rewrite refused");
    }
    if (b->wal) { /* no checkpoint writes a page while we do */
        int rc = f->lower->pMethods->xShmLock(f->lower, WAL_CKPT_LOCK, 1, SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE);
        if (rc != SQLITE_OK) return rc;
    }
    int rc = b->repair ? rewrite_repair(f, b) : rewrite_batch(f, b);
    if (b->wal) f->lower->pMethods->xShmLock(f->lower, WAL_CKPT_LOCK, 1, SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
    return rc;
}

static int main_drop_unused_keys(sr_file_t *f, sr_unused_keys_t *d)
{
    if (f->lock < (d->wal ? SQLITE_LOCK_SHARED : SQLITE_LOCK_RESERVED)) {
        sr_err_set(SR_ERR_STATE, "dropping key versions needs the database's write lock (BEGIN IMMEDIATE)");
        return log_failure(SQLITE_MISUSE, f, "key version drop refused");
    }
    char wal[4200];
    snprintf(wal, sizeof wal, "%s-wal", f->name);
    if (sr_tde_ts_drop_unused_keys(f->ts, d->wal ? wal : NULL, &d->before, &d->after) == SR_OK) return SQLITE_OK;
    return log_failure(SQLITE_IOERR, f, "cannot drop unused key versions");
}

static int begin_write(sr_file_t *f)
{
    if (f->role != ROLE_MAIN || sr_tde_ts_check_fresh(f->ts) == SR_OK) return SQLITE_OK;
    return log_failure(SQLITE_IOERR_LOCK, f, "cannot read the key header");
}

static int x_lock(sqlite3_file *file, int lock)
{
    sr_file_t *f = (sr_file_t *)file;
    int rc = f->lower->pMethods->xLock(f->lower, lock);
    if (rc == SQLITE_OK) f->lock = lock;
    if (rc == SQLITE_OK && lock == SQLITE_LOCK_SHARED && f->role == ROLE_MAIN && f->connections == 1)
        ask_for_reserve(f);
    if (rc == SQLITE_OK && lock == SQLITE_LOCK_RESERVED) rc = begin_write(f);
    return rc;
}

static int x_unlock(sqlite3_file *file, int lock)
{
    sr_file_t *f = (sr_file_t *)file;
    int rc = f->lower->pMethods->xUnlock(f->lower, lock);
    if (rc == SQLITE_OK) f->lock = lock;
    return rc;
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
    if (op == SQLITE_FCNTL_PDB && f->role == ROLE_MAIN) connection_hint(f, *(sqlite3 **)arg);
    if (op == SQLITE_FCNTL_PRAGMA && f->role == ROLE_MAIN) {
        int rc = main_pragma(f, arg);
        if (rc != SQLITE_NOTFOUND) return rc;
    }
    if (op == SQLITE_FCNTL_SIZE_HINT && is_main(f)) {
        sqlite3_int64 hint = *(sqlite3_int64 *)arg + SHIFT;
        return f->lower->pMethods->xFileControl(f->lower, op, &hint);
    }
    if (op == SQLITE_FCNTL_SIZE_HINT && f->role == ROLE_TEMP) return SQLITE_OK;
    if (op == SR_FCNTL_REWRITE_PAGES) return f->role == ROLE_MAIN ? main_rewrite(f, arg) : SQLITE_NOTFOUND;
    if (op == SR_FCNTL_DROP_UNUSED_KEYS) return f->role == ROLE_MAIN ? main_drop_unused_keys(f, arg) : SQLITE_NOTFOUND;
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
    int rc = f->lower->pMethods->xShmLock(f->lower, offset, n, flags);
    /* Offset 0 is the WAL write lock: a WAL write transaction starts. */
    if (rc == SQLITE_OK && offset == 0 && flags == (SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE)) rc = begin_write(f);
    return rc;
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
    .iVersion = 3,
    .xClose = x_close,
    .xRead = x_read,
    .xWrite = x_write,
    .xTruncate = x_truncate,
    .xSync = x_sync,
    .xFileSize = x_file_size,
    .xLock = x_lock,
    .xUnlock = x_unlock,
    .xCheckReservedLock = x_check_reserved_lock,
    .xFileControl = x_file_control,
    .xSectorSize = x_sector_size,
    .xDeviceCharacteristics = x_device_characteristics,
    .xShmMap = x_shm_map,
    .xShmLock = x_shm_lock,
    .xShmBarrier = x_shm_barrier,
    .xShmUnmap = x_shm_unmap,
    .xFetch = x_fetch,
    .xUnfetch = x_unfetch,
};

/* ---- opening ------------------------------------------------------------------------------ */

/* Who opened which tablespace: an audit event for every successful open.
 * If it cannot be recorded the open fails (fail closed). */
static sr_err_t audit_open(sr_file_t *f, const char *path, sr_keyprov_t *prov)
{
    char uuid[SR_UUID_STR_LEN + 1], detail[600];
    sr_uuid_format(sr_tde_space_id(sr_tde_ts_space(f->ts)), uuid);
    snprintf(detail, sizeof detail, "tablespace %s, key %s", uuid, sr_keyprov_description(prov));
    sr_err_t rc = sr_tde_event("tablespace.open", path, 1, detail);
    if (rc != SR_OK) sr_err_set(rc, "cannot record the open in the audit log (%s): refusing it", sr_err_detail());
    return rc;
}

static int open_passthrough(sr_file_t *f, int flags)
{
    f->role = ROLE_MAIN_PASSTHROUGH;
    sqlite3_int64 size = 0;
    int rc = f->lower->pMethods->xFileSize(f->lower, &size);
    if (rc == SQLITE_OK && size == 0 && (flags & SQLITE_OPEN_READWRITE)) {
        static const uint8_t zeros[SHIFT];
        rc = lower_write(f, zeros, SHIFT, 0);
    }
    return rc;
}

static int open_main(sqlite3_vfs *vfs, sr_file_t *f, const char *zName, int flags)
{
    if (is_passthrough_vfs(vfs)) return open_passthrough(f, flags);
    int plaintext = 0;
    sr_tde_ts_options_t opts = {.may_create = (flags & SQLITE_OPEN_CREATE) != 0};
    const char *cipher = sqlite3_uri_parameter(zName, "cipher");
    if (uri_plaintext(zName, &plaintext) != SR_OK || uri_page_size_refused(zName) != SR_OK ||
        (cipher && sr_tde_cipher_parse(cipher, &opts.cipher) != SR_OK))
        return log_failure(SQLITE_MISUSE, f, "invalid URI parameter");
    if (plaintext) {
        f->role = ROLE_PASS;
        open_mains_add(f);
        return SQLITE_OK;
    }
    sr_keyprov_t *prov = NULL;
    if (provider_for_open(zName, &prov) != SR_OK) return log_failure(SQLITE_CANTOPEN, f, "no key");
    sr_err_t rc = sr_tde_ts_open(zName, prov, &opts, &f->ts);
    if (rc == SR_ERR_NOMEM) return SQLITE_NOMEM;
    if (rc == SR_ERR_IO) return log_failure(SQLITE_IOERR, f, "cannot open the tablespace");
    if (rc != SR_OK) {
        char detail[1024];
        snprintf(detail, sizeof detail, "%s", sr_err_detail());
        (void)sr_tde_event("tablespace.open", zName, 0, detail);
        if (rc == SR_ERR_PERMISSION) return log_failure(SQLITE_AUTH, f, "the key service refused the data key");
        if (rc == SR_ERR_NETWORK || rc == SR_ERR_TLS || rc == SR_ERR_TIMEOUT || rc == SR_ERR_CLOSED)
            return log_failure(SQLITE_CANTOPEN, f, "the key service cannot be reached");
        return log_failure(SQLITE_NOTADB, f, rc == SR_ERR_WRONG_KEY ? "wrong key" : "not an encrypted database");
    }
    f->role = ROLE_MAIN;
    if (audit_open(f, zName, prov) != SR_OK) return log_failure(SQLITE_CANTOPEN, f, "audit log unavailable");
    if (sr_tde_pagectx_new(sr_tde_ts_space(f->ts), &f->pc) != SR_OK) return SQLITE_NOMEM;
    open_mains_add(f);
    return SQLITE_OK;
}

/* The length of the main database's name in a WAL or journal name
 * ("x.db-wal" -> 4), or 0 if it is not one; *chunk: a numbered piece of it
 * ("x.db-journal001", made by a VFS stacked above, such as multiplex). */
static size_t companion_base(const char *zName, int flags, int *chunk)
{
    const char *suffix = flags & SQLITE_OPEN_WAL ? "-wal" : "-journal";
    size_t n = strlen(zName), sn = strlen(suffix), digits = 0;
    while (digits < n && zName[n - 1 - digits] >= '0' && zName[n - 1 - digits] <= '9') digits++;
    *chunk = 0;
    if (n > sn && strcmp(zName + n - sn, suffix) == 0) return n - sn;
    if (digits && n > sn + digits && strncmp(zName + n - digits - sn, suffix, sn) == 0) {
        *chunk = 1;
        return n - digits - sn;
    }
    return 0;
}

/* Under vfs_lock: the open main database named zName[0, base), or with st, the one that is that file. */
static sr_file_t *open_main_of(const char *zName, size_t base, const struct stat *st)
{
    for (sr_file_t *m = open_mains; m; m = m->next_main)
        if (st ? m->dev == st->st_dev && m->ino == st->st_ino
               : strlen(m->name) == base && strncmp(m->name, zName, base) == 0)
            return m;
    return NULL;
}

/* The main database a WAL or journal belongs to, among the open ones (encrypted or plaintext): by name, else
 * by the file's identity. Not through sqlite3_database_file_object(): a VFS stacked above strongroom
 * (multiplex, quota, tracing shims) hands us names it made itself, and that function is only defined on
 * SQLite's. Returns the main's role (ROLE_MAIN: *ts retained), or -1 if none of ours is open. */
static int companion_main(const char *zName, size_t base, sr_tde_ts_t **ts)
{
    char path[4096];
    struct stat st;
    pthread_mutex_lock(&vfs_lock);
    sr_file_t *found = base ? open_main_of(zName, base, NULL) : NULL;
    if (!found && base && base < sizeof path) { /* a name another VFS made: the file itself (a journal opens with
                                                   every write transaction: no stat() when the name is known) */
        pthread_mutex_unlock(&vfs_lock);
        memcpy(path, zName, base), path[base] = '\0';
        int known = stat(path, &st) == 0;
        pthread_mutex_lock(&vfs_lock);
        if (known) found = open_main_of(zName, base, &st);
    }
    int role = found ? (int)found->role : -1;
    *ts = found && found->role == ROLE_MAIN ? sr_tde_ts_retain(found->ts) : NULL;
    pthread_mutex_unlock(&vfs_lock);
    return role;
}

/* No open database of ours is that file: the companion of a plaintext one
 * opened elsewhere passes through; one whose database file has a key header
 * is refused, never written in plaintext. (Reading the file here is safe
 * only because this process has no connection of ours on it: closing any
 * descriptor on a file drops every POSIX lock of the process on it.) */
static int companion_is_plaintext(const char *zName, size_t base)
{
    if (base == 0 || base >= 4096) return 0;
    char path[4096];
    memcpy(path, zName, base);
    path[base] = '\0';
    FILE *fp = fopen(path, "rb");
    uint8_t magic[8] = {0};
    size_t got = fp ? fread(magic, 1, sizeof magic, fp) : 0;
    if (fp) fclose(fp);
    return !sr_tde_header_is_present(magic, got);
}

static int open_companion(sqlite3_vfs *vfs, sr_file_t *f, const char *zName, int flags)
{
    if (is_passthrough_vfs(vfs)) {
        f->role = ROLE_PASS;
        return SQLITE_OK;
    }
    int chunk = 0;
    size_t base = companion_base(zName, flags, &chunk);
    int main_role = companion_main(zName, base, &f->ts);
    if (main_role == ROLE_PASS) {
        f->role = ROLE_PASS;
        return SQLITE_OK;
    }
    if (chunk && f->ts) sr_tde_ts_release(f->ts), f->ts = NULL; /* its records could not be located */
    if (!f->ts) {
        if (main_role < 0 && companion_is_plaintext(zName, base)) {
            f->role = ROLE_PASS;
            return SQLITE_OK;
        }
        sr_err_set(SR_ERR_UNSUPPORTED, chunk ? "a WAL or journal split into pieces by a VFS above strongroom cannot be "
                   "encrypted (its records cannot be located); use that VFS without splitting journals"
                   : "cannot find the open encrypted database this WAL or journal belongs to");
        return log_failure(SQLITE_CANTOPEN, f, "open");
    }
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
    f->wal_hdr_frame = f->jrec_off = -1;
    sqlite3_vfs *lo = lower_vfs(vfs);
    int rc = lo->xOpen(lo, zName, f->lower, flags, out_flags);
    if (rc != SQLITE_OK) return rc;
    f->lower_open = 1;
    size_t scratch = SR_TDE_MAX_PAGE + WAL_FRAME_HDR;
    if (!(f->scratch = malloc(scratch))) rc = SQLITE_NOMEM;
    else if (flags & SQLITE_OPEN_MAIN_DB) rc = open_main(vfs, f, zName, flags);
    else if (flags & (SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL)) rc = open_companion(vfs, f, zName, flags);
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
/* Version 3: tests and shims replace the lower VFS's system calls through us. */
static int x_set_system_call(sqlite3_vfs *v, const char *name, sqlite3_syscall_ptr fn)
{
    sqlite3_vfs *lo = lower_vfs(v);
    return lo->iVersion >= 3 && lo->xSetSystemCall ? lo->xSetSystemCall(lo, name, fn) : SQLITE_NOTFOUND;
}
static sqlite3_syscall_ptr x_get_system_call(sqlite3_vfs *v, const char *name)
{
    sqlite3_vfs *lo = lower_vfs(v);
    return lo->iVersion >= 3 && lo->xGetSystemCall ? lo->xGetSystemCall(lo, name) : NULL;
}
static const char *x_next_system_call(sqlite3_vfs *v, const char *name)
{
    sqlite3_vfs *lo = lower_vfs(v);
    return lo->iVersion >= 3 && lo->xNextSystemCall ? lo->xNextSystemCall(lo, name) : NULL;
}

static int vfs_setup(sqlite3_vfs *vfs, const char *name, int make_default, int *registered)
{
    if (*registered) return make_default ? sqlite3_vfs_register(vfs, 1) : SQLITE_OK;
    sqlite3_vfs *lo = sqlite3_vfs_find(NULL);
    if (!lo) return SQLITE_ERROR;
    if (lo == &vfs_main || lo == &vfs_pass) lo = lower_vfs(lo);
    *vfs = (sqlite3_vfs){
        .iVersion = 3,
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
        .xSetSystemCall = x_set_system_call,
        .xGetSystemCall = x_get_system_call,
        .xNextSystemCall = x_next_system_call,
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

#ifdef SR_BENCH_PASSTHROUGH
int sr_sqlite_register_passthrough(void)
{
    pthread_mutex_lock(&vfs_lock);
    int rc = vfs_setup(&vfs_pass, "strongroom-passthrough", 0, &registered_pass);
    pthread_mutex_unlock(&vfs_lock);
    return rc;
}
#endif
