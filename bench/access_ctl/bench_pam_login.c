/*
 * bench_pam_login — what pam_strongroom.so adds to a PostgreSQL login:
 * `pgbench -C` (a new connection per transaction) through PAM, once with the
 * password check alone and once with our gate in front of it (a 10,000-rule
 * policy whose matching rule is the last, each decision sealed by the host's
 * audit sealer, as in production). Needs root (PostgreSQL runs as postgres).
 */
#include "pg_pam.h"
#include "sr_test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[1 << 16];

static double field(const char *name)
{
    const char *p = strstr(out, name);
    return p ? atof(p + strlen(name)) : -1;
}

/* n rules, the one that lets alice in last; replaced by rename, as tde-acl install does */
static void write_policy(const char *path, int n)
{
    char tmp[800];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *f = fopen(tmp, "w");
    for (int i = 0; i < n - 1; i++) fprintf(f, "allow * user%d 10.%d.%d.0/24 bench-acl\n", i, i / 256, i % 256);
    fprintf(f, "allow * alice ::1 bench-acl   # the last rule\n");
    fclose(f);
    chmod(tmp, 0644);
    if (rename(tmp, path) != 0) perror(path);
}

static int run_pgbench(const char *dir, const char *host, uint16_t port, double seconds)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd %s && PGPASSWORD=secret pgbench -n -C -c 1 -T %d -f select.sql -h %s -p %u -U alice "
             "postgres 2>&1", dir, (int)seconds, host, port);
    return sr_test_command(out, sizeof out, cmd);
}

int main(void)
{
    if (!pgpam_available()) {
        printf("not measured: needs root, postgresql-15 and libpam-wrapper (PostgreSQL runs as postgres)\n");
        return 0;
    }
    double seconds = getenv("SR_BENCH_QUICK") ? 2 : 8;
    char dir[600], policy[700], sock[700], cmd[2048];
    snprintf(dir, sizeof dir, "%s/pg", sr_test_tmpdir());
    chmod(sr_test_tmpdir(), 0755);
    if (pgpam_init(dir, "alice") != 0) return fprintf(stderr, "cannot prepare %s\n", dir), 1;
    snprintf(policy, sizeof policy, "%s/acl.conf", dir);
    write_policy(policy, 10);
    snprintf(sock, sizeof sock, "%s/audit.sock", dir);
    snprintf(cmd, sizeof cmd, "%s keygen --out %s/audit", sr_test_build_path("audit/tde-audit"), dir);
    if (sr_test_command(out, sizeof out, cmd) != 0) return fprintf(stderr, "%s\n", out), 1;
    pid_t sealer = fork();
    if (sealer == 0) {
        char log[700], key[700];
        snprintf(log, sizeof log, "%s/audit.log", dir), snprintf(key, sizeof key, "%s/audit.sign", dir);
        if (!freopen("/dev/null", "w", stderr)) _exit(126);
        execl(sr_test_build_path("audit/tde-audit"), "tde-audit", "serve", "--socket", sock, "--log", log, "--sign-key",
              key, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && access(sock, F_OK) != 0; i++) usleep(50000);
    uint16_t port = 0;
    snprintf(cmd, sizeof cmd, "%s/select.sql", dir);
    sr_test_write_file(cmd, "SELECT 1;\n", 10);
    if (pgpam_service(dir, "bench-plain", NULL, NULL) != 0 || pgpam_service(dir, "bench-acl", policy, sock) != 0 ||
        pgpam_start(dir, "local all all trust\nhost all all 127.0.0.1/32 pam pamservice=bench-plain\n"
                         "host all all ::1/128 pam pamservice=bench-acl\n", &port, out, sizeof out) != 0 ||
        pgpam_sql(dir, port, "CREATE ROLE alice LOGIN", out, sizeof out) != 0) {
        fprintf(stderr, "PostgreSQL did not start: %s\n", out);
        kill(sealer, SIGTERM);
        return 1;
    }
    double tps[3] = {0}, conn[3] = {0};
    const char *hosts[3] = {"127.0.0.1", "::1", "::1"};
    for (int k = 0; k < 3; k++) {
        if (k == 2) write_policy(policy, 10000);
        if (run_pgbench(dir, hosts[k], port, seconds) != 0) {
            fprintf(stderr, "pgbench: %s\n", out);
            break;
        }
        tps[k] = field("tps = ");
        conn[k] = field("average connection time = ");
        if (tps[k] <= 0) fprintf(stderr, "pgbench printed:\n%s\n", out);
    }
    printf("PostgreSQL 15 logins through PAM, pgbench -C (a connection per transaction, one client, %.0f s each)\n\n"
           "| PAM stack | logins/s | average connection time |\n|---|---:|---:|\n"
           "| password check (pam_matrix) | %.0f | %.2f ms |\n"
           "| pam_strongroom.so, 10 rules, + password check | %.0f | %.2f ms |\n"
           "| pam_strongroom.so, 10,000 rules, + password check | %.0f | %.2f ms |\n\n"
           "Added per login (mean): %.2f ms with 10 rules, %.2f ms with 10,000 (each decision a sealed audit record).\n"
           "Target: < 1 ms at p99 (pgbench reports the mean, not a p99).\n",
           seconds, tps[0], conn[0], tps[1], conn[1], tps[2], conn[2], conn[1] - conn[0], conn[2] - conn[0]);
    pgpam_stop(dir);
    kill(sealer, SIGTERM);
    waitpid(sealer, NULL, 0);
    return 0;
}
