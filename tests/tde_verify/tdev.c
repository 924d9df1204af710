/* tdev.c — see tdev.h. */
#include "tdev.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

char keyfile[512];


int tdectl(char *out, size_t cap, const char *fmt, ...)
{
    char args[3000], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s", sr_test_build_path("tde/tdectl"), args);
    return sr_test_command(out, cap, cmd);
}

const char *make_db(const char *name, const char *mode, int rows, const char *marker)
{
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s", sr_test_path(name));
    sqlite3 *db = NULL;
    SR_CHECK_EQ_INT(sqlt_open(p, keyfile, NULL, &db), SQLITE_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", mode);
    SR_CHECK_EQ_INT(sqlt_exec(db, sql), SQLITE_OK);
    SR_CHECK_EQ_INT(sqlt_workload(db, 5, rows, marker), SQLITE_OK);
    sqlite3_close(db);
    return p;
}

int read_all(const char *path)
{
    sqlite3 *db = NULL;
    sqlt_clear_log();
    int rc = sqlt_open(path, keyfile, NULL, &db);
    if (rc == SQLITE_OK) {
        rc = sqlt_exec(db, "SELECT count(*), sum(length(v)), sum(k) FROM t; SELECT count(*) FROM t INDEXED BY t_k "
                           "WHERE k > -1");
        if (rc != SQLITE_OK) rc = sqlite3_extended_errcode(db);
    }
    sqlite3_close(db);
    return rc;
}

void flip(const char *path, long off)
{
    size_t len = 0;
    uint8_t *b = sr_test_read_file(path, &len);
    SR_CHECK(b && (size_t)off < len);
    if (!b || (size_t)off >= len) return;
    b[off] ^= 0x20;
    SR_CHECK(sr_test_write_file(path, b, len) == 0);
    free(b);
}

void copy_range(const char *from, long from_off, const char *to, long to_off, size_t n)
{
    size_t la = 0, lb = 0;
    uint8_t *a = sr_test_read_file(from, &la), *b = sr_test_read_file(to, &lb);
    SR_CHECK(a && b && from_off + n <= la && to_off + n <= lb);
    if (a && b && from_off + n <= la && to_off + n <= lb) {
        memcpy(b + to_off, a + from_off, n);
        SR_CHECK(sr_test_write_file(to, b, lb) == 0);
    }
    free(a), free(b);
}

/* A child writes, then dies without closing: the WAL (or hot journal) stays. */
void crash_mid_write(const char *path, const char *mode, const char *sql)
{
    pid_t pid = fork();
    if (pid == 0) {
        sqlite3 *db = NULL;
        char pragma[160];
        snprintf(pragma, sizeof pragma, "PRAGMA journal_mode=%s; PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=5",
                 mode);
        if (sqlt_open(path, keyfile, NULL, &db) != SQLITE_OK || sqlt_exec(db, pragma) != SQLITE_OK ||
            sqlt_exec(db, sql) != SQLITE_OK)
            _exit(2);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

int lock_bytes_held(const char *db)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(db, O_RDONLY);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0x40000000, .l_len = 2 + 510};
        _exit(fd >= 0 && fcntl(fd, F_GETLK, &fl) == 0 ? fl.l_type != F_UNLCK : 2);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
}
