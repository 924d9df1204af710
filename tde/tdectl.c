/*
 * tdectl — the DBA's tool for encrypted tablespaces (one SQLite file each).
 *
 *   tdectl keygen KEYFILE                      new master key file (0600)
 *   tdectl create   [--cipher C] [--page-size N] --keyfile K DB
 *   tdectl status   [--keyfile K] DB...        key header, key versions, page histogram
 *   tdectl verify   --keyfile K DB...          authenticate every page, then SQLite's integrity_check
 *   tdectl encrypt  [--cipher C] --keyfile K PLAIN.db ENCRYPTED.db
 *   tdectl decrypt  --keyfile K ENCRYPTED.db PLAIN.db
 *   tdectl rekey    [--rewrite] --keyfile K DB new data key version (--rewrite: re-encrypt all pages now)
 *   tdectl rotate-master --keyfile K DB...     new master key version; re-wrap each DB's data keys
 *   tdectl rotate-master --kms CONF DB...      re-wrap each DB's data keys under CONF's master_key
 *   tdectl backup  --keyfile K [--json] DB DEST  consistent encrypted backup of a live DB, then verified
 *   tdectl restore --keyfile K BACKUP DB       verify BACKUP, copy it to DB (never over an existing file)
 * verify and backup show progress on stderr (--quiet: none).
 * Every --keyfile K may be --kms CONF instead (or $STRONGROOM_KMS): the data
 * keys are then wrapped by a master key held in a KMS (kmsd, or any KMIP 1.4
 * server with AES-GCM).
 *
 * Exit status (common.h, every strongroom tool): 0 ok, 1 verification failed,
 * 2 usage, 3 could not (a missing file, I/O), 4 wrong or missing key, 5 the
 * database is busy, 6 disk full. The key file can also come from
 * $STRONGROOM_KEYFILE.
 */
#include "sr_sqlite.h"
#include "audit.h"
#include "tablespace.h"
#include "tde.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct options {
    const char *keyfile;
    sr_tde_cipher_t cipher;
    uint32_t page_size;
    int rewrite;
    int json;
    int quiet; /* no progress */
    int in_place;
    int no_verify; /* backup: the copy is not validated (tdectl verify it later) */
    int argc;
    char **argv; /* the positional arguments */
} options_t;

static int fail(const char *what, sr_err_t rc)
{
    fprintf(stderr, "tdectl: %s: %s (%s)\n", what, sr_err_detail()[0] ? sr_err_detail() : sr_strerror(rc),
            sr_err_name(rc));
    return sr_exit_status(rc);
}

/* The more serious of two exit statuses (for commands over several files). */
static int worse(int a, int b) { return a > b ? a : b; }

static int usage_to(FILE *f, int status)
{
    fputs("usage: tdectl COMMAND [OPTIONS] ARGS\n"
          "  keygen KEYFILE                              create a master key file (mode 0600)\n"
          "  create [--cipher C] [--page-size N] DB      create an empty encrypted database\n"
          "  status [--json] DB...                       show the key header and key versions\n"
          "  verify [--json] DB...                       authenticate every page, then integrity_check\n"
          "  encrypt [--cipher C] PLAIN.db ENCRYPTED.db  encrypted copy of a plaintext database\n"
          "  encrypt --in-place [--cipher C] DB          encrypt DB itself: rebuilt beside it, swapped once verified\n"
          "  decrypt ENCRYPTED.db PLAIN.db               plaintext copy of an encrypted database\n"
          "  rekey [--rewrite] DB                        new data key version for new writes\n"
          "  rekey --cipher C DB                         rebuild DB under cipher C (in place, like encrypt --in-place)\n"
          "                                              (--rewrite: re-encrypt every page now)\n"
          "  rotate-master DB...                         new master key version; re-wrap the DBs' data keys\n"
          "  backup [--json] [--quiet] [--no-verify] DB DEST\n"
          "                                              consistent encrypted backup of a live database, then verified\n"
          "  restore [--quiet] BACKUP DB                 verify BACKUP, then copy it to DB (never over an existing one)\n"
          "options: --keyfile K (or $STRONGROOM_KEYFILE), --kms CONFIG (or $STRONGROOM_KMS), --cipher aes-256-gcm|chacha20-poly1305,\n"
          "         --page-size 512..65536; tdectl --version\n"
          "exit status: 0 ok, 1 verification failed, 2 usage, 3 could not (missing file, I/O), 4 wrong or missing\n"
          "key, 5 database busy, 6 disk full\n",
          f);
    return status;
}

static int usage(void) { return usage_to(stderr, SR_EXIT_USAGE); }

/* "keyfile" or "kms": how o->keyfile names the key (set once, from the command line). */
static const char *key_kind = "keyfile";

/* The key could not be had (no such key file, a KMS that refuses or is
 * unreachable, a key that does not open the database): exit status 4. */
static int key_fail(const char *what)
{
    fail(what, sr_err_last());
    return SR_EXIT_KEY;
}

static sr_err_t open_provider(const options_t *o, sr_keyprov_t **kp)
{
    if (!o->keyfile)
        return sr_err_set(SR_ERR_INVALID_ARG, "no key: pass --keyfile PATH or --kms CONFIG (or set STRONGROOM_KEYFILE "
                          "or STRONGROOM_KMS)");
    if (!strcmp(key_kind, "kms")) return kp ? sr_keyprov_kmip_open(o->keyfile, kp) : SR_OK;
    return sr_keyprov_keyfile_open(o->keyfile, kp);
}

/* Percent-escapes everything but unreserved characters and '/', so a path
 * with '?', '#', '&', '%' or spaces stays a path (SQLite decodes %XX). */
static void uri_escape(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && n + 4 < cap; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("/._-~", *p))
            out[n++] = (char)*p;
        else
            out[n++] = '%', out[n++] = hex[*p >> 4], out[n++] = hex[*p & 15];
    }
    out[n] = '\0';
}

/* 0 if the URI did not fit (a path of thousands of characters). */
static int uri_for(char *out, size_t cap, const char *path, const char *keyfile, const options_t *o)
{
    char cipher[64] = "", epath[4096 * 3 + 1], ekey[4096 * 3 + 1];
    if (o && o->cipher) snprintf(cipher, sizeof cipher, "&cipher=%s", sr_tde_cipher_name(o->cipher));
    uri_escape(epath, sizeof epath, path);
    uri_escape(ekey, sizeof ekey, keyfile);
    int n = snprintf(out, cap, "file:%s?vfs=strongroom&%s=%s%s", epath, key_kind, ekey, cipher);
    if (n >= 0 && (size_t)n < cap) return 1;
    fprintf(stderr, "tdectl: %s: path too long\n", path);
    return 0; /* the caller exits SR_EXIT_CANNOT */
}

/* Audit events of administrative actions (no-op without an audit log). An
 * action that changes a tablespace or a key is recorded before it takes
 * effect, and not taken if the record cannot be made (as a tablespace open
 * fails closed); if it then fails, a failure record follows. A check (verify)
 * and its conclusion are recorded after the fact. */
static sr_err_t emit(const char *event, const char *object, const char *outcome, const char *detail)
{
    char subject[64];
    snprintf(subject, sizeof subject, "uid=%ld pid=%ld", (long)getuid(), (long)getpid()); /* as the tde events */
    return sr_event_emit(&(sr_event_t){.component = "tdectl", .event = event, .subject = subject, .object = object,
                                       .outcome = outcome, .source = "local", .detail = detail});
}

/* 0, or the exit status of an action refused because the audit log cannot record it. */
static int recorded_first(const char *event, const char *object, const char *detail)
{
    if (emit(event, object, "success", detail) == SR_OK) return 0;
    fprintf(stderr, "tdectl: %s: not done: the audit log cannot record %s: %s\n", object, event, sr_err_detail());
    return SR_EXIT_CANNOT;
}

/* A record after the fact (a check, or an action that failed); a warning if it cannot be made. */
static void audited(const char *event, const char *object, int ok, const char *detail)
{
    if (emit(event, object, ok ? "success" : "failure", detail) != SR_OK)
        fprintf(stderr, "tdectl: %s: warning: the audit log cannot record %s: %s\n", object, event, sr_err_detail());
}

/* An action that failed: said, recorded; its exit status. */
static int action_failed(const char *event, const char *object, sr_err_t rc)
{
    int status = fail(object, rc);
    audited(event, object, 0, sr_err_detail()[0] ? sr_err_detail() : sr_strerror(rc));
    return status;
}

static int exec(sqlite3 *db, const char *sql) { return sqlite3_exec(db, sql, NULL, NULL, NULL); }

