/*
 * store.c — kmsd's key store: one SQLite database (WAL, synchronous=FULL, so
 * an acknowledged write survives SIGKILL and power loss; every change is one
 * transaction, so nothing is ever half-made).
 *
 *   meta(k, v)               store id, the wrapped store wrapping key (SWK), the access epoch
 *   objects(seq, uid, ...)   one row per managed object; material wrapped by SWK
 *   attrs(uid, name, idx, …) Name, Object Group and custom attributes (multi-valued)
 *   grants(uid, principal)   who else may use a key
 *   principals(name, role)   certificate CN -> role
 *   certs(fingerprint, …)    certificates kmsctl issued, and their revocation
 */
#include "db.h"
#include "kms.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kms_store {
    kms_db_t *db;
    pthread_mutex_t lock;
    sr_uuid_t id;
    uint8_t *swk; /* SR_KEYMGR_KEY_BYTES, locked memory */
};

/* One schema for both databases; INT, BLOB, the objects' sequence and an
 * explicit insertion order (SQLite's implicit rowid) differ. */
#define STORE_SCHEMA(INT, BLOB, SEQ, ROWID)                                                                    \
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v " BLOB " NOT NULL);"                                  \
    "CREATE TABLE IF NOT EXISTS objects(seq " SEQ ", uid TEXT UNIQUE NOT NULL,"                                  \
    " owner TEXT NOT NULL, object_type " INT ", algorithm " INT ", length " INT ", usage_mask " INT ","         \
    " state " INT ", material " BLOB ", initial_date " INT ", activation_date " INT ","                         \
    " deactivation_date " INT ", destroy_date " INT ", compromise_date " INT ","                                \
    " compromise_occurrence_date " INT ", last_change_date " INT ", revocation_code " INT ","                   \
    " revocation_message TEXT, replaces TEXT, replaced_by TEXT);"                                                \
    "CREATE TABLE IF NOT EXISTS attrs(" ROWID "uid TEXT NOT NULL, name TEXT NOT NULL, idx " INT " NOT NULL,"     \
    " type " INT " NOT NULL, num " INT ", bytes " BLOB ", PRIMARY KEY(uid, name, idx));"                        \
    "CREATE TABLE IF NOT EXISTS grants(uid TEXT NOT NULL, principal TEXT NOT NULL, PRIMARY KEY(uid, principal));" \
    "CREATE TABLE IF NOT EXISTS principals(name TEXT PRIMARY KEY, role TEXT NOT NULL, grp TEXT);"               \
    "CREATE TABLE IF NOT EXISTS tokens(hash TEXT PRIMARY KEY, grp TEXT, uses " INT " NOT NULL,"                  \
    " expires " INT " NOT NULL, created " INT " NOT NULL);"                                                     \
    "CREATE TABLE IF NOT EXISTS nodes(uuid TEXT PRIMARY KEY, name TEXT, grp TEXT, state TEXT NOT NULL,"         \
    " lease_expires_ms " INT ", joined " INT ", left_at " INT ", nk TEXT, reason TEXT);"                          \
    "CREATE TABLE IF NOT EXISTS certs(" ROWID "fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL, serial TEXT,"  \
    " not_after " INT ", revoked " INT " NOT NULL DEFAULT 0);"                                                  \
    "CREATE TABLE IF NOT EXISTS servers(id TEXT PRIMARY KEY, seen " INT " NOT NULL);"                          \
    "CREATE TABLE IF NOT EXISTS policies(version " INT " PRIMARY KEY, digest TEXT NOT NULL, body " BLOB " NOT NULL," \
    " pushed " INT " NOT NULL, pushed_by TEXT);"

static const char sqlite_schema[] = STORE_SCHEMA("INT", "BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT", "");
static const char postgres_schema[] = STORE_SCHEMA("BIGINT", "BYTEA", "BIGSERIAL PRIMARY KEY", "rowid BIGSERIAL, ");

static void column_text(kms_stmt_t *st, int i, char *out, size_t cap)
{
    snprintf(out, cap, "%s", kms_column_text(st, i));
}

/* Steps a statement that returns no rows; readies it for its next use. */
static sr_err_t run(kms_stmt_t *st, const char *what)
{
    int row = 0;
    sr_err_t rc = kms_step(st, what, &row);
    kms_done(st);
    return rc;
}

void kms_store_lock(kms_store_t *s) { pthread_mutex_lock(&s->lock); }
void kms_store_unlock(kms_store_t *s) { pthread_mutex_unlock(&s->lock); }

