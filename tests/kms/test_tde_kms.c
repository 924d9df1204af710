/*
 * The tablespace side of the KMS: a SQLite database whose data keys are
 * wrapped by a master key held in kmsd (URI kms=CONFIG), over real mutual
 * TLS: created, reopened, verified by tdectl; the master key rotated in the
 * KMS and the tablespace re-wrapped online (tdectl rotate-master --kms); the
 * master key revoked: new opens refused (SQLITE_AUTH) with an audit record;
 * an unreachable first server skipped (failover); and the same provider
 * against the PyKMIP server. `wrap = get` (the master key read with KMIP Get
 * and used here, for servers that cannot Encrypt) against both.
 */
#include "audit.h"
#include "kmip.h"
#include "kmsd_server.h"
#include "pykmip_server.h"
#include "sr_test.h"
#include "tde.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[512];
static uint16_t port;

static void write_config(const char *path, const char *servers, const char *pki, const char *cert,
                         const char *master)
{
    char text[2048];
    int n = snprintf(text, sizeof text, "[kms]\nservers = %s\nca = %s/ca.pem\ncert = %s/%s.pem\nkey = %s/%s.key\n"
                     "master_key = %s\ntimeout = 3s\n", servers, pki, pki, cert, pki, cert, master);
    SR_CHECK(sr_test_write_file(path, text, (size_t)n) == 0);
}

/* The same with `wrap = get`. */
static void write_get_config(const char *path, const char *servers, const char *pki, const char *cert,
                             const char *master)
{
    write_config(path, servers, pki, cert, master);
    FILE *f = fopen(path, "a");
    SR_CHECK(f && fputs("wrap = get\n", f) >= 0);
    if (f) fclose(f);
}

typedef struct last_value {
    char *out;
    size_t cap;
} last_value_t;

static int keep_value(void *arg, int n, char **values, char **names)
{
    last_value_t *v = arg;
    (void)names;
    if (v->out && n > 0) snprintf(v->out, v->cap, "%s", values[0] ? values[0] : "");
    return 0;
}

/* Opens path with kms=conf; runs sql (the first column of the last row into
 * out); the SQLite result code. */
static int run_sql(const char *path, const char *conf, const char *sql, char *out, size_t cap)
{
    char uri[2048];
    snprintf(uri, sizeof uri, "file:%s?vfs=strongroom&kms=%s", path, conf);
    sqlite3 *db = NULL;
    last_value_t v = {out, cap};
    if (out) out[0] = '\0';
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, keep_value, &v, NULL);
    sqlite3_close(db);
    return rc;
}

/* A table holding `marker` written through the KMS provider and read back
 * (a new connection each way); the marker is nowhere in the file. */
static void marker_round_trip(const char *db, const char *conf, const char *marker)
{
    char sql[200], row[64];
    snprintf(sql, sizeof sql, "CREATE TABLE t(x); INSERT INTO t VALUES('%s');", marker);
    SR_CHECK_EQ_INT(run_sql(db, conf, sql, NULL, 0), SQLITE_OK);
    SR_CHECK_EQ_INT(run_sql(db, conf, "SELECT x FROM t", row, sizeof row), SQLITE_OK);
    SR_CHECK_STR(row, marker);
    SR_CHECK(!sr_test_file_contains(db, marker, strlen(marker)));
}

/* Decrypt requests kmsd has answered (its log, --foreground: every request is an event line). */
static int count_unwraps(void)
{
    char cmd[700], out[64];
    snprintf(cmd, sizeof cmd, "grep -c 'kms.kmip.decrypt outcome=success' %s/kmsd.stderr", dir);
    sr_test_command(out, sizeof out, cmd);
    return atoi(out);
}

static void kmsctl_ok(const char *args, char *out, size_t cap)
{
    int status = kmsctl_run(dir, out, cap, args);
    SR_CHECK_MSG(status == 0, "kmsctl %s: %s", args, out);
    out[strcspn(out, "\n")] = '\0';
}