/* SQLite's error, said; its exit status. */
static int status_of(int code)
{
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return SR_EXIT_BUSY;
    case SQLITE_FULL: return SR_EXIT_DISK_FULL;
    case SQLITE_AUTH: return SR_EXIT_KEY; /* strongroom's answer to a wrong or unavailable key */
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return SR_EXIT_FAILED;
    default: return SR_EXIT_CANNOT;
    }
}

static int sqlite_status(sqlite3 *db, const char *what)
{
    fprintf(stderr, "tdectl: %s: %s\n", what, db ? sqlite3_errmsg(db) : "out of memory");
    return status_of(db ? sqlite3_errcode(db) : SQLITE_NOMEM);
}

/* The same, and the connection closed. */
static int sqlite_fail(sqlite3 *db, const char *what)
{
    int status = sqlite_status(db, what);
    sqlite3_close(db);
    return status;
}

/* ---- keygen / create / status ---------------------------------------------------- */

static const char *wrap_name(sr_wrap_alg_t alg, int json)
{
    switch (alg) {
    case SR_WRAP_AES_256_GCM: return json ? "aes-256-gcm" : "AES-256-GCM";
    case SR_WRAP_KMIP_AES_GCM: return json ? "kmip-aes-gcm" : "KMIP AES-GCM";
    case SR_WRAP_KMIP_GET_GCM: return json ? "kmip-get-aes-gcm" : "AES-256-GCM under a master key read with KMIP Get";
    default: return json ? "aes-kwp" : "AES-KWP";
    }
}

static int cmd_keygen(options_t *o)
{
    if (o->argc != 1) return usage();
    sr_err_t rc = sr_keyfile_create(o->argv[0]);
    if (rc != SR_OK) return fail("keygen", rc);
    sr_uuid_t id;
    uint32_t v;
    char uuid[SR_UUID_STR_LEN + 1];
    if (sr_keyfile_describe(o->argv[0], &id, &v) != SR_OK) return fail("keygen", sr_err_last());
    sr_uuid_format(&id, uuid);
    printf("master key %s version %u written to %s (mode 0600; back it up: without it the data is lost)\n", uuid, v,
           o->argv[0]);
    return 0;
}

static void print_header(const char *path, const sr_tde_header_t *h, int slot)
{
    char uuid[SR_UUID_STR_LEN + 1], when[64];
    sr_uuid_format(&h->tablespace, uuid);
    printf("%s\n  tablespace   %s\n  cipher       %s\n  page size    %u\n  state        %s\n", path, uuid,
           sr_tde_cipher_name(h->cipher), h->page_size, sr_tde_state_name(h->state));
    sr_time_format_rfc3339(h->created_us, 0, when, sizeof when);
    printf("  created      %s\n", when);
    sr_time_format_rfc3339(h->updated_us, 0, when, sizeof when);
    printf("  updated      %s (header generation %llu, slot %d)\n", when, (unsigned long long)h->generation, slot);
    printf("  active key   version %u\n", h->active_version);
    for (uint32_t i = 0; i < h->n_keys; i++) {
        const sr_wrapped_key_t *w = &h->keys[i].wrapped;
        char master[64];
        sr_uuid_format(&w->kek_id, uuid);
        int kms = w->alg == SR_WRAP_KMIP_AES_GCM || w->alg == SR_WRAP_KMIP_GET_GCM;
        if (!kms) snprintf(master, sizeof master, "master key %s v%u", uuid, w->kek_version);
        else if (!sr_uuid_is_nil(&w->kek_id)) snprintf(master, sizeof master, "KMS master key %s", uuid);
        else snprintf(master, sizeof master, "KMS master key %u", w->kek_version);
        printf("  key v%-3u     wrapped by %s (%s), %llu encryptions reserved\n", h->keys[i].version, master,
               wrap_name(w->alg, 0),
               (unsigned long long)h->keys[i].encryptions_reserved);
    }
}

/* The key versions of a file's pages (status: no connection is open, so
 * closing the descriptor drops no lock of ours). */
static int count_versions(const char *path, off_t first, size_t skip, size_t stride, uint32_t page_size,
                          sr_tde_version_count_t *vc)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : 1;
    sr_err_t rc = sr_tde_count_versions_fd(fd, first, skip, stride, page_size, vc);
    close(fd);
    return rc != SR_OK;
}

static void print_page_histogram(const sr_tde_version_count_t *vc)
{
    printf("  pages        %llu", (unsigned long long)vc->pages);
    for (int i = 0; i < SR_TDE_MAX_KEY_VERSIONS && vc->versions[i]; i++)
        printf("%skey v%u: %llu", i ? ", " : " (", vc->versions[i], (unsigned long long)vc->count[i]);
    printf("%s\n", vc->pages ? ")" : "");
    if (vc->other) printf("  pages with other key versions: %llu\n", (unsigned long long)vc->other);
}

/* {"1": 120, "2": 7}: pages per key version */
static void json_versions(const sr_tde_version_count_t *vc)
{
    printf("{");
    for (int i = 0; i < SR_TDE_MAX_KEY_VERSIONS && vc->versions[i]; i++)
        printf("%s\"%u\": %llu", i ? ", " : "", vc->versions[i], (unsigned long long)vc->count[i]);
    printf("}");
}

static void json_time(const char *name, int64_t us)
{
    char when[64] = "";
    sr_time_format_rfc3339(us, 0, when, sizeof when);
    printf(", \"%s\": \"%s\"", name, when);
}

/* One database of `tdectl status --json` (docs: README, tdectl). */
static void status_json(const char *path, const sr_tde_header_t *h, int slot, int mac_verified,
                        const sr_tde_version_count_t *vc)
{
    char uuid[SR_UUID_STR_LEN + 1];
    sr_uuid_format(&h->tablespace, uuid);
    printf("{\"path\": ");
    sr_json_string(stdout, path);
    printf(", \"tablespace\": \"%s\", \"cipher\": \"%s\", \"page_size\": %u, \"state\": \"%s\"", uuid,
           sr_tde_cipher_name(h->cipher), h->page_size, sr_tde_state_name(h->state));
    json_time("created", h->created_us);
    json_time("updated", h->updated_us);
    printf(", \"generation\": %llu, \"slot\": %d, \"header_mac\": \"%s\", \"active_version\": %u, \"keys\": [",
           (unsigned long long)h->generation, slot, mac_verified ? "verified" : "not_checked", h->active_version);
    for (uint32_t i = 0; i < h->n_keys; i++) {
        const sr_wrapped_key_t *w = &h->keys[i].wrapped;
        sr_uuid_format(&w->kek_id, uuid);
        printf("%s{\"version\": %u, \"wrapped_by\": \"%s\", \"master_key\": \"%s\", \"master_version\": %u, "
               "\"encryptions_reserved\": %llu}", i ? ", " : "", h->keys[i].version,
               wrap_name(w->alg, 1),
               sr_uuid_is_nil(&w->kek_id) ? "" : uuid, w->kek_version, (unsigned long long)h->keys[i].encryptions_reserved);
    }
    printf("], \"pages\": %llu, \"pages_per_key_version\": ", (unsigned long long)vc->pages);
    json_versions(vc);
    printf(", \"pages_other_versions\": %llu}", (unsigned long long)vc->other);
}

/* {"path": P, "error": "...", "exit_status": N} for a database that could not be read */
static void json_error(const char *path, int status)
{
    printf("{\"path\": ");
    sr_json_string(stdout, path);
    printf(", \"error\": ");
    sr_json_string(stdout, sr_err_detail());
    printf(", \"exit_status\": %d}", status);
}

static int cmd_create(options_t *o)
{
    if (o->argc != 1) return usage();
    sr_keyprov_t *kp = NULL;
    sr_err_t rc = open_provider(o, &kp);
    sr_tde_header_t h;
    sr_tde_ts_options_t opts = {.cipher = o->cipher, .page_size = o->page_size, .may_create = 1};
    if (rc == SR_OK) rc = sr_tde_file_create(o->argv[0], kp, &opts, &h);
    sr_keyprov_free(kp);
    if (rc != SR_OK) return fail(o->argv[0], rc);
    if (o->page_size) { /* SQLite writes page 1 at that size; from then on it is fixed */
        char uri[16384], sql[64];
        sqlite3 *db = NULL;
        snprintf(sql, sizeof sql, "PRAGMA page_size=%u; PRAGMA user_version=0", o->page_size);
        if (!uri_for(uri, sizeof uri, o->argv[0], o->keyfile, NULL)) return SR_EXIT_CANNOT;
        if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, "strongroom") != SQLITE_OK ||
            exec(db, sql) != SQLITE_OK)
            return sqlite_fail(db, o->argv[0]);
        sqlite3_close(db);
        if ((rc = sr_tde_file_header_read(o->argv[0], NULL, &h, NULL)) != SR_OK) return fail(o->argv[0], rc);
    }
    print_header(o->argv[0], &h, 0);
    return 0;
}

