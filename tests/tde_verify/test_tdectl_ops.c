/*
 * tdectl's production operations with real processes (tdectl operations
 * issue): a backup of a database that a writer process keeps inserting into
 * is consistent (every row committed before it began, no half transaction),
 * encrypted (no plaintext marker anywhere on disk) and verified; restore
 * refuses to overwrite; wrong key, missing file, and a file-size limit hit
 * mid-backup are clean errors with their exit statuses, nothing left behind,
 * the source intact. encrypt --in-place: refused while another process has
 * the file open, finished by a re-run after SIGKILL at any moment, a clean
 * error on a full disk; a cipher switch there and back. rekey --rewrite
 * online, in WAL and rollback-journal mode, beside a writer and a reader of
 * other processes (their longest wait printed), and the journal of a batch
 * cut short finishing a torn page.
 */
#include "tdev.h"
#include "tde.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MARKER "PLAINTEXT-MARKER-7f3a"

/* A child that inserts rows (one per transaction) until told to stop. */
static pid_t start_writer(const char *path)
{
    pid_t pid = fork();
    if (pid == 0) {
        sqlite3 *db = NULL;
        if (sqlt_open(path, keyfile, NULL, &db) != SQLITE_OK) _exit(2);
        sqlite3_busy_timeout(db, 10000);
        for (int i = 0;; i++) {
            char sql[200];
            snprintf(sql, sizeof sql, "INSERT INTO t(v) VALUES('%s row %d ' || hex(randomblob(200)))", MARKER, i);
            if (sqlt_exec(db, sql) != SQLITE_OK) _exit(3);
        }
    }
    return pid;
}

static int stop_writer(pid_t pid)
{
    int st = 0;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM; /* it was still writing, without an error */
}

static void test_backup_of_a_live_database(void)
{
    char out[65536], backup[600], json_backup[600], where[600];
    char db_path[600];
    snprintf(db_path, sizeof db_path, "%s", sr_test_path("live.db"));
    snprintf(backup, sizeof backup, "%s", sr_test_path("live-backup.db"));
    snprintf(json_backup, sizeof json_backup, "%s", sr_test_path("live-backup-2.db"));
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(db_path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"),
                    SQLITE_OK);
    pid_t writer = start_writer(db_path);
    usleep(500000);
    int64_t before = sqlt_int(db, "SELECT max(id) FROM t"); /* committed before the backup begins */
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "backup --keyfile %s %s %s", keyfile, db_path, backup), 0);
    SR_CHECK_CONTAINS(out, "written and verified");
    SR_CHECK_CONTAINS(out, "tdectl: backup "); /* progress (every millisecond in this test), on stderr */
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "backup --json --quiet --keyfile %s %s %s 2>/dev/null | cat", keyfile,
                           db_path, json_backup), 0);
    SR_CHECK_MSG(strstr(out, "\"verified\": true") && strstr(out, "\"integrity_check\": \"ok\""), "%s", out);
    usleep(200000);
    SR_CHECK_MSG(stop_writer(writer), "the writer failed while the backups ran");
    int64_t after = sqlt_int(db, "SELECT max(id) FROM t");
    sqlite3_close(db);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", keyfile, backup), 0);
    sqlite3 *b = NULL;
    SR_CHECK_EQ_INT(sqlt_open(backup, keyfile, NULL, &b), SQLITE_OK);
    int64_t rows = sqlt_int(b, "SELECT count(*) FROM t"), max = sqlt_int(b, "SELECT max(id) FROM t");
    printf("  %lld rows committed before the backup, %lld in it, %lld at the end (the writer kept going)\n",
           (long long)before, (long long)rows, (long long)after);
    SR_CHECK_MSG(rows >= before && rows == max, "backup holds %lld rows (max id %lld), %lld were committed before",
                 (long long)rows, (long long)max, (long long)before);
    SR_CHECK_MSG(after > rows, "the writer was not running during the backup (%lld rows at the end)", (long long)after);
    SR_CHECK_STR(sqlt_integrity(b), "ok");
    sqlite3_close(b);
    SR_CHECK_MSG(!sqlt_marker_on_disk(sr_test_tmpdir(), MARKER, where, sizeof where), "plaintext in %s", where);
    /* restore: verified, then a new file; never over an existing one */
    char restored[600];
    snprintf(restored, sizeof restored, "%s", sr_test_path("restored.db"));
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "restore --keyfile %s %s %s", keyfile, backup, restored), 0);
    SR_CHECK_EQ_INT(sqlt_open(restored, keyfile, NULL, &b), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(b, "SELECT count(*) FROM t"), rows);
    sqlite3_close(b);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "restore --keyfile %s %s %s", keyfile, backup, restored), 3);
    SR_CHECK_CONTAINS(out, "refusing to overwrite");
    char unverified[600];
    snprintf(unverified, sizeof unverified, "%s", sr_test_path("unverified.db"));
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "backup --no-verify --json --keyfile %s %s %s 2>/dev/null | cat", keyfile,
                           db_path, unverified), 0);
    SR_CHECK_MSG(strstr(out, "\"verified\": false, \"verify\": null"), "%s", out);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", keyfile, unverified), 0);
}

