/*
 * What an independent review broke in the TDE layer, each as the reviewer did
 * it, each failing before the fix (issue: tde hardening):
 *   1  page numbers of WAL frames / journal records swapped (checksums redone
 *      without the plaintext, as an attacker can), a frame made a commit
 *   2  a forged hot journal, a file cut to its key header
 *   3  the key header's active version set back, its generation maxed
 *   4  a page context used on both sides of fork()
 *   5  tdectl encrypt writing plaintext beside the destination; core dumps;
 *      a key file owned by another user
 *   6  a VFS stacked above strongroom
 *   7  page-size changes (PRAGMA page_size + VACUUM, backup between sizes,
 *      backup of an empty :memory: database)
 *   8  PRAGMA page_size / auto_vacuum on a new database
 *   9  reads of other lengths than a page (and sqlite3's .recover)
 *   10 the version-3 system-call methods
 *   11 a flood of warnings from a damaged file
 *   13 tdectl rekey reaching a connection that only writes
 *   14 invalid URI values
 *   15 tdectl actions taken before (or without) their audit record
 *   16 tdectl's files: a world-readable plaintext copy; encrypt --in-place
 *      changing the file's mode and owner, replacing a symbolic link (the
 *      plaintext target left as it was), or one of several hard links;
 *      a plaintext copy written through a dangling symbolic link
 * (12, the nonce budget over 100,000 sessions, is test_tde_budget.)
 */
#include "tdev.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit.h"
#include "tablespace.h"

#include <openssl/sha.h>

#define MARKER "HARDEN-MARKER-4242"
#define WAL_FRAME (24 + PS)

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* SQLite's WAL checksum (native little-endian words on this machine). It is
 * linear over 32-bit addition, so the change a header edit makes to every
 * later checksum is computable from the edit alone: no plaintext needed. */
static void wal_cksum(const uint8_t *a, size_t n, const uint32_t in[2], uint32_t out[2])
{
    uint32_t s1 = in[0], s2 = in[1];
    for (size_t i = 0; i < n; i += 8) {
        uint32_t w0, w1;
        memcpy(&w0, a + i, 4), memcpy(&w1, a + i + 4, 4);
        s1 += w0 + s2;
        s2 += w1 + s1;
    }
    out[0] = s1, out[1] = s2;
}

/* Applies `edit` to frame headers (bytes 0..7) and redoes the chain of
 * checksums from the WAL header on, using only the deltas. */
static void wal_recompute(uint8_t *wal, size_t len, const uint8_t *orig)
{
    size_t frames = (len - 32) / WAL_FRAME;
    uint32_t d_in[2] = {0, 0};
    static uint8_t delta[WAL_FRAME];
    for (size_t i = 0; i < frames; i++) {
        uint8_t *h = wal + 32 + i * WAL_FRAME;
        const uint8_t *o = orig + 32 + i * WAL_FRAME;
        memset(delta, 0, sizeof delta);
        for (int w = 0; w < 2; w++) {
            uint32_t a, b;
            memcpy(&a, h + 4 * w, 4), memcpy(&b, o + 4 * w, 4);
            uint32_t d = a - b;
            memcpy(delta + 4 * w, &d, 4);
        }
        uint32_t d_out[2];
        wal_cksum(delta, 8, d_in, d_out);
        uint32_t zero_in[2] = {d_out[0], d_out[1]};
        wal_cksum(delta + 8, PS, zero_in, d_out); /* the page is unchanged: only the carried delta moves */
        uint32_t c1 = be32(o + 16) + d_out[0], c2 = be32(o + 20) + d_out[1];
        put_be32(h + 16, c1), put_be32(h + 20, c2);
        d_in[0] = d_out[0], d_in[1] = d_out[1];
    }
}

/* WAL: a writer died after committing (its frames stay); DELETE: a writer died
 * mid-transaction (its hot journal stays). */
static const char *crashed(const char *name, const char *mode, char companion[600], uint8_t **data, size_t *len)
{
    const char *path = make_db(name, mode, 300, MARKER);
    int wal = strcmp(mode, "WAL") == 0;
    crash_mid_write(path, mode, wal ? "UPDATE t SET v = v || 'zz'"
                                    : "BEGIN; UPDATE t SET v = v || 'zz'; INSERT INTO t(k, v) SELECT k, v FROM t");
    snprintf(companion, 600, "%s-%s", path, strcmp(mode, "WAL") == 0 ? "wal" : "journal");
    *data = sr_test_read_file(companion, len);
    return path;
}

/* The database holds none of the rows the crashed writer's transaction
 * ('zz') wrote, passes integrity_check, and SQLite's log names the frame. */
static void check_wal_cut(const char *path, const char *frame_words)
{
    SR_CHECK_EQ_INT(read_all(path), SQLITE_OK);
    SR_CHECK_MSG(strstr(sqlt_last_log(), frame_words) != NULL, "log: %s", sqlt_last_log());
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM t WHERE v LIKE '%zz'"), 0);
    sqlite3_close(db);
}

/* 1: two committed frames exchange page numbers, checksums made consistent
 * (before: each page applied at the other's number, integrity_check ok). Now
 * neither is applied: the log ends before the first, reported; a frame made
 * a commit likewise. */
static void test_wal_frames_swapped_or_made_commit(void)
{
    char wal[600];
    uint8_t *w = NULL;
    size_t len = 0;
    const char *path = crashed("walswap.db", "WAL", wal, &w, &len);
    size_t frames = w ? (len - 32) / WAL_FRAME : 0;
    SR_CHECK_MSG(frames >= 4, "WAL has %zu frames", frames);
    if (frames < 4) return;
    uint8_t *orig = malloc(len);
    memcpy(orig, w, len);
    /* two frames of different pages, neither a commit frame */
    size_t a = 0, b = 1;
    while (b < frames && (be32(w + 32 + b * WAL_FRAME) == be32(w + 32 + a * WAL_FRAME))) b++;
    uint8_t tmp[4];
    memcpy(tmp, w + 32 + a * WAL_FRAME, 4);
    memcpy(w + 32 + a * WAL_FRAME, w + 32 + b * WAL_FRAME, 4);
    memcpy(w + 32 + b * WAL_FRAME, tmp, 4);
    wal_recompute(w, len, orig);
    SR_CHECK(sr_test_write_file(wal, w, len) == 0);
    check_wal_cut(path, "wal frame 0 fails authentication: the log ends before it");
    /* a middle frame turned into a commit frame (a torn transaction made visible) */
    free(w), free(orig);
    const char *path2 = crashed("walcommit.db", "WAL", wal, &w, &len);
    if (!w) return;
    orig = malloc(len);
    memcpy(orig, w, len);
    put_be32(w + 32 + 1 * WAL_FRAME + 4, 1000);
    wal_recompute(w, len, orig);
    SR_CHECK(sr_test_write_file(wal, w, len) == 0);
    check_wal_cut(path2, "wal frame 1 fails authentication");
    free(w), free(orig);
}

/* 1: two journal records exchange page numbers (their checksums do not cover it). */
static void test_journal_records_swapped(void)
{
    char jr[600];
    uint8_t *j = NULL;
    size_t len = 0;
    const char *path = crashed("jswap.db", "DELETE", jr, &j, &len);
    uint32_t sector = j ? be32(j + 20) : 0;
    size_t rec = PS + 8;
    SR_CHECK_MSG(j && len >= sector + 2 * rec, "hot journal of %zu bytes", len);
    if (!j || len < sector + 2 * rec) return;
    uint8_t tmp[4];
    memcpy(tmp, j + sector, 4);
    memcpy(j + sector, j + sector + rec, 4);
    memcpy(j + sector + rec, tmp, 4);
    SR_CHECK(sr_test_write_file(jr, j, len) == 0);
    SR_CHECK_EQ_INT(read_all(path), SQLITE_IOERR_DATA);
    SR_CHECK_MSG(strstr(sqlt_last_log(), "journal record at offset") != NULL, "log: %s", sqlt_last_log());
    free(j);
}

