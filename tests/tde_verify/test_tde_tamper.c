/*
 * Tampering, each detected and reported: a flipped bit in any page of the
 * database, in a WAL frame, in a rollback-journal page image; two pages
 * swapped; a page copied from another tablespace; a journal page image
 * copied into the database (another file kind). The engine answers
 * SQLITE_IOERR_DATA with the file and page in SQLite's log, never rows from a
 * bad page; `tdectl verify` names the page and exits 1. Also the tdectl
 * commands end to end (status, verify, encrypt/decrypt, rekey, rotate-master).
 */
#include "tdev.h"

#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MARKER "TAMPER-MARKER-777"

static void test_flipped_bit_in_every_database_page(void)
{
    const char *path = make_db("flip.db", "DELETE", 600, MARKER);
    size_t len = 0;
    uint8_t *orig = sr_test_read_file(path, &len);
    long pages = (long)(len - HDR) / PS;
    SR_CHECK(pages >= 5);
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    for (long pg = 1; pg <= pages; pg++) {
        flip(path, HDR + (pg - 1) * PS + (pg * 37) % PS);
        /* integrity_check reads every page in use */
        sqlt_clear_log();
        sqlite3 *t = NULL;
        int rc = sqlt_open(path, keyfile, NULL, &t);
        const char *res = rc == SQLITE_OK ? sqlt_integrity(t) : "open failed";
        SR_CHECK_MSG(strcmp(res, "ok") != 0, "page %ld altered, integrity_check says ok", pg);
        char want[64];
        snprintf(want, sizeof want, "database page %ld ", pg);
        SR_CHECK_MSG(strstr(sqlt_last_log(), want) != NULL, "page %ld: log: %s", pg, sqlt_last_log());
        sqlite3_close(t);
        SR_CHECK(sr_test_write_file(path, orig, len) == 0);
    }
    sqlite3_close(db);
    SR_CHECK_EQ_INT(read_all(path), SQLITE_OK); /* restored: fine again */
    free(orig);
}

static void test_swapped_pages_and_foreign_pages(void)
{
    const char *a = make_db("swap.db", "DELETE", 600, MARKER), *b = make_db("other.db", "DELETE", 600, MARKER);
    size_t len = 0;
    uint8_t *orig = sr_test_read_file(a, &len);
    /* swap pages 2 and 3 */
    uint8_t *sw = malloc(len);
    memcpy(sw, orig, len);
    memcpy(sw + HDR + PS, orig + HDR + 2 * PS, PS);
    memcpy(sw + HDR + 2 * PS, orig + HDR + PS, PS);
    SR_CHECK(sr_test_write_file(a, sw, len) == 0);
    SR_CHECK_EQ_INT(read_all(a), SQLITE_IOERR_DATA);
    SR_CHECK_MSG(strstr(sqlt_last_log(), "tag mismatch") != NULL, "log: %s", sqlt_last_log());
    /* page 2 from another tablespace (same master key, same page number) */
    SR_CHECK(sr_test_write_file(a, orig, len) == 0);
    copy_range(b, HDR + PS, a, HDR + PS, PS);
    SR_CHECK_EQ_INT(read_all(a), SQLITE_IOERR_DATA);
    SR_CHECK(sr_test_write_file(a, orig, len) == 0);
    free(sw), free(orig);
}

/* A WAL-mode database whose writer died after an update: its WAL stays. */
static const char *crashed_wal(const char *name, const char *sql, char wal[600], size_t *len)
{
    const char *path = make_db(name, "WAL", 300, MARKER);
    crash_mid_write(path, "WAL", sql);
    snprintf(wal, 600, "%s-wal", path);
    free(sr_test_read_file(wal, len));
    SR_CHECK_MSG(*len > 32 + 3 * (24 + PS), "WAL has %zu bytes", *len);
    return path;
}

/* A damaged frame inside committed history ends the log there, as SQLite
 * does for a frame whose checksum fails: its page is never applied, the
 * transactions after it are discarded, and the cut is reported (SQLite's
 * error log names the frame and what was discarded). */
static void test_flipped_bit_in_wal_frame(void)
{
    char wal[600];
    size_t len = 0;
    const char *path = crashed_wal("wal.db", "UPDATE t SET v = v || 'x'", wal, &len);
    flip(wal, 32 + 2 * (24 + PS) + 24 + 999); /* frame 2's page */
    SR_CHECK_EQ_INT(read_all(path), SQLITE_OK);
    SR_CHECK_MSG(strstr(sqlt_last_log(), "wal frame 2 fails authentication") != NULL &&
                     strstr(sqlt_last_log(), "discarded") != NULL,
                 "log: %s", sqlt_last_log());
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM t WHERE v LIKE '%x'"), 0); /* the damaged transaction: gone */
    SR_CHECK(sqlt_int(db, "SELECT count(*) FROM t") > 0);
    sqlite3_close(db);
}