sr_err_t kms_store_begin(kms_store_t *s) { return kms_db_begin(s->db, 1); }
sr_err_t kms_store_begin_read(kms_store_t *s) { return kms_db_begin(s->db, 0); }
sr_err_t kms_store_commit(kms_store_t *s) { return kms_db_commit(s->db); }
void kms_store_rollback(kms_store_t *s) { kms_db_rollback(s->db); }
int kms_store_shared(const kms_store_t *s) { return kms_db_postgres(s->db); }

/* ---- the store wrapping key ------------------------------------------------------- */

static sr_err_t meta_get(kms_store_t *s, const char *k, uint8_t *out, size_t cap, size_t *len)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "SELECT v FROM meta WHERE k = ?1", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, k);
    int row = 0;
    rc = kms_step(st, "read meta", &row);
    if (rc == SR_OK && !row) rc = SR_ERR_NOT_FOUND;
    if (rc == SR_OK) {
        size_t n = 0;
        const uint8_t *v = kms_column_blob(st, 0, &n);
        if (n > cap) rc = sr_err_set(SR_ERR_CORRUPT, "key store: meta %s is %zu bytes", k, n);
        else memcpy(out, v, n), *len = n;
    }
    kms_done(st);
    return rc;
}

static sr_err_t meta_put(kms_store_t *s, const char *k, const uint8_t *v, size_t len)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "INSERT INTO meta(k, v) VALUES(?1, ?2)", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, k);
    kms_bind_blob(st, 2, v, len);
    return run(st, "write meta");
}

