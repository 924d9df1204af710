/*
 * tdev.h — helpers the tamper and hardening tests share: one key file, a
 * database made by the standard workload, tdectl run as a program, a process
 * that dies mid-transaction (leaving a hot journal or a WAL), byte edits.
 */
#ifndef STRONGROOM_TESTS_TDEV_H
#define STRONGROOM_TESTS_TDEV_H

#include "sqlt.h"
#include "sr_test.h"

#define PS 4096
#define HDR 8192

extern char keyfile[512];

/* Runs build/tde/tdectl with the arguments; stdout+stderr into out; exit status. */
int tdectl(char *out, size_t cap, const char *fmt, ...) SR_PRINTF(3, 4);
/* A database in the test directory filled by sqlt_workload in journal mode `mode`. */
const char *make_db(const char *name, const char *mode, int rows, const char *marker);
/* Opens and reads everything; returns the extended error code (0 if all read). */
int read_all(const char *path);
void flip(const char *path, long off);
void copy_range(const char *from, long from_off, const char *to, long to_off, size_t n);
/* A child runs sql in journal mode `mode` (cache of 5 pages) and dies without closing. */
void crash_mid_write(const char *path, const char *mode, const char *sql);
/* What another process sees of SQLite's lock bytes (PENDING, RESERVED and
 * the SHARED range at 1 GiB): 1 if some process holds a lock there, 0 if
 * none does (asked from a child: F_GETLK ignores the asker's own locks). */
int lock_bytes_held(const char *db);

#endif
