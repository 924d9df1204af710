/*
 * The host's sealer (`tde-audit serve`), a real process: 64 client processes,
 * each under its own uid when the test runs as root, send events while
 * lying about who they are. Every record's subject is the kernel's uid and
 * pid of its sender, the lie is kept beside it as "claimed subject", no event
 * is lost or recorded twice, and the log verifies with the sealer's key,
 * while ten neighbours hold half-sent events and one sends garbage, and one
 * user's flood of 130 connections is capped at 128. A
 * client whose sealer is gone, or hangs, gets an error (it fails closed).
 */
#include "audit.h"
#include "sr_test.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define CLIENTS 64
#define EVENTS 20
#define BASE_UID 30000

/* A sealer of its own for one test (name: its key and log) and a client of it. */
typedef struct sealer_env {
    char sign[700], log[700], dir[32], sock[700];
    pid_t pid;
} sealer_env_t;

static sr_audit_client_t *sealer_env_start(sealer_env_t *e, const char *name)
{
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s", sr_test_path(name));
    snprintf(e->sign, sizeof e->sign, "%s.sign", prefix);
    snprintf(e->log, sizeof e->log, "%s.log", prefix);
    snprintf(e->dir, sizeof e->dir, "/tmp/srsealer.XXXXXX");
    SR_CHECK_OK(sr_audit_keygen(prefix));
    SR_CHECK(mkdtemp(e->dir) != NULL);
    snprintf(e->sock, sizeof e->sock, "%s/sealer.sock", e->dir);
    e->pid = sr_test_start_sealer(e->sock, e->log, e->sign);
    sr_audit_client_t *c = NULL;
    SR_CHECK_OK(sr_audit_client_open(e->sock, &c));
    return c;
}

static int unix_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) close(fd), fd = -1;
    return fd;
}

