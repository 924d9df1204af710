/*
 * bench_audit_sealer — events per second through the host's sealer
 * (tde-audit serve's code, sr_audit_serve, in a child process) with 1, 8 and
 * 64 client processes, every event durable before it is acknowledged (group
 * commit, fdatasync per batch), and the p50/p99 acknowledgement latency.
 * Targets (audit hardening issue): >= 100,000 durable events/s with 64
 * clients; p99 acknowledgement < 2 ms. bench_audit measures the direct
 * writer (threads appending to the file themselves) beside it.
 *
 * Beside the sealer, in the same run, the floor this machine sets for the
 * same protocol and clients: a server that speaks the sealer's wire
 * protocol but does nothing with an event — no subject, no formatting, no
 * hash, no signature — and either answers at once or first writes the
 * round's bytes and calls fdatasync once per round, as the sealer does. The
 * sealer cannot beat the second; how close it comes is its own cost.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit.h"

#define MAX_CLIENTS 64
#define MAX_SAMPLES 200000

static volatile int sealer_stop;
static void on_term(int sig) { (void)sig, sealer_stop = 1; }

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct sender {
    sr_audit_client_t *c;
    uint64_t end, n;
    uint32_t *lat; /* MAX_SAMPLES / threads each */
    size_t cap;
    pthread_t t;
} sender_t;

static void *send_loop(void *arg)
{
    sender_t *s = arg;
    while (sr_time_mono_ns() < s->end) {
        uint64_t t0 = sr_time_mono_ns();
        if (sr_audit_client_send(s->c, &(sr_event_t){.component = "pam", .event = "login", .subject = "postgres",
                                                     .object = "db1", .outcome = "success", .source = "10.20.30.40",
                                                     .detail = "method=password service=postgresql"}) != SR_OK)
            _exit(3);
        if (s->n < s->cap) s->lat[s->n] = (uint32_t)((sr_time_mono_ns() - t0) / 1000);
        s->n++;
    }
    return NULL;
}

/* One client process (`threads` threads sharing its one connection, as a
 * multi-threaded component's do): events for `seconds`, then (count,
 * latencies in µs) to fd. */
static void client(const char *sock, int threads, double seconds, int fd)
{
    sr_audit_client_t *c = NULL;
    if (sr_audit_client_open(sock, &c) != SR_OK) _exit(2);
    uint32_t *lat = malloc(MAX_SAMPLES * sizeof *lat);
    sender_t senders[8];
    uint64_t n = 0, end = sr_time_mono_ns() + (uint64_t)(seconds * 1e9), kept = 0;
    for (int i = 0; lat && i < threads; i++) {
        senders[i] = (sender_t){.c = c, .end = end, .lat = lat + (size_t)i * (MAX_SAMPLES / threads),
                                .cap = MAX_SAMPLES / threads};
        if (pthread_create(&senders[i].t, NULL, send_loop, &senders[i]) != 0) _exit(5);
    }
    for (int i = 0; lat && i < threads; i++) {
        pthread_join(senders[i].t, NULL);
        uint64_t k = senders[i].n < senders[i].cap ? senders[i].n : senders[i].cap;
        memmove(lat + kept, senders[i].lat, k * sizeof *lat);
        kept += k, n += senders[i].n;
    }
    if (write(fd, &n, sizeof n) != sizeof n || write(fd, lat, kept * sizeof *lat) != (ssize_t)(kept * sizeof *lat))
        _exit(4);
    _exit(0);
}

/* ---- the floor: the sealer's protocol and round, nothing done with an event ---------------- */

typedef struct floor_client {
    int fd;
    uint8_t in[4 + 16384];
    size_t have;
} floor_client_t;

