/*
 * common.h — the runtime every strongroom component shares.
 *
 * Error codes (one enum, one sr_strerror, a thread-local detail message),
 * logging that never prints a registered secret, the one configuration
 * format every daemon reads, secure memory for keys, UUIDs, time helpers and
 * TLS (mutual, OpenSSL 3) for the components that talk over the network.
 *
 * Conventions (see CONTRIBUTING.md):
 *  - Functions return sr_err_t (SR_OK == 0). On failure nothing is written to
 *    out-parameters, and sr_err_set() has recorded a message that says what,
 *    where and what to do; read it with sr_err_detail().
 *  - Out-parameters come last. Buffers come with their sizes.
 *  - Secrets live in sr_secure_alloc() memory and are never logged.
 */
#ifndef STRONGROOM_COMMON_H
#define STRONGROOM_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SR_API marks what libstrongroom.so exports: the functions the public
 * headers declare with it, nothing else (the library is built with hidden
 * visibility; tests/api checks the exported list against the headers). */
#if defined(__GNUC__) || defined(__clang__)
#define SR_PRINTF(fmt_idx, args_idx) __attribute__((format(printf, fmt_idx, args_idx)))
#define SR_MUST_CHECK __attribute__((warn_unused_result))
#ifndef SR_API /* modules that export one entry point define it empty */
#define SR_API __attribute__((visibility("default")))
#endif
#else
#define SR_PRINTF(fmt_idx, args_idx)
#define SR_MUST_CHECK
#ifndef SR_API
#define SR_API
#endif
#endif

/* "strongroom 0.1.0" (libstrongroom.so only). */
SR_API const char *sr_version(void);

/* ------------------------------------------------------------------------
 * Errors
 *
 * One table, grouped by module. To add a code, add one line in your
 * module's group; the enum value and sr_strerror() text come from it.
 * Codes are stable once released: append, never renumber.
 * ---------------------------------------------------------------------- */
#define SR_ERROR_TABLE(X)                                                          \
    X(SR_OK, 0, "success")                                                         \
    /* general */                                                                  \
    X(SR_ERR_NOMEM, 1, "out of memory")                                            \
    X(SR_ERR_INVALID_ARG, 2, "invalid argument")                                   \
    X(SR_ERR_IO, 3, "input/output error")                                          \
    X(SR_ERR_NOT_FOUND, 4, "not found")                                            \
    X(SR_ERR_EXISTS, 5, "already exists")                                          \
    X(SR_ERR_PERMISSION, 6, "permission denied")                                   \
    X(SR_ERR_TIMEOUT, 7, "timed out")                                              \
    X(SR_ERR_BUFFER_TOO_SMALL, 8, "buffer too small")                              \
    X(SR_ERR_UNSUPPORTED, 9, "not supported")                                      \
    X(SR_ERR_INTERNAL, 10, "internal error")                                       \
    X(SR_ERR_CRYPTO, 11, "cryptographic library failure")                          \
    X(SR_ERR_RANDOM, 12, "random number generator failure")                        \
    X(SR_ERR_CONFIG, 13, "invalid configuration")                                  \
    X(SR_ERR_PARSE, 14, "malformed input")                                         \
    X(SR_ERR_AUTH, 15, "authentication failed")                                    \
    X(SR_ERR_CORRUPT, 16, "data is corrupt")                                       \
    X(SR_ERR_VERSION, 17, "unsupported format version")                            \
    X(SR_ERR_STATE, 18, "operation not allowed in the current state")              \
    X(SR_ERR_LIMIT, 19, "limit reached")                                           \
    X(SR_ERR_CLOSED, 20, "connection or object closed")                            \
    X(SR_ERR_NETWORK, 21, "network error")                                         \
    X(SR_ERR_TLS, 22, "TLS error")                                                 \
    X(SR_ERR_PROTOCOL, 23, "protocol violation by peer")                           \
    X(SR_ERR_DISK_FULL, 24, "no space left on device")                             \
    X(SR_ERR_TRUNCATED, 25, "input is truncated")                                  \
    /* keys and tablespaces (SR_ERR_WRONG_KEY: a data key wrapped by another     \
     * master key, whoever notices: keymgr or tde; it was SR_ERR_TDE_WRONG_KEY) */ \
    X(SR_ERR_WRONG_KEY, 100, "wrong master key for this data key")                 \
    X(SR_ERR_TDE_NO_HEADER, 101, "no tablespace key header")                       \
    X(SR_ERR_TDE_PAGE_AUTH, 102, "page failed authentication")                     \
    X(SR_ERR_TDE_NONCE_LIMIT, 103, "encryption limit for this key version reached") \
    X(SR_ERR_TDE_KEY_VERSION, 104, "unknown key version")                          \
    /* keymgr / kmip */                                                            \
    X(SR_ERR_KMIP_DECODE, 200, "malformed KMIP message")                           \
    X(SR_ERR_KMIP_DEPTH, 201, "KMIP nesting too deep")                             \
    X(SR_ERR_KMIP_RESULT, 202, "KMIP operation failed on the server")              \
    X(SR_ERR_KMIP_UNEXPECTED, 203, "unexpected KMIP item")                         \
    X(SR_ERR_WRAP_INTEGRITY, 204, "wrapped key failed its integrity check")        \
    X(SR_ERR_KEY_EXPIRED, 205, "cached key expired")                               \
    /* audit */                                                                    \
    X(SR_ERR_AUDIT_CHAIN, 300, "audit hash chain broken")                          \
    X(SR_ERR_AUDIT_SIGNATURE, 301, "audit checkpoint signature invalid")           \
    X(SR_ERR_AUDIT_SEQUENCE, 302, "audit sequence out of order")                   \
    X(SR_ERR_AUDIT_UNSEALED, 303, "audit records after the last checkpoint")       \
    /* access control */                                                           \
    X(SR_ERR_ACCESS_DENIED, 400, "access denied by policy")

