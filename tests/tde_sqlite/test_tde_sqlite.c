/*
 * The strongroom VFS under a real SQLite: results identical to plaintext
 * SQLite across journal modes and page sizes, ATTACH of plaintext and
 * encrypted databases together, the backup API, VACUUM, the errors a user
 * sees (wrong key, no key, plaintext file, truncated file, altered page), and
 * no plaintext on disk: not in the database, WAL, journals, nor in the temp,
 * statement-journal and sorter files a large workload spills.
 */
#include "sqlt.h"
#include "sr_test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define MARKER "CARD-4111-1111-1111"

static const char *dir_path(const char *name)
{
    const char *p = sr_test_path(name);
    mkdir(p, 0700);
    return p;
}

static void compare_with_plaintext(const char *mode, int page_size, const char *cipher)
{
    char enc[512], plain[512], extra[128], pragma[128], fp_enc[65], fp_plain[65];
    snprintf(enc, sizeof enc, "%s/%s-%d-%s.db", dir_path("enc"), mode, page_size, cipher);
    snprintf(plain, sizeof plain, "%s/%s-%d.db", dir_path("plain"), mode, page_size);
    snprintf(extra, sizeof extra, "&cipher=%s", cipher);
    snprintf(pragma, sizeof pragma, "PRAGMA page_size=%d; PRAGMA journal_mode=%s", page_size, mode);
    const char *key = sqlt_keyfile("matrix.key");
    sqlite3 *e = NULL, *p = NULL;
    SR_CHECK_EQ_INT(sqlt_open(enc, key, extra, &e), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_open(plain, NULL, NULL, &p), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(e, pragma), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(p, pragma), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(e, 42, 2000, MARKER), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(p, 42, 2000, MARKER), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(e, "PRAGMA page_size"), page_size);
    SR_CHECK_STR(sqlt_fingerprint(e, fp_enc), sqlt_fingerprint(p, fp_plain));
    SR_CHECK_STR(sqlt_integrity(e), "ok");
    sqlite3_close(e);
    sqlite3_close(p);
    /* reopened from disk, still identical */
    SR_CHECK_EQ_INT(sqlt_open(enc, key, NULL, &e), SQLITE_OK);
    SR_CHECK_STR(sqlt_fingerprint(e, fp_enc), fp_plain);
    SR_CHECK_STR(sqlt_integrity(e), "ok");
    sqlite3_close(e);
    char where[1024];
    SR_CHECK_MSG(!sqlt_marker_on_disk(dir_path("enc"), MARKER, where, sizeof where), "plaintext in %s", where);
}

static void test_matrix_journal_modes_and_page_sizes(void)
{
    static const char *modes[] = {"DELETE", "TRUNCATE", "PERSIST", "WAL"};
    static const int sizes[] = {1024, 4096, 65536};
    for (size_t m = 0; m < 4; m++)
        for (size_t s = 0; s < 3; s++) compare_with_plaintext(modes[m], sizes[s], "aes-256-gcm");
    compare_with_plaintext("WAL", 8192, "chacha20-poly1305");
    compare_with_plaintext("DELETE", 2048, "chacha20-poly1305");
}