/* 2: a 512-byte plaintext journal with no key material beside the database. */
static void test_forged_hot_journal_is_not_played_back(void)
{
    const char *path = make_db("forged.db", "DELETE", 300, MARKER);
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    int64_t rows = sqlt_int(db, "SELECT count(*) FROM t");
    sqlite3_close(db);
    uint8_t j[512] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};
    put_be32(j + 12, 0x1234), put_be32(j + 16, 0), put_be32(j + 20, 512), put_be32(j + 24, PS);
    char jr[600];
    snprintf(jr, sizeof jr, "%s-journal", path);
    SR_CHECK(sr_test_write_file(jr, j, sizeof j) == 0);
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM t"), rows);
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    sqlite3_close(db);
    char out[4096];
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", keyfile, path), 0);
}

/* 2: the file cut to its key header is refused, not opened as empty; a new
 * database whose first transaction is rolled back is empty and fine. */
static void test_cut_file_refused_empty_rollback_fine(void)
{
    const char *path = make_db("cut.db", "DELETE", 300, MARKER);
    SR_CHECK(truncate(path, HDR) == 0);
    SR_CHECK_EQ_INT(read_all(path), SQLITE_CORRUPT);
    SR_CHECK_MSG(strstr(sqlt_last_log(), "cut") != NULL, "log: %s", sqlt_last_log());
    char out[4096];
    SR_CHECK(tdectl(out, sizeof out, "verify --keyfile %s %s", keyfile, path) != 0);

    const char *fresh = sr_test_path("first-txn.db");
    crash_mid_write(fresh, "DELETE", "CREATE TABLE t(k, v); BEGIN; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
                                      "SELECT i + 1 FROM c WHERE i < 2000) INSERT INTO t SELECT i, randomblob(400) FROM c");
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(fresh, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM t"), 0); /* the table was committed, the rows rolled back */
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    sqlite3_close(db);
}

static void edit_header_slot(const char *path, int newest, void (*edit)(uint8_t *slot))
{
    size_t len = 0;
    uint8_t *b = sr_test_read_file(path, &len);
    SR_CHECK(b && len > HDR);
    if (!b) return;
    uint64_t g[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 8; k++) g[i] = g[i] << 8 | b[i * 4096 + 10 + k];
    int slot = (g[1] > g[0]) == (newest != 0) ? 1 : 0;
    edit(b + slot * 4096);
    SHA256(b + slot * 4096, 2352, b + slot * 4096 + 2352); /* the checksum needs no key */
    SR_CHECK(sr_test_write_file(path, b, len) == 0);
    free(b);
}

static void active_back_to_v1(uint8_t *slot) { put_be32(slot + 48, 1); }
static void generation_max(uint8_t *slot) { memset(slot + 10, 0xff, 8); }

/* 3: header edits need the key now. */
static void test_key_header_edits_refused(void)
{
    const char *path = make_db("hdr.db", "DELETE", 100, MARKER);
    char out[4096];
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --keyfile %s %s", keyfile, path), 0);
    size_t len = 0;
    uint8_t *good = sr_test_read_file(path, &len);
    edit_header_slot(path, 1, active_back_to_v1);
    SR_CHECK_EQ_INT(read_all(path), SQLITE_NOTADB);
    SR_CHECK_MSG(strstr(sqlt_last_log(), "MAC") != NULL, "log: %s", sqlt_last_log());
    SR_CHECK(tdectl(out, sizeof out, "status --keyfile %s %s", keyfile, path) != 0);
    SR_CHECK(sr_test_write_file(path, good, len) == 0);
    edit_header_slot(path, 0, generation_max); /* the older slot made the newest */
    SR_CHECK_EQ_INT(read_all(path), SQLITE_NOTADB);
    SR_CHECK(tdectl(out, sizeof out, "rekey --keyfile %s %s", keyfile, path) != 0); /* nothing lands in a dead slot */
    SR_CHECK(sr_test_write_file(path, good, len) == 0);
    SR_CHECK_EQ_INT(read_all(path), SQLITE_OK);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "status --keyfile %s %s", keyfile, path), 0);
    SR_CHECK_CONTAINS(out, "header MAC   verified");
    free(good);
}

/* 4: one page context, both sides of a fork: no nonce in common. */
static void test_fork_never_repeats_a_nonce(void)
{
    sr_uuid_t id;
    sr_uuid_generate(&id);
    sr_tde_space_t *s = NULL;
    sr_tde_pagectx_t *pc = NULL;
    uint8_t key[32] = {9}, plain[512] = {1}, page[512];
    SR_CHECK_OK(sr_tde_space_new(&id, SR_TDE_CIPHER_AES_256_GCM, &s));
    SR_CHECK_OK(sr_tde_space_add_key(s, 1, key, 0));
    SR_CHECK_OK(sr_tde_space_set_active(s, 1));
    SR_CHECK_OK(sr_tde_pagectx_new(s, &pc));
    sr_tde_place_t place = {.kind = SR_TDE_FILE_DB, .location = 1};
    SR_CHECK_OK(sr_tde_page_encrypt(pc, &place, plain, page, sizeof page)); /* nonces pre-generated */
    enum { N = 300 };
    int fds[2];
    SR_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < N; i++) {
            if (sr_tde_page_encrypt(pc, &place, plain, page, sizeof page) != SR_OK) _exit(2);
            if (write(fds[1], page + 512 - 32, 12) != 12) _exit(3);
        }
        _exit(0);
    }
    static uint8_t mine[N][12], theirs[N][12];
    for (int i = 0; i < N; i++) {
        SR_CHECK_OK(sr_tde_page_encrypt(pc, &place, plain, page, sizeof page));
        memcpy(mine[i], page + 512 - 32, 12);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got < sizeof theirs && (r = read(fds[0], (uint8_t *)theirs + got, sizeof theirs - got)) > 0) got += (size_t)r;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK_EQ_INT(WEXITSTATUS(status), 0);
    SR_CHECK_EQ_INT(got, sizeof theirs);
    int repeats = 0;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < N; k++) repeats += memcmp(mine[i], theirs[k], 12) == 0;
    SR_CHECK_MSG(repeats == 0, "%d nonces used by both parent and child", repeats);
    sr_tde_pagectx_free(pc);
    sr_tde_space_free(s);
}

/* 5: encrypt creates nothing but its destination (temp files are the VFS's,
 * encrypted); tdectl runs without core dumps; a key file of another owner. */
