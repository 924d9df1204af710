/*
 * Two kmsd over one PostgreSQL (run by tests/kms/with-postgres; skipped
 * without it): a client process keeps opening a tablespace whose data key is
 * wrapped by a KMS master key, and writing, while the first kmsd is
 * SIGKILLed — not one open fails; keys made through one kmsd are seen by the
 * other; agents enrolled through the dead kmsd keep their leases through the
 * other; a kmsd restarting beside a running one extends no lease; agents
 * SIGKILLed at once expire exactly once between two sweeping kmsd, because
 * write transactions of two store handles never overlap.
 */
#include "kms.h"
#include "kmsd_server.h"
#include "sr_test.h"
#include "tde.h"

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define AGENTS 6

static char dir[512], mk[64], out[1 << 16];
static uint16_t port_a, port_b;
static pid_t kmsd_b, agents[AGENTS];

/* kmsctl against kmsd A (which = 'a') or B ('b'). */
static int kmsctl_on(char which, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "KMSCTL_CONFIG=%s/kmsctl%s.conf %s %s", dir, which == 'b' ? "-b" : "",
             sr_test_build_path("kms_server/kmsctl"), args);
    return sr_test_command(out, sizeof out, cmd);
}

static int count_in(const char *file, const char *needle)
{
    char cmd[1200], text[64];
    snprintf(cmd, sizeof cmd, "grep -c -- '%s' %s", needle, file);
    if (sr_test_command(text, sizeof text, cmd) > 1) return -1;
    return atoi(text);
}

/* ---- agents ----------------------------------------------------------------------------------------- */

static const char *agent_dir(int i)
{
    static char path[AGENTS][4096];
    snprintf(path[i], sizeof path[i], "%s/ha-node%d", sr_test_tmpdir(), i);
    return path[i];
}

/* Enrols agent i with a new token; its [kms] lists A first, then B. */
static pid_t start_agent(int i)
{
    char path[4200], text[8192], token[80] = "";
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    SR_CHECK_MSG(kmsctl_on('a', "token create --group web") == 0 && kmsctl_answer(out, 64, token, sizeof token) == 0,
                 "%s", out);
    snprintf(path, sizeof path, "%s/token", agent_dir(i));
    SR_CHECK(sr_test_write_file(path, token, strlen(token)) == 0);
    int n = snprintf(text, sizeof text,
                     "[agent]\nstate_dir = state\nsocket = agent.sock\nname = ha-%d\nheartbeat = 1s\ntoken_file = token\n"
                     "master_key = %s\n[kms]\nservers = 127.0.0.1:%u, 127.0.0.1:%u\nca = %s/ca.pem\n",
                     i, mk, port_a, port_b, dir);
    snprintf(path, sizeof path, "%s/agent.conf", agent_dir(i));
    SR_CHECK(sr_test_write_file(path, text, (size_t)n) == 0);
    fflush(NULL); /* the child's freopen would write our buffered output again */
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(agent_dir(i)) != 0 || !freopen("agent.log", "a", stderr) || !freopen("/dev/null", "w", stdout))
            _exit(126);
        execl(sr_test_build_path("agent/tde-agent"), "tde-agent", "run", "--config", "agent.conf", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int agent_serving(int i)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/agent.sock", agent_dir(i));
    return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Writes a row to agent i's tablespace through its key service; SQLite's result code. */
static int write_through_agent(int i)
{
    char uri[8600];
    snprintf(uri, sizeof uri, "file:%s/data.db?vfs=strongroom&agent=%s/agent.sock", agent_dir(i), agent_dir(i));
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES(1)", 0, 0, 0);
    sqlite3_close(db);
    return rc;
}

/* How many nodes `kmsctl node list --json` (through B) shows in state. */
static int nodes_in(const char *state)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"state\": \"%s\"", state);
    if (kmsctl_on('b', "node list --json") != 0) return -1;
    int n = 0;
    for (const char *p = out; (p = strstr(p, needle)); p++) n++;
    return n;
}

