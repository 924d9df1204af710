/*
 * store.c — kmsd's key store: one SQLite database (WAL, synchronous=FULL, so
 * an acknowledged write survives SIGKILL and power loss; every change is one
 * transaction, so nothing is ever half-made).
 *
 *   meta(k, v)               store id, the wrapped store wrapping key (SWK)
 *   objects(seq, uid, ...)   one row per managed object; material wrapped by SWK
 *   attrs(uid, name, idx, …) Name, Object Group and custom attributes (multi-valued)
 *   grants(uid, principal)   who else may use a key
 *   principals(name, role)   certificate CN -> role
 *   certs(fingerprint, …)    certificates kmsctl issued, and their revocation
 */
#include "kms.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE 48

struct kms_store {
    sqlite3 *db;
    struct {
        const char *sql; /* a string literal: its address is its identity */
        sqlite3_stmt *st;
    } stmts[STMT_CACHE];
    pthread_mutex_t lock;
    sr_uuid_t id;
    uint8_t *swk; /* SR_KEYMGR_KEY_BYTES, locked memory */
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS objects(seq INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT UNIQUE NOT NULL,"
    " owner TEXT NOT NULL, object_type INT, algorithm INT, length INT, usage_mask INT, state INT, material BLOB,"
    " initial_date INT, activation_date INT, deactivation_date INT, destroy_date INT, compromise_date INT,"
    " compromise_occurrence_date INT, last_change_date INT, revocation_code INT, revocation_message TEXT,"
    " replaces TEXT, replaced_by TEXT);"
    "CREATE TABLE IF NOT EXISTS attrs(uid TEXT NOT NULL, name TEXT NOT NULL, idx INT NOT NULL, type INT NOT NULL,"
    " num INT, bytes BLOB, PRIMARY KEY(uid, name, idx));"
    "CREATE TABLE IF NOT EXISTS grants(uid TEXT NOT NULL, principal TEXT NOT NULL, PRIMARY KEY(uid, principal));"
    "CREATE TABLE IF NOT EXISTS principals(name TEXT PRIMARY KEY, role TEXT NOT NULL, grp TEXT);"
    "CREATE TABLE IF NOT EXISTS tokens(hash TEXT PRIMARY KEY, grp TEXT, uses INT NOT NULL, expires INT NOT NULL,"
    " created INT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS nodes(uuid TEXT PRIMARY KEY, name TEXT, grp TEXT, state TEXT NOT NULL,"
    " lease_expires INT, joined INT, left_at INT, nk TEXT, reason TEXT);"
    "CREATE TABLE IF NOT EXISTS certs(fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL, serial TEXT,"
    " not_after INT, revoked INT NOT NULL DEFAULT 0);";

static sr_err_t db_error(kms_store_t *s, int rc, const char *what)
{
    sr_err_t code = rc == SQLITE_FULL ? SR_ERR_DISK_FULL : rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB ? SR_ERR_CORRUPT
                                                                                                      : SR_ERR_IO;
    return sr_err_set(code, "key store: %s: %s", what, sqlite3_errmsg(s->db));
}

/* Statements are prepared once and reused (the store is used by one thread
 * at a time); done() readies one for its next use. */
static sr_err_t prepare(kms_store_t *s, const char *sql, sqlite3_stmt **st)
{
    size_t i = 0;
    for (; i < STMT_CACHE && s->stmts[i].sql; i++)
        if (s->stmts[i].sql == sql) return *st = s->stmts[i].st, SR_OK;
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK) return db_error(s, rc, "prepare");
    if (i < STMT_CACHE) s->stmts[i].sql = sql, s->stmts[i].st = *st;
    return SR_OK;
}

static void done(kms_store_t *s, sqlite3_stmt *st)
{
    for (size_t i = 0; i < STMT_CACHE && s->stmts[i].sql; i++)
        if (s->stmts[i].st == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    sqlite3_finalize(st); /* the cache was full */
}

/* Steps a statement that returns no rows, then finalizes it. */
static sr_err_t run(kms_store_t *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sr_err_t err = rc == SQLITE_DONE ? SR_OK : db_error(s, rc, what);
    done(s, st);
    return err;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v && *v) sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

static void column_text(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, cap, "%s", t ? (const char *)t : "");
}

void kms_store_lock(kms_store_t *s) { pthread_mutex_lock(&s->lock); }
void kms_store_unlock(kms_store_t *s) { pthread_mutex_unlock(&s->lock); }

static sr_err_t exec(kms_store_t *s, const char *sql)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? SR_OK : db_error(s, rc, sql);
}