static void test_tdectl_encrypt_writes_no_plaintext_and_is_hardened(void)
{
    const char *dir = sr_test_path("enc-dir");
    SR_CHECK(mkdir(dir, 0700) == 0);
    char plain[600], dst[600], out[8192];
    snprintf(plain, sizeof plain, "%s", sr_test_path("plain-src.db"));
    snprintf(dst, sizeof dst, "%s/out.db", dir);
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(plain, NULL, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(db, 3, 3000, MARKER), SQLITE_OK);
    sqlite3_close(db);
    int in = inotify_init1(IN_NONBLOCK);
    SR_CHECK(in >= 0 && inotify_add_watch(in, dir, IN_CREATE) >= 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "encrypt --keyfile %s %s %s", keyfile, plain, dst), 0);
    char events[8192];
    ssize_t n = read(in, events, sizeof events);
    for (ssize_t off = 0; off < n;) {
        struct inotify_event *e = (struct inotify_event *)(events + off);
        SR_CHECK_MSG(strcmp(e->name, "out.db") == 0 || strcmp(e->name, "out.db-journal") == 0,
                     "tdectl encrypt created %s beside the destination", e->name);
        off += (ssize_t)(sizeof *e + e->len);
    }
    close(in);
    char where[1024];
    SR_CHECK_MSG(!sqlt_marker_on_disk(dir, MARKER, where, sizeof where), "plaintext in %s", where);

    /* hardened: tdectl and tde-audit, blocked opening a FIFO (as a key file,
     * as a log), show their limits */
    char fifo[600];
    snprintf(fifo, sizeof fifo, "%s", sr_test_path("key.fifo"));
    SR_CHECK(mkfifo(fifo, 0600) == 0);
    for (int tool = 0; tool < 2; tool++) {
        pid_t pid = fork();
        if (pid == 0) {
            if (tool == 0) execl(sr_test_build_path("tde/tdectl"), "tdectl", "verify", "--keyfile", fifo, dst, (char *)NULL);
            else execl(sr_test_build_path("audit/tde-audit"), "tde-audit", "verify", fifo, (char *)NULL);
            _exit(127);
        }
        char limits_path[64], line[256];
        snprintf(limits_path, sizeof limits_path, "/proc/%d/limits", (int)pid);
        int core_zero = 0;
        for (int tries = 0; tries < 200 && !core_zero; tries++) {
            usleep(10000);
            FILE *lf = fopen(limits_path, "r");
            while (lf && fgets(line, sizeof line, lf))
                if (strncmp(line, "Max core file size", 18) == 0) core_zero = strstr(line, " 0 ") != NULL;
            if (lf) fclose(lf);
        }
        SR_CHECK_MSG(core_zero, "%s runs with core dumps enabled", tool ? "tde-audit" : "tdectl");
        int w = open(fifo, O_WRONLY);
        if (w >= 0) close(w);
        int status = 0;
        waitpid(pid, &status, 0);
    }
    unlink(fifo);

    /* a 0600 key file owned by someone else (needs root to make one) */
    if (geteuid() == 0) {
        char other[600];
        snprintf(other, sizeof other, "%s", sr_test_path("other-owner.key"));
        SR_CHECK_OK(sr_keyfile_create(other));
        SR_CHECK(chown(other, 4321, 4321) == 0);
        SR_CHECK_EQ_INT(tdectl(out, sizeof out, "status --keyfile %s %s", other, dst), 4); /* a key it will not use */
        SR_CHECK_CONTAINS(out, "owned by uid 4321");
    } else {
        printf("  (not root: the key-file owner check is not exercised)\n");
    }
}

/* 6: a shim VFS above strongroom whose file objects hide ours. */
typedef struct shim_file {
    sqlite3_file base;
    sqlite3_file *lower; /* separately allocated: SQLite's file object is not strongroom's */
    int flags;
} shim_file_t;

static int shim_exit_at_db_sync; /* a crash: the process ends when a main database is synced */

#define SHIM_LOWER(f) (((shim_file_t *)(f))->lower)
static int shim_close(sqlite3_file *f)
{
    int rc = SHIM_LOWER(f)->pMethods->xClose(SHIM_LOWER(f));
    sqlite3_free(SHIM_LOWER(f));
    return rc;
}
static int shim_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) { return SHIM_LOWER(f)->pMethods->xRead(SHIM_LOWER(f), b, n, o); }
static int shim_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) { return SHIM_LOWER(f)->pMethods->xWrite(SHIM_LOWER(f), b, n, o); }
static int shim_truncate(sqlite3_file *f, sqlite3_int64 s) { return SHIM_LOWER(f)->pMethods->xTruncate(SHIM_LOWER(f), s); }
static int shim_sync(sqlite3_file *f, int fl)
{
    if (shim_exit_at_db_sync && (((shim_file_t *)f)->flags & SQLITE_OPEN_MAIN_DB)) _exit(0);
    return SHIM_LOWER(f)->pMethods->xSync(SHIM_LOWER(f), fl);
}
static int shim_size(sqlite3_file *f, sqlite3_int64 *s) { return SHIM_LOWER(f)->pMethods->xFileSize(SHIM_LOWER(f), s); }
static int shim_lock(sqlite3_file *f, int l) { return SHIM_LOWER(f)->pMethods->xLock(SHIM_LOWER(f), l); }
static int shim_unlock(sqlite3_file *f, int l) { return SHIM_LOWER(f)->pMethods->xUnlock(SHIM_LOWER(f), l); }
static int shim_check(sqlite3_file *f, int *o) { return SHIM_LOWER(f)->pMethods->xCheckReservedLock(SHIM_LOWER(f), o); }
static int shim_fcntl(sqlite3_file *f, int op, void *a) { return SHIM_LOWER(f)->pMethods->xFileControl(SHIM_LOWER(f), op, a); }
static int shim_sector(sqlite3_file *f) { return SHIM_LOWER(f)->pMethods->xSectorSize(SHIM_LOWER(f)); }
static int shim_caps(sqlite3_file *f) { return SHIM_LOWER(f)->pMethods->xDeviceCharacteristics(SHIM_LOWER(f)); }
static int shim_shm_map(sqlite3_file *f, int p, int s, int e, void volatile **pp) { return SHIM_LOWER(f)->pMethods->xShmMap(SHIM_LOWER(f), p, s, e, pp); }
static int shim_shm_lock(sqlite3_file *f, int o, int n, int fl) { return SHIM_LOWER(f)->pMethods->xShmLock(SHIM_LOWER(f), o, n, fl); }
static void shim_shm_barrier(sqlite3_file *f) { SHIM_LOWER(f)->pMethods->xShmBarrier(SHIM_LOWER(f)); }
static int shim_shm_unmap(sqlite3_file *f, int d) { return SHIM_LOWER(f)->pMethods->xShmUnmap(SHIM_LOWER(f), d); }

static const sqlite3_io_methods shim_methods = {
    .iVersion = 2, .xClose = shim_close, .xRead = shim_read, .xWrite = shim_write, .xTruncate = shim_truncate,
    .xSync = shim_sync, .xFileSize = shim_size, .xLock = shim_lock, .xUnlock = shim_unlock,
    .xCheckReservedLock = shim_check, .xFileControl = shim_fcntl, .xSectorSize = shim_sector,
    .xDeviceCharacteristics = shim_caps, .xShmMap = shim_shm_map, .xShmLock = shim_shm_lock,
    .xShmBarrier = shim_shm_barrier, .xShmUnmap = shim_shm_unmap,
};

static sqlite3_vfs shim_vfs;
static int shim_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *f, int flags, int *out)
{
    sqlite3_vfs *lo = v->pAppData;
    shim_file_t *s = (shim_file_t *)f;
    s->base.pMethods = NULL;
    if (!(s->lower = sqlite3_malloc(lo->szOsFile))) return SQLITE_NOMEM;
    memset(s->lower, 0, (size_t)lo->szOsFile);
    int rc = lo->xOpen(lo, name, s->lower, flags, out);
    if (rc != SQLITE_OK) {
        sqlite3_free(s->lower);
        return rc;
    }
    s->base.pMethods = &shim_methods;
    s->flags = flags;
    return SQLITE_OK;
}

static void register_shim(void)
{
    if (sqlite3_vfs_find("shim")) return;
    sqlite3_vfs *lo = sqlite3_vfs_find("strongroom");
    shim_vfs = *lo;
    shim_vfs.iVersion = 2;
    shim_vfs.zName = "shim";
    shim_vfs.szOsFile = (int)sizeof(shim_file_t);
    shim_vfs.pAppData = lo;
    shim_vfs.xOpen = shim_open;
    SR_CHECK_EQ_INT(sqlite3_vfs_register(&shim_vfs, 0), SQLITE_OK);
}