static void test_backup_failures_are_clean(void)
{
    char out[16384], dest[600], other_key[600];
    const char *src = make_db("failing.db", "WAL", 3000, MARKER);
    snprintf(dest, sizeof dest, "%s", sr_test_path("failing-backup.db"));
    snprintf(other_key, sizeof other_key, "%s", sqlt_keyfile("other.key"));
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "backup --keyfile %s %s %s", other_key, src, dest), 4); /* wrong key */
    SR_CHECK(access(dest, F_OK) != 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "backup --keyfile %s %s.missing %s", keyfile, src, dest), 3);
    SR_CHECK(access(dest, F_OK) != 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "backup --keyfile %s %s %s", keyfile, src, src), 3); /* exists */
    /* the file-size limit as a full disk: a write fails mid-backup */
    struct stat st;
    SR_CHECK(stat(src, &st) == 0);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "trap '' XFSZ; ulimit -f %lld; %s backup --quiet --keyfile %s %s %s",
             (long long)st.st_size / 1024 / 3, sr_test_build_path("tde/tdectl"), keyfile, src, dest);
    int status = sr_test_command(out, sizeof out, cmd);
    SR_CHECK_MSG(status == 3 || status == 6, "status %d: %s", status, out);
    printf("  backup past a file-size limit: exit %d, \"%.100s\"\n", status, out);
    SR_CHECK_CONTAINS(out, "removed");
    SR_CHECK_MSG(access(dest, F_OK) != 0, "a failed backup left %s", dest);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", keyfile, src), 0); /* the source intact */
}

/* A plaintext database of `rows` rows with the marker, in WAL mode; its fingerprint. */
static const char *plain_db(const char *name, int rows, char fp[65])
{
    static char path[600];
    snprintf(path, sizeof path, "%s", sr_test_path(name));
    remove(path);
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, NULL, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "PRAGMA journal_mode=WAL"), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(db, 11, rows, MARKER), SQLITE_OK);
    sqlt_fingerprint(db, fp);
    sqlite3_close(db);
    return path;
}

static const char *fingerprint_of(const char *path, const char *key, char fp[65])
{
    sqlite3 *db = NULL;
    if (sqlt_open(path, key, NULL, &db) != SQLITE_OK) return sqlite3_close(db), "(cannot open)";
    sqlt_fingerprint(db, fp);
    sqlite3_close(db);
    return fp;
}

/* encrypt --in-place: the same rows, encrypted, verified; refused while
 * another process has the file open; a cipher switch there and back. */
static void test_encrypt_in_place_and_cipher_switch(void)
{
    char out[16384], fp[65], now[65], where[600];
    const char *db = plain_db("inplace.db", 2000, fp);
    pid_t holder = fork();
    if (holder == 0) { /* another process with the database open */
        sqlite3 *h = NULL;
        sqlt_open(db, NULL, NULL, &h);
        sqlt_int(h, "SELECT count(*) FROM sqlite_schema");
        pause();
        _exit(0);
    }
    usleep(300000);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "encrypt --in-place --keyfile %s %s", keyfile, db), 5);
    SR_CHECK_CONTAINS(out, "open in 1 other process");
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    SR_CHECK_STR(fingerprint_of(db, NULL, now), fp); /* untouched */
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "encrypt --in-place --keyfile %s %s", keyfile, db), 0);
    SR_CHECK_STR(fingerprint_of(db, keyfile, now), fp);
    SR_CHECK_MSG(!sqlt_marker_on_disk(sr_test_tmpdir(), MARKER, where, sizeof where), "plaintext in %s", where);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "encrypt --in-place --keyfile %s %s", keyfile, db), 0); /* again: done */
    SR_CHECK_CONTAINS(out, "already encrypted");
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --cipher chacha20-poly1305 --keyfile %s %s", keyfile, db), 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "status %s", db), 0);
    SR_CHECK_CONTAINS(out, "chacha20-poly1305");
    SR_CHECK_STR(fingerprint_of(db, keyfile, now), fp);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --cipher aes-256-gcm --keyfile %s %s", keyfile, db), 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", keyfile, db), 0);
    SR_CHECK_STR(fingerprint_of(db, keyfile, now), fp);
}

