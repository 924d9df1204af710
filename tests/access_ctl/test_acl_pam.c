/*
 * pam_strongroom.so for real, without touching the system's PAM
 * configuration (pam_wrapper redirects the service directory):
 *  - pamtester, with PAM_RHOST set: allowed and refused, the password checked
 *    after our gate (pam_matrix), an unreadable policy refused (fail closed);
 *  - a real PostgreSQL 15 server (initdb in a temp dir as the unprivileged
 *    `postgres` user, since initdb and postgres refuse root; loopback only; a
 *    free port), `host ... pam pamservice=...` in pg_hba.conf, and psql
 *    logins from 127.0.0.1 and ::1 as allowed and refused roles;
 * every decision one audit record through the host's sealer (tde-audit serve).
 */
#include "sr_test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_pam.h"

#define PRELOAD "LD_PRELOAD=libpam_wrapper.so"

static char dir[512], sock[600], log_path[600];
static pid_t sealer;
static char out[1 << 16];

static int sh(const char *fmt, ...) SR_PRINTF(1, 2);
static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return sr_test_command(out, sizeof out, cmd);
}

static void write_text(const char *path, const char *text)
{
    SR_CHECK(sr_test_write_file(path, text, strlen(text)) == 0);
    chmod(path, 0644);
}

static void write_service(const char *name, const char *policy) { SR_CHECK(pgpam_service(dir, name, policy, sock, NULL) == 0); }

static int pamtester(const char *service, const char *user, const char *rhost, const char *password)
{
    return sh("echo '%s' | " PRELOAD " PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=%s/pam.d "
              "pamtester -I rhost=%s %s %s authenticate acct_mgmt",
              password, dir, rhost, service, user);
}

static void test_pamtester(void)
{
    char policy[700];
    snprintf(policy, sizeof policy, "%s/acl.conf", dir);
    write_text(policy, "allow * alice 10.0.0.0/8,::1 srtest-pam   # office network\n"
                       "deny  * mallory * *                        # never\n");
    write_service("srtest-pam", policy);
    SR_CHECK_MSG(pamtester("srtest-pam", "alice", "10.1.2.3", "secret") == 0, "%s", out);
    SR_CHECK_MSG(pamtester("srtest-pam", "alice", "::1", "secret") == 0, "%s", out);
    SR_CHECK_MSG(pamtester("srtest-pam", "alice", "::ffff:10.9.9.9", "secret") == 0, "%s", out);
    SR_CHECK(pamtester("srtest-pam", "alice", "172.16.0.1", "secret") != 0);   /* not from there */
    SR_CHECK(pamtester("srtest-pam", "alice", "10.1.2.3", "wrong") != 0);      /* our gate passes, the password fails */
    SR_CHECK(pamtester("srtest-pam", "mallory", "10.1.2.3", "secret") != 0);   /* refused before the password */
    SR_CHECK(pamtester("srtest-pam", "alice", "evil.example.com", "secret") != 0); /* a name is untrusted */
    /* fail closed: a policy anyone may write refuses everyone */
    chmod(policy, 0666);
    SR_CHECK(pamtester("srtest-pam", "alice", "10.1.2.3", "secret") != 0);
    chmod(policy, 0644);
    /* ... and so does one that includes a file anyone may write */
    char included[700], including[700];
    snprintf(included, sizeof included, "%s/acl-included.conf", dir);
    snprintf(including, sizeof including, "%s/acl-including.conf", dir);
    write_text(included, "allow * alice * srtest-incl\n");
    write_text(including, "include acl-included.conf\n");
    write_service("srtest-incl", including);
    SR_CHECK_MSG(pamtester("srtest-incl", "alice", "10.1.2.3", "secret") == 0, "%s", out);
    chmod(included, 0666);
    /* refused; the record says why (test_audit_records) */
    SR_CHECK(pamtester("srtest-incl", "alice", "10.1.2.3", "secret") != 0);
    chmod(included, 0644);
    /* fail closed: a policy that does not parse refuses everyone */
    write_text(policy, "allow * alice 10.0.0.0/8 srtest-pam\nallow *\n");
    SR_CHECK(pamtester("srtest-pam", "alice", "10.1.2.3", "secret") != 0);
    write_text(policy, "allow * alice 10.0.0.0/8,::1 srtest-pam   # office network\n"
                       "deny  * mallory * *                        # never\n");
}