static int cmd_status(options_t *o)
{
    if (o->argc < 1) return usage();
    sr_keyprov_t *kp = NULL; /* with a key the header is authenticated, without it only shown */
    if (o->keyfile && open_provider(o, &kp) != SR_OK) return key_fail("status");
    int status = 0;
    if (o->json) printf("{\"databases\": [");
    for (int i = 0; i < o->argc; i++) {
        sr_tde_header_t h;
        int slot = 0;
        sr_tde_version_count_t vc = {0};
        sr_err_t rc = sr_tde_file_header_read(o->argv[i], kp, &h, &slot);
        if (rc == SR_OK && count_versions(o->argv[i], SR_TDE_HEADER_REGION, 0, h.page_size, h.page_size, &vc))
            rc = sr_err_set_errno(SR_ERR_IO, errno, "%s: cannot read its pages", o->argv[i]);
        if (o->json && i) printf(", ");
        if (rc != SR_OK) {
            int st = fail(o->argv[i], rc);
            if (o->json) json_error(o->argv[i], st);
            status = worse(status, st);
        } else if (o->json) {
            status_json(o->argv[i], &h, slot, kp != NULL, &vc);
        } else {
            print_header(o->argv[i], &h, slot);
            printf("  header MAC   %s\n", kp ? "verified" : "not checked (no key given: pass --keyfile or --kms to verify it)");
            print_page_histogram(&vc);
        }
    }
    if (o->json) printf("]}\n");
    sr_keyprov_free(kp);
    return status;
}

/* ---- verify ------------------------------------------------------------------------- */

/* ---- progress ------------------------------------------------------------------------ *
 * On stderr, so stdout stays the result (and --json stays parseable): on a
 * terminal a bar with rate and ETA redrawn a few times a second; otherwise a
 * line every few seconds (STRONGROOM_PROGRESS_MS, default 5000); nothing
 * with --quiet. */
typedef struct progress {
    const char *what, *path;
    int off, tty;
    uint64_t start_ns, last_ns, every_ns, total, unit_bytes;
} progress_t;

static void progress_start(progress_t *p, const options_t *o, const char *what, const char *path, uint64_t unit_bytes)
{
    const char *every = getenv("STRONGROOM_PROGRESS_MS");
    int64_t ms = 0;
    *p = (progress_t){.what = what, .path = path, .off = o->quiet, .tty = isatty(STDERR_FILENO),
                      .start_ns = sr_time_mono_ns(), .unit_bytes = unit_bytes};
    p->every_ns = p->tty ? 200000000ull
                         : (every && sr_parse_int64(every, &ms) == SR_OK && ms > 0 ? (uint64_t)ms : 5000) * 1000000ull;
    p->last_ns = p->start_ns;
}

static void progress_show(progress_t *p, uint64_t done, uint64_t total, int final)
{
    uint64_t now = sr_time_mono_ns();
    if (p->off || total == 0 || (!final && now - p->last_ns < p->every_ns)) return;
    if (final && !p->tty && now - p->start_ns < p->every_ns) return; /* short work: no line at all */
    p->last_ns = now;
    double secs = (double)(now - p->start_ns) / 1e9, frac = (double)done / (double)total;
    double rate = secs > 0 ? (double)done * (double)p->unit_bytes / secs / 1e6 : 0;
    double eta = frac > 0 ? secs / frac - secs : 0;
    if (p->tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : ' ';
        bar[30] = '\0';
        fprintf(stderr, "\r%s %s [%s] %3.0f%%  %.1f MB/s  ETA %.0f s ", p->what, p->path, bar, frac * 100, rate, eta);
        if (final) fputc('\n', stderr);
    } else {
        fprintf(stderr, "tdectl: %s %s: %.0f%% (%llu of %llu pages, %.1f MB/s, ETA %.0f s)\n", p->what, p->path,
                frac * 100, (unsigned long long)done, (unsigned long long)total, rate, eta);
    }
}

/* SQLite's backup API from `in` to `out` in steps of 1,024 pages, with
 * progress; SQLITE_DONE once all are copied, else the failing step's code.
 * *pages: the source's page count. Inside a read transaction on `in` the
 * copy is one snapshot. */
static int backup_steps(const options_t *o, sqlite3 *in, sqlite3 *out, const char *what, const char *path,
                        uint32_t page_size, int *pages)
{
    sqlite3_backup *b = sqlite3_backup_init(out, "main", in, "main");
    progress_t pr;
    progress_start(&pr, o, what, path, page_size);
    int step = b ? SQLITE_OK : sqlite3_errcode(out);
    while (b && (step == SQLITE_OK || step == SQLITE_BUSY || step == SQLITE_LOCKED)) {
        if (step != SQLITE_OK) sqlite3_sleep(20);
        step = sqlite3_backup_step(b, 1024);
        int total = sqlite3_backup_pagecount(b);
        progress_show(&pr, (uint64_t)(total - sqlite3_backup_remaining(b)), (uint64_t)total, step == SQLITE_DONE);
    }
    *pages = b ? sqlite3_backup_pagecount(b) : 0;
    int fin = b ? sqlite3_backup_finish(b) : step;
    return step == SQLITE_DONE && fin != SQLITE_OK ? fin : step;
}

#define VERIFY_BAD_LISTED 1000

/* What verify found in one database. */
typedef struct verify_result {
    int status;                 /* SR_EXIT_* */
    uint64_t pages;             /* pages read */
    sr_tde_version_count_t authentic;  /* pages that authenticated, per key version */
    uint64_t bad;               /* pages that did not */
    uint64_t bad_page[VERIFY_BAD_LISTED];
    char error[1024];           /* why it could not be checked, or the first failure */
    int integrity_ran, integrity_ok;
    char integrity[1024];       /* integrity_check's first complaints */
} verify_result_t;

static void verify_note(verify_result_t *r, const char *fmt, ...) SR_PRINTF(2, 3);
static void verify_note(verify_result_t *r, const char *fmt, ...)
{
    if (r->error[0]) return; /* the first one says most */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
}

/* Every page of the file, authenticated with the tablespace's keys; every
 * bad page is counted (the first VERIFY_BAD_LISTED listed by number). */
/* SQLite never writes the page holding the byte at 1 GiB (its lock-byte
 * page): in a larger database it is a hole of zeros, not a damaged page. */
static int lock_byte_hole(uint64_t pgno, const uint8_t *page, uint32_t ps)
{
    return pgno == (uint64_t)0x40000000 / ps + 1 && sr_bytes_all_zero(page, ps);
}

static void verify_pages(const char *path, sr_keyprov_t *kp, const options_t *o, verify_result_t *r)
{
    sr_tde_ts_t *ts = NULL;
    sr_tde_pagectx_t *pc = NULL;
    sr_err_t rc = sr_tde_ts_open(path, kp, NULL, &ts);
    if (rc == SR_OK) rc = sr_tde_pagectx_new(sr_tde_ts_space(ts), &pc);
    if (rc != SR_OK) {
        sr_tde_ts_release(ts);
        r->status = fail(path, rc);
        if (rc == SR_ERR_WRONG_KEY || rc == SR_ERR_TDE_NO_HEADER) r->status = rc == SR_ERR_TDE_NO_HEADER ? SR_EXIT_FAILED : SR_EXIT_KEY;
        verify_note(r, "%s", sr_err_detail());
        return;
    }
    uint32_t ps = sr_tde_ts_page_size(ts);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *page = malloc(ps);
    uint64_t pgno = 1;
    ssize_t got = 0;
    struct stat st;
    uint64_t total = fd >= 0 && fstat(fd, &st) == 0 && st.st_size > SR_TDE_HEADER_REGION
                         ? (uint64_t)(st.st_size - SR_TDE_HEADER_REGION + ps - 1) / ps
                         : 0;
    progress_t pr;
    progress_start(&pr, o, "verify", path, ps);
    if (fd < 0 || !page) {
        r->status = SR_EXIT_CANNOT;
        verify_note(r, "cannot read %s: %s", path, strerror(errno));
    }
    while (fd >= 0 && page && (got = pread(fd, page, ps, SR_TDE_HEADER_REGION + (off_t)(pgno - 1) * ps)) > 0) {
        const char *why = NULL;
        char detail[600];
        uint32_t version = got == (ssize_t)ps ? sr_tde_page_key_version(page, ps) : 0; /* decrypting wipes it */
        if (got != (ssize_t)ps) {
            snprintf(detail, sizeof detail, "page %llu: cut short at %zd of %u bytes (truncated file)",
                     (unsigned long long)pgno, got, ps);
            why = detail;
        } else if (lock_byte_hole(pgno, page, ps)) {
            /* not SQLite's: nothing to authenticate */
        } else if (sr_tde_page_decrypt(pc, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = pgno}, page, ps) != SR_OK) {
            snprintf(detail, sizeof detail, "%s", sr_err_detail());
            why = detail;
        } else {
            sr_tde_count_version(&r->authentic, version);
        }
        if (why) {
            if (r->bad < VERIFY_BAD_LISTED) r->bad_page[r->bad] = pgno;
            if (r->bad++ < 10) fprintf(stderr, "tdectl: %s: %s\n", path, why);
            verify_note(r, "%s", why);
        }
        pgno++;
        if ((pgno & 255) == 0) progress_show(&pr, pgno - 1, total, 0);
        if (got != (ssize_t)ps) break;
    }
    progress_show(&pr, pgno - 1, total, 1);
    r->pages = pgno - 1;
    if (r->bad) r->status = SR_EXIT_FAILED;
    free(page);
    if (fd >= 0) close(fd);
    sr_tde_pagectx_free(pc);
    sr_tde_ts_release(ts);
}

