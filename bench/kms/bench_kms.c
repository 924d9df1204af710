/*
 * bench_kms — kmsd under load: DEK unwraps (KMIP Decrypt, AES-GCM with AAD,
 * what every tablespace open costs) and Gets, over persistent mutual-TLS
 * connections, with 1, 4, 16 and 64 client threads: ops/s, p50 and p99.
 * kmsd writes a durable audit record for every request (its own log, group
 * commit), as in production. The same unwraps against Debian's PyKMIP
 * server, started in the same run, give the ratio.
 */
#include "kmip.h"
#include "kmsd_server.h"
#include "pykmip_server.h"
#include "sr_test.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct target {
    const char *name, *dir, *cert;
    uint16_t port;
    char uid[SR_KMIP_UID_MAX];
    uint8_t iv[12], aad[26], wrapped[64];
    size_t wrapped_len;
} target_t;

typedef struct worker {
    const target_t *t;
    int op; /* SR_KMIP_OP_DECRYPT or SR_KMIP_OP_GET */
    double seconds;
    uint32_t *lat_us;
    size_t n, cap;
    int failed;
} worker_t;

static sr_kmip_client_t *connect_to(const target_t *t)
{
    char ca[600], crt[600], key[600];
    snprintf(ca, sizeof ca, "%s/ca.pem", t->dir);
    snprintf(crt, sizeof crt, "%s/%s.pem", t->dir, t->cert);
    snprintf(key, sizeof key, "%s/%s.key", t->dir, t->cert);
    sr_kmip_client_options_t o = {.host = "127.0.0.1", .port = t->port, .verify_name = "localhost", .ca_file = ca,
                                  .cert_file = crt, .key_file = key, .timeout_ms = 30000};
    sr_kmip_client_t *c = NULL;
    return sr_kmip_client_new(&o, &c) == SR_OK ? c : NULL;
}

static void *work(void *arg)
{
    worker_t *w = arg;
    sr_kmip_client_t *c = connect_to(w->t);
    uint8_t out[64];
    size_t len = 0;
    if (!c) return w->failed = 1, NULL;
    /* the handshake is not part of the rate: one call first */
    (void)!sr_kmip_get_key(c, w->t->uid, out, sizeof out, &len);
    uint64_t end = sr_time_mono_ns() + (uint64_t)(w->seconds * 1e9);
    while (sr_time_mono_ns() < end) {
        uint64_t t0 = sr_time_mono_ns();
        sr_err_t rc = w->op == SR_KMIP_OP_GET ? sr_kmip_get_key(c, w->t->uid, out, sizeof out, &len)
                                              : sr_kmip_decrypt_aead(c, w->t->uid, w->t->iv, 12, w->t->aad, 26,
                                                                     w->t->wrapped, w->t->wrapped_len, out,
                                                                     sizeof out, &len);
        if (rc != SR_OK) {
            fprintf(stderr, "%s: %s\n", w->t->name, sr_err_detail());
            w->failed = 1;
            break;
        }
        if (w->n == w->cap) w->lat_us = realloc(w->lat_us, (w->cap = w->cap ? 2 * w->cap : 4096) * sizeof *w->lat_us);
        w->lat_us[w->n++] = (uint32_t)((sr_time_mono_ns() - t0) / 1000);
    }
    sr_kmip_client_free(c);
    return NULL;
}

static int by_value(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ops/s over all threads; p50/p99 in ms. */
static double run(const target_t *t, int op, int threads, double seconds, double *p50, double *p99)
{
    worker_t *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_t){.t = t, .op = op, .seconds = seconds};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    size_t total = 0;
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL), total += w[i].n;
    uint32_t *all = malloc((total + 1) * sizeof *all);
    size_t k = 0;
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, w[i].lat_us, w[i].n * sizeof *all), k += w[i].n;
        failed |= w[i].failed;
        free(w[i].lat_us);
    }
    qsort(all, total, sizeof *all, by_value);
    *p50 = total ? all[total / 2] / 1000.0 : 0;
    *p99 = total ? all[total * 99 / 100] / 1000.0 : 0;
    free(all), free(w), free(th);
    return failed ? -1 : (double)total / seconds;
}

