/*
 * root.c — the root key RK that unlocks kmsd's store, and the store itself.
 *
 * RK comes from a root key file (strongroom's key-file format, mode 0600) or
 * from an operator passphrase through Argon2id (libsodium; salt and limits
 * in STORE.kdf beside the store, never the key). The store is an SQLite file
 * opened through the strongroom VFS with RK as its master key, so its pages
 * are encrypted and authenticated like any tablespace: a wrong passphrase or
 * root key fails at the first read with SR_ERR_AUTH.
 */
#include "db.h"
#include "kms.h"
#include "tde.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KDF_MAGIC "strongroom-kdf 1"

typedef struct kdf_params {
    sr_uuid_t id;
    uint8_t salt[crypto_pwhash_SALTBYTES];
    unsigned long long opslimit;
    size_t memlimit;
} kdf_params_t;

static sr_err_t kdf_write(const char *path, const kdf_params_t *k)
{
    char uuid[SR_UUID_STR_LEN + 1], salt[2 * sizeof k->salt + 1];
    sr_uuid_format(&k->id, uuid);
    sr_hex_encode(k->salt, sizeof k->salt, salt);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot create %s", path);
    char text[512];
    int n = snprintf(text, sizeof text, "%s\nid %s\nsalt %s\nopslimit %llu\nmemlimit %zu\n", KDF_MAGIC, uuid, salt,
                     k->opslimit, k->memlimit);
    sr_err_t rc = sr_fd_write_all(fd, text, (size_t)n);
    if (rc == SR_OK && fsync(fd) != 0) rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot sync %s", path);
    close(fd);
    return rc;
}

static sr_err_t kdf_read(const char *path, kdf_params_t *k)
{
    FILE *f = fopen(path, "r");
    if (!f) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open the passphrase parameters %s", path);
    char magic[64] = "", uuid[64] = "", salt[128] = "";
    int n = fscanf(f, "%63[^\n]\nid %63s\nsalt %127s\nopslimit %llu\nmemlimit %zu", magic, uuid, salt, &k->opslimit,
                   &k->memlimit);
    fclose(f);
    if (n != 5 || strcmp(magic, KDF_MAGIC) != 0 || sr_uuid_parse(uuid, &k->id) != SR_OK ||
        sr_hex_decode(salt, k->salt, sizeof k->salt) != SR_OK || k->opslimit < crypto_pwhash_OPSLIMIT_MIN ||
        k->memlimit < crypto_pwhash_MEMLIMIT_MIN)
        return sr_err_set(SR_ERR_PARSE, "%s is not a strongroom passphrase parameter file", path);
    return SR_OK;
}

/* The passphrase: the file's first line, or $KMSD_PASSPHRASE. */
static sr_err_t read_passphrase(const char *file, char *out, size_t cap)
{
    const char *env = getenv("KMSD_PASSPHRASE");
    if (!file && env) {
        if (strlen(env) >= cap) return sr_err_set(SR_ERR_INVALID_ARG, "passphrase too long");
        snprintf(out, cap, "%s", env);
    } else {
        FILE *f = file ? fopen(file, "r") : NULL;
        if (!f) return sr_err_set(SR_ERR_CONFIG, "no passphrase: set passphrase_file or KMSD_PASSPHRASE");
        sr_err_t rc = sr_file_check_private(fileno(f), file, "passphrase file", NULL);
        if (rc != SR_OK) return fclose(f), rc;
        if (!fgets(out, (int)cap, f)) out[0] = '\0';
        fclose(f);
        out[strcspn(out, "\r\n")] = '\0';
    }
    if (strlen(out) < 12)
        return sr_err_set(SR_ERR_INVALID_ARG, "the passphrase is shorter than 12 characters");
    return SR_OK;
}

static sr_err_t passphrase_provider(const char *params_path, const char *pass_file, int create, sr_keyprov_t **out)
{
    kdf_params_t k;
    sr_err_t rc = SR_OK;
    if (create) {
        sr_uuid_generate(&k.id);
        rc = sr_random_bytes(k.salt, sizeof k.salt);
        k.opslimit = crypto_pwhash_OPSLIMIT_MODERATE, k.memlimit = crypto_pwhash_MEMLIMIT_MODERATE / 4; /* 64 MiB */
    } else {
        rc = kdf_read(params_path, &k);
    }
    char *pass = sr_secure_alloc(1024);
    uint8_t *rk = sr_secure_alloc(SR_KEYMGR_KEY_BYTES);
    if (!pass || !rk) rc = SR_ERR_NOMEM;
    if (rc == SR_OK) rc = read_passphrase(pass_file, pass, 1024);
    if (rc == SR_OK && crypto_pwhash(rk, SR_KEYMGR_KEY_BYTES, pass, strlen(pass), k.salt, k.opslimit, k.memlimit,
                                     crypto_pwhash_ALG_ARGON2ID13) != 0)
        rc = sr_err_set(SR_ERR_NOMEM, "Argon2id needs %zu MiB of memory", k.memlimit >> 20);
    if (rc == SR_OK && create) rc = kdf_write(params_path, &k);
    if (rc == SR_OK) rc = sr_keyprov_rawkey_new(&k.id, rk, "passphrase", out);
    if (pass) sr_secure_wipe(pass, 1024), sr_secure_free(pass);
    if (rk) sr_secure_wipe(rk, SR_KEYMGR_KEY_BYTES), sr_secure_free(rk);
    return rc;
}