static void test_vfs_stacked_above_strongroom(void)
{
    register_shim();
    char dir[600];
    snprintf(dir, sizeof dir, "%s", sr_test_path("stacked"));
    SR_CHECK(mkdir(dir, 0700) == 0);
    static const char *modes[] = {"DELETE", "WAL"};
    for (int m = 0; m < 2; m++) {
        char plain[600], enc[700], sql[64], fp1[65], fp2[65];
        snprintf(plain, sizeof plain, "%s", sr_test_path(m ? "stack-plain-wal.db" : "stack-plain.db"));
        snprintf(enc, sizeof enc, "%s/%s", dir, m ? "stack-wal.db" : "stack.db");
        snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", modes[m]);
        sqlite3 *p = NULL, *e = NULL;
        SR_CHECK_EQ_INT(sqlt_open(plain, NULL, NULL, &p), SQLITE_OK);
        char uri[1400];
        snprintf(uri, sizeof uri, "file:%s?vfs=shim&keyfile=%s", enc, keyfile);
        SR_CHECK_EQ_INT(sqlite3_open_v2(uri, &e, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL),
                        SQLITE_OK);
        SR_CHECK_EQ_INT(sqlt_exec(p, sql), SQLITE_OK);
        SR_CHECK_EQ_INT(sqlt_exec(e, sql), SQLITE_OK);
        SR_CHECK_EQ_INT(sqlt_workload(p, 11, 1500, MARKER), SQLITE_OK);
        SR_CHECK_MSG(sqlt_workload(e, 11, 1500, MARKER) == SQLITE_OK, "%s through the shim: %s (log: %s)", modes[m],
                     sqlite3_errmsg(e), sqlt_last_log());
        SR_CHECK_STR(sqlt_fingerprint(e, fp2), sqlt_fingerprint(p, fp1));
        sqlite3_close(p), sqlite3_close(e);
        char where[1024];
        SR_CHECK_MSG(!sqlt_marker_on_disk(dir, MARKER, where, sizeof where), "plaintext in %s", where);
    }
}

/* A database that passes through strongroom in plaintext (plaintext=1)
 * keeps its write lock while SQLite opens its journal or WAL: the VFS used to
 * tell a plaintext database's journal by reading the database file through
 * a descriptor of its own, and closing it dropped every POSIX lock of the
 * process on the file, so another process could write at the same time. */
static void test_plaintext_database_keeps_its_locks(void)
{
    static const char *modes[] = {"DELETE", "WAL"};
    for (int m = 0; m < 2; m++) {
        char path[600], uri[1400], sql[64];
        snprintf(path, sizeof path, "%s", sr_test_path(m ? "locks-plain-wal.db" : "locks-plain.db"));
        snprintf(uri, sizeof uri, "file:%s?vfs=strongroom&plaintext=1", path);
        snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", modes[m]);
        sqlite3 *db = NULL;
        SR_CHECK_EQ_INT(sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL),
                        SQLITE_OK);
        SR_CHECK_EQ_INT(sqlt_exec(db, sql), SQLITE_OK);
        SR_CHECK_EQ_INT(sqlt_exec(db, "CREATE TABLE t(x); BEGIN IMMEDIATE; INSERT INTO t VALUES(1)"), SQLITE_OK);
        SR_CHECK_MSG(lock_bytes_held(path) == 1, "%s: the write transaction's lock is gone", modes[m]);
        SR_CHECK_EQ_INT(sqlt_exec(db, "COMMIT"), SQLITE_OK);
        sqlite3_close(db);
    }
}

/* 6b: a commit over two databases cut after the main database's pages were
 * written, its super-journal then deleted: the main journal is not hot and
 * the commit stands (SQLite's crash8-4.10). The path's length moves the
 * super-journal record's closing magic on and off an 8-byte boundary, where
 * it once read as an unsealed header and the journal was played back. */
static void test_super_journal_deleted_commit_stands(void)
{
    register_shim();
    for (int n = 0; n < 8; n++) {
        char a[700], b[700], journal[720], sql[1600];
        snprintf(a, sizeof a, "%s", sr_test_path("super-a.db"));
        snprintf(b, sizeof b, "%s", sr_test_path("super-b.db"));
        snprintf(a + strlen(a) - 3, 12, "%.*s.db", n, "xxxxxxx");
        snprintf(journal, sizeof journal, "%s-journal", a);
        const char *dbs[] = {a, b};
        for (int i = 0; i < 2; i++) {
            sqlite3 *db = NULL;
            unlink(dbs[i]);
            SR_CHECK_EQ_INT(sqlt_open(dbs[i], keyfile, NULL, &db), SQLITE_OK);
            SR_CHECK_EQ_INT(sqlt_exec(db, "CREATE TABLE t(k, v); INSERT INTO t VALUES(1, 1)"), SQLITE_OK);
            sqlite3_close(db);
        }
        pid_t pid = fork();
        if (pid == 0) {
            sqlite3 *db = NULL;
            snprintf(sql, sizeof sql, "file:%s?vfs=shim&keyfile=%s", a, keyfile);
            if (sqlite3_open_v2(sql, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, NULL) != SQLITE_OK) _exit(2);
            snprintf(sql, sizeof sql, "ATTACH 'file:%s?vfs=shim&keyfile=%s' AS aux", b, keyfile);
            if (sqlt_exec(db, sql) != SQLITE_OK) _exit(3);
            shim_exit_at_db_sync = 1;
            sqlt_exec(db, "BEGIN; UPDATE t SET v = 2; UPDATE aux.t SET v = 2; COMMIT");
            _exit(4); /* the commit finished: no crash happened */
        }
        int status = 0;
        waitpid(pid, &status, 0);
        SR_CHECK_EQ_INT(WEXITSTATUS(status), 0);
        size_t len = 0;
        uint8_t *j = sr_test_read_file(journal, &len);
        SR_CHECK(j && len > 16);
        uint32_t name_len = be32(j + len - 16);
        SR_CHECK(name_len > 0 && name_len + 16 < len);
        char super[700];
        snprintf(super, sizeof super, "%.*s", (int)name_len, (const char *)j + len - 16 - name_len);
        free(j);
        SR_CHECK_MSG(unlink(super) == 0, "super-journal %s", super);
        sqlite3 *db = NULL;
        SR_CHECK_EQ_INT(sqlt_open(a, keyfile, NULL, &db), SQLITE_OK);
        SR_CHECK_MSG(sqlt_int(db, "SELECT v FROM t") == 2, "%s: the committed value was rolled back", a);
        SR_CHECK_STR(sqlt_integrity(db), "ok");
        sqlite3_close(db);
    }
}

/* 7: page-size changes are refused with an error; nothing is destroyed. */
static void test_page_size_changes_refused_database_intact(void)
{
    const char *path = make_db("resize.db", "DELETE", 300, MARKER);
    sqlite3 *db = NULL;
    char fp1[65], fp2[65];
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    sqlt_fingerprint(db, fp1);
    SR_CHECK(sqlt_exec(db, "PRAGMA page_size=1024") != SQLITE_OK);
    SR_CHECK_CONTAINS(sqlite3_errmsg(db), "page size of an encrypted database is fixed");
    SR_CHECK_EQ_INT(sqlt_exec(db, "VACUUM"), SQLITE_OK);
    sqlite3_close(db);
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_STR(sqlt_fingerprint(db, fp2), fp1);
    /* the backup API from an encrypted database of another page size */
    const char *small = sr_test_path("small.db");
    sqlite3 *s = NULL;
    SR_CHECK_EQ_INT(sqlt_open(small, keyfile, NULL, &s), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(s, "PRAGMA page_size=1024"), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(s, 2, 200, MARKER), SQLITE_OK);
    sqlite3_backup *b = sqlite3_backup_init(db, "main", s, "main");
    int rc = b ? sqlite3_backup_step(b, -1) : SQLITE_ERROR;
    if (b) sqlite3_backup_finish(b);
    SR_CHECK_MSG(rc != SQLITE_DONE, "a backup between page sizes reported success");
    sqlite3_close(db);
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    SR_CHECK_STR(sqlt_fingerprint(db, fp2), fp1);
    /* an empty :memory: database backed up onto it: an empty database that opens */
    sqlite3 *mem = NULL;
    SR_CHECK_EQ_INT(sqlite3_open(":memory:", &mem), SQLITE_OK);
    b = sqlite3_backup_init(db, "main", mem, "main");
    rc = b ? sqlite3_backup_step(b, -1) : SQLITE_ERROR;
    if (b) sqlite3_backup_finish(b);
    sqlite3_close(mem), sqlite3_close(db), sqlite3_close(s);
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    if (rc == SQLITE_DONE) SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM sqlite_schema"), 0);
    else SR_CHECK_STR(sqlt_fingerprint(db, fp2), fp1);
    sqlite3_close(db);
}