/* SIGKILL at a random moment of encrypt --in-place, then a re-run: it always
 * finishes; the rows are the original's; nothing is left beside the file. */
static void test_encrypt_in_place_survives_sigkill(void)
{
    char out[16384], fp[65], now[65], tmp[700];
    int killed_before = 0, killed_after = 0;
    srand(7);
    for (int round = 0; round < 12; round++) {
        const char *db = plain_db("killed.db", 4000, fp);
        snprintf(tmp, sizeof tmp, "%s.strongroom-rebuild", db);
        pid_t pid = fork();
        if (pid == 0) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1), dup2(devnull, 2);
            execl(sr_test_build_path("tde/tdectl"), "tdectl", "encrypt", "--in-place", "--quiet", "--keyfile", keyfile,
                  db, (char *)NULL);
            _exit(127);
        }
        usleep((useconds_t)(rand() % 120000));
        kill(pid, SIGKILL);
        int st = 0;
        waitpid(pid, &st, 0);
        char magic[16] = "";
        FILE *f = fopen(db, "rb");
        int encrypted = f && fread(magic, 1, 16, f) == 16 && memcmp(magic, "SQLite format 3", 16) != 0;
        if (f) fclose(f);
        killed_before += !encrypted, killed_after += encrypted;
        SR_CHECK_STR(fingerprint_of(db, encrypted ? keyfile : NULL, now), fp); /* old or new, never broken */
        SR_CHECK_EQ_INT(tdectl(out, sizeof out, "encrypt --in-place --quiet --keyfile %s %s", keyfile, db), 0);
        SR_CHECK_STR(fingerprint_of(db, keyfile, now), fp);
        SR_CHECK_MSG(access(tmp, F_OK) != 0, "round %d left %s", round, tmp);
    }
    printf("  12 runs killed at random: %d before the swap, %d after; every re-run finished\n", killed_before,
           killed_after);
}

/* Runs tdectl with args (NULL-terminated) and kills it with SIGKILL after a
 * random delay of up to max_us. */
/* A child that writes (one row per transaction) or reads (a count) until the
 * stop file appears, then reports "operations errors longest_ms" on fd. */
static pid_t start_worker(const char *path, int writes, const char *stop, int fd)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    sqlite3 *db = NULL;
    if (sqlt_open(path, keyfile, NULL, &db) != SQLITE_OK) _exit(2);
    sqlite3_busy_timeout(db, 20000);
    int ops = 0, errors = 0;
    double longest = 0;
    while (access(stop, F_OK) != 0) {
        uint64_t t0 = sr_time_mono_ns();
        int rc = writes ? sqlt_exec(db, "INSERT INTO t(v) VALUES(hex(randomblob(300)))")
                        : sqlt_exec(db, "SELECT count(*), sum(length(v)) FROM t");
        double ms = (double)(sr_time_mono_ns() - t0) / 1e6;
        if (ms > longest) longest = ms;
        ops++, errors += rc != SQLITE_OK;
        usleep(1000);
    }
    char report[100];
    int n = snprintf(report, sizeof report, "%d %d %.1f", ops, errors, longest);
    _exit(write(fd, report, (size_t)n) == n ? 0 : 1);
}

static void read_report(int fd, pid_t pid, int *ops, int *errors, double *longest)
{
    char report[100] = "";
    ssize_t n = read(fd, report, sizeof report - 1);
    waitpid(pid, NULL, 0);
    close(fd);
    *ops = 0, *errors = -1, *longest = 0;
    if (n > 0) sscanf(report, "%d %d %lf", ops, errors, longest);
}

static int key_versions_in(const char *db)
{
    char out[16384];
    if (tdectl(out, sizeof out, "status --json --keyfile %s %s 2>/dev/null | cat", keyfile, db) != 0) return -1;
    int versions = 0;
    for (const char *v = strstr(out, "\"version\": "); v; v = strstr(v + 1, "\"version\": ")) versions++;
    return versions;
}