sr_err_t kms_root_provider(const char *store_path, const char *root_key_file, const char *passphrase_file,
                           int create, sr_keyprov_t **out)
{
    if (root_key_file) {
        if (create) {
            sr_err_t rc = sr_keyfile_create(root_key_file);
            if (rc != SR_OK) return rc;
        }
        return sr_keyprov_keyfile_open(root_key_file, out);
    }
    if (kms_db_is_postgres(store_path)) /* the salt lives beside an SQLite store; nowhere to keep it here */
        return sr_err_set(SR_ERR_CONFIG, "a PostgreSQL key store needs root_key_file (not a passphrase)");
    char params[4200];
    snprintf(params, sizeof params, "%s.kdf", store_path);
    return passphrase_provider(params, passphrase_file, create, out);
}

sr_err_t kms_store_location(const char *path, const char *url, const char **out)
{
    if (!path == !url) return sr_err_set(SR_ERR_CONFIG, "the key store: give path (SQLite) or url (PostgreSQL), one of them");
    if (url && !kms_db_is_postgres(url))
        return sr_err_set(SR_ERR_CONFIG, "store url '%.40s...' is not postgresql://", url);
    *out = path ? path : url;
    return SR_OK;
}

sr_err_t kms_store_open_encrypted(const char *store_path, sr_keyprov_t *root, kms_store_t **out)
{
    if (kms_db_is_postgres(store_path)) { /* key material wrapped under the root key, the rest in clear */
        sr_err_t rc = kms_store_open(store_path, root, out);
        if (rc == SR_ERR_WRAP_INTEGRITY || rc == SR_ERR_WRONG_KEY)
            return sr_err_set(SR_ERR_AUTH, "cannot open the key store in PostgreSQL: wrong root key (%s)",
                              sr_err_detail());
        return rc;
    }
    /* The store names no key of its own: the VFS uses `root`, never a key
     * file from the environment. */
    unsetenv("STRONGROOM_KEYFILE"), unsetenv("STRONGROOM_KMS");
    if (sr_sqlite_register(root, 0) != 0) return sr_err_set(SR_ERR_INTERNAL, "cannot register the strongroom VFS");
    char uri[4300];
    snprintf(uri, sizeof uri, "file:%s?vfs=strongroom", store_path);
    sr_err_t rc = kms_store_open(uri, root, out);
    if (rc == SR_ERR_WRAP_INTEGRITY || rc == SR_ERR_WRONG_KEY || rc == SR_ERR_AUTH || rc == SR_ERR_CORRUPT)
        return sr_err_set(SR_ERR_AUTH, "cannot open the key store %s: wrong passphrase or root key (%s)", store_path,
                          sr_err_detail());
    return rc;
}

sr_err_t kms_store_copy_allowed(const char *from, const char *to, int overwrite)
{
    if (kms_db_is_postgres(from) || kms_db_is_postgres(to))
        return sr_err_set(SR_ERR_UNSUPPORTED, "the key store is in PostgreSQL: back it up with pg_dump (key material "
                                              "stays wrapped under the root key; names and states are in clear)");
    struct stat st;
    if (!overwrite && stat(to, &st) == 0) return sr_err_set(SR_ERR_EXISTS, "%s exists: refusing to overwrite it", to);
    return SR_OK;
}

sr_err_t kms_store_copy(const char *from, const char *to, int overwrite)
{
    sr_err_t allowed = kms_store_copy_allowed(from, to, overwrite);
    if (allowed != SR_OK) return allowed;
    char src_uri[4300], dst_uri[4300];
    snprintf(src_uri, sizeof src_uri, "file:%s?vfs=strongroom", from);
    snprintf(dst_uri, sizeof dst_uri, "file:%s?vfs=strongroom", to);
    sqlite3 *src = NULL, *dst = NULL;
    int rc = sqlite3_open_v2(src_uri, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_open_v2(dst_uri, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) sqlite3_busy_timeout(src, 10000), sqlite3_busy_timeout(dst, 10000);
    sqlite3_backup *b = rc == SQLITE_OK ? sqlite3_backup_init(dst, "main", src, "main") : NULL;
    if (b) {
        rc = sqlite3_backup_step(b, -1); /* one consistent snapshot of the source */
        rc = sqlite3_backup_finish(b) == SQLITE_OK && rc == SQLITE_DONE ? SQLITE_OK : rc;
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_errcode(dst);
    }
    sr_err_t err = rc == SQLITE_OK ? SR_OK
                                   : sr_err_set(SR_ERR_IO, "cannot copy the key store %s to %s: %s", from, to,
                                                dst ? sqlite3_errmsg(dst) : src ? sqlite3_errmsg(src) : sqlite3_errstr(rc));
    sqlite3_close(src);
    sqlite3_close(dst);
    return err;
}