/* Policy replaced (tde-acl install: lint, then rename) while logins run: every
 * decision comes from the old or the new policy, none from a half-written one. */
static void test_reload_while_logins_run(void)
{
    char policy[700], a[700], b[700], digest_a[40] = "", digest_b[40] = "";
    snprintf(policy, sizeof policy, "%s/reload.conf", dir);
    snprintf(a, sizeof a, "%s/reload-a.conf", dir);
    snprintf(b, sizeof b, "%s/reload-b.conf", dir);
    size_t cap = 2000 * 64 + 256;
    char *ta = malloc(cap), *tb = malloc(cap);
    size_t la = (size_t)snprintf(ta, cap, "allow * alice * srtest-reload   # policy A\n");
    size_t lb = (size_t)snprintf(tb, cap, "deny * alice * *   # policy B\n");
    for (int i = 0; i < 2000; i++) { /* big enough that a torn copy would show */
        la += (size_t)snprintf(ta + la, cap - la, "allow * user%d 10.%d.%d.0/24 pg\n", i, i / 256, i % 256);
        lb += (size_t)snprintf(tb + lb, cap - lb, "allow * user%d 10.%d.%d.0/24 pg\n", i, i / 256, i % 256);
    }
    write_text(a, ta), write_text(b, tb), write_text(policy, ta);
    const char *files[2] = {a, b};
    char *digests[2] = {digest_a, digest_b};
    for (int k = 0; k < 2; k++) {
        SR_CHECK(sh("%s lint --json %s", sr_test_build_path("access_ctl/tde-acl"), files[k]) == 0);
        char *d = strstr(out, "sha256:");
        SR_CHECK(d != NULL);
        if (d) snprintf(digests[k], 40, "%.23s", d);
    }
    write_service("srtest-reload", policy);
    pid_t logins = fork();
    if (logins == 0) {
        for (int i = 0; i < 60; i++) (void)pamtester("srtest-reload", "alice", "10.1.2.3", "secret");
        _exit(0);
    }
    for (int i = 0; i < 40; i++) {
        SR_CHECK(sh("%s install %s %s", sr_test_build_path("access_ctl/tde-acl"), i % 2 ? a : b, policy) == 0);
        usleep(10000);
    }
    waitpid(logins, NULL, 0);
    free(ta), free(tb);
    /* the sealer has every record (durable before answered) */
    SR_CHECK(sh("grep '\"object\":\"srtest-reload\"' %s | grep -c .", log_path) == 0);
    int total = atoi(out);
    SR_CHECK(sh("grep '\"object\":\"srtest-reload\"' %s | grep -c -e 'policy %s' -e 'policy %s'", log_path, digest_a,
                digest_b) == 0);
    int from_a_or_b = atoi(out);
    (void)sh("grep '\"object\":\"srtest-reload\"' %s | grep -c '\"outcome\":\"failure\"'", log_path);
    int failures = atoi(out);
    printf("  %d login decisions during 40 policy replacements: %d from policy A or B, %d failed\n", total, from_a_or_b,
           failures);
    SR_CHECK(total >= 60 && from_a_or_b == total && failures == 0);
}

/* tde-acl lint refuses what the enforcement points refuse (an included file
 * anyone in the group may write); install compiles the policy as it will be
 * read at the target, whose includes are the target's neighbours. */
