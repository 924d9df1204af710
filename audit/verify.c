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

typedef struct chain {
    const uint8_t *key;
    char key_id[17];
    uint64_t last_seq;
    uint8_t last_hash[SR_AUDIT_HASH_BYTES];
    int any, last_is_checkpoint;
} chain_t;

static sr_err_t fail(sr_audit_verify_result_t *r, sr_err_t err, const char *file, size_t line, uint64_t seq,
                     const char *reason)
{
    r->error = err;
    if (seq) snprintf(r->where, sizeof r->where, "%s:%zu (seq %llu)", file, line, (unsigned long long)seq);
    else snprintf(r->where, sizeof r->where, "%s:%zu", file, line);
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    return sr_err_set(err, "%s: %s", r->where, reason);
}

static sr_err_t check_checkpoint(chain_t *c, const sr_audit_record_t *rec, char *why, size_t why_len)
{
    char key_id[17];
    uint64_t sealed = 0;
    uint8_t sig[64], msg[48];
    if (audit_checkpoint_parse(rec->detail, key_id, &sealed, sig) != SR_OK)
        return snprintf(why, why_len, "malformed checkpoint"), SR_ERR_AUDIT_SIGNATURE;
    if (sealed + 1 != rec->seq)
        return snprintf(why, why_len, "checkpoint seals seq %llu but sits at seq %llu", (unsigned long long)sealed,
                        (unsigned long long)rec->seq), SR_ERR_AUDIT_SIGNATURE;
    if (!c->key) return SR_OK;
    if (strcmp(key_id, c->key_id) != 0)
        return snprintf(why, why_len, "checkpoint signed by key %s, not by the verify key %s (re-signed forgery?)",
                        key_id, c->key_id), SR_ERR_AUDIT_SIGNATURE;
    audit_sig_message(sealed, rec->prev, msg);
    if (crypto_sign_verify_detached(sig, msg, sizeof msg, c->key) != 0)
        return snprintf(why, why_len, "checkpoint signature does not verify: records before it were altered and "
                        "the chain recomputed"), SR_ERR_AUDIT_SIGNATURE;
    return SR_OK;
}

static sr_err_t check_record(chain_t *c, sr_audit_verify_result_t *r, const char *file, size_t lineno, char *line,
                             size_t len)
{
    sr_audit_record_t rec;
    char why[512];
    sr_err_t rc = sr_audit_record_parse(line, len, &rec);
    if (rc != SR_OK) return fail(r, rc == SR_ERR_AUDIT_CHAIN ? rc : SR_ERR_PARSE, file, lineno, 0, sr_err_detail());
    if (!c->any) {
        static const uint8_t zero[SR_AUDIT_HASH_BYTES];
        if (rec.seq != 1 || memcmp(rec.prev, zero, sizeof zero) != 0)
            return fail(r, SR_ERR_AUDIT_SEQUENCE, file, lineno, rec.seq,
                        "the log does not start at seq 1: earlier records or files are missing (pass every rotated "
                        "file, oldest first)");
        r->first_seq = rec.seq;
    } else if (rec.seq != c->last_seq + 1) {
        snprintf(why, sizeof why, "seq %llu follows seq %llu: records were %s", (unsigned long long)rec.seq,
                 (unsigned long long)c->last_seq, rec.seq > c->last_seq + 1 ? "deleted" : "inserted or reordered");
        return fail(r, SR_ERR_AUDIT_SEQUENCE, file, lineno, rec.seq, why);
    } else if (memcmp(rec.prev, c->last_hash, SR_AUDIT_HASH_BYTES) != 0) {
        return fail(r, SR_ERR_AUDIT_CHAIN, file, lineno, rec.seq,
                    "prev does not match the record before it: a record was replaced, inserted or deleted");
    }
    c->last_is_checkpoint = strcmp(rec.event, AUDIT_CHECKPOINT_EVENT) == 0 && strcmp(rec.component, "audit") == 0;
    if (c->last_is_checkpoint) {
        if ((rc = check_checkpoint(c, &rec, why, sizeof why)) != SR_OK) return fail(r, rc, file, lineno, rec.seq, why);
        r->checkpoints++;
        r->sealed_seq = rec.seq;
    }
    c->any = 1;
    c->last_seq = rec.seq;
    memcpy(c->last_hash, rec.hash, SR_AUDIT_HASH_BYTES);
    r->records++;
    r->last_seq = rec.seq;
    return SR_OK;
}

static sr_err_t verify_file(chain_t *c, sr_audit_verify_result_t *r, const char *file)
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
    chain_t c = {.key = verify_key};
    if (verify_key) sr_audit_key_id(verify_key, c.key_id);
    r->signatures_checked = verify_key != NULL;
    sr_err_t rc = SR_OK;
    for (size_t i = 0; rc == SR_OK && i < n; i++) rc = verify_file(&c, r, files[i]);
    if (rc != SR_OK) return rc;
    if (!c.any) return fail(r, SR_ERR_AUDIT_SEQUENCE, n ? files[0] : "(no files)", 0, 0, "the log holds no records");
    r->unsealed = r->last_seq - r->sealed_seq;
    r->ends_sealed = c.last_is_checkpoint;
    if (verify_key && r->checkpoints == 0 && r->records > 1)
        return fail(r, SR_ERR_AUDIT_UNSEALED, files[n - 1], 0, 0,
                    "no signed checkpoint: nothing proves the holder of the signing key wrote this log");
    return SR_OK;
}