typedef enum sr_err {
#define SR_ERR_ENUM_(name, value, text) name = value,
    SR_ERROR_TABLE(SR_ERR_ENUM_)
#undef SR_ERR_ENUM_
} sr_err_t;
#define SR_ERR_TDE_WRONG_KEY SR_ERR_WRONG_KEY /* its name before 0.2, for code written against it */

/* Short fixed text for a code ("page failed authentication"). Never NULL. */
SR_API const char *sr_strerror(sr_err_t err);
/* The symbolic name of a code ("SR_ERR_TDE_PAGE_AUTH"). Never NULL. */
SR_API const char *sr_err_name(sr_err_t err);

/* Records a detail message for the calling thread and returns `err`, so a
 * failure path reads: return sr_err_set(SR_ERR_PARSE, "%s:%d: ...", f, l); */
SR_API sr_err_t sr_err_set(sr_err_t err, const char *fmt, ...) SR_PRINTF(2, 3);
/* Like sr_err_set, appending ": <strerror(errno_value)>". */
SR_API sr_err_t sr_err_set_errno(sr_err_t err, int errno_value, const char *fmt, ...) SR_PRINTF(3, 4);
/* Like sr_err_set, appending the newest OpenSSL error (and clearing its queue). */
SR_API sr_err_t sr_err_set_openssl(sr_err_t err, const char *fmt, ...) SR_PRINTF(2, 3);
/* The calling thread's last detail message, or sr_strerror() of the last code
 * if none was recorded. Valid until the thread's next sr_err_set*. */
SR_API const char *sr_err_detail(void);
/* The code recorded with the last detail message on this thread. */
SR_API sr_err_t sr_err_last(void);
SR_API void sr_err_clear(void);
/* Exit statuses, the same in every strongroom tool: 0 ok, 1 a check failed
 * (tampering, verification, a refusal), 2 usage, 3 and above could not do or
 * check it: 3 in general (a missing file, I/O), refined where a tool can
 * tell: 4 wrong or missing key, 5 the database is busy, 6 disk full. */
enum {
    SR_EXIT_OK = 0,
    SR_EXIT_FAILED = 1,
    SR_EXIT_USAGE = 2,
    SR_EXIT_CANNOT = 3,
    SR_EXIT_KEY = 4,
    SR_EXIT_BUSY = 5,
    SR_EXIT_DISK_FULL = 6,
};
/* The exit status for a failure with this code. */
SR_API int sr_exit_status(sr_err_t err);

/* Maps an errno value to the closest code (ENOSPC -> SR_ERR_DISK_FULL, ...). */
SR_API sr_err_t sr_err_from_errno(int errno_value);

/* ------------------------------------------------------------------------
 * Logging
 *
 * Lines look like "2026-11-23T03:20:21.123Z kmsd[1234] WARN message".
 * Every line is checked against the registered secrets before it is written:
 * a line that contains one (raw, hex or base64) has it replaced by
 * "[REDACTED]". Register each key as soon as it is in memory.
 * ---------------------------------------------------------------------- */
