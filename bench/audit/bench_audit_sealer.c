/*
 * bench_audit_sealer — events per second through the host's sealer
 * (tde-audit serve's code, sr_audit_serve, in a child process) with 1, 8 and
 * 64 client processes, every event durable before it is acknowledged (group
 * commit, fdatasync per batch), and the p50/p99 acknowledgement latency.
 * Targets (audit hardening issue): >= 100,000 durable events/s with 64
 * clients; p99 acknowledgement < 2 ms. bench_audit measures the direct
 * writer (threads appending to the file themselves) beside it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv)
{
    char dir[] = "/var/tmp/bench_sealer.XXXXXX", key[256], sign[300], log[256], sock[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(key, sizeof key, "%s/k", dir);
    snprintf(sign, sizeof sign, "%s.sign", key);
    snprintf(log, sizeof log, "%s/audit.log", dir);
    snprintf(sock, sizeof sock, "%s/sealer.sock", dir);
    sr_log_set_level(SR_LOG_WARN);
    if (sr_audit_keygen(key) != SR_OK) return fprintf(stderr, "keygen: %s\n", sr_err_detail()), 1;
    pid_t sealer = fork();
    if (sealer == 0) {
        signal(SIGTERM, on_term);
        sr_audit_sealer_options_t so = {.socket_path = sock,
                                        .log = {.path = log, .signing_key = sign, .rotate_bytes = UINT64_C(1) << 40}};
        _exit(sr_audit_serve(&so, &sealer_stop) == SR_OK ? 0 : 1);
    }
    for (int i = 0; i < 200 && access(sock, F_OK) != 0; i++) usleep(20000);
    double seconds = getenv("SR_BENCH_QUICK") ? 0.5 : 3.0;
    /* client processes x threads in each (one event in flight per thread; a process's threads share one
     * connection, pipelined) */
    int clients[][2] = {{1, 1}, {8, 1}, {64, 1}, {64, 2}, {64, 4}};
    size_t configs = sizeof clients / sizeof clients[0];
    if (argc > 1) { /* one configuration, for a profiler: PROCESSESxTHREADS [SECONDS] */
        if (sscanf(argv[1], "%dx%d", &clients[0][0], &clients[0][1]) != 2 || clients[0][0] < 1 ||
            clients[0][0] > MAX_CLIENTS || clients[0][1] < 1 || clients[0][1] > 8)
            return fprintf(stderr, "usage: bench_audit_sealer [PROCESSESxTHREADS [SECONDS]]\n"), 2;
        configs = 1;
        if (argc > 2) seconds = atof(argv[2]);
    }
    printf("audit sealer (a Unix socket; every event durable before it is acknowledged)\n\n");
    printf("| client processes | threads each | durable events/s | p50 ack | p99 ack | targets |\n"
           "|---|---|---|---|---|---|\n");
    int status = 0;
    for (size_t i = 0; i < configs; i++) {
        double rate = 0;
        uint32_t p50 = 0, p99 = 0;
        if (run(sock, clients[i][0], clients[i][1], seconds, &rate, &p50, &p99) != 0) {
            fprintf(stderr, "run with %d clients failed\n", clients[i][0]);
            status = 1;
            break;
        }
        printf("| %d | %d | %.0f | %u µs | %u µs | %s |\n", clients[i][0], clients[i][1], rate, p50, p99,
               clients[i][0] == 64 ? ">= 100,000/s, p99 < 2 ms" : "");
    }
    kill(sealer, SIGTERM);
    waitpid(sealer, NULL, 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? status : 1;
}
