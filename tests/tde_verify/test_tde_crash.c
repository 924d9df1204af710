/*
 * Crash safety: a child process writes transactions through the strongroom VFS
 * and is killed with SIGKILL at a random moment, many times, in WAL and in
 * rollback-journal mode. After each kill the database must open (recovering
 * the WAL or playing back the hot journal, both encrypted), pass
 * integrity_check, and hold every transaction the child reported committed,
 * and no half of any transaction.
 */
#include "sqlt.h"
#include "sr_test.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROWS_PER_TXN 25
#define MARKER "CRASH-MARKER-5555"

static void child_writer(const char *db_path, const char *key, const char *mode, int report_fd)
{
    sqlite3 *db = NULL;
    if (sqlt_open(db_path, key, NULL, &db) != SQLITE_OK) _exit(3);
    char sql[1024];
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s; PRAGMA synchronous=FULL; PRAGMA cache_size=10", mode);
    if (sqlt_exec(db, sql) != SQLITE_OK) _exit(4);
    if (sqlt_exec(db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT, pad BLOB)") != SQLITE_OK) _exit(5);
    int64_t next = sqlt_int(db, "SELECT coalesce(max(id), 0) FROM t") + 1;
    for (;;) {
        snprintf(sql, sizeof sql,
                 "BEGIN; WITH RECURSIVE c(i) AS (SELECT %lld UNION ALL SELECT i + 1 FROM c WHERE i < %lld) "
                 "INSERT INTO t SELECT i, '" MARKER "' || i, randomblob(300) FROM c; "
                 "UPDATE t SET v = v || '+' WHERE id %% 13 = %lld %% 13; COMMIT",
                 (long long)next, (long long)(next + ROWS_PER_TXN - 1), (long long)next);
        if (sqlt_exec(db, sql) != SQLITE_OK) _exit(6);
        int64_t last = next + ROWS_PER_TXN - 1;
        if (write(report_fd, &last, sizeof last) != sizeof last) _exit(7);
        next += ROWS_PER_TXN;
    }
}

static int64_t kill_at_random(const char *db_path, const char *key, const char *mode, unsigned *seed)
{
    int fds[2];
    SR_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        child_writer(db_path, key, mode, fds[1]);
    }
    close(fds[1]);
    usleep(2000 + (useconds_t)(rand_r(seed) % 40000));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK_MSG(WIFSIGNALED(status), "the writer stopped by itself (status %d)", WEXITSTATUS(status));
    int64_t last = 0, v;
    while (read(fds[0], &v, sizeof v) == sizeof v) last = v;
    close(fds[0]);
    return last;
}

static void crash_loop(const char *mode, int iterations)
{
    char db_path[512];
    snprintf(db_path, sizeof db_path, "%s", sr_test_path(mode));
    const char *key = sqlt_keyfile("crash.key");
    char keyfile[512];
    snprintf(keyfile, sizeof keyfile, "%s", key);
    unsigned seed = 12345;
    int64_t total_committed = 0;
    for (int i = 0; i < iterations; i++) {
        int64_t committed = kill_at_random(db_path, keyfile, mode, &seed);
        sqlite3 *db = NULL;
        SR_CHECK_EQ_INT(sqlt_open(db_path, keyfile, NULL, &db), SQLITE_OK);
        const char *ok = sqlt_integrity(db);
        SR_CHECK_MSG(strcmp(ok, "ok") == 0, "%s iteration %d: %s (log: %s)", mode, i, ok, sqlt_last_log());
        if (!committed && sqlt_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 't'") == 0) {
            sqlite3_close(db); /* killed before its table was made (a loaded machine): nothing to lose yet */
            continue;
        }
        int64_t rows = sqlt_int(db, "SELECT count(*) FROM t"), max = sqlt_int(db, "SELECT max(id) FROM t");
        SR_CHECK_MSG(rows == max, "%s iteration %d: %lld rows but max id %lld (a lost transaction)", mode, i,
                     (long long)rows, (long long)max);
        SR_CHECK_MSG(max >= committed, "%s iteration %d: committed up to %lld, found %lld", mode, i,
                     (long long)committed, (long long)max);
        SR_CHECK_MSG(rows % ROWS_PER_TXN == 0, "%s iteration %d: %lld rows: half a transaction", mode, i,
                     (long long)rows);
        if (committed > total_committed) total_committed = committed;
        sqlite3_close(db);
        if (sr_test_failures_in_current) break;
    }
    SR_CHECK_MSG(total_committed > 0, "%s: no transaction committed before any kill (the test proved nothing)", mode);
    printf("  %s: %d kills, %lld rows committed\n", mode, iterations, (long long)total_committed);
    char where[1024];
    SR_CHECK_MSG(!sqlt_marker_on_disk(sr_test_tmpdir(), MARKER, where, sizeof where), "plaintext in %s", where);
}

static void test_sigkill_during_wal_transactions(void) { crash_loop("WAL", 40); }
static void test_sigkill_during_rollback_journal_transactions(void) { crash_loop("DELETE", 40); }

int main(void)
{
    sqlt_init();
    SR_RUN(test_sigkill_during_wal_transactions);
    SR_RUN(test_sigkill_during_rollback_journal_transactions);
    return sr_test_finish();
}