/* 8: PRAGMA page_size / auto_vacuum on a new database work as in SQLite,
 * on the main database and on an attached one. */
static void test_new_database_page_size_and_auto_vacuum(void)
{
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(sr_test_path("new1.db"), keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "PRAGMA page_size=8192; PRAGMA auto_vacuum=INCREMENTAL; CREATE TABLE t(x); "
                                  "INSERT INTO t VALUES (randomblob(50000)); DELETE FROM t"), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "PRAGMA page_size"), 8192);
    SR_CHECK_EQ_INT(sqlt_int(db, "PRAGMA auto_vacuum"), 2);
    SR_CHECK(sqlt_int(db, "PRAGMA freelist_count") > 0);
    SR_CHECK_EQ_INT(sqlt_exec(db, "PRAGMA incremental_vacuum"), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "PRAGMA freelist_count"), 0);
    char attach[1500];
    snprintf(attach, sizeof attach, "ATTACH '%s' AS two; PRAGMA two.page_size=2048; PRAGMA two.auto_vacuum=FULL; "
             "CREATE TABLE two.u(y); INSERT INTO two.u VALUES ('" MARKER "')", sqlt_uri(sr_test_path("new2.db"), keyfile, NULL));
    SR_CHECK_EQ_INT(sqlt_exec(db, attach), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "PRAGMA two.page_size"), 2048);
    SR_CHECK_EQ_INT(sqlt_int(db, "PRAGMA two.auto_vacuum"), 1);
    /* once pages exist, another size is an error, not a silent no-op */
    SR_CHECK(sqlt_exec(db, "PRAGMA page_size=1024") != SQLITE_OK);
    SR_CHECK_CONTAINS(sqlite3_errmsg(db), "fixed once its first page is written");
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    sqlite3_close(db);
    SR_CHECK_EQ_INT(sqlt_open(sr_test_path("new2.db"), keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "PRAGMA page_size"), 2048);
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM u"), 1);
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    sqlite3_close(db);
    SR_CHECK_MSG(!sr_test_file_contains(sr_test_path("new2.db"), MARKER, strlen(MARKER)), "plaintext in new2.db");
}

/* Found by SQLite's suite (multi-client tests): a process that opened a new,
 * empty database keeps the default page size in memory while another
 * process writes the first pages at another size; its reads must follow
 * (it used to decrypt four 1024-byte pages as one 4096-byte page). */
static void test_page_size_set_by_another_process(void)
{
    const char *path = sr_test_path("other-process.db");
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM sqlite_schema"), 0); /* opened while empty */
    pid_t pid = fork();
    if (pid == 0) {
        sqlite3 *c = NULL;
        int rc = sqlt_open(path, keyfile, NULL, &c);
        if (rc == SQLITE_OK) rc = sqlt_exec(c, "PRAGMA page_size=1024; CREATE TABLE t1(a, b); INSERT INTO t1 VALUES (1, 2)");
        sqlite3_close(c);
        _exit(rc == SQLITE_OK ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK_EQ_INT(WEXITSTATUS(status), 0);
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM t1"), 1);
    SR_CHECK_EQ_INT(sqlt_int(db, "PRAGMA page_size"), 1024);
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    sqlite3_close(db);
}

/* Found by SQLite's suite (exists.test): a connection that writes to a WAL
 * another connection started takes the page size from the shared index,
 * never reads the WAL header, and framed its writes with the tablespace's
 * default page size while the new database's pages were all still in the
 * WAL at another size. */
static void test_second_writer_of_a_new_wal(void)
{
    const char *path = sr_test_path("second-writer.db");
    sqlite3 *b = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &b), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(b, "SELECT count(*) FROM sqlite_schema"), 0); /* this process: opened empty */
    int go[2], done[2];
    SR_CHECK(pipe(go) == 0 && pipe(done) == 0);
    pid_t pid = fork();
    if (pid == 0) { /* the first writer stays alive, so the WAL index is its (no recovery by the other) */
        sqlite3 *a = NULL;
        char c = 0;
        int rc = sqlt_open(path, keyfile, NULL, &a);
        if (rc == SQLITE_OK)
            rc = sqlt_exec(a, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; "
                              "CREATE TABLE t1(x); INSERT INTO t1 VALUES (1)");
        if (write(go[1], "x", 1) != 1 || read(done[0], &c, 1) != 1) rc = SQLITE_ERROR;
        sqlite3_close(a);
        _exit(rc == SQLITE_OK ? 0 : 1);
    }
    char c = 0;
    SR_CHECK(read(go[0], &c, 1) == 1);
    SR_CHECK_EQ_INT(sqlt_int(b, "SELECT sum(x) FROM t1"), 1);
    SR_CHECK_EQ_INT(sqlt_exec(b, "INSERT INTO t1 SELECT x + 1 FROM t1; INSERT INTO t1 SELECT x + 2 FROM t1"), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(b, "SELECT sum(x) FROM t1"), 10);
    SR_CHECK(write(done[1], "x", 1) == 1);
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK_EQ_INT(WEXITSTATUS(status), 0);
    SR_CHECK_STR(sqlt_integrity(b), "ok");
    sqlite3_close(b);
    close(go[0]), close(go[1]), close(done[0]), close(done[1]);
}

/* 9: any length at any offset, and the stock sqlite3's .recover. */
static void test_reads_of_any_length(void)
{
    const char *path = make_db("reads.db", "DELETE", 300, MARKER);
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK(sqlt_int(db, "SELECT count(*) FROM t") > 0);
    sqlite3_file *fp = NULL;
    SR_CHECK_EQ_INT(sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &fp), SQLITE_OK);
    static uint8_t pages[3 * PS], many[3 * PS], part[PS];
    for (int i = 0; i < 3; i++) SR_CHECK_EQ_INT(fp->pMethods->xRead(fp, pages + i * PS, PS, (sqlite3_int64)i * PS), SQLITE_OK);
    SR_CHECK_EQ_INT(fp->pMethods->xRead(fp, many, 3 * PS, 0), SQLITE_OK);
    SR_CHECK_MEM(many, pages, sizeof many);
    SR_CHECK_EQ_INT(fp->pMethods->xRead(fp, part, 512, PS + 1024), SQLITE_OK);
    SR_CHECK_MEM(part, pages + PS + 1024, 512);
    SR_CHECK_EQ_INT(fp->pMethods->xRead(fp, part, 3000, PS - 1000), SQLITE_OK); /* across a page boundary */
    SR_CHECK_MEM(part, pages + PS - 1000, 3000);
    sqlite3_close(db);
    /* .recover through the stock sqlite3, where its build has sqlite_dbpage
     * (Debian's has not: then SQLite's own recover tests, run by
     * tests/sqlite-suite, are where it is covered) */
    char cmd[4096], out[65536], plain[600];
    snprintf(plain, sizeof plain, "%s", sr_test_path("recover-plain.db"));
    SR_CHECK_EQ_INT(sqlt_open(plain, NULL, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "CREATE TABLE r(x); INSERT INTO r VALUES ('recoverable')"), SQLITE_OK);
    sqlite3_close(db);
    snprintf(cmd, sizeof cmd, "sqlite3 %s .recover 2>&1", plain);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    if (p) pclose(p);
    if (!strstr(out, "recoverable")) {
        printf("  (this sqlite3 cannot .recover even a plaintext database: skipped)\n");
        return;
    }
    snprintf(cmd, sizeof cmd, "printf '.load %s\\n.open file:%s?vfs=strongroom&keyfile=%s\\n.recover\\n' | sqlite3 2>&1",
             sr_test_build_path("tde/strongroom"), path, keyfile);
    p = popen(cmd, "r");
    n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    if (p) pclose(p);
    SR_CHECK_MSG(strstr(out, MARKER) != NULL && strstr(out, "disk I/O error") == NULL, ".recover: %.400s", out);
}

