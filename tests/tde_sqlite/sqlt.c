/* sqlt.c — see sqlt.h. */
#include "sqlt.h"

#include <dirent.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keymgr.h"
#include "sr_test.h"
#include "tde.h"

static char last_log[16384];
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void capture_log(void *arg, int rc, const char *msg)
{
    (void)arg;
    pthread_mutex_lock(&log_lock);
    size_t used = strlen(last_log);
    if (used < sizeof last_log - 1) snprintf(last_log + used, sizeof last_log - used, "(%d) %s\n", rc, msg);
    pthread_mutex_unlock(&log_lock);
}

const char *sqlt_last_log(void) { return last_log; }
void sqlt_clear_log(void) { last_log[0] = '\0'; }

void sqlt_init(void)
{
    static int done;
    if (done) return;
    done = 1;
    sqlite3_config(SQLITE_CONFIG_LOG, capture_log, NULL);
    sqlite3_config(SQLITE_CONFIG_URI, 1);
    sr_log_set_level(SR_LOG_WARN);
    if (sr_sqlite_register(NULL, 0) != SQLITE_OK) fprintf(stderr, "cannot register the strongroom VFS\n"), exit(1);
}

const char *sqlt_keyfile(const char *name)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", sr_test_path(name));
    if (access(path, F_OK) != 0 && sr_keyfile_create(path) != SR_OK)
        fprintf(stderr, "cannot create key file %s: %s\n", path, sr_err_detail()), exit(1);
    return path;
}

const char *sqlt_uri(const char *path, const char *keyfile, const char *extra)
{
    static char uri[4][2 * PATH_MAX];
    static int next;
    char *u = uri[next++ % 4];
    snprintf(u, sizeof uri[0], "file:%s?vfs=strongroom&keyfile=%s%s", path, keyfile, extra ? extra : "");
    return u;
}

int sqlt_open(const char *path, const char *keyfile, const char *extra, sqlite3 **db)
{
    sqlt_init();
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    int rc = keyfile ? sqlite3_open_v2(sqlt_uri(path, keyfile, extra), db, flags, NULL)
                     : sqlite3_open_v2(path, db, flags, NULL);
    if (rc == SQLITE_OK) sqlite3_busy_timeout(*db, 5000);
    return rc;
}

int sqlt_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    sqlite3_free(err);
    return rc;
}

int64_t sqlt_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

const char *sqlt_integrity(sqlite3 *db)
{
    static char line[512];
    sqlite3_stmt *st = NULL;
    snprintf(line, sizeof line, "integrity_check did not run");
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        snprintf(line, sizeof line, "%s", (const char *)sqlite3_column_text(st, 0));
    else snprintf(line, sizeof line, "integrity_check failed: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return line;
}

static int hash_query(sqlite3 *db, EVP_MD_CTX *md, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const void *p = sqlite3_column_blob(st, i);
            int n = sqlite3_column_bytes(st, i), type = sqlite3_column_type(st, i);
            EVP_DigestUpdate(md, &type, sizeof type);
            EVP_DigestUpdate(md, &n, sizeof n);
            if (p && n) EVP_DigestUpdate(md, p, (size_t)n);
        }
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

const char *sqlt_fingerprint(sqlite3 *db, char out[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name", -1, &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT * FROM \"%s\" ORDER BY rowid", (const char *)sqlite3_column_text(st, 0));
        EVP_DigestUpdate(md, sql, strlen(sql));
        rc = hash_query(db, md, sql);
    }
    sqlite3_finalize(st);
    unsigned char d[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(md, d, &n);
    EVP_MD_CTX_free(md);
    if (rc != SQLITE_OK) snprintf(out, 65, "error %d", rc);
    else sr_hex_encode(d, 32, out);
    return out;
}

static unsigned next_rand(unsigned *s) { return *s = *s * 1103515245u + 12345u, (*s >> 8) & 0xffffff; }

int sqlt_workload(sqlite3 *db, unsigned seed, int rows, const char *marker)
{
    int rc = sqlt_exec(db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k INT, v TEXT, b BLOB)");
    sqlite3_stmt *ins = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT INTO t(k, v, b) VALUES(?, ?, zeroblob(?) || ?)", -1, &ins, NULL);
    for (int batch = 0; rc == SQLITE_OK && batch < 4; batch++) {
        rc = sqlt_exec(db, "BEGIN");
        for (int i = 0; rc == SQLITE_OK && i < rows / 4; i++) {
            char text[200];
            unsigned r = next_rand(&seed);
            snprintf(text, sizeof text, "%s row %u %.*s", marker, r, (int)(r % 120), "........................................"
                     "................................................................................");
            sqlite3_bind_int(ins, 1, (int)(r % 1000));
            sqlite3_bind_text(ins, 2, text, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(ins, 3, (int)(r % 300));
            sqlite3_bind_text(ins, 4, marker, -1, SQLITE_STATIC);
            rc = sqlite3_step(ins) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
            sqlite3_reset(ins);
        }
        if (rc == SQLITE_OK) rc = sqlt_exec(db, "COMMIT");
    }
    sqlite3_finalize(ins);
    if (rc == SQLITE_OK) rc = sqlt_exec(db, "CREATE INDEX IF NOT EXISTS t_k ON t(k)");
    if (rc == SQLITE_OK) rc = sqlt_exec(db, "UPDATE t SET v = v || ' updated', k = k + 1 WHERE id % 7 = 0");
    if (rc == SQLITE_OK) rc = sqlt_exec(db, "DELETE FROM t WHERE id % 11 = 0");
    if (rc == SQLITE_OK && sqlt_int(db, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode='wal'") == 0)
        rc = sqlt_exec(db, "VACUUM");
    return rc;
}

static int file_has(const char *path, const char *marker)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0; /* a FIFO would block */
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t mlen = strlen(marker), cap = 1 << 16, keep = 0;
    char *buf = malloc(cap + mlen);
    int found = 0;
    size_t n;
    while (!found && (n = fread(buf + keep, 1, cap, f)) > 0) {
        size_t len = keep + n;
        found = memmem(buf, len, marker, mlen) != NULL;
        keep = len < mlen - 1 ? len : mlen - 1;
        memmove(buf, buf + len - keep, keep);
    }
    free(buf);
    fclose(f);
    return found;
}

int sqlt_marker_on_disk(const char *dir, const char *marker, char *where, size_t where_len)
{
    char path[PATH_MAX + 64], target[PATH_MAX];
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (file_has(path, marker)) {
            snprintf(where, where_len, "%s", path);
            closedir(d);
            return 1;
        }
    }
    if (d) closedir(d);
    DIR *fds = opendir("/proc/self/fd");
    for (struct dirent *e; fds && (e = readdir(fds));) {
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        if (strncmp(target, dir, strlen(dir)) == 0 && file_has(path, marker)) {
            snprintf(where, where_len, "%s (open descriptor)", target);
            closedir(fds);
            return 1;
        }
    }
    if (fds) closedir(fds);
    return 0;
}
