/*
 * verify.c — checking a log (one or more files, in order) as one chain.
 *
 * Per record: it parses in canonical form, its hash matches its content, its
 * seq is the previous seq + 1 and its prev is the previous record's hash; the
 * first record is seq 1 with a zero prev. Per checkpoint (with a verify key):
 * it names this key and its Ed25519 signature over (sealed seq, chain head)
 * holds. So an altered record breaks its own hash; a deleted, inserted or
 * reordered one breaks seq and prev; a rewritten chain (every hash
 * recomputed) breaks the next checkpoint's signature, which only the holder
 * of the signing key can make. Records after the last checkpoint are reported
 * as unsealed: cutting them from the tail leaves no trace in the file.
 */
#include "audit_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sr_err_t fail(sr_audit_verify_result_t *r, sr_err_t err, const char *file, size_t line, uint64_t seq,
                     const char *reason)
{
    r->error = err;
    if (seq) snprintf(r->where, sizeof r->where, "%s:%zu (seq %llu)", file, line, (unsigned long long)seq);
    else snprintf(r->where, sizeof r->where, "%s:%zu", file, line);
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    return sr_err_set(err, "%s: %s", r->where, reason);
}

void sr_audit_chain_init(sr_audit_chain_t *c, const uint8_t *verify_key)
{
    memset(c, 0, sizeof *c);
    if (verify_key) {
        memcpy(c->key, verify_key, SR_AUDIT_SIGN_PUBLIC_BYTES);
        sr_audit_key_id(verify_key, c->key_id);
        c->has_key = 1;
    }
}

static sr_err_t check_checkpoint(const sr_audit_chain_t *c, const sr_audit_record_t *rec)
{
    char key_id[17];
    uint64_t sealed = 0;
    uint8_t sig[64], msg[48];
    if (audit_checkpoint_parse(rec->detail, key_id, &sealed, sig) != SR_OK)
        return sr_err_set(SR_ERR_AUDIT_SIGNATURE, "malformed checkpoint");
    if (sealed + 1 != rec->seq)
        return sr_err_set(SR_ERR_AUDIT_SIGNATURE, "checkpoint seals seq %llu but sits at seq %llu",
                          (unsigned long long)sealed, (unsigned long long)rec->seq);
    if (!c->has_key) return SR_OK;
    if (strcmp(key_id, c->key_id) != 0)
        return sr_err_set(SR_ERR_AUDIT_SIGNATURE, "checkpoint signed by key %s, not by the verify key %s (re-signed "
                          "forgery?)", key_id, c->key_id);
    audit_sig_message(sealed, rec->prev, msg);
    if (crypto_sign_verify_detached(sig, msg, sizeof msg, c->key) != 0)
        return sr_err_set(SR_ERR_AUDIT_SIGNATURE, "checkpoint signature does not verify: records before it were "
                          "altered and the chain recomputed");
    return SR_OK;
}

sr_err_t sr_audit_chain_feed(sr_audit_chain_t *c, char *line, size_t len, sr_audit_record_t *out)
{
    sr_audit_record_t rec;
    sr_err_t rc = sr_audit_record_parse(line, len, &rec);
    if (rc != SR_OK) return rc;
    if (!c->any) {
        static const uint8_t zero[SR_AUDIT_HASH_BYTES];
        if (rec.seq != 1 || memcmp(rec.prev, zero, sizeof zero) != 0)
            return sr_err_set(SR_ERR_AUDIT_SEQUENCE, "the log does not start at seq 1: earlier records or files are "
                              "missing (pass every rotated file, oldest first)");
    } else if (rec.seq != c->last_seq + 1) {
        return sr_err_set(SR_ERR_AUDIT_SEQUENCE, "seq %llu follows seq %llu: records were %s",
                          (unsigned long long)rec.seq, (unsigned long long)c->last_seq,
                          rec.seq > c->last_seq + 1 ? "deleted" : "inserted or reordered");
    } else if (memcmp(rec.prev, c->last_hash, SR_AUDIT_HASH_BYTES) != 0) {
        return sr_err_set(SR_ERR_AUDIT_CHAIN,
                          "prev does not match the record before it: a record was replaced, inserted or deleted");
    }
    int checkpoint = strcmp(rec.event, AUDIT_CHECKPOINT_EVENT) == 0 && strcmp(rec.component, "audit") == 0;
    if (!strcmp(rec.event, AUDIT_TAMPER_EVENT) && !strcmp(rec.component, "audit") && !c->tampers++)
        c->tamper_seq = rec.seq;
    if (checkpoint && (rc = check_checkpoint(c, &rec)) != SR_OK) return rc;
    if (checkpoint) c->checkpoints++, c->sealed_seq = rec.seq, c->sealed_ts_us = rec.ts_us;
    c->last_ts_us = rec.ts_us;
    if (!c->any) c->first_seq = rec.seq;
    c->any = 1;
    c->last_is_checkpoint = checkpoint;
    c->last_seq = rec.seq;
    memcpy(c->last_hash, rec.hash, SR_AUDIT_HASH_BYTES);
    c->records++;
    if (out) *out = rec;
    return SR_OK;
}