/* SQLite's PRAGMA integrity_check through strongroom (the WAL included). */
static int integrity_check(const char *path, const char *keyfile, verify_result_t *r)
{
    char uri[16384];
    if (!uri_for(uri, sizeof uri, path, keyfile, NULL)) return SR_EXIT_CANNOT;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, "strongroom") != SQLITE_OK)
        return sqlite_fail(db, path);
    sqlite3_stmt *st = NULL;
    int status = 0;
    size_t used = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK) return sqlite_fail(db, path);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(st, 0);
        if (!line || strcmp(line, "ok") == 0) continue;
        fprintf(stderr, "tdectl: %s: integrity_check: %s\n", path, line);
        status = SR_EXIT_FAILED;
        if (r && used + 2 < sizeof r->integrity) {
            int n = snprintf(r->integrity + used, sizeof r->integrity - used, "%s%s", used ? "; " : "", line);
            used = n > 0 && used + (size_t)n < sizeof r->integrity ? used + (size_t)n : sizeof r->integrity - 1;
        }
    }
    if (sqlite3_finalize(st) != SQLITE_OK) status = sqlite_fail(db, path), db = NULL;
    sqlite3_close(db);
    if (r) r->integrity_ran = 1, r->integrity_ok = status == 0;
    return status;
}

static void verify_json(const char *path, const verify_result_t *r)
{
    printf("{\"path\": ");
    sr_json_string(stdout, path);
    printf(", \"result\": \"%s\", \"exit_status\": %d, \"pages\": %llu, \"pages_authenticated\": %llu, "
           "\"pages_per_key_version\": ", r->status == 0 ? "ok" : r->status == SR_EXIT_FAILED ? "failed" : "error",
           r->status, (unsigned long long)r->pages, (unsigned long long)r->authentic.pages);
    json_versions(&r->authentic);
    printf(", \"bad_pages\": %llu, \"bad_page_numbers\": [", (unsigned long long)r->bad);
    for (uint64_t i = 0; i < r->bad && i < VERIFY_BAD_LISTED; i++)
        printf("%s%llu", i ? ", " : "", (unsigned long long)r->bad_page[i]);
    printf("], \"integrity_check\": ");
    if (!r->integrity_ran) printf("null");
    else if (r->integrity_ok) printf("\"ok\"");
    else sr_json_string(stdout, r->integrity[0] ? r->integrity : "failed");
    printf(", \"error\": ");
    if (r->error[0]) sr_json_string(stdout, r->error);
    else printf("null");
    printf("}");
}

static int cmd_verify(options_t *o)
{
    if (o->argc < 1) return usage();
    sr_keyprov_t *kp = NULL;
    if (open_provider(o, &kp) != SR_OK) return key_fail("verify");
    int status = 0;
    static verify_result_t r;
    if (o->json) printf("{\"databases\": [");
    for (int i = 0; i < o->argc; i++) {
        memset(&r, 0, sizeof r);
        verify_pages(o->argv[i], kp, o, &r);
        if (!r.status) r.status = integrity_check(o->argv[i], o->keyfile, &r);
        if (o->json) printf("%s", i ? ", " : ""), verify_json(o->argv[i], &r);
        else if (!r.status)
            printf("%s: ok (%llu pages authenticated, integrity_check ok)\n", o->argv[i], (unsigned long long)r.pages);
        else if (r.status >= SR_EXIT_CANNOT)
            printf("%s: NOT CHECKED (%s)\n", o->argv[i], r.error[0] ? r.error : "see above");
        else
            printf("%s: FAILED (%llu of %llu pages authenticated%s)\n", o->argv[i],
                   (unsigned long long)r.authentic.pages, (unsigned long long)r.pages,
                   r.integrity_ran && !r.integrity_ok ? ", integrity_check failed" : "");
        audited("tablespace.verify", o->argv[i], !r.status, r.status ? "verification failed" : "every page authenticated");
        status = worse(status, r.status);
    }
    if (o->json) printf("]}\n");
    sr_keyprov_free(kp);
    return status;
}

/* ---- encrypt / decrypt ------------------------------------------------------------------ */

/* A destination that exists, or is a symbolic link (dangling too: SQLite would create the file it points to), is
 * refused. */
static int refuse_existing(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        fprintf(stderr, "tdectl: %s exists; refusing to overwrite it\n", path);
        return 1;
    }
    return 0;
}

static void remove_database(const char *path)
{
    char side[8192];
    unlink(path);
    const char *suffix[] = {"-journal", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) snprintf(side, sizeof side, "%s%s", path, suffix[i]), unlink(side);
}

/* The backup checked like any database, before it is called one: every page
 * authenticated under the master key, then integrity_check. */
static int validate(const options_t *o, sr_keyprov_t *kp, const char *path, verify_result_t *r)
{
    memset(r, 0, sizeof *r);
    verify_pages(path, kp, o, r);
    if (!r->status) r->status = integrity_check(path, o->keyfile, r);
    return r->status;
}

/* One pass: VACUUM INTO dst_uri from src_uri. For a plaintext source
 * (reserve: 32) the source is read through strongroom with plaintext=1 (so
 * even its temp files are encrypted) and 32 reserved bytes per page are
 * asked for (VACUUM INTO gives the output the larger of the source's reserve
 * and the one asked for: room for each page's trailer). A consistent
 * snapshot of the source; no plaintext reaches the disk but the source. */
/* VACUUM INTO says nothing as it goes: its progress is the output's size
 * against the source's (an estimate: the copy is compacted). */
typedef struct vacuum_progress {
    progress_t pr;
    const char *dst;
    uint64_t expected;
} vacuum_progress_t;

static int vacuum_tick(void *arg)
{
    vacuum_progress_t *v = arg;
    struct stat st;
    if (stat(v->dst, &st) == 0) {
        uint64_t done = (uint64_t)st.st_size / 4096, total = v->expected / 4096 + 1;
        progress_show(&v->pr, done < total ? done : total, total, 0);
    }
    return 0;
}

static int vacuum_into(const options_t *o, sqlite3 *in, const char *src, const char *dst_uri, const char *dst,
                       int reserve)
{
    uint32_t page_size = o->page_size;
    struct stat src_st;
    vacuum_progress_t vp = {.dst = dst, .expected = stat(src, &src_st) == 0 ? (uint64_t)src_st.st_size : 0};
    progress_start(&vp.pr, o, o->in_place || o->cipher ? "rebuild" : "encrypt", src, 4096);
    sqlite3_progress_handler(in, 20000, vacuum_tick, &vp);
    sqlite3_stmt *st = NULL;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA page_size=%u", page_size);
    if ((reserve && sqlite3_file_control(in, "main", SQLITE_FCNTL_RESERVE_BYTES, &reserve) != SQLITE_OK) ||
        (page_size && exec(in, sql) != SQLITE_OK) || sqlite3_prepare_v2(in, "VACUUM INTO ?1", -1, &st, NULL) ||
        sqlite3_bind_text(st, 1, dst_uri, -1, SQLITE_STATIC) != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE) {
        sqlite3_finalize(st);
        int status = sqlite_fail(in, dst);
        remove_database(dst);
        return status;
    }
    sqlite3_finalize(st);
    sqlite3_progress_handler(in, 0, NULL, NULL);
    progress_show(&vp.pr, vp.expected / 4096 + 1, vp.expected / 4096 + 1, 1);
    return 0;
}