/* A VFS above strongroom that merges writes (the crash simulator flushing
 * sectors) hands it spans of any shape: in the WAL a span from the WAL
 * header over whole and partial frames, in the database several pages and
 * parts of pages, in the journal a span over records. Nothing of them may
 * reach the disk in plaintext (the old code wrote a span starting in the WAL
 * header, and any unrecognised journal write, as it came). */
static void test_merged_writes_never_reach_disk_in_plaintext(void)
{
    const char *path = make_db("spans.db", "WAL", 50, MARKER);
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "PRAGMA wal_autocheckpoint=0; INSERT INTO t(k, v) VALUES (1, 'w')"), SQLITE_OK);
    sqlite3_file *wal = NULL, *main_db = NULL;
    SR_CHECK_EQ_INT(sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &main_db), SQLITE_OK);
    static uint8_t span[4 * (24 + PS)], back[4 * (24 + PS)], hdr[32];
    enum { FIRST = 200 }; /* frames far past the log's end: SQLite never looks there */
    /* pages as SQLite makes them: data, and 32 reserved bytes of zeros at the end */
    for (size_t i = 0; i + 32 <= sizeof span; i += 32) memcpy(span + i, MARKER "-SPAN-DATA-PADDING-", 32);
    for (int fr = 0; fr < 3; fr++) {
        memset(span + fr * (24 + PS), 0, 24);            /* frame headers: plaintext by design */
        memset(span + fr * (24 + PS) + 24 + PS - 32, 0, 32); /* the page's reserved bytes */
    }
    /* from a frame header over two frames and half of a third page */
    sqlite3_int64 at = 32 + (sqlite3_int64)FIRST * (24 + PS);
    SR_CHECK_EQ_INT(wal->pMethods->xRead(wal, hdr, 32, 0), SQLITE_OK);
    int wal_span = 3 * (24 + PS) - 200;
    SR_CHECK_EQ_INT(wal->pMethods->xWrite(wal, span, wal_span, at), SQLITE_OK);
    SR_CHECK_EQ_INT(wal->pMethods->xRead(wal, back, wal_span, at), SQLITE_OK);
    SR_CHECK_MEM(back, span, (size_t)wal_span);

    /* a span from the WAL header over frame 0 (rewritten with its own bytes, so the log stays valid):
     * the header part as is, the frame's page encrypted */
    static uint8_t orig[32 + 24 + PS];
    SR_CHECK_EQ_INT(wal->pMethods->xRead(wal, orig, (int)sizeof orig, 0), SQLITE_OK);
    SR_CHECK_EQ_INT(wal->pMethods->xWrite(wal, orig, (int)sizeof orig, 0), SQLITE_OK);
    /* the database: three pages and a half, past the end of the database */
    sqlite3_int64 size = 0;
    SR_CHECK_EQ_INT(main_db->pMethods->xFileSize(main_db, &size), SQLITE_OK);
    for (size_t i = 0; i + 32 <= sizeof span; i += 32) memcpy(span + i, MARKER "-SPAN-DATA-PADDING-", 32);
    for (int pg = 0; pg < 4; pg++) memset(span + pg * PS + PS - 32, 0, 32);
    SR_CHECK_EQ_INT(main_db->pMethods->xWrite(main_db, span, 3 * PS + PS / 2, size + PS), SQLITE_OK);
    SR_CHECK_EQ_INT(main_db->pMethods->xRead(main_db, back, 3 * PS + PS / 2, size + PS), SQLITE_OK);
    SR_CHECK_MEM(back, span, 3 * PS + PS / 2);

    SR_CHECK_EQ_INT(main_db->pMethods->xTruncate(main_db, size), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM t WHERE v = 'w'"), 1);
    sqlite3_close(db);
    char walpath[600];
    snprintf(walpath, sizeof walpath, "%s-wal", path);
    SR_CHECK_MSG(!sr_test_file_contains(walpath, MARKER, strlen(MARKER)), "plaintext in the WAL");
    SR_CHECK_MSG(!sr_test_file_contains(path, MARKER, strlen(MARKER)), "plaintext in the database");
    SR_CHECK_EQ_INT(read_all(path), SQLITE_OK);

    /* the journal: a merged span over records is refused, nothing written */
    const char *jpath = make_db("spans-j.db", "DELETE", 50, MARKER);
    SR_CHECK_EQ_INT(sqlt_open(jpath, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "PRAGMA journal_mode=PERSIST; BEGIN; UPDATE t SET v = v || 'j'"), SQLITE_OK);
    sqlite3_file *jr = NULL;
    SR_CHECK_EQ_INT(sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &jr), SQLITE_OK);
    SR_CHECK(jr && jr->pMethods);
    if (jr && jr->pMethods) {
        SR_CHECK_EQ_INT(jr->pMethods->xWrite(jr, span, 4096, 1 << 20), SQLITE_IOERR_WRITE);
    }
    SR_CHECK_EQ_INT(sqlt_exec(db, "ROLLBACK"), SQLITE_OK);
    sqlite3_close(db);
    char jrpath[600];
    snprintf(jrpath, sizeof jrpath, "%s-journal", jpath);
    SR_CHECK_MSG(!sr_test_file_contains(jrpath, MARKER "-SPAN", strlen(MARKER "-SPAN")), "plaintext in the journal");
}

/* 10: the version-3 methods reach the VFS below. */
static void test_system_calls_pass_through(void)
{
    sqlite3_vfs *sr = sqlite3_vfs_find("strongroom"), *unix_vfs = sqlite3_vfs_find("unix");
    SR_CHECK(sr && unix_vfs && sr->iVersion >= 3);
    SR_CHECK(sr->xGetSystemCall(sr, "open") == unix_vfs->xGetSystemCall(unix_vfs, "open"));
    SR_CHECK_STR(sr->xNextSystemCall(sr, NULL), unix_vfs->xNextSystemCall(unix_vfs, NULL));
    sqlite3_syscall_ptr orig = sr->xGetSystemCall(sr, "getpagesize");
    SR_CHECK_EQ_INT(sr->xSetSystemCall(sr, "getpagesize", orig), SQLITE_OK);
    SR_CHECK(sr->xSetSystemCall(sr, "no-such-call", orig) == SQLITE_NOTFOUND);
}

/* 11: 2,000 failed reads write a bounded number of warning lines. */
static void test_warnings_rate_limited(void)
{
    const char *path = make_db("noisy.db", "DELETE", 300, MARKER);
    flip(path, HDR + 2 * PS + 100);
    char log_path[600];
    snprintf(log_path, sizeof log_path, "%s", sr_test_path("stderr.log"));
    fflush(stderr);
    int saved = dup(2), fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    int failures = 0;
    for (int i = 0; i < 2000; i++) {
        sqlite3_db_release_memory(db);
        failures += sqlt_exec(db, "SELECT count(*) FROM t INDEXED BY t_k WHERE k > -1; SELECT sum(length(v)) FROM t") != SQLITE_OK;
    }
    sqlite3_close(db);
    fflush(stderr);
    dup2(saved, 2);
    close(saved), close(fd);
    size_t len = 0;
    char *log = (char *)sr_test_read_file(log_path, &len);
    int lines = 0;
    for (size_t i = 0; log && i < len; i++) lines += log[i] == '\n';
    SR_CHECK_MSG(failures >= 1000, "only %d reads failed", failures);
    SR_CHECK_MSG(lines <= 60, "%d warning lines for %d failures", lines, failures);
    free(log);
}

static uint32_t versions_in_file(const char *path, uint32_t want)
{
    size_t len = 0;
    uint8_t *b = sr_test_read_file(path, &len);
    uint32_t n = 0;
    for (size_t off = HDR; b && off + PS <= len; off += PS) n += sr_tde_page_key_version(b + off, PS) == want;
    free(b);
    return n;
}