/* A damaged frame with no commit after it is what a crash mid-write leaves:
 * recovery ends the log before it (as SQLite does for a torn frame), warns
 * and records an event, and the database opens with every earlier commit. */
static void test_torn_last_wal_frame_ends_the_log(void)
{
    char wal[600];
    size_t len = 0;
    const char *path = crashed_wal("torn.db", "UPDATE t SET v = v || 'y'", wal, &len);
    long frames = (long)(len - 32) / (24 + PS);
    flip(wal, 32 + (frames - 1) * (24 + PS) + 24 + 500); /* the commit frame of the last transaction */
    SR_CHECK_EQ_INT(read_all(path), SQLITE_OK);
    SR_CHECK_MSG(strstr(sqlt_last_log(), "torn") == NULL, "%s", sqlt_last_log()); /* ours goes to our log, not SQLite's */
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM t WHERE v LIKE '%y'"), 0); /* the torn transaction is gone */
    SR_CHECK(sqlt_int(db, "SELECT count(*) FROM t") > 0);                      /* everything before it is there */
    sqlite3_close(db);
}

static void test_flipped_bit_in_journal_and_foreign_kind(void)
{
    const char *path = make_db("jrnl.db", "DELETE", 600, MARKER);
    size_t before_len = 0, len = 0;
    uint8_t *before = sr_test_read_file(path, &before_len);
    crash_mid_write(path, "DELETE", "BEGIN; UPDATE t SET v = v || 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'; "
                                    "INSERT INTO t(k, v) SELECT k, v FROM t");
    char jr[600];
    snprintf(jr, sizeof jr, "%s-journal", path);
    size_t jlen = 0;
    uint8_t *journal = sr_test_read_file(jr, &jlen);
    SR_CHECK_MSG(journal && jlen > 4096 + 4 + PS, "no hot journal (%zu bytes)", jlen);
    if (!journal || jlen <= 4096 + 4 + PS) return;
    /* the header is one sector (its size is at byte 20); the first page image follows the 4-byte page number */
    long first = (long)((uint32_t)journal[20] << 24 | (uint32_t)journal[21] << 16 | journal[22] << 8 | journal[23]) + 4;
    /* a journal page image copied over database page 2: another file kind */
    uint8_t *db = sr_test_read_file(path, &len);
    memcpy(db + HDR + PS, journal + first, PS);
    SR_CHECK(sr_test_write_file(path, db, len) == 0);
    char out[4096];
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", keyfile, path), 1);
    SR_CHECK_MSG(strstr(out, "database page 2 ") != NULL, "%s", out);
    /* and a flipped bit in the journal's first page image: playback refuses it */
    SR_CHECK(sr_test_write_file(path, before, before_len) == 0);
    journal[first + 77] ^= 1;
    SR_CHECK(sr_test_write_file(jr, journal, jlen) == 0);
    SR_CHECK_EQ_INT(read_all(path), SQLITE_IOERR_DATA);
    char want[64];
    snprintf(want, sizeof want, "journal record at offset %ld ", first);
    SR_CHECK_MSG(strstr(sqlt_last_log(), want) != NULL, "log: %s", sqlt_last_log());
    free(journal), free(db), free(before);
}