typedef enum sr_log_level {
    SR_LOG_DEBUG = 0,
    SR_LOG_INFO = 1,
    SR_LOG_NOTICE = 2,
    SR_LOG_WARN = 3,
    SR_LOG_ERROR = 4,
} sr_log_level_t;

/* `path` NULL or "-" means stderr. `ident` names the component. */
SR_API sr_err_t sr_log_open(const char *ident, const char *path, sr_log_level_t min_level);
SR_API void sr_log_close(void);
SR_API void sr_log_set_level(sr_log_level_t min_level);
/* Parses "debug", "info", "notice", "warn", "error". */
SR_API sr_err_t sr_log_level_parse(const char *text, sr_log_level_t *out);
SR_API void sr_log(sr_log_level_t level, const char *fmt, ...) SR_PRINTF(2, 3);
SR_API void sr_log_v(sr_log_level_t level, const char *fmt, va_list ap) SR_PRINTF(2, 0);
/* The secret is referenced, not copied: keep it alive (and registered) for as
 * long as it lives, and unregister before wiping it. */
SR_API sr_err_t sr_log_secret_register(const void *secret, size_t len);
SR_API void sr_log_secret_unregister(const void *secret);

#define sr_log_debug(...) sr_log(SR_LOG_DEBUG, __VA_ARGS__)
#define sr_log_info(...) sr_log(SR_LOG_INFO, __VA_ARGS__)
#define sr_log_notice(...) sr_log(SR_LOG_NOTICE, __VA_ARGS__)
#define sr_log_warn(...) sr_log(SR_LOG_WARN, __VA_ARGS__)
#define sr_log_error(...) sr_log(SR_LOG_ERROR, __VA_ARGS__)

/* ------------------------------------------------------------------------
 * Configuration: one INI-like format for every daemon and CLI.
 *
 *   # comment            ; comment
 *   [section]
 *   key = value          values may be "double quoted" (\" and \\ escapes)
 *
 * The caller passes a schema; a key or section it does not list, a
 * duplicate key, or a value of the wrong type is an SR_ERR_CONFIG whose
 * detail starts with "file:line: ". Keys before any [section] belong to
 * section "". Missing keys take the schema default.
 * ---------------------------------------------------------------------- */
typedef enum sr_config_type {
    SR_CONFIG_STRING,
    SR_CONFIG_INT,      /* signed 64-bit decimal */
    SR_CONFIG_BOOL,     /* true/false/yes/no/on/off/1/0 */
    SR_CONFIG_DURATION, /* 500ms, 30s, 5m, 2h, 7d; a bare number is seconds */
    SR_CONFIG_SIZE,     /* 4096, 64k, 10M, 2G (powers of 1024) */
    SR_CONFIG_PATH,     /* a string; relative paths resolve against the file's directory */
} sr_config_type_t;

typedef struct sr_config_key {
    const char *section; /* "" for the top level */
    const char *key;
    sr_config_type_t type;
    const char *default_value; /* NULL: no default */
    int required;              /* nonzero: must appear in the file */
} sr_config_key_t;

typedef struct sr_config sr_config_t;

SR_API sr_err_t sr_config_load(const char *path, const sr_config_key_t *schema, size_t schema_len,
                        sr_config_t **out) SR_MUST_CHECK;
/* Parses text already in memory; `name` stands for the file in messages and
 * relative paths resolve against the current directory. */
SR_API sr_err_t sr_config_parse(const char *name, const char *text, size_t text_len,
                         const sr_config_key_t *schema, size_t schema_len,
                         sr_config_t **out) SR_MUST_CHECK;
SR_API void sr_config_free(sr_config_t *cfg);
/* NULL when the key is absent and has no default. */
SR_API const char *sr_config_get(const sr_config_t *cfg, const char *section, const char *key);
SR_API sr_err_t sr_config_get_int(const sr_config_t *cfg, const char *section, const char *key, int64_t *out);
SR_API sr_err_t sr_config_get_bool(const sr_config_t *cfg, const char *section, const char *key, int *out);
SR_API sr_err_t sr_config_get_duration_ms(const sr_config_t *cfg, const char *section, const char *key,
                                   uint64_t *out);