sr_err_t kms_store_begin(kms_store_t *s) { return exec(s, "BEGIN IMMEDIATE"); }
sr_err_t kms_store_begin_read(kms_store_t *s) { return exec(s, "BEGIN"); }
sr_err_t kms_store_commit(kms_store_t *s) { return exec(s, "COMMIT"); }
void kms_store_rollback(kms_store_t *s)
{
    if (!sqlite3_get_autocommit(s->db)) (void)exec(s, "ROLLBACK");
}

/* ---- the store wrapping key ------------------------------------------------------- */

static sr_err_t meta_get(kms_store_t *s, const char *k, uint8_t *out, size_t cap, size_t *len)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "SELECT v FROM meta WHERE k = ?", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        if (n > cap) rc = sr_err_set(SR_ERR_CORRUPT, "key store: meta %s is %zu bytes", k, n);
        else memcpy(out, sqlite3_column_blob(st, 0), n), *len = n;
    } else {
        rc = r == SQLITE_DONE ? SR_ERR_NOT_FOUND : db_error(s, r, "read meta");
    }
    done(s, st);
    return rc;
}

static sr_err_t meta_put(kms_store_t *s, const char *k, const uint8_t *v, size_t len)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "INSERT INTO meta(k, v) VALUES(?, ?)", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, v, (int)len, SQLITE_STATIC);
    return run(s, st, "write meta");
}

static sr_err_t swk_create(kms_store_t *s, sr_keyprov_t *kp)
{
    sr_wrapped_key_t wk;
    uint8_t enc[SR_WRAPPED_KEY_ENCODED_MAX];
    size_t enc_len = 0;
    sr_uuid_generate(&s->id);
    sr_err_t rc = sr_keyprov_dek_create(kp, &s->id, 1, s->swk, &wk);
    if (rc == SR_OK) rc = sr_wrapped_key_encode(&wk, enc, sizeof enc, &enc_len);
    if (rc == SR_OK) rc = kms_store_begin(s);
    if (rc == SR_OK) rc = meta_put(s, "store_id", s->id.bytes, SR_UUID_BYTES);
    if (rc == SR_OK) rc = meta_put(s, "swk", enc, enc_len);
    if (rc == SR_OK) rc = kms_store_commit(s);
    if (rc != SR_OK) kms_store_rollback(s);
    return rc;
}

static sr_err_t swk_load(kms_store_t *s, sr_keyprov_t *kp)
{
    uint8_t enc[SR_WRAPPED_KEY_ENCODED_MAX];
    size_t len = 0, id_len = 0;
    sr_err_t rc = meta_get(s, "store_id", s->id.bytes, SR_UUID_BYTES, &id_len);
    if (rc == SR_ERR_NOT_FOUND) return swk_create(s, kp);
    if (rc == SR_OK) rc = meta_get(s, "swk", enc, sizeof enc, &len);
    if (rc == SR_ERR_NOT_FOUND) return sr_err_set(SR_ERR_CORRUPT, "key store has an id but no wrapping key");
    sr_wrapped_key_t wk;
    if (rc == SR_OK) rc = sr_wrapped_key_decode(enc, len, &wk);
    if (rc == SR_OK) rc = sr_keyprov_dek_unwrap(kp, &s->id, 1, &wk, s->swk);
    return rc;
}

