/*
 * kmsctl — the KMS administrator's CLI.
 *
 *   kmsctl init --dir DIR [--port N] [--listen ADDR] [--server-name NAME] [--passphrase-file F]
 *   kmsctl [--config FILE] status [--json]
 *   kmsctl [--config FILE] key create NAME [--group G] [--bits N] [--activate] [--json]
 *   kmsctl [--config FILE] key list [--name N] [--group G] [--json]
 *   kmsctl [--config FILE] key show|activate|rotate UID [--json]
 *   kmsctl [--config FILE] key revoke UID [--compromise] [--yes]
 *   kmsctl [--config FILE] key destroy UID [--yes]
 *   kmsctl [--config FILE] key grant UID PRINCIPAL | ungrant UID PRINCIPAL | grants UID [--json]
 *   kmsctl [--config FILE] cert issue NAME --role ROLE [--days N]
 *   kmsctl [--config FILE] cert revoke NAME [--yes]
 *   kmsctl [--config FILE] cert list [--json]
 *   kmsctl [--config FILE] token create [--group G] [--ttl 1h] [--uses 1]
 *   kmsctl [--config FILE] node list [--json] | node show UUID [--json] | node revoke UUID [--yes]
 *   kmsctl [--config FILE] store backup FILE | store restore FILE [--yes]
 *
 * Key operations go to kmsd over KMIP with the admin certificate (so kmsd
 * applies the state machine and audits them); certificates and grants are
 * written to the store directly (kmsctl runs beside kmsd, with its root key).
 * Exit status: 0 ok, 1 the server refused or a check failed, 2 usage,
 * 3 could not run (no server, missing file, wrong key).
 */
#include "access_ctl.h"
#include "audit.h"
#include "db.h"
#include "kms.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


static const sr_config_key_t client_schema[] = {
    {"client", "host", SR_CONFIG_STRING, "127.0.0.1", 0},
    {"client", "port", SR_CONFIG_INT, "5696", 0},
    {"client", "server_name", SR_CONFIG_STRING, "localhost", 0},
    {"client", "ca", SR_CONFIG_PATH, NULL, 1},
    {"client", "cert", SR_CONFIG_PATH, NULL, 1},
    {"client", "key", SR_CONFIG_PATH, NULL, 1},
    {"local", "dir", SR_CONFIG_PATH, NULL, 1},
    {"local", "store", SR_CONFIG_PATH, NULL, 0},
    {"local", "store_url", SR_CONFIG_STRING, NULL, 0},
    {"local", "root_key_file", SR_CONFIG_PATH, NULL, 0},
    {"local", "passphrase_file", SR_CONFIG_PATH, NULL, 0},
};

/* ---- options: each command names the ones it takes ------------------------------------- */

typedef struct opts {
    const char *args[4];
    int n_args;
    const char *dir, *port, *listen, *server_name, *passphrase_file, *store_url, *group, *name, *bits, *role, *days, *ttl, *uses;
    int json, yes, activate, compromise;
} opts_t;

typedef struct option {
    const char *flag;
    size_t offset; /* of a const char * in opts_t, or of an int flag */
    int takes_value;
} option_t;

#define OPT_VALUE(f, field) {f, offsetof(opts_t, field), 1}
#define OPT_FLAG(f, field) {f, offsetof(opts_t, field), 0}

static int parse(const char *tool_cmd, int argc, char **argv, const option_t *allowed, int max_args, opts_t *o)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) {
            if (o->n_args == max_args)
                return fprintf(stderr, "kmsctl: %s: unexpected argument '%s'\n", tool_cmd, argv[i]), -1;
            o->args[o->n_args++] = argv[i];
            continue;
        }
        const option_t *opt = NULL;
        for (int k = 0; allowed[k].flag; k++)
            if (!strcmp(allowed[k].flag, argv[i])) opt = &allowed[k];
        if (!opt) return fprintf(stderr, "kmsctl: %s: option %s does not apply (see --help)\n", tool_cmd, argv[i]), -1;
        if (opt->takes_value) {
            if (i + 1 == argc) return fprintf(stderr, "kmsctl: %s: %s needs a value\n", tool_cmd, argv[i]), -1;
            *(const char **)((char *)o + opt->offset) = argv[++i];
        } else {
            *(int *)((char *)o + opt->offset) = 1;
        }
    }
    return 0;
}

static int fail_with(int status, const char *what)
{
    fprintf(stderr, "kmsctl: %s: %s (%s)\n", what, sr_err_detail(), sr_err_name(sr_err_last()));
    return status;
}

static int status_for(sr_err_t rc) { return rc == SR_ERR_KMIP_RESULT ? SR_EXIT_FAILED : SR_EXIT_CANNOT; }

static int parse_int(const char *flag, const char *text, int lo, int hi, int *out)
{
    int64_t v = 0;
    if (sr_parse_int64(text, &v) != SR_OK || v < lo || v > hi)
        return fprintf(stderr, "kmsctl: %s must be a number from %d to %d, not '%s'\n", flag, lo, hi, text), -1;
    *out = (int)v;
    return 0;
}

/* Destructive commands: --yes, or "yes" typed on a terminal. */
static int confirmed(const opts_t *o, const char *what)
{
    if (o->yes) return 1;
    if (!isatty(0)) {
        fprintf(stderr, "kmsctl: %s: refusing without --yes (not a terminal)\n", what);
        return 0;
    }
    fprintf(stderr, "%s? type yes: ", what);
    char line[16] = "";
    return fgets(line, sizeof line, stdin) && !strcmp(line, "yes\n");
}

static void date_text(int64_t t, char out[SR_TIME_RFC3339_MAX])
{
    if (!t || sr_time_format_rfc3339(t * 1000000, 0, out, SR_TIME_RFC3339_MAX) != SR_OK) snprintf(out, 2, "-");
}

/* ---- configuration and connections ------------------------------------------------------- */

static sr_config_t *cfg;

static int load_config(const char *path)
{
    if (!path) path = getenv("KMSCTL_CONFIG");
    if (!path) path = "kmsctl.conf";
    if (sr_config_load(path, client_schema, sizeof client_schema / sizeof client_schema[0], &cfg) != SR_OK)
        return fail_with(SR_EXIT_CANNOT, "configuration (--config FILE, $KMSCTL_CONFIG or ./kmsctl.conf)");
    return 0;
}

