/*
 * bench_pam_login — what pam_strongroom.so adds to a PostgreSQL login:
 * `pgbench -C` (a new connection per transaction) through PAM with the
 * password check alone, then with our gate in front of it (10 and 10,000
 * rules, the matching one last, each decision sealed by the host's audit
 * sealer, as in production), deciding itself or asking the host's tde-agent
 * (agent_socket=; a kmsd and one enrolled agent holding the same policy
 * file; the agent is the host's sealer and records what it decides). pgbench reports a mean, so each configuration is also measured
 * login by login through libpq (connect, SELECT 1, close): p50 and p99.
 * Needs root (PostgreSQL runs as postgres).
 */
#include "kmsd_server.h"
#include "pg_pam.h"
#include "sr_test.h"

#include <libpq-fe.h>

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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* n logins through libpq, one after another: p50 and p99 of each login's time (ms). */
static int logins(const char *host, uint16_t port, int n, double *p50, double *p99)
{
    double *ms = calloc((size_t)n, sizeof *ms);
    char conninfo[300];
    snprintf(conninfo, sizeof conninfo, "host=%s port=%u user=alice password=secret dbname=postgres", host, port);
    int ok = ms != NULL;
    for (int i = 0; ok && i < n; i++) {
        uint64_t t0 = sr_time_mono_ns();
        PGconn *c = PQconnectdb(conninfo);
        PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, "SELECT 1") : NULL;
        ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!ok) fprintf(stderr, "login %d: %s", i, PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        ms[i] = (double)(sr_time_mono_ns() - t0) / 1e6;
    }
    if (ok) qsort(ms, (size_t)n, sizeof *ms, cmp_double), *p50 = ms[n / 2], *p99 = ms[n * 99 / 100];
    free(ms);
    return ok ? 0 : -1;
}

/* A kmsd and one agent enrolled with it, whose access policy is `policy`:
 * the agent's pid, or -1. */
static pid_t start_agent(const char *dir, const char *policy, char *agent_sock, size_t cap)
{
    char kdir[700], adir[700], cmd[4096], mk[64] = "", token[80] = "";
    uint16_t kport = 0;
    snprintf(kdir, sizeof kdir, "%s/kms", dir), snprintf(adir, sizeof adir, "%s/agent", dir);
    if (kmsd_init(kdir, NULL, &kport) != 0 || kmsd_start(kdir, kport) != 0 ||
        kmsctl_run(kdir, out, sizeof out, "key create tablespaces --activate") != 0)
        return -1;
    (void)kmsctl_answer(out, 36, mk, sizeof mk);
    if (kmsctl_run(kdir, out, sizeof out, "token create --uses 1") != 0) return -1;
    (void)kmsctl_answer(out, 64, token, sizeof token);
    snprintf(cmd, sizeof cmd, "%s/agent.conf", adir);
    char conf[4096];
    /* the host's sealer, as in production: it records the decisions it makes */
    int len = snprintf(conf, sizeof conf, "[agent]\nstate_dir = state\nsocket = agent.sock\nname = bench\n"
                       "token_file = token\nmaster_key = %s\npolicy = %s\n[audit]\nsocket = audit.sock\n"
                       "log = audit.log\nsign_key = audit.sign\n[kms]\nservers = 127.0.0.1:%u\nca = %s/ca.pem\n",
                       mk, policy, kport, kdir);
    if (!mk[0] || !token[0] || mkdir(adir, 0755) != 0 || sr_test_write_file(cmd, conf, (size_t)len) != 0) return -1;
    snprintf(cmd, sizeof cmd, "%s keygen --out %s/audit", sr_test_build_path("audit/tde-audit"), adir);
    if (sr_test_command(out, sizeof out, cmd) != 0) return -1;
    snprintf(cmd, sizeof cmd, "%s/token", adir);
    if (sr_test_write_file(cmd, token, strlen(token)) != 0) return -1;
    snprintf(agent_sock, cap, "%s/agent.sock", adir);
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(adir) != 0 || !freopen("agent.log", "a", stderr) || !freopen("agent.out", "a", stdout)) _exit(126);
        execl(sr_test_build_path("agent/tde-agent"), "tde-agent", "run", "--config", "agent.conf", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300 && access(agent_sock, F_OK) != 0; i++) usleep(50000);
    return access(agent_sock, F_OK) == 0 ? pid : -1;
}