/* 13: a connection that only writes takes in a rekey at its next transaction. */
static void test_rekey_reaches_a_writing_connection(void)
{
    static const char *modes[] = {"DELETE", "WAL"};
    for (int m = 0; m < 2; m++) {
        const char *path = make_db(m ? "rekey-wal.db" : "rekey.db", modes[m], 100, MARKER);
        sqlite3 *db = NULL;
        SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
        SR_CHECK_EQ_INT(sqlt_exec(db, "INSERT INTO t(k, v) VALUES (1, 'before')"), SQLITE_OK);
        char out[4096];
        SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --keyfile %s %s", keyfile, path), 0);
        SR_CHECK_EQ_INT(sqlt_exec(db, "INSERT INTO t(k, v) SELECT k, v FROM t"), SQLITE_OK);
        SR_CHECK_EQ_INT(sqlt_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)"), SQLITE_OK);
        sqlite3_close(db);
        SR_CHECK_MSG(versions_in_file(path, 2) > 0, "%s: no page written under key version 2 after the rekey",
                     modes[m]);
    }
}

/* 14: an invalid URI value is an error naming the parameter. */
static void test_invalid_uri_values(void)
{
    static const char *bad[] = {"&page_size=4294971392", "&page_size=abc", "&page_size=1024x", "&page_size=4096",
                                "&plaintext=abc", "&plaintext=2", "&cipher=rot13"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sqlite3 *db = NULL;
        sqlt_clear_log();
        int rc = sqlt_open(sr_test_path("uri.db"), keyfile, bad[i], &db);
        if (rc == SQLITE_OK) rc = sqlt_exec(db, "CREATE TABLE t(x)");
        SR_CHECK_MSG(rc != SQLITE_OK, "%s accepted", bad[i]);
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(strcspn(bad[i] + 1, "=")), bad[i] + 1);
        SR_CHECK_MSG(strstr(sqlt_last_log(), name) != NULL, "%s: log does not name it: %s", bad[i], sqlt_last_log());
        sqlite3_close(db);
    }
}

/* ---- 15: an action the audit log cannot record is not taken ------------------------------ */

/* tdectl run through a relay that refuses `event`: its exit status, its output in out. */
static int tdectl_refused(const char *sealer, const char *event, char *out, size_t cap, const char *args)
{
    char relay[700];
    snprintf(relay, sizeof relay, "%s/relay.sock", sr_test_tmpdir());
    pid_t pid = sr_test_refusing_relay(relay, sealer, event);
    setenv("STRONGROOM_AUDIT_SOCKET", relay, 1);
    int status = tdectl(out, cap, "%s", args);
    unsetenv("STRONGROOM_AUDIT_SOCKET");
    kill(pid, SIGTERM), waitpid(pid, NULL, 0);
    unlink(relay);
    SR_CHECK_MSG(strstr(out, "not done: the audit log cannot record") && strstr(out, event), "%s: %s", args, out);
    return status;
}

static uint32_t active_version(const char *path)
{
    sr_tde_header_t h;
    return sr_tde_file_header_read(path, NULL, &h, NULL) == SR_OK ? h.active_version : 0;
}

/* Each tdectl action that changes a tablespace or a key, with the sealer
 * refusing its record (and only that: the opens it makes are recorded):
 * refused, with nothing changed and nothing left behind — no plaintext copy,
 * no backup, no restored file, no new key version, no re-wrapped header, the
 * plaintext file not encrypted. Then, with its record taken, each is done,
 * and the log has the records, the decryption's before the copy exists. */
static void test_tdectl_does_not_act_unrecorded(void)
{
    char sock[700], log[700], sign[700], out[16384], args[4096];
    char plain[600], copy[600], backup[600], restored[600];
    snprintf(sock, sizeof sock, "%s/unrec-sealer.sock", sr_test_tmpdir());
    snprintf(log, sizeof log, "%s", sr_test_path("unrec-audit.log"));
    snprintf(sign, sizeof sign, "%s", sr_test_path("unrec-audit"));
    SR_CHECK_OK(sr_audit_keygen(sign));
    strcat(sign, ".sign");
    pid_t sealer = sr_test_start_sealer(sock, log, sign);
    const char *db = make_db("unrec.db", "wal", 300, MARKER);
    snprintf(plain, sizeof plain, "%s", sr_test_path("unrec-plain.db"));
    snprintf(copy, sizeof copy, "%s", sr_test_path("unrec-plain-copy.db"));
    snprintf(backup, sizeof backup, "%s", sr_test_path("unrec-backup.db"));
    snprintf(restored, sizeof restored, "%s", sr_test_path("unrec-restored.db"));
    size_t key_len = 0;
    uint8_t *key_before = sr_test_read_file(keyfile, &key_len);
    SR_CHECK(key_before != NULL);

    snprintf(args, sizeof args, "decrypt --keyfile %s %s %s", keyfile, db, copy);
    SR_CHECK_EQ_INT(tdectl_refused(sock, "tablespace.decrypt", out, sizeof out, args), 3);
    SR_CHECK_MSG(access(copy, F_OK) != 0, "a plaintext copy was written without its record");
    snprintf(args, sizeof args, "backup --keyfile %s %s %s", keyfile, db, backup);
    SR_CHECK_EQ_INT(tdectl_refused(sock, "tablespace.backup", out, sizeof out, args), 3);
    char partial[700];
    snprintf(partial, sizeof partial, "%s.strongroom-partial", backup);
    SR_CHECK(access(backup, F_OK) != 0 && access(partial, F_OK) != 0);
    uint32_t version = active_version(db);
    SR_CHECK(version > 0);
    snprintf(args, sizeof args, "rekey --keyfile %s %s", keyfile, db);
    SR_CHECK_EQ_INT(tdectl_refused(sock, "key.rekey", out, sizeof out, args), 3);
    SR_CHECK_EQ_INT((int)active_version(db), (int)version);
    snprintf(args, sizeof args, "rotate-master --keyfile %s %s", keyfile, db);
    SR_CHECK_EQ_INT(tdectl_refused(sock, "key.master_rotated", out, sizeof out, args), 3);
    size_t len = 0, db_len = 0;
    uint8_t *key_after = sr_test_read_file(keyfile, &len);
    SR_CHECK(key_after && len == key_len && memcmp(key_after, key_before, len) == 0);
    free(key_after);
    /* the master key rotated (recorded), the tablespace's re-wrap refused: its file as it was */
    uint8_t *db_before = sr_test_read_file(db, &db_len), *db_after = NULL;
    SR_CHECK_EQ_INT(tdectl_refused(sock, "key.rewrap", out, sizeof out, args), 3);
    SR_CHECK_CONTAINS(out, "master key version");
    SR_CHECK((db_after = sr_test_read_file(db, &len)) && len == db_len && memcmp(db_before, db_after, len) == 0);
    free(db_before), free(db_after);

    /* encrypt in place: the plaintext file stays plaintext */
    sqlite3 *p = NULL;
    SR_CHECK_EQ_INT(sqlt_open(plain, NULL, NULL, &p), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(p, 1, 50, MARKER), SQLITE_OK);
    sqlite3_close(p);
    snprintf(args, sizeof args, "encrypt --in-place --keyfile %s %s", keyfile, plain);
    SR_CHECK_EQ_INT(tdectl_refused(sock, "tablespace.encrypt", out, sizeof out, args), 3);
    sr_tde_header_t h;
    SR_CHECK(sr_tde_file_header_read(plain, NULL, &h, NULL) != SR_OK); /* no key header: still plaintext */
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "backup --keyfile %s %s %s", keyfile, db, backup), 0);
    snprintf(args, sizeof args, "restore --keyfile %s %s %s", keyfile, backup, restored);
    SR_CHECK_EQ_INT(tdectl_refused(sock, "tablespace.restore", out, sizeof out, args), 3);
    SR_CHECK(access(restored, F_OK) != 0);

    /* recorded: done */
    setenv("STRONGROOM_AUDIT_SOCKET", sock, 1);
    SR_CHECK_MSG(tdectl(out, sizeof out, "decrypt --keyfile %s %s %s", keyfile, db, copy) == 0, "%s", out);
    SR_CHECK_MSG(tdectl(out, sizeof out, "rekey --keyfile %s %s", keyfile, db) == 0, "%s", out);
    SR_CHECK_MSG(tdectl(out, sizeof out, "restore --keyfile %s %s %s", keyfile, backup, restored) == 0, "%s", out);
    unsetenv("STRONGROOM_AUDIT_SOCKET");
    SR_CHECK(access(copy, F_OK) == 0 && access(restored, F_OK) == 0 && active_version(db) == version + 1);
    kill(sealer, SIGTERM), waitpid(sealer, NULL, 0);
    static const char *const recorded[] = {"\"event\":\"tablespace.decrypt\"", "\"event\":\"key.rekey\"",
                                           "\"event\":\"tablespace.restore\""};
    for (size_t i = 0; i < sizeof recorded / sizeof *recorded; i++)
        SR_CHECK_MSG(sr_test_file_contains(log, recorded[i], strlen(recorded[i])), "%s not in the log", recorded[i]);
    free(key_before);
}