static void test_tdectl_end_to_end(void)
{
    char out[8192], key[512], enc[512], plain[512], back[512], fp1[65], fp2[65];
    snprintf(key, sizeof key, "%s", sr_test_path("tdectl.key"));
    snprintf(enc, sizeof enc, "%s", sr_test_path("tdectl-enc.db"));
    snprintf(plain, sizeof plain, "%s", sr_test_path("tdectl-plain.db"));
    snprintf(back, sizeof back, "%s", sr_test_path("tdectl-back.db"));
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "keygen %s", key), 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "keygen %s", key), 3); /* never overwrites: could not (3) */
    SR_CHECK(strstr(out, "refusing to overwrite") != NULL);
    /* an option that does not apply, a bad option value: usage errors (2) naming the option */
    SR_CHECK(tdectl(out, sizeof out, "status --rewrite %s", key) == 2 && strstr(out, "--rewrite does not apply"));
    SR_CHECK(tdectl(out, sizeof out, "keygen --keyfile %s %s.2", key, key) == 2 && strstr(out, "does not apply"));
    SR_CHECK(tdectl(out, sizeof out, "create --cipher rot13 --keyfile %s %s.db", key, key) == 2 &&
             strstr(out, "--cipher"));
    SR_CHECK(tdectl(out, sizeof out, "--help") == 0 && strstr(out, "usage: tdectl"));
    SR_CHECK(tdectl(out, sizeof out, "--version") == 0 && strstr(out, "tdectl"));
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(plain, NULL, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(db, 9, 1500, MARKER), SQLITE_OK);
    sqlt_fingerprint(db, fp1);
    sqlite3_close(db);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "encrypt --keyfile %s %s %s", key, plain, enc), 0);
    SR_CHECK_EQ_INT(sqlt_open(enc, key, NULL, &db), SQLITE_OK);
    SR_CHECK_STR(sqlt_fingerprint(db, fp2), fp1);
    sqlite3_close(db);
    SR_CHECK(!sr_test_file_contains(enc, MARKER, strlen(MARKER)));
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", key, enc), 0);
    SR_CHECK_MSG(strstr(out, "ok (") != NULL, "%s", out);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rekey --rewrite --keyfile %s %s", key, enc), 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "status %s", enc), 0);
    SR_CHECK_MSG(strstr(out, "active key   version 2") != NULL && strstr(out, "(key v2: ") != NULL &&
                 strstr(out, "key v1: ") == NULL, "%s", out);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "status --json --keyfile %s %s 2>/dev/null | cat", key, enc), 0);
    SR_CHECK_MSG(strstr(out, "\"active_version\": 2") && strstr(out, "\"header_mac\": \"verified\"") &&
                 strstr(out, "\"pages_per_key_version\": {\"2\": ") && !strstr(out, "\"1\": "), "%s", out);
    /* could not check: a missing database (3), a missing key file (4) */
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s.missing", key, enc), 3);
    SR_CHECK_CONTAINS(out, "NOT CHECKED");
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s.missing %s", key, enc), 4);
    /* master-key rotation: the old key file copy no longer opens the database */
    char old_key[600];
    snprintf(old_key, sizeof old_key, "%s.old", key);
    size_t klen = 0;
    uint8_t *k = sr_test_read_file(key, &klen);
    SR_CHECK(sr_test_write_file(old_key, k, klen) == 0);
    free(k);
    SR_CHECK(chmod(old_key, 0600) == 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "rotate-master --keyfile %s %s", key, enc), 0);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", key, enc), 0);
    /* every page counted as authenticated, under its key version (all were counted 0: read after decrypting) */
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --json --keyfile %s %s 2>/dev/null | cat", key, enc), 0);
    unsigned long long pages = 0, authentic = 0, v2 = 0;
    const char *at = strstr(out, "\"pages\": "), *au = strstr(out, "\"pages_authenticated\": "),
               *per = strstr(out, "\"pages_per_key_version\": {\"2\": ");
    if (at) pages = strtoull(at + 9, NULL, 10);
    if (au) authentic = strtoull(au + 23, NULL, 10);
    if (per) v2 = strtoull(per + 31, NULL, 10);
    SR_CHECK_MSG(pages > 10 && authentic == pages && v2 == pages, "%s", out);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", old_key, enc), 4); /* the wrong key */
    SR_CHECK_MSG(strstr(out, "does not hold") != NULL, "%s", out);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "decrypt --keyfile %s %s %s", key, enc, back), 0);
    SR_CHECK_EQ_INT(sqlt_open(back, NULL, NULL, &db), SQLITE_OK);
    SR_CHECK_STR(sqlt_fingerprint(db, fp2), fp1);
    sqlite3_close(db);
    /* a flipped bit: verify names the page and fails */
    flip(enc, HDR + 3 * PS + 5);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --keyfile %s %s", key, enc), 1);
    SR_CHECK_MSG(strstr(out, "database page 4 ") != NULL && strstr(out, "FAILED") != NULL, "%s", out);
    char one_bad[64];
    snprintf(one_bad, sizeof one_bad, "FAILED (%llu of %llu pages authenticated)", pages - 1, pages);
    SR_CHECK_CONTAINS(out, one_bad);
    flip(enc, HDR + 6 * PS + 9);
    SR_CHECK_EQ_INT(tdectl(out, sizeof out, "verify --json --keyfile %s %s 2>/dev/null | cat", key, enc), 0);
    SR_CHECK_MSG(strstr(out, "\"result\": \"failed\", \"exit_status\": 1") &&
                 strstr(out, "\"bad_pages\": 2, \"bad_page_numbers\": [4, 7]"), "%s", out);
}

int main(void)
{
    sqlt_init();
    snprintf(keyfile, sizeof keyfile, "%s", sqlt_keyfile("tamper.key"));
    SR_RUN(test_flipped_bit_in_every_database_page);
    SR_RUN(test_swapped_pages_and_foreign_pages);
    SR_RUN(test_flipped_bit_in_wal_frame);
    SR_RUN(test_torn_last_wal_frame_ends_the_log);
    SR_RUN(test_flipped_bit_in_journal_and_foreign_kind);
    SR_RUN(test_tdectl_end_to_end);
    return sr_test_finish();
}