static void test_tablespace_under_a_kms_master_key(void)
{
    char mk[128], mk2[128], out[4096], args[300], conf[600], conf2[600], db[600], servers[64], row[64];
    kmsctl_ok("key create tablespaces-master --activate", mk, sizeof mk);
    snprintf(args, sizeof args, "key grant %s app", mk);
    kmsctl_ok(args, out, sizeof out);
    snprintf(servers, sizeof servers, "127.0.0.1:%u", port);
    snprintf(conf, sizeof conf, "%s/tde-kms.conf", dir);
    snprintf(db, sizeof db, "%s/shop.db", sr_test_tmpdir());
    write_config(conf, servers, dir, "app", mk);
    marker_round_trip(db, conf, "KMS-SECRET-ROW");
    /* one open, one unwrap: the header's authentication and the key load share it */
    int before = count_unwraps(), after;
    SR_CHECK_EQ_INT(run_sql(db, conf, "SELECT x FROM t", row, sizeof row), SQLITE_OK);
    after = count_unwraps();
    SR_CHECK_MSG(after - before == 1, "%d KMS unwraps for one open", after - before);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s verify --kms %s %s", sr_test_build_path("tde/tdectl"), conf, db);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);

    /* master key rotation: a new key in the KMS, the data keys re-wrapped, the old key revoked */
    snprintf(args, sizeof args, "key rotate %s", mk);
    kmsctl_ok(args, mk2, sizeof mk2);
    snprintf(args, sizeof args, "key grant %s app", mk2);
    kmsctl_ok(args, out, sizeof out);
    snprintf(conf2, sizeof conf2, "%s/tde-kms-2.conf", dir);
    write_config(conf2, servers, dir, "app", mk2);
    snprintf(cmd, sizeof cmd, "%s rotate-master --kms %s %s", sr_test_build_path("tde/tdectl"), conf2, db);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0 && strstr(out, mk2), "%s", out);
    snprintf(args, sizeof args, "key revoke %s --yes", mk);
    kmsctl_ok(args, out, sizeof out);
    SR_CHECK_EQ_INT(run_sql(db, conf2, "SELECT x FROM t", row, sizeof row), SQLITE_OK);
    SR_CHECK_STR(row, "KMS-SECRET-ROW");

    /* failover: the first server listed cannot be reached */
    char conf3[600], two[128];
    snprintf(conf3, sizeof conf3, "%s/tde-kms-3.conf", dir);
    snprintf(two, sizeof two, "127.0.0.1:%u, 127.0.0.1:%u", sr_test_free_port(), port);
    write_config(conf3, two, dir, "app", mk2);
    SR_CHECK_EQ_INT(run_sql(db, conf3, "SELECT x FROM t", row, sizeof row), SQLITE_OK);

    /* another application's certificate: the KMS refuses to unwrap */
    char conf4[600];
    snprintf(conf4, sizeof conf4, "%s/tde-kms-4.conf", dir);
    write_config(conf4, servers, dir, "client2", mk2);
    SR_CHECK_EQ_INT(run_sql(db, conf4, "SELECT x FROM t", NULL, 0), SQLITE_AUTH);

    /* the master key revoked: new opens refused, with the reason and an audit record */
    snprintf(args, sizeof args, "key revoke %s --yes", mk2);
    kmsctl_ok(args, out, sizeof out);
    SR_CHECK_EQ_INT(run_sql(db, conf2, "SELECT x FROM t", NULL, 0), SQLITE_AUTH);
    char log[600];
    snprintf(log, sizeof log, "%s/audit.log", sr_test_tmpdir());
    SR_CHECK(sr_test_file_contains(log, "\"event\":\"tablespace.open\"", 25));
    SR_CHECK(sr_test_file_contains(log, "is Deactivated: only an Active key is used", 42));
}

/* A KMIP client as `cert` of the PKI in `pki`, on port, and a new Active
 * AES-256 key named `name` that it owns (uid out). The caller frees *c. */
static void client_with_own_key(const char *pki, const char *cert, uint16_t on, const char *name,
                                sr_kmip_client_t **c, char uid[SR_KMIP_UID_MAX])
{
    char ca[700], crt[700], key[700];
    snprintf(ca, sizeof ca, "%s/ca.pem", pki), snprintf(crt, sizeof crt, "%s/%s.pem", pki, cert);
    snprintf(key, sizeof key, "%s/%s.key", pki, cert);
    sr_kmip_client_options_t o = {.host = "127.0.0.1", .port = on, .verify_name = "localhost", .ca_file = ca,
                                  .cert_file = crt, .key_file = key};
    *c = NULL;
    SR_CHECK_OK(sr_kmip_client_new(&o, c));
    sr_kmip_key_template_t t = {.name = name, .bits = 256, .usage_mask = SR_KMIP_USAGE_ENCRYPT | SR_KMIP_USAGE_DECRYPT};
    if (*c) SR_CHECK_OK(sr_kmip_create_aes_key(*c, &t, uid));
    if (*c) SR_CHECK_OK(sr_kmip_activate(*c, uid));
}

/* wrap = get against kmsd: an application reads the master key it owns (a
 * key only granted to it is not its to read); revoked, the key is refused. */
