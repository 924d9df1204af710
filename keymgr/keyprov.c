/*
 * keyprov.c — key providers: the generic handle engines use, and the local
 * key-file provider (single box, tests).
 *
 * An engine asks its provider for a tablespace's data key (DEK); it never sees
 * a master key. Every DEK is wrapped with AES-256-GCM under the master key with
 * AAD = "SRDEK1" | tablespace UUID | DEK version (u32 BE), so a wrapped DEK
 * copied into another tablespace's header, or presented as another version,
 * does not unwrap.
 *
 * Key file format (text, mode 0600, written atomically by rename):
 *   # comment lines
 *   strongroom-keyfile 1
 *   mk <master key UUID> <version> <64 hex digits>      (one line per version)
 * All lines name the same UUID; versions strictly increase. The file is read
 * into locked memory, parsed there, and wiped.
 */
#include "keymgr.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEYFILE_MAGIC "strongroom-keyfile 1"
#define KEYFILE_MAX_BYTES (64 * 1024)
#define KEYFILE_MAX_VERSIONS 256

struct sr_keyprov {
    const sr_keyprov_ops_t *ops;
    void *impl;
    char *description;
};

sr_err_t sr_keyprov_new(const sr_keyprov_ops_t *ops, void *impl, const char *description, sr_keyprov_t **out)
{
    sr_keyprov_t *kp = calloc(1, sizeof *kp);
    char *desc = strdup(description ? description : ops->kind);
    if (!kp || !desc) {
        free(kp), free(desc);
        if (ops->destroy) ops->destroy(impl);
        return sr_err_set(SR_ERR_NOMEM, "cannot allocate a key provider");
    }
    kp->ops = ops, kp->impl = impl, kp->description = desc;
    *out = kp;
    return SR_OK;
}

sr_err_t sr_keyprov_dek_create(sr_keyprov_t *kp, const sr_uuid_t *tablespace, uint32_t dek_version, uint8_t *dek_out,
                               sr_wrapped_key_t *wrapped_out)
{
    return kp->ops->dek_create(kp->impl, tablespace, dek_version, dek_out, wrapped_out);
}

sr_err_t sr_keyprov_dek_unwrap(sr_keyprov_t *kp, const sr_uuid_t *tablespace, uint32_t dek_version,
                               const sr_wrapped_key_t *wrapped, uint8_t *dek_out)
{
    return kp->ops->dek_unwrap(kp->impl, tablespace, dek_version, wrapped, dek_out);
}

sr_err_t sr_keyprov_dek_rewrap(sr_keyprov_t *kp, const sr_uuid_t *tablespace, uint32_t dek_version,
                               const sr_wrapped_key_t *old_wrapped, sr_wrapped_key_t *new_wrapped)
{
    return kp->ops->dek_rewrap(kp->impl, tablespace, dek_version, old_wrapped, new_wrapped);
}

const char *sr_keyprov_description(const sr_keyprov_t *kp) { return kp->description; }

void *sr_keyprov_impl(const sr_keyprov_t *kp, const sr_keyprov_ops_t *ops) { return kp && kp->ops == ops ? kp->impl : NULL; }

void sr_keyprov_free(sr_keyprov_t *kp)
{
    if (!kp) return;
    if (kp->ops->destroy) kp->ops->destroy(kp->impl);
    free(kp->description);
    free(kp);
}

/* ---- the key file ------------------------------------------------------- */

typedef struct keyfile_version {
    uint32_t version;
    uint8_t key[SR_KEYMGR_KEY_BYTES];
} keyfile_version_t;

/* Lives in secure memory as a whole. */
typedef struct keyfile {
    sr_uuid_t id;
    uint32_t n;
    keyfile_version_t v[KEYFILE_MAX_VERSIONS];
} keyfile_t;

static keyfile_t *keyfile_alloc(void)
{
    keyfile_t *kf = sr_secure_alloc(sizeof *kf);
    if (kf) memset(kf, 0, sizeof *kf);
    return kf;
}

static void keyfile_free(keyfile_t *kf)
{
    if (kf) sr_secure_wipe(kf, sizeof *kf), sr_secure_free(kf);
}

