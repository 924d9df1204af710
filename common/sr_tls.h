/*
 * sr_tls.h — mutual TLS (OpenSSL 3) and whole reads and writes on descriptors.
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_TLS_H
#define STRONGROOM_SR_TLS_H

#include "sr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * TLS (OpenSSL 3): mutual TLS contexts and blocking connections with timeouts.
 * ---------------------------------------------------------------------- */
typedef struct ssl_ctx_st sr_ssl_ctx_t; /* OpenSSL's SSL_CTX */

typedef enum sr_tls_version {
    SR_TLS_1_2 = 0x0303,
    SR_TLS_1_3 = 0x0304,
} sr_tls_version_t;

typedef struct sr_tls_options {
    const char *ca_file;   /* PEM bundle that verifies the peer (required) */
    const char *cert_file; /* our certificate chain, PEM (required for servers; clients: mutual TLS) */
    const char *key_file;  /* our private key, PEM */
    sr_tls_version_t min_version; /* 0: TLS 1.3 for servers, TLS 1.2 (AEAD suites only) for clients */
    int require_client_cert;      /* servers: reject clients without a valid certificate */
} sr_tls_options_t;

typedef struct sr_tls_conn sr_tls_conn_t;
typedef struct evp_pkey_st sr_evp_pkey_t; /* OpenSSL's EVP_PKEY */

/* A PEM private key, read from the file it was checked on (one open: the file
 * cannot be swapped between the check and the read): a regular file, mode
 * 0600, owned by this user or root (sr_file_check_private). Never asks for a
 * passphrase: an encrypted key is refused, saying so. `what` names it in
 * errors ("private key", "CA key"). The caller frees *out (EVP_PKEY_free). */
SR_API sr_err_t sr_tls_private_key_load(const char *path, const char *what, sr_evp_pkey_t **out) SR_MUST_CHECK;

SR_API sr_err_t sr_tls_client_ctx_new(const sr_tls_options_t *opts, sr_ssl_ctx_t **out) SR_MUST_CHECK;
SR_API sr_err_t sr_tls_server_ctx_new(const sr_tls_options_t *opts, sr_ssl_ctx_t **out) SR_MUST_CHECK;
SR_API void sr_tls_ctx_free(sr_ssl_ctx_t *ctx);

/* Connects to host:port (name or literal address), verifies the server's
 * certificate chain and that it is issued for `verify_name` (DNS name or IP
 * address; NULL: `host`). `timeout_ms` bounds the connect and handshake and
 * is then the default for every read and write on the connection. */
SR_API sr_err_t sr_tls_connect(sr_ssl_ctx_t *ctx, const char *host, uint16_t port, const char *verify_name,
                        int timeout_ms, sr_tls_conn_t **out) SR_MUST_CHECK;
/* Server side: a listening socket on host:port (port 0 picks one; read it back
 * with sr_tls_listener_port). */
SR_API sr_err_t sr_tls_listen(const char *host, uint16_t port, int backlog, int *listen_fd_out) SR_MUST_CHECK;
SR_API uint16_t sr_tls_listener_port(int listen_fd);
/* Takes ownership of an accepted socket and runs the handshake. */
SR_API sr_err_t sr_tls_accept(sr_ssl_ctx_t *ctx, int fd, int timeout_ms, sr_tls_conn_t **out) SR_MUST_CHECK;

/* Server side for an event loop: takes ownership of an accepted socket, made
 * non-blocking; the handshake and every read and write then go step by step.
 * Each step answers SR_TLS_DONE, SR_TLS_WANT_READ or SR_TLS_WANT_WRITE (wait
 * for the socket, then call again), or SR_TLS_FAILED with the error set
 * (SR_ERR_CLOSED: the peer closed cleanly). */
enum { SR_TLS_DONE = 0, SR_TLS_WANT_READ = 1, SR_TLS_WANT_WRITE = 2, SR_TLS_FAILED = -1 };
SR_API sr_err_t sr_tls_accept_nonblocking(sr_ssl_ctx_t *ctx, int fd, sr_tls_conn_t **out) SR_MUST_CHECK;
SR_API int sr_tls_handshake_step(sr_tls_conn_t *conn);
SR_API int sr_tls_read_some(sr_tls_conn_t *conn, void *buf, size_t cap, size_t *got);
SR_API int sr_tls_write_some(sr_tls_conn_t *conn, const void *buf, size_t len, size_t *written);
/* Bytes already decrypted and waiting (a poll would not report them). */
SR_API int sr_tls_pending(const sr_tls_conn_t *conn);
SR_API int sr_tls_fd(const sr_tls_conn_t *conn);

SR_API sr_err_t sr_tls_write_all(sr_tls_conn_t *conn, const void *buf, size_t len) SR_MUST_CHECK;
/* Reads exactly `len` bytes; SR_ERR_CLOSED if the peer closed cleanly before
 * the first byte, SR_ERR_TRUNCATED if it closed part-way. */
SR_API sr_err_t sr_tls_read_exact(sr_tls_conn_t *conn, void *buf, size_t len) SR_MUST_CHECK;
/* The same with an overall deadline (sr_time_mono_ms() scale; 0: none): a peer
 * that sends slowly is cut off at the deadline, not per read. */
SR_API sr_err_t sr_tls_read_exact_by(sr_tls_conn_t *conn, void *buf, size_t len, uint64_t deadline_ms) SR_MUST_CHECK;
/* The same on a plain descriptor: sr_file.h. */
SR_API void sr_tls_set_timeout(sr_tls_conn_t *conn, int timeout_ms);
/* Peer certificate subject CN (NULL if none); valid while the connection lives. */
SR_API const char *sr_tls_peer_cn(const sr_tls_conn_t *conn);
/* SHA-256 of the peer certificate, 64 hex digits (NULL if none): unlike the
 * CN, one per certificate. */
SR_API const char *sr_tls_peer_fingerprint(const sr_tls_conn_t *conn);
/* The same fingerprint of a PEM certificate file (what a server sees of it). */
SR_API sr_err_t sr_tls_cert_file_fingerprint(const char *path, char out[65]) SR_MUST_CHECK;
/* "127.0.0.1:5696" style peer address. */
SR_API const char *sr_tls_peer_addr(const sr_tls_conn_t *conn);
/* Negotiated protocol, e.g. "TLSv1.3". */
SR_API const char *sr_tls_version_name(const sr_tls_conn_t *conn);
/* Sends close_notify (best effort) and frees. NULL is allowed. */
SR_API void sr_tls_close(sr_tls_conn_t *conn);

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_TLS_H */