static sr_err_t swk_create(kms_store_t *s, sr_keyprov_t *kp)
{
    sr_wrapped_key_t wk;
    uint8_t enc[SR_WRAPPED_KEY_ENCODED_MAX];
    size_t enc_len = 0;
    sr_uuid_generate(&s->id);
    sr_err_t rc = sr_keyprov_dek_create(kp, &s->id, 1, s->swk, &wk);
    if (rc == SR_OK) rc = sr_wrapped_key_encode(&wk, enc, sizeof enc, &enc_len);
    if (rc == SR_OK) rc = meta_put(s, "store_id", s->id.bytes, SR_UUID_BYTES);
    if (rc == SR_OK) rc = meta_put(s, "swk", enc, enc_len);
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

/* Stores made when leases were kept to the second (nodes.lease_expires):
 * the column renamed and its values made milliseconds, in the transaction
 * that opens the store. A store without that column has nothing to do. */
static sr_err_t migrate_leases_to_ms(kms_store_t *s, int pg)
{
    if (pg)
        return kms_db_exec(s->db,
                           "DO $$ BEGIN"
                           " ALTER TABLE nodes RENAME COLUMN lease_expires TO lease_expires_ms;"
                           " UPDATE nodes SET lease_expires_ms = lease_expires_ms * 1000;"
                           " RAISE NOTICE 'key store: node leases now kept in milliseconds';"
                           " EXCEPTION WHEN undefined_column THEN NULL; END $$;",
                           "migrate leases");
    /* an error here means the column is not there: SQLite undoes the statement alone */
    if (kms_db_exec(s->db, "ALTER TABLE nodes RENAME COLUMN lease_expires TO lease_expires_ms", "migrate") != SR_OK)
        return SR_OK;
    sr_log_notice("key store: node leases now kept in milliseconds");
    return kms_db_exec(s->db, "UPDATE nodes SET lease_expires_ms = lease_expires_ms * 1000", "migrate leases");
}

/* The schema and the store wrapping key in one write transaction: kmsd
 * instances starting together over one PostgreSQL make one SWK, not two. */
static sr_err_t store_init(kms_store_t *s, sr_keyprov_t *provider)
{
    int pg = kms_db_postgres(s->db);
    sr_err_t rc = kms_db_begin(s->db, 1);
    if (rc == SR_OK) rc = kms_db_exec(s->db, pg ? postgres_schema : sqlite_schema, "create the schema");
    /* SQLite stores made before node groups: add the column (an error here means it is there) */
    if (rc == SR_OK && !pg && kms_db_exec(s->db, "ALTER TABLE principals ADD COLUMN grp TEXT", "migrate") == SR_OK)
        sr_log_notice("key store: principals now have groups");
    if (rc == SR_OK) rc = migrate_leases_to_ms(s, pg);
    if (rc == SR_OK) rc = swk_load(s, provider);
    if (rc == SR_OK) rc = kms_db_commit(s->db);
    if (rc != SR_OK) kms_db_rollback(s->db);
    return rc;
}

sr_err_t kms_store_open(const char *location, sr_keyprov_t *provider, kms_store_t **out)
{
    kms_store_t *s = calloc(1, sizeof *s);
    if (!s) return SR_ERR_NOMEM;
    pthread_mutex_init(&s->lock, NULL);
    s->swk = sr_secure_alloc(SR_KEYMGR_KEY_BYTES);
    sr_err_t rc = s->swk ? kms_db_open(location, &s->db) : SR_ERR_NOMEM;
    if (rc == SR_OK) rc = store_init(s, provider);
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
    kms_db_close(s->db);
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

static void bind_object(kms_stmt_t *st, const kms_object_t *o)
{
    kms_bind_text(st, 1, o->uid);
    kms_bind_text(st, 2, o->owner);
    const int64_t numbers[] = {o->object_type, o->algorithm, o->length, o->usage_mask, o->state,
                               o->initial_date, o->activation_date, o->deactivation_date, o->destroy_date,
                               o->compromise_date, o->compromise_occurrence_date, o->last_change_date,
                               o->revocation_code};
    for (int i = 0; i < 13; i++) kms_bind_int(st, 3 + i, numbers[i]);
    kms_bind_text(st, 16, o->revocation_message);
    kms_bind_text(st, 17, o->replaces);
    kms_bind_text(st, 18, o->replaced_by);
}

static void read_object(kms_stmt_t *st, kms_object_t *o)
{
    memset(o, 0, sizeof *o);
    column_text(st, 0, o->uid, sizeof o->uid);
    column_text(st, 1, o->owner, sizeof o->owner);
    o->object_type = (uint32_t)kms_column_int(st, 2);
    o->algorithm = (uint32_t)kms_column_int(st, 3);
    o->length = (int32_t)kms_column_int(st, 4);
    o->usage_mask = (uint32_t)kms_column_int(st, 5);
    o->state = (uint32_t)kms_column_int(st, 6);
    int64_t *dates[] = {&o->initial_date, &o->activation_date, &o->deactivation_date, &o->destroy_date,
                        &o->compromise_date, &o->compromise_occurrence_date, &o->last_change_date};
    for (int i = 0; i < 7; i++) *dates[i] = kms_column_int(st, 7 + i);
    o->revocation_code = (uint32_t)kms_column_int(st, 14);
    column_text(st, 15, o->revocation_message, sizeof o->revocation_message);
    column_text(st, 16, o->replaces, sizeof o->replaces);
    column_text(st, 17, o->replaced_by, sizeof o->replaced_by);
}

sr_err_t kms_object_insert(kms_store_t *s, const kms_object_t *o, const uint8_t *material, size_t len)
{
    uint8_t blob[SR_WRAPPED_KEY_ENCODED_MAX];
    size_t blob_len = 0;
    sr_err_t rc = wrap_material(s, o->uid, material, len, blob, &blob_len);
    kms_stmt_t *st;
    if (rc == SR_OK)
        rc = kms_db_prepare(s->db, "INSERT INTO objects(" OBJECT_COLUMNS ", material)"
                                   " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)", &st);
    if (rc != SR_OK) return rc;
    bind_object(st, o);
    kms_bind_blob(st, 19, blob, blob_len);
    return run(st, "insert object");
}

/* The one row `sql` selects for `key`, handed to read(); SR_ERR_NOT_FOUND if none. */
static sr_err_t load_row(kms_store_t *s, const char *sql, const char *key, void (*read)(kms_stmt_t *, void *),
                         void *out, const char *what)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, sql, &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, key);
    int row = 0;
    rc = kms_step(st, what, &row);
    if (rc == SR_OK && row) read(st, out);
    else if (rc == SR_OK) rc = SR_ERR_NOT_FOUND;
    kms_done(st);
    return rc;
}

static void read_object_row(kms_stmt_t *st, void *o) { read_object(st, o); }

sr_err_t kms_object_load(kms_store_t *s, const char *uid, kms_object_t *o)
{
    return load_row(s, "SELECT " OBJECT_COLUMNS " FROM objects WHERE uid = ?1", uid, read_object_row, o,
                    "read object");
}

sr_err_t kms_object_update(kms_store_t *s, const kms_object_t *o)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "UPDATE objects SET owner=?2, object_type=?3, algorithm=?4, length=?5,"
                                        " usage_mask=?6, state=?7, initial_date=?8, activation_date=?9,"
                                        " deactivation_date=?10, destroy_date=?11, compromise_date=?12,"
                                        " compromise_occurrence_date=?13, last_change_date=?14, revocation_code=?15,"
                                        " revocation_message=?16, replaces=?17, replaced_by=?18 WHERE uid=?1", &st);
    if (rc != SR_OK) return rc;
    bind_object(st, o);
    return run(st, "update object");
}