static void test_attach_plaintext_and_encrypted_together(void)
{
    const char *key = sqlt_keyfile("attach.key");
    char enc[512], plain[512], sql[2048];
    snprintf(enc, sizeof enc, "%s/attached.db", dir_path("enc"));
    snprintf(plain, sizeof plain, "%s/main.db", dir_path("plain"));
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(plain, NULL, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "CREATE TABLE p(x); INSERT INTO p VALUES(1),(2),(3)"), SQLITE_OK);
    snprintf(sql, sizeof sql, "ATTACH '%s' AS sec", sqlt_uri(enc, key, NULL));
    SR_CHECK_EQ_INT(sqlt_exec(db, sql), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "CREATE TABLE sec.s(x, secret); INSERT INTO sec.s SELECT x, '" MARKER "' FROM p"),
                    SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM p JOIN sec.s USING(x)"), 3);
    sqlite3_close(db);
    /* the other way round: encrypted main, plaintext attached with plaintext=1 */
    SR_CHECK_EQ_INT(sqlt_open(enc, key, NULL, &db), SQLITE_OK);
    snprintf(sql, sizeof sql, "ATTACH 'file:%s?vfs=strongroom&plaintext=1' AS pub", plain);
    SR_CHECK_EQ_INT(sqlt_exec(db, sql), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT sum(s.x) FROM s JOIN pub.p USING(x)"), 6);
    sqlite3_close(db);
    char where[1024];
    SR_CHECK_MSG(!sqlt_marker_on_disk(dir_path("enc"), MARKER, where, sizeof where), "plaintext in %s", where);
}

static int backup(sqlite3 *from, sqlite3 *to)
{
    sqlite3_backup *b = sqlite3_backup_init(to, "main", from, "main");
    if (!b) return sqlite3_errcode(to);
    int rc = sqlite3_backup_step(b, -1);
    int fin = sqlite3_backup_finish(b);
    return rc == SQLITE_DONE ? fin : rc;
}

static void test_backup_api(void)
{
    const char *key = sqlt_keyfile("backup.key");
    char src[512], dst[512], out[512], fp1[65], fp2[65];
    snprintf(src, sizeof src, "%s/bsrc.db", dir_path("enc"));
    snprintf(dst, sizeof dst, "%s/bdst.db", dir_path("enc"));
    snprintf(out, sizeof out, "%s/bout.db", dir_path("plain"));
    sqlite3 *a = NULL, *b = NULL, *c = NULL;
    SR_CHECK_EQ_INT(sqlt_open(src, key, NULL, &a), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(a, 7, 1000, MARKER), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_open(dst, key, NULL, &b), SQLITE_OK);
    SR_CHECK_EQ_INT(backup(a, b), SQLITE_OK); /* encrypted -> encrypted */
    SR_CHECK_STR(sqlt_fingerprint(b, fp2), sqlt_fingerprint(a, fp1));
    SR_CHECK_STR(sqlt_integrity(b), "ok");
    SR_CHECK_EQ_INT(sqlt_open(out, NULL, NULL, &c), SQLITE_OK);
    SR_CHECK_EQ_INT(backup(b, c), SQLITE_OK); /* encrypted -> plaintext (an export) */
    SR_CHECK_STR(sqlt_fingerprint(c, fp2), fp1);
    /* plaintext -> encrypted page by page cannot make room for the trailer: refused, not written */
    sqlite3 *d = NULL;
    char dst2[512];
    snprintf(dst2, sizeof dst2, "%s/bdst2.db", dir_path("enc"));
    sqlite3 *plain_src = NULL;
    char psrc[512];
    snprintf(psrc, sizeof psrc, "%s/psrc.db", dir_path("plain"));
    SR_CHECK_EQ_INT(sqlt_open(psrc, NULL, NULL, &plain_src), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(plain_src, "CREATE TABLE x(y); INSERT INTO x VALUES('" MARKER "')"), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_open(dst2, key, NULL, &d), SQLITE_OK);
    sqlt_clear_log();
    SR_CHECK(backup(plain_src, d) != SQLITE_OK);
    SR_CHECK_MSG(strstr(sqlt_last_log(), "tdectl encrypt") != NULL, "log: %s", sqlt_last_log());
    sqlite3_close(a), sqlite3_close(b), sqlite3_close(c), sqlite3_close(d), sqlite3_close(plain_src);
    char where[1024];
    SR_CHECK_MSG(!sqlt_marker_on_disk(dir_path("enc"), MARKER, where, sizeof where), "plaintext in %s", where);
}

