/*
 * db.c — the key store's SQL on SQLite or PostgreSQL (see db.h).
 *
 * SQLite: statements prepared once and reused; WAL, synchronous=FULL, so an
 * acknowledged write survives SIGKILL and power loss.
 * PostgreSQL: one libpq connection per store handle (kmsd serialises its
 * use); ?N becomes $N once per statement; parameters go with their types
 * (bytea in binary); results come back as text. A connection lost between
 * transactions is re-established once before the next statement.
 */
#include "db.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE 48
#define MAX_PARAMS 24
#define WRITE_LOCK_ID "7368726f6f6d" /* pg_advisory_xact_lock key of every write transaction */

/* PostgreSQL type OIDs (pg_type.h is not in libpq-dev) */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25

struct kms_stmt {
    kms_db_t *db;
    const char *sql; /* the caller's literal */
    sqlite3_stmt *lite;
    /* PostgreSQL */
    char *pg_sql;
    int nparams;
    unsigned types[MAX_PARAMS];
    char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS], formats[MAX_PARAMS];
    PGresult *res;
    int row, rows;
    uint8_t *blob; /* the last bytea column read, decoded */
};

struct kms_db {
    sqlite3 *lite;
    PGconn *pg;
    int in_txn;
    int64_t changes;
    kms_stmt_t *stmts[STMT_CACHE];
};

int kms_db_is_postgres(const char *location)
{
    return location && (!strncmp(location, "postgresql://", 13) || !strncmp(location, "postgres://", 11));
}

int kms_db_postgres(const kms_db_t *db) { return db->pg != NULL; }

/* ---- errors ------------------------------------------------------------------------ */

static sr_err_t lite_error(kms_db_t *db, int rc, const char *what)
{
    sr_err_t code = rc == SQLITE_FULL                              ? SR_ERR_DISK_FULL
                    : rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB  ? SR_ERR_CORRUPT
                    : (rc & 0xff) == SQLITE_CONSTRAINT             ? SR_ERR_EXISTS
                    : rc == SQLITE_BUSY                            ? SR_ERR_TIMEOUT
                                                                   : SR_ERR_IO;
    return sr_err_set(code, "key store: %s: %s", what, sqlite3_errmsg(db->lite));
}

/* The first line of libpq's message (the rest repeats the statement). */
static sr_err_t pg_error(kms_db_t *db, const PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(db->pg);
    if (!msg || !*msg) msg = PQerrorMessage(db->pg);
    size_t n = strcspn(msg, "\n");
    sr_err_t code = PQstatus(db->pg) != CONNECTION_OK          ? SR_ERR_NETWORK
                    : state && !strcmp(state, "23505")         ? SR_ERR_EXISTS
                    : state && !strcmp(state, "53100")         ? SR_ERR_DISK_FULL
                    : state && !strncmp(state, "40", 2)        ? SR_ERR_TIMEOUT
                                                               : SR_ERR_IO;
    return sr_err_set(code, "key store (PostgreSQL %s:%s/%s): %s: %.*s", PQhost(db->pg), PQport(db->pg), PQdb(db->pg),
                      what, (int)n, msg);
}

/* Before a statement outside a transaction: a connection lost since (the
 * server restarted, a failover) is re-established once. */
static void pg_revive(kms_db_t *db)
{
    if (!db->in_txn && PQstatus(db->pg) != CONNECTION_OK) PQreset(db->pg);
}

/* ---- open and close -------------------------------------------------------------------- */

