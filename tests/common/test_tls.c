/* Mutual TLS on loopback with the test PKI: success and every refusal. */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sr_test.h"

static char pki[4096];
static int listen_fd;
static uint16_t port;
static sr_ssl_ctx_t *server_ctx;

static const char *pki_file(const char *name)
{
    static char bufs[8][4200];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 4200, "%s/%s", pki, name);
    return b;
}

typedef struct {
    sr_err_t handshake;
    char peer_cn[256];
} accept_result_t;

/* Accepts one connection; echoes one 5-byte message back. */
static void *serve_one(void *arg)
{
    accept_result_t *r = arg;
    int fd = accept(listen_fd, NULL, NULL);
    sr_tls_conn_t *c = NULL;
    r->handshake = sr_tls_accept(server_ctx, fd, 5000, &c);
    if (r->handshake != SR_OK) return NULL;
    snprintf(r->peer_cn, sizeof r->peer_cn, "%s", sr_tls_peer_cn(c) ? sr_tls_peer_cn(c) : "");
    char buf[5];
    if (sr_tls_read_exact(c, buf, 5) == SR_OK && sr_tls_write_all(c, buf, 5) != SR_OK) r->handshake = sr_err_last();
    sr_tls_close(c);
    return NULL;
}

static sr_err_t client_ctx(const char *cert, const char *key, sr_ssl_ctx_t **ctx)
{
    sr_tls_options_t o = {.ca_file = pki_file("ca.pem"),
                          .cert_file = cert ? pki_file(cert) : NULL,
                          .key_file = key ? pki_file(key) : NULL};
    return sr_tls_client_ctx_new(&o, ctx);
}

static void test_mutual_tls_round_trip(void)
{
    accept_result_t r = {0};
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &r);
    sr_ssl_ctx_t *ctx = NULL;
    SR_CHECK_OK(client_ctx("client.pem", "client.key", &ctx));
    sr_tls_conn_t *c = NULL;
    SR_CHECK_OK(sr_tls_connect(ctx, "127.0.0.1", port, "localhost", 5000, &c));
    if (c) {
        SR_CHECK_OK(sr_tls_write_all(c, "hello", 5));
        char buf[6] = {0};
        SR_CHECK_OK(sr_tls_read_exact(c, buf, 5));
        SR_CHECK_STR(buf, "hello");
        SR_CHECK_STR(sr_tls_version_name(c), "TLSv1.3");
        SR_CHECK_STR(sr_tls_peer_cn(c), "localhost");
        SR_CHECK_ERR(sr_tls_read_exact(c, buf, 1), SR_ERR_CLOSED); /* server closed after echo */
        sr_tls_close(c);
    }
    pthread_join(t, NULL);
    SR_CHECK_OK(r.handshake);
    SR_CHECK_STR(r.peer_cn, "strongroom-test-client");
    sr_tls_ctx_free(ctx);
}

/* A server sends its certificate without the root (the client holds it:
 * it is what it trusts) and hands out no session tickets (no resumption:
 * each connection a full handshake, its chain verified; they cost an
 * encryption each on the server and a parse each on the client, for
 * clients that never resume): OpenSSL's own client sees one certificate
 * and no ticket before the echo. */
static void test_handshake_sends_neither_root_nor_tickets(void)
{
    accept_result_t r = {0};
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &r);
    char cmd[8192], out[16384];
    snprintf(cmd, sizeof cmd,
             "printf hello | timeout 10 openssl s_client -connect 127.0.0.1:%u -servername localhost -CAfile %s "
             "-cert %s -key %s -ign_eof 2>&1",
             port, pki_file("ca.pem"), pki_file("client.pem"), pki_file("client.key"));
    int rc = sr_test_command(out, sizeof out, cmd);
    pthread_join(t, NULL);
    SR_CHECK_OK(r.handshake);
    SR_CHECK_MSG(rc == 0 && strstr(out, "New, TLSv1.3") && strstr(out, "hello"), "s_client: %s", out);
    SR_CHECK_MSG(!strstr(out, "New Session Ticket"), "the server sent a session ticket: %s", out);
    SR_CHECK_MSG(strstr(out, " 0 s:") && !strstr(out, " 1 s:"), "the server sent more than its certificate: %s", out);
}