int main(void)
{
    if (!pgpam_available()) {
        printf("not measured: needs root, postgresql-15 and libpam-wrapper (PostgreSQL runs as postgres)\n");
        return 0;
    }
    int quick = getenv("SR_BENCH_QUICK") != NULL, n_logins = quick ? 200 : 2000;
    double seconds = quick ? 2 : 8;
    char dir[600], policy[700], sock[700], cmd[2048], agent_sock[800];
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
    pid_t agent = start_agent(dir, policy, agent_sock, sizeof agent_sock);
    if (agent < 0) fprintf(stderr, "no agent (the agent rows are not measured): %s\n", out);
    uint16_t port = 0;
    snprintf(cmd, sizeof cmd, "%s/select.sql", dir);
    sr_test_write_file(cmd, "SELECT 1;\n", 10);
    if (pgpam_service(dir, "bench-plain", NULL, NULL, NULL) != 0 || pgpam_service(dir, "bench-acl", policy, sock, NULL) != 0 ||
        pgpam_start(dir, "local all all trust\nhost all all 127.0.0.1/32 pam pamservice=bench-plain\n"
                         "host all all ::1/128 pam pamservice=bench-acl\n", &port, out, sizeof out) != 0 ||
        pgpam_sql(dir, port, "CREATE ROLE alice LOGIN", out, sizeof out) != 0) {
        fprintf(stderr, "PostgreSQL did not start: %s\n", out);
        kill(sealer, SIGTERM);
        if (agent > 0) kill(agent, SIGTERM);
        kmsd_stop(SIGTERM);
        return 1;
    }
    enum { RUNS = 5 };
    static const char *names[RUNS] = {"password check (pam_matrix)", "pam_strongroom.so, 10 rules",
                                      "pam_strongroom.so, 10,000 rules", "pam_strongroom.so, 10 rules, agent decides",
                                      "pam_strongroom.so, 10,000 rules, agent decides"};
    static const int rules[RUNS] = {0, 10, 10000, 10, 10000}, by_agent[RUNS] = {0, 0, 0, 1, 1};
    double tps[RUNS] = {0}, conn[RUNS] = {0}, p50[RUNS] = {0}, p99[RUNS] = {0};
    for (int k = 0; k < RUNS; k++) {
        if (by_agent[k] && agent < 0) continue;
        if (rules[k]) write_policy(policy, rules[k]);
        if (pgpam_service(dir, "bench-acl", policy, sock, by_agent[k] ? agent_sock : NULL) != 0) break;
        const char *host = k ? "::1" : "127.0.0.1";
        if (run_pgbench(dir, host, port, seconds) != 0) {
            fprintf(stderr, "pgbench: %s\n", out);
            break;
        }
        tps[k] = field("tps = ");
        conn[k] = field("average connection time = ");
        if (tps[k] <= 0) fprintf(stderr, "pgbench printed:\n%s\n", out);
        if (logins(host, port, n_logins, &p50[k], &p99[k]) != 0) break;
    }
    printf("PostgreSQL 15 logins through PAM: pgbench -C (a connection per transaction, one client, %.0f s each), "
           "then %d logins one by one through libpq (connect, SELECT 1, close); every decision sealed durably\n\n"
           "| PAM stack (+ password check) | logins/s | mean connection | p50 login | p99 login | p99 added |\n"
           "|---|---:|---:|---:|---:|---:|\n", seconds, n_logins);
    for (int k = 0; k < RUNS; k++) {
        if (tps[k] <= 0) {
            printf("| %s | not measured | | | | |\n", names[k]);
            continue;
        }
        printf("| %s | %.0f | %.2f ms | %.2f ms | %.2f ms | ", names[k], tps[k], conn[k], p50[k], p99[k]);
        if (k) printf("%.2f ms |\n", p99[k] - p99[0]);
        else printf("|\n");
    }
    printf("\nTarget: < 1 ms added per login at p99.\n");
    pgpam_stop(dir);
    kill(sealer, SIGTERM);
    waitpid(sealer, NULL, 0);
    if (agent > 0) kill(agent, SIGTERM), waitpid(agent, NULL, 0);
    kmsd_stop(SIGTERM);
    return 0;
}