static sr_err_t open_sqlite(kms_db_t *db, const char *uri)
{
    int r = sqlite3_open_v2(uri, &db->lite, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (r != SQLITE_OK)
        return sr_err_set(r == SQLITE_NOTADB ? SR_ERR_AUTH : SR_ERR_IO, "cannot open key store %s: %s", uri,
                          db->lite ? sqlite3_errmsg(db->lite) : sqlite3_errstr(r));
    sqlite3_busy_timeout(db->lite, 10000);
    /* The first read proves the root key: a wrong one fails here. */
    sr_err_t rc = kms_db_exec(db, "PRAGMA journal_mode=WAL", "open");
    if (rc == SR_OK) rc = kms_db_exec(db, "PRAGMA synchronous=FULL", "open");
    return rc;
}

static sr_err_t open_postgres(kms_db_t *db, const char *conninfo)
{
    db->pg = PQconnectdb(conninfo);
    if (!db->pg) return sr_err_set(SR_ERR_NOMEM, "key store: PostgreSQL connection");
    if (PQstatus(db->pg) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(db->pg);
        /* never the connection string: it may hold a password */
        return sr_err_set(SR_ERR_NETWORK, "cannot connect to the key store (PostgreSQL): %.*s", (int)strcspn(msg, "\n"),
                          msg);
    }
    return kms_db_exec(db, "SET client_min_messages = warning", "open");
}

sr_err_t kms_db_open(const char *location, kms_db_t **out)
{
    kms_db_t *db = calloc(1, sizeof *db);
    if (!db) return SR_ERR_NOMEM;
    sr_err_t rc = kms_db_is_postgres(location) ? open_postgres(db, location) : open_sqlite(db, location);
    if (rc != SR_OK) {
        kms_db_close(db);
        return rc;
    }
    *out = db;
    return SR_OK;
}

static void stmt_free(kms_stmt_t *st)
{
    if (!st) return;
    kms_done(st);
    if (st->lite) sqlite3_finalize(st->lite);
    free(st->pg_sql);
    free(st);
}

void kms_db_close(kms_db_t *db)
{
    if (!db) return;
    for (size_t i = 0; i < STMT_CACHE; i++) stmt_free(db->stmts[i]);
    if (db->lite) sqlite3_close_v2(db->lite);
    if (db->pg) PQfinish(db->pg);
    free(db);
}

/* ---- transactions ------------------------------------------------------------------------ */

sr_err_t kms_db_exec(kms_db_t *db, const char *sql, const char *what)
{
    if (db->lite) {
        int r = sqlite3_exec(db->lite, sql, NULL, NULL, NULL);
        return r == SQLITE_OK ? SR_OK : lite_error(db, r, what);
    }
    pg_revive(db);
    PGresult *res = PQexec(db->pg, sql);
    ExecStatusType s = PQresultStatus(res);
    sr_err_t rc = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ? SR_OK : pg_error(db, res, what);
    PQclear(res);
    return rc;
}

/* ROLLBACK (its failure leaves nothing to undo) */
static void roll_back(kms_db_t *db)
{
    if (kms_db_exec(db, "ROLLBACK", "rollback") != SR_OK) sr_log_debug("key store: %s", sr_err_detail());
}

sr_err_t kms_db_begin(kms_db_t *db, int write)
{
    const char *sql = db->lite ? (write ? "BEGIN IMMEDIATE" : "BEGIN")
                      : write  ? "BEGIN; SELECT pg_advisory_xact_lock(x'" WRITE_LOCK_ID "'::bigint)"
                               : "BEGIN ISOLATION LEVEL REPEATABLE READ";
    sr_err_t rc = kms_db_exec(db, sql, "begin");
    if (rc == SR_OK) db->in_txn = 1;
    else if (db->pg) roll_back(db);
    return rc;
}

sr_err_t kms_db_commit(kms_db_t *db)
{
    sr_err_t rc = kms_db_exec(db, "COMMIT", "commit");
    if (rc == SR_OK || db->pg) db->in_txn = 0; /* PostgreSQL ends a failed transaction at COMMIT */
    return rc;
}

void kms_db_rollback(kms_db_t *db)
{
    if (db->lite ? !sqlite3_get_autocommit(db->lite) : db->in_txn) roll_back(db);
    db->in_txn = 0;
}

/* ---- statements ------------------------------------------------------------------------------- */

/* ?N becomes $N, a bare ? the next number; quoted text is left alone. */
static char *pg_translate(const char *sql, int *nparams)
{
    char *out = malloc(strlen(sql) * 2 + 1), *o = out;
    int next = 0, max = 0, quoted = 0;
    for (const char *p = sql; out && *p; p++) {
        if (*p == '\'') quoted = !quoted;
        if (*p != '?' || quoted) {
            *o++ = *p;
            continue;
        }
        int n = 0;
        while (p[1] >= '0' && p[1] <= '9') n = n * 10 + (*++p - '0');
        if (!n) n = ++next;
        if (n > max) max = n;
        o += sprintf(o, "$%d", n);
    }
    if (out) *o = '\0';
    *nparams = max;
    return out;
}

static sr_err_t stmt_new(kms_db_t *db, const char *sql, kms_stmt_t **out)
{
    kms_stmt_t *st = calloc(1, sizeof *st);
    if (!st) return SR_ERR_NOMEM;
    st->db = db, st->sql = sql;
    if (db->lite) {
        int r = sqlite3_prepare_v3(db->lite, sql, -1, SQLITE_PREPARE_PERSISTENT, &st->lite, NULL);
        if (r != SQLITE_OK) {
            free(st);
            return lite_error(db, r, "prepare");
        }
    } else if (!(st->pg_sql = pg_translate(sql, &st->nparams)) || st->nparams > MAX_PARAMS) {
        free(st->pg_sql), free(st);
        return sr_err_set(SR_ERR_INTERNAL, "key store: a statement with more than %d parameters", MAX_PARAMS);
    }
    *out = st;
    return SR_OK;
}

sr_err_t kms_db_prepare(kms_db_t *db, const char *sql, kms_stmt_t **out)
{
    size_t i = 0;
    for (; i < STMT_CACHE && db->stmts[i]; i++)
        if (db->stmts[i]->sql == sql) return *out = db->stmts[i], SR_OK;
    sr_err_t rc = stmt_new(db, sql, out);
    if (rc == SR_OK && i < STMT_CACHE) db->stmts[i] = *out;
    return rc;
}

static int cached(const kms_stmt_t *st)
{
    for (size_t i = 0; i < STMT_CACHE; i++)
        if (st->db->stmts[i] == st) return 1;
    return 0;
}

void kms_done(kms_stmt_t *st)
{
    if (st->lite) sqlite3_reset(st->lite), sqlite3_clear_bindings(st->lite);
    for (int i = 0; i < MAX_PARAMS; i++) free(st->values[i]), st->values[i] = NULL, st->types[i] = 0;
    PQclear(st->res), st->res = NULL;
    PQfreemem(st->blob), st->blob = NULL;
    if (!cached(st)) { /* the cache was full: a one-off statement */
        if (st->lite) sqlite3_finalize(st->lite);
        free(st->pg_sql), free(st);
    }
}

static void pg_bind(kms_stmt_t *st, int i, unsigned type, const void *v, size_t n, int binary)
{
    if (i < 1 || i > MAX_PARAMS) return;
    free(st->values[i - 1]);
    st->values[i - 1] = NULL;
    st->types[i - 1] = type;
    st->formats[i - 1] = binary;
    st->lengths[i - 1] = (int)n;
    if (v && (st->values[i - 1] = malloc(n + 1))) memcpy(st->values[i - 1], v, n), st->values[i - 1][n] = '\0';
}

void kms_bind_int(kms_stmt_t *st, int i, int64_t v)
{
    if (st->lite) {
        sqlite3_bind_int64(st->lite, i, v);
        return;
    }
    char text[24];
    int n = snprintf(text, sizeof text, "%lld", (long long)v);
    pg_bind(st, i, OID_INT8, text, (size_t)n, 0);
}

void kms_bind_text(kms_stmt_t *st, int i, const char *v)
{
    if (!v || !*v) kms_bind_null(st, i, KMS_TEXT);
    else if (st->lite) sqlite3_bind_text(st->lite, i, v, -1, SQLITE_TRANSIENT);
    else pg_bind(st, i, OID_TEXT, v, strlen(v), 0);
}

void kms_bind_blob(kms_stmt_t *st, int i, const void *v, size_t n)
{
    if (!v) kms_bind_null(st, i, KMS_BLOB);
    else if (st->lite) sqlite3_bind_blob(st->lite, i, v, (int)n, SQLITE_TRANSIENT);
    else pg_bind(st, i, OID_BYTEA, v, n, 1);
}

void kms_bind_null(kms_stmt_t *st, int i, kms_type_t type)
{
    if (st->lite) sqlite3_bind_null(st->lite, i);
    else pg_bind(st, i, type == KMS_INT ? OID_INT8 : type == KMS_TEXT ? OID_TEXT : OID_BYTEA, NULL, 0, 0);
}

static sr_err_t pg_execute(kms_stmt_t *st, const char *what)
{
    kms_db_t *db = st->db;
    pg_revive(db);
    st->res = PQexecParams(db->pg, st->pg_sql, st->nparams, st->types, (const char *const *)st->values, st->lengths,
                           st->formats, 0);
    ExecStatusType s = PQresultStatus(st->res);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) return pg_error(db, st->res, what);
    const char *changed = PQcmdTuples(st->res);
    if (*changed) db->changes = strtoll(changed, NULL, 10);
    st->rows = s == PGRES_TUPLES_OK ? PQntuples(st->res) : 0;
    st->row = -1;
    return SR_OK;
}