/* Complete frames in c's buffer, taken off it; -1: the client has gone or sent garbage. */
static int floor_take(floor_client_t *c, int log_fd, int durable)
{
    ssize_t n = recv(c->fd, c->in + c->have, sizeof c->in - c->have, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return -1;
    if (n > 0) c->have += (size_t)n;
    size_t at = 0;
    int frames = 0;
    while (c->have - at >= 4) {
        uint32_t len = sr_get_be32(c->in + at);
        if (len > sizeof c->in - 4) return -1;
        if (c->have - at < 4 + (size_t)len) break;
        at += 4 + len, frames++;
    }
    if (durable && at && write(log_fd, c->in, at) != (ssize_t)at) return -1;
    memmove(c->in, c->in + at, c->have - at);
    c->have -= at;
    return frames;
}

/* Serves the sealer's wire protocol until SIGTERM: each round reads every ready client, then (durable) one
 * fdatasync, then one 'A' per event. */
static int floor_serve(const char *sock, const char *log, int durable)
{
    int lfd = -1, log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600), ep = epoll_create1(0);
    if (log_fd < 0 || ep < 0 || sr_unix_listen(sock, 128, SOCK_NONBLOCK, &lfd) != SR_OK) return 1;
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    floor_client_t *ready[256];
    int frames[256];
    while (!sealer_stop) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 100), k = 0;
        for (int i = 0; i < n; i++) {
            floor_client_t *c = evs[i].data.ptr;
            if (!c) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                if (fd < 0) continue;
                if (!(c = calloc(1, sizeof *c))) return 1;
                c->fd = fd;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                continue;
            }
            int got = floor_take(c, log_fd, durable);
            if (got < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL), close(c->fd), free(c);
                continue;
            }
            if (got) ready[k] = c, frames[k++] = got;
        }
        if (k && durable && fdatasync(log_fd) != 0) return 1;
        uint8_t acks[64]; /* a client has at most 8 events in flight (8 threads) */
        memset(acks, 'A', sizeof acks);
        for (int i = 0; i < k; i++)
            if (send(ready[i]->fd, acks, (size_t)(frames[i] < 64 ? frames[i] : 64), MSG_NOSIGNAL) < 0) return 1;
    }
    return 0;
}

/* A server in a child process: the sealer (sr_audit_serve, as tde-audit serve runs it) or a floor. */
typedef enum { SERVE_SEALER, SERVE_FLOOR_DURABLE, SERVE_FLOOR_ECHO } server_kind_t;

static pid_t server_start(server_kind_t kind, const char *sock, const char *log, const char *sign)
{
    unlink(sock), unlink(log);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGTERM, on_term);
        if (kind != SERVE_SEALER) _exit(floor_serve(sock, log, kind == SERVE_FLOOR_DURABLE));
        sr_audit_sealer_options_t so = {.socket_path = sock,
                                        .log = {.path = log, .signing_key = sign, .rotate_bytes = UINT64_C(1) << 40}};
        _exit(sr_audit_serve(&so, &sealer_stop) == SR_OK ? 0 : 1);
    }
    for (int i = 0; i < 200 && access(sock, F_OK) != 0; i++) usleep(20000);
    return pid;
}