/* ---- a client of the KMS that keeps going ---------------------------------------------------------------- */

/* In a child: opens the tablespace (its data key unwrapped by the KMS at
 * each open) and inserts a row, again and again for `ms`; reports
 * "opens failures slowest_ms" on fd. The parent never opens it, so no TLS
 * connection is shared across the fork. */
static void keep_opening(const char *conf, int ms, int fd)
{
    char uri[8600], db_path[4200], report[128];
    snprintf(db_path, sizeof db_path, "%s/ha.db", sr_test_tmpdir());
    snprintf(uri, sizeof uri, "file:%s?vfs=strongroom&kms=%s", db_path, conf);
    int opens = 0, failures = 0;
    double slowest = 0;
    uint64_t end = sr_time_mono_ms() + (uint64_t)ms;
    while (sr_time_mono_ms() < end) {
        uint64_t t0 = sr_time_mono_ns();
        sqlite3 *db = NULL;
        int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
        if (rc == SQLITE_OK) rc = sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES(1)", 0, 0, 0);
        if (rc != SQLITE_OK) fprintf(stderr, "open %d: %s\n", opens, db ? sqlite3_errmsg(db) : "no handle");
        sqlite3_close(db);
        double took = (double)(sr_time_mono_ns() - t0) / 1e6;
        if (took > slowest) slowest = took;
        opens++, failures += rc != SQLITE_OK;
        usleep(10000);
    }
    int n = snprintf(report, sizeof report, "%d %d %.0f", opens, failures, slowest);
    if (write(fd, report, (size_t)n) != n) _exit(1);
}

static void test_clients_and_leases_survive_a_dead_kmsd(void)
{
    char conf[4200], text[8192];
    snprintf(conf, sizeof conf, "%s/tde-kms.conf", sr_test_tmpdir());
    int n = snprintf(text, sizeof text,
                     "[kms]\nservers = 127.0.0.1:%u, 127.0.0.1:%u\nca = %s/ca.pem\ncert = %s/app.pem\nkey = %s/app.key\n"
                     "master_key = %s\ntimeout = 2s\n", port_a, port_b, dir, dir, dir, mk);
    SR_CHECK(sr_test_write_file(conf, text, (size_t)n) == 0);
    for (int i = 0; i < AGENTS; i++) agents[i] = start_agent(i);
    for (int waited = 0, serving = 0; serving < AGENTS && waited < 20000; waited += 100) {
        serving = 0;
        for (int i = 0; i < AGENTS; i++) serving += agent_serving(i);
        if (serving < AGENTS) usleep(100000);
    }
    SR_CHECK_EQ_INT(nodes_in("active"), AGENTS);
    int decrypts_on_b = count_in(sr_test_path("kmsd-b.log"), "kms.kmip.decrypt");

    int fds[2];
    SR_CHECK(pipe(fds) == 0);
    pid_t client = fork();
    if (client == 0) {
        close(fds[0]);
        keep_opening(conf, 6000, fds[1]);
        _exit(0);
    }
    close(fds[1]);
    usleep(1000000);
    SR_CHECK_EQ_INT(kmsd_stop(SIGKILL), 128 + SIGKILL); /* kmsd A, mid-request or not */
    char report[128] = "";
    ssize_t got = read(fds[0], report, sizeof report - 1);
    close(fds[0]);
    int status = 0;
    waitpid(client, &status, 0);
    int opens = 0, failures = -1;
    double slowest = 0;
    SR_CHECK_MSG(got > 0 && sscanf(report, "%d %d %lf", &opens, &failures, &slowest) == 3, "client: '%s'", report);
    printf("  kmsd A SIGKILLed 1 s into 6 s of opens: %d opens, %d failed, slowest %.0f ms; B answered %d unwraps\n",
           opens, failures, slowest, count_in(sr_test_path("kmsd-b.log"), "kms.kmip.decrypt") - decrypts_on_b);
    SR_CHECK_EQ_INT(failures, 0);
    SR_CHECK(opens > 50);
    SR_CHECK(count_in(sr_test_path("kmsd-b.log"), "kms.kmip.decrypt") > decrypts_on_b);

    /* 5 s without A is past lease (3 s) + grace (1 s): the heartbeats went to B */
    SR_CHECK_EQ_INT(nodes_in("active"), AGENTS);
    SR_CHECK_EQ_INT(write_through_agent(0), SQLITE_OK);

    /* a key made through B is there for A, which restarts beside B: no lease extended */
    SR_CHECK_MSG(kmsctl_on('b', "key create made-on-b") == 0, "%s", out);
    SR_CHECK(kmsd_start(dir, port_a) == 0);
    SR_CHECK_MSG(kmsctl_on('a', "key list --name made-on-b") == 0 && strstr(out, "made-on-b"), "%s", out);
    char log_a[700];
    snprintf(log_a, sizeof log_a, "%s/kmsd.stderr", dir);
    SR_CHECK_EQ_INT(count_in(log_a, "other kmsd serve this store: node leases kept"), 1);
}