static int connect_kms(sr_kmip_client_t **c)
{
    int64_t port = 0;
    if (sr_config_get_int(cfg, "client", "port", &port) != SR_OK) return fail_with(SR_EXIT_CANNOT, "configuration");
    sr_kmip_client_options_t o = {.host = sr_config_get(cfg, "client", "host"), .port = (uint16_t)port,
                                  .verify_name = sr_config_get(cfg, "client", "server_name"),
                                  .ca_file = sr_config_get(cfg, "client", "ca"),
                                  .cert_file = sr_config_get(cfg, "client", "cert"),
                                  .key_file = sr_config_get(cfg, "client", "key"), .timeout_ms = 10000,
                                  .version = {1, 4}};
    return sr_kmip_client_new(&o, c) == SR_OK ? 0 : fail_with(SR_EXIT_CANNOT, "KMS client");
}

static sr_keyprov_t *store_root;

static const char *store_location(void)
{
    const char *location = NULL;
    if (kms_store_location(sr_config_get(cfg, "local", "store"), sr_config_get(cfg, "local", "store_url"), &location) !=
        SR_OK)
        fail_with(SR_EXIT_CANNOT, "configuration [local]");
    return location;
}

static int open_store(kms_store_t **s)
{
    const char *path = store_location();
    if (!path) return -1;
    sr_err_t rc = kms_root_provider(path, sr_config_get(cfg, "local", "root_key_file"),
                                    sr_config_get(cfg, "local", "passphrase_file"), 0, &store_root);
    if (rc == SR_OK) rc = kms_store_open_encrypted(path, store_root, s);
    return rc == SR_OK ? 0 : fail_with(SR_EXIT_CANNOT, "key store");
}

/* ---- init ------------------------------------------------------------------------------------ */

static sr_err_t write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wx");
    if (!f) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot create %s", path);
    int ok = fputs(text, f) >= 0;
    if (fclose(f) != 0) ok = 0;
    return ok ? SR_OK : sr_err_set_errno(SR_ERR_IO, errno, "cannot write %s", path);
}

/* The record of a change about to be made (rc: how it went so far; `what` names the change in the refusal):
 * SR_OK, or why the change is not made. */
static sr_err_t record_first(sr_err_t rc, const sr_event_t *ev, const char *what)
{
    if (rc != SR_OK || sr_event_emit(ev) == SR_OK) return rc;
    char why[600];
    snprintf(why, sizeof why, "%s", sr_err_detail());
    return sr_err_set(SR_ERR_IO, "the audit log cannot record this %s, so it is not made: %s", what, why);
}

/* A change that failed (after its record, or before it could be made): a record saying so. rc, its detail kept. */
static sr_err_t record_failure(sr_err_t rc, const sr_event_t *ev)
{
    char why[600];
    snprintf(why, sizeof why, "%s", sr_err_detail());
    sr_event_t failed = *ev;
    failed.outcome = "failure", failed.detail = why;
    (void)sr_event_emit(&failed);
    return sr_err_set(rc, "%s", why);
}

/* A change to the store (rc: how it went so far) is recorded, then committed:
 * none is kept unrecorded, as in kmsd. A record whose commit then fails is
 * followed by one saying so. Rolled back unless committed. */
static sr_err_t commit_recorded(kms_store_t *s, sr_err_t rc, const sr_event_t *ev)
{
    rc = record_first(rc, ev, "change");
    if (rc == SR_OK && (rc = kms_store_commit(s)) != SR_OK) rc = record_failure(rc, ev);
    if (rc != SR_OK) kms_store_rollback(s);
    return rc;
}

static sr_err_t issue_client(kms_store_t *s, const char *dir, const char *name, kms_role_t role, int days,
                             const char *prefix)
{
    kms_cert_info_t info;
    sr_err_t rc = kms_pki_issue(dir, prefix, name, 0, NULL, days, &info);
    if (rc != SR_OK) return rc;
    rc = kms_store_begin(s);
    if (rc == SR_OK) rc = kms_principal_set(s, name, role);
    if (rc == SR_OK) rc = kms_cert_record(s, info.fingerprint, name, info.serial, info.not_after);
    char detail[200], path[4400];
    snprintf(detail, sizeof detail, "role %s, %d days, fingerprint %s", kms_role_name(role), days, info.fingerprint);
    sr_event_t ev = {.component = "kms", .event = "cert.issued", .subject = "kmsctl", .object = name,
                     .outcome = "success", .source = "local", .detail = detail};
    rc = commit_recorded(s, rc, &ev);
    for (int i = 0; rc != SR_OK && i < 2; i++) /* a certificate the store does not know is not left lying about */
        snprintf(path, sizeof path, "%s.%s", prefix, i ? "key" : "pem"), unlink(path);
    return rc;
}

static sr_err_t write_configs(const opts_t *o, const char *dir, int passphrase)
{
    char path[4200], text[8192], store[4200];
    /* a PostgreSQL URI is written as given: keep its password in ~/.pgpass or passfile=, not here */
    snprintf(store, sizeof store, "%s", o->store_url ? o->store_url : "store.db");
    snprintf(text, sizeof text,
             "# kmsd configuration, written by kmsctl init\n[server]\nlisten = %s\nport = %s\nmin_tls = 1.2\n"
             "log = kmsd.log\n\n[tls]\ncert = server.pem\nkey = server.key\nca = ca.pem\n\n"
             "# nodes join with a token (kmsctl token create); heartbeats renew their lease\n[enrolment]\n"
             "enabled = true\nca_cert = ca.pem\nca_key = ca.key\nlease = 30s\ngrace = 5s\nretention = 7d\n\n"
             "[store]\n%s = %s\n%s\n",
             o->listen ? o->listen : "127.0.0.1", o->port ? o->port : "5696", o->store_url ? "url" : "path", store,
             passphrase ? "# the passphrase: passphrase_file = FILE, or $KMSD_PASSPHRASE\n" : "root_key_file = root.key");
    snprintf(path, sizeof path, "%s/kmsd.conf", dir);
    sr_err_t rc = write_text(path, text);
    snprintf(text, sizeof text,
             "# kmsctl configuration, written by kmsctl init\n[client]\nhost = %s\nport = %s\nserver_name = %s\n"
             "ca = ca.pem\ncert = admin.pem\nkey = admin.key\n\n[local]\ndir = .\n%s = %s\n%s\n",
             o->listen ? o->listen : "127.0.0.1", o->port ? o->port : "5696",
             o->server_name ? o->server_name : "localhost", o->store_url ? "store_url" : "store", store, passphrase ? "" : "root_key_file = root.key");
    snprintf(path, sizeof path, "%s/kmsctl.conf", dir);
    if (rc == SR_OK) rc = write_text(path, text);
    return rc;
}