static void test_tde_acl_install_reads_as_the_target(void)
{
    const char *tde_acl = sr_test_build_path("access_ctl/tde-acl");
    SR_CHECK(sh("mkdir -p %s/src/acl.d %s/etc/acl.d", dir, dir) == 0);
    char src[700], inc[700], target[700], target_inc[700];
    snprintf(src, sizeof src, "%s/src/acl.conf", dir);
    snprintf(inc, sizeof inc, "%s/src/acl.d/a.conf", dir);
    snprintf(target, sizeof target, "%s/etc/acl.conf", dir);
    snprintf(target_inc, sizeof target_inc, "%s/etc/acl.d/b.conf", dir);
    write_text(src, "include acl.d/*.conf\n");
    write_text(inc, "allow * alice * *\n");
    write_text(target_inc, "allow * bob *\n"); /* broken: the target would not compile */
    SR_CHECK(sh("%s lint %s", tde_acl, src) == 0);
    SR_CHECK(sh("%s install %s %s", tde_acl, src, target) == SR_EXIT_FAILED);
    SR_CHECK_CONTAINS(out, "as ");
    SR_CHECK_CONTAINS(out, "etc/acl.d/b.conf:1:");
    SR_CHECK(access(target, F_OK) != 0); /* nothing installed */
    write_text(target_inc, "allow * bob * *\n");
    SR_CHECK(sh("%s install %s %s", tde_acl, src, target) == 0);
    SR_CHECK(sh("%s check --policy %s --user bob", tde_acl, target) == 0); /* the target's include decides */
    SR_CHECK_CONTAINS(out, "etc/acl.d/b.conf:1");
    chmod(inc, 0664);
    SR_CHECK(sh("%s lint %s", tde_acl, src) != 0);
    SR_CHECK_CONTAINS(out, "a.conf is writable by group or others");
    chmod(inc, 0644);
}

/* ---- PostgreSQL ------------------------------------------------------------------------------ */

static uint16_t pg_port;
static int pg_started;

static int psql_login(const char *user, const char *host, const char *password)
{
    return sh("PGPASSWORD=%s PGCONNECT_TIMEOUT=10 psql -X -h %s -p %u -U %s -d postgres -tAc 'SELECT 40 + 2'", password,
              host, pg_port, user);
}

static void test_postgresql_logins(void)
{
    char policy[700];
    snprintf(policy, sizeof policy, "%s/pg-acl.conf", dir);
    write_text(policy, "allow * alice 127.0.0.1,::1 srtest-pg   # alice from this host\n"
                       "allow * bob   127.0.0.1     srtest-pg   # bob over IPv4 only\n"
                       "deny  * mallory * *                     # never\n");
    write_service("srtest-pg", policy);
    SR_CHECK_MSG(pgpam_start(dir, "local all all trust\n"
                                  "host all all 127.0.0.1/32 pam pamservice=srtest-pg\n"
                                  "host all all ::1/128 pam pamservice=srtest-pg\n", &pg_port, out, sizeof out) == 0,
                 "PostgreSQL did not start: %s", out);
    pg_started = 1;
    SR_CHECK_MSG(pgpam_sql(dir, pg_port, "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE mallory LOGIN;",
                           out, sizeof out) == 0, "%s", out);
    SR_CHECK_MSG(psql_login("alice", "127.0.0.1", "secret") == 0 && strstr(out, "42"), "alice v4: %s", out);
    SR_CHECK_MSG(psql_login("alice", "::1", "secret") == 0 && strstr(out, "42"), "alice v6: %s", out);
    SR_CHECK_MSG(psql_login("bob", "127.0.0.1", "secret") == 0, "bob v4: %s", out);
    SR_CHECK(psql_login("bob", "::1", "secret") != 0 && strstr(out, "PAM authentication failed for user \"bob\""));
    SR_CHECK(psql_login("mallory", "127.0.0.1", "secret") != 0 &&
             strstr(out, "PAM authentication failed for user \"mallory\""));
    SR_CHECK(psql_login("alice", "127.0.0.1", "wrong") != 0); /* allowed by policy, refused by the password */
}

static void stop_postgres(void)
{
    if (pg_started) pgpam_stop(dir);
    pg_started = 0;
}

