/*
 * bench_agents — scale-out and scale-in at 200 nodes (agent issue): a real
 * kmsd (lease 3 s, grace 1 s) and 200 tde-agent processes started at once,
 * each enrolling with a join token and serving a Unix socket.
 *   enrolment: from each agent's start to its socket, p50/p99, and the whole
 *              wave;
 *   cached open: an open of an encrypted tablespace (and a read) through an
 *              agent whose key is cached, beside the same with a local key
 *              file, in one run;
 *   scale-in:  50 agents stopped (SIGTERM: they leave, kmsd revokes at once)
 *              and 50 killed (SIGKILL: kmsd revokes when the lease runs out),
 *              the time until kmsd lists them all left / expired.
 * SR_BENCH_AGENTS=N for another count (at most 250); SR_BENCH_QUICK=1: 20;
 * SR_BENCH_OPENS=N opens each way (500).
 */
#include "kmsd_server.h"
#include <sqlite3.h>
#include "sr_test.h"
#include "tde.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_AGENTS 250

static char kdir[600], out[1 << 20], mk[64];
static pid_t pids[MAX_AGENTS];

static const char *agent_dir(int i)
{
    static char path[700];
    snprintf(path, sizeof path, "%s/node%03d", sr_test_tmpdir(), i);
    return path;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int count(const char *what)
{
    int n = 0;
    for (const char *p = strstr(out, what); p; p = strstr(p + 1, what)) n++;
    return n;
}

/* ms until kmsd lists `want` nodes in state `state`, or -1 after 30 s. */
static long long until_state(const char *state, int want, uint64_t since)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"state\": \"%s\"", state);
    while (sr_time_mono_ms() - since < 30000) {
        if (kmsctl_run(kdir, out, sizeof out, "node list --json") == 0 && count(needle) >= want)
            return (long long)(sr_time_mono_ms() - since);
        usleep(100000);
    }
    return -1;
}

/* One open of the tablespace at uri and a read of a row: ns, or 0 on failure. */
static uint64_t open_once(const char *uri)
{
    uint64_t t0 = sr_time_mono_ns();
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "SELECT count(*) FROM t", NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "open %s: %s\n", uri, sqlite3_errmsg(db));
        sqlite3_close(db);
        return 0;
    }
    sqlite3_close(db);
    return sr_time_mono_ns() - t0;
}

/* n opens of each, taken in turns (the same moments for both, on a machine
 * where 200 agents heartbeat): µs per open of each. */
static int open_us(const char *a, const char *b, int n, double *a_us, double *b_us)
{
    uint64_t ta = 0, tb = 0;
    for (int k = 0; k < n; k++) {
        uint64_t x = open_once(a), y = open_once(b);
        if (!x || !y) return -1;
        ta += x, tb += y;
    }
    *a_us = (double)ta / 1000.0 / n, *b_us = (double)tb / 1000.0 / n;
    return 0;
}

static int create_table(const char *uri)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