SR_API sr_err_t sr_config_get_size(const sr_config_t *cfg, const char *section, const char *key, uint64_t *out);
/* The file:line where the key was set, or "<default>". */
SR_API const char *sr_config_where(const sr_config_t *cfg, const char *section, const char *key);

/* Value parsers the config uses, exported for CLIs and URI parameters. */
SR_API sr_err_t sr_parse_bool(const char *text, int *out);
SR_API sr_err_t sr_parse_int64(const char *text, int64_t *out);
SR_API sr_err_t sr_parse_duration_ms(const char *text, uint64_t *out);
SR_API sr_err_t sr_parse_size(const char *text, uint64_t *out);

/* ------------------------------------------------------------------------
 * Secure memory and process hardening (libsodium)
 * ---------------------------------------------------------------------- */
/* Initialises libsodium; safe to call many times and from many threads. */
SR_API sr_err_t sr_secure_init(void);
/* Guard-paged, mlock'd memory (sodium_malloc). NULL on failure, with detail set. */
SR_API void *sr_secure_alloc(size_t len);
/* Wipes and frees (sodium_free). NULL is allowed. */
SR_API void sr_secure_free(void *ptr);
/* Zeroes memory in a way the compiler cannot remove (sodium_memzero). */
SR_API void sr_secure_wipe(void *ptr, size_t len);
/* Constant-time equality: 1 if equal, 0 otherwise. */
SR_API int sr_secure_equal(const void *a, const void *b, size_t len);
/* Page protection of an sr_secure_alloc() region (sodium_mprotect_*). */
SR_API sr_err_t sr_secure_protect_readonly(void *ptr);
SR_API sr_err_t sr_secure_protect_readwrite(void *ptr);
SR_API sr_err_t sr_secure_protect_noaccess(void *ptr);
/* Cryptographically secure random bytes (OpenSSL's DRBG). */
SR_API sr_err_t sr_random_bytes(void *buf, size_t len) SR_MUST_CHECK;
/* For daemons: no core dumps, not ptrace-attachable by other users
 * (prctl(PR_SET_DUMPABLE, 0), RLIMIT_CORE = 0). */
SR_API sr_err_t sr_process_harden(void);

/* Writes s as a JSON string (quotes, \" \\ and \u00XX escapes); NULL is "". */
#include <stdio.h>
SR_API void sr_json_string(FILE *f, const char *s);

/* Lower-case hex; `out` holds 2*len+1 bytes. */
SR_API void sr_hex_encode(const void *data, size_t len, char *out);
/* Exactly `len` bytes from 2*len hex digits (either case). */
SR_API sr_err_t sr_hex_decode(const char *hex, void *out, size_t len);

/* ------------------------------------------------------------------------
 * UUIDs (libuuid), RFC 4122, "0e5d7b32-....-...." lower case.
 * ---------------------------------------------------------------------- */
#define SR_UUID_BYTES 16
#define SR_UUID_STR_LEN 36 /* without the terminating NUL */

typedef struct sr_uuid {
    uint8_t bytes[SR_UUID_BYTES];
} sr_uuid_t;

SR_API void sr_uuid_generate(sr_uuid_t *out); /* random (version 4) */
SR_API void sr_uuid_format(const sr_uuid_t *uuid, char out[SR_UUID_STR_LEN + 1]);
SR_API sr_err_t sr_uuid_parse(const char *text, sr_uuid_t *out);
SR_API int sr_uuid_equal(const sr_uuid_t *a, const sr_uuid_t *b);
SR_API int sr_uuid_is_nil(const sr_uuid_t *uuid);

/* ------------------------------------------------------------------------
 * Time
 * ---------------------------------------------------------------------- */
/* Monotonic clock, for timeouts and durations. */
SR_API uint64_t sr_time_mono_ns(void);
SR_API uint64_t sr_time_mono_ms(void);
/* Wall clock, microseconds since the Unix epoch (UTC). */
SR_API int64_t sr_time_now_us(void);
/* "2026-11-23T03:20:21.123456Z" (digits: 0 = seconds, 3 = ms, 6 = us).
 * `out` holds at least SR_TIME_RFC3339_MAX bytes. */
#define SR_TIME_RFC3339_MAX 32
SR_API sr_err_t sr_time_format_rfc3339(int64_t unix_us, int digits, char *out, size_t out_len);
/* Accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)" and "YYYY-MM-DD". */
SR_API sr_err_t sr_time_parse_rfc3339(const char *text, int64_t *unix_us);