static void plaintext_uri(char *out, size_t cap, const char *path)
{
    char e[4096 * 3 + 1];
    uri_escape(e, sizeof e, path);
    snprintf(out, cap, "file:%s?vfs=strongroom&plaintext=1", e);
}

/* ---- in place: rebuilt beside the original, swapped when proven ------------------------ */

/* How many other processes have path open (Linux /proc; as root all of
 * them, otherwise those of this user), and one of their pids. */
static int other_openers(const char *path, long *pid_out)
{
    struct stat want;
    if (stat(path, &want) != 0) return 0;
    DIR *proc = opendir("/proc");
    int n = 0;
    for (struct dirent *p; proc && (p = readdir(proc));) {
        long pid = strtol(p->d_name, NULL, 10);
        if (pid <= 0 || pid == (long)getpid()) continue;
        char dir[64];
        snprintf(dir, sizeof dir, "/proc/%ld/fd", pid);
        DIR *fds = opendir(dir);
        int found = 0;
        for (struct dirent *f; fds && !found && (f = readdir(fds));) {
            char link[320];
            struct stat st;
            snprintf(link, sizeof link, "%s/%s", dir, f->d_name);
            if (f->d_name[0] != '.' && stat(link, &st) == 0 && st.st_dev == want.st_dev && st.st_ino == want.st_ino)
                found = 1;
        }
        if (fds) closedir(fds);
        if (found) n++, *pid_out = pid;
    }
    if (proc) closedir(proc);
    return n;
}

static int refuse_if_open(const char *path)
{
    long pid = 0;
    int n = other_openers(path, &pid);
    if (!n) return 0;
    fprintf(stderr, "tdectl: %s is open in %d other process(es) (pid %ld, ...): a conversion in place needs it closed "
            "everywhere; stop them, or make a copy (tdectl encrypt/backup) while they run\n", path, n, pid);
    return SR_EXIT_BUSY;
}

/* Makes path and its directory entry durable. */
static int sync_file_and_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int ok = fd >= 0 && fsync(fd) == 0, err = errno;
    if (fd >= 0) close(fd);
    sr_err_t rc = ok ? sr_fsync_parent_dir(path) : sr_err_set_errno(sr_err_from_errno(err), err, "cannot sync %s", path);
    return rc == SR_OK ? 0 : fail(path, rc);
}

/* The rebuilt file takes the original's owner, group and mode, so that what
 * used the database still can (tdectl's umask would make it 0600, its
 * owner root's when root runs it). */
static int keep_owner_and_mode(const char *db, const char *rebuilt)
{
    struct stat st;
    if (stat(db, &st) != 0) return fail(db, sr_err_set_errno(SR_ERR_IO, errno, "cannot stat %s", db));
    if ((st.st_uid != geteuid() || st.st_gid != getegid()) && chown(rebuilt, st.st_uid, st.st_gid) != 0)
        return fail(db, sr_err_set_errno(SR_ERR_IO, errno, "cannot give the rebuilt file the owner of %s (uid %u, gid "
                                         "%u): run tdectl as that user or as root", db, (unsigned)st.st_uid,
                                         (unsigned)st.st_gid));
    if (chmod(rebuilt, st.st_mode & 07777) != 0)
        return fail(db, sr_err_set_errno(SR_ERR_IO, errno, "cannot give the rebuilt file the mode of %s", db));
    return 0;
}

/* The file a conversion in place must replace: a symbolic link resolved (the
 * rename would replace the link and leave its target as it was), a file with
 * other hard links refused (they would keep the old file). 0, or the exit
 * status; the resolved path in out. */
static int in_place_target(const char *path, char out[PATH_MAX])
{
    struct stat st;
    if (!realpath(path, out) || stat(out, &st) != 0)
        return fail(path, sr_err_set_errno(SR_ERR_IO, errno, "cannot open %s", path));
    if (st.st_nlink > 1)
        return fail(path, sr_err_set(SR_ERR_STATE, "%s has %lu hard links: the others would keep the old file; "
                                     "remove them first, or make a copy (tdectl encrypt SRC DEST)", path,
                                     (unsigned long)st.st_nlink));
    return 0;
}

/* Rebuilds db through VACUUM INTO from src_uri into db.strongroom-rebuild,
 * verifies the result, and renames it over db, holding the source's lock
 * from the snapshot to the swap so no other process commits in between. A
 * re-run after SIGKILL starts again (the old partial file is removed); the
 * original stays untouched until the rename, which is atomic. */
static int rebuild_in_place(const options_t *o, const char *db, const char *src_uri, int reserve, const char *what,
                            const char *event)
{
    int status = refuse_if_open(db);
    if (status) return status;
    char tmp[8192], duri[16384];
    snprintf(tmp, sizeof tmp, "%s.strongroom-rebuild", db);
    if (access(tmp, F_OK) == 0) {
        fprintf(stderr, "tdectl: %s: an earlier run was interrupted; starting again\n", db);
        remove_database(tmp);
    }
    if (!uri_for(duri, sizeof duri, tmp, o->keyfile, o)) return SR_EXIT_CANNOT;
    sqlite3 *in = NULL;
    /* one file, and our lock on it from the snapshot to the swap */
    if (sqlite3_open_v2(src_uri, &in, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, "strongroom") != SQLITE_OK ||
        sqlite3_busy_timeout(in, 10000) != SQLITE_OK)
        return sqlite_fail(in, db);
    int was_wal = 0;
    sqlite3_stmt *mode = NULL;
    if (sqlite3_prepare_v2(in, "PRAGMA journal_mode", -1, &mode, NULL) == SQLITE_OK && sqlite3_step(mode) == SQLITE_ROW)
        was_wal = sqlite3_column_text(mode, 0) && !strcmp((const char *)sqlite3_column_text(mode, 0), "wal");
    sqlite3_finalize(mode);
    if (exec(in, "PRAGMA journal_mode=DELETE") != SQLITE_OK ||
        exec(in, "PRAGMA locking_mode=EXCLUSIVE") != SQLITE_OK ||
        exec(in, "SELECT count(*) FROM sqlite_schema") != SQLITE_OK)
        return sqlite_fail(in, db);
    status = vacuum_into(o, in, db, duri, tmp, reserve);
    sr_keyprov_t *kp = NULL;
    static verify_result_t r;
    if (!status && open_provider(o, &kp) != SR_OK) status = key_fail(what);
    if (!status) status = validate(o, kp, tmp, &r);
    sr_keyprov_free(kp);
    if (!status) status = refuse_if_open(db); /* someone opened it meanwhile (they could not write) */
    if (!status) status = keep_owner_and_mode(db, tmp);
    if (!status) status = recorded_first(event, db, what);
    if (!status && rename(tmp, db) != 0)
        status = action_failed(event, db, sr_err_set_errno(SR_ERR_IO, errno, "cannot put the rebuilt file in place"));
    if (!status) status = sync_file_and_dir(db);
    if (in) sqlite3_close(in);
    if (!status && was_wal) { /* as it was: WAL is a property of the file */
        sqlite3 *out = NULL;
        if (!uri_for(duri, sizeof duri, db, o->keyfile, NULL) ||
            sqlite3_open_v2(duri, &out, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, "strongroom") != SQLITE_OK ||
            exec(out, "PRAGMA journal_mode=WAL") != SQLITE_OK)
            fprintf(stderr, "tdectl: %s: done, but could not set WAL mode again: %s\n", db, out ? sqlite3_errmsg(out) : "");
        sqlite3_close(out);
    }
    if (status) {
        remove_database(tmp);
        fprintf(stderr, "tdectl: %s: %s not done; the original is untouched\n", db, what);
    }
    return status;
}

