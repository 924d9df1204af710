/*
 * audit_internal.h — shared by the writer, the verifier and tde-audit.
 */
#ifndef STRONGROOM_AUDIT_INTERNAL_H
#define STRONGROOM_AUDIT_INTERNAL_H

#include "audit.h"

#define AUDIT_HASH_FIELD ",\"hash\":\""
#define AUDIT_CHECKPOINT_EVENT "audit.checkpoint"
#define AUDIT_SIG_CONTEXT "SRAUDIT1"

/* Formats one record line with its newline into buf; computes its hash.
 * Returns the length, or 0 if it does not fit (cap >= SR_AUDIT_LINE_MAX + 1 always fits). */
size_t audit_format(char *buf, size_t cap, uint64_t seq, int64_t ts_us, const char *host, const sr_event_t *e,
                    const uint8_t prev[SR_AUDIT_HASH_BYTES], const uint8_t *tag_key,
                    uint8_t hash_out[SR_AUDIT_HASH_BYTES]);

/* Record tags: a keyed BLAKE2b over the record's hash, under a key derived
 * from the signing key, so the writer can tell its own records (and those of
 * another process holding the key) from lines appended by anyone else. The
 * hash stays public (verify needs only the verify key); the tag is not. */
#define AUDIT_TAG_KEY_BYTES 32
#define AUDIT_TAMPER_EVENT "audit.tamper_suspected"
void audit_tag_key(const uint8_t *signing_sk, uint8_t key[AUDIT_TAG_KEY_BYTES]);
void audit_tag(const uint8_t key[AUDIT_TAG_KEY_BYTES], const uint8_t hash[SR_AUDIT_HASH_BYTES], uint8_t tag[16]);
int audit_tag_ok(const uint8_t key[AUDIT_TAG_KEY_BYTES], const sr_audit_record_t *r);

/* The message a checkpoint signs: context | sealed seq (u64 BE) | chain head. */
void audit_sig_message(uint64_t sealed_seq, const uint8_t head[SR_AUDIT_HASH_BYTES], uint8_t msg[8 + 8 + 32]);

/* A checkpoint's detail: "key=<16 hex> sealed=<seq> sig=<128 hex>". */
sr_err_t audit_checkpoint_parse(const char *detail, char key_id[17], uint64_t *sealed, uint8_t sig[64]);

/* Cuts a torn last line (no newline: a crash mid-write) off the file at fd;
 * *size is updated, *cut says how many bytes went. */
#include <sys/types.h>
sr_err_t audit_cut_torn_tail(int fd, const char *path, off_t *size, off_t *cut);

/* Appends the n events in order, durable together (one group commit, one
 * fdatasync): SR_OK once all are, or the reason none is. The sealer uses it
 * for everything its clients sent in one round. */
sr_err_t audit_append_many(sr_audit_writer_t *w, const sr_event_t *events, size_t n);

/* A sealer frame's payload (len bytes, then a NUL): component, event,
 * subject, object, outcome, source, detail, NUL-separated, into f. NULL, or
 * why the frame is malformed. */
#define AUDIT_FRAME_FIELDS 7
const char *audit_frame_fields(const char *payload, size_t len, const char *f[AUDIT_FRAME_FIELDS]);

/* RFC 5424 copies of records (syslog.c). */
typedef struct sr_audit_syslog sr_audit_syslog_t;
sr_err_t sr_audit_syslog_open(const char *target, sr_audit_syslog_t **out);
void sr_audit_syslog_send(sr_audit_syslog_t *s, const char *line, size_t len);
void sr_audit_syslog_close(sr_audit_syslog_t *s);
#endif