static int cmd_init(int argc, char **argv)
{
    static const option_t allowed[] = {OPT_VALUE("--dir", dir), OPT_VALUE("--port", port), OPT_VALUE("--listen", listen),
                                       OPT_VALUE("--server-name", server_name),
                                       OPT_VALUE("--passphrase-file", passphrase_file),
                                       OPT_VALUE("--store-url", store_url), {NULL, 0, 0}};
    opts_t o = {0};
    int port = 0;
    if (parse("init", argc, argv, allowed, 0, &o) || (o.port && parse_int("--port", o.port, 1, 65535, &port)))
        return SR_EXIT_USAGE;
    if (!o.dir) return fprintf(stderr, "kmsctl: init: --dir DIR is required\n"), SR_EXIT_USAGE;
    int passphrase = o.passphrase_file || getenv("KMSD_PASSPHRASE");
    if (mkdir(o.dir, 0700) != 0 && errno != EEXIST)
        return fprintf(stderr, "kmsctl: init: cannot create %s: %s\n", o.dir, strerror(errno)), SR_EXIT_CANNOT;
    char store[4200], root_key[4200], prefix[4200];
    if (o.store_url && !kms_db_is_postgres(o.store_url))
        return fprintf(stderr, "kmsctl: init: --store-url takes postgresql://...\n"), SR_EXIT_USAGE;
    if (o.store_url && passphrase)
        return fprintf(stderr, "kmsctl: init: a PostgreSQL store needs a root key file, not a passphrase\n"), SR_EXIT_USAGE;
    snprintf(store, sizeof store, "%s", o.store_url ? o.store_url : "");
    if (!o.store_url) snprintf(store, sizeof store, "%s/store.db", o.dir);
    snprintf(root_key, sizeof root_key, "%s/root.key", o.dir);
    if (!o.store_url && access(store, F_OK) == 0)
        return fprintf(stderr, "kmsctl: init: %s exists: refusing to overwrite a key store\n", store), SR_EXIT_CANNOT;
    sr_keyprov_t *root = NULL;
    kms_store_t *s = NULL;
    sr_err_t rc = kms_pki_make_ca(o.dir, 3650);
    snprintf(prefix, sizeof prefix, "%s/server", o.dir);
    if (rc == SR_OK) rc = kms_pki_issue(o.dir, prefix, o.server_name ? o.server_name : "localhost", 1, o.server_name, 825, NULL);
    if (rc == SR_OK) rc = kms_root_provider(store, passphrase ? NULL : root_key, o.passphrase_file, 1, &root);
    if (rc == SR_OK) rc = kms_store_open_encrypted(store, root, &s);
    snprintf(prefix, sizeof prefix, "%s/admin", o.dir);
    if (rc == SR_OK) rc = issue_client(s, o.dir, "admin", KMS_ROLE_ADMIN, 825, prefix);
    snprintf(prefix, sizeof prefix, "%s/app", o.dir);
    if (rc == SR_OK) rc = issue_client(s, o.dir, "app", KMS_ROLE_APPLICATION, 825, prefix);
    if (rc == SR_OK) rc = write_configs(&o, o.dir, passphrase);
    kms_store_close(s);
    sr_keyprov_free(root);
    if (rc != SR_OK) return fail_with(SR_EXIT_CANNOT, "init");
    printf("kmsctl: initialised %s\n"
           "  CA:          ca.pem (ca.key signs new client certificates: keep it offline in production)\n"
           "  server:      server.pem / server.key (CN %s)\n"
           "  clients:     admin.pem (role admin), app.pem (role application)\n"
           "  key store:   %s, %s under %s\n"
           "  start:       kmsd --config %s/kmsd.conf\n"
           "  administer:  KMSCTL_CONFIG=%s/kmsctl.conf kmsctl status\n",
           o.dir, o.server_name ? o.server_name : "localhost", o.store_url ? "PostgreSQL" : "store.db",
           o.store_url ? "key material wrapped" : "encrypted by strongroom",
           passphrase ? "a passphrase-derived root key (Argon2id)" : "root.key (back it up; mode 0600)", o.dir, o.dir);
    return 0;
}

/* ---- keys ------------------------------------------------------------------------------------- */

static void print_key(const char *uid, const sr_kmip_key_attributes_t *a, int json, int first)
{
    char act[SR_TIME_RFC3339_MAX];
    date_text(a->activation_date, act);
    if (!json) {
        printf("%-36s  %-12s  %-20s  %-12s  AES-%d  %s\n", uid, kms_state_name(a->state), a->name[0] ? a->name : "-",
               a->group[0] ? a->group : "-", a->length, act);
        return;
    }
    printf("%s{\"uid\": ", first ? "" : ",\n ");
    sr_json_string(stdout, uid);
    printf(", \"state\": ");
    sr_json_string(stdout, kms_state_name(a->state));
    printf(", \"name\": ");
    sr_json_string(stdout, a->name);
    printf(", \"group\": ");
    sr_json_string(stdout, a->group);
    printf(", \"bits\": %d, \"usage_mask\": %u, \"activation_date\": ", a->length, a->usage_mask);
    sr_json_string(stdout, a->activation_date ? act : "");
    printf("}");
}

static int key_create(sr_kmip_client_t *c, const opts_t *o)
{
    int bits = 256;
    if (o->n_args != 1) return fprintf(stderr, "kmsctl: key create NAME\n"), SR_EXIT_USAGE;
    if (o->bits && parse_int("--bits", o->bits, 128, 256, &bits)) return SR_EXIT_USAGE;
    sr_kmip_key_template_t t = {.name = o->args[0], .group = o->group, .bits = bits,
                                .usage_mask = SR_KMIP_USAGE_ENCRYPT | SR_KMIP_USAGE_DECRYPT | SR_KMIP_USAGE_WRAP |
                                              SR_KMIP_USAGE_UNWRAP};
    char uid[SR_KMIP_UID_MAX];
    if (sr_kmip_create_aes_key(c, &t, uid) != SR_OK) return fail_with(status_for(sr_err_last()), "key create");
    if (o->activate && sr_kmip_activate(c, uid) != SR_OK) return fail_with(status_for(sr_err_last()), "key activate");
    if (o->json) printf("{\"uid\": \"%s\", \"state\": \"%s\"}\n", uid, o->activate ? "Active" : "Pre-Active");
    else printf("%s\n", uid);
    return 0;
}

