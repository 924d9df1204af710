/*
 * tls.c — mutual TLS over blocking sockets with timeouts (OpenSSL 3).
 *
 * Servers offer TLS 1.3 only by default; clients accept TLS 1.2 (with ECDHE
 * + AEAD suites only) because deployed KMIP servers, PyKMIP's among them,
 * speak 1.2. Both sides verify the peer's chain against a configured CA and
 * check the extended key usage (serverAuth / clientAuth); clients also check
 * the server's name or IP address. Timeouts are socket timeouts, so a silent
 * peer costs at most `timeout_ms` per read or write.
 *
 * Writes to a peer that has gone away would raise SIGPIPE; the first context
 * created sets SIGPIPE to ignored if it was at its default (documented in
 * CONTRIBUTING.md: every strongroom process runs that way).
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SR_TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"

struct sr_tls_conn {
    SSL *ssl;
    int fd;
    int timeout_ms;
    char peer_cn[256];
    char peer_fingerprint[65]; /* SHA-256 of the peer certificate (DER), hex */
    char peer_addr[80];
};

static void ignore_sigpipe_once(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
}

/* A daemon has no one to ask for a passphrase: asked for one, it notes that the key is encrypted. */
static int no_passphrase(char *buf, int size, int rwflag, void *asked)
{
    (void)buf, (void)size, (void)rwflag;
    *(int *)asked = 1;
    return -1;
}

sr_err_t sr_tls_private_key_load(const char *path, const char *what, EVP_PKEY **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); /* a FIFO: refused below, not waited on */
    if (fd < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open %s %s", what, path);
    sr_err_t rc = sr_file_check_private(fd, path, what, NULL);
    BIO *bio = rc == SR_OK ? BIO_new_fd(fd, BIO_NOCLOSE) : NULL;
    int asked = 0;
    if (rc == SR_OK && !bio) rc = sr_err_set_openssl(SR_ERR_NOMEM, "cannot read %s %s", what, path);
    if (bio && !(*out = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &asked)))
        rc = asked ? sr_err_set(SR_ERR_CONFIG, "%s %s is encrypted: strongroom reads an unencrypted key kept at "
                                "mode 0600; run: openssl pkey -in %s -out KEY (then chmod 600 KEY)", what, path, path)
                   : sr_err_set_openssl(SR_ERR_TLS, "%s %s is not a PEM private key", what, path);
    BIO_free(bio);
    close(fd);
    return rc;
}

static sr_err_t load_identity(SSL_CTX *ctx, const sr_tls_options_t *o)
{
    if (o->cert_file && SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1)
        return sr_err_set_openssl(SR_ERR_TLS, "cannot load certificate chain %s", o->cert_file);
    EVP_PKEY *key = NULL;
    sr_err_t rc = o->key_file ? sr_tls_private_key_load(o->key_file, "private key", &key) : SR_OK;
    if (rc != SR_OK) return rc;
    int used = !key || SSL_CTX_use_PrivateKey(ctx, key) == 1; /* checked against the certificate as it is used */
    EVP_PKEY_free(key);
    if (!used || (o->key_file && o->cert_file && SSL_CTX_check_private_key(ctx) != 1))
        return sr_err_set_openssl(SR_ERR_TLS, "private key %s does not match certificate %s", o->key_file,
                                  o->cert_file ? o->cert_file : "(none)");
    if (!o->ca_file) return sr_err_set(SR_ERR_CONFIG, "a CA file is required to verify the TLS peer");
    if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1)
        return sr_err_set_openssl(SR_ERR_TLS, "cannot load CA file %s", o->ca_file);
    return SR_OK;
}

