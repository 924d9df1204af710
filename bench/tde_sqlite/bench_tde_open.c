/*
 * bench_tde_open — what an encrypted tablespace adds to sqlite3_open_v2 + the
 * first query when the key is available: plaintext vs strongroom, averaged
 * over many opens in one run (the key file read and parsed once, as a
 * long-running process or the agent's key cache would). Target: well under
 * 1 ms added.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tde.h"

static double now_us(void) { return (double)sr_time_mono_ns() / 1e3; }

static double open_query(const char *uri, const char *vfs)
{
    sqlite3 *db = NULL;
    double t0 = now_us();
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, vfs) != SQLITE_OK ||
        sqlite3_exec(db, "SELECT count(*) FROM t", NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "open %s: %s\n", uri, sqlite3_errmsg(db));
        exit(1);
    }
    sqlite3_close(db);
    return now_us() - t0;
}

static void make_db(const char *uri)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1),(2),(3)", NULL, NULL, NULL) != SQLITE_OK)
        fprintf(stderr, "create %s: %s\n", uri, sqlite3_errmsg(db)), exit(1);
    sqlite3_close(db);
}

int main(void)
{
    char dir[] = "/tmp/bench_tde_open.XXXXXX", key[256], plain[512], enc[512];
    if (!mkdtemp(dir)) return 1;
    snprintf(key, sizeof key, "%s/k.key", dir);
    snprintf(plain, sizeof plain, "file:%s/plain.db", dir);
    snprintf(enc, sizeof enc, "file:%s/enc.db?vfs=strongroom&keyfile=%s", dir, key);
    sqlite3_config(SQLITE_CONFIG_URI, 1);
    sr_log_set_level(SR_LOG_WARN);
    if (sr_keyfile_create(key) != SR_OK || sr_sqlite_register(NULL, 0) != SQLITE_OK) return 1;
    make_db(plain);
    make_db(enc);
    int n = getenv("SR_BENCH_QUICK") ? 200 : 5000;
    double tp = 0, te = 0;
    for (int i = 0; i < n; i++) tp += open_query(plain, NULL), te += open_query(enc, NULL);
    printf("sqlite3_open_v2 + first query, mean of %d opens each (µs)\n\n", n);
    printf("| plaintext | strongroom (key cached) | added |\n|---|---|---|\n");
    printf("| %9.1f | %23.1f | %5.1f |\n", tp / n, te / n, (te - tp) / n);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