/* The client connects with `cert` and expects the handshake to fail on one side. */
static void expect_refused(const char *cert, const char *key, const char *verify_name, const char *client_msg)
{
    accept_result_t r = {0};
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &r);
    sr_ssl_ctx_t *ctx = NULL;
    SR_CHECK_OK(client_ctx(cert, key, &ctx));
    sr_tls_conn_t *c = NULL;
    sr_err_t rc = sr_tls_connect(ctx, "127.0.0.1", port, verify_name, 5000, &c);
    if (rc == SR_OK) {
        /* TLS 1.3: a refused client certificate shows on the first read. */
        char buf[5];
        sr_err_t wrc = sr_tls_write_all(c, "hello", 5);
        rc = wrc != SR_OK ? wrc : sr_tls_read_exact(c, buf, 5);
        sr_tls_close(c);
    }
    pthread_join(t, NULL);
    SR_CHECK_MSG(rc != SR_OK, "client was not refused (%s)", client_msg);
    SR_CHECK_MSG(r.handshake != SR_OK || rc != SR_OK, "server accepted");
    if (client_msg) SR_CHECK_CONTAINS(sr_err_detail(), client_msg);
    sr_tls_ctx_free(ctx);
}

static void test_wrong_server_name_refused(void)
{
    expect_refused("client.pem", "client.key", "kms.example.com", "peer certificate rejected");
}

static void test_rogue_client_refused(void)
{
    expect_refused("rogue-client.pem", "rogue-client.key", "localhost", NULL);
}

static void test_client_without_certificate_refused(void)
{
    expect_refused(NULL, NULL, "localhost", NULL);
}

static void test_untrusted_server_refused(void)
{
    sr_tls_options_t o = {.ca_file = pki_file("rogue-ca.pem")};
    sr_ssl_ctx_t *ctx = NULL;
    SR_CHECK_OK(sr_tls_client_ctx_new(&o, &ctx));
    accept_result_t r = {0};
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &r);
    sr_tls_conn_t *c = NULL;
    SR_CHECK_ERR(sr_tls_connect(ctx, "127.0.0.1", port, NULL, 5000, &c), SR_ERR_TLS);
    SR_CHECK_CONTAINS(sr_err_detail(), "peer certificate rejected");
    pthread_join(t, NULL);
    sr_tls_ctx_free(ctx);
}

static void test_read_timeout(void)
{
    accept_result_t r = {0};
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &r); /* waits for 5 bytes, we send none */
    sr_ssl_ctx_t *ctx = NULL;
    SR_CHECK_OK(client_ctx("client.pem", "client.key", &ctx));
    sr_tls_conn_t *c = NULL;
    SR_CHECK_OK(sr_tls_connect(ctx, "localhost", port, NULL, 5000, &c));
    if (c) {
        sr_tls_set_timeout(c, 200);
        char buf[1];
        uint64_t start = sr_time_mono_ms();
        SR_CHECK_ERR(sr_tls_read_exact(c, buf, 1), SR_ERR_TIMEOUT);
        SR_CHECK(sr_time_mono_ms() - start < 4000);
        SR_CHECK_OK(sr_tls_write_all(c, "12345", 5)); /* lets the server thread finish */
        sr_tls_close(c);
    }
    pthread_join(t, NULL);
    sr_tls_ctx_free(ctx);
}

static void test_connect_refused_and_bad_files(void)
{
    sr_ssl_ctx_t *ctx = NULL;
    SR_CHECK_OK(client_ctx("client.pem", "client.key", &ctx));
    int fd;
    SR_CHECK_OK(sr_tls_listen("127.0.0.1", 0, 1, &fd));
    uint16_t closed_port = sr_tls_listener_port(fd);
    close(fd);
    sr_tls_conn_t *c = NULL;
    SR_CHECK_ERR(sr_tls_connect(ctx, "127.0.0.1", closed_port, NULL, 2000, &c), SR_ERR_NETWORK);
    SR_CHECK_CONTAINS(sr_err_detail(), "Connection refused");
    sr_tls_ctx_free(ctx);
    SR_CHECK_ERR(client_ctx("missing.pem", "client.key", &ctx), SR_ERR_TLS);
    SR_CHECK_CONTAINS(sr_err_detail(), "missing.pem");
    SR_CHECK_ERR(client_ctx("client.pem", "client2.key", &ctx), SR_ERR_TLS);
    SR_CHECK_CONTAINS(sr_err_detail(), "does not match certificate");
    /* a private key others can read is no secret: refused, saying what to run */
    SR_CHECK(chmod(pki_file("client.key"), 0640) == 0);
    SR_CHECK_ERR(client_ctx("client.pem", "client.key", &ctx), SR_ERR_PERMISSION);
    SR_CHECK_CONTAINS(sr_err_detail(), "is readable by group or others (mode 640); run: chmod 600");
    SR_CHECK(chmod(pki_file("client.key"), 0600) == 0);
    SR_CHECK_OK(client_ctx("client.pem", "client.key", &ctx));
    sr_tls_ctx_free(ctx);
}