static void test_errors_a_user_sees(void)
{
    const char *key = sqlt_keyfile("errors.key");
    char keep_key[512];
    snprintf(keep_key, sizeof keep_key, "%s", key);
    const char *other = sqlt_keyfile("other.key");
    char db_path[512], plain[512], cut[512];
    snprintf(db_path, sizeof db_path, "%s/err.db", dir_path("enc"));
    snprintf(plain, sizeof plain, "%s/err-plain.db", dir_path("plain"));
    snprintf(cut, sizeof cut, "%s/cut.db", dir_path("enc"));
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(db_path, keep_key, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(db, 3, 400, MARKER), SQLITE_OK);
    int64_t root = sqlt_int(db, "SELECT rootpage FROM sqlite_schema WHERE name = 't'");
    sqlite3_close(db);

    sqlt_clear_log();
    SR_CHECK_EQ_INT(sqlt_open(db_path, other, NULL, &db), SQLITE_NOTADB); /* wrong key */
    SR_CHECK_MSG(strstr(sqlt_last_log(), "wrapped by master key") != NULL, "log: %s", sqlt_last_log());
    sqlite3_close(db);

    SR_CHECK_EQ_INT(sqlt_open(db_path, NULL, NULL, &db), SQLITE_OK); /* stock SQLite sees no database */
    SR_CHECK_EQ_INT(sqlt_exec(db, "SELECT * FROM t"), SQLITE_NOTADB);
    sqlite3_close(db);

    SR_CHECK_EQ_INT(sqlt_open(plain, NULL, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "CREATE TABLE p(x)"), SQLITE_OK);
    sqlite3_close(db);
    sqlt_clear_log();
    SR_CHECK_EQ_INT(sqlt_open(plain, keep_key, NULL, &db), SQLITE_NOTADB); /* plaintext, no plaintext=1 */
    SR_CHECK_MSG(strstr(sqlt_last_log(), "plaintext SQLite database") != NULL, "log: %s", sqlt_last_log());
    sqlite3_close(db);

    size_t len = 0;
    uint8_t *bytes = sr_test_read_file(db_path, &len);
    SR_CHECK(bytes && len > 8192);
    SR_CHECK(sr_test_write_file(cut, bytes, 5000) == 0); /* truncated into the key header */
    SR_CHECK_EQ_INT(sqlt_open(cut, keep_key, NULL, &db), SQLITE_NOTADB);
    SR_CHECK_MSG(strstr(sqlt_last_log(), "truncated") != NULL, "log: %s", sqlt_last_log());
    sqlite3_close(db);

    /* no key at all */
    char uri[1024];
    snprintf(uri, sizeof uri, "file:%s?vfs=strongroom", db_path);
    unsetenv("STRONGROOM_KEYFILE");
    SR_CHECK_EQ_INT(sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, NULL), SQLITE_CANTOPEN);
    SR_CHECK_MSG(strstr(sqlt_last_log(), "keyfile=") != NULL, "log: %s", sqlt_last_log());
    sqlite3_close(db);

    /* a flipped bit in the table's root page: the query fails with IOERR_DATA naming the page */
    bytes[8192 + (root - 1) * 4096 + 100] ^= 0x04;
    SR_CHECK(sr_test_write_file(db_path, bytes, len) == 0);
    free(bytes);
    SR_CHECK_EQ_INT(sqlt_open(db_path, keep_key, NULL, &db), SQLITE_OK);
    sqlt_clear_log();
    int rc = sqlt_exec(db, "SELECT sum(length(v)) FROM t");
    SR_CHECK_EQ_INT(sqlite3_extended_errcode(db), SQLITE_IOERR_DATA);
    SR_CHECK(rc != SQLITE_OK);
    char want[64];
    snprintf(want, sizeof want, "database page %lld ", (long long)root);
    SR_CHECK_MSG(strstr(sqlt_last_log(), want) != NULL, "log: %s", sqlt_last_log());
    sqlite3_close(db);
}