static sr_err_t ctx_new(const SSL_METHOD *method, const sr_tls_options_t *o, sr_tls_version_t default_min,
                        int purpose, SSL_CTX **out)
{
    ignore_sigpipe_once();
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (!ctx) return sr_err_set_openssl(SR_ERR_TLS, "SSL_CTX_new failed");
    sr_tls_version_t min = o->min_version ? o->min_version : default_min;
    sr_err_t rc = SR_OK;
    if (min != SR_TLS_1_2 && min != SR_TLS_1_3)
        rc = sr_err_set(SR_ERR_CONFIG, "TLS minimum version must be 1.2 or 1.3");
    else if (SSL_CTX_set_min_proto_version(ctx, (int)min) != 1 ||
             SSL_CTX_set_cipher_list(ctx, SR_TLS12_CIPHERS) != 1 || SSL_CTX_set_purpose(ctx, purpose) != 1)
        rc = sr_err_set_openssl(SR_ERR_TLS, "cannot configure TLS context");
    if (rc == SR_OK) rc = load_identity(ctx, o);
    if (rc != SR_OK) {
        SSL_CTX_free(ctx);
        return rc;
    }
    /* Our certificate's chain, built once here without the root (the peer
     * has it: it is what the peer trusts): otherwise OpenSSL builds it
     * again at every handshake and sends the root too, which the peer then
     * decodes for nothing. A chain that cannot be built from the CA file
     * (a certificate from another CA) is left to OpenSSL as before. */
    if (o->cert_file && SSL_CTX_build_cert_chain(ctx, SSL_BUILD_CHAIN_FLAG_NO_ROOT) != 1) ERR_clear_error();
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    *out = ctx;
    return SR_OK;
}

sr_err_t sr_tls_client_ctx_new(const sr_tls_options_t *o, sr_ssl_ctx_t **out)
{
    SSL_CTX *ctx;
    sr_err_t rc = ctx_new(TLS_client_method(), o, SR_TLS_1_2, X509_PURPOSE_SSL_SERVER, &ctx);
    if (rc != SR_OK) return rc;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    *out = ctx;
    return SR_OK;
}

sr_err_t sr_tls_server_ctx_new(const sr_tls_options_t *o, sr_ssl_ctx_t **out)
{
    if (!o->cert_file || !o->key_file)
        return sr_err_set(SR_ERR_CONFIG, "a TLS server needs a certificate and a private key");
    SSL_CTX *ctx;
    sr_err_t rc = ctx_new(TLS_server_method(), o, SR_TLS_1_3, X509_PURPOSE_SSL_CLIENT, &ctx);
    if (rc != SR_OK) return rc;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (o->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                       NULL);
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
    if (names) SSL_CTX_set_client_CA_list(ctx, names);
    /* No resumption: our clients keep one connection and never resume, and
     * each TLS 1.3 handshake would otherwise end with two session tickets,
     * the session encrypted twice here and parsed twice by the client. Every
     * connection is a full handshake with the certificate chain verified. */
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    *out = ctx;
    return SR_OK;
}

void sr_tls_ctx_free(sr_ssl_ctx_t *ctx) { SSL_CTX_free(ctx); }

static void set_socket_timeouts(int fd, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void sr_tls_set_timeout(sr_tls_conn_t *conn, int timeout_ms)
{
    conn->timeout_ms = timeout_ms;
    set_socket_timeouts(conn->fd, timeout_ms);
}

static void describe_peer(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(out, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* Non-blocking connect bounded by the timeout, then back to blocking. */
static sr_err_t connect_with_timeout(const char *host, uint16_t port, int timeout_ms, int *fd_out)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC}, *res, *ai;
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%u", port);
    int gai = getaddrinfo(host, port_text, &hints, &res);
    if (gai != 0) return sr_err_set(SR_ERR_NETWORK, "cannot resolve %s: %s", host, gai_strerror(gai));
    int last_errno = ECONNREFUSED;
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) continue;
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            rc = poll(&p, 1, timeout_ms);
            if (rc == 0) {
                last_errno = ETIMEDOUT;
                close(fd);
                continue;
            }
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
        if (rc == 0) {
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            freeaddrinfo(res);
            *fd_out = fd;
            return SR_OK;
        }
        last_errno = errno;
        close(fd);
    }
    freeaddrinfo(res);
    return sr_err_set_errno(last_errno == ETIMEDOUT ? SR_ERR_TIMEOUT : SR_ERR_NETWORK, last_errno,
                            "cannot connect to %s:%u", host, port);
}