sr_err_t kms_store_open(const char *uri, sr_keyprov_t *provider, kms_store_t **out)
{
    kms_store_t *s = calloc(1, sizeof *s);
    if (!s) return SR_ERR_NOMEM;
    pthread_mutex_init(&s->lock, NULL);
    s->swk = sr_secure_alloc(SR_KEYMGR_KEY_BYTES);
    sr_err_t rc = s->swk ? SR_OK : SR_ERR_NOMEM;
    int r = SQLITE_OK;
    if (rc == SR_OK) {
        r = sqlite3_open_v2(uri, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
        if (r != SQLITE_OK) rc = sr_err_set(r == SQLITE_NOTADB ? SR_ERR_AUTH : SR_ERR_IO, "cannot open key store %s: %s",
                                            uri, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(r));
    }
    if (rc == SR_OK) sqlite3_busy_timeout(s->db, 10000);
    /* The first read proves the root key: a wrong one fails here. */
    if (rc == SR_OK) rc = exec(s, "PRAGMA journal_mode=WAL");
    if (rc == SR_OK) rc = exec(s, "PRAGMA synchronous=FULL");
    if (rc == SR_OK) rc = exec(s, schema_sql);
    /* stores made before node groups: add the column (an error here means it is there) */
    if (rc == SR_OK) (void)sqlite3_exec(s->db, "ALTER TABLE principals ADD COLUMN grp TEXT", NULL, NULL, NULL);
    if (rc == SR_OK) rc = swk_load(s, provider);
    if (rc != SR_OK) {
        kms_store_close(s);
        return rc;
    }
    *out = s;
    return SR_OK;
}

void kms_store_close(kms_store_t *s)
{
    if (!s) return;
    for (size_t i = 0; i < STMT_CACHE && s->stmts[i].sql; i++) sqlite3_finalize(s->stmts[i].st);
    if (s->db) sqlite3_close_v2(s->db);
    if (s->swk) sr_secure_wipe(s->swk, SR_KEYMGR_KEY_BYTES), sr_secure_free(s->swk);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- objects ------------------------------------------------------------------------- */

static sr_err_t wrap_material(kms_store_t *s, const char *uid, const uint8_t *m, size_t len, uint8_t *out,
                              size_t *out_len)
{
    sr_wrapped_key_t wk;
    sr_err_t rc = sr_keymgr_wrap(SR_WRAP_AES_256_GCM, s->swk, SR_KEYMGR_KEY_BYTES, &s->id, 1, (const uint8_t *)uid,
                                 strlen(uid), m, len, &wk);
    if (rc == SR_OK) rc = sr_wrapped_key_encode(&wk, out, SR_WRAPPED_KEY_ENCODED_MAX, out_len);
    return rc;
}

#define OBJECT_COLUMNS                                                                                          \
    "uid, owner, object_type, algorithm, length, usage_mask, state, initial_date, activation_date,"            \
    " deactivation_date, destroy_date, compromise_date, compromise_occurrence_date, last_change_date,"         \
    " revocation_code, revocation_message, replaces, replaced_by"

static void bind_object(sqlite3_stmt *st, const kms_object_t *o)
{
    bind_text(st, 1, o->uid);
    bind_text(st, 2, o->owner);
    sqlite3_bind_int64(st, 3, o->object_type);
    sqlite3_bind_int64(st, 4, o->algorithm);
    sqlite3_bind_int64(st, 5, o->length);
    sqlite3_bind_int64(st, 6, o->usage_mask);
    sqlite3_bind_int64(st, 7, o->state);
    const int64_t dates[] = {o->initial_date, o->activation_date, o->deactivation_date, o->destroy_date,
                             o->compromise_date, o->compromise_occurrence_date, o->last_change_date};
    for (int i = 0; i < 7; i++) sqlite3_bind_int64(st, 8 + i, dates[i]);
    sqlite3_bind_int64(st, 15, o->revocation_code);
    bind_text(st, 16, o->revocation_message);
    bind_text(st, 17, o->replaces);
    bind_text(st, 18, o->replaced_by);
}

static void read_object(sqlite3_stmt *st, kms_object_t *o)
{
    memset(o, 0, sizeof *o);
    column_text(st, 0, o->uid, sizeof o->uid);
    column_text(st, 1, o->owner, sizeof o->owner);
    o->object_type = (uint32_t)sqlite3_column_int64(st, 2);
    o->algorithm = (uint32_t)sqlite3_column_int64(st, 3);
    o->length = (int32_t)sqlite3_column_int64(st, 4);
    o->usage_mask = (uint32_t)sqlite3_column_int64(st, 5);
    o->state = (uint32_t)sqlite3_column_int64(st, 6);
    int64_t *dates[] = {&o->initial_date, &o->activation_date, &o->deactivation_date, &o->destroy_date,
                        &o->compromise_date, &o->compromise_occurrence_date, &o->last_change_date};
    for (int i = 0; i < 7; i++) *dates[i] = sqlite3_column_int64(st, 7 + i);
    o->revocation_code = (uint32_t)sqlite3_column_int64(st, 14);
    column_text(st, 15, o->revocation_message, sizeof o->revocation_message);
    column_text(st, 16, o->replaces, sizeof o->replaces);
    column_text(st, 17, o->replaced_by, sizeof o->replaced_by);
}

sr_err_t kms_object_insert(kms_store_t *s, const kms_object_t *o, const uint8_t *material, size_t len)
{
    uint8_t blob[SR_WRAPPED_KEY_ENCODED_MAX];
    size_t blob_len = 0;
    sr_err_t rc = wrap_material(s, o->uid, material, len, blob, &blob_len);
    sqlite3_stmt *st;
    if (rc == SR_OK)
        rc = prepare(s, "INSERT INTO objects(" OBJECT_COLUMNS ", material) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     &st);
    if (rc != SR_OK) return rc;
    bind_object(st, o);
    sqlite3_bind_blob(st, 19, blob, (int)blob_len, SQLITE_TRANSIENT);
    return run(s, st, "insert object");
}

/* The one row `sql` selects for `key`, handed to read(); SR_ERR_NOT_FOUND if none. */
static sr_err_t load_row(kms_store_t *s, const char *sql, const char *key, void (*read)(sqlite3_stmt *, void *),
                         void *out, const char *what)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, sql, &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) read(st, out);
    else rc = r == SQLITE_DONE ? SR_ERR_NOT_FOUND : db_error(s, r, what);
    done(s, st);
    return rc;
}

static void read_object_row(sqlite3_stmt *st, void *o) { read_object(st, o); }

sr_err_t kms_object_load(kms_store_t *s, const char *uid, kms_object_t *o)
{
    return load_row(s, "SELECT " OBJECT_COLUMNS " FROM objects WHERE uid = ?", uid, read_object_row, o, "read object");
}

sr_err_t kms_object_update(kms_store_t *s, const kms_object_t *o)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "UPDATE objects SET uid=?1, owner=?2, object_type=?3, algorithm=?4, length=?5,"
                             " usage_mask=?6, state=?7, initial_date=?8, activation_date=?9, deactivation_date=?10,"
                             " destroy_date=?11, compromise_date=?12, compromise_occurrence_date=?13,"
                             " last_change_date=?14, revocation_code=?15, revocation_message=?16, replaces=?17,"
                             " replaced_by=?18 WHERE uid=?1", &st);
    if (rc != SR_OK) return rc;
    bind_object(st, o);
    return run(s, st, "update object");
}