static void test_wrap_here_with_a_key_read_by_get(void)
{
    char uid[SR_KMIP_UID_MAX], granted[128], args[300], out[4096];
    char conf[700], conf2[700], db[700], db2[700], servers[64], cmd[2048];
    sr_kmip_client_t *c = NULL;
    client_with_own_key(dir, "app", port, "app-master", &c, uid);
    snprintf(servers, sizeof servers, "127.0.0.1:%u", port);
    snprintf(conf, sizeof conf, "%s/tde-get.conf", dir);
    snprintf(db, sizeof db, "%s/get.db", sr_test_tmpdir());
    write_get_config(conf, servers, dir, "app", uid);
    marker_round_trip(db, conf, "GET-ROW");
    snprintf(cmd, sizeof cmd, "%s status --json --kms %s %s", sr_test_build_path("tde/tdectl"), conf, db);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0 && strstr(out, "kmip-get-aes-gcm"), "%s", out);
    /* a key the admin made and only granted to the application: Get is not the application's */
    kmsctl_ok("key create granted-only --activate", granted, sizeof granted);
    snprintf(args, sizeof args, "key grant %s app", granted);
    kmsctl_ok(args, out, sizeof out);
    snprintf(conf2, sizeof conf2, "%s/tde-get-2.conf", dir);
    snprintf(db2, sizeof db2, "%s/get-2.db", sr_test_tmpdir());
    write_get_config(conf2, servers, dir, "app", granted);
    SR_CHECK_EQ_INT(run_sql(db2, conf2, "CREATE TABLE t(x)", NULL, 0), SQLITE_AUTH);
    /* revoked: refused to Get, the open refused */
    SR_CHECK_OK(sr_kmip_revoke(c, uid, SR_KMIP_REVOKE_CESSATION, "test"));
    SR_CHECK_EQ_INT(run_sql(db, conf, "SELECT x FROM t", NULL, 0), SQLITE_AUTH);
    sr_kmip_client_free(c);
}

/* The same provider against another KMIP server: Debian's PyKMIP server. */
static void test_provider_against_pykmip_server(void)
{
    char pki[600], conf[700], db[600], servers[64];
    uint16_t pyport = 0;
    snprintf(pki, sizeof pki, "%s/pykmip", sr_test_tmpdir());
    SR_CHECK(pykmip_start(pki, sr_test_source_path("tests/pki/make-test-pki"), &pyport) == 0);
    char uid[SR_KMIP_UID_MAX];
    sr_kmip_client_t *c = NULL;
    client_with_own_key(pki, "client", pyport, "tablespaces", &c, uid);
    snprintf(servers, sizeof servers, "127.0.0.1:%u", pyport);
    snprintf(conf, sizeof conf, "%s/tde-pykmip.conf", pki);
    snprintf(db, sizeof db, "%s/pykmip.db", sr_test_tmpdir());
    write_config(conf, servers, pki, "client", uid);
    marker_round_trip(db, conf, "PYKMIP-ROW");
    /* wrap = get: PyKMIP's Get, wrapped here */
    char getconf[700], getdb[700];
    snprintf(getconf, sizeof getconf, "%s/tde-pykmip-get.conf", pki);
    snprintf(getdb, sizeof getdb, "%s/pykmip-get.db", sr_test_tmpdir());
    write_get_config(getconf, servers, pki, "client", uid);
    marker_round_trip(getdb, getconf, "PYKMIP-GET");
    SR_CHECK_OK(sr_kmip_revoke(c, uid, SR_KMIP_REVOKE_CESSATION, "test"));
    SR_CHECK_EQ_INT(run_sql(db, conf, "SELECT x FROM t", NULL, 0), SQLITE_AUTH);
    SR_CHECK_EQ_INT(run_sql(getdb, getconf, "SELECT x FROM t", NULL, 0), SQLITE_AUTH);
    sr_kmip_client_free(c);
    pykmip_stop();
}

int main(void)
{
    static const char *const certs[] = {"client2:application", NULL};
    char cmd[2048], out[4096];
    snprintf(dir, sizeof dir, "%s", sr_test_path("kms"));
    if (kmsd_init(dir, certs, &port) != 0 || kmsd_start(dir, port) != 0) return 1;
    /* this process's audit log: the open refused by the KMS must be in it */
    snprintf(cmd, sizeof cmd, "%s keygen --out %s/audit", sr_test_build_path("audit/tde-audit"), sr_test_tmpdir());
    if (sr_test_command(out, sizeof out, cmd) != 0) return fprintf(stderr, "%s\n", out), 1;
    snprintf(cmd, sizeof cmd, "%s/audit.log", sr_test_tmpdir());
    setenv("STRONGROOM_AUDIT_LOG", cmd, 1);
    snprintf(cmd, sizeof cmd, "%s/audit.sign", sr_test_tmpdir());
    setenv("STRONGROOM_AUDIT_KEY", cmd, 1);
    sr_audit_writer_t *w = NULL;
    if (sr_secure_init() != SR_OK || sr_audit_open_from_env(&w) != SR_OK || sr_sqlite_register(NULL, 0) != SQLITE_OK)
        return fprintf(stderr, "%s\n", sr_err_detail()), 1;
    SR_RUN(test_tablespace_under_a_kms_master_key);
    SR_RUN(test_wrap_here_with_a_key_read_by_get);
    SR_RUN(test_provider_against_pykmip_server);
    kmsd_stop(SIGTERM);
    return sr_test_finish();
}