static sr_err_t conn_new(SSL_CTX *ctx, int fd, int timeout_ms, sr_tls_conn_t **out)
{
    sr_tls_conn_t *c = calloc(1, sizeof *c);
    if (!c || !(c->ssl = SSL_new(ctx))) {
        free(c);
        close(fd);
        return sr_err_set(SR_ERR_NOMEM, "cannot allocate a TLS connection");
    }
    c->fd = fd;
    SSL_set_fd(c->ssl, fd);
    sr_tls_set_timeout(c, timeout_ms);
    describe_peer(fd, c->peer_addr, sizeof c->peer_addr);
    *out = c;
    return SR_OK;
}

static void conn_free(sr_tls_conn_t *c)
{
    SSL_free(c->ssl);
    close(c->fd);
    free(c);
}

static int cert_fingerprint(X509 *cert, char out[65])
{
    unsigned char md[32];
    unsigned len = 0;
    if (X509_digest(cert, EVP_sha256(), md, &len) != 1 || len != sizeof md) return 0;
    sr_hex_encode(md, sizeof md, out);
    return 1;
}

static void remember_peer_cn(sr_tls_conn_t *c)
{
    X509 *cert = SSL_get1_peer_certificate(c->ssl);
    if (!cert) return;
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, c->peer_cn, sizeof c->peer_cn);
    cert_fingerprint(cert, c->peer_fingerprint);
    X509_free(cert);
}

sr_err_t sr_tls_cert_file_fingerprint(const char *path, char out[65])
{
    FILE *f = fopen(path, "r");
    if (!f) return sr_err_set_errno(SR_ERR_IO, errno, "cannot open %s", path);
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    int ok = cert && cert_fingerprint(cert, out);
    X509_free(cert);
    return ok ? SR_OK : sr_err_set(SR_ERR_INVALID_ARG, "%s: not a PEM certificate", path);
}

/* Turns a failed handshake into a message a user can act on. */
static sr_err_t handshake_error(sr_tls_conn_t *c, int ret, const char *what)
{
    long verify = SSL_get_verify_result(c->ssl);
    int err = SSL_get_error(c->ssl, ret);
    if (verify != X509_V_OK)
        return sr_err_set(SR_ERR_TLS, "%s with %s: peer certificate rejected: %s", what, c->peer_addr,
                          X509_verify_cert_error_string(verify));
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ||
        (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)))
        return sr_err_set(SR_ERR_TIMEOUT, "%s with %s timed out after %d ms", what, c->peer_addr, c->timeout_ms);
    return sr_err_set_openssl(SR_ERR_TLS, "%s with %s failed", what, c->peer_addr);
}

/* Runs one side's handshake; frees the connection on failure. */
/* The handshake has one deadline as a whole (timeout_ms): non-blocking,
 * polled for what is left, so a peer sending its handshake a byte at a time
 * is cut off at the deadline instead of resetting a per-read timeout. */
static int handshake_within(sr_tls_conn_t *c, int (*side)(SSL *))
{
    int flags = fcntl(c->fd, F_GETFL);
    fcntl(c->fd, F_SETFL, flags | O_NONBLOCK);
    uint64_t deadline = sr_time_mono_ms() + (uint64_t)c->timeout_ms;
    int ret;
    for (;;) {
        ERR_clear_error();
        ret = side(c->ssl);
        if (ret == 1) break;
        int err = SSL_get_error(c->ssl, ret);
        uint64_t now = sr_time_mono_ms();
        if ((err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) || now >= deadline) break;
        struct pollfd p = {.fd = c->fd, .events = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
        if (poll(&p, 1, (int)(deadline - now)) <= 0) { /* the deadline: reported as a timeout */
            errno = EAGAIN;
            break;
        }
    }
    fcntl(c->fd, F_SETFL, flags);
    return ret;
}

static sr_err_t handshake(sr_tls_conn_t *c, int (*side)(SSL *), sr_tls_conn_t **out)
{
    int ret = handshake_within(c, side);
    if (ret != 1) {
        sr_err_t rc = handshake_error(c, ret, "TLS handshake");
        conn_free(c);
        return rc;
    }
    remember_peer_cn(c);
    *out = c;
    return SR_OK;
}

static int is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

sr_err_t sr_tls_connect(sr_ssl_ctx_t *ctx, const char *host, uint16_t port, const char *verify_name,
                        int timeout_ms, sr_tls_conn_t **out)
{
    int fd = -1;
    sr_err_t rc = connect_with_timeout(host, port, timeout_ms, &fd);
    if (rc != SR_OK) return rc;
    sr_tls_conn_t *c;
    if ((rc = conn_new(ctx, fd, timeout_ms, &c)) != SR_OK) return rc;
    const char *name = verify_name ? verify_name : host;
    int ok = is_ip_literal(name) ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name)
                                 : (SSL_set1_host(c->ssl, name) && SSL_set_tlsext_host_name(c->ssl, name));
    if (!ok) {
        conn_free(c);
        return sr_err_set_openssl(SR_ERR_TLS, "cannot set the expected server name %s", name);
    }
    return handshake(c, SSL_connect, out);
}