sr_err_t kms_object_material(kms_store_t *s, const char *uid, uint8_t *material, size_t cap, size_t *len)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "SELECT material FROM objects WHERE uid = ?", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    sr_wrapped_key_t wk;
    if (r != SQLITE_ROW) rc = r == SQLITE_DONE ? SR_ERR_NOT_FOUND : db_error(s, r, "read material");
    else if (sqlite3_column_type(st, 0) == SQLITE_NULL) rc = sr_err_set(SR_ERR_NOT_FOUND, "%s has no key material", uid);
    else rc = sr_wrapped_key_decode(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &wk);
    done(s, st);
    if (rc != SR_OK) return rc;
    rc = sr_keymgr_unwrap(s->swk, SR_KEYMGR_KEY_BYTES, &wk, (const uint8_t *)uid, strlen(uid), material, cap, len);
    if (rc != SR_OK)
        return sr_err_set(rc, "key material of %s does not authenticate under the store wrapping key", uid);
    return SR_OK;
}

sr_err_t kms_object_wipe_material(kms_store_t *s, const char *uid)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "UPDATE objects SET material = NULL WHERE uid = ?", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_TRANSIENT);
    return run(s, st, "destroy material");
}

/* ---- attributes ------------------------------------------------------------------------ */

void kms_attrs_free(kms_attr_t *attrs, size_t n)
{
    for (size_t i = 0; attrs && i < n; i++) free(attrs[i].bytes);
    free(attrs);
}

static sr_err_t read_attr(sqlite3_stmt *st, kms_attr_t *a)
{
    memset(a, 0, sizeof *a);
    column_text(st, 0, a->name, sizeof a->name);
    a->index = (int32_t)sqlite3_column_int64(st, 1);
    a->type = (uint8_t)sqlite3_column_int64(st, 2);
    a->num = sqlite3_column_int64(st, 3);
    if (sqlite3_column_type(st, 4) != SQLITE_NULL) {
        a->len = (uint32_t)sqlite3_column_bytes(st, 4);
        a->bytes = malloc(a->len + 1);
        if (!a->bytes) return SR_ERR_NOMEM;
        memcpy(a->bytes, sqlite3_column_blob(st, 4), a->len);
        a->bytes[a->len] = '\0';
    }
    return SR_OK;
}