/* ------------------------------------------------------------------------
 * Security events
 *
 * Components report what a reviewer must see (a key unwrapped, a page that
 * failed authentication, a login refused) through sr_event_emit(). The audit
 * writer installs itself as the sink (audit/audit.h); until one is installed,
 * events go to the log at NOTICE. Fields are short ASCII, never secrets.
 * ---------------------------------------------------------------------- */
typedef struct sr_event {
    const char *component; /* "tde", "keymgr", "kmsd", "agent", "pam", ... */
    const char *event;     /* dotted name: "page.auth_failed", "key.unwrap" */
    const char *subject;   /* who: user, node UUID, uid/pid; NULL if none */
    const char *object;    /* what: key or tablespace UUID, "file:page"; NULL if none */
    const char *outcome;   /* "success", "failure" or "denied" */
    const char *detail;    /* one line of free text; NULL if none */
    const char *source;    /* where from: IP address, "local"; NULL if none */
} sr_event_t;

typedef sr_err_t (*sr_event_sink_fn)(void *sink_ctx, const sr_event_t *event);

/* Installs the process-wide sink (NULL restores the log fallback). */
SR_API void sr_event_set_sink(sr_event_sink_fn sink, void *sink_ctx);
/* Delivers an event to the sink. A sink failure is returned: callers that
 * must fail closed (the architecture says which) act on it. An event that
 * is not in the vocabulary below is refused (SR_ERR_INVALID_ARG): a name
 * made up in one place cannot be searched for by anyone. */
SR_API sr_err_t sr_event_emit(const sr_event_t *event);

/* The vocabulary: every event strongroom's components emit, with what its
 * fields hold. An event name ending in ".*" stands for a family (kms
 * "kmip.*": one per KMIP operation). docs/audit.md lists the same table
 * (tde-audit events prints it; a test compares the two). */
typedef struct sr_event_spec {
    const char *component, *event;
    const char *subject, *object, *when; /* what the fields hold; when it is emitted */
} sr_event_spec_t;
SR_API const sr_event_spec_t *sr_event_vocabulary(size_t *count);
SR_API const sr_event_spec_t *sr_event_lookup(const char *component, const char *event);

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

SR_API sr_err_t sr_tls_write_all(sr_tls_conn_t *conn, const void *buf, size_t len) SR_MUST_CHECK;
/* Reads exactly `len` bytes; SR_ERR_CLOSED if the peer closed cleanly before
 * the first byte, SR_ERR_TRUNCATED if it closed part-way. */
SR_API sr_err_t sr_tls_read_exact(sr_tls_conn_t *conn, void *buf, size_t len) SR_MUST_CHECK;
/* The same with an overall deadline (sr_time_mono_ms() scale; 0: none): a peer
 * that sends slowly is cut off at the deadline, not per read. */
SR_API sr_err_t sr_tls_read_exact_by(sr_tls_conn_t *conn, void *buf, size_t len, uint64_t deadline_ms) SR_MUST_CHECK;
/* The same on a plain descriptor (common/fdio.c), through EINTR and short
 * transfers; a receive timeout is SR_ERR_TIMEOUT. */
SR_API sr_err_t sr_fd_write_all(int fd, const void *buf, size_t len) SR_MUST_CHECK;
SR_API sr_err_t sr_fd_read_exact(int fd, void *buf, size_t len) SR_MUST_CHECK;
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

/* ------------------------------------------------------------------------
 * Big-endian integers: every on-disk and on-wire format here (key header,
 * page trailer, wrapped key, KMIP TTLV, sealer frames) is network order.
 * ------------------------------------------------------------------------ */
static inline void sr_put_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }
static inline void sr_put_be32(uint8_t *p, uint32_t v) { sr_put_be16(p, (uint16_t)(v >> 16)), sr_put_be16(p + 2, (uint16_t)v); }
static inline void sr_put_be64(uint8_t *p, uint64_t v) { sr_put_be32(p, (uint32_t)(v >> 32)), sr_put_be32(p + 4, (uint32_t)v); }
static inline uint16_t sr_get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t sr_get_be32(const uint8_t *p) { return (uint32_t)sr_get_be16(p) << 16 | sr_get_be16(p + 2); }
static inline uint64_t sr_get_be64(const uint8_t *p) { return (uint64_t)sr_get_be32(p) << 32 | sr_get_be32(p + 4); }

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_COMMON_H */