static void test_audit_records(void)
{
    kill(sealer, SIGTERM);
    waitpid(sealer, NULL, 0);
    sealer = 0;
    char *text = NULL;
    size_t len = 0;
    uint8_t *raw = sr_test_read_file(log_path, &len);
    SR_CHECK(raw != NULL);
    if (!raw) return;
    text = malloc(len + 1);
    memcpy(text, raw, len), text[len] = '\0';
    free(raw);
    int allowed = 0, denied = 0, failed = 0;
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        if (!strstr(l, "\"component\":\"pam\"") || strstr(l, "srtest-reload")) continue; /* that test counts its own */
        allowed += strstr(l, "\"outcome\":\"success\"") != NULL;
        denied += strstr(l, "\"outcome\":\"denied\"") != NULL;
        failed += strstr(l, "\"outcome\":\"failure\"") != NULL;
        /* the subject is the kernel's view of the process, the account its claim */
        SR_CHECK(strstr(l, "\"subject\":\"uid=") != NULL);
    }
    printf("  pam records: %d allowed, %d denied, %d failed (fail closed)\n", allowed, denied, failed);
    /* allowed: one record per login (the account stage reuses the auth stage's decision): 3 pamtester
     * logins + 1 wrong password + 1 through an include, the same for psql; denied: 172.16.0.1, mallory, a
     * host name; bob over ::1, mallory; failed: the world-writable policy, the world-writable include, the
     * unparsable policy */
    SR_CHECK(allowed == 9 && denied == 5 && failed == 3);
    free(text);
    SR_CHECK(sh("grep -c 'acl-included.conf is writable by group or others' %s", log_path) == 0);
    SR_CHECK(sh("grep -c 'by %s/pg-acl.conf:3 (never)' %s", dir, log_path) == 0);
    SR_CHECK(sh("grep -c 'no rule matched' %s", log_path) == 0);
    SR_CHECK(sh("%s verify --key %s/audit.pub --strict %s", sr_test_build_path("audit/tde-audit"), dir, log_path) == 0);
}

int main(void)
{
#ifdef SR_SANITIZED
    printf("skipped in the sanitizer build: pam_wrapper's RTLD_DEEPBIND cannot host a sanitized module "
           "(the gcc build runs this test; test_acl runs the module's logic sanitized)\n");
    return 77;
#endif
    if (!pgpam_available()) {
        fprintf(stderr, "needs root (to run PostgreSQL as the postgres user), postgresql-15, libpam-wrapper, pamtester\n");
        return 1;
    }
    /* a directory the postgres user can use; removed at the end */
    snprintf(dir, sizeof dir, "%s", sr_test_path("pam"));
    chmod(sr_test_tmpdir(), 0755);
    SR_CHECK(pgpam_init(dir, "alice,bob,mallory") == 0);
    snprintf(sock, sizeof sock, "%s/audit.sock", dir);
    snprintf(log_path, sizeof log_path, "%s/audit.log", sr_test_tmpdir());
    SR_CHECK(sh("%s keygen --out %s/audit", sr_test_build_path("audit/tde-audit"), dir) == 0);
    if ((sealer = fork()) == 0) {
        char key[700];
        snprintf(key, sizeof key, "%s/audit.sign", dir);
        if (!freopen("/dev/null", "w", stderr)) _exit(126);
        execl(sr_test_build_path("audit/tde-audit"), "tde-audit", "serve", "--socket", sock, "--log", log_path,
              "--sign-key", key, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && access(sock, F_OK) != 0; i++) usleep(50000);
    SR_RUN(test_pamtester);
    SR_RUN(test_reload_while_logins_run);
    SR_RUN(test_tde_acl_install_reads_as_the_target);
    SR_RUN(test_postgresql_logins);
    stop_postgres();
    SR_RUN(test_audit_records);
    if (sealer > 0) kill(sealer, SIGTERM), waitpid(sealer, NULL, 0);
    return sr_test_finish();
}