sr_err_t kms_attr_list(kms_store_t *s, const char *uid, kms_attr_t **out, size_t *n)
{
    sqlite3_stmt *st;
    *out = NULL, *n = 0;
    sr_err_t rc = prepare(s, "SELECT name, idx, type, num, bytes FROM attrs WHERE uid = ? ORDER BY rowid", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
    size_t cap = 0;
    int r;
    while (rc == SR_OK && (r = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            kms_attr_t *grown = realloc(*out, (cap = cap ? 2 * cap : 8) * sizeof **out);
            if (!grown) {
                rc = SR_ERR_NOMEM;
                break;
            }
            *out = grown;
        }
        rc = read_attr(st, &(*out)[*n]);
        (*n)++;
    }
    if (rc == SR_OK && r != SQLITE_DONE) rc = db_error(s, r, "read attributes");
    done(s, st);
    if (rc != SR_OK) kms_attrs_free(*out, *n), *out = NULL, *n = 0;
    return rc;
}

static void bind_attr_value(sqlite3_stmt *st, int first, const kms_attr_t *a)
{
    sqlite3_bind_int64(st, first, a->type);
    sqlite3_bind_int64(st, first + 1, a->num);
    if (a->bytes) sqlite3_bind_blob(st, first + 2, a->bytes, (int)a->len, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, first + 2);
}

sr_err_t kms_attr_add(kms_store_t *s, const char *uid, const kms_attr_t *a, int32_t *index_out)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "INSERT INTO attrs(uid, name, idx, type, num, bytes) VALUES(?1, ?2,"
                             " CASE WHEN ?3 >= 0 THEN ?3 ELSE (SELECT COALESCE(MAX(idx) + 1, 0) FROM attrs"
                             " WHERE uid = ?1 AND name = ?2) END, ?4, ?5, ?6) RETURNING idx", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, a->index);
    bind_attr_value(st, 4, a);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        if (index_out) *index_out = (int32_t)sqlite3_column_int64(st, 0);
        r = sqlite3_step(st);
    }
    rc = r == SQLITE_DONE ? SR_OK : r == SQLITE_CONSTRAINT ? SR_ERR_EXISTS : db_error(s, r, "add attribute");
    done(s, st);
    return rc;
}

sr_err_t kms_attr_replace(kms_store_t *s, const char *uid, const kms_attr_t *a)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "UPDATE attrs SET type = ?4, num = ?5, bytes = ?6 WHERE uid = ?1 AND name = ?2 AND idx = ?3",
                          &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, a->index);
    bind_attr_value(st, 4, a);
    rc = run(s, st, "modify attribute");
    return rc == SR_OK && sqlite3_changes(s->db) == 0 ? SR_ERR_NOT_FOUND : rc;
}

sr_err_t kms_attr_delete(kms_store_t *s, const char *uid, const char *name, int32_t index)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "DELETE FROM attrs WHERE uid = ? AND name = ? AND idx = ?", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, index);
    rc = run(s, st, "delete attribute");
    return rc == SR_OK && sqlite3_changes(s->db) == 0 ? SR_ERR_NOT_FOUND : rc;
}

/* ---- locate ------------------------------------------------------------------------------ */

/* One optional condition per filter field; unset fields bind NULL and match all. */
static const char locate_sql[] =
    "SELECT uid FROM objects o WHERE"
    " (?1 IS NULL OR object_type = ?1) AND (?2 IS NULL OR algorithm = ?2) AND (?3 IS NULL OR state = ?3)"
    " AND (?4 IS NULL OR length = ?4)"
    " AND (?5 IS NULL OR EXISTS(SELECT 1 FROM attrs a WHERE a.uid = o.uid AND a.name = 'Name' AND a.bytes = ?5))"
    " AND (?6 IS NULL OR EXISTS(SELECT 1 FROM attrs a WHERE a.uid = o.uid AND a.name = 'Object Group'"
    "      AND a.bytes = ?6))"
    " AND (?7 IS NULL OR EXISTS(SELECT 1 FROM attrs a WHERE a.uid = o.uid AND a.name = ?7"
    "      AND (?8 IS NULL OR a.bytes = ?8)))"
    " AND (?9 IS NULL OR activation_date BETWEEN ?9 AND ?10)"
    " AND (?11 IS NULL OR initial_date BETWEEN ?11 AND ?12)"
    " AND (?13 IS NULL OR owner = ?13 OR EXISTS(SELECT 1 FROM grants g WHERE g.uid = o.uid AND g.principal = ?13))"
    " ORDER BY seq DESC LIMIT ?14 OFFSET ?15";