/* ---- 16: the files tdectl makes and replaces ---------------------------------------------- */

static void plain_db(const char *path, mode_t mode)
{
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, NULL, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(db, 1, 50, MARKER), SQLITE_OK);
    sqlite3_close(db);
    SR_CHECK(chmod(path, mode) == 0);
}

static int is_encrypted(const char *path)
{
    sr_tde_header_t h;
    return sr_tde_file_header_read(path, NULL, &h, NULL) == SR_OK;
}

/* Copies tdectl makes (a plaintext copy above all) are its user's alone
 * (0600), whatever the umask; a conversion in place keeps the file's mode
 * and owner (as root: a file of another user stays that user's), converts
 * the target of a symbolic link (the link stays a link), and refuses a file
 * with other hard links (they would keep the plaintext); a destination that
 * is a dangling symbolic link is refused. */
static void test_tdectl_files_modes_owners_and_links(void)
{
    char out[8192], src[600], copy[600], enc[600], backup[600], target[600], link_path[600], other[600];
    snprintf(src, sizeof src, "%s", sr_test_path("modes-src.db"));
    snprintf(copy, sizeof copy, "%s", sr_test_path("modes-plain-copy.db"));
    snprintf(enc, sizeof enc, "%s", sr_test_path("modes-enc.db"));
    snprintf(backup, sizeof backup, "%s", sr_test_path("modes-backup.db"));
    plain_db(src, 0640);
    mode_t old_umask = umask(022); /* tdectl's own umask decides, not the caller's */
    SR_CHECK_MSG(tdectl(out, sizeof out, "encrypt --keyfile %s %s %s", keyfile, src, enc) == 0, "%s", out);
    SR_CHECK_MSG(tdectl(out, sizeof out, "decrypt --keyfile %s %s %s", keyfile, enc, copy) == 0, "%s", out);
    SR_CHECK_MSG(tdectl(out, sizeof out, "backup --keyfile %s %s %s", keyfile, enc, backup) == 0, "%s", out);
    const char *made[] = {enc, copy, backup};
    for (size_t i = 0; i < 3; i++) {
        struct stat st;
        SR_CHECK(stat(made[i], &st) == 0);
        SR_CHECK_MSG((st.st_mode & 0777) == 0600, "%s: mode %o", made[i], (unsigned)(st.st_mode & 0777));
    }
    /* in place: mode and owner kept */
    SR_CHECK(chmod(src, 0640) == 0);
    int root = geteuid() == 0;
    if (root) SR_CHECK(chown(src, 65534, 65534) == 0);
    SR_CHECK_MSG(tdectl(out, sizeof out, "encrypt --in-place --keyfile %s %s", keyfile, src) == 0, "%s", out);
    struct stat st;
    SR_CHECK(stat(src, &st) == 0 && is_encrypted(src));
    SR_CHECK_MSG((st.st_mode & 0777) == 0640, "mode %o after encrypt --in-place", (unsigned)(st.st_mode & 0777));
    SR_CHECK_MSG(!root || (st.st_uid == 65534 && st.st_gid == 65534), "owner %u:%u after encrypt --in-place",
                 (unsigned)st.st_uid, (unsigned)st.st_gid);
    /* a symbolic link: its target converted, the link kept */
    snprintf(target, sizeof target, "%s", sr_test_path("modes-target.db"));
    snprintf(link_path, sizeof link_path, "%s", sr_test_path("modes-link.db"));
    plain_db(target, 0600);
    SR_CHECK(symlink(target, link_path) == 0);
    SR_CHECK_MSG(tdectl(out, sizeof out, "encrypt --in-place --keyfile %s %s", keyfile, link_path) == 0, "%s", out);
    SR_CHECK(lstat(link_path, &st) == 0 && S_ISLNK(st.st_mode));
    SR_CHECK_MSG(is_encrypted(target), "the link's target is still plaintext");
    /* another hard link: refused, nothing changed */
    snprintf(other, sizeof other, "%s", sr_test_path("modes-other-name.db"));
    SR_CHECK(unlink(target) == 0);
    plain_db(target, 0600);
    SR_CHECK(link(target, other) == 0);
    SR_CHECK(tdectl(out, sizeof out, "encrypt --in-place --keyfile %s %s", keyfile, target) != 0);
    SR_CHECK_CONTAINS(out, "hard links");
    SR_CHECK(!is_encrypted(target) && !is_encrypted(other));
    /* a destination that is a dangling symbolic link (in a shared directory, someone else's): refused, and the
     * file it points to not made */
    char dangling[600], pointed[600];
    snprintf(dangling, sizeof dangling, "%s", sr_test_path("modes-dangling.db"));
    snprintf(pointed, sizeof pointed, "%s", sr_test_path("modes-pointed-to.db"));
    SR_CHECK(symlink(pointed, dangling) == 0);
    SR_CHECK(tdectl(out, sizeof out, "decrypt --keyfile %s %s %s", keyfile, enc, dangling) == 3);
    SR_CHECK(tdectl(out, sizeof out, "backup --keyfile %s %s %s", keyfile, enc, dangling) == 3);
    SR_CHECK_MSG(access(pointed, F_OK) != 0, "tdectl wrote through a dangling symbolic link");
    umask(old_umask);
}

int main(void)
{
    sqlt_init();
    snprintf(keyfile, sizeof keyfile, "%s", sqlt_keyfile("harden.key"));
    SR_RUN(test_wal_frames_swapped_or_made_commit);
    SR_RUN(test_journal_records_swapped);
    SR_RUN(test_forged_hot_journal_is_not_played_back);
    SR_RUN(test_cut_file_refused_empty_rollback_fine);
    SR_RUN(test_key_header_edits_refused);
    SR_RUN(test_fork_never_repeats_a_nonce);
    SR_RUN(test_tdectl_encrypt_writes_no_plaintext_and_is_hardened);
    SR_RUN(test_vfs_stacked_above_strongroom);
    SR_RUN(test_plaintext_database_keeps_its_locks);
    SR_RUN(test_super_journal_deleted_commit_stands);
    SR_RUN(test_page_size_changes_refused_database_intact);
    SR_RUN(test_new_database_page_size_and_auto_vacuum);
    SR_RUN(test_page_size_set_by_another_process);
    SR_RUN(test_second_writer_of_a_new_wal);
    SR_RUN(test_reads_of_any_length);
    SR_RUN(test_merged_writes_never_reach_disk_in_plaintext);
    SR_RUN(test_system_calls_pass_through);
    SR_RUN(test_warnings_rate_limited);
    SR_RUN(test_rekey_reaches_a_writing_connection);
    SR_RUN(test_invalid_uri_values);
    SR_RUN(test_tdectl_does_not_act_unrecorded);
    SR_RUN(test_tdectl_files_modes_owners_and_links);
    return sr_test_finish();
}