sr_err_t kms_object_material(kms_store_t *s, const char *uid, uint8_t *material, size_t cap, size_t *len)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "SELECT material FROM objects WHERE uid = ?1", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, uid);
    int row = 0;
    rc = kms_step(st, "read material", &row);
    sr_wrapped_key_t wk;
    size_t n = 0;
    if (rc == SR_OK && !row) rc = SR_ERR_NOT_FOUND;
    else if (rc == SR_OK && kms_column_null(st, 0)) rc = sr_err_set(SR_ERR_NOT_FOUND, "%s has no key material", uid);
    else if (rc == SR_OK) {
        const uint8_t *blob = kms_column_blob(st, 0, &n);
        rc = sr_wrapped_key_decode(blob, n, &wk);
    }
    kms_done(st);
    if (rc != SR_OK) return rc;
    rc = sr_keymgr_unwrap(s->swk, SR_KEYMGR_KEY_BYTES, &wk, (const uint8_t *)uid, strlen(uid), material, cap, len);
    if (rc != SR_OK)
        return sr_err_set(rc, "key material of %s does not authenticate under the store wrapping key", uid);
    return SR_OK;
}

sr_err_t kms_object_wipe_material(kms_store_t *s, const char *uid)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "UPDATE objects SET material = NULL WHERE uid = ?1", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, uid);
    return run(st, "destroy material");
}

/* ---- attributes ------------------------------------------------------------------------ */

void kms_attrs_free(kms_attr_t *attrs, size_t n)
{
    for (size_t i = 0; attrs && i < n; i++) free(attrs[i].bytes);
    free(attrs);
}

static sr_err_t read_attr(kms_stmt_t *st, kms_attr_t *a)
{
    memset(a, 0, sizeof *a);
    column_text(st, 0, a->name, sizeof a->name);
    a->index = (int32_t)kms_column_int(st, 1);
    a->type = (uint8_t)kms_column_int(st, 2);
    a->num = kms_column_int(st, 3);
    if (!kms_column_null(st, 4)) {
        size_t n = 0;
        const uint8_t *v = kms_column_blob(st, 4, &n);
        a->len = (uint32_t)n;
        a->bytes = malloc(n + 1);
        if (!a->bytes) return SR_ERR_NOMEM;
        if (n) memcpy(a->bytes, v, n);
        a->bytes[n] = '\0';
    }
    return SR_OK;
}

sr_err_t kms_attr_list(kms_store_t *s, const char *uid, kms_attr_t **out, size_t *n)
{
    kms_stmt_t *st;
    *out = NULL, *n = 0;
    sr_err_t rc = kms_db_prepare(s->db, "SELECT name, idx, type, num, bytes FROM attrs WHERE uid = ?1 ORDER BY rowid",
                                 &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, uid);
    size_t cap = 0;
    int row = 0;
    while ((rc = kms_step(st, "read attributes", &row)) == SR_OK && row) {
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
        if (rc != SR_OK) break;
    }
    kms_done(st);
    if (rc != SR_OK) kms_attrs_free(*out, *n), *out = NULL, *n = 0;
    return rc;
}

static void bind_attr_value(kms_stmt_t *st, int first, const kms_attr_t *a)
{
    kms_bind_int(st, first, a->type);
    kms_bind_int(st, first + 1, a->num);
    kms_bind_blob(st, first + 2, a->bytes, a->len);
}

sr_err_t kms_attr_add(kms_store_t *s, const char *uid, const kms_attr_t *a, int32_t *index_out)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "INSERT INTO attrs(uid, name, idx, type, num, bytes) VALUES(?1, ?2,"
                                        " CASE WHEN ?3 >= 0 THEN ?3 ELSE (SELECT COALESCE(MAX(idx) + 1, 0) FROM attrs"
                                        " WHERE uid = ?1 AND name = ?2) END, ?4, ?5, ?6) RETURNING idx", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, uid);
    kms_bind_text(st, 2, a->name);
    kms_bind_int(st, 3, a->index);
    bind_attr_value(st, 4, a);
    int row = 0;
    rc = kms_step(st, "add attribute", &row);
    if (rc == SR_OK && row) {
        if (index_out) *index_out = (int32_t)kms_column_int(st, 0);
        rc = kms_step(st, "add attribute", &row);
    }
    kms_done(st);
    return rc;
}