static void test_vanished_nodes_expire_once_between_two_sweepers(void)
{
    for (int i = 0; i < AGENTS; i++) kill(agents[i], SIGKILL), waitpid(agents[i], NULL, 0), agents[i] = 0;
    uint64_t t0 = sr_time_mono_ms();
    int expired = 0;
    while (expired < AGENTS && sr_time_mono_ms() - t0 < 15000) {
        usleep(200000);
        expired = nodes_in("expired");
    }
    char log_a[700];
    snprintf(log_a, sizeof log_a, "%s/kmsd.stderr", dir);
    int by_a = count_in(log_a, "kms.node.lease_expired"), by_b = count_in(sr_test_path("kmsd-b.log"), "kms.node.lease_expired");
    printf("  %d agents SIGKILLed: all expired %llu ms later (lease 3 s + grace 1 s); revoked by A %d, by B %d\n",
           AGENTS, (unsigned long long)(sr_time_mono_ms() - t0), by_a, by_b);
    SR_CHECK_EQ_INT(expired, AGENTS);
    SR_CHECK_EQ_INT(by_a + by_b, AGENTS); /* each node ended once, by one kmsd */
    usleep(1000000); /* more sweeps by both: still once */
    SR_CHECK_EQ_INT(count_in(log_a, "kms.node.lease_expired") + count_in(sr_test_path("kmsd-b.log"), "kms.node.lease_expired"),
                    AGENTS);
}

/* ---- the lock under it all ------------------------------------------------------------------------- */

typedef struct second_writer {
    kms_store_t *store;
    uint64_t waited_ms;
    sr_err_t rc;
} second_writer_t;

static void *write_second(void *arg)
{
    second_writer_t *w = arg;
    uint64_t t0 = sr_time_mono_ms();
    w->rc = kms_store_begin(w->store);
    w->waited_ms = sr_time_mono_ms() - t0;
    if (w->rc == SR_OK) kms_store_rollback(w->store);
    return NULL;
}

/* Two handles on the store, as two kmsd have: while one holds a write
 * transaction, the other's begins only when it ends; reads do not wait. */
