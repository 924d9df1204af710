/*
 * The nonce budget in normal use (issue: tde hardening, item 12): a service
 * that opens, writes one row and closes, 100,000 times. Before, each session
 * reserved 2^20 of the key's 2^32 encryptions and dropped the rest at close,
 * so the key rolled every 4,096 sessions and the database refused writes
 * after eight versions. Now reservations start small and what a session did
 * not use goes back to the header at close: the mark in the header stays
 * within a small multiple of the encryptions really made, and no key rolls.
 * SR_BUDGET_SESSIONS overrides the count (the 100,000 by default).
 */
#include "tdev.h"

#include <stdlib.h>
#include <time.h>

#include "tablespace.h"

static void test_many_short_sessions_keep_the_budget(void)
{
    const char *env = getenv("SR_BUDGET_SESSIONS");
    long sessions = env ? atol(env) : 100000;
    const char *path = sr_test_path("sessions.db");
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v)"), SQLITE_OK);
    sqlite3_close(db);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long failed = 0;
    for (long i = 0; i < sessions && failed < 10; i++) {
        int rc = sqlt_open(path, keyfile, NULL, &db);
        if (rc == SQLITE_OK) rc = sqlt_exec(db, "PRAGMA synchronous=OFF; INSERT INTO t(v) VALUES ('x')");
        if (rc != SQLITE_OK) {
            SR_CHECK_MSG(0, "session %ld: %s (log: %s)", i, sqlite3_errmsg(db), sqlt_last_log());
            failed++;
        }
        sqlite3_close(db);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    sr_keyprov_t *kp = NULL;
    SR_CHECK_OK(sr_keyprov_keyfile_open(keyfile, &kp));
    sr_tde_header_t h;
    SR_CHECK_OK(sr_tde_file_header_read(path, kp, &h, NULL));
    sr_keyprov_free(kp);
    SR_CHECK_EQ_INT(sqlt_open(path, keyfile, NULL, &db), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_int(db, "SELECT count(*) FROM t"), sessions);
    sqlite3_close(db);
    uint64_t mark = h.keys[h.n_keys - 1].encryptions_reserved;
    printf("  %ld sessions in %.1f s: %u key version(s), %llu encryptions reserved (%.1f per session)\n", sessions, secs,
           h.n_keys, (unsigned long long)mark, (double)mark / (double)sessions);
    SR_CHECK_EQ_INT(h.n_keys, 1);
    /* each session commits a frame or two and a checkpoint copies pages: a few
     * encryptions; before the fix it was 2^20 */
    SR_CHECK_MSG(mark < (uint64_t)sessions * 16, "%llu encryptions reserved for %ld sessions",
                 (unsigned long long)mark, sessions);
}

int main(void)
{
    sqlt_init();
    snprintf(keyfile, sizeof keyfile, "%s", sqlt_keyfile("budget.key"));
    SR_RUN(test_many_short_sessions_keep_the_budget);
    return sr_test_finish();
}