sr_err_t kms_attr_replace(kms_store_t *s, const char *uid, const kms_attr_t *a)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "UPDATE attrs SET type = ?4, num = ?5, bytes = ?6"
                                        " WHERE uid = ?1 AND name = ?2 AND idx = ?3", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, uid);
    kms_bind_text(st, 2, a->name);
    kms_bind_int(st, 3, a->index);
    bind_attr_value(st, 4, a);
    rc = run(st, "modify attribute");
    return rc == SR_OK && kms_db_changes(s->db) == 0 ? SR_ERR_NOT_FOUND : rc;
}

sr_err_t kms_attr_delete(kms_store_t *s, const char *uid, const char *name, int32_t index)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "DELETE FROM attrs WHERE uid = ?1 AND name = ?2 AND idx = ?3", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, uid);
    kms_bind_text(st, 2, name);
    kms_bind_int(st, 3, index);
    rc = run(st, "delete attribute");
    return rc == SR_OK && kms_db_changes(s->db) == 0 ? SR_ERR_NOT_FOUND : rc;
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

static void bind_opt_int(kms_stmt_t *st, int i, int64_t v)
{
    if (v) kms_bind_int(st, i, v);
    else kms_bind_null(st, i, KMS_INT);
}

static void bind_blob_text(kms_stmt_t *st, int i, const char *v)
{
    kms_bind_blob(st, i, v, v ? strlen(v) : 0);
}

/* A date range, or NULLs when neither end is set. */
static void bind_range(kms_stmt_t *st, int i, int64_t from, int64_t to)
{
    if (from || to) kms_bind_int(st, i, from), kms_bind_int(st, i + 1, to);
    else kms_bind_null(st, i, KMS_INT), kms_bind_null(st, i + 1, KMS_INT);
}

/* The first column of every row of st: UIDs into *uids (the caller frees them). */
static sr_err_t collect_uids(kms_stmt_t *st, const char *what, char (**uids)[KMS_UID_MAX], size_t *n)
{
    size_t cap = 0;
    int row = 0;
    sr_err_t rc;
    while ((rc = kms_step(st, what, &row)) == SR_OK && row) {
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
    kms_done(st);
    if (rc != SR_OK) free(*uids), *uids = NULL, *n = 0;
    return rc;
}

sr_err_t kms_locate(kms_store_t *s, const kms_filter_t *f, char (**uids)[KMS_UID_MAX], size_t *n)
{
    kms_stmt_t *st;
    *uids = NULL, *n = 0;
    sr_err_t rc = kms_db_prepare(s->db, locate_sql, &st);
    if (rc != SR_OK) return rc;
    bind_opt_int(st, 1, f->object_type);
    bind_opt_int(st, 2, f->algorithm);
    bind_opt_int(st, 3, f->state);
    bind_opt_int(st, 4, f->length);
    bind_blob_text(st, 5, f->name);
    bind_blob_text(st, 6, f->group);
    kms_bind_text(st, 7, f->custom_name);
    bind_blob_text(st, 8, f->custom_text);
    bind_range(st, 9, f->activation_from, f->activation_to);
    bind_range(st, 11, f->initial_from, f->initial_to);
    kms_bind_text(st, 13, f->visible_to);
    kms_bind_int(st, 14, f->max_items > 0 ? f->max_items : INT64_MAX);
    kms_bind_int(st, 15, f->offset > 0 ? f->offset : 0);
    return collect_uids(st, "locate", uids, n);
}

sr_err_t kms_objects_past_deactivation(kms_store_t *s, int64_t now, char (**uids)[KMS_UID_MAX], size_t *n)
{
    kms_stmt_t *st;
    *uids = NULL, *n = 0;
    sr_err_t rc = kms_db_prepare(s->db, "SELECT uid FROM objects WHERE state IN (?1, ?2) AND deactivation_date > 0"
                                        " AND deactivation_date <= ?3 ORDER BY seq", &st);
    if (rc != SR_OK) return rc;
    kms_bind_int(st, 1, KMS_STATE_PRE_ACTIVE);
    kms_bind_int(st, 2, KMS_STATE_ACTIVE);
    kms_bind_int(st, 3, now);
    return collect_uids(st, "find keys past their deactivation date", uids, n);
}

/* ---- grants, principals, certificates -------------------------------------------------- */

static sr_err_t run_texts(kms_store_t *s, const char *sql, const char *a, const char *b, const char *what)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, sql, &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, a);
    if (b) kms_bind_text(st, 2, b);
    return run(st, what);
}