static int key_list(sr_kmip_client_t *c, const opts_t *o)
{
    enum { MAX = 10000 };
    char(*uids)[SR_KMIP_UID_MAX] = malloc(MAX * sizeof *uids);
    size_t n = 0;
    if (!uids) return SR_EXIT_CANNOT;
    if (sr_kmip_locate(c, o->name, o->group, uids, MAX, &n) != SR_OK) {
        free(uids);
        return fail_with(status_for(sr_err_last()), "key list");
    }
    if (o->json) printf("[");
    else printf("%-36s  %-12s  %-20s  %-12s  %-7s  %s\n", "UID", "STATE", "NAME", "GROUP", "CIPHER", "ACTIVATED");
    int status = 0;
    for (size_t i = 0; i < n && i < MAX; i++) {
        sr_kmip_key_attributes_t a;
        if (sr_kmip_get_attributes(c, uids[i], &a) != SR_OK) {
            status = fail_with(status_for(sr_err_last()), uids[i]);
            continue;
        }
        print_key(uids[i], &a, o->json, i == 0);
    }
    if (o->json) printf("]\n");
    free(uids);
    return status;
}

static int key_one(sr_kmip_client_t *c, const char *verb, const opts_t *o)
{
    if (o->n_args != 1) return fprintf(stderr, "kmsctl: key %s UID\n", verb), SR_EXIT_USAGE;
    const char *uid = o->args[0];
    sr_err_t rc = SR_OK;
    char new_uid[SR_KMIP_UID_MAX] = "", what[200];
    snprintf(what, sizeof what, "%s key %s", verb, uid);
    if (!strcmp(verb, "show")) {
        sr_kmip_key_attributes_t a;
        if ((rc = sr_kmip_get_attributes(c, uid, &a)) == SR_OK) print_key(uid, &a, o->json, 1), o->json && puts("");
    } else if (!strcmp(verb, "activate")) {
        rc = sr_kmip_activate(c, uid);
    } else if (!strcmp(verb, "rotate")) {
        if ((rc = sr_kmip_rekey(c, uid, new_uid)) == SR_OK) printf("%s\n", new_uid);
    } else if (!strcmp(verb, "revoke")) {
        if (!confirmed(o, what)) return SR_EXIT_USAGE;
        rc = sr_kmip_revoke(c, uid, o->compromise ? SR_KMIP_REVOKE_KEY_COMPROMISE : SR_KMIP_REVOKE_CESSATION,
                            "revoked with kmsctl");
    } else if (!strcmp(verb, "destroy")) {
        if (!confirmed(o, what)) return SR_EXIT_USAGE;
        rc = sr_kmip_destroy(c, uid);
    }
    return rc == SR_OK ? 0 : fail_with(status_for(rc), what);
}

static void print_grantee(void *ctx, const char *principal)
{
    int *first = ctx;
    if (*first < 0) return (void)printf("%s\n", principal);
    printf("%s", *first ? "" : ", ");
    sr_json_string(stdout, principal);
    *first = 0;
}

/* grant, ungrant (take a grant back) and grants (who holds one) of a key,
 * in the store directly; a change is recorded as key.grant / key.ungrant. */
static int key_grants(const char *verb, const opts_t *o)
{
    int listing = !strcmp(verb, "grants"), removing = !strcmp(verb, "ungrant");
    if (o->n_args != (listing ? 1 : 2))
        return fprintf(stderr, "kmsctl: key %s UID%s\n", verb, listing ? " [--json]" : " PRINCIPAL"), SR_EXIT_USAGE;
    kms_store_t *s = NULL;
    kms_object_t obj;
    if (open_store(&s)) return SR_EXIT_CANNOT;
    sr_err_t rc = listing ? kms_store_begin_read(s) : kms_store_begin(s);
    if (rc == SR_OK) rc = kms_object_load(s, o->args[0], &obj);
    if (rc == SR_ERR_NOT_FOUND) rc = sr_err_set(rc, "no key %s", o->args[0]);
    int first = o->json ? 1 : -1;
    if (rc == SR_OK && listing && o->json) printf("{\"key\": \"%s\", \"granted_to\": [", o->args[0]);
    if (rc == SR_OK && listing) rc = kms_grant_each(s, o->args[0], print_grantee, &first);
    if (rc == SR_OK && listing && o->json) printf("]}\n");
    if (rc == SR_OK && !listing)
        rc = removing ? kms_ungrant(s, o->args[0], o->args[1]) : kms_grant(s, o->args[0], o->args[1]);
    sr_event_t ev = {.component = "kms", .event = removing ? "key.ungrant" : "key.grant", .subject = "kmsctl",
                     .object = o->args[0], .outcome = "success", .detail = o->args[1], .source = "local"};
    if (!listing) rc = commit_recorded(s, rc, &ev);
    else if (rc != SR_OK || (rc = kms_store_commit(s)) != SR_OK) kms_store_rollback(s);
    kms_store_close(s);
    char what[32];
    snprintf(what, sizeof what, "key %s", verb);
    if (rc != SR_OK) return fail_with(rc == SR_ERR_NOT_FOUND ? SR_EXIT_FAILED : SR_EXIT_CANNOT, what);
    if (listing) return 0;
    printf(removing ? "kmsctl: %s may no longer use key %s (agents drop the data keys they cached at their next "
                      "heartbeat; a tablespace open now keeps its key until it is closed)\n"
                    : "kmsctl: %s may now use key %s\n", o->args[1], o->args[0]);
    return 0;
}