/* rekey --rewrite (or a cipher switch there and back) while a writer and a
 * reader of other processes keep going: neither fails, every row is there,
 * every page is on the new key and the old one has left the header. */
static void rewrite_beside_workers(const char *mode, int switch_cipher)
{
    char db[600], stop[700], out[16384], sql[200], name[64];
    snprintf(name, sizeof name, "online-%s%s.db", mode, switch_cipher ? "-cipher" : "");
    snprintf(db, sizeof db, "%s", sr_test_path(name));
    snprintf(stop, sizeof stop, "%s.stop", db);
    sqlite3 *d = NULL;
    SR_CHECK_EQ_INT(sqlt_open(db, keyfile, NULL, &d), SQLITE_OK);
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", mode);
    SR_CHECK_EQ_INT(sqlt_exec(d, sql), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(d, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) "
                                 "INSERT INTO t(v) SELECT hex(randomblob(300)) FROM c"), SQLITE_OK);
    int64_t before = sqlt_int(d, "SELECT count(*) FROM t");
    sqlite3_close(d); /* no connection crosses a fork (SQLite's rule): the workers open their own */
    int wfd[2], rfd[2];
    SR_CHECK(pipe(wfd) == 0 && pipe(rfd) == 0);
    pid_t writer = start_worker(db, 1, stop, wfd[1]), reader = start_worker(db, 0, stop, rfd[1]);
    close(wfd[1]), close(rfd[1]);
    usleep(300000);
    uint64_t t0 = sr_time_mono_ns();
    int status = switch_cipher ? tdectl(out, sizeof out, "rekey --cipher chacha20-poly1305 --quiet --keyfile %s %s",
                                        keyfile, db)
                               : tdectl(out, sizeof out, "rekey --rewrite --quiet --keyfile %s %s", keyfile, db);
    if (switch_cipher && status == 0) {
        char st[16384];
        SR_CHECK_EQ_INT(tdectl(st, sizeof st, "status --keyfile %s %s", keyfile, db), 0);
        SR_CHECK_CONTAINS(st, "chacha20-poly1305");
        status = tdectl(out, sizeof out, "rekey --cipher aes-256-gcm --quiet --keyfile %s %s", keyfile, db);
    }
    double secs = (double)(sr_time_mono_ns() - t0) / 1e9;
    usleep(200000);
    SR_CHECK(sr_test_write_file(stop, "", 0) == 0);
    int wops, werr, rops, rerr;
    double wlong, rlong;
    read_report(wfd[0], writer, &wops, &werr, &wlong);
    read_report(rfd[0], reader, &rops, &rerr, &rlong);
    SR_CHECK_MSG(status == 0 && strstr(out, "online"), "status %d: %s", status, out);
    printf("  %s mode, %lld rows: %s %.2f s; meanwhile a writer committed %d rows (longest wait %.1f ms) and a "
           "reader read %d times (longest %.1f ms), %d + %d errors\n", mode, (long long)before,
           switch_cipher ? "cipher switch and back" : "rewrite", secs, wops, wlong,
           rops, rlong, werr, rerr);
    SR_CHECK_EQ_INT(werr, 0);
    SR_CHECK_EQ_INT(rerr, 0);
    SR_CHECK(wops > 10 && rops > 10);
    SR_CHECK_MSG(wlong < 5000, "the writer was starved %.0f ms", wlong); /* 10 s before the pause grew past SQLite's backoff */
    SR_CHECK_EQ_INT(sqlt_open(db, keyfile, NULL, &d), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(d, "SELECT count(*) FROM t"), before + wops);
    sqlite3_close(d);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --rewrite --quiet --keyfile %s %s", keyfile, db), 0);
    SR_CHECK_EQ_INT(key_versions_in(db), 1);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --quiet --keyfile %s %s", keyfile, db), 0);
}

static void test_online_rewrite_beside_a_writer_and_a_reader(void)
{
    rewrite_beside_workers("wal", 0);
    rewrite_beside_workers("wal", 1);
    rewrite_beside_workers("delete", 0);
}

/* Dropping unused key versions leaves the caller's locks where they were.
 * tdectl used to read the pages through a descriptor of its own and close
 * it, which drops every POSIX lock of the process on the file: a writer of
 * another process took the write lock tdectl still thought it held, and the
 * two waited for each other until their busy timeouts (a 20 s stall beside
 * rekey --rewrite in rollback-journal mode, one run in three). */