static sr_err_t check_record(sr_audit_chain_t *c, sr_audit_verify_result_t *r, const char *file, size_t lineno,
                             char *line, size_t len)
{
    uint64_t next = c->last_seq + 1;
    sr_err_t rc = sr_audit_chain_feed(c, line, len, NULL);
    if (rc == SR_OK) return SR_OK;
    char reason[512];
    snprintf(reason, sizeof reason, "%s", sr_err_detail());
    int parse_error = rc == SR_ERR_PARSE || (rc == SR_ERR_AUDIT_CHAIN && strstr(reason, "record altered"));
    /* where: the seq the line claims if it could be read, else the line alone */
    uint64_t seq = 0;
    if (!parse_error && sscanf(line, "{\"seq\":%llu", (unsigned long long *)&seq) != 1) seq = next;
    return fail(r, rc, file, lineno, seq, reason);
}

static sr_err_t verify_file(sr_audit_chain_t *c, sr_audit_verify_result_t *r, const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) return fail(r, sr_err_from_errno(errno), file, 0, 0, strerror(errno));
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    sr_err_t rc = SR_OK;
    while (rc == SR_OK && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] != '\n') {
            rc = fail(r, SR_ERR_TRUNCATED, file, lineno, 0, "the last line is cut short (a torn write or truncation)");
            break;
        }
        rc = check_record(c, r, file, lineno, line, (size_t)n - 1);
    }
    free(line);
    fclose(f);
    return rc;
}

sr_err_t sr_audit_verify_files(const char *const *files, size_t n, const uint8_t *verify_key,
                               sr_audit_verify_result_t *r)
{
    memset(r, 0, sizeof *r);
    sr_audit_chain_t c;
    sr_audit_chain_init(&c, verify_key);
    r->signatures_checked = verify_key != NULL;
    sr_err_t rc = SR_OK;
    for (size_t i = 0; rc == SR_OK && i < n; i++) rc = verify_file(&c, r, files[i]);
    r->records = c.records, r->checkpoints = c.checkpoints, r->first_seq = c.first_seq;
    r->last_seq = c.last_seq, r->sealed_seq = c.sealed_seq;
    r->last_ts_us = c.last_ts_us, r->sealed_ts_us = c.sealed_ts_us;
    memcpy(r->last_hash, c.last_hash, SR_AUDIT_HASH_BYTES);
    if (rc != SR_OK) return rc;
    if (!c.any) return fail(r, SR_ERR_AUDIT_SEQUENCE, n ? files[0] : "(no files)", 0, 0, "the log holds no records");
    r->unsealed = r->last_seq - r->sealed_seq;
    r->ends_sealed = c.last_is_checkpoint;
    if (c.tampers)
        return fail(r, SR_ERR_AUDIT_CHAIN, files[n - 1], 0, c.tamper_seq,
                    "the writer found lines in the log that no holder of the signing key wrote (audit.tamper_suspected): "
                    "they were taken out of the chain, never sealed, and kept aside (the record's detail says where)");
    if (verify_key && r->checkpoints == 0 && r->records > 1)
        return fail(r, SR_ERR_AUDIT_UNSEALED, files[n - 1], 0, 0,
                    "no signed checkpoint: nothing proves the holder of the signing key wrote this log");
    return SR_OK;
}