sr_err_t sr_tls_listen(const char *host, uint16_t port, int backlog, int *listen_fd_out)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC, .ai_flags = AI_PASSIVE}, *res;
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%u", port);
    int gai = getaddrinfo(host, port_text, &hints, &res);
    if (gai != 0) return sr_err_set(SR_ERR_NETWORK, "cannot resolve listen address %s: %s", host, gai_strerror(gai));
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return sr_err_set_errno(SR_ERR_NETWORK, e, "cannot listen on %s:%u", host, port);
    }
    freeaddrinfo(res);
    *listen_fd_out = fd;
    return SR_OK;
}

uint16_t sr_tls_listener_port(int listen_fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(listen_fd, (struct sockaddr *)&ss, &sl) != 0) return 0;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

sr_err_t sr_tls_accept(sr_ssl_ctx_t *ctx, int fd, int timeout_ms, sr_tls_conn_t **out)
{
    int one = 1; /* small request/response exchanges: Nagle + delayed ACK would add 40 ms to each */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sr_tls_conn_t *c;
    sr_err_t rc = conn_new(ctx, fd, timeout_ms, &c);
    if (rc != SR_OK) return rc;
    return handshake(c, SSL_accept, out);
}

static sr_err_t io_error(sr_tls_conn_t *c, int ret, const char *what)
{
    int err = SSL_get_error(c->ssl, ret);
    if (err == SSL_ERROR_ZERO_RETURN) return sr_err_set(SR_ERR_CLOSED, "%s closed the connection", c->peer_addr);
    /* A socket timeout surfaces as WANT_READ/WANT_WRITE on a blocking socket. */
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ||
        (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)))
        return sr_err_set(SR_ERR_TIMEOUT, "%s %s timed out after %d ms", what, c->peer_addr, c->timeout_ms);
    if (err == SSL_ERROR_SYSCALL)
        return sr_err_set_errno(SR_ERR_NETWORK, errno ? errno : ECONNRESET, "%s %s", what, c->peer_addr);
    return sr_err_set_openssl(SR_ERR_TLS, "%s %s failed", what, c->peer_addr);
}

/* ---- step by step, for an event loop ------------------------------------------------------ */

sr_err_t sr_tls_accept_nonblocking(sr_ssl_ctx_t *ctx, int fd, sr_tls_conn_t **out)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sr_tls_conn_t *c;
    sr_err_t rc = conn_new(ctx, fd, 0, &c);
    if (rc != SR_OK) return rc;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    *out = c;
    return SR_OK;
}

/* WANT_* for a step that must wait, else SR_TLS_FAILED with the error set. */
static int step_result(sr_tls_conn_t *c, int ret, const char *what, int handshaking)
{
    int err = SSL_get_error(c->ssl, ret);
    if (err == SSL_ERROR_WANT_READ) return SR_TLS_WANT_READ;
    if (err == SSL_ERROR_WANT_WRITE) return SR_TLS_WANT_WRITE;
    (void)(handshaking ? handshake_error(c, ret, what) : io_error(c, ret, what));
    return SR_TLS_FAILED;
}