static void test_dropping_unused_keys_keeps_the_write_lock(void)
{
    for (int wal = 0; wal < 2; wal++) {
        char db[600], out[16384];
        snprintf(db, sizeof db, "%s", make_db(wal ? "drop-wal.db" : "drop-delete.db", wal ? "wal" : "delete", 200, NULL));
        SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --keyfile %s %s", keyfile, db), 0); /* pages stay on v1 */
        sqlite3 *d = NULL;
        SR_CHECK_EQ_INT(sqlt_open(db, keyfile, NULL, &d), SQLITE_OK);
        sr_unused_keys_t u = {.wal = wal};
        if (!wal) SR_CHECK_EQ_INT(sqlite3_file_control(d, "main", SR_FCNTL_DROP_UNUSED_KEYS, &u), SQLITE_MISUSE);
        SR_CHECK_EQ_INT(sqlt_exec(d, "BEGIN IMMEDIATE"), SQLITE_OK);
        SR_CHECK_EQ_INT(lock_bytes_held(db), 1);
        SR_CHECK_EQ_INT(sqlite3_file_control(d, "main", SR_FCNTL_DROP_UNUSED_KEYS, &u), SQLITE_OK);
        SR_CHECK_MSG(u.before == 2 && u.after == 2, "versions %u -> %u (version 1 is still on pages)", u.before, u.after);
        SR_CHECK_EQ_INT(lock_bytes_held(db), 1);
        SR_CHECK_EQ_INT(sqlt_exec(d, "COMMIT"), SQLITE_OK);
        sqlite3_close(d);
        SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --rewrite --quiet --keyfile %s %s", keyfile, db), 0);
        SR_CHECK_EQ_INT(key_versions_in(db), 1);
    }
}

/* A page of the file SQLite never writes: at 1 GiB, the lock-byte page
 * (page 262,145 with 4 KiB pages) is a hole of zeros in every larger
 * database; here a zero page past the end stands for it. The rewrite leaves
 * such pages alone (it failed on the lock-byte page: "all zeros (never
 * written)", found by bench_tdectl at 1 GiB). */
static void test_rewrite_skips_pages_never_written(void)
{
    char db[600], out[16384];
    snprintf(db, sizeof db, "%s", make_db("holes.db", "wal", 200, NULL));
    static const uint8_t zero[PS] = {0};
    int fd = open(db, O_WRONLY | O_APPEND);
    SR_CHECK(fd >= 0 && write(fd, zero, PS) == PS);
    close(fd);
    int status = tdectl(out, sizeof out, "rekey --rewrite --quiet --keyfile %s %s", keyfile, db);
    SR_CHECK_MSG(status == 0, "status %d: %s", status, out);
    SR_CHECK_EQ_INT(read_all(db), 0);
    SR_CHECK_EQ_INT(key_versions_in(db), 1);
}

/* A database past 1 GiB holds SQLite's lock-byte page, which SQLite never
 * writes (a hole of zeros): verify, backup (which verifies its copy) and the
 * rewrite take it for what it is. verify called every such database damaged
 * before, and backup then threw its copy away. */
static void test_a_database_past_1_gib(void)
{
    char db[600], copy[600], out[16384];
    snprintf(db, sizeof db, "%s", sr_test_path("big.db"));
    snprintf(copy, sizeof copy, "%s", sr_test_path("big-backup.db"));
    sqlite3 *d = NULL;
    SR_CHECK_EQ_INT(sqlt_open(db, keyfile, NULL, &d), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(d, "PRAGMA journal_mode=WAL; CREATE TABLE t(v); WITH RECURSIVE c(i) AS (SELECT 1 UNION "
                                 "ALL SELECT i + 1 FROM c WHERE i < 1120) INSERT INTO t SELECT zeroblob(1000000) FROM c;"
                                 "PRAGMA wal_checkpoint(TRUNCATE)"), SQLITE_OK);
    sqlite3_close(d);
    struct stat st;
    SR_CHECK(stat(db, &st) == 0 && st.st_size > (1LL << 30) + HDR);
    uint64_t t0 = sr_time_mono_ms();
    SR_CHECK_MSG(tdectl(out, sizeof out, "verify --quiet --keyfile %s %s", keyfile, db) == 0, "%s", out);
    SR_CHECK_MSG(tdectl(out, sizeof out, "backup --quiet --keyfile %s %s %s", keyfile, db, copy) == 0, "%s", out);
    remove(copy);
    printf("  a %.2f GiB database (the lock-byte page a hole): verified and backed up in %.1f s\n",
           (double)st.st_size / (1 << 30), (double)(sr_time_mono_ms() - t0) / 1000);
    remove(db);
    snprintf(out, sizeof out, "%s-wal", db), remove(out);
    snprintf(out, sizeof out, "%s-shm", db), remove(out);
}