sr_err_t kms_step(kms_stmt_t *st, const char *what, int *row)
{
    *row = 0;
    if (st->lite) {
        int r = sqlite3_step(st->lite);
        if (r == SQLITE_ROW) return *row = 1, SR_OK;
        if (r != SQLITE_DONE) return lite_error(st->db, r, what);
        st->db->changes = sqlite3_changes(st->db->lite);
        return SR_OK;
    }
    if (!st->res) {
        sr_err_t rc = pg_execute(st, what);
        if (rc != SR_OK) return rc;
    }
    PQfreemem(st->blob), st->blob = NULL;
    *row = ++st->row < st->rows;
    return SR_OK;
}

int kms_column_null(kms_stmt_t *st, int i)
{
    return st->lite ? sqlite3_column_type(st->lite, i) == SQLITE_NULL : PQgetisnull(st->res, st->row, i);
}

int64_t kms_column_int(kms_stmt_t *st, int i)
{
    return st->lite ? sqlite3_column_int64(st->lite, i) : strtoll(PQgetvalue(st->res, st->row, i), NULL, 10);
}

const char *kms_column_text(kms_stmt_t *st, int i)
{
    const char *t = st->lite ? (const char *)sqlite3_column_text(st->lite, i) : PQgetvalue(st->res, st->row, i);
    return t ? t : "";
}

const uint8_t *kms_column_blob(kms_stmt_t *st, int i, size_t *len)
{
    if (st->lite) {
        *len = (size_t)sqlite3_column_bytes(st->lite, i);
        return sqlite3_column_blob(st->lite, i);
    }
    PQfreemem(st->blob);
    st->blob = PQunescapeBytea((const unsigned char *)PQgetvalue(st->res, st->row, i), len);
    if (!st->blob) *len = 0;
    return st->blob;
}

int64_t kms_db_changes(kms_db_t *db) { return db->changes; }
