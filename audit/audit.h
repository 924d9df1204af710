/*
 * audit.h — the tamper-evident audit log: records, the writer every component
 * uses, and the chain verifier behind `tde-audit`.
 *
 * A log is a sequence of JSON lines in one canonical form (docs/audit.md):
 *   {"seq":N,"ts":"...Z","host":..,"component":..,"event":..,"subject":..,
 *    "object":..,"outcome":..,"source":..,"detail":..,"prev":"<hex>","hash":"<hex>"}
 * hash = SHA-256 of the line up to (not including) `,"hash":`; prev = the hash
 * of the record before (64 zeros before the first). Every N records or T
 * seconds, at rotation and at close, the writer appends an `audit.checkpoint`
 * record whose detail carries an Ed25519 signature over the chain head; the
 * signing key stays with the writer, the verify key goes to reviewers.
 */
#ifndef STRONGROOM_AUDIT_H
#define STRONGROOM_AUDIT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== records ==== */

#define SR_AUDIT_HASH_BYTES 32
#define SR_AUDIT_LINE_MAX 8192 /* a longer detail is cut (and says so) */

typedef struct sr_audit_record {
    uint64_t seq;
    int64_t ts_us;
    /* NUL-terminated; "" for an absent field. Point into the parse buffer. */
    const char *host, *component, *event, *subject, *object, *outcome, *source, *detail;
    uint8_t prev[SR_AUDIT_HASH_BYTES];
    uint8_t hash[SR_AUDIT_HASH_BYTES];
    size_t hashed_len; /* bytes of the line covered by hash */
    int has_tag;       /* the writer's keyed tag over hash (only a holder of the signing key can make it) */
    uint8_t tag[16];
} sr_audit_record_t;

/* Parses one canonical line (without its newline) in place: `line` is
 * modified (strings unescaped into it). SR_ERR_PARSE with the reason. */
SR_API sr_err_t sr_audit_record_parse(char *line, size_t len, sr_audit_record_t *out) SR_MUST_CHECK;

/* ==== keys ==== */

#define SR_AUDIT_SIGN_SECRET_BYTES 64
#define SR_AUDIT_SIGN_PUBLIC_BYTES 32
/* PREFIX.sign (0600, hex secret key) and PREFIX.pub (hex verify key). */
SR_API sr_err_t sr_audit_keygen(const char *prefix) SR_MUST_CHECK;
SR_API sr_err_t sr_audit_verify_key_load(const char *path, uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES]) SR_MUST_CHECK;
/* 16 hex digits naming a verify key (SHA-256 prefix), written in checkpoints. */
SR_API void sr_audit_key_id(const uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES], char out[17]);

/* ==== writer ==== */

typedef struct sr_audit_options {
    const char *path;          /* the live log file; rotated files get ".<last seq>" */
    const char *signing_key;   /* PREFIX.sign from sr_audit_keygen */
    const char *host;          /* NULL: gethostname() */
    uint64_t checkpoint_every; /* records between checkpoints; 0: 1000 */
    uint64_t checkpoint_ms;    /* or this long since the last one; 0: 10 s */
    uint64_t rotate_bytes;     /* 0: 64 MiB */
    uint64_t commit_delay_us;  /* group commit: how long a batch may wait; 0: none */
    const char *syslog;        /* also copy each record, once durable, to syslog (RFC 5424):
                                  "udp:HOST:PORT" or "unix:/dev/log"; NULL: no copy */
} sr_audit_options_t;

typedef struct sr_audit_writer sr_audit_writer_t;

/* Opens (creating) the log. A torn last line left by a crash is cut off and
 * an `audit.truncated` record says how many bytes. Several processes may
 * append to one file: each batch is written under an exclusive lock. */
SR_API sr_err_t sr_audit_open(const sr_audit_options_t *opts, sr_audit_writer_t **out) SR_MUST_CHECK;
/* Returns once the record is durable (fsync'd with its batch); thread-safe.
 * SR_ERR_DISK_FULL / SR_ERR_IO when it cannot be: never a silent drop. */
SR_API sr_err_t sr_audit_append(sr_audit_writer_t *w, const sr_event_t *event) SR_MUST_CHECK;
SR_API sr_err_t sr_audit_checkpoint(sr_audit_writer_t *w) SR_MUST_CHECK;
/* Seals the log with a final checkpoint, then frees. */
SR_API sr_err_t sr_audit_close(sr_audit_writer_t *w);
/* Routes every sr_event_emit() of the process to this writer. */
SR_API void sr_audit_install_as_event_sink(sr_audit_writer_t *w);
/* If $STRONGROOM_AUDIT_SOCKET is set: this process sends its events to the
 * host's sealer there (no key, no log of its own; *out stays NULL). Else if
 * $STRONGROOM_AUDIT_LOG (and $STRONGROOM_AUDIT_KEY, the .sign file) are set:
 * opens that log and installs it as the event sink (closed at exit) — the
 * weaker mode, for single-process tools and tests, since the process holds
 * the signing key; $STRONGROOM_AUDIT_SYSLOG adds the syslog copy.
 * Returns SR_OK with *out NULL when none is set. */
SR_API sr_err_t sr_audit_open_from_env(sr_audit_writer_t **out) SR_MUST_CHECK;

/* ==== verify ==== */

typedef struct sr_audit_verify_result {
    uint64_t records, checkpoints;
    uint64_t first_seq, last_seq;
    uint64_t sealed_seq;        /* highest seq covered by a verified checkpoint */
    uint64_t unsealed;          /* records after it */
    int64_t last_ts_us, sealed_ts_us; /* times of the last record and of that checkpoint */
    uint8_t last_hash[SR_AUDIT_HASH_BYTES];
    int signatures_checked;     /* a verify key was given */
    int ends_sealed;            /* the last record is a checkpoint */
    /* the first problem: */
    sr_err_t error;
    char where[512];            /* "file:line (seq N)" */
    char reason[512];
} sr_audit_verify_result_t;