/* A checkpoint in the way for 6 s (its lock held by another process, on the
 * byte of the -shm file SQLite's unix VFS uses): the rewrite waits it out.
 * It used to give up after 4 s with exit 3 and "not an error" (the file
 * control's busy code never reached the connection's error). */
static void test_rewrite_waits_out_a_long_checkpoint(void)
{
    char db[600], out[16384], cmd[2048];
    snprintf(db, sizeof db, "%s", sr_test_path("ckpt.db"));
    sqlite3 *d = NULL, *reader = NULL;
    SR_CHECK_EQ_INT(sqlt_open(db, keyfile, NULL, &d), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(d, "PRAGMA journal_mode=WAL; CREATE TABLE t(v); WITH RECURSIVE c(i) AS (SELECT 1 "
                                 "UNION ALL SELECT i + 1 FROM c WHERE i < 2000) INSERT INTO t SELECT randomblob(300) FROM c"),
                    SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_open(db, keyfile, NULL, &reader), SQLITE_OK); /* keeps the -shm file there */
    SR_CHECK_EQ_INT(sqlt_int(reader, "SELECT count(*) FROM t"), 2000);
    snprintf(cmd, sizeof cmd, "python3 -c 'import fcntl, os, time; fd = os.open(\"%s-shm\", os.O_RDWR); "
             "fcntl.lockf(fd, fcntl.LOCK_EX, 1, 121, os.SEEK_SET); time.sleep(6)' & sleep 0.3; "
             "%s rekey --rewrite --quiet --keyfile %s %s", db, sr_test_build_path("tde/tdectl"), keyfile, db);
    uint64_t t0 = sr_time_mono_ms();
    int status = sr_test_command(out, sizeof out, cmd);
    uint64_t took = sr_time_mono_ms() - t0;
    printf("  a checkpoint lock held 6 s: the rewrite finished after %.1f s, status %d\n", (double)took / 1000, status);
    SR_CHECK_MSG(status == 0 && strstr(out, "online"), "status %d: %s", status, out);
    SR_CHECK(took >= 5000);
    SR_CHECK_EQ_INT(key_versions_in(db), 1);
    sqlite3_close(reader);
    sqlite3_close(d);
}

/* A journal as a rewrite batch leaves it when power fails mid-batch: page N's
 * new copy in the journal, the page itself torn. Reads of it fail and say
 * what to do; rekey --rewrite finishes it; a journal cut short is dropped. */