static int exists_texts(kms_store_t *s, const char *sql, const char *a, const char *b)
{
    kms_stmt_t *st;
    if (kms_db_prepare(s->db, sql, &st) != SR_OK) return 0;
    kms_bind_text(st, 1, a);
    if (b) kms_bind_text(st, 2, b);
    int row = 0;
    if (kms_step(st, "read", &row) != SR_OK) row = 0;
    kms_done(st);
    return row;
}

sr_err_t kms_grant(kms_store_t *s, const char *uid, const char *principal)
{
    return run_texts(s, "INSERT INTO grants(uid, principal) VALUES(?1, ?2) ON CONFLICT DO NOTHING", uid, principal,
                     "grant");
}

sr_err_t kms_ungrant(kms_store_t *s, const char *uid, const char *principal)
{
    sr_err_t rc = run_texts(s, "DELETE FROM grants WHERE uid = ?1 AND principal = ?2", uid, principal, "ungrant");
    if (rc == SR_OK && kms_db_changes(s->db) == 0)
        rc = sr_err_set(SR_ERR_NOT_FOUND, "key %s is not granted to %s", uid, principal);
    return rc == SR_OK ? kms_access_epoch_bump(s) : rc; /* agents drop what they cached under the grant */
}

sr_err_t kms_grant_each(kms_store_t *s, const char *uid, void (*fn)(void *, const char *), void *ctx)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "SELECT principal FROM grants WHERE uid = ?1 ORDER BY principal", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, uid);
    int row = 0;
    while ((rc = kms_step(st, "list grants", &row)) == SR_OK && row) fn(ctx, kms_column_text(st, 0));
    kms_done(st);
    return rc;
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
    kms_stmt_t *st;
    kms_role_t role = KMS_ROLE_NONE;
    if (kms_db_prepare(s->db, "SELECT role FROM principals WHERE name = ?1", &st) != SR_OK) return role;
    kms_bind_text(st, 1, name);
    int row = 0;
    if (kms_step(st, "read principal", &row) == SR_OK && row && kms_role_parse(kms_column_text(st, 0), &role) != SR_OK)
        role = KMS_ROLE_NONE;
    kms_done(st);
    return role;
}

sr_err_t kms_cert_record(kms_store_t *s, const char *fingerprint, const char *name, const char *serial,
                         int64_t not_after)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "INSERT INTO certs(fingerprint, name, serial, not_after) VALUES(?1, ?2, ?3, ?4)",
                                 &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, fingerprint);
    kms_bind_text(st, 2, name);
    kms_bind_text(st, 3, serial);
    kms_bind_int(st, 4, not_after);
    return run(st, "record certificate");
}

sr_err_t kms_cert_revoke(kms_store_t *s, const char *name, int *n_out)
{
    sr_err_t rc = run_texts(s, "UPDATE certs SET revoked = 1 WHERE name = ?1 AND revoked = 0", name, NULL,
                            "revoke certificate");
    if (rc == SR_OK) *n_out = (int)kms_db_changes(s->db);
    return rc;
}

int kms_cert_revoked(kms_store_t *s, const char *fingerprint)
{
    return exists_texts(s, "SELECT 1 FROM certs WHERE fingerprint = ?1 AND revoked = 1", fingerprint, NULL);
}

sr_err_t kms_cert_each(kms_store_t *s, void (*fn)(void *, const char *, const char *, const char *, int64_t, int),
                       void *ctx)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "SELECT c.name, COALESCE(p.role, 'none'), c.fingerprint, c.not_after, c.revoked"
                                        " FROM certs c LEFT JOIN principals p ON p.name = c.name ORDER BY c.rowid", &st);
    if (rc != SR_OK) return rc;
    int row = 0;
    while ((rc = kms_step(st, "list certificates", &row)) == SR_OK && row)
        fn(ctx, kms_column_text(st, 0), kms_column_text(st, 1), kms_column_text(st, 2), kms_column_int(st, 3),
           (int)kms_column_int(st, 4));
    kms_done(st);
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
    kms_stmt_t *st;
    rc = kms_db_prepare(s->db, "INSERT INTO tokens(hash, grp, uses, expires, created) VALUES(?1, ?2, ?3, ?4, ?5)", &st);
    if (rc != SR_OK) return rc;
    int64_t now = sr_time_now_us() / 1000000;
    kms_bind_text(st, 1, hash);
    kms_bind_text(st, 2, group);
    kms_bind_int(st, 3, uses);
    kms_bind_int(st, 4, now + ttl_s);
    kms_bind_int(st, 5, now);
    return run(st, "create token");
}