static int cmd_key(int argc, char **argv)
{
    static const option_t allowed_by_verb[][6] = {
        {OPT_VALUE("--group", group), OPT_VALUE("--bits", bits), OPT_FLAG("--activate", activate),
         OPT_FLAG("--json", json), {NULL, 0, 0}},
        {OPT_VALUE("--name", name), OPT_VALUE("--group", group), OPT_FLAG("--json", json), {NULL, 0, 0}},
        {OPT_FLAG("--json", json), {NULL, 0, 0}},
        {OPT_FLAG("--compromise", compromise), OPT_FLAG("--yes", yes), {NULL, 0, 0}},
        {OPT_FLAG("--yes", yes), {NULL, 0, 0}},
        {{NULL, 0, 0}},
    };
    static const struct { const char *verb; int options, args; } verbs[] = {
        {"create", 0, 1}, {"list", 1, 0}, {"show", 2, 1}, {"activate", 5, 1}, {"rotate", 5, 1},
        {"revoke", 3, 1}, {"destroy", 4, 1}, {"grant", 5, 2}, {"ungrant", 5, 2}, {"grants", 2, 1}};
    if (argc < 1)
        return fprintf(stderr, "kmsctl: key create|list|show|activate|revoke|destroy|rotate|grant|ungrant|grants\n"),
               SR_EXIT_USAGE;
    for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++) {
        if (strcmp(argv[0], verbs[v].verb) != 0) continue;
        opts_t o = {0};
        char cmd[32];
        snprintf(cmd, sizeof cmd, "key %s", verbs[v].verb);
        if (parse(cmd, argc - 1, argv + 1, allowed_by_verb[verbs[v].options], verbs[v].args, &o)) return SR_EXIT_USAGE;
        if (!strncmp(argv[0], "grant", 5) || !strcmp(argv[0], "ungrant")) return key_grants(argv[0], &o);
        sr_kmip_client_t *c = NULL;
        if (connect_kms(&c)) return SR_EXIT_CANNOT;
        int status = !strcmp(argv[0], "create") ? key_create(c, &o)
                     : !strcmp(argv[0], "list") ? key_list(c, &o)
                                                : key_one(c, argv[0], &o);
        sr_kmip_client_free(c);
        return status;
    }
    return fprintf(stderr, "kmsctl: key: unknown command '%s'\n", argv[0]), SR_EXIT_USAGE;
}

/* ---- certificates ------------------------------------------------------------------------------ */

static void print_cert(void *ctx, const char *name, const char *role, const char *fp, int64_t not_after, int revoked)
{
    int *first = ctx;
    char until[SR_TIME_RFC3339_MAX];
    date_text(not_after, until);
    if (*first < 0) {
        printf("%-24s  %-12s  %-8s  %-20s  %.16s…\n", name, role, revoked ? "revoked" : "valid", until, fp);
        return;
    }
    printf("%s{\"name\": ", *first ? "" : ",\n ");
    sr_json_string(stdout, name);
    printf(", \"role\": \"%s\", \"status\": \"%s\", \"not_after\": \"%s\", \"fingerprint\": \"%s\"}", role,
           revoked ? "revoked" : "valid", until, fp);
    *first = 0;
}

static int cmd_cert(int argc, char **argv)
{
    static const option_t allowed_list[] = {OPT_FLAG("--json", json), {NULL, 0, 0}};
    static const option_t allowed_revoke[] = {OPT_FLAG("--yes", yes), {NULL, 0, 0}};
    static const option_t allowed_issue[] = {OPT_VALUE("--role", role), OPT_VALUE("--days", days), {NULL, 0, 0}};
    if (argc < 1) return fprintf(stderr, "kmsctl: cert issue|revoke|list\n"), SR_EXIT_USAGE;
    opts_t o = {0};
    const char *verb = argv[0];
    int is_list = !strcmp(verb, "list"), is_issue = !strcmp(verb, "issue"), is_revoke = !strcmp(verb, "revoke");
    if (!is_list && !is_issue && !is_revoke) return fprintf(stderr, "kmsctl: cert: unknown command '%s'\n", verb), SR_EXIT_USAGE;
    if (parse(is_list ? "cert list" : is_issue ? "cert issue" : "cert revoke", argc - 1, argv + 1,
              is_list ? allowed_list : is_issue ? allowed_issue : allowed_revoke, is_list ? 0 : 1, &o))
        return SR_EXIT_USAGE;
    if (!is_list && o.n_args != 1) return fprintf(stderr, "kmsctl: cert %s NAME\n", verb), SR_EXIT_USAGE;
    kms_role_t role = KMS_ROLE_APPLICATION;
    int days = 365;
    if (is_issue && (!o.role || kms_role_parse(o.role, &role) != SR_OK))
        return fprintf(stderr, "kmsctl: cert issue: --role admin|application|node|auditor is required\n"), SR_EXIT_USAGE;
    if (o.days && parse_int("--days", o.days, 1, 3650, &days)) return SR_EXIT_USAGE;
    if (is_revoke && !confirmed(&o, "revoke every certificate of this principal")) return SR_EXIT_USAGE;
    kms_store_t *s = NULL;
    if (open_store(&s)) return SR_EXIT_CANNOT;
    sr_err_t rc = SR_OK;
    if (is_list) {
        int first = o.json ? 1 : -1;
        if (o.json) printf("[");
        else printf("%-24s  %-12s  %-8s  %-20s  %s\n", "NAME", "ROLE", "STATUS", "NOT AFTER", "FINGERPRINT");
        rc = kms_cert_each(s, print_cert, &first);
        if (o.json) printf("]\n");
    } else if (is_issue) {
        char dir[4200], prefix[4300];
        snprintf(dir, sizeof dir, "%s", sr_config_get(cfg, "local", "dir"));
        snprintf(prefix, sizeof prefix, "%s/%s", dir, o.args[0]);
        if (strpbrk(o.args[0], "/\\") || o.args[0][0] == '.')
            rc = sr_err_set(SR_ERR_INVALID_ARG, "a certificate name is a plain name, not '%s'", o.args[0]);
        if (rc == SR_OK) rc = issue_client(s, dir, o.args[0], role, days, prefix);
        if (rc == SR_OK) printf("kmsctl: issued %s.pem and %s.key (CN %s, role %s, %d days)\n", prefix, prefix, o.args[0],
                                kms_role_name(role), days);
    } else {
        int n = 0;
        rc = kms_store_begin(s);
        if (rc == SR_OK) rc = kms_cert_revoke(s, o.args[0], &n);
        if (rc == SR_OK && n == 0) rc = sr_err_set(SR_ERR_NOT_FOUND, "no valid certificate issued to %s", o.args[0]);
        char detail[64];
        snprintf(detail, sizeof detail, "%d certificate(s)", n);
        sr_event_t ev = {.component = "kms", .event = "cert.revoked", .subject = "kmsctl", .object = o.args[0],
                         .outcome = "success", .source = "local", .detail = detail};
        rc = commit_recorded(s, rc, &ev);
        if (rc == SR_OK) printf("kmsctl: revoked %d certificate(s) of %s; kmsd refuses them from the next request\n", n,
                                o.args[0]);
    }
    kms_store_close(s);
    return rc == SR_OK ? 0 : fail_with(rc == SR_ERR_NOT_FOUND ? SR_EXIT_FAILED : SR_EXIT_CANNOT, verb);
}