static int cmd_encrypt(options_t *o)
{
    if (o->argc != (o->in_place ? 1 : 2)) return usage();
    const char *src = o->argv[0], *dst = o->in_place ? NULL : o->argv[1];
    if (!o->keyfile) return (void)open_provider(o, NULL), key_fail("encrypt");
    char suri[16384], duri[16384], real[PATH_MAX];
    int status = 0;
    if (o->in_place) {
        sr_tde_header_t h;
        if (sr_tde_file_header_read(src, NULL, &h, NULL) == SR_OK) /* a re-run after the swap: nothing left to do */
            return printf("%s: already encrypted (%s)\n", src, sr_tde_cipher_name(h.cipher)), 0;
        if ((status = in_place_target(src, real)) != 0) return status;
        src = real;
        plaintext_uri(suri, sizeof suri, src);
        status = rebuild_in_place(o, src, suri, SR_TDE_PAGE_TRAILER, "encryption in place", "tablespace.encrypt");
        dst = src;
    } else {
        sqlite3 *in = NULL;
        plaintext_uri(suri, sizeof suri, src);
        if (refuse_existing(dst)) return SR_EXIT_CANNOT;
        if (!uri_for(duri, sizeof duri, dst, o->keyfile, o)) return SR_EXIT_CANNOT;
        strncat(suri, "&mode=ro", sizeof suri - strlen(suri) - 1);
        if (sqlite3_open_v2(suri, &in, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, "strongroom") != SQLITE_OK)
            return sqlite_fail(in, src);
        status = vacuum_into(o, in, src, duri, dst, SR_TDE_PAGE_TRAILER);
        if (!status) sqlite3_close(in);
        if (!status) status = integrity_check(dst, o->keyfile, NULL);
        if (!status && (status = recorded_first("tablespace.encrypt", dst, src)) != 0) remove_database(dst);
    }
    if (status) return status;
    sr_tde_header_t h;
    if (sr_tde_file_header_read(dst, NULL, &h, NULL) != SR_OK) return fail(dst, sr_err_last());
    if (o->in_place)
        printf("%s: encrypted in place (%s, %u-byte pages; verified before the swap). The plaintext blocks the old "
               "file used are freed but not overwritten by the file system\n", src, sr_tde_cipher_name(h.cipher),
               h.page_size);
    else
        printf("%s: encrypted copy of %s written (%s, %u-byte pages); check it, then remove the plaintext original\n",
               dst, src, sr_tde_cipher_name(h.cipher), h.page_size);
    return 0;
}

static int cmd_decrypt(options_t *o)
{
    if (o->argc != 2) return usage();
    const char *src = o->argv[0], *dst = o->argv[1];
    if (!o->keyfile) return (void)open_provider(o, NULL), key_fail("decrypt");
    if (refuse_existing(dst)) return SR_EXIT_CANNOT;
    char uri[16384];
    if (!uri_for(uri, sizeof uri, src, o->keyfile, NULL)) return SR_EXIT_CANNOT;
    sqlite3 *in = NULL, *out = NULL;
    /* one snapshot, and the key proven by reading the schema, before anything is recorded or written */
    if (sqlite3_open_v2(uri, &in, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, "strongroom") != SQLITE_OK ||
        exec(in, "BEGIN") != SQLITE_OK || exec(in, "SELECT count(*) FROM sqlite_schema") != SQLITE_OK)
        return sqlite_fail(in, src);
    int status = recorded_first("tablespace.decrypt", src, dst); /* before a byte of plaintext is written */
    if (status) return sqlite3_close(in), status;
    sr_tde_header_t h;
    uint32_t ps = sr_tde_file_header_read(src, NULL, &h, NULL) == SR_OK ? h.page_size : 4096;
    int pages = 0, flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW; /* a link made since */
    int rc = sqlite3_open_v2(dst, &out, flags, NULL);
    if (rc == SQLITE_OK && backup_steps(o, in, out, "decrypt", src, ps, &pages) != SQLITE_DONE)
        rc = sqlite3_errcode(out) ? sqlite3_errcode(out) : SQLITE_ERROR;
    (void)exec(in, "COMMIT");
    sqlite3_close(in);
    if (rc != SQLITE_OK) {
        audited("tablespace.decrypt", src, 0, out ? sqlite3_errmsg(out) : sqlite3_errstr(rc));
        return unlink(dst), sqlite_fail(out, dst);
    }
    sqlite3_close(out);
    printf("%s: plaintext copy of %s written\n", dst, src);
    return 0;
}

/* ---- backup / restore ------------------------------------------------------------------ */

/* SQLite's backup API between two strongroom connections, in steps of 1,024
 * pages (progress), inside one read transaction on the source: the copy is
 * the database as of the moment the backup began, while writers go on (in
 * WAL mode; a rollback journal makes them wait). Pages travel decrypted
 * only in memory; DEST is a tablespace of its own (its own data key, wrapped
 * by the same master key), and its journal goes through strongroom too. */
static int copy_snapshot(const options_t *o, const char *src, const char *dst, uint32_t page_size, int *pages)
{
    sr_tde_header_t h;
    sr_err_t rc = sr_tde_file_header_read(src, NULL, &h, NULL);
    if (rc != SR_OK) return fail(src, rc);
    options_t same = *o;
    same.cipher = h.cipher; /* the backup keeps the source's cipher */
    char suri[16384], duri[16384];
    if (!uri_for(suri, sizeof suri, src, o->keyfile, NULL) || !uri_for(duri, sizeof duri, dst, o->keyfile, &same))
        return SR_EXIT_CANNOT;
    sqlite3 *in = NULL, *out = NULL;
    if (sqlite3_open_v2(suri, &in, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, "strongroom") != SQLITE_OK ||
        sqlite3_busy_timeout(in, 10000) != SQLITE_OK || exec(in, "BEGIN") != SQLITE_OK ||
        exec(in, "SELECT count(*) FROM sqlite_schema") != SQLITE_OK) /* the snapshot starts here */
        return sqlite_fail(in, src);
    /* DEST is new: until it is whole it is nothing (a failure removes it), so
     * no journal and no sync per step; one fsync of the finished file */
    if (sqlite3_open_v2(duri, &out, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, "strongroom") !=
            SQLITE_OK ||
        exec(out, "PRAGMA synchronous=OFF; PRAGMA journal_mode=OFF") != SQLITE_OK) {
        sqlite3_close(in);
        return sqlite_fail(out, dst);
    }
    int step = backup_steps(o, in, out, "backup", src, page_size, pages);
    (void)exec(in, "COMMIT");
    sqlite3_close(in);
    if (step != SQLITE_DONE) return sqlite_fail(out, dst);
    /* one self-contained file: a WAL-mode source would make the copy WAL too */
    if (exec(out, "PRAGMA journal_mode=DELETE") != SQLITE_OK || sqlite3_close(out) != SQLITE_OK)
        return sqlite_fail(out, dst);
    return sync_file_and_dir(dst);
}

static void backup_json(const char *src, const char *dst, int pages, uint32_t ps, double secs, const verify_result_t *r)
{
    printf("{\"source\": ");
    sr_json_string(stdout, src);
    printf(", \"backup\": ");
    sr_json_string(stdout, dst);
    printf(", \"pages\": %d, \"bytes\": %llu, \"seconds\": %.3f, \"verified\": %s, \"verify\": ", pages,
           (unsigned long long)pages * ps, secs, r && !r->status ? "true" : "false");
    if (r) verify_json(dst, r);
    else printf("null");
    printf("}\n");
}

static int cmd_backup(options_t *o)
{
    if (o->argc != 2) return usage();
    const char *src = o->argv[0], *dst = o->argv[1];
    sr_keyprov_t *kp = NULL;
    if (open_provider(o, &kp) != SR_OK) return key_fail("backup");
    if (refuse_existing(dst)) return sr_keyprov_free(kp), SR_EXIT_CANNOT;
    sr_tde_header_t h;
    sr_err_t rc = sr_tde_file_header_read(src, kp, &h, NULL);
    if (rc != SR_OK) return sr_keyprov_free(kp), fail(src, rc);
    /* written as DEST.strongroom-partial, named DEST only once whole and
     * verified: a killed run never leaves something that looks like a backup,
     * and a re-run starts again */
    char partial[8192];
    snprintf(partial, sizeof partial, "%s.strongroom-partial", dst);
    if (access(partial, F_OK) == 0) {
        fprintf(stderr, "tdectl: %s: an earlier backup was interrupted; starting again\n", partial);
        remove_database(partial);
    }
    uint64_t t0 = sr_time_mono_ns();
    int pages = 0, status = copy_snapshot(o, src, partial, h.page_size, &pages);
    double secs = (double)(sr_time_mono_ns() - t0) / 1e9;
    static verify_result_t r;
    if (!status && !o->no_verify) status = validate(o, kp, partial, &r);
    sr_keyprov_free(kp);
    int refused = !status && (status = recorded_first("tablespace.backup", src, dst)) != 0;
    if (!status && link(partial, dst) != 0)
        status = fail(dst, sr_err_set_errno(SR_ERR_IO, errno, "cannot name the backup %s", dst));
    if (!status) status = sync_file_and_dir(dst);
    remove_database(partial);
    if (status && !refused) audited("tablespace.backup", src, 0, "backup failed");
    if (status) {
        fprintf(stderr, "tdectl: backup of %s failed; the partial copy %s removed\n", src, partial);
        return status;
    }
    if (o->json) backup_json(src, dst, pages, h.page_size, secs, o->no_verify ? NULL : &r);
    else if (o->no_verify)
        printf("%s: encrypted backup of %s written (%d pages, %.1f MB in %.2f s; NOT verified: run tdectl verify on "
               "it)\n", dst, src, pages, (double)pages * h.page_size / 1e6, secs);
    else
        printf("%s: encrypted backup of %s written and verified (%d pages, %.1f MB in %.2f s; every page "
               "authenticated, integrity_check ok)\n", dst, src, pages, (double)pages * h.page_size / 1e6, secs);
    return 0;
}

