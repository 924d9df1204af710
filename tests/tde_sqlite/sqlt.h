/*
 * sqlt.h — helpers the SQLite-level TDE tests share: open a database through
 * the strongroom VFS or plain SQLite, run SQL, fingerprint a database's
 * content, run a deterministic workload, and capture SQLite's error log.
 */
#ifndef STRONGROOM_TESTS_SQLT_H
#define STRONGROOM_TESTS_SQLT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* Registers the VFS, the error-log capture and URI filenames (once). */
void sqlt_init(void);
/* A fresh key file in the test directory (path returned, static). */
const char *sqlt_keyfile(const char *name);
/* "file:PATH?vfs=strongroom&keyfile=KEY" + extra ("&cipher=..." or ""). */
const char *sqlt_uri(const char *path, const char *keyfile, const char *extra);
/* Opens through strongroom (keyfile != NULL) or plain SQLite; returns the rc. */
int sqlt_open(const char *path, const char *keyfile, const char *extra, sqlite3 **db);
int sqlt_exec(sqlite3 *db, const char *sql);
/* First column of the first row as int64 (or -1 on error). */
int64_t sqlt_int(sqlite3 *db, const char *sql);
/* "ok" if PRAGMA integrity_check passes, else its first line (static buffer). */
const char *sqlt_integrity(sqlite3 *db);
/* SHA-256 (hex) over every row of every table, in rowid order. */
const char *sqlt_fingerprint(sqlite3 *db, char out[65]);
/* Tables t (+ index), rows with `marker` in text and blob columns, updates,
 * deletes, a VACUUM unless in WAL mode; deterministic for a seed. */
int sqlt_workload(sqlite3 *db, unsigned seed, int rows, const char *marker);
/* SQLite's error-log lines since the last reset (up to 16 KiB). */
const char *sqlt_last_log(void);
void sqlt_clear_log(void);
/* 1 if the marker occurs in any file under dir, or in any file this process
 * has open under dir (SQLite unlinks temp files right after opening them). */
int sqlt_marker_on_disk(const char *dir, const char *marker, char *where, size_t where_len);

#endif