static void test_sixty_four_clients_get_the_kernels_identity(void)
{
    char prefix[600], sign[700], pub[700], log[600], dir[] = "/tmp/srsealer.XXXXXX", sock[700];
    snprintf(prefix, sizeof prefix, "%s", sr_test_path("sealer"));
    snprintf(sign, sizeof sign, "%s.sign", prefix);
    snprintf(pub, sizeof pub, "%s.pub", prefix);
    snprintf(log, sizeof log, "%s", sr_test_path("host.log"));
    SR_CHECK_OK(sr_audit_keygen(prefix));
    /* the socket where every uid can reach it (the test directory is 0700) */
    SR_CHECK(mkdtemp(dir) != NULL && chmod(dir, 0711) == 0);
    snprintf(sock, sizeof sock, "%s/sealer.sock", dir);
    pid_t sealer = sr_test_start_sealer(sock, log, sign);
    /* hostile neighbours first: 10 that send half an event and stall (they
     * must not hold up anyone), one malformed event (refused with a reason,
     * the connection kept), one too long (refused, then closed) */
    int stalled[10];
    for (int i = 0; i < 10; i++) {
        stalled[i] = unix_connect(sock);
        SR_CHECK(stalled[i] >= 0 && write(stalled[i], "\0\0\0\x20" "ab", 6) == 6);
    }
    int bad = unix_connect(sock);
    char answer[256] = "";
    /* a good event, a malformed one and a good one in one write: answered in order, A | E len reason | A */
    static const char three[] = "\0\0\0\x20" "raw!\0sealer.event\0\0db\0success\0\0x"
                                "\0\0\0\x03" "a\0b"
                                "\0\0\0\x20" "raw!\0sealer.event\0\0db\0success\0\0y";
    SR_CHECK(bad >= 0 && write(bad, three, sizeof three - 1) == (ssize_t)sizeof three - 1);
    size_t have = 0;
    for (int tries = 0; tries < 100 && (have < 7 || answer[have - 1] != 'A'); tries++) {
        ssize_t got = read(bad, answer + have, sizeof answer - 1 - have);
        if (got <= 0) break;
        have += (size_t)got;
    }
    uint32_t why_len = have > 5 ? (uint32_t)((uint8_t)answer[2] << 24 | (uint8_t)answer[3] << 16 |
                                             (uint8_t)answer[4] << 8 | (uint8_t)answer[5]) : 0;
    SR_CHECK_MSG(have == 1 + 5 + why_len + 1 && answer[0] == 'A' && answer[1] == 'E' && answer[have - 1] == 'A' &&
                 memmem(answer + 6, why_len, "malformed", 9), "%zu bytes", have);
    memset(answer, 0, sizeof answer);
    SR_CHECK(write(bad, "\0\0\0\x03" "a\0b", 7) == 7);
    SR_CHECK(read(bad, answer, sizeof answer - 1) > 5 && answer[0] == 'E' && strstr(answer + 5, "malformed"));
    SR_CHECK(write(bad, "\x7f\0\0\0", 4) == 4);
    memset(answer, 0, sizeof answer);
    SR_CHECK(read(bad, answer, sizeof answer - 1) > 5 && answer[0] == 'E' && strstr(answer + 5, "too long"));
    SR_CHECK(read(bad, answer, 1) == 0); /* closed */
    close(bad);
    /* one user holds at most 128 connections: the 10 stalled ones and 118 more; the rest refused at once */
    enum { FLOOD = 130 };
    int flood[FLOOD], refused = 0;
    usleep(100000);
    for (int k = 0; k < FLOOD; k++) flood[k] = unix_connect(sock);
    usleep(300000);
    for (int k = 0; k < FLOOD; k++) {
        char a[256] = "";
        struct timeval tv = {0, 1000};
        setsockopt(flood[k], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (flood[k] >= 0 && read(flood[k], a, sizeof a - 1) > 5 && a[0] == 'E' && strstr(a + 5, "already")) refused++;
        if (flood[k] >= 0) close(flood[k]);
    }
    SR_CHECK_EQ_INT(refused, FLOOD - (128 - 10));
    usleep(300000); /* their slots are free again */
    int as_root = geteuid() == 0;
    pid_t pids[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
        pids[c] = fork();
        if (pids[c] == 0) {
            if (as_root && (setgid((gid_t)(BASE_UID + c)) != 0 || setuid((uid_t)(BASE_UID + c)) != 0)) _exit(2);
            sr_audit_client_t *cl = NULL;
            if (sr_audit_client_open(sock, &cl) != SR_OK) _exit(3);
            for (int e = 0; e < EVENTS; e++) {
                char detail[64];
                snprintf(detail, sizeof detail, "client %d event %d", c, e);
                if (sr_audit_client_send(cl, &(sr_event_t){.component = "test", .event = "sealer.event",
                                                           .subject = "uid=0 root", .object = "db",
                                                           .outcome = "success", .detail = detail}) != SR_OK)
                    _exit(4);
            }
            sr_audit_client_close(cl);
            _exit(0);
        }
    }
    for (int c = 0; c < CLIENTS; c++) {
        int st = 0;
        waitpid(pids[c], &st, 0);
        SR_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d: status %d", c, WEXITSTATUS(st));
    }
    for (int i = 0; i < 10; i++) close(stalled[i]);
    kill(sealer, SIGTERM);
    waitpid(sealer, NULL, 0);
    /* a client with no sealer: an error, not a silent drop */
    sr_audit_client_t *late = NULL;
    SR_CHECK(sr_audit_client_open(sock, &late) != SR_OK);

    uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];
    SR_CHECK_OK(sr_audit_verify_key_load(pub, pk));
    sr_audit_verify_result_t r;
    const char *files[] = {log};
    SR_CHECK_OK(sr_audit_verify_files(files, 1, pk, &r));
    SR_CHECK(r.ends_sealed);
    static int seen[CLIENTS][EVENTS];
    int records = 0;
    FILE *f = fopen(log, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (f && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n') line[--n] = '\0';
        sr_audit_record_t rec;
        if (sr_audit_record_parse(line, (size_t)n, &rec) != SR_OK || strcmp(rec.component, "test") != 0) continue;
        int c = -1, e = -1;
        SR_CHECK(sscanf(strstr(rec.detail, "client ") ? strstr(rec.detail, "client ") : "", "client %d event %d", &c,
                        &e) == 2);
        if (c < 0 || c >= CLIENTS || e < 0 || e >= EVENTS) continue;
        seen[c][e]++, records++;
        char want[96];
        snprintf(want, sizeof want, "uid=%d gid=%d pid=%d exe=", as_root ? BASE_UID + c : (int)getuid(),
                 as_root ? BASE_UID + c : (int)getgid(), (int)pids[c]);
        SR_CHECK_MSG(strncmp(rec.subject, want, strlen(want)) == 0, "subject '%s', want '%s...'", rec.subject, want);
        SR_CHECK_CONTAINS(rec.detail, "claimed subject: uid=0 root");
    }
    free(line);
    if (f) fclose(f);
    SR_CHECK_EQ_INT(records, CLIENTS * EVENTS);
    printf("  %d records from %d client processes%s, log verified, %llu checkpoints\n", records, CLIENTS,
           as_root ? " under as many uids" : "", (unsigned long long)r.checkpoints);
    int dup_or_lost = 0;
    for (int c = 0; c < CLIENTS; c++)
        for (int e = 0; e < EVENTS; e++) dup_or_lost += seen[c][e] != 1;
    SR_CHECK_EQ_INT(dup_or_lost, 0);
    if (!as_root) printf("  (not root: every client under this uid; the subject is still the kernel's)\n");
    rmdir(dir);
}


/* The threads of one process share its connection, events pipelined: each
 * thread's send returns when its own event is durable, none is lost or
 * recorded twice; and when the sealer dies under them, every thread gets
 * an error (none waits forever). */
enum { THREADS = 8, PER_THREAD = 150 };
typedef struct sharer {
    sr_audit_client_t *c;
    int id, failed, sent;
    pthread_t t;
} sharer_t;

static void *share_loop(void *arg)
{
    sharer_t *s = arg;
    for (int e = 0; e < PER_THREAD; e++) {
        char detail[64];
        snprintf(detail, sizeof detail, "thread %d event %d", s->id, e);
        if (sr_audit_client_send(s->c, &(sr_event_t){.component = "test", .event = "sealer.event", .object = "db",
                                                     .outcome = "success", .detail = detail}) != SR_OK)
            s->failed++;
        else s->sent++;
    }
    return NULL;
}

static void run_sharers(sr_audit_client_t *c, sharer_t *sh)
{
    for (int t = 0; t < THREADS; t++) sh[t] = (sharer_t){.c = c, .id = t}, pthread_create(&sh[t].t, NULL, share_loop, &sh[t]);
    for (int t = 0; t < THREADS; t++) pthread_join(sh[t].t, NULL);
}

static void test_threads_share_one_connection(void)
{
    sealer_env_t env;
    sr_audit_client_t *c = sealer_env_start(&env, "shared");
    if (!c) return;
    char *log = env.log, *sock = env.sock, *dir = env.dir, *sign = env.sign;
    pid_t sealer = env.pid;
    sharer_t sh[THREADS];
    run_sharers(c, sh);
    int failed = 0;
    for (int t = 0; t < THREADS; t++) failed += sh[t].failed;
    SR_CHECK_EQ_INT(failed, 0);
    kill(sealer, SIGTERM), waitpid(sealer, NULL, 0);
    static int seen[THREADS][PER_THREAD];
    FILE *f = fopen(log, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int records = 0, dup_or_lost = 0;
    while (f && (n = getline(&line, &cap, f)) > 0) {
        int t = -1, e = -1;
        const char *at = strstr(line, "thread ");
        if (at && sscanf(at, "thread %d event %d", &t, &e) == 2 && t >= 0 && t < THREADS && e >= 0 && e < PER_THREAD)
            seen[t][e]++, records++;
    }
    free(line);
    if (f) fclose(f);
    for (int t = 0; t < THREADS; t++)
        for (int e = 0; e < PER_THREAD; e++) dup_or_lost += seen[t][e] != 1;
    SR_CHECK_EQ_INT(records, THREADS * PER_THREAD);
    SR_CHECK_EQ_INT(dup_or_lost, 0);
    /* the sealer killed while the threads send: each send fails, none hangs */
    sealer = sr_test_start_sealer(sock, log, sign);
    pid_t killer = fork();
    if (killer == 0) {
        usleep(30000);
        kill(sealer, SIGKILL);
        _exit(0);
    }
    uint64_t t0 = sr_time_mono_ms();
    run_sharers(c, sh);
    uint64_t took = sr_time_mono_ms() - t0;
    waitpid(killer, NULL, 0), waitpid(sealer, NULL, 0);
    failed = 0;
    for (int t = 0; t < THREADS; t++) failed += sh[t].failed;
    printf("  %d threads x %d events on one connection: all recorded once; the sealer killed under them: %d sends "
           "failed, back in %llu ms\n", THREADS, PER_THREAD, failed, (unsigned long long)took);
    SR_CHECK(failed > 0 && took < 15000);
    sr_audit_client_close(c);
    unlink(sock), rmdir(dir);
}

/* A process that forks with its client connected: the child's events go
 * over a connection of its own (the parent's would mix their answers, and
 * the sealer would record the parent as their sender). */
static void test_a_child_connects_anew(void)
{
    sealer_env_t env;
    sr_audit_client_t *c = sealer_env_start(&env, "forked");
    if (!c) return;
    char *log = env.log, *sock = env.sock, *dir = env.dir;
    pid_t sealer = env.pid;
    sr_event_t ev = {.component = "test", .event = "sealer.event", .object = "db", .outcome = "success",
                     .detail = "from the parent"};
    SR_CHECK_OK(sr_audit_client_send(c, &ev));
    pid_t child = fork();
    if (child == 0) {
        sr_event_t mine = ev;
        mine.detail = "from the child";
        for (int i = 0; i < 50; i++)
            if (sr_audit_client_send(c, &mine) != SR_OK) _exit(1);
        _exit(0);
    }
    int failed = 0;
    for (int i = 0; i < 50; i++) failed += sr_audit_client_send(c, &ev) != SR_OK;
    int st = 0;
    waitpid(child, &st, 0);
    SR_CHECK_EQ_INT(failed, 0);
    SR_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    sr_audit_client_close(c);
    kill(sealer, SIGTERM), waitpid(sealer, NULL, 0);
    char want[64], cmd[1400];
    snprintf(want, sizeof want, "pid=%d ", (int)child);
    snprintf(cmd, sizeof cmd, "grep 'from the child' %s | grep -c '%s'", log, want);
    char out[64] = "";
    SR_CHECK_EQ_INT(sr_test_command(out, sizeof out, cmd), 0);
    SR_CHECK_MSG(atoi(out) == 50, "the child's records naming its own pid: %s", out);
    unlink(sock), rmdir(dir);
}

/* A client that names itself as the kernel does ("uid=U pid=P", as tde's
 * events do) is not repeated as a claim; one pid off, it is a claim kept. */
static void test_a_true_claim_is_not_repeated(void)
{
    sealer_env_t env;
    sr_audit_client_t *c = sealer_env_start(&env, "self");
    if (!c) return;
    char self[64], other[64];
    snprintf(self, sizeof self, "uid=%ld pid=%ld", (long)geteuid(), (long)getpid());
    snprintf(other, sizeof other, "uid=%ld pid=%ld", (long)geteuid(), (long)getpid() + 1);
    sr_event_t ev = {.component = "test", .event = "sealer.event", .subject = self, .outcome = "success",
                     .detail = "true"};
    SR_CHECK_OK(sr_audit_client_send(c, &ev));
    ev.subject = other, ev.detail = "false";
    SR_CHECK_OK(sr_audit_client_send(c, &ev));
    sr_audit_client_close(c);
    kill(env.pid, SIGTERM), waitpid(env.pid, NULL, 0);
    char cmd[1400], out[64] = "";
    snprintf(cmd, sizeof cmd, "grep -c 'claimed subject' %s", env.log);
    SR_CHECK_EQ_INT(sr_test_command(out, sizeof out, cmd), 0);
    SR_CHECK_MSG(atoi(out) == 1, "records with a claimed subject: %s (want 1: the false one)", out);
    snprintf(cmd, sizeof cmd, "grep -c 'claimed subject: %s; false' %s", other, env.log);
    SR_CHECK_EQ_INT(sr_test_command(out, sizeof out, cmd), 0);
    SR_CHECK_EQ_INT(atoi(out), 1);
    unlink(env.sock), rmdir(env.dir);
}

/* Another user's process on the sealer's socket path (the sealer down, its
 * directory writable) would acknowledge every event and record none: the
 * client refuses it (needs root: the impostor runs as nobody). */
static void test_impostor_sealer_refused(void)
{
    if (geteuid() != 0) {
        printf("  skipped: needs root (the impostor runs as another user)\n");
        return;
    }
    static const uint8_t ack[] = {'A'};
    char path[700];
    pid_t impostor = sr_test_impostor_server("sealer.sock", ack, sizeof ack, path, sizeof path);
    SR_CHECK(impostor > 0);
    sr_audit_client_t *c = NULL;
    SR_CHECK_ERR(sr_audit_client_open(path, &c), SR_ERR_PERMISSION);
    SR_CHECK_CONTAINS(sr_err_detail(), "not the audit sealer");
    sr_audit_client_close(c);
    kill(impostor, SIGKILL);
    waitpid(impostor, NULL, 0);
}

/* A sealer that takes events and never answers (hung) fails the event within
 * its answer timeout (10 s, and once more on a new connection), never holds
 * the caller for ever: the client waits in poll() for the answer, not in a
 * read() with a receive timeout. */
static void test_a_hung_sealer_fails_the_event(void)
{
    char dir[] = "/tmp/srsealer.XXXXXX", sock[80];
    SR_CHECK(mkdtemp(dir) != NULL);
    snprintf(sock, sizeof sock, "%s/sealer.sock", dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    SR_CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(lfd, 8) == 0);
    sr_audit_client_t *c = NULL;
    SR_CHECK_OK(sr_audit_client_open(sock, &c)); /* in the backlog: connected, never accepted nor answered */
    uint64_t t0 = sr_time_mono_ms();
    sr_event_t e = {.component = "test", .event = "hung", .outcome = "success"};
    SR_CHECK_ERR(sr_audit_client_send(c, &e), SR_ERR_TIMEOUT);
    uint64_t took = sr_time_mono_ms() - t0;
    SR_CHECK_MSG(took >= 19000 && took < 25000, "the event failed after %llu ms", (unsigned long long)took);
    sr_audit_client_close(c);
    close(lfd), unlink(sock), rmdir(dir);
}

int main(void)
{
    SR_RUN(test_sixty_four_clients_get_the_kernels_identity);
    SR_RUN(test_threads_share_one_connection);
    SR_RUN(test_a_child_connects_anew);
    SR_RUN(test_a_true_claim_is_not_repeated);
    SR_RUN(test_impostor_sealer_refused);
    SR_RUN(test_a_hung_sealer_fails_the_event);
    return sr_test_finish();
}