static void test_rewrite_journal_finishes_a_torn_page(void)
{
    char db[600], journal[700], out[16384];
    snprintf(db, sizeof db, "%s", make_db("torn.db", "delete", 300, NULL));
    snprintf(journal, sizeof journal, "%s-srrewrite", db);
    const long pgno = 3;
    uint8_t entry[8 + PS], body[16 + sizeof entry + 32];
    int fd = open(db, O_RDWR);
    SR_CHECK(fd >= 0 && pread(fd, entry + 8, PS, HDR + (pgno - 1) * PS) == PS);
    memcpy(body, "SRRWJ1\n", 8);
    for (int i = 0; i < 4; i++) body[8 + i] = (uint8_t)(PS >> (24 - 8 * i)), body[12 + i] = i == 3;
    memset(entry, 0, 8), entry[7] = (uint8_t)pgno;
    memcpy(body + 16, entry, sizeof entry);
    unsigned md = 0;
    EVP_Digest(body, 16 + sizeof entry, body + 16 + sizeof entry, &md, EVP_sha256(), NULL);
    SR_CHECK(sr_test_write_file(journal, body, sizeof body) == 0);
    static const uint8_t zeros[512] = {0};
    SR_CHECK(pwrite(fd, zeros, sizeof zeros, HDR + (pgno - 1) * PS + 1024) == (ssize_t)sizeof zeros); /* torn */
    close(fd);
    SR_CHECK(tdectl(out, sizeof out, "verify --keyfile %s %s", keyfile, db) != 0);
    SR_CHECK_EQ_INT(read_all(db) & 0xff, SQLITE_IOERR);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --rewrite --quiet --keyfile %s %s", keyfile, db), 0);
    SR_CHECK_CONTAINS(out, "finished a rewrite batch cut short (1 pages)");
    SR_CHECK_MSG(access(journal, F_OK) != 0, "the journal is still there");
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --quiet --keyfile %s %s", keyfile, db), 0);
    /* a journal cut before its checksum: dropped, the database untouched */
    SR_CHECK(sr_test_write_file(journal, body, sizeof body - 40) == 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --rewrite --quiet --keyfile %s %s", keyfile, db), 0);
    SR_CHECK(!strstr(out, "cut short"));
    SR_CHECK_MSG(access(journal, F_OK) != 0, "a cut journal is still there");
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --quiet --keyfile %s %s", keyfile, db), 0);
}

static void run_and_kill(useconds_t max_us, char *const args[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1), dup2(devnull, 2);
        execv(sr_test_build_path("tde/tdectl"), args);
        _exit(127);
    }
    usleep((useconds_t)rand() % max_us);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* backup, the cipher switch and rekey --rewrite killed at random, then run again: each re-run
 * completes; the backup never exists half-made under its name; the
 * database's rows are always the original's. */
static void test_backup_and_cipher_switch_survive_sigkill(void)
{
    char out[16384], fp[65], now[65], dest[600], partial[700], key[600];
    snprintf(key, sizeof key, "%s", keyfile);
    const char *plain = plain_db("kill-src.db", 4000, fp);
    char db[600];
    snprintf(db, sizeof db, "%s", sr_test_path("kill.db"));
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "encrypt --quiet --keyfile %s %s %s", key, plain, db), 0);
    snprintf(dest, sizeof dest, "%s", sr_test_path("kill-backup.db"));
    snprintf(partial, sizeof partial, "%s.strongroom-partial", dest);
    const char *ciphers[] = {"chacha20-poly1305", "aes-256-gcm"};
    srand(11);
    for (int round = 0; round < 10; round++) {
        char *backup[] = {"tdectl", "backup", "--quiet", "--keyfile", key, db, dest, NULL};
        run_and_kill(60000, backup);
        if (access(dest, F_OK) == 0) /* killed after it was named: whole and verified */
            SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --quiet --keyfile %s %s", key, dest), 0);
        remove(dest);
        SR_CHECK_EQ_INT(tdectl(out, sizeof out, "backup --quiet --keyfile %s %s %s", key, db, dest), 0);
        SR_CHECK_STR(fingerprint_of(dest, key, now), fp);
        SR_CHECK_MSG(access(partial, F_OK) != 0, "round %d left %s", round, partial);
        remove(dest);
        char *rekey[] = {"tdectl", "rekey", "--quiet", "--cipher", (char *)ciphers[round % 2], "--keyfile", key, db,
                         NULL};
        run_and_kill(60000, rekey);
        SR_CHECK_STR(fingerprint_of(db, key, now), fp);
        SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --quiet --cipher %s --keyfile %s %s", ciphers[round % 2], key,
                               db), 0);
        SR_CHECK_STR(fingerprint_of(db, key, now), fp);
        /* rekey --rewrite (online, batch by batch) killed, then run again: every page on the newest data key,
         * the older versions dropped from the header */
        char *rewrite[] = {"tdectl", "rekey", "--rewrite", "--keyfile", key, db, NULL};
        run_and_kill(60000, rewrite);
        SR_CHECK_STR(fingerprint_of(db, key, now), fp);
        SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --rewrite --keyfile %s %s", key, db), 0);
        SR_CHECK_EQ_INT(tdectl(out, sizeof out, "status --json --keyfile %s %s 2>/dev/null | cat", key, db), 0);
        int versions = 0;
        for (const char *v = strstr(out, "\"version\": "); v; v = strstr(v + 1, "\"version\": ")) versions++;
        SR_CHECK_MSG(versions == 1, "round %d: %d key versions left after rekey --rewrite: %s", round, versions, out);
    }
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", key, db), 0);
}

/* A full disk (a file-size limit) mid-rebuild: a clean error, the original
 * untouched and usable, nothing left beside it. */
