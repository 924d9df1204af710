/*
 * bench_agents — scale-out and scale-in at 200 nodes (agent issue): a real
 * kmsd (lease 3 s, grace 1 s) and 200 tde-agent processes started at once,
 * each enrolling with a join token and serving a Unix socket.
 *   enrolment: from each agent's start to its socket, and to the first
 *              open of an encrypted tablespace through it (a copy of one
 *              made before, as a replica started from a snapshot has: the
 *              agent asks kmsd for its key), p50/p99, and the whole wave;
 *              each node's open is a thread of this process that waits for
 *              its agent's socket;
 *   cached open: an open of an encrypted tablespace (and a read) through an
 *              agent whose key is cached, beside the same with a local key
 *              file, in one run; and through an agent that is its host's
 *              audit sealer (each key request a durable record);
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

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <spawn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_AGENTS 250

static char kdir[600], out[1 << 20], mk[64];
static pid_t pids[MAX_AGENTS + 1]; /* the nodes', and the seed's at [n] */

/* A failed run leaves nothing behind: every agent started is killed, and kmsd stopped. */
static int abandon(const char *why)
{
    fprintf(stderr, "bench_agents: %s\n", why);
    for (int i = 0; i <= MAX_AGENTS; i++)
        if (pids[i] > 0) kill(pids[i], SIGKILL), waitpid(pids[i], NULL, 0);
    kmsd_stop(SIGTERM);
    return 1;
}

static const char *agent_dir(int i)
{
    static _Thread_local char path[700]; /* the nodes' opener threads call it at once */
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

/* One node of the wave: its agent's start, its socket, its first open. */
typedef struct node {
    int i, wd;
    uint64_t started, opened; /* ms, monotonic */
    _Atomic uint64_t serving;
    sem_t ready;               /* posted when the agent's socket appears */
    pthread_t opener;
} node_t;

static node_t nodes[MAX_AGENTS];
static int inotify_fd = -1, wave_size;

/* The sockets appearing: an agent renames its socket into place once it
 * listens, and inotify says so at once (200 threads polling stat() took a
 * quarter of the machine's CPU from the agents being measured). */
static void *watch_sockets(void *arg)
{
    (void)arg;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (int left = wave_size; left > 0;) {
        ssize_t n = read(inotify_fd, buf, sizeof buf);
        if (n <= 0) return NULL;
        uint64_t now = sr_time_mono_ms();
        for (char *p = buf; p < buf + n; p += sizeof(struct inotify_event) + ((struct inotify_event *)p)->len) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (!ev->len || strcmp(ev->name, "agent.sock") != 0) continue;
            for (int i = 0; i < wave_size; i++)
                if (nodes[i].wd == ev->wd && !nodes[i].serving) {
                    nodes[i].serving = now;
                    sem_post(&nodes[i].ready);
                    left--;
                }
        }
    }
    return NULL;
}

/* A node's engine: waits for its agent's socket, then opens its tablespace through it. */
static void *first_open(void *arg)
{
    node_t *nd = arg;
    char uri[1800];
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 120;
    if (sem_timedwait(&nd->ready, &until) != 0) return NULL;
    snprintf(uri, sizeof uri, "file:%s/data.db?vfs=strongroom&agent=%s/agent.sock", agent_dir(nd->i), agent_dir(nd->i));
    if (open_once(uri)) nd->opened = sr_time_mono_ms();
    return NULL;
}

/* CPU time a process's threads have run so far, ms (the kernel's schedstat, ns). */
static double cpu_ms(pid_t pid)
{
    char path[64];
    unsigned long long total = 0;
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *tasks = opendir(path);
    for (struct dirent *t; tasks && (t = readdir(tasks));) {
        char stat_path[300];
        unsigned long long ns = 0;
        snprintf(stat_path, sizeof stat_path, "/proc/%d/task/%s/schedstat", (int)pid, t->d_name);
        FILE *f = t->d_name[0] == '.' ? NULL : fopen(stat_path, "r");
        if (f && fscanf(f, "%llu", &ns) == 1) total += ns;
        if (f) fclose(f);
    }
    if (tasks) closedir(tasks);
    return (double)total / 1e6;
}

/* This process's CPU time so far, ms, its ended threads' included. */
static double own_cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int create_table(const char *uri)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

/* posix_spawn (no copy of this process's page tables, as fork would make
 * 200 times while the wave runs): in the node's directory, its output to
 * agent.out and agent.log. */