/* probe(): evaluated per row while a statement runs, so while its sorter and
 * temp files are open: counts them and scans for the marker (first calls only). */
static int probe_calls, scans_found, spilled_temp_files;
static char scan_where[1024];

static int count_open_temp_files(const char *dir)
{
    char path[64], target[4096];
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len > 0 && (target[len] = '\0', strncmp(target, dir, strlen(dir)) == 0) && strstr(target, "etilqs_")) n++;
    }
    return n;
}

static void probe(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc, (void)argv;
    if (probe_calls++ < 3) {
        const char *dir = sr_test_path("spill");
        int n = count_open_temp_files(dir);
        if (n > spilled_temp_files) spilled_temp_files = n;
        if (sqlt_marker_on_disk(dir, MARKER, scan_where, sizeof scan_where)) scans_found++;
    }
    sqlite3_result_int(ctx, 1);
}

static int run_probed(sqlite3 *db, const char *sql)
{
    probe_calls = 0;
    return sqlt_exec(db, sql);
}

static void test_no_plaintext_in_temp_sorter_and_statement_journals(void)
{
    const char *dir = dir_path("spill"), *key = sqlt_keyfile("spill.key");
    char db_path[512];
    snprintf(db_path, sizeof db_path, "%s/big.db", dir);
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(db_path, key, NULL, &db), SQLITE_OK);
    sqlite3_create_function(db, "probe", 0, SQLITE_UTF8, NULL, probe, NULL, NULL);
    SR_CHECK_EQ_INT(sqlt_exec(db, "PRAGMA temp_store=FILE; PRAGMA cache_size=20; PRAGMA temp.cache_size=20"), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(db, 11, 8000, MARKER), SQLITE_OK);
    /* a sort far larger than the sorter's memory spills to sorter files */
    SR_CHECK_EQ_INT(run_probed(db, "SELECT probe(), v FROM (SELECT v || hex(randomblob(60)) AS v FROM t "
                                   "ORDER BY random())"), SQLITE_OK);
    /* a temp table larger than its cache, and a multi-row UPDATE inside a
     * transaction: temp database, temp journal and statement journal */
    SR_CHECK_EQ_INT(sqlt_exec(db, "BEGIN; CREATE TEMP TABLE tt AS SELECT * FROM t; "
                                  "UPDATE t SET v = v || ' again' WHERE id IN (SELECT id FROM tt WHERE k > 10); "
                                  "INSERT INTO tt SELECT * FROM t"), SQLITE_OK);
    SR_CHECK_EQ_INT(run_probed(db, "SELECT probe() FROM tt"), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "CREATE INDEX temp.tt_v ON tt(v)"), SQLITE_OK);
    SR_CHECK_EQ_INT(run_probed(db, "SELECT probe(), v FROM t ORDER BY v || id"), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "COMMIT"), SQLITE_OK);
    SR_CHECK_STR(sqlt_integrity(db), "ok");
    SR_CHECK_MSG(spilled_temp_files >= 1, "the workload spilled no temp files (the test would prove nothing)");
    SR_CHECK_MSG(scans_found == 0, "plaintext found during the workload in %s", scan_where);
    sqlite3_close(db);
    char where[1024];
    SR_CHECK_MSG(!sqlt_marker_on_disk(dir, MARKER, where, sizeof where), "plaintext in %s", where);
}

int main(void)
{
    setenv("SQLITE_TMPDIR", dir_path("spill"), 1); /* read once, when SQLite initialises */
    sqlt_init();
    SR_RUN(test_matrix_journal_modes_and_page_sizes);
    SR_RUN(test_attach_plaintext_and_encrypted_together);
    SR_RUN(test_backup_api);
    SR_RUN(test_errors_a_user_sees);
    SR_RUN(test_no_plaintext_in_temp_sorter_and_statement_journals);
    return sr_test_finish();
}