static void bind_opt_int(sqlite3_stmt *st, int i, int64_t v)
{
    if (v) sqlite3_bind_int64(st, i, v);
    else sqlite3_bind_null(st, i);
}

static void bind_blob_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v) sqlite3_bind_blob(st, i, v, (int)strlen(v), SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

sr_err_t kms_locate(kms_store_t *s, const kms_filter_t *f, char (**uids)[KMS_UID_MAX], size_t *n)
{
    sqlite3_stmt *st;
    *uids = NULL, *n = 0;
    sr_err_t rc = prepare(s, locate_sql, &st);
    if (rc != SR_OK) return rc;
    bind_opt_int(st, 1, f->object_type);
    bind_opt_int(st, 2, f->algorithm);
    bind_opt_int(st, 3, f->state);
    bind_opt_int(st, 4, f->length);
    bind_blob_text(st, 5, f->name);
    bind_blob_text(st, 6, f->group);
    if (f->custom_name) sqlite3_bind_text(st, 7, f->custom_name, -1, SQLITE_TRANSIENT);
    bind_blob_text(st, 8, f->custom_text);
    if (f->activation_from || f->activation_to)
        sqlite3_bind_int64(st, 9, f->activation_from), sqlite3_bind_int64(st, 10, f->activation_to);
    if (f->initial_from || f->initial_to)
        sqlite3_bind_int64(st, 11, f->initial_from), sqlite3_bind_int64(st, 12, f->initial_to);
    if (f->visible_to) sqlite3_bind_text(st, 13, f->visible_to, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 14, f->max_items > 0 ? f->max_items : -1);
    sqlite3_bind_int64(st, 15, f->offset > 0 ? f->offset : 0);
    size_t cap = 0;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            char(*grown)[KMS_UID_MAX] = realloc(*uids, (cap = cap ? 2 * cap : 16) * sizeof **uids);
            if (!grown) {
                rc = SR_ERR_NOMEM;
                break;
            }
            *uids = grown;
        }
        column_text(st, 0, (*uids)[(*n)++], KMS_UID_MAX);
    }
    if (rc == SR_OK && r != SQLITE_DONE) rc = db_error(s, r, "locate");
    done(s, st);
    if (rc != SR_OK) free(*uids), *uids = NULL, *n = 0;
    return rc;
}

/* ---- grants, principals, certificates -------------------------------------------------- */

static sr_err_t run_texts(kms_store_t *s, const char *sql, const char *a, const char *b, const char *what)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, sql, &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, a, -1, SQLITE_TRANSIENT);
    if (b) sqlite3_bind_text(st, 2, b, -1, SQLITE_TRANSIENT);
    return run(s, st, what);
}

static int exists_texts(kms_store_t *s, const char *sql, const char *a, const char *b)
{
    sqlite3_stmt *st;
    if (prepare(s, sql, &st) != SR_OK) return 0;
    sqlite3_bind_text(st, 1, a, -1, SQLITE_TRANSIENT);
    if (b) sqlite3_bind_text(st, 2, b, -1, SQLITE_TRANSIENT);
    int found = sqlite3_step(st) == SQLITE_ROW;
    done(s, st);
    return found;
}

sr_err_t kms_grant(kms_store_t *s, const char *uid, const char *principal)
{
    return run_texts(s, "INSERT OR IGNORE INTO grants(uid, principal) VALUES(?, ?)", uid, principal, "grant");
}

/* A grant to the principal, or to its group ("@group", for nodes enrolled with a group's token). */
int kms_granted(kms_store_t *s, const char *uid, const char *principal)
{
    return exists_texts(s, "SELECT 1 FROM grants WHERE uid = ?1 AND (principal = ?2 OR principal ="
                           " (SELECT '@' || grp FROM principals WHERE name = ?2 AND grp IS NOT NULL))", uid, principal);
}

sr_err_t kms_principal_set(kms_store_t *s, const char *name, kms_role_t role)
{
    return run_texts(s, "INSERT INTO principals(name, role) VALUES(?1, ?2) ON CONFLICT(name) DO UPDATE SET role = ?2",
                     name, kms_role_name(role), "set principal");
}