static void test_write_transactions_are_serialised_across_handles(void)
{
    char conf[4200], url[1024] = "", root[4200];
    snprintf(conf, sizeof conf, "%s/kmsd.conf", dir);
    size_t len = 0;
    char *text = (char *)sr_test_read_file(conf, &len);
    SR_CHECK(text != NULL);
    const char *at = text ? strstr(text, "\nurl = ") : NULL;
    if (at) snprintf(url, sizeof url, "%.*s", (int)strcspn(at + 7, "\n"), at + 7);
    free(text);
    snprintf(root, sizeof root, "%s/root.key", dir);
    sr_keyprov_t *kp = NULL;
    kms_store_t *one = NULL, *two = NULL;
    SR_CHECK_OK(kms_root_provider(url, root, NULL, 0, &kp));
    SR_CHECK_OK(kms_store_open_encrypted(url, kp, &one));
    SR_CHECK_OK(kms_store_open_encrypted(url, kp, &two));
    if (!one || !two) return;
    SR_CHECK(kms_store_shared(one));
    SR_CHECK_OK(kms_store_begin(one));
    SR_CHECK_OK(kms_store_begin_read(two)); /* a read does not wait */
    kms_store_rollback(two);
    second_writer_t w = {.store = two};
    pthread_t t;
    SR_CHECK(pthread_create(&t, NULL, write_second, &w) == 0);
    usleep(300000);
    SR_CHECK_OK(kms_store_commit(one));
    pthread_join(t, NULL);
    SR_CHECK_OK(w.rc);
    printf("  a second handle's write transaction began %llu ms later, when the first committed\n",
           (unsigned long long)w.waited_ms);
    SR_CHECK(w.waited_ms >= 250);
    kms_store_close(one), kms_store_close(two);
    sr_keyprov_free(kp);
}

int main(void)
{
    if (!kmsd_postgres()) {
        puts("skipped: needs a PostgreSQL (run through tests/kms/with-postgres)");
        return 77;
    }
    snprintf(dir, sizeof dir, "%s", sr_test_path("kms"));
    if (kmsd_init(dir, NULL, &port_a) != 0) return 1;
    port_b = sr_test_free_port();
    char cmd[4096];
    /* short leases; B: kmsd A's configuration on another port (same store, root key, certificates) */
    snprintf(cmd, sizeof cmd,
             "cd %s && sed -i 's/^lease = 30s/lease = 3s/; s/^grace = 5s/grace = 1s/' kmsd.conf && "
             "sed 's/^port = %u/port = %u/' kmsd.conf > kmsd-b.conf && sed 's/^port = %u/port = %u/' kmsctl.conf > kmsctl-b.conf",
             dir, port_a, port_b, port_a, port_b);
    if (sr_test_command(out, sizeof out, cmd) != 0) return fprintf(stderr, "%s\n", out), 1;
    snprintf(cmd, sizeof cmd, "%s/kmsd-b.conf", dir);
    if (kmsd_start(dir, port_a) != 0 || (kmsd_b = kmsd_spawn(cmd, sr_test_path("kmsd-b.log"), port_b)) <= 0) return 1;
    if (kmsctl_on('a', "key create tablespaces --activate") != 0 || kmsctl_answer(out, 36, mk, sizeof mk) != 0)
        return fprintf(stderr, "%s\n", out), 1;
    snprintf(cmd, sizeof cmd, "key grant %s @web", mk);
    if (kmsctl_on('a', cmd) != 0) return fprintf(stderr, "%s\n", out), 1;
    snprintf(cmd, sizeof cmd, "key grant %s app", mk);
    if (kmsctl_on('b', cmd) != 0) return fprintf(stderr, "%s\n", out), 1;
    if (sr_secure_init() != SR_OK || sr_sqlite_register(NULL, 0) != SQLITE_OK) return 1;
    sr_log_set_level(SR_LOG_WARN); /* not a notice per open */
    SR_RUN(test_write_transactions_are_serialised_across_handles);
    SR_RUN(test_clients_and_leases_survive_a_dead_kmsd);
    SR_RUN(test_vanished_nodes_expire_once_between_two_sweepers);
    for (int i = 0; i < AGENTS; i++)
        if (agents[i] > 0) kill(agents[i], SIGKILL), waitpid(agents[i], NULL, 0);
    kmsd_stop(SIGTERM);
    kill(kmsd_b, SIGTERM), waitpid(kmsd_b, NULL, 0);
    return sr_test_finish();
}