/* Reads the whole file into locked memory after checking its permissions. */
static sr_err_t keyfile_read(const char *path, char **text_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open key file %s", path);
    struct stat st; /* its owner could replace the master key, and so read every database re-keyed after that */
    sr_err_t rc = sr_file_check_private(fd, path, "key file", &st);
    if (rc == SR_OK && st.st_size > KEYFILE_MAX_BYTES)
        rc = sr_err_set(SR_ERR_PARSE, "key file %s is %lld bytes, larger than a key file can be", path,
                        (long long)st.st_size);
    char *text = NULL;
    if (rc == SR_OK && !(text = sr_secure_alloc((size_t)st.st_size + 1))) rc = SR_ERR_NOMEM;
    size_t got = 0;
    while (rc == SR_OK && got < (size_t)st.st_size) {
        ssize_t r = read(fd, text + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) rc = sr_err_set_errno(SR_ERR_IO, r < 0 ? errno : EIO, "cannot read key file %s", path);
        else got += (size_t)r;
    }
    close(fd);
    if (rc != SR_OK) {
        if (text) sr_secure_wipe(text, (size_t)st.st_size), sr_secure_free(text);
        return rc;
    }
    text[got] = '\0';
    *text_out = text;
    return SR_OK;
}

static sr_err_t keyfile_parse_line(const char *path, int lineno, char *line, keyfile_t *kf)
{
    char *save = NULL, *tag = strtok_r(line, " \t", &save), *uuid = strtok_r(NULL, " \t", &save),
         *ver = strtok_r(NULL, " \t", &save), *hex = strtok_r(NULL, " \t", &save);
    int64_t version = 0;
    sr_uuid_t id;
    if (!tag || strcmp(tag, "mk") != 0 || !hex || strtok_r(NULL, " \t", &save) || sr_uuid_parse(uuid, &id) != SR_OK ||
        sr_parse_int64(ver, &version) != SR_OK || version < 1 || version > UINT32_MAX || strlen(hex) != 64)
        return sr_err_set(SR_ERR_PARSE, "%s:%d: expected 'mk <uuid> <version> <64 hex digits>'", path, lineno);
    if (kf->n && !sr_uuid_equal(&id, &kf->id))
        return sr_err_set(SR_ERR_PARSE, "%s:%d: every line must name the same master key UUID", path, lineno);
    if (kf->n && (uint32_t)version <= kf->v[kf->n - 1].version)
        return sr_err_set(SR_ERR_PARSE, "%s:%d: versions must increase", path, lineno);
    if (kf->n == KEYFILE_MAX_VERSIONS)
        return sr_err_set(SR_ERR_LIMIT, "%s:%d: more than %d master key versions", path, lineno, KEYFILE_MAX_VERSIONS);
    keyfile_version_t *v = &kf->v[kf->n];
    if (sr_hex_decode(hex, v->key, sizeof v->key) != SR_OK)
        return sr_err_set(SR_ERR_PARSE, "%s:%d: the key is not 64 hex digits", path, lineno);
    kf->id = id;
    v->version = (uint32_t)version;
    kf->n++;
    return SR_OK;
}

static sr_err_t keyfile_parse(const char *path, char *text, keyfile_t *kf)
{
    int lineno = 0, seen_magic = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\r' || line[len - 1] == ' ')) line[--len] = '\0';
        if (len == 0 || line[0] == '#') continue;
        if (!seen_magic) {
            if (strcmp(line, KEYFILE_MAGIC) != 0)
                return sr_err_set(SR_ERR_PARSE, "%s:%d: not a strongroom key file (expected '%s')", path, lineno,
                                  KEYFILE_MAGIC);
            seen_magic = 1;
            continue;
        }
        sr_err_t rc = keyfile_parse_line(path, lineno, line, kf);
        if (rc != SR_OK) return rc;
    }
    if (!seen_magic || kf->n == 0) return sr_err_set(SR_ERR_PARSE, "%s: holds no master key", path);
    return SR_OK;
}

static sr_err_t keyfile_load(const char *path, keyfile_t **out)
{
    char *text = NULL;
    sr_err_t rc = keyfile_read(path, &text);
    if (rc != SR_OK) return rc;
    size_t text_len = strlen(text);
    keyfile_t *kf = keyfile_alloc();
    rc = kf ? keyfile_parse(path, text, kf) : SR_ERR_NOMEM;
    sr_secure_wipe(text, text_len);
    sr_secure_free(text);
    if (rc != SR_OK) {
        keyfile_free(kf);
        return rc;
    }
    *out = kf;
    return SR_OK;
}