/* ---- join tokens and nodes ------------------------------------------------------------------------ */

static int cmd_token(int argc, char **argv)
{
    static const option_t allowed[] = {OPT_VALUE("--group", group), OPT_VALUE("--ttl", ttl), OPT_VALUE("--uses", uses),
                                       {NULL, 0, 0}};
    opts_t o = {0};
    if (argc < 1 || strcmp(argv[0], "create") != 0)
        return fprintf(stderr, "kmsctl: token create [--group G] [--ttl 1h] [--uses 1]\n"), SR_EXIT_USAGE;
    if (parse("token create", argc - 1, argv + 1, allowed, 0, &o)) return SR_EXIT_USAGE;
    uint64_t ttl_ms = 3600000;
    int uses = 1;
    if (o.ttl && (sr_parse_duration_ms(o.ttl, &ttl_ms) != SR_OK || ttl_ms < 1000))
        return fprintf(stderr, "kmsctl: --ttl '%s' is not a duration (30s, 10m, 1h, 7d)\n", o.ttl), SR_EXIT_USAGE;
    if (o.uses && parse_int("--uses", o.uses, 1, 100000, &uses)) return SR_EXIT_USAGE;
    kms_store_t *s = NULL;
    char token[65];
    if (open_store(&s)) return SR_EXIT_CANNOT;
    sr_err_t rc = kms_store_begin(s);
    if (rc == SR_OK) rc = kms_token_create(s, o.group, uses, (int64_t)(ttl_ms / 1000), token);
    sr_event_t ev = {.component = "kms", .event = "token.created", .subject = "kmsctl", .object = o.group,
                     .outcome = "success", .source = "local", .detail = "a join token (only its hash is stored)"};
    rc = commit_recorded(s, rc, &ev);
    kms_store_close(s);
    if (rc != SR_OK) return sr_secure_wipe(token, sizeof token), fail_with(SR_EXIT_CANNOT, "token create");
    printf("%s\n", token);
    sr_secure_wipe(token, sizeof token);
    return 0;
}

static void print_node(void *ctx, const kms_node_t *n)
{
    int *first = ctx;
    char joined[SR_TIME_RFC3339_MAX], lease[SR_TIME_RFC3339_MAX], left[SR_TIME_RFC3339_MAX];
    date_text(n->joined, joined), date_text(n->lease_expires_ms / 1000, lease), date_text(n->left, left);
    if (*first < 0) {
        printf("%-36s  %-8s  %-16.16s  %-10.10s  %-20s  %-20s  %s\n", n->uuid, n->state, n->name,
               n->group[0] ? n->group : "-", joined, !strcmp(n->state, "active") ? lease : left, n->nk);
        return;
    }
    printf("%s{\"uuid\": \"%s\", \"state\": \"%s\", \"name\": ", *first ? "" : ",\n ", n->uuid, n->state);
    sr_json_string(stdout, n->name);
    printf(", \"group\": ");
    sr_json_string(stdout, n->group);
    printf(", \"joined\": \"%s\", \"lease_expires\": \"%s\", \"left\": \"%s\", \"node_key\": \"%s\", \"reason\": ",
           joined, lease, n->left ? left : "", n->nk);
    sr_json_string(stdout, n->reason);
    printf("}");
    *first = 0;
}

static int cmd_node(int argc, char **argv)
{
    static const option_t allowed_json[] = {OPT_FLAG("--json", json), {NULL, 0, 0}};
    static const option_t allowed_yes[] = {OPT_FLAG("--yes", yes), {NULL, 0, 0}};
    if (argc < 1) return fprintf(stderr, "kmsctl: node list|show|revoke\n"), SR_EXIT_USAGE;
    const char *verb = argv[0];
    int is_list = !strcmp(verb, "list"), is_show = !strcmp(verb, "show"), is_revoke = !strcmp(verb, "revoke");
    if (!is_list && !is_show && !is_revoke) return fprintf(stderr, "kmsctl: node: unknown command '%s'\n", verb), SR_EXIT_USAGE;
    opts_t o = {0};
    if (parse(is_list ? "node list" : is_show ? "node show" : "node revoke", argc - 1, argv + 1,
              is_revoke ? allowed_yes : allowed_json, is_list ? 0 : 1, &o))
        return SR_EXIT_USAGE;
    if (!is_list && o.n_args != 1) return fprintf(stderr, "kmsctl: node %s UUID\n", verb), SR_EXIT_USAGE;
    if (is_revoke && !confirmed(&o, "revoke this node (its key and certificate)")) return SR_EXIT_USAGE;
    kms_store_t *s = NULL;
    if (open_store(&s)) return SR_EXIT_CANNOT;
    sr_err_t rc = SR_OK;
    int first = o.json ? 1 : -1;
    kms_node_t n;
    if (is_list) {
        if (o.json) printf("[");
        else printf("%-36s  %-8s  %-16s  %-10s  %-20s  %-20s  %s\n", "NODE", "STATE", "NAME", "GROUP", "JOINED",
                    "LEASE ENDS / LEFT", "NODE KEY");
        rc = kms_node_each(s, NULL, 0, print_node, &first);
        if (o.json) printf("]\n");
    } else if ((rc = kms_node_load(s, o.args[0], &n)) == SR_ERR_NOT_FOUND) {
        rc = sr_err_set(rc, "no node %s", o.args[0]);
    } else if (rc == SR_OK && is_show) {
        print_node(&first, &n);
        if (o.json) printf("\n");
    } else if (rc == SR_OK && strcmp(n.state, "active") != 0) {
        rc = sr_err_set(SR_ERR_STATE, "node %s is already %s", n.uuid, n.state);
    } else if (rc == SR_OK) {
        rc = kms_store_begin(s);
        if (rc == SR_OK) rc = kms_node_end(s, &n, "revoked", "revoked by an administrator (kmsctl)");
        sr_event_t ev = {.component = "kms", .event = "node.revoked", .subject = "kmsctl", .object = n.uuid,
                         .outcome = "success", .source = "local", .detail = n.nk};
        rc = commit_recorded(s, rc, &ev);
        if (rc == SR_OK)
            printf("kmsctl: node %s revoked: its node key %s and its certificate are refused\n", n.uuid, n.nk);
    }
    kms_store_close(s);
    return rc == SR_OK ? 0 : fail_with(rc == SR_ERR_NOT_FOUND || rc == SR_ERR_STATE ? SR_EXIT_FAILED : SR_EXIT_CANNOT, verb);
}