/* A master key on the target and one DEK wrapped by it. */
static int prepare(target_t *t)
{
    sr_kmip_client_t *c = connect_to(t);
    sr_kmip_key_template_t tpl = {.name = "bench-master", .bits = 256,
                                  .usage_mask = SR_KMIP_USAGE_ENCRYPT | SR_KMIP_USAGE_DECRYPT};
    static const uint8_t dek[32] = {7};
    memcpy(t->iv, "bench-iv-123", 12);
    memcpy(t->aad, "SRDEK1-bench-tablespace-v1", 26);
    int ok = c && sr_kmip_create_aes_key(c, &tpl, t->uid) == SR_OK && sr_kmip_activate(c, t->uid) == SR_OK &&
             sr_kmip_encrypt_aead(c, t->uid, t->iv, 12, t->aad, 26, dek, sizeof dek, t->wrapped, sizeof t->wrapped,
                                  &t->wrapped_len) == SR_OK;
    if (!ok) fprintf(stderr, "%s: cannot prepare: %s\n", t->name, sr_err_detail());
    sr_kmip_client_free(c);
    return ok ? 0 : -1;
}

int main(void)
{
    int quick = getenv("SR_BENCH_QUICK") != NULL;
    double seconds = quick ? 0.5 : 3.0;
    static const char *const certs[] = {"client:application", NULL};
    char kdir[600], pdir[600], cmd[8192], out[4096];
    snprintf(kdir, sizeof kdir, "%s", sr_test_path("kms"));
    snprintf(pdir, sizeof pdir, "%s", sr_test_path("pykmip"));
    target_t kms = {.name = "kmsd", .dir = kdir, .cert = "client"}, py = {.name = "PyKMIP", .dir = pdir, .cert = "client"};
    if (kmsd_init(kdir, certs, &kms.port) != 0) return 1;
    snprintf(cmd, sizeof cmd, "%s keygen --out %s/audit && printf '\\n[audit]\\nlog = %s/audit.log\\nsign_key = %s/audit.sign\\n' >> %s/kmsd.conf",
             sr_test_build_path("audit/tde-audit"), kdir, kdir, kdir, kdir);
    if (sr_test_command(out, sizeof out, cmd) != 0 || kmsd_start(kdir, kms.port) != 0 || prepare(&kms) != 0) return 1;
    int have_py = pykmip_start(pdir, sr_test_source_path("tests/pki/make-test-pki"), &py.port) == 0 && prepare(&py) == 0;

    static const int clients[] = {1, 4, 16, 64};
    double py_rate[4] = {0};
    printf("kmsd: DEK unwraps (KMIP Decrypt, AES-GCM + AAD) and Gets over kept mutual-TLS connections, %.1f s each;\n"
           "every request a durable audit record. PyKMIP server in the same run (TLS 1.2, SQLite store).\n\n",
           seconds);
    printf("| clients | kmsd unwraps/s | p50 ms | p99 ms | kmsd Gets/s | PyKMIP unwraps/s | p99 ms | kmsd / PyKMIP |\n"
           "|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < 4; i++) {
        double p50, p99, g50, g99, y50 = 0, y99 = 0;
        double unwraps = run(&kms, SR_KMIP_OP_DECRYPT, clients[i], seconds, &p50, &p99);
        double gets = run(&kms, SR_KMIP_OP_GET, clients[i], seconds, &g50, &g99);
        if (have_py && clients[i] <= 16) py_rate[i] = run(&py, SR_KMIP_OP_DECRYPT, clients[i], seconds, &y50, &y99);
        printf("| %d | %.0f | %.2f | %.2f | %.0f | ", clients[i], unwraps, p50, p99, gets);
        if (py_rate[i] > 0) printf("%.0f | %.1f | %.0f× |\n", py_rate[i], y99, unwraps / py_rate[i]);
        else printf("%s | | |\n", have_py && clients[i] <= 16 ? "failed" : "not run");
    }
    if (have_py) pykmip_stop();
    kmsd_stop(SIGTERM);
    printf("\nTargets: >= 10,000 unwraps/s; >= 30x the PyKMIP server; p99 < 5 ms at 16 clients.\n");
    return 0;
}