static int server_stop(pid_t pid)
{
    int st = 0;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* n clients at once: events/s over all, and the latency percentiles. */
static int run(const char *sock, int n, int threads, double seconds, double *rate, uint32_t *p50, uint32_t *p99)
{
    int fds[MAX_CLIENTS][2];
    pid_t pids[MAX_CLIENTS];
    for (int i = 0; i < n; i++) {
        if (pipe(fds[i]) != 0) return -1;
        if ((pids[i] = fork()) == 0) client(sock, threads, seconds, fds[i][1]);
        close(fds[i][1]);
    }
    uint64_t total = 0;
    size_t kept = 0, cap = (size_t)n * MAX_SAMPLES;
    uint32_t *all = malloc(cap * sizeof *all);
    for (int i = 0; i < n; i++) {
        uint64_t count = 0;
        if (!all || read(fds[i][0], &count, sizeof count) != sizeof count) return -1;
        total += count;
        size_t want = (count < MAX_SAMPLES ? count : MAX_SAMPLES) * sizeof *all, got = 0;
        ssize_t r;
        while (got < want && (r = read(fds[i][0], (uint8_t *)(all + kept) + got, want - got)) > 0) got += (size_t)r;
        kept += got / sizeof *all;
        close(fds[i][0]);
        int st = 0;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
    }
    qsort(all, kept, sizeof *all, cmp_u32);
    *rate = (double)total / seconds;
    *p50 = kept ? all[kept / 2] : 0;
    *p99 = kept ? all[kept * 99 / 100] : 0;
    free(all);
    return 0;
}

static const char *const server_names[] = {"sealer", "floor: write + fdatasync per round", "floor: answer at once"};

/* One row of the table: `kind` serving processes x threads. Events/s, or < 0 if the run failed. */
static double row(server_kind_t kind, const char *sock, const char *log, const char *sign, const int config[2],
                  double seconds)
{
    pid_t server = server_start(kind, sock, log, sign);
    double rate = 0;
    uint32_t p50 = 0, p99 = 0;
    int failed = run(sock, config[0], config[1], seconds, &rate, &p50, &p99) != 0;
    failed |= server_stop(server) != 0;
    if (failed)
        return fprintf(stderr, "%s with %d x %d clients failed\n", server_names[kind], config[0], config[1]), -1;
    printf("| %s | %d | %d | %.0f | %u µs | %u µs | %s |\n", server_names[kind], config[0], config[1], rate, p50,
           p99, kind == SERVE_SEALER && config[0] == 64 ? ">= 100,000/s, p99 < 2 ms" : "");
    return rate;
}

int main(int argc, char **argv)
{
    double seconds = getenv("SR_BENCH_QUICK") ? 0.5 : 3.0;
    /* client processes x threads in each (one event in flight per thread; a process's threads share one
     * connection, pipelined); the floors beside the sealer for the 64-process configurations */
    int clients[][2] = {{1, 1}, {8, 1}, {64, 1}, {64, 2}, {64, 4}};
    size_t configs = sizeof clients / sizeof clients[0];
    int only = -1; /* one server, for a profiler */
    if (argc > 1) { /* one configuration: PROCESSESxTHREADS [SECONDS [SERVER]] */
        if (sscanf(argv[1], "%dx%d", &clients[0][0], &clients[0][1]) != 2 || clients[0][0] < 1 ||
            clients[0][0] > MAX_CLIENTS || clients[0][1] < 1 || clients[0][1] > 8)
            return fprintf(stderr, "usage: bench_audit_sealer [PROCESSESxTHREADS [SECONDS [sealer|floor|echo]]]\n"), 2;
        configs = 1;
        if (argc > 2) seconds = atof(argv[2]);
        if (argc > 3) only = !strcmp(argv[3], "sealer") ? SERVE_SEALER : !strcmp(argv[3], "floor") ? SERVE_FLOOR_DURABLE
                           : !strcmp(argv[3], "echo") ? SERVE_FLOOR_ECHO : -2;
        if (only == -2) return fprintf(stderr, "bench_audit_sealer: SERVER is sealer, floor or echo\n"), 2;
    }
    char dir[] = "/var/tmp/bench_sealer.XXXXXX", key[256], sign[300], log[256], sock[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(key, sizeof key, "%s/k", dir);
    snprintf(sign, sizeof sign, "%s.sign", key);
    snprintf(log, sizeof log, "%s/audit.log", dir);
    snprintf(sock, sizeof sock, "%s/sealer.sock", dir);
    sr_log_set_level(SR_LOG_WARN);
    if (sr_audit_keygen(key) != SR_OK) return fprintf(stderr, "keygen: %s\n", sr_err_detail()), 1;
    printf("audit sealer (a Unix socket; every event durable before it is acknowledged), and this machine's floor\n"
           "for the same clients and protocol: a server that does nothing with an event\n\n");
    printf("| server | client processes | threads each | events/s | p50 ack | p99 ack | targets |\n"
           "|---|---|---|---|---|---|---|\n");
    int status = 0;
    for (size_t i = 0; i < configs && !status; i++) {
        int floors = only < 0 && (configs == 1 || clients[i][0] == 64);
        double sealer = 0, floor = 0;
        for (int kind = SERVE_SEALER; kind <= (floors ? SERVE_FLOOR_ECHO : SERVE_SEALER) && !status; kind++) {
            int k = only >= 0 ? only : kind;
            double rate = row((server_kind_t)k, sock, log, sign, clients[i], seconds);
            if (rate < 0) status = 1;
            if (k == SERVE_SEALER) sealer = rate;
            if (k == SERVE_FLOOR_DURABLE) floor = rate;
        }
        if (!status && floors)
            printf("| the sealer's share of the durable floor: %.0f %% | | | | | | |\n", 100 * sealer / floor);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? status : 1;
}