static void test_encrypt_in_place_disk_full(void)
{
    char out[16384], fp[65], now[65], cmd[4096], tmp[700];
    const char *db = plain_db("full.db", 4000, fp);
    snprintf(tmp, sizeof tmp, "%s.strongroom-rebuild", db);
    struct stat st;
    SR_CHECK(stat(db, &st) == 0);
    snprintf(cmd, sizeof cmd, "trap '' XFSZ; ulimit -f %lld; %s encrypt --in-place --quiet --keyfile %s %s",
             (long long)st.st_size / 1024 / 2, sr_test_build_path("tde/tdectl"), keyfile, db);
    int status = sr_test_command(out, sizeof out, cmd);
    SR_CHECK_MSG(status == 3 || status == 6, "status %d: %s", status, out);
    SR_CHECK_CONTAINS(out, "the original is untouched");
    SR_CHECK_STR(fingerprint_of(db, NULL, now), fp);
    SR_CHECK_MSG(access(tmp, F_OK) != 0, "a failed rebuild left %s", tmp);
}

/* A real full disk (ENOSPC): a small tmpfs, mounted by the test (root only;
 * skipped where mounting is not allowed). encrypt --in-place and backup stop
 * with "disk full" (exit 6), the original untouched, nothing left behind. */
static void test_a_full_tmpfs(void)
{
    char dir[700], cmd[2048], out[16384], fp[65], now[65], db[800], dest[800];
    snprintf(dir, sizeof dir, "%s/small-fs", sr_test_tmpdir());
    const char *src = plain_db("full-src.db", 3000, fp);
    struct stat st;
    SR_CHECK(stat(src, &st) == 0);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && mount -t tmpfs -o size=%lldk tmpfs %s", dir,
             (long long)st.st_size * 3 / 2 / 1024, dir);
    if (geteuid() != 0 || sr_test_command(out, sizeof out, cmd) != 0) {
        printf("  skipped: cannot mount a tmpfs here (%s)\n", geteuid() ? "not root" : "mount refused");
        return;
    }
    snprintf(db, sizeof db, "%s/db.db", dir);
    snprintf(cmd, sizeof cmd, "cp %s %s", src, db);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    int status = tdectl(out, sizeof out, "encrypt --in-place --quiet --keyfile %s %s", keyfile, db);
    SR_CHECK_MSG(status == 6, "encrypt --in-place on a full disk: status %d: %s", status, out);
    SR_CHECK_CONTAINS(out, "the original is untouched");
    SR_CHECK_STR(fingerprint_of(db, NULL, now), fp);
    snprintf(cmd, sizeof cmd, "ls %s | grep -v '^db.db$' | grep -c . ", dir);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) != 0, "left beside it: %s", out);
    /* a backup into the full file system */
    char enc[800];
    snprintf(enc, sizeof enc, "%s", sr_test_path("full-enc.db"));
    remove(enc);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "encrypt --quiet --keyfile %s %s %s", keyfile, src, enc), 0);
    snprintf(dest, sizeof dest, "%s/backup.db", dir);
    status = tdectl(out, sizeof out, "backup --quiet --keyfile %s %s %s", keyfile, enc, dest);
    SR_CHECK_MSG(status == 6, "backup to a full disk: status %d: %s", status, out);
    SR_CHECK_MSG(access(dest, F_OK) != 0, "a failed backup left %s", dest);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --quiet --keyfile %s %s", keyfile, enc), 0);
    printf("  a tmpfs of %lld KiB: encrypt --in-place and backup stopped with exit 6, nothing lost or left\n",
           (long long)st.st_size * 3 / 2 / 1024);
    snprintf(cmd, sizeof cmd, "umount %s", dir);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
}

int main(void)
{
    sqlt_init();
    snprintf(keyfile, sizeof keyfile, "%s", sqlt_keyfile("ops.key"));
    setenv("STRONGROOM_PROGRESS_MS", "1", 1); /* progress lines even for short work */
    SR_RUN(test_backup_of_a_live_database);
    SR_RUN(test_backup_failures_are_clean);
    SR_RUN(test_encrypt_in_place_and_cipher_switch);
    SR_RUN(test_encrypt_in_place_survives_sigkill);
    SR_RUN(test_encrypt_in_place_disk_full);
    SR_RUN(test_a_full_tmpfs);
    SR_RUN(test_backup_and_cipher_switch_survive_sigkill);
    SR_RUN(test_online_rewrite_beside_a_writer_and_a_reader);
    SR_RUN(test_dropping_unused_keys_keeps_the_write_lock);
    SR_RUN(test_rewrite_journal_finishes_a_torn_page);
    SR_RUN(test_rewrite_waits_out_a_long_checkpoint);
    SR_RUN(test_rewrite_skips_pages_never_written);
    SR_RUN(test_a_database_past_1_gib);
    return sr_test_finish();
}