/* ---- store backup and restore ----------------------------------------------------------------------- */

static int kms_is_up(void)
{
    sr_kmip_client_t *c = NULL;
    sr_kmip_version_t v[4];
    size_t n = 0;
    int up = connect_kms(&c) == 0 && sr_kmip_discover_versions(c, v, 4, &n) == SR_OK;
    sr_kmip_client_free(c);
    return up;
}

static int cmd_store(int argc, char **argv)
{
    static const option_t allowed[] = {OPT_FLAG("--yes", yes), {NULL, 0, 0}};
    opts_t o = {0};
    int backup = argc >= 1 && !strcmp(argv[0], "backup"), restore = argc >= 1 && !strcmp(argv[0], "restore");
    if (!backup && !restore) return fprintf(stderr, "kmsctl: store backup FILE | store restore FILE [--yes]\n"), SR_EXIT_USAGE;
    if (parse(backup ? "store backup" : "store restore", argc - 1, argv + 1, restore ? allowed : allowed + 1, 1, &o) ||
        o.n_args != 1)
        return fprintf(stderr, "kmsctl: store %s FILE\n", argv[0]), SR_EXIT_USAGE;
    kms_store_t *s = NULL;
    if (open_store(&s)) return SR_EXIT_CANNOT; /* proves the root key, registers the VFS with it */
    const char *store = store_location();
    sr_err_t rc = backup ? kms_store_copy_allowed(store, o.args[0], 0) : kms_store_copy_allowed(o.args[0], store, 1);
    if (rc == SR_OK && restore && kms_is_up())
        rc = sr_err_set(SR_ERR_STATE, "kmsd is running: stop it before restoring its store");
    if (rc == SR_OK && restore && !confirmed(&o, "replace the key store with the backup")) {
        kms_store_close(s);
        return SR_EXIT_USAGE;
    }
    if (rc == SR_OK && restore) {
        kms_store_t *probe = NULL; /* the backup must open under this root key */
        rc = kms_store_open_encrypted(o.args[0], store_root, &probe);
        kms_store_close(probe);
    }
    /* recorded before the copy is made, and not made if it cannot be recorded; a failure after is recorded too */
    sr_event_t ev = {.component = "kms", .event = backup ? "store.backup" : "store.restore", .subject = "kmsctl",
                     .object = o.args[0], .outcome = "success", .source = "local"};
    int refused = rc == SR_OK && (rc = record_first(rc, &ev, ev.event)) != SR_OK;
    if (rc == SR_OK) rc = backup ? kms_store_copy(store, o.args[0], 0) : kms_store_copy(o.args[0], store, 1);
    kms_store_close(s);
    if (rc != SR_OK && !refused) rc = record_failure(rc, &ev);
    if (rc == SR_OK && backup)
        printf("kmsctl: %s: a consistent copy of the key store, encrypted under the same root key\n", o.args[0]);
    if (rc == SR_OK && restore) printf("kmsctl: key store restored from %s; start kmsd\n", o.args[0]);
    return rc == SR_OK ? 0 : fail_with(rc == SR_ERR_STATE || rc == SR_ERR_EXISTS ? SR_EXIT_FAILED : SR_EXIT_CANNOT, "store");
}

/* ---- access policy ---------------------------------------------------------------------------------- */

static int policy_push(const opts_t *o)
{
    char *text = NULL;
    sr_acl_policy_t *p = NULL;
    if (sr_acl_read_standalone(o->args[1], &text, &p) != SR_OK) return fail_with(SR_EXIT_FAILED, "policy push");
    char digest[32];
    size_t rules = sr_acl_policy_rules(p);
    snprintf(digest, sizeof digest, "%s", sr_acl_policy_version(p));
    sr_acl_policy_free(p);
    kms_store_t *s = NULL;
    int64_t version = 0;
    sr_err_t rc = open_store(&s) ? SR_ERR_IO : kms_store_begin(s);
    if (rc == SR_OK) rc = kms_policy_push(s, text, digest, "kmsctl", &version);
    char object[40], detail[160];
    snprintf(object, sizeof object, "policy v%lld", (long long)version);
    snprintf(detail, sizeof detail, "%s, %zu rules, from %.100s", digest, rules, o->args[1]);
    sr_event_t ev = {.component = "kms", .event = "policy.pushed", .subject = "kmsctl", .object = object,
                     .outcome = "success", .source = "local", .detail = detail};
    if (s) rc = commit_recorded(s, rc, &ev);
    kms_store_close(s);
    free(text);
    if (rc != SR_OK) return fail_with(SR_EXIT_CANNOT, "policy push");
    if (o->json) printf("{\"version\": %lld, \"digest\": \"%s\", \"rules\": %zu}\n", (long long)version, digest, rules);
    else printf("kmsctl: policy v%lld (%s, %zu rules) stored; agents with policy_push install it at their next "
                "heartbeat\n", (long long)version, digest, rules);
    return 0;
}

static int policy_show(const opts_t *o)
{
    kms_store_t *s = NULL;
    if (open_store(&s)) return SR_EXIT_CANNOT;
    kms_policy_t p;
    sr_err_t rc = kms_policy_load(s, &p);
    kms_store_close(s);
    if (rc != SR_OK) return fail_with(rc == SR_ERR_NOT_FOUND ? SR_EXIT_FAILED : SR_EXIT_CANNOT, "policy show");
    char pushed[SR_TIME_RFC3339_MAX];
    date_text(p.pushed, pushed);
    if (o->json)
        printf("{\"version\": %lld, \"digest\": \"%s\", \"pushed\": \"%s\", \"pushed_by\": \"%s\", \"bytes\": %zu}\n",
               (long long)p.version, p.digest, pushed, p.pushed_by, p.len);
    else printf("# policy v%lld, %s, pushed %s by %s\n%s", (long long)p.version, p.digest, pushed, p.pushed_by, p.text);
    free(p.text);
    return 0;
}

