/*
 * Store-and-forward of audit records over mutual TLS, with the real
 * tde-audit collector and forwarder processes: while a writer appends, the
 * collector is killed with SIGKILL mid-stream and restarted; in the end the
 * collector's copy is byte-for-byte the writer's log (every record once, the
 * chain and the signatures valid). A resend duplicates nothing; a tampered
 * record is refused and nothing after it is stored; a client certificate
 * from another CA is refused.
 */
#include "audit.h"
#include "sr_test.h"

#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char pki[512], store[512], sign_key[512], pub_key[512], tde_audit[512];
static uint16_t port;
static uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];

static rlim_t file_size_limit = RLIM_INFINITY, open_files_limit = RLIM_INFINITY; /* for the next process spawned */

static pid_t spawn(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit fsize = {file_size_limit, RLIM_INFINITY}; /* soft: raised later without privilege */
        signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG, as a full disk with ENOSPC */
        if (file_size_limit != RLIM_INFINITY && setrlimit(RLIMIT_FSIZE, &fsize) != 0) _exit(126);
        struct rlimit nofile = {open_files_limit, open_files_limit};
        if (open_files_limit != RLIM_INFINITY && setrlimit(RLIMIT_NOFILE, &nofile) != 0) _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int collector_default_key = 1, collector_require_key; /* for the next collector started */

static pid_t start_collector(void)
{
    char listen[64], ca[600], cert[600], key[600];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    snprintf(cert, sizeof cert, "%s/server.pem", pki);
    snprintf(key, sizeof key, "%s/server.key", pki);
    char *argv[] = {tde_audit, "collect", "--listen", listen, "--dir", store, "--tls-ca", ca, "--tls-cert", cert,
                    "--tls-key", key, NULL, NULL, NULL, NULL};
    int n = 12;
    if (collector_default_key) argv[n++] = "--key", argv[n++] = pub_key;
    if (collector_require_key) argv[n++] = "--require-key";
    pid_t pid = spawn(argv);
    SR_CHECK_MSG(sr_test_wait_port(port, 10000), "the collector did not start");
    return pid;
}

/* Runs `tde-audit forward` (follow mode unless once); returns its pid, or its exit status when once. */
static int forward(const char *log, const char *client, int once)
{
    char to[64], ca[600], cert[600], key[600];
    snprintf(to, sizeof to, "127.0.0.1:%u", port);
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    snprintf(cert, sizeof cert, "%s/%s.pem", pki, client);
    snprintf(key, sizeof key, "%s/%s.key", pki, client);
    char *argv[] = {tde_audit, "forward", "--log", (char *)log, "--to", to, "--verify-name", "localhost",
                    "--tls-ca", ca, "--tls-cert", cert, "--tls-key", key, once ? "--once" : NULL, NULL};
    pid_t pid = spawn(argv);
    if (!once) return pid;
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The collector's store of the certificate with this CN, from its index
 * (DIR/sources.tsv: fingerprint, CN, file). */
static const char *stored_path(const char *cn)
{
    static char path[4][700];
    static int next;
    char *out = path[next++ % 4], index[600], line[1024];
    snprintf(index, sizeof index, "%s/sources.tsv", store);
    snprintf(out, sizeof path[0], "%s/(no store for %s)", store, cn);
    FILE *f = fopen(index, "r");
    while (f && fgets(line, sizeof line, f)) {
        char *cn_field = strchr(line, '\t'), *file = cn_field ? strchr(cn_field + 1, '\t') : NULL;
        if (!file) continue;
        *file++ = '\0';
        file[strcspn(file, "\n")] = '\0';
        if (strcmp(cn_field + 1, cn) == 0) snprintf(out, sizeof path[0], "%s/%s", store, file);
    }
    if (f) fclose(f);
    return out;
}

static void stop(pid_t pid, int sig)
{
    kill(pid, sig);
    waitpid(pid, NULL, 0);
}

static int same_file(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    uint8_t *x = sr_test_read_file(a, &la), *y = sr_test_read_file(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x), free(y);
    return same;
}

static void append_n(sr_audit_writer_t *w, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char detail[64];
        snprintf(detail, sizeof detail, "record %d", i);
        SR_CHECK_OK(sr_audit_append(w, &(sr_event_t){.component = "tde", .event = "tablespace.open",
                                                    .subject = "uid=1000", .outcome = "success", .detail = detail}));
        if (i % 50 == 0) usleep(2000);
    }
}

static void test_collector_killed_mid_stream_loses_and_duplicates_nothing(void)
{
    char log[600], stored[700];
    snprintf(log, sizeof log, "%s", sr_test_path("node.log"));
    sr_audit_writer_t *w = NULL;
    sr_audit_options_t o = {.path = log, .signing_key = sign_key, .checkpoint_every = 100};
    SR_CHECK_OK(sr_audit_open(&o, &w));
    pid_t collector = start_collector();
    pid_t forwarder = forward(log, "client", 0);
    append_n(w, 0, 1500);
    for (int i = 0; i < 100 && access(stored_path("strongroom-test-client"), F_OK) != 0; i++) usleep(50000);
    snprintf(stored, sizeof stored, "%s", stored_path("strongroom-test-client"));
    stop(collector, SIGKILL); /* mid-stream */
    append_n(w, 1500, 1000);  /* the local log is the spool */
    collector = start_collector();
    append_n(w, 2500, 1500);
    SR_CHECK_OK(sr_audit_close(w));
    int caught_up = 0;
    for (int i = 0; i < 200 && !caught_up; i++) caught_up = same_file(log, stored), usleep(100000);
    SR_CHECK_MSG(caught_up, "the collector's copy never matched the writer's log");
    stop(forwarder, SIGTERM);
    sr_audit_verify_result_t r;
    const char *files[] = {stored};
    SR_CHECK_OK(sr_audit_verify_files(files, 1, pk, &r));
    SR_CHECK(r.records > 4000 && r.ends_sealed);

    /* sending everything again duplicates nothing */
    SR_CHECK_EQ_INT(forward(log, "client", 1), 0);
    SR_CHECK(same_file(log, stored));
    stop(collector, SIGTERM);
}

/* A test of its own: a fresh store directory for the collector (the
 * previous one kept in saved) and a closed log of `records` records. */
static void fresh_store_and_log(const char *name, char saved[512], char log[600], int records, int checkpoint_every)
{
    char dir[64], file[64];
    snprintf(saved, 512, "%s", store);
    snprintf(dir, sizeof dir, "store-%s", name);
    snprintf(file, sizeof file, "%s.log", name);
    snprintf(store, sizeof store, "%s", sr_test_path(dir));
    snprintf(log, 600, "%s", sr_test_path(file));
    sr_audit_writer_t *w = NULL;
    sr_audit_options_t o = {.path = log, .signing_key = sign_key, .checkpoint_every = (uint64_t)checkpoint_every};
    SR_CHECK_OK(sr_audit_open(&o, &w));
    append_n(w, 0, records);
    SR_CHECK_OK(sr_audit_close(w));
}

/* The stored copy is a byte-for-byte prefix of the log that ends at a line
 * end: no torn record, nothing out of order. */
static int prefix_of(const char *stored, const char *log, size_t *stored_len)
{
    size_t ls = 0, ll = 0;
    uint8_t *a = sr_test_read_file(stored, &ls), *b = sr_test_read_file(log, &ll);
    int ok = a && b && ls <= ll && memcmp(a, b, ls) == 0 && (ls == 0 || a[ls - 1] == '\n');
    free(a), free(b);
    *stored_len = ls;
    return ok;
}

/* A full disk on the collector (its files may not grow past 40,000 bytes:
 * writes fail with EFBIG, as with ENOSPC): the record that does not fit is
 * refused and cut back, never left torn, and the chain does not move past
 * it; when there is room again (the limit raised while the collector runs)
 * the forwarder resends from there and the copy equals the log. Before, the
 * torn line stayed and the next records followed it. */
static void test_full_disk_on_the_collector_loses_nothing(void)
{
    char log[600], stored[700], saved_store[512];
    fresh_store_and_log("full", saved_store, log, 600, 100);
    file_size_limit = 40000;
    pid_t collector = start_collector();
    file_size_limit = RLIM_INFINITY;
    SR_CHECK(forward(log, "client", 1) != 0); /* --once: refused, the disk is full */
    snprintf(stored, sizeof stored, "%s", stored_path("strongroom-test-client"));
    size_t len = 0;
    SR_CHECK_MSG(prefix_of(stored, log, &len), "the collector's copy (%zu bytes) holds a torn record", len);
    SR_CHECK(len > 0 && len <= 40000);
    /* a following forwarder is refused too, and keeps retrying instead of exiting */
    pid_t forwarder = forward(log, "client", 0);
    usleep(1500000);
    int status = 0;
    SR_CHECK_MSG(waitpid(forwarder, &status, WNOHANG) == 0, "the forwarder exited on a refused record");
    SR_CHECK(prefix_of(stored, log, &len));
    struct rlimit room = {RLIM_INFINITY, RLIM_INFINITY};
    SR_CHECK(prlimit(collector, RLIMIT_FSIZE, &room, NULL) == 0); /* space returns */
    int caught_up = 0;
    for (int i = 0; i < 150 && !caught_up; i++) caught_up = same_file(log, stored), usleep(100000);
    SR_CHECK_MSG(caught_up, "after space returned the copy differs from the log");
    stop(forwarder, SIGTERM);
    sr_audit_verify_result_t r;
    const char *files[] = {stored};
    SR_CHECK_OK(sr_audit_verify_files(files, 1, pk, &r));
    SR_CHECK(r.records >= 600);
    stop(collector, SIGTERM);
    snprintf(store, sizeof store, "%s", saved_store);
}

/* CPU seconds a process has used (user + system), from /proc. */
static double cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Out of descriptors (a 32-file limit, 60 idle connections that never start
 * TLS): the collector waits instead of failing accept() in a loop at full
 * CPU, frees the slot of every failed handshake (300 more than its cap), and
 * serves a well-behaved forwarder once the idle ones go. */
static void test_descriptor_exhaustion_does_not_spin(void)
{
    char log[600], saved_store[512];
    fresh_store_and_log("fds", saved_store, log, 50, 100);
    open_files_limit = 32;
    pid_t collector = start_collector();
    open_files_limit = RLIM_INFINITY;
    int idle[60], opened = 0;
    for (int i = 0; i < 60; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
        idle[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (idle[i] >= 0 && connect(idle[i], (struct sockaddr *)&sa, sizeof sa) == 0) opened++;
    }
    SR_CHECK_EQ_INT(opened, 60);
    usleep(300000);
    double before = cpu_seconds(collector);
    usleep(1500000);
    double used = cpu_seconds(collector) - before;
    SR_CHECK_MSG(used < 0.5, "the collector used %.2f s of CPU in 1.5 s while out of descriptors", used);
    for (int i = 0; i < 60; i++) close(idle[i]);
    /* 300 more that connect and leave without TLS (more than the 256 slots):
     * each failed handshake frees its slot */
    for (int i = 0; i < 300; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) usleep(2000);
        if (fd >= 0) close(fd);
    }
    SR_CHECK_EQ_INT(forward(log, "client", 1), 0);
    SR_CHECK(same_file(log, stored_path("strongroom-test-client")));
    stop(collector, SIGTERM);
    snprintf(store, sizeof store, "%s", saved_store);
}

/* Slowloris: 300 connections (more than the 256 slots) that send a TLS
 * ClientHello a byte every half second. The handshake has one deadline as a
 * whole (10 s), so they are cut then and a well-behaved forwarder is served;
 * a per-read timeout alone would keep them for ever. */
static void test_slowloris_cut_at_the_handshake_deadline(void)
{
    char log[600], saved_store[512];
    fresh_store_and_log("slow", saved_store, log, 20, 100);
    pid_t collector = start_collector();
    enum { N = 300 };
    int fd[N], open_now = 0;
    for (int i = 0; i < N; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
        fd[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fd[i] >= 0 && connect(fd[i], (struct sockaddr *)&sa, sizeof sa) != 0) close(fd[i]), fd[i] = -1;
        /* a valid TLS record header announcing 512 bytes of handshake, which then come a byte at a time */
        if (fd[i] >= 0 && send(fd[i], "\x16\x03\x01\x02\x00", 5, MSG_NOSIGNAL) != 5) close(fd[i]), fd[i] = -1;
    }
    /* the first 256 are cut at their deadline; the 44 queued behind them get
     * slots then, and are cut 10 s later */
    uint64_t t0 = sr_time_mono_ms();
    do {
        usleep(500000);
        open_now = 0;
        for (int i = 0; i < N; i++) {
            if (fd[i] >= 0 && send(fd[i], "\x01", 1, MSG_NOSIGNAL) != 1) close(fd[i]), fd[i] = -1;
            open_now += fd[i] >= 0;
        }
    } while (open_now && sr_time_mono_ms() - t0 < 30000);
    printf("  300 dribbling connections all cut %.1f s after they started\n", (double)(sr_time_mono_ms() - t0) / 1000);
    SR_CHECK_MSG(open_now == 0, "%d of %d dribbling connections still open after 30 s", open_now, N);
    SR_CHECK_EQ_INT(forward(log, "client", 1), 0);
    SR_CHECK(same_file(log, stored_path("strongroom-test-client")));
    for (int i = 0; i < N; i++)
        if (fd[i] >= 0) close(fd[i]);
    stop(collector, SIGTERM);
    snprintf(store, sizeof store, "%s", saved_store);
}

/* Certificates whose CNs the old file-name mapping made one ("db1 prod" and
 * "db1_prod" both became db1_prod.log, and the second forwarder died on
 * "the chains diverge"): each has its own store, listed by CN. */
static void test_colliding_names_get_their_own_stores(void)
{
    char saved_store[512], log_a[600], log_b[600];
    snprintf(saved_store, sizeof saved_store, "%s", store);
    snprintf(store, sizeof store, "%s", sr_test_path("store-names"));
    snprintf(log_a, sizeof log_a, "%s", sr_test_path("db1-space.log"));
    snprintf(log_b, sizeof log_b, "%s", sr_test_path("db1-underscore.log"));
    const char *logs[] = {log_a, log_b};
    for (int i = 0; i < 2; i++) {
        sr_audit_writer_t *w = NULL;
        sr_audit_options_t o = {.path = logs[i], .signing_key = sign_key, .checkpoint_every = 50};
        SR_CHECK_OK(sr_audit_open(&o, &w));
        append_n(w, i * 1000, 120 + i * 30);
        SR_CHECK_OK(sr_audit_close(w));
    }
    pid_t collector = start_collector();
    SR_CHECK_EQ_INT(forward(log_a, "db1-space", 1), 0);
    SR_CHECK_EQ_INT(forward(log_b, "db1-underscore", 1), 0);
    const char *a = stored_path("db1 prod"), *b = stored_path("db1_prod");
    SR_CHECK_MSG(strcmp(a, b) != 0, "both certificates stored in %s", a);
    SR_CHECK_MSG(same_file(log_a, a), "\"db1 prod\": %s differs from its log", a);
    SR_CHECK_MSG(same_file(log_b, b), "db1_prod: %s differs from its log", b);
    SR_CHECK_EQ_INT(forward(log_a, "db1-space", 1), 0); /* and again: nothing duplicated */
    SR_CHECK(same_file(log_a, a));
    stop(collector, SIGTERM);
    snprintf(store, sizeof store, "%s", saved_store);
}

/* Each source's checkpoints are verified with its own key, registered in
 * the store by certificate (tde-audit register): a log signed by another
 * key than the collector's --key is refused until its key is registered,
 * which takes effect while the collector runs; with --require-key and no
 * --key, a source without a registered key is refused at its hello. */
static void test_each_source_verified_with_its_own_key(void)
{
    char saved_store[512], log_a[600], log_b[600], key_b[600], cmd[4096];
    fresh_store_and_log("keys", saved_store, log_a, 60, 20);
    snprintf(log_b, sizeof log_b, "%s", sr_test_path("signed-by-b.log"));
    snprintf(key_b, sizeof key_b, "%s", sr_test_path("audit-b"));
    SR_CHECK_OK(sr_audit_keygen(key_b));
    char sign_b[700];
    snprintf(sign_b, sizeof sign_b, "%s.sign", key_b);
    sr_audit_writer_t *w = NULL;
    SR_CHECK_OK(sr_audit_open(&(sr_audit_options_t){.path = log_b, .signing_key = sign_b, .checkpoint_every = 20}, &w));
    append_n(w, 0, 60);
    SR_CHECK_OK(sr_audit_close(w));
    pid_t collector = start_collector();
    SR_CHECK_EQ_INT(forward(log_b, "db1-underscore", 1), 1); /* its checkpoints are not signed by --key */
    snprintf(cmd, sizeof cmd, "%s register --dir %s --cert %s/db1-underscore.pem --key %s.pub >/dev/null", tde_audit,
             store, pki, key_b);
    SR_CHECK_EQ_INT(system(cmd), 0);
    SR_CHECK_EQ_INT(forward(log_b, "db1-underscore", 1), 0);
    SR_CHECK_MSG(same_file(log_b, stored_path("db1_prod")), "the copy of the log signed by key B differs");
    SR_CHECK_EQ_INT(forward(log_a, "client", 1), 0); /* others: --key */
    SR_CHECK(same_file(log_a, stored_path("strongroom-test-client")));
    stop(collector, SIGTERM);
    collector_default_key = 0, collector_require_key = 1;
    collector = start_collector();
    SR_CHECK_EQ_INT(forward(log_a, "client2", 1), 1); /* no key of its own, none by default: refused */
    SR_CHECK_EQ_INT(forward(log_b, "db1-underscore", 1), 0);
    stop(collector, SIGTERM);
    collector_default_key = 1, collector_require_key = 0;
    snprintf(store, sizeof store, "%s", saved_store);
}

/* An authenticated forwarder cannot hold its slot (and its source) by
 * sending a frame a byte at a time (the whole frame has 10 s once it began)
 * nor by saying nothing (10 s idle): both are cut, and another source is
 * served meanwhile. Before, each read had 10 s of its own and the dribbler
 * stayed for ever. */
static void test_authenticated_dribbler_and_idle_peer_cut(void)
{
    char log[600], saved_store[512], ca[600], cert[600], key[600];
    fresh_store_and_log("dribble", saved_store, log, 30, 10);
    pid_t collector = start_collector();
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    static const char *who[2] = {"client2", "db1-space"}; /* the dribbler, the idle one: two sources */
    sr_ssl_ctx_t *ctx[2] = {NULL, NULL};
    sr_tls_conn_t *c[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        uint8_t head[5] = {'H'}, reply[256];
        snprintf(cert, sizeof cert, "%s/%s.pem", pki, who[i]);
        snprintf(key, sizeof key, "%s/%s.key", pki, who[i]);
        SR_CHECK_OK(sr_tls_client_ctx_new(&(sr_tls_options_t){.ca_file = ca, .cert_file = cert, .key_file = key},
                                          &ctx[i]));
        SR_CHECK_OK(sr_tls_connect(ctx[i], "127.0.0.1", port, "localhost", 5000, &c[i]));
        SR_CHECK_OK(sr_tls_write_all(c[i], head, sizeof head));
        SR_CHECK_OK(sr_tls_read_exact(c[i], head, sizeof head)); /* the greeting: where the source stands */
        uint32_t n = (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 8 | head[4];
        SR_CHECK(head[0] == 'L' && n < sizeof reply);
        SR_CHECK_OK(sr_tls_read_exact(c[i], reply, n));
        sr_tls_set_timeout(c[i], 250);
    }
    /* the frame: 'R', a length of 200, then the bytes one at a time */
    static const uint8_t frame_start[] = {'R', 0, 0, 0, 200};
    uint64_t t0 = sr_time_mono_ms(), cut_at[2] = {0, 0};
    size_t sent = 0;
    int forwarded = -1;
    while ((!cut_at[0] || !cut_at[1]) && sr_time_mono_ms() - t0 < 30000 && c[0] && c[1]) {
        for (int i = 0; i < 2; i++) {
            if (cut_at[i]) continue;
            uint8_t byte = sent < sizeof frame_start ? frame_start[sent] : 'x';
            if (i == 0 && sr_tls_write_all(c[i], &byte, 1) == SR_OK) sent++;
            sr_err_t rc = sr_tls_read_exact(c[i], &byte, 1); /* the pause; anything but a timeout: cut */
            if (rc != SR_ERR_TIMEOUT) cut_at[i] = sr_time_mono_ms();
        }
        if (forwarded < 0) forwarded = forward(log, "client", 1); /* another source, meanwhile */
    }
    printf("  dribbler (%zu bytes sent) cut after %.1f s, idle peer after %.1f s\n", sent,
           cut_at[0] ? (double)(cut_at[0] - t0) / 1000 : -1.0, cut_at[1] ? (double)(cut_at[1] - t0) / 1000 : -1.0);
    SR_CHECK_MSG(cut_at[0] && cut_at[0] - t0 < 15000, "the dribbling forwarder was not cut within 15 s");
    SR_CHECK_MSG(cut_at[1] && cut_at[1] - t0 < 15000, "the idle forwarder was not cut within 15 s");
    SR_CHECK_EQ_INT(forwarded, 0);
    SR_CHECK(same_file(log, stored_path("strongroom-test-client")));
    for (int i = 0; i < 2; i++) sr_tls_close(c[i]), sr_tls_ctx_free(ctx[i]);
    stop(collector, SIGTERM);
    snprintf(store, sizeof store, "%s", saved_store);
}

static void test_tampered_record_refused(void)
{
    char log[600], bad[600], stored[700];
    snprintf(log, sizeof log, "%s", sr_test_path("other.log"));
    snprintf(bad, sizeof bad, "%s", sr_test_path("other-tampered.log"));
    sr_audit_writer_t *w = NULL;
    sr_audit_options_t o = {.path = log, .signing_key = sign_key, .checkpoint_every = 10};
    SR_CHECK_OK(sr_audit_open(&o, &w));
    append_n(w, 0, 40);
    SR_CHECK_OK(sr_audit_close(w));
    size_t len = 0;
    uint8_t *bytes = sr_test_read_file(log, &len);
    char *at = bytes ? memmem(bytes, len, "record 20\"", 10) : NULL;
    SR_CHECK(at != NULL);
    if (at) at[7] = '9'; /* "record 20" -> "record 90" */
    SR_CHECK(sr_test_write_file(bad, bytes, len) == 0);
    free(bytes);
    pid_t collector = start_collector();
    SR_CHECK_EQ_INT(forward(bad, "client2", 1), 1);
    snprintf(stored, sizeof stored, "%s", stored_path("strongroom-test-client-2"));
    size_t slen = 0;
    uint8_t *s = sr_test_read_file(stored, &slen);
    SR_CHECK_MSG(s && !memmem(s, slen, "record 90", 9) && memmem(s, slen, "record 19\"", 10), "stored copy is wrong");
    free(s);
    const char *files[] = {stored};
    sr_audit_verify_result_t r;
    SR_CHECK_OK(sr_audit_verify_files(files, 1, pk, &r)); /* what was stored before the bad record is intact */
    SR_CHECK_EQ_INT(forward(log, "rogue-client", 1), 3); /* a certificate from another CA: could not deliver */
    stop(collector, SIGTERM);
}

int main(void)
{
    snprintf(pki, sizeof pki, "%s", sr_test_path("pki"));
    snprintf(store, sizeof store, "%s", sr_test_path("store"));
    snprintf(sign_key, sizeof sign_key, "%s.sign", sr_test_path("audit"));
    snprintf(pub_key, sizeof pub_key, "%s.pub", sr_test_path("audit"));
    snprintf(tde_audit, sizeof tde_audit, "%s", sr_test_build_path("audit/tde-audit"));
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null", sr_test_source_path("tests/pki/make-test-pki"), pki);
    if (system(cmd) != 0) return fprintf(stderr, "cannot make the test PKI\n"), 1;
    SR_CHECK_OK(sr_audit_keygen(sr_test_path("audit")));
    SR_CHECK_OK(sr_audit_verify_key_load(pub_key, pk));
    port = sr_test_free_port();
    SR_RUN(test_collector_killed_mid_stream_loses_and_duplicates_nothing);
    SR_RUN(test_full_disk_on_the_collector_loses_nothing);
    SR_RUN(test_descriptor_exhaustion_does_not_spin);
    SR_RUN(test_slowloris_cut_at_the_handshake_deadline);
    SR_RUN(test_colliding_names_get_their_own_stores);
    SR_RUN(test_each_source_verified_with_its_own_key);
    SR_RUN(test_authenticated_dribbler_and_idle_peer_cut);
    SR_RUN(test_tampered_record_refused);
    return sr_test_finish();
}