/* Verifies the files in order as one chain. verify_key may be NULL (chain
 * only). Returns SR_OK when the chain (and signatures) hold; the result says
 * where and why otherwise. */
SR_API sr_err_t sr_audit_verify_files(const char *const *files, size_t n, const uint8_t *verify_key,
                               sr_audit_verify_result_t *result);

/* Incremental verification, one record at a time (the verifier and the
 * collector): the chain's state can be saved (last seq and hash) and resumed. */
typedef struct sr_audit_chain {
    uint64_t first_seq, last_seq, records, checkpoints, sealed_seq;
    int64_t last_ts_us, sealed_ts_us; /* times of the last record and of the last checkpoint */
    uint8_t last_hash[SR_AUDIT_HASH_BYTES];
    int any, last_is_checkpoint, has_key;
    uint8_t key[SR_AUDIT_SIGN_PUBLIC_BYTES];
    char key_id[17];
    uint64_t tampers, tamper_seq; /* audit.tamper_suspected records: how many, the first one's seq */
} sr_audit_chain_t;
SR_API void sr_audit_chain_init(sr_audit_chain_t *c, const uint8_t *verify_key /* NULL: chain only */);
/* Checks one record line (no newline; unescaped in place) against the chain
 * and advances it: SR_ERR_PARSE, SR_ERR_AUDIT_CHAIN, SR_ERR_AUDIT_SEQUENCE or
 * SR_ERR_AUDIT_SIGNATURE with the reason in the error detail. */
SR_API sr_err_t sr_audit_chain_feed(sr_audit_chain_t *c, char *line, size_t len, sr_audit_record_t *out) SR_MUST_CHECK;

/* ==== collection: forwarder and collector (audit/collect.c) ====
 *
 * The local log is the spool: a forwarder sends its records, as written, to
 * a collector over mutual TLS and the collector stores each source's records
 * verbatim in DIR/<certificate SHA-256>.log (the source is the client
 * certificate, never a name it sends; DIR/sources.tsv maps fingerprints to
 * CNs), verifying the chain and the signatures on receipt. The collector acknowledges
 * only what it has fsync'd, and tells a connecting forwarder the last seq it
 * holds, so an outage or a restart on either side loses nothing and
 * duplicates nothing. */
typedef struct sr_audit_collector_options {
    const char *host;          /* listen address */
    uint16_t port;             /* 0: any (see sr_audit_collect_port) */
    const char *dir;           /* per-source files */
    sr_tls_options_t tls;      /* CA, certificate, key (the same struct as every TLS user) */
    const uint8_t *verify_key; /* checkpoints of sources without their own key (DIR/<fingerprint>.pub)
                                  must be signed by it (NULL: chain only) */
    int require_key;           /* refuse a source that has no key (neither its own nor verify_key) */
    int max_connections;       /* at once; 0: SR_AUDIT_COLLECT_MAX_CONNECTIONS */
} sr_audit_collector_options_t;
#define SR_AUDIT_COLLECT_MAX_CONNECTIONS 256

/* ==== the host's sealer (audit/sealer.c) ====
 * The only process that holds the signing key and writes the log; others send
 * it events over a Unix socket and the record's subject is the kernel's view
 * of the sender (SO_PEERCRED: uid, gid, pid, executable). */
typedef struct sr_audit_sealer_options {
    const char *socket_path;
    sr_audit_options_t log; /* the log it writes (path, signing key, checkpoints, ...) */
    int max_clients;        /* at once; 0: 1024 */
} sr_audit_sealer_options_t;
/* Serves until *stop becomes non-zero; seals the log at the end. */
SR_API sr_err_t sr_audit_serve(const sr_audit_sealer_options_t *o, volatile int *stop) SR_MUST_CHECK;

/* A process's connection to its host's sealer. send returns once the event
 * is durable in the log (SR_OK) or with why it is not: callers fail closed. */
typedef struct sr_audit_client sr_audit_client_t;
SR_API sr_err_t sr_audit_client_open(const char *socket_path, sr_audit_client_t **out) SR_MUST_CHECK;
SR_API sr_err_t sr_audit_client_send(sr_audit_client_t *c, const sr_event_t *event) SR_MUST_CHECK;
SR_API void sr_audit_client_install_as_event_sink(sr_audit_client_t *c); /* NULL: none */
SR_API void sr_audit_client_close(sr_audit_client_t *c);

/* Serves until *stop becomes non-zero (signal handlers set it). */
SR_API sr_err_t sr_audit_collect(const sr_audit_collector_options_t *o, volatile int *stop) SR_MUST_CHECK;

typedef struct sr_audit_forwarder_options {
    const char *log;           /* the live log file; rotated files PATH.<seq> are read too */
    const char *host;
    uint16_t port;
    const char *verify_name;   /* collector certificate name; NULL: host */
    sr_tls_options_t tls;      /* CA, certificate, key (the same struct as every TLS user) */
    int once;                  /* send what exists, wait for the ack, return */
    uint64_t poll_ms;          /* follow mode: how often to look for new records (0: 200) */
} sr_audit_forwarder_options_t;

/* Sends the log's records the collector lacks; in follow mode keeps going,
 * reconnecting after failures, until *stop. */
SR_API sr_err_t sr_audit_forward(const sr_audit_forwarder_options_t *o, volatile int *stop) SR_MUST_CHECK;

#ifdef __cplusplus
}
#endif
#endif