/* Writes kf to path atomically (mode 0600; replacing it, or refusing an existing one). */
static sr_err_t keyfile_store(const char *path, const keyfile_t *kf, int replace)
{
    size_t cap = 256 + (size_t)kf->n * 128;
    char *text = sr_secure_alloc(cap);
    if (!text) return SR_ERR_NOMEM;
    char uuid[SR_UUID_STR_LEN + 1], hex[2 * SR_KEYMGR_KEY_BYTES + 1];
    sr_uuid_format(&kf->id, uuid);
    size_t len = (size_t)snprintf(text, cap,
                                  "# strongroom master key file: keep it secret (mode 0600) and back it up;\n"
                                  "# without it, every tablespace it protects is unreadable.\n%s\n",
                                  KEYFILE_MAGIC);
    for (uint32_t i = 0; i < kf->n; i++) {
        sr_hex_encode(kf->v[i].key, SR_KEYMGR_KEY_BYTES, hex);
        len += (size_t)snprintf(text + len, cap - len, "mk %s %u %s\n", uuid, kf->v[i].version, hex);
    }
    sr_secure_wipe(hex, sizeof hex);
    sr_err_t rc = sr_file_write_atomic(path, text, len, 0600, replace ? 0 : SR_WRITE_NO_REPLACE);
    if (rc == SR_ERR_EXISTS) rc = sr_err_set(SR_ERR_EXISTS, "key file %s already exists; refusing to overwrite", path);
    sr_secure_wipe(text, cap);
    sr_secure_free(text);
    return rc;
}

sr_err_t sr_keyfile_create(const char *path)
{
    keyfile_t *kf = keyfile_alloc();
    if (!kf) return SR_ERR_NOMEM;
    sr_uuid_generate(&kf->id);
    kf->n = 1;
    kf->v[0].version = 1;
    sr_err_t rc = sr_random_bytes(kf->v[0].key, SR_KEYMGR_KEY_BYTES);
    if (rc == SR_OK) rc = keyfile_store(path, kf, 0);
    keyfile_free(kf);
    return rc;
}

sr_err_t sr_keyfile_rotate(const char *path, uint32_t *new_version)
{
    keyfile_t *kf = NULL;
    sr_err_t rc = keyfile_load(path, &kf);
    if (rc != SR_OK) return rc;
    if (kf->n == KEYFILE_MAX_VERSIONS) {
        keyfile_free(kf);
        return sr_err_set(SR_ERR_LIMIT, "key file %s already holds %d versions", path, KEYFILE_MAX_VERSIONS);
    }
    keyfile_version_t *v = &kf->v[kf->n];
    v->version = kf->v[kf->n - 1].version + 1;
    rc = sr_random_bytes(v->key, SR_KEYMGR_KEY_BYTES);
    kf->n++;
    if (rc == SR_OK) rc = keyfile_store(path, kf, 1);
    if (rc == SR_OK && new_version) *new_version = v->version;
    keyfile_free(kf);
    return rc;
}

sr_err_t sr_keyfile_describe(const char *path, sr_uuid_t *id, uint32_t *newest_version)
{
    keyfile_t *kf = NULL;
    sr_err_t rc = keyfile_load(path, &kf);
    if (rc != SR_OK) return rc;
    *id = kf->id;
    *newest_version = kf->v[kf->n - 1].version;
    keyfile_free(kf);
    return SR_OK;
}

/* ---- the key-file provider ------------------------------------------------ */

void sr_keymgr_dek_aad(const sr_uuid_t *tablespace, uint32_t dek_version, uint8_t aad[SR_KEYMGR_DEK_AAD_LEN])
{
    memcpy(aad, "SRDEK1", 6);
    memcpy(aad + 6, tablespace->bytes, SR_UUID_BYTES);
    sr_put_be32(aad + 22, dek_version);
}

static const keyfile_version_t *keyfile_find(const keyfile_t *kf, uint32_t version)
{
    for (uint32_t i = 0; i < kf->n; i++)
        if (kf->v[i].version == version) return &kf->v[i];
    return NULL;
}

static sr_err_t keyfile_wrap_dek(const keyfile_t *kf, const sr_uuid_t *tablespace, uint32_t dek_version,
                                 const uint8_t *dek, sr_wrapped_key_t *out)
{
    uint8_t aad[SR_KEYMGR_DEK_AAD_LEN];
    sr_keymgr_dek_aad(tablespace, dek_version, aad);
    const keyfile_version_t *mk = &kf->v[kf->n - 1];
    return sr_keymgr_wrap(SR_WRAP_AES_256_GCM, mk->key, SR_KEYMGR_KEY_BYTES, &kf->id, mk->version, aad, sizeof aad,
                          dek, SR_KEYMGR_KEY_BYTES, out);
}