/* Copies BACKUP's bytes to DB only once BACKUP verifies, through a
 * temporary file and link(): DB appears whole or not at all, and an
 * existing DB is never replaced. */
static int cmd_restore(options_t *o)
{
    if (o->argc != 2) return usage();
    const char *backup = o->argv[0], *db = o->argv[1];
    sr_keyprov_t *kp = NULL;
    if (open_provider(o, &kp) != SR_OK) return key_fail("restore");
    if (refuse_existing(db)) return sr_keyprov_free(kp), SR_EXIT_CANNOT;
    static verify_result_t r;
    int status = validate(o, kp, backup, &r);
    sr_keyprov_free(kp);
    if (status) return fprintf(stderr, "tdectl: %s does not verify: not restored\n", backup), status;
    char tmp[8192];
    snprintf(tmp, sizeof tmp, "%s.restoring-%ld", db, (long)getpid());
    int in = open(backup, O_RDONLY | O_CLOEXEC), out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    sr_err_t rc = in < 0 || out < 0 ? sr_err_set_errno(SR_ERR_IO, errno, "cannot copy %s to %s", backup, tmp) : SR_OK;
    uint8_t buf[1 << 16];
    ssize_t n = 0;
    while (rc == SR_OK && (n = read(in, buf, sizeof buf)) > 0) rc = sr_fd_write_all(out, buf, (size_t)n);
    if (rc == SR_OK && n < 0) rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot read %s", backup);
    if (rc == SR_OK && fsync(out) != 0) rc = sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot sync %s", tmp);
    int refused = rc == SR_OK ? recorded_first("tablespace.restore", db, backup) : 0;
    if (rc == SR_OK && !refused && link(tmp, db) != 0) rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot create %s", db);
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    unlink(tmp);
    if (refused) return refused;
    if (rc != SR_OK) return action_failed("tablespace.restore", db, rc);
    if ((status = sync_file_and_dir(db)) != 0) /* the new name durable too */
        return audited("tablespace.restore", db, 0, sr_err_detail()), status;
    printf("%s: restored from %s (verified first: %llu pages authenticated, integrity_check ok)\n", db, backup,
           (unsigned long long)r.pages);
    return 0;
}

/* ---- key rotation ------------------------------------------------------------------------ */

/* After a rewrite, the key versions no page carries any more leave the
 * header (so the key-version limit is never reached by rekeying), under the
 * database's write lock; the VFS counts the pages of the database and of
 * the WAL through descriptors SQLite's locks survive. */
static int drop_unused_versions(sqlite3 *db, const char *path, int wal)
{
    if (exec(db, "PRAGMA wal_checkpoint(TRUNCATE)") != SQLITE_OK || exec(db, "BEGIN IMMEDIATE") != SQLITE_OK)
        return sqlite_status(db, path);
    sr_unused_keys_t d = {.wal = wal};
    int rc = sqlite3_file_control(db, "main", SR_FCNTL_DROP_UNUSED_KEYS, &d);
    exec(db, "COMMIT");
    if (rc != SQLITE_OK) return fail(path, sr_err_last());
    if (d.after < d.before) {
        printf("%s: %u key version(s) no page uses any more dropped; %u left\n", path, d.before - d.after, d.after);
        audited("key.versions_dropped", path, 1, "key versions no page uses removed from the header");
    }
    return 0;
}

/* The rewrite's wait for the write lock: tried again every half millisecond
 * for up to 30 s. SQLite's own busy handler backs off to 100 ms sleeps, and a
 * writer that commits continuously takes the lock back in every one of them:
 * the rewrite starved (a batch waited 26 s beside a writer of 7,000 rows/s). */
static int rewrite_busy(void *arg, int tries)
{
    (void)arg;
    if (tries >= 60000) return 0;
    usleep(500);
    return 1;
}

/* One batch of the online rewrite under the lock it needs; SQLITE_BUSY
 * (a checkpoint ran) is tried again after a pause. */
static int rewrite_step(sqlite3 *db, int wal, sr_rewrite_batch_t *b)
{
    for (int tries = 0;; tries++) {
        int rc = exec(db, wal ? "BEGIN IMMEDIATE" : "BEGIN EXCLUSIVE");
        if (rc == SQLITE_OK) rc = sqlite3_file_control(db, "main", SR_FCNTL_REWRITE_PAGES, b);
        int end = exec(db, rc == SQLITE_OK ? "COMMIT" : "ROLLBACK");
        if (rc == SQLITE_OK) rc = end;
        if (rc != SQLITE_BUSY || tries == 3000) return rc; /* a minute of checkpoints in the way */
        usleep(20000);
    }
}

/* rekey --rewrite, online: every page not under the active key version is
 * re-encrypted in place, a batch at a time, each its own short write
 * transaction (the exclusive lock in rollback-journal mode, the WAL write
 * lock in WAL mode), with a pause between batches so other writers get in.
 * The header says REKEYING meanwhile: a re-run after a crash resumes (no new
 * version) and first finishes the journal of a batch cut short. Then the
 * versions no page carries leave the header. */
static int rewrite_online(options_t *o, const sr_tde_header_t *h)
{
    const char *path = o->argv[0];
    char uri[16384];
    sqlite3 *db = NULL;
    if (!uri_for(uri, sizeof uri, path, o->keyfile, NULL)) return SR_EXIT_CANNOT;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, "strongroom") != SQLITE_OK ||
        sqlite3_busy_timeout(db, 30000) != SQLITE_OK)
        return sqlite_fail(db, path);
    sqlite3_stmt *st = NULL;
    int wal = sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
              sqlite3_step(st) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    /* In WAL mode the write lock is a plain mutex: try for it often. With a rollback journal each try takes the
     * shared lock for an instant, which holds off a writer waiting for its exclusive lock: SQLite's backoff */
    if (wal && sqlite3_busy_handler(db, rewrite_busy, NULL) != SQLITE_OK) return sqlite_fail(db, path);
    sr_rewrite_batch_t b = {.wal = wal, .repair = 1};
    int rc = rewrite_step(db, wal, &b); /* a batch a crash cut short */
    if (rc == SQLITE_OK && b.rewritten) printf("%s: finished a rewrite batch cut short (%d pages)\n", path, b.rewritten);
    int per_batch = (int)((1u << 20) / h->page_size); /* 1 MiB: a few milliseconds of lock */
    progress_t pr;
    progress_start(&pr, o, "rewrite", path, h->page_size);
    uint64_t rewritten = 0, longest_ns = 0;
    for (int64_t first = 1; rc == SQLITE_OK;) {
        b = (sr_rewrite_batch_t){.first = first, .count = per_batch, .wal = wal};
        uint64_t t0 = sr_time_mono_ns();
        rc = rewrite_step(db, wal, &b);
        uint64_t took = sr_time_mono_ns() - t0;
        if (took > longest_ns) longest_ns = took;
        if (rc != SQLITE_OK || first + per_batch > b.pages) break;
        rewritten += (uint64_t)b.rewritten, first += per_batch;
        progress_show(&pr, (uint64_t)first - 1, (uint64_t)b.pages, 0);
        /* others' turn: SQLite's busy handler sleeps up to 100 ms between tries, so with a rollback journal
         * (where a waiting writer must find no lock at all) the pause is longer than that */
        uint64_t pause_us = wal ? 10000 : 110000;
        if (b.rewritten) usleep((useconds_t)(took / 1000 > pause_us ? took / 1000 : pause_us));
    }
    if (rc == SQLITE_OK) {
        rewritten += (uint64_t)b.rewritten;
        progress_show(&pr, (uint64_t)b.pages, (uint64_t)b.pages, 1);
        printf("%s: %llu of %lld pages re-encrypted under key version %u online (batches of %d pages, the longest "
               "held the lock %.1f ms)\n", path, (unsigned long long)rewritten, (long long)b.pages, h->active_version,
               per_batch, (double)longest_ns / 1e6);
    }
    /* the file control's own code: it does not set the connection's error (a busy checkpoint lock left it "not an
     * error", and tdectl exited 3 without saying why) */
    if (rc != SQLITE_OK)
        fprintf(stderr, "tdectl: %s: %s%s\n", path, sqlite3_errstr(rc),
                (rc & 0xff) == SQLITE_BUSY ? " (the write lock or a checkpoint stayed busy for a minute): run it again"
                                           : "");
    int status = rc == SQLITE_OK ? drop_unused_versions(db, path, wal) : status_of(rc);
    sqlite3_close(db);
    return status;
}