sr_err_t kms_token_take(kms_store_t *s, const char *token, char group[KMS_TEXT_MAX])
{
    char hash[65];
    token_hash(token, hash);
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "SELECT COALESCE(grp, ''), uses, expires FROM tokens WHERE hash = ?1", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, hash);
    int row = 0;
    int64_t uses = 0, expires = 0;
    rc = kms_step(st, "read token", &row);
    if (rc == SR_OK && row) {
        column_text(st, 0, group, KMS_TEXT_MAX);
        uses = kms_column_int(st, 1), expires = kms_column_int(st, 2);
    }
    kms_done(st);
    if (rc != SR_OK) return rc;
    if (!row) return sr_err_set(SR_ERR_AUTH, "unknown join token");
    if (expires <= sr_time_now_us() / 1000000) return sr_err_set(SR_ERR_AUTH, "the join token has expired");
    if (uses <= 0) return sr_err_set(SR_ERR_AUTH, "the join token was already used");
    return run_texts(s, "UPDATE tokens SET uses = uses - 1 WHERE hash = ?1", hash, NULL, "use token");
}

sr_err_t kms_principal_set_group(kms_store_t *s, const char *name, const char *group)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "UPDATE principals SET grp = ?2 WHERE name = ?1", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, name);
    kms_bind_text(st, 2, group); /* "" binds NULL: no group */
    return run(st, "set group");
}

#define NODE_COLUMNS "uuid, name, grp, state, lease_expires_ms, joined, left_at, nk, reason"

static void read_node(kms_stmt_t *st, kms_node_t *n)
{
    memset(n, 0, sizeof *n);
    column_text(st, 0, n->uuid, sizeof n->uuid);
    column_text(st, 1, n->name, sizeof n->name);
    column_text(st, 2, n->group, sizeof n->group);
    column_text(st, 3, n->state, sizeof n->state);
    n->lease_expires_ms = kms_column_int(st, 4);
    n->joined = kms_column_int(st, 5);
    n->left = kms_column_int(st, 6);
    column_text(st, 7, n->nk, sizeof n->nk);
    column_text(st, 8, n->reason, sizeof n->reason);
}

sr_err_t kms_node_save(kms_store_t *s, const kms_node_t *n)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "INSERT INTO nodes(" NODE_COLUMNS ") VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)"
                                        " ON CONFLICT(uuid) DO UPDATE SET name=?2, grp=?3, state=?4,"
                                        " lease_expires_ms=?5, joined=?6, left_at=?7, nk=?8, reason=?9", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, n->uuid), kms_bind_text(st, 2, n->name), kms_bind_text(st, 3, n->group);
    kms_bind_text(st, 4, n->state);
    kms_bind_int(st, 5, n->lease_expires_ms), kms_bind_int(st, 6, n->joined), kms_bind_int(st, 7, n->left);
    kms_bind_text(st, 8, n->nk), kms_bind_text(st, 9, n->reason);
    return run(st, "save node");
}

sr_err_t kms_node_extend_leases(kms_store_t *s, int64_t until_ms)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "UPDATE nodes SET lease_expires_ms = ?1"
                                        " WHERE state = 'active' AND lease_expires_ms < ?1", &st);
    if (rc != SR_OK) return rc;
    kms_bind_int(st, 1, until_ms);
    return run(st, "extend leases");
}

static void read_node_row(kms_stmt_t *st, void *n) { read_node(st, n); }

sr_err_t kms_node_load(kms_store_t *s, const char *uuid, kms_node_t *n)
{
    return load_row(s, "SELECT " NODE_COLUMNS " FROM nodes WHERE uuid = ?1", uuid, read_node_row, n, "read node");
}

sr_err_t kms_node_each(kms_store_t *s, const char *where_state, int64_t lease_before_ms,
                       void (*fn)(void *, const kms_node_t *), void *ctx)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "SELECT " NODE_COLUMNS " FROM nodes WHERE (?1 IS NULL OR state = ?1)"
                                        " AND (?2 = 0 OR lease_expires_ms < ?2) ORDER BY joined", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, where_state);
    kms_bind_int(st, 2, lease_before_ms);
    int row = 0;
    kms_node_t n;
    while ((rc = kms_step(st, "list nodes", &row)) == SR_OK && row) read_node(st, &n), fn(ctx, &n);
    kms_done(st);
    return rc;
}

/* ---- access policies pushed to the agents ------------------------------------------------------ */