static sr_err_t keyfile_dek_create(void *impl, const sr_uuid_t *tablespace, uint32_t dek_version, uint8_t *dek_out,
                                   sr_wrapped_key_t *wrapped_out)
{
    sr_err_t rc = sr_random_bytes(dek_out, SR_KEYMGR_KEY_BYTES);
    if (rc == SR_OK) rc = keyfile_wrap_dek(impl, tablespace, dek_version, dek_out, wrapped_out);
    if (rc != SR_OK) sr_secure_wipe(dek_out, SR_KEYMGR_KEY_BYTES);
    return rc;
}

static sr_err_t keyfile_dek_unwrap(void *impl, const sr_uuid_t *tablespace, uint32_t dek_version,
                                   const sr_wrapped_key_t *wrapped, uint8_t *dek_out)
{
    const keyfile_t *kf = impl;
    char want[SR_UUID_STR_LEN + 1], have[SR_UUID_STR_LEN + 1];
    sr_uuid_format(&wrapped->kek_id, want);
    sr_uuid_format(&kf->id, have);
    if (!sr_uuid_equal(&wrapped->kek_id, &kf->id))
        return sr_err_set(SR_ERR_WRONG_KEY, "the data key is wrapped by master key %s, the key file holds %s",
                          want, have);
    const keyfile_version_t *mk = keyfile_find(kf, wrapped->kek_version);
    if (!mk)
        return sr_err_set(SR_ERR_WRONG_KEY, "the data key is wrapped by master key %s version %u, which the key "
                          "file does not hold (an older copy of the file?)", want, wrapped->kek_version);
    uint8_t aad[SR_KEYMGR_DEK_AAD_LEN];
    sr_keymgr_dek_aad(tablespace, dek_version, aad);
    size_t len = 0;
    sr_err_t rc = sr_keymgr_unwrap(mk->key, SR_KEYMGR_KEY_BYTES, wrapped, aad, sizeof aad, dek_out,
                                   SR_KEYMGR_KEY_BYTES, &len);
    if (rc == SR_OK && len != SR_KEYMGR_KEY_BYTES) {
        sr_secure_wipe(dek_out, SR_KEYMGR_KEY_BYTES);
        return sr_err_set(SR_ERR_WRAP_INTEGRITY, "unwrapped data key is %zu bytes, not %d", len, SR_KEYMGR_KEY_BYTES);
    }
    if (rc == SR_ERR_WRAP_INTEGRITY)
        sr_err_set(rc, "the wrapped data key (version %u) does not authenticate under master key %s version %u: "
                   "the key header was altered or copied from another tablespace", dek_version, want,
                   wrapped->kek_version);
    return rc;
}

static sr_err_t keyfile_dek_rewrap(void *impl, const sr_uuid_t *tablespace, uint32_t dek_version,
                                   const sr_wrapped_key_t *old_wrapped, sr_wrapped_key_t *new_wrapped)
{
    uint8_t *dek = sr_secure_alloc(SR_KEYMGR_KEY_BYTES);
    if (!dek) return SR_ERR_NOMEM;
    sr_err_t rc = keyfile_dek_unwrap(impl, tablespace, dek_version, old_wrapped, dek);
    if (rc == SR_OK) rc = keyfile_wrap_dek(impl, tablespace, dek_version, dek, new_wrapped);
    sr_secure_wipe(dek, SR_KEYMGR_KEY_BYTES);
    sr_secure_free(dek);
    return rc;
}

static void keyfile_destroy(void *impl) { keyfile_free(impl); }

static const sr_keyprov_ops_t keyfile_ops = {
    .kind = "keyfile",
    .dek_create = keyfile_dek_create,
    .dek_unwrap = keyfile_dek_unwrap,
    .dek_rewrap = keyfile_dek_rewrap,
    .destroy = keyfile_destroy,
};

sr_err_t sr_keyprov_keyfile_open(const char *path, sr_keyprov_t **out)
{
    keyfile_t *kf = NULL;
    sr_err_t rc = keyfile_load(path, &kf);
    if (rc != SR_OK) return rc;
    char desc[4200];
    snprintf(desc, sizeof desc, "keyfile:%s", path);
    return sr_keyprov_new(&keyfile_ops, kf, desc, out);
}

sr_err_t sr_keyprov_rawkey_new(const sr_uuid_t *id, const uint8_t key[SR_KEYMGR_KEY_BYTES], const char *description,
                               sr_keyprov_t **out)
{
    keyfile_t *kf = keyfile_alloc();
    if (!kf) return SR_ERR_NOMEM;
    kf->id = *id;
    kf->n = 1;
    kf->v[0].version = 1;
    memcpy(kf->v[0].key, key, SR_KEYMGR_KEY_BYTES);
    return sr_keyprov_new(&keyfile_ops, kf, description, out);
}
