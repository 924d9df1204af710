/*
 * db.h — the SQL under kmsd's key store, on one of two databases:
 *
 *   SQLite       one file, encrypted page by page by our VFS (one kmsd)
 *   PostgreSQL   shared by several kmsd (a libpq connection URI:
 *                postgresql://user@host:port/db?sslmode=verify-full)
 *
 * store.c writes SQL that both accept (numbered parameters ?N, ON CONFLICT,
 * RETURNING) and binds every parameter with its type, NULLs included
 * (PostgreSQL must know a parameter's type; SQLite ignores it).
 *
 * Write transactions are serialised across every kmsd of a store, as
 * SQLite's single writer serialises them in one: on PostgreSQL a write
 * transaction first takes one transaction-scoped advisory lock. So a
 * check-then-change (a join token's uses, a lease sweep) cannot interleave
 * with another kmsd's.
 */
#ifndef STRONGROOM_KMS_DB_H
#define STRONGROOM_KMS_DB_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

typedef struct kms_db kms_db_t;
typedef struct kms_stmt kms_stmt_t;
typedef enum { KMS_INT, KMS_TEXT, KMS_BLOB } kms_type_t;

/* Whether `location` names a PostgreSQL database (postgres:// or postgresql://). */
int kms_db_is_postgres(const char *location);
/* An SQLite URI (opened with SQLITE_OPEN_URI) or a PostgreSQL connection URI. */
sr_err_t kms_db_open(const char *location, kms_db_t **out) SR_MUST_CHECK;
void kms_db_close(kms_db_t *db);
int kms_db_postgres(const kms_db_t *db);

/* Statements without parameters (several, separated by ';'). */
sr_err_t kms_db_exec(kms_db_t *db, const char *sql, const char *what) SR_MUST_CHECK;
sr_err_t kms_db_begin(kms_db_t *db, int write) SR_MUST_CHECK;
sr_err_t kms_db_commit(kms_db_t *db) SR_MUST_CHECK;
void kms_db_rollback(kms_db_t *db);

/* `sql` must be a string literal: its address identifies the cached statement. */
sr_err_t kms_db_prepare(kms_db_t *db, const char *sql, kms_stmt_t **out) SR_MUST_CHECK;
void kms_bind_int(kms_stmt_t *st, int i, int64_t v);
void kms_bind_text(kms_stmt_t *st, int i, const char *v); /* NULL or "": SQL NULL */
void kms_bind_blob(kms_stmt_t *st, int i, const void *v, size_t n); /* v NULL: SQL NULL */
void kms_bind_null(kms_stmt_t *st, int i, kms_type_t type);
/* The next row (*row = 1) or the end (*row = 0). A unique-key violation is
 * SR_ERR_EXISTS; other failures name `what`. */
sr_err_t kms_step(kms_stmt_t *st, const char *what, int *row) SR_MUST_CHECK;
int kms_column_null(kms_stmt_t *st, int i);
int64_t kms_column_int(kms_stmt_t *st, int i);
const char *kms_column_text(kms_stmt_t *st, int i); /* "" for NULL */
const uint8_t *kms_column_blob(kms_stmt_t *st, int i, size_t *len);
/* Readies the statement for its next use (its result and bindings dropped). */
void kms_done(kms_stmt_t *st);
/* Rows changed by the last INSERT, UPDATE or DELETE. */
int64_t kms_db_changes(kms_db_t *db);

#endif