static pid_t start_agent(int i)
{
    char out_path[800], log_path[800];
    snprintf(out_path, sizeof out_path, "%s/agent.out", agent_dir(i));
    snprintf(log_path, sizeof log_path, "%s/agent.log", agent_dir(i));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addchdir_np(&fa, agent_dir(i));
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    char *argv[] = {"tde-agent", "run", "--config", "agent.conf", NULL};
    extern char **environ;
    pid_t pid = -1;
    int rc = posix_spawn(&pid, sr_test_build_path("agent/tde-agent"), &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

static int wait_socket(int i)
{
    char sock[800];
    struct stat st;
    snprintf(sock, sizeof sock, "%s/agent.sock", agent_dir(i));
    for (int k = 0; k < 3000; k++, usleep(10000))
        if (stat(sock, &st) == 0) return 0;
    return -1;
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
    snprintf(cmd, sizeof cmd, "token create --group web --uses %d --ttl 1h", n + 1); /* and the seed's */
    if (kmsctl_run(kdir, out, sizeof out, cmd) != 0) return 1;
    kmsctl_answer(out, 64, token, sizeof token);
    for (int i = 0; i <= n; i++) { /* n: the seed */
        char path[800], text[2048];
        if (mkdir(agent_dir(i), 0700) != 0) return 1;
        snprintf(path, sizeof path, "%s/token", agent_dir(i));
        if (sr_test_write_file(path, token, strlen(token)) != 0) return 1;
        int len = snprintf(text, sizeof text,
                           "[agent]\nstate_dir = state\nsocket = agent.sock\nname = node-%03d\nheartbeat = 1s\n"
                           "token_file = token\nmaster_key = %s\n[kms]\nservers = 127.0.0.1:%u\nca = %s/ca.pem\n",
                           i, mk, port, kdir);
        if (i == n - 2) { /* this one is its host's audit sealer: each key request a durable record */
            snprintf(cmd, sizeof cmd, "%s keygen --out %s/audit", sr_test_build_path("audit/tde-audit"), agent_dir(i));
            if (sr_test_command(out, sizeof out, cmd) != 0) return 1;
            len += snprintf(text + len, sizeof text - (size_t)len,
                            "[audit]\nsocket = audit.sock\nlog = audit.log\nsign_key = audit.sign\n");
        }
        snprintf(path, sizeof path, "%s/agent.conf", agent_dir(i));
        if (sr_test_write_file(path, text, (size_t)len) != 0) return 1;
    }
    /* the tablespace every node opens first: made through a seed agent (which then leaves), copied to each node */
    char uri[1200], key[800], kuri[1200];
    if (sr_secure_init() != SR_OK || sr_sqlite_register(NULL, 0) != SQLITE_OK)
        return abandon(sr_err_detail());
    pids[n] = start_agent(n);
    snprintf(uri, sizeof uri, "file:%s/data.db?vfs=strongroom&agent=%s/agent.sock", agent_dir(n), agent_dir(n));
    if (pids[n] < 0 || wait_socket(n) != 0 || create_table(uri) != SQLITE_OK)
        return abandon("cannot make the tablespace through the seed agent");
    kill(pids[n], SIGTERM), waitpid(pids[n], NULL, 0), pids[n] = 0;
    char seed_db[800];
    snprintf(seed_db, sizeof seed_db, "%s/data.db", agent_dir(n));
    for (int i = 0; i < n; i++) {
        snprintf(cmd, sizeof cmd, "cp %s %s/data.db", seed_db, agent_dir(i));
        if (sr_test_command(out, sizeof out, cmd) != 0) return abandon(out);
    }
    /* scale-out: all at once, each node's engine opening its tablespace as soon as its agent serves */
    static uint64_t serving[MAX_AGENTS], opened[MAX_AGENTS];
    pthread_t watcher;
    wave_size = n;
    if ((inotify_fd = inotify_init1(IN_CLOEXEC)) < 0) return abandon("inotify_init1 failed");
    for (int i = 0; i < n; i++) {
        nodes[i] = (node_t){.i = i, .wd = inotify_add_watch(inotify_fd, agent_dir(i), IN_MOVED_TO | IN_CREATE)};
        if (nodes[i].wd < 0 || sem_init(&nodes[i].ready, 0, 0) != 0 ||
            pthread_create(&nodes[i].opener, NULL, first_open, &nodes[i]) != 0)
            return abandon("cannot watch a node's directory or start its engine thread");
    }
    if (pthread_create(&watcher, NULL, watch_sockets, NULL) != 0) return abandon("cannot start the watcher");
    uint64_t wave = sr_time_mono_ms(), all = 0;
    double kmsd_before = cpu_ms(kmsd_pid()), self_before = own_cpu_ms(), agents_cpu = 0;
    for (int i = 0; i < n; i++) {
        nodes[i].started = sr_time_mono_ms();
        if ((pids[i] = start_agent(i)) < 0) return abandon("cannot start a node");
    }
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(nodes[i].opener, NULL);
        failed += !nodes[i].opened;
        serving[i] = nodes[i].serving - nodes[i].started, opened[i] = nodes[i].opened - nodes[i].started;
        all = nodes[i].opened - wave > all ? nodes[i].opened - wave : all;
    }
    double kmsd_cpu = cpu_ms(kmsd_pid()) - kmsd_before, self_cpu = own_cpu_ms() - self_before;
    for (int i = 0; i < n; i++) agents_cpu += cpu_ms(pids[i]);
    close(inotify_fd); /* the watcher is done, or stuck on a node that never served: its read ends */
    if (failed) return abandon("nodes could not open their tablespace in 120 s (their agent.log says why)");
    pthread_join(watcher, NULL);
    qsort(serving, (size_t)n, sizeof *serving, cmp_u64);
    qsort(opened, (size_t)n, sizeof *opened, cmp_u64);
    /* the cached open */
    snprintf(uri, sizeof uri, "file:%s/data.db?vfs=strongroom&agent=%s/agent.sock", agent_dir(n - 1), agent_dir(n - 1));
    snprintf(key, sizeof key, "%s/local.key", sr_test_tmpdir());
    snprintf(kuri, sizeof kuri, "file:%s/local.db?vfs=strongroom&keyfile=%s", sr_test_tmpdir(), key);
    if (sr_keyfile_create(key) != SR_OK || create_table(kuri) != SQLITE_OK)
        return abandon(sr_err_detail());
    int opens = getenv("SR_BENCH_OPENS") ? atoi(getenv("SR_BENCH_OPENS")) : getenv("SR_BENCH_QUICK") ? 50 : 500;
    if (opens < 1) opens = 500;
    double agent_us = 0, file_us = 0, sealer_us = 0, file2_us = 0;
    if (open_us(uri, kuri, opens, &agent_us, &file_us) != 0) return abandon("an open failed");
    char suri[1200];
    snprintf(suri, sizeof suri, "file:%s/data.db?vfs=strongroom&agent=%s/agent.sock", agent_dir(n - 2), agent_dir(n - 2));
    if (open_us(suri, kuri, opens, &sealer_us, &file2_us) != 0) return abandon("an open failed");
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
    printf("| enrolment, start to serving, p50 / p99 | %llu / %llu ms |\n", (unsigned long long)serving[n / 2],
           (unsigned long long)serving[n * 99 / 100]);
    printf("| enrolment to first tablespace open, p50 | %llu ms |\n", (unsigned long long)opened[n / 2]);
    printf("| enrolment to first tablespace open, p99 | %llu ms |\n", (unsigned long long)opened[n * 99 / 100]);
    printf("| all %d enrolled, each with its tablespace open | %llu ms after the first start |\n", n,
           (unsigned long long)all);
    printf("| CPU per node during the wave: its agent / kmsd's share / its start and first open (this process) | "
           "%.1f / %.1f / %.1f ms |\n", agents_cpu / n, kmsd_cpu / n, self_cpu / n);
    printf("| open + read through the agent (key cached) | %.0f µs |\n", agent_us);
    printf("| open + read with a local key file | %.0f µs |\n", file_us);
    printf("| the agent's cost per open | %.0f µs (%.2fx) |\n", agent_us - file_us, agent_us / file_us);
    printf("| the same, the agent its host's audit sealer (each key request durable before the key leaves) | "
           "%.0f µs (%.2fx) |\n", sealer_us - file2_us, sealer_us / file2_us);
    printf("| %d agents stopped (leave): all listed left | %lld ms after SIGTERM |\n", q, left_ms);
    printf("| %d agents killed: all listed expired | %lld ms after SIGKILL (lease + grace: 4,000 ms) |\n", q,
           expired_ms);
    for (int i = 2 * q; i < n; i++) kill(pids[i], SIGTERM);
    for (int i = 2 * q; i < n; i++) waitpid(pids[i], NULL, 0);
    kmsd_stop(SIGTERM);
    return left_ms < 0 || expired_ms < 0 ? 1 : 0;
}