sr_err_t kms_policy_push(kms_store_t *s, const char *text, const char *digest, const char *by, int64_t *version)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "INSERT INTO policies(version, digest, body, pushed, pushed_by)"
                                        " VALUES((SELECT COALESCE(MAX(version), 0) + 1 FROM policies), ?1, ?2, ?3, ?4)"
                                        " RETURNING version", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, digest);
    kms_bind_blob(st, 2, text, strlen(text));
    kms_bind_int(st, 3, sr_time_now_us() / 1000000);
    kms_bind_text(st, 4, by);
    int row = 0;
    rc = kms_step(st, "push policy", &row);
    if (rc == SR_OK && row) *version = kms_column_int(st, 0), rc = kms_step(st, "push policy", &row);
    kms_done(st);
    return rc;
}

/* ---- the access epoch ---------------------------------------------------------------- */

int64_t kms_access_epoch(kms_store_t *s)
{
    uint8_t v[8];
    size_t len = 0;
    return meta_get(s, "access_epoch", v, sizeof v, &len) == SR_OK && len == 8 ? (int64_t)sr_get_be64(v) : 0;
}

sr_err_t kms_access_epoch_bump(kms_store_t *s)
{
    uint8_t v[8];
    sr_put_be64(v, (uint64_t)(kms_access_epoch(s) + 1));
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "INSERT INTO meta(k, v) VALUES('access_epoch', ?1)"
                                        " ON CONFLICT(k) DO UPDATE SET v = ?1", &st);
    if (rc != SR_OK) return rc;
    kms_bind_blob(st, 1, v, sizeof v);
    return run(st, "move the access epoch");
}

int64_t kms_policy_newest(kms_store_t *s)
{
    kms_stmt_t *st;
    if (kms_db_prepare(s->db, "SELECT COALESCE(MAX(version), 0) FROM policies", &st) != SR_OK) return 0;
    int row = 0;
    int64_t v = kms_step(st, "read policy version", &row) == SR_OK && row ? kms_column_int(st, 0) : 0;
    kms_done(st);
    return v;
}

sr_err_t kms_policy_load(kms_store_t *s, kms_policy_t *p)
{
    memset(p, 0, sizeof *p);
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "SELECT version, digest, body, pushed, COALESCE(pushed_by, '') FROM policies"
                                        " ORDER BY version DESC LIMIT 1", &st);
    if (rc != SR_OK) return rc;
    int row = 0;
    rc = kms_step(st, "read policy", &row);
    if (rc == SR_OK && !row) rc = sr_err_set(SR_ERR_NOT_FOUND, "no access policy was pushed (kmsctl policy push FILE)");
    if (rc == SR_OK) {
        size_t n = 0;
        const uint8_t *body = kms_column_blob(st, 2, &n);
        p->version = kms_column_int(st, 0), p->pushed = kms_column_int(st, 3);
        column_text(st, 1, p->digest, sizeof p->digest);
        column_text(st, 4, p->pushed_by, sizeof p->pushed_by);
        if (!(p->text = malloc(n + 1))) rc = SR_ERR_NOMEM;
        else memcpy(p->text, body, n), p->text[n] = '\0', p->len = n;
    }
    kms_done(st);
    return rc;
}

/* ---- kmsd instances sharing a store ------------------------------------------------------------ */

sr_err_t kms_instance_seen(kms_store_t *s, const char *id, int64_t now)
{
    kms_stmt_t *st;
    sr_err_t rc = kms_db_prepare(s->db, "INSERT INTO servers(id, seen) VALUES(?1, ?2)"
                                        " ON CONFLICT(id) DO UPDATE SET seen = ?2", &st);
    if (rc != SR_OK) return rc;
    kms_bind_text(st, 1, id);
    kms_bind_int(st, 2, now);
    rc = run(st, "record this kmsd");
    if (rc == SR_OK && (rc = kms_db_prepare(s->db, "DELETE FROM servers WHERE seen < ?1", &st)) == SR_OK) {
        kms_bind_int(st, 1, now - 86400); /* instances gone for a day */
        rc = run(st, "forget old kmsd instances");
    }
    return rc;
}

int kms_instances_alive(kms_store_t *s, const char *except_id, int64_t since)
{
    kms_stmt_t *st;
    if (kms_db_prepare(s->db, "SELECT COUNT(*) FROM servers WHERE id <> ?1 AND seen >= ?2", &st) != SR_OK) return 0;
    kms_bind_text(st, 1, except_id);
    kms_bind_int(st, 2, since);
    int row = 0, n = 0;
    if (kms_step(st, "count kmsd instances", &row) == SR_OK && row) n = (int)kms_column_int(st, 0);
    kms_done(st);
    return n;
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