/* The key is read from the descriptor its check was made on, and never
 * prompted for: an encrypted key, a file that is no key and a FIFO (an open
 * that would wait for a writer) are each refused, saying which. */
static void test_private_key_refusals(void)
{
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "openssl pkey -in %s -aes256 -passout pass:secret -out %s", pki_file("client.key"),
             pki_file("encrypted.key"));
    SR_CHECK(system(cmd) == 0);
    SR_CHECK(chmod(pki_file("encrypted.key"), 0600) == 0);
    sr_ssl_ctx_t *ctx = NULL;
    SR_CHECK_ERR(client_ctx("client.pem", "encrypted.key", &ctx), SR_ERR_CONFIG);
    SR_CHECK_CONTAINS(sr_err_detail(), "encrypted.key is encrypted: strongroom reads an unencrypted key");
    SR_CHECK_ERR(client_ctx("client.pem", "client.pem", &ctx), SR_ERR_PERMISSION); /* 0644 */
    SR_CHECK(chmod(pki_file("client.pem"), 0600) == 0);
    SR_CHECK_ERR(client_ctx("client.pem", "client.pem", &ctx), SR_ERR_TLS);
    SR_CHECK_CONTAINS(sr_err_detail(), "client.pem is not a PEM private key");
    SR_CHECK(chmod(pki_file("client.pem"), 0644) == 0);
    SR_CHECK(mkfifo(pki_file("fifo.key"), 0600) == 0);
    SR_CHECK_ERR(client_ctx("client.pem", "fifo.key", &ctx), SR_ERR_INVALID_ARG);
    SR_CHECK_CONTAINS(sr_err_detail(), "fifo.key is not a regular file");
    SR_CHECK_ERR(client_ctx("client.pem", "absent.key", &ctx), SR_ERR_NOT_FOUND);
    SR_CHECK_CONTAINS(sr_err_detail(), "cannot open private key");
    EVP_PKEY *key = NULL;
    SR_CHECK_OK(sr_tls_private_key_load(pki_file("client.key"), "private key", &key));
    SR_CHECK(key != NULL);
    EVP_PKEY_free(key);
}

int main(void)
{
    snprintf(pki, sizeof pki, "%s/pki", sr_test_tmpdir());
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s %s", sr_test_source_path("tests/pki/make-test-pki"), pki);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot create the test PKI with: %s\n", cmd);
        return 1;
    }
    sr_tls_options_t so = {.ca_file = pki_file("ca.pem"), .cert_file = pki_file("server.pem"),
                           .key_file = pki_file("server.key"), .require_client_cert = 1};
    SR_CHECK_OK(sr_tls_server_ctx_new(&so, &server_ctx));
    SR_CHECK_OK(sr_tls_listen("127.0.0.1", 0, 8, &listen_fd));
    port = sr_tls_listener_port(listen_fd);
    SR_CHECK(port != 0);
    SR_RUN(test_mutual_tls_round_trip);
    SR_RUN(test_handshake_sends_neither_root_nor_tickets);
    SR_RUN(test_wrong_server_name_refused);
    SR_RUN(test_rogue_client_refused);
    SR_RUN(test_client_without_certificate_refused);
    SR_RUN(test_untrusted_server_refused);
    SR_RUN(test_read_timeout);
    SR_RUN(test_connect_refused_and_bad_files);
    SR_RUN(test_private_key_refusals);
    close(listen_fd);
    sr_tls_ctx_free(server_ctx);
    return sr_test_finish();
}