static int cmd_policy(int argc, char **argv)
{
    static const option_t allowed[] = {OPT_FLAG("--json", json), {NULL, 0, 0}};
    opts_t o = {0};
    int push = argc >= 1 && !strcmp(argv[0], "push"), show = argc >= 1 && !strcmp(argv[0], "show");
    if ((!push && !show) || parse(push ? "policy push" : "policy show", argc, argv, allowed, push ? 2 : 1, &o) ||
        o.n_args != (push ? 2 : 1))
        return fprintf(stderr, "kmsctl: policy push FILE [--json] | policy show [--json]\n"), SR_EXIT_USAGE;
    return push ? policy_push(&o) : policy_show(&o);
}

/* ---- status ------------------------------------------------------------------------------------- */

static int cmd_status(int argc, char **argv)
{
    static const option_t allowed[] = {OPT_FLAG("--json", json), {NULL, 0, 0}};
    opts_t o = {0};
    if (parse("status", argc, argv, allowed, 0, &o)) return SR_EXIT_USAGE;
    sr_kmip_client_t *c = NULL;
    if (connect_kms(&c)) return SR_EXIT_CANNOT;
    sr_kmip_version_t v[8];
    uint32_t ops[64];
    size_t nv = 0, nops = 0;
    uint64_t t0 = sr_time_mono_ns();
    sr_err_t rc = sr_kmip_discover_versions(c, v, 8, &nv);
    if (rc == SR_OK) rc = sr_kmip_query_operations(c, ops, 64, &nops);
    double ms = (double)(sr_time_mono_ns() - t0) / 1e6;
    sr_kmip_client_free(c);
    const char *host = sr_config_get(cfg, "client", "host"), *port = sr_config_get(cfg, "client", "port");
    if (rc != SR_OK) {
        if (o.json) printf("{\"status\": \"down\", \"server\": \"%s:%s\"}\n", host, port);
        return fail_with(SR_EXIT_CANNOT, "status");
    }
    if (o.json)
        printf("{\"status\": \"up\", \"server\": \"%s:%s\", \"newest_version\": \"%d.%d\", \"operations\": %zu, "
               "\"round_trip_ms\": %.2f}\n", host, port, v[0].major, v[0].minor, nops, ms);
    else
        printf("kmsd at %s:%s is up: KMIP %d.%d to %d.%d, %zu operations, %.2f ms for two round trips\n", host, port,
               v[nv - 1].major, v[nv - 1].minor, v[0].major, v[0].minor, nops, ms);
    return 0;
}

static const char usage_text[] =
    "usage: kmsctl init --dir DIR [--port N] [--listen ADDR] [--server-name NAME] [--passphrase-file F]\n"
    "                   [--store-url postgresql://...]\n"
    "       kmsctl [--config FILE] status [--json]\n"
    "       kmsctl [--config FILE] key create NAME [--group G] [--bits 128|192|256] [--activate] [--json]\n"
    "       kmsctl [--config FILE] key list [--name N] [--group G] [--json]\n"
    "       kmsctl [--config FILE] key show UID [--json] | activate UID | rotate UID\n"
    "       kmsctl [--config FILE] key revoke UID [--compromise] [--yes] | destroy UID [--yes]\n"
    "       kmsctl [--config FILE] key grant UID PRINCIPAL | ungrant UID PRINCIPAL | grants UID [--json]\n"
    "       kmsctl [--config FILE] cert issue NAME --role admin|application|node|auditor [--days N]\n"
    "       kmsctl [--config FILE] cert revoke NAME [--yes] | cert list [--json]\n"
    "       kmsctl [--config FILE] token create [--group G] [--ttl 1h] [--uses 1]\n"
    "       kmsctl [--config FILE] node list [--json] | node show UUID [--json] | node revoke UUID [--yes]\n"
    "       kmsctl [--config FILE] store backup FILE | store restore FILE [--yes]\n"
    "       kmsctl [--config FILE] policy push FILE [--json] | policy show [--json]\n"
    "The configuration is --config, $KMSCTL_CONFIG or ./kmsctl.conf (kmsctl init writes one).\n"
    "Exit status: 0 ok, 1 refused by the server or a check failed, 2 usage, 3 could not run.\n";

static int usage(FILE *f, int status)
{
    fputs(usage_text, f);
    return status;
}

/* An option some command takes is one the usage text names: the help and
 * the check cannot disagree. */
static int known_option(const char *opt)
{
    size_t n = strlen(opt);
    for (const char *p = strstr(usage_text, opt); p; p = strstr(p + 1, opt))
        if ((p[-1] == ' ' || p[-1] == '[') && !isalnum((unsigned char)p[n]) && p[n] != '-') return 1;
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;
    const char *config = NULL;
    if (i < argc && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))) return usage(stdout, 0);
    if (i < argc && !strcmp(argv[i], "--version")) return puts("kmsctl (strongroom) " SR_VERSION_STRING), 0;
    if (i + 1 < argc && !strcmp(argv[i], "--config")) config = argv[i + 1], i += 2;
    if (i >= argc) return usage(stderr, SR_EXIT_USAGE);
    if (sr_secure_init() != SR_OK) return fail_with(SR_EXIT_CANNOT, "secure memory");
    sr_audit_writer_t *w = NULL;
    if (sr_audit_open_from_env(&w) != SR_OK) return fail_with(SR_EXIT_CANNOT, "audit log");
    const char *cmd = argv[i];
    /* usage before configuration: --help anywhere, or an option no command has */
    for (int a = i + 1; a < argc; a++) {
        if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) return usage(stdout, 0);
        if (!strncmp(argv[a], "--", 2) && !known_option(argv[a]))
            return fprintf(stderr, "kmsctl: %s: option %s does not apply (see --help)\n", cmd, argv[a]), SR_EXIT_USAGE;
    }
    if (!strcmp(cmd, "init")) return cmd_init(argc - i - 1, argv + i + 1);
    static const struct { const char *name; int (*run)(int, char **); } commands[] = {
        {"status", cmd_status}, {"key", cmd_key}, {"cert", cmd_cert}, {"token", cmd_token}, {"node", cmd_node}, {"store", cmd_store},
        {"policy", cmd_policy}};
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
        if (strcmp(cmd, commands[k].name) != 0) continue;
        if (load_config(config)) return SR_EXIT_CANNOT;
        int status = commands[k].run(argc - i - 1, argv + i + 1);
        sr_config_free(cfg);
        sr_keyprov_free(store_root);
        return status;
    }
    fprintf(stderr, "kmsctl: unknown command '%s'\n", cmd);
    return usage(stderr, SR_EXIT_USAGE);
}