int main(void)
{
    const char *env = getenv("SR_BENCH_AGENTS");
    int n = getenv("SR_BENCH_QUICK") ? 20 : env ? atoi(env) : 200;
    if (n < 8 || n > MAX_AGENTS) n = 200;
    sr_log_set_level(SR_LOG_WARN); /* no sink here: events would go to stderr */
    uint16_t port = 0;
    char cmd[8192], token[80];
    snprintf(kdir, sizeof kdir, "%s", sr_test_path("kms"));
    if (kmsd_init(kdir, NULL, &port) != 0) return 1;
    snprintf(cmd, sizeof cmd, "sed -i 's/^lease = 30s/lease = 3s/; s/^grace = 5s/grace = 1s/' %s/kmsd.conf", kdir);
    if (sr_test_command(out, sizeof out, cmd) != 0 || kmsd_start(kdir, port) != 0) return 1;
    if (kmsctl_run(kdir, out, sizeof out, "key create tablespaces --activate") != 0) return 1;
    kmsctl_answer(out, 36, mk, sizeof mk);
    snprintf(cmd, sizeof cmd, "key grant %s @web", mk);
    if (kmsctl_run(kdir, out, sizeof out, cmd) != 0) return 1;
    snprintf(cmd, sizeof cmd, "token create --group web --uses %d --ttl 1h", n);
    if (kmsctl_run(kdir, out, sizeof out, cmd) != 0) return 1;
    kmsctl_answer(out, 64, token, sizeof token);
    for (int i = 0; i < n; i++) {
        char path[800], text[2048];
        if (mkdir(agent_dir(i), 0700) != 0) return 1;
        snprintf(path, sizeof path, "%s/token", agent_dir(i));
        if (sr_test_write_file(path, token, strlen(token)) != 0) return 1;
        int len = snprintf(text, sizeof text,
                           "[agent]\nstate_dir = state\nsocket = agent.sock\nname = node-%03d\nheartbeat = 1s\n"
                           "token_file = token\nmaster_key = %s\n[kms]\nservers = 127.0.0.1:%u\nca = %s/ca.pem\n",
                           i, mk, port, kdir);
        snprintf(path, sizeof path, "%s/agent.conf", agent_dir(i));
        if (sr_test_write_file(path, text, (size_t)len) != 0) return 1;
    }
    /* scale-out: all at once */
    static uint64_t started[MAX_AGENTS], ready[MAX_AGENTS], took[MAX_AGENTS];
    uint64_t wave = sr_time_mono_ms();
    for (int i = 0; i < n; i++) {
        started[i] = sr_time_mono_ms();
        if ((pids[i] = fork()) == 0) {
            if (chdir(agent_dir(i)) != 0 || !freopen("agent.log", "a", stderr) || !freopen("agent.out", "a", stdout))
                _exit(126);
            execl(sr_test_build_path("agent/tde-agent"), "tde-agent", "run", "--config", "agent.conf", (char *)NULL);
            _exit(127);
        }
    }
    int left = n;
    while (left && sr_time_mono_ms() - wave < 120000) {
        for (int i = 0; i < n; i++) {
            char sock[800];
            struct stat st;
            snprintf(sock, sizeof sock, "%s/agent.sock", agent_dir(i));
            if (!ready[i] && stat(sock, &st) == 0) ready[i] = sr_time_mono_ms(), took[i] = ready[i] - started[i], left--;
        }
        usleep(5000);
    }
    if (left) return fprintf(stderr, "%d agents did not start serving in 120 s\n", left), 1;
    uint64_t all = 0;
    for (int i = 0; i < n; i++) all = ready[i] - wave > all ? ready[i] - wave : all;
    qsort(took, (size_t)n, sizeof *took, cmp_u64);
    /* the cached open */
    char uri[1200], key[800], kuri[1200];
    snprintf(uri, sizeof uri, "file:%s/data.db?vfs=strongroom&agent=%s/agent.sock", agent_dir(n - 1), agent_dir(n - 1));
    snprintf(key, sizeof key, "%s/local.key", sr_test_tmpdir());
    snprintf(kuri, sizeof kuri, "file:%s/local.db?vfs=strongroom&keyfile=%s", sr_test_tmpdir(), key);
    if (sr_secure_init() != SR_OK || sr_sqlite_register(NULL, 0) != SQLITE_OK || sr_keyfile_create(key) != SR_OK ||
        create_table(uri) != SQLITE_OK || create_table(kuri) != SQLITE_OK)
        return fprintf(stderr, "cannot make the tablespaces: %s\n", sr_err_detail()), 1;
    int opens = getenv("SR_BENCH_OPENS") ? atoi(getenv("SR_BENCH_OPENS")) : getenv("SR_BENCH_QUICK") ? 50 : 500;
    if (opens < 1) opens = 500;
    double agent_us = 0, file_us = 0;
    if (open_us(uri, kuri, opens, &agent_us, &file_us) != 0) return 1;
    /* scale-in */
    int q = n / 4;
    uint64_t t0 = sr_time_mono_ms();
    for (int i = 0; i < q; i++) kill(pids[i], SIGTERM);
    for (int i = 0; i < q; i++) waitpid(pids[i], NULL, 0);
    long long left_ms = until_state("left", q, t0);
    t0 = sr_time_mono_ms();
    for (int i = q; i < 2 * q; i++) kill(pids[i], SIGKILL), waitpid(pids[i], NULL, 0);
    long long expired_ms = until_state("expired", q, t0);

    printf("%d tde-agent processes and one kmsd on this machine (%ld cores); lease 3 s, grace 1 s\n\n", n,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("| measure | value |\n|---|---|\n");
    printf("| enrolment, start to serving, p50 | %llu ms |\n", (unsigned long long)took[n / 2]);
    printf("| enrolment, p99 | %llu ms |\n", (unsigned long long)took[n * 99 / 100]);
    printf("| all %d enrolled and serving | %llu ms after the first start |\n", n, (unsigned long long)all);
    printf("| open + read through the agent (key cached) | %.0f µs |\n", agent_us);
    printf("| open + read with a local key file | %.0f µs |\n", file_us);
    printf("| the agent's cost per open | %.0f µs (%.2fx) |\n", agent_us - file_us, agent_us / file_us);
    printf("| %d agents stopped (leave): all listed left | %lld ms after SIGTERM |\n", q, left_ms);
    printf("| %d agents killed: all listed expired | %lld ms after SIGKILL (lease + grace: 4,000 ms) |\n", q,
           expired_ms);
    for (int i = 2 * q; i < n; i++) kill(pids[i], SIGTERM);
    for (int i = 2 * q; i < n; i++) waitpid(pids[i], NULL, 0);
    kmsd_stop(SIGTERM);
    return left_ms < 0 || expired_ms < 0 ? 1 : 0;
}