int sr_tls_handshake_step(sr_tls_conn_t *c)
{
    ERR_clear_error();
    int ret = SSL_accept(c->ssl);
    if (ret != 1) return step_result(c, ret, "TLS handshake", 1);
    remember_peer_cn(c);
    return SR_TLS_DONE;
}

int sr_tls_read_some(sr_tls_conn_t *c, void *buf, size_t cap, size_t *got)
{
    ERR_clear_error();
    *got = 0;
    int ret = SSL_read_ex(c->ssl, buf, cap, got);
    return ret == 1 ? SR_TLS_DONE : step_result(c, ret, "read from", 0);
}

int sr_tls_write_some(sr_tls_conn_t *c, const void *buf, size_t len, size_t *written)
{
    ERR_clear_error();
    *written = 0;
    int ret = SSL_write_ex(c->ssl, buf, len, written);
    return ret == 1 ? SR_TLS_DONE : step_result(c, ret, "write to", 0);
}

int sr_tls_pending(const sr_tls_conn_t *c) { return SSL_pending(c->ssl) > 0; }
int sr_tls_fd(const sr_tls_conn_t *c) { return c->fd; }

sr_err_t sr_tls_write_all(sr_tls_conn_t *c, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        size_t written = 0;
        ERR_clear_error();
        int ret = SSL_write_ex(c->ssl, p, len, &written);
        if (ret != 1) return io_error(c, ret, "write to");
        p += written;
        len -= written;
    }
    return SR_OK;
}

sr_err_t sr_tls_read_exact(sr_tls_conn_t *c, void *buf, size_t len) { return sr_tls_read_exact_by(c, buf, len, 0); }

static sr_err_t read_exact(sr_tls_conn_t *c, uint8_t *p, size_t len, uint64_t deadline_ms)
{
    size_t got = 0;
    while (got < len) {
        size_t n = 0;
        if (deadline_ms) { /* narrowed before each read: a dribbling peer cannot stretch one message */
            uint64_t now = sr_time_mono_ms();
            if (now >= deadline_ms)
                return sr_err_set(SR_ERR_TIMEOUT, "%s sent %zu of %zu bytes before the deadline", c->peer_addr, got,
                                  len);
            uint64_t left = deadline_ms - now;
            set_socket_timeouts(c->fd, left < (uint64_t)c->timeout_ms ? (int)left : c->timeout_ms);
        }
        ERR_clear_error();
        int ret = SSL_read_ex(c->ssl, p + got, len - got, &n);
        if (ret != 1) {
            sr_err_t rc = io_error(c, ret, "read from");
            if (rc == SR_ERR_CLOSED && got > 0)
                return sr_err_set(SR_ERR_TRUNCATED, "%s closed the connection after %zu of %zu bytes", c->peer_addr,
                                  got, len);
            return rc;
        }
        got += n;
    }
    return SR_OK;
}

sr_err_t sr_tls_read_exact_by(sr_tls_conn_t *c, void *buf, size_t len, uint64_t deadline_ms)
{
    sr_err_t rc = read_exact(c, buf, len, deadline_ms);
    if (deadline_ms) set_socket_timeouts(c->fd, c->timeout_ms);
    return rc;
}

const char *sr_tls_peer_cn(const sr_tls_conn_t *c) { return c->peer_cn[0] ? c->peer_cn : NULL; }
const char *sr_tls_peer_fingerprint(const sr_tls_conn_t *c) { return c->peer_fingerprint[0] ? c->peer_fingerprint : NULL; }
const char *sr_tls_peer_addr(const sr_tls_conn_t *c) { return c->peer_addr; }
const char *sr_tls_version_name(const sr_tls_conn_t *c) { return SSL_get_version(c->ssl); }

void sr_tls_close(sr_tls_conn_t *c)
{
    if (!c) return;
    SSL_shutdown(c->ssl); /* best effort close_notify; we don't wait for the peer's */
    conn_free(c);
}