/* rekey [--rewrite] [--cipher C]: a new data key version (under cipher C,
 * the tablespace's cipher from then on), and with --rewrite or --cipher
 * every page re-encrypted under it online. */
static int cmd_rekey(options_t *o)
{
    if (o->argc != 1) return usage();
    sr_keyprov_t *kp = NULL;
    sr_tde_header_t h;
    if (open_provider(o, &kp) != SR_OK) return key_fail("rekey");
    sr_err_t rc = sr_tde_file_header_read(o->argv[0], kp, &h, NULL);
    int rewrite = o->rewrite || o->cipher;
    int resume = rc == SR_OK && rewrite && h.state == SR_TDE_STATE_REKEYING;
    int switching = rc == SR_OK && o->cipher && h.cipher != o->cipher;
    if (rc == SR_OK && o->cipher && !switching && !resume) {
        printf("%s: already under %s\n", o->argv[0], sr_tde_cipher_name(o->cipher));
        sr_keyprov_free(kp);
        return 0;
    }
    if (resume && !switching) {
        printf("%s: resuming the rewrite to data key version %u\n", o->argv[0], h.active_version);
    } else {
        const char *what = switching ? "new data key version under another cipher" : "new data key version";
        int refused = rc == SR_OK ? recorded_first("key.rekey", o->argv[0], what) : 0;
        if (refused) return sr_keyprov_free(kp), refused;
        if (rc == SR_OK) rc = sr_tde_file_add_key_cipher(o->argv[0], kp, switching ? o->cipher : 0, &h);
        if (rc == SR_OK && rewrite) rc = sr_tde_file_set_state(o->argv[0], kp, SR_TDE_STATE_REKEYING, &h);
        if (rc != SR_OK) return sr_keyprov_free(kp), action_failed("key.rekey", o->argv[0], rc);
        printf("%s: data key version %u (%s) is active for every page written from now on\n", o->argv[0],
               h.active_version, sr_tde_cipher_name(h.cipher));
    }
    int status = rewrite ? rewrite_online(o, &h) : 0;
    if (rewrite && !status && (rc = sr_tde_file_set_state(o->argv[0], kp, SR_TDE_STATE_ENCRYPTED, &h)) != SR_OK)
        status = fail(o->argv[0], rc);
    sr_keyprov_free(kp);
    return status;
}

static int cmd_rotate_master(options_t *o)
{
    if (o->argc < 1) return usage();
    if (!o->keyfile) return (void)open_provider(o, NULL), key_fail("rotate-master");
    uint32_t version = 0;
    sr_err_t rc = SR_OK;
    if (!strcmp(key_kind, "keyfile")) { /* with a KMS, the new master key is made there (kmsctl key rotate) */
        int refused = recorded_first("key.master_rotated", o->keyfile, "new master key version");
        if (refused) return refused;
        if ((rc = sr_keyfile_rotate(o->keyfile, &version)) != SR_OK)
            return action_failed("key.master_rotated", o->keyfile, rc);
        printf("%s: master key version %u added (older versions kept for databases not yet re-wrapped)\n",
               o->keyfile, version);
    }
    sr_keyprov_t *kp = NULL;
    if (open_provider(o, &kp) != SR_OK) return key_fail(o->keyfile);
    int status = 0;
    for (int i = 0; i < o->argc; i++) {
        sr_tde_header_t h;
        int refused = recorded_first("key.rewrap", o->argv[i], "data keys re-wrapped");
        if (refused) {
            status = worse(status, refused);
            continue;
        }
        if ((rc = sr_tde_file_rewrap(o->argv[i], kp, &h)) != SR_OK)
            status = worse(status, action_failed("key.rewrap", o->argv[i], rc));
        else printf("%s: %u data key(s) re-wrapped under %s\n", o->argv[i], h.n_keys, sr_keyprov_description(kp));
    }
    sr_keyprov_free(kp);
    return status;
}

/* ---- main ------------------------------------------------------------------------------------- */

typedef struct command {
    const char *name;
    int (*run)(options_t *o);
    const char *options; /* the option letters that apply to it (k: --keyfile/--kms, c, p, r, j: --json) */
} command_t;

static const command_t commands[] = {
    {"keygen", cmd_keygen, ""},         {"create", cmd_create, "kcp"},   {"status", cmd_status, "kj"},
    {"verify", cmd_verify, "kjq"},        {"encrypt", cmd_encrypt, "kcpiq"}, {"decrypt", cmd_decrypt, "kq"},
    {"rekey", cmd_rekey, "krcq"},         {"rotate-master", cmd_rotate_master, "k"},
    {"backup", cmd_backup, "kjqn"},      {"restore", cmd_restore, "kq"},
};

int main(int argc, char **argv)
{
    if (argc < 2) return usage();
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) return usage_to(stdout, 0);
    if (strcmp(argv[1], "--version") == 0) return puts("tdectl (strongroom)"), 0;
    const command_t *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) cmd = &commands[i];
    if (!cmd) return fprintf(stderr, "tdectl: unknown command '%s'\n", argv[1]), usage();
    options_t o = {.keyfile = getenv("STRONGROOM_KEYFILE")};
    if (!o.keyfile && getenv("STRONGROOM_KMS")) o.keyfile = getenv("STRONGROOM_KMS"), key_kind = "kms";
    static const struct option longopts[] = {{"keyfile", required_argument, NULL, 'k'},
                                             {"kms", required_argument, NULL, 'K'},
                                             {"cipher", required_argument, NULL, 'c'},
                                             {"page-size", required_argument, NULL, 'p'},
                                             {"rewrite", no_argument, NULL, 'r'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"in-place", no_argument, NULL, 'i'},
                                             {"no-verify", no_argument, NULL, 'n'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    int64_t ps = 0;
    optind = 2;
    opterr = 0; /* our message names the command */
    while ((ch = getopt_long(argc, argv, "k:K:c:p:rjqinh", longopts, NULL)) != -1) {
        int letter = ch == 'K' ? 'k' : ch;
        if (ch == 'h') return usage_to(stdout, 0);
        if (ch != '?' && !strchr(cmd->options, letter))
            return fprintf(stderr, "tdectl: %s: option %s does not apply\n", cmd->name,
                           letter == 'k'   ? "--keyfile/--kms"
                           : letter == 'c' ? "--cipher"
                           : letter == 'p' ? "--page-size"
                           : letter == 'j' ? "--json"
                           : letter == 'q' ? "--quiet"
                           : letter == 'i' ? "--in-place"
                           : letter == 'n' ? "--no-verify"
                                           : "--rewrite"),
                   SR_EXIT_USAGE;
        if (ch == 'k') o.keyfile = optarg, key_kind = "keyfile";
        else if (ch == 'K') o.keyfile = optarg, key_kind = "kms";
        else if (ch == 'c' && sr_tde_cipher_parse(optarg, &o.cipher) != SR_OK)
            return fail("--cipher", SR_ERR_INVALID_ARG), SR_EXIT_USAGE; /* a usage error, naming the option */
        else if (ch == 'p' && (sr_parse_int64(optarg, &ps) != SR_OK || !sr_tde_page_size_valid((size_t)ps)))
            return fprintf(stderr, "tdectl: --page-size %s: a power of two in 512..65536\n", optarg), SR_EXIT_USAGE;
        else if (ch == 'r') o.rewrite = 1;
        else if (ch == 'j') o.json = 1;
        else if (ch == 'q') o.quiet = 1;
        else if (ch == 'i') o.in_place = 1;
        else if (ch == 'n') o.no_verify = 1;
        else if (ch == '?')
            return fprintf(stderr, "tdectl: %s: %s: unknown option or missing value\n", cmd->name, argv[optind - 1]),
                   usage();
    }
    o.page_size = (uint32_t)ps;
    o.argc = argc - optind;
    o.argv = argv + optind;
    if (sr_process_harden() != SR_OK) return fail("init", sr_err_last()); /* no core dumps, no ptrace by others */
    sr_log_set_level(SR_LOG_WARN);
    sr_audit_writer_t *audit = NULL; /* $STRONGROOM_AUDIT_LOG: what tdectl does is audited */
    if (sr_audit_open_from_env(&audit) != SR_OK) return fail("audit log", sr_err_last());
    umask(077); /* what tdectl makes (a plaintext copy, a backup, a new tablespace) is its user's alone */
    sqlite3_config(SQLITE_CONFIG_URI, 1);
    if (sr_sqlite_register(NULL, 0) != SQLITE_OK) return fail("cannot register the strongroom VFS", sr_err_last());
    return cmd->run(&o);
}