kms_role_t kms_principal_role(kms_store_t *s, const char *name)
{
    sqlite3_stmt *st;
    kms_role_t role = KMS_ROLE_NONE;
    if (prepare(s, "SELECT role FROM principals WHERE name = ?", &st) != SR_OK) return role;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW && kms_role_parse((const char *)sqlite3_column_text(st, 0), &role) != SR_OK)
        role = KMS_ROLE_NONE;
    done(s, st);
    return role;
}

sr_err_t kms_cert_record(kms_store_t *s, const char *fingerprint, const char *name, const char *serial,
                         int64_t not_after)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "INSERT INTO certs(fingerprint, name, serial, not_after) VALUES(?, ?, ?, ?)", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, fingerprint, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, serial, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, not_after);
    return run(s, st, "record certificate");
}

sr_err_t kms_cert_revoke(kms_store_t *s, const char *name, int *n_out)
{
    sr_err_t rc = run_texts(s, "UPDATE certs SET revoked = 1 WHERE name = ? AND revoked = 0", name, NULL,
                            "revoke certificate");
    if (rc == SR_OK) *n_out = sqlite3_changes(s->db);
    return rc;
}

int kms_cert_revoked(kms_store_t *s, const char *fingerprint)
{
    return exists_texts(s, "SELECT 1 FROM certs WHERE fingerprint = ? AND revoked = 1", fingerprint, NULL);
}

sr_err_t kms_cert_each(kms_store_t *s, void (*fn)(void *, const char *, const char *, const char *, int64_t, int),
                       void *ctx)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "SELECT c.name, COALESCE(p.role, 'none'), c.fingerprint, c.not_after, c.revoked"
                             " FROM certs c LEFT JOIN principals p ON p.name = c.name ORDER BY c.rowid", &st);
    if (rc != SR_OK) return rc;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        fn(ctx, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
           (const char *)sqlite3_column_text(st, 2), sqlite3_column_int64(st, 3), sqlite3_column_int(st, 4));
    rc = r == SQLITE_DONE ? SR_OK : db_error(s, r, "list certificates");
    done(s, st);
    return rc;
}

/* ---- join tokens and nodes ------------------------------------------------------------------- */

static void token_hash(const char *token, char hex[65])
{
    uint8_t md[32];
    unsigned len = 0;
    EVP_Digest(token, strlen(token), md, &len, EVP_sha256(), NULL);
    sr_hex_encode(md, sizeof md, hex);
}

sr_err_t kms_token_create(kms_store_t *s, const char *group, int uses, int64_t ttl_s, char token[65])
{
    uint8_t raw[32];
    char hash[65];
    sr_err_t rc = sr_random_bytes(raw, sizeof raw);
    if (rc != SR_OK) return rc;
    sr_hex_encode(raw, sizeof raw, token);
    sr_secure_wipe(raw, sizeof raw);
    token_hash(token, hash);
    sqlite3_stmt *st;
    if ((rc = prepare(s, "INSERT INTO tokens(hash, grp, uses, expires, created) VALUES(?, ?, ?, ?, ?)", &st)) != SR_OK)
        return rc;
    int64_t now = sr_time_now_us() / 1000000;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_TRANSIENT);
    bind_text(st, 2, group);
    sqlite3_bind_int64(st, 3, uses);
    sqlite3_bind_int64(st, 4, now + ttl_s);
    sqlite3_bind_int64(st, 5, now);
    return run(s, st, "create token");
}

sr_err_t kms_token_take(kms_store_t *s, const char *token, char group[KMS_TEXT_MAX])
{
    char hash[65];
    token_hash(token, hash);
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "SELECT COALESCE(grp, ''), uses, expires FROM tokens WHERE hash = ?", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_TRANSIENT);
    int r = sqlite3_step(st);
    int64_t uses = 0, expires = 0;
    if (r == SQLITE_ROW) {
        column_text(st, 0, group, KMS_TEXT_MAX);
        uses = sqlite3_column_int64(st, 1), expires = sqlite3_column_int64(st, 2);
    }
    done(s, st);
    if (r != SQLITE_ROW) return sr_err_set(SR_ERR_AUTH, "unknown join token");
    if (expires <= sr_time_now_us() / 1000000) return sr_err_set(SR_ERR_AUTH, "the join token has expired");
    if (uses <= 0) return sr_err_set(SR_ERR_AUTH, "the join token was already used");
    return run_texts(s, "UPDATE tokens SET uses = uses - 1 WHERE hash = ?", hash, NULL, "use token");
}

sr_err_t kms_principal_set_group(kms_store_t *s, const char *name, const char *group)
{
    return run_texts(s, "UPDATE principals SET grp = NULLIF(?2, '') WHERE name = ?1", name, group, "set group");
}

#define NODE_COLUMNS "uuid, name, grp, state, lease_expires, joined, left_at, nk, reason"

static void read_node(sqlite3_stmt *st, kms_node_t *n)
{
    memset(n, 0, sizeof *n);
    column_text(st, 0, n->uuid, sizeof n->uuid);
    column_text(st, 1, n->name, sizeof n->name);
    column_text(st, 2, n->group, sizeof n->group);
    column_text(st, 3, n->state, sizeof n->state);
    n->lease_expires = sqlite3_column_int64(st, 4);
    n->joined = sqlite3_column_int64(st, 5);
    n->left = sqlite3_column_int64(st, 6);
    column_text(st, 7, n->nk, sizeof n->nk);
    column_text(st, 8, n->reason, sizeof n->reason);
}

sr_err_t kms_node_save(kms_store_t *s, const kms_node_t *n)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "INSERT OR REPLACE INTO nodes(" NODE_COLUMNS ") VALUES(?,?,?,?,?,?,?,?,?)", &st);
    if (rc != SR_OK) return rc;
    bind_text(st, 1, n->uuid), bind_text(st, 2, n->name), bind_text(st, 3, n->group), bind_text(st, 4, n->state);
    sqlite3_bind_int64(st, 5, n->lease_expires), sqlite3_bind_int64(st, 6, n->joined);
    sqlite3_bind_int64(st, 7, n->left);
    bind_text(st, 8, n->nk), bind_text(st, 9, n->reason);
    return run(s, st, "save node");
}

sr_err_t kms_node_extend_leases(kms_store_t *s, int64_t until)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "UPDATE nodes SET lease_expires = ?1 WHERE state = 'active' AND lease_expires < ?1", &st);
    if (rc != SR_OK) return rc;
    sqlite3_bind_int64(st, 1, until);
    return run(s, st, "extend leases");
}

static void read_node_row(sqlite3_stmt *st, void *n) { read_node(st, n); }

sr_err_t kms_node_load(kms_store_t *s, const char *uuid, kms_node_t *n)
{
    return load_row(s, "SELECT " NODE_COLUMNS " FROM nodes WHERE uuid = ?", uuid, read_node_row, n, "read node");
}

sr_err_t kms_node_each(kms_store_t *s, const char *where_state, int64_t lease_before,
                       void (*fn)(void *, const kms_node_t *), void *ctx)
{
    sqlite3_stmt *st;
    sr_err_t rc = prepare(s, "SELECT " NODE_COLUMNS " FROM nodes WHERE (?1 IS NULL OR state = ?1)"
                             " AND (?2 = 0 OR lease_expires < ?2) ORDER BY joined", &st);
    if (rc != SR_OK) return rc;
    bind_text(st, 1, where_state);
    sqlite3_bind_int64(st, 2, lease_before);
    int r;
    kms_node_t n;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) read_node(st, &n), fn(ctx, &n);
    rc = r == SQLITE_DONE ? SR_OK : db_error(s, r, "list nodes");
    done(s, st);
    return rc;
}

/* ---- names ----------------------------------------------------------------------------------- */

static const char *const role_names[] = {"none", "admin", "application", "node", "auditor"};

const char *kms_role_name(kms_role_t role)
{
    return (size_t)role < sizeof role_names / sizeof role_names[0] ? role_names[role] : "none";
}

sr_err_t kms_role_parse(const char *text, kms_role_t *out)
{
    for (size_t i = 1; text && i < sizeof role_names / sizeof role_names[0]; i++)
        if (!strcmp(text, role_names[i])) return *out = (kms_role_t)i, SR_OK;
    return sr_err_set(SR_ERR_INVALID_ARG, "unknown role '%s' (admin, application, node, auditor)", text ? text : "");
}

const char *kms_state_name(uint32_t state)
{
    static const char *const names[] = {"?", "Pre-Active", "Active", "Deactivated", "Compromised", "Destroyed",
                                        "Destroyed Compromised"};
    return state < sizeof names / sizeof names[0] ? names[state] : "?";
}
