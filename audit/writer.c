/*
 * writer.c — appending records durably, in groups, from many threads and
 * processes, with signed checkpoints and rotation.
 *
 * Group commit: an appender queues its record and waits; whichever waiting
 * thread finds no flush in progress becomes the leader, takes the whole queue
 * and writes it with one write() and one fdatasync(), then wakes the threads
 * whose records it carried (only those: each batch has its own condition
 * variable, so a busy log does not wake every thread per batch) and one
 * thread of the next batch to lead it. While it syncs, new records gather
 * for the next batch, so the batch size follows the load with no timer (an
 * optional commit_delay_us lets a leader wait for company first).
 *
 * Processes: each batch is written under flock(LOCK_EX). Before writing, the
 * leader checks whether the file grew or was rotated since its last batch
 * (another process wrote) and, if so, re-reads the last record to continue
 * the chain from it. So any number of processes share one log, each record is
 * in the chain exactly once, and the lock is held only for write + sync.
 *
 * Rotation: when the live file passes rotate_bytes, the leader seals it with a
 * checkpoint, renames it to PATH.<last seq, 12 digits> and starts PATH afresh
 * with an `audit.rotated` record whose prev is the old file's last hash: one
 * chain across files.
 */
#include "audit_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAIL_READ 16384
#define RESULT_RING 256

typedef struct pending {
    int64_t ts_us;
    char *fields[7]; /* component, event, subject, object, outcome, source, detail */
} pending_t;

struct sr_audit_writer {
    pthread_mutex_t mu;
    pthread_cond_t cv[RESULT_RING]; /* waiters of batch b sleep on cv[b % RESULT_RING] */
    char *path, *host;
    sr_audit_options_t opt;
    int fd;
    uint8_t *sk; /* secure memory */
    uint8_t *tag_key; /* secure memory: tags our records (audit_tag) */
    char *tamper_note; /* lines found that we cannot prove: recorded with the next batch */
    int tail_sealed;   /* the file's last record is a checkpoint */
    uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];
    char key_id[17];
    /* chain state, valid while the file lock is held */
    uint64_t seq;
    uint8_t head[SR_AUDIT_HASH_BYTES];
    off_t end;
    ino_t ino;
    uint64_t since_checkpoint, checkpoint_at_ms;
    /* the queue */
    pending_t *q;
    size_t qn, qcap;
    uint64_t open_batch, durable_batch;
    int flushing;
    sr_err_t results[RESULT_RING];
    char result_detail[RESULT_RING][512]; /* the leader's message, for every waiter ("disk full", ...) */
    char *buf;
    size_t buf_cap;
    sr_audit_syslog_t *syslog;
};

/* ---- keys ------------------------------------------------------------------------------ */

void sr_audit_key_id(const uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES], char out[17])
{
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, pk, SR_AUDIT_SIGN_PUBLIC_BYTES);
    sr_hex_encode(d, 8, out);
}

static sr_err_t write_new_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return errno == EEXIST ? sr_err_set(SR_ERR_EXISTS, "%s exists; refusing to overwrite it", path)
                               : sr_err_set_errno(SR_ERR_IO, errno, "cannot create %s", path);
    size_t len = strlen(text);
    int ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    close(fd);
    return ok ? SR_OK : sr_err_set_errno(SR_ERR_IO, errno, "cannot write %s", path);
}

sr_err_t sr_audit_keygen(const char *prefix)
{
    if (sr_secure_init() != SR_OK) return SR_ERR_CRYPTO;
    char sign_path[4096], pub_path[4096], id[17];
    snprintf(sign_path, sizeof sign_path, "%s.sign", prefix);
    snprintf(pub_path, sizeof pub_path, "%s.pub", prefix);
    uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];
    uint8_t *sk = sr_secure_alloc(SR_AUDIT_SIGN_SECRET_BYTES);
    char *text = sr_secure_alloc(512);
    if (!sk || !text) return SR_ERR_NOMEM;
    crypto_sign_keypair(pk, sk);
    sr_audit_key_id(pk, id);
    char hex[2 * SR_AUDIT_SIGN_SECRET_BYTES + 1];
    sr_hex_encode(sk, SR_AUDIT_SIGN_SECRET_BYTES, hex);
    snprintf(text, 512, "# strongroom audit signing key %s: stays with the writer (mode 0600)\n%s\n", id, hex);
    sr_secure_wipe(hex, sizeof hex);
    sr_err_t rc = write_new_file(sign_path, text, 0600);
    sr_hex_encode(pk, SR_AUDIT_SIGN_PUBLIC_BYTES, hex);
    snprintf(text, 512, "# strongroom audit verify key %s: give it to reviewers (tde-audit verify --key)\n%s\n", id,
             hex);
    if (rc == SR_OK) rc = write_new_file(pub_path, text, 0644);
    sr_secure_wipe(text, 512), sr_secure_free(text);
    sr_secure_wipe(sk, SR_AUDIT_SIGN_SECRET_BYTES), sr_secure_free(sk);
    return rc;
}

/* The hex line of a key file (after '#' comments) into out. */
static sr_err_t key_file_read(const char *path, uint8_t *out, size_t len, int secret)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open key %s", path);
    sr_err_t checked = secret ? sr_file_check_private(fd, path, "signing key", NULL) : SR_OK;
    if (checked != SR_OK) return close(fd), checked;
    char *text = sr_secure_alloc(1024);
    if (!text) return close(fd), SR_ERR_NOMEM;
    ssize_t n = read(fd, text, 1023);
    close(fd);
    sr_err_t rc = SR_OK;
    if (n <= 0) rc = sr_err_set(SR_ERR_PARSE, "%s is empty", path);
    else {
        text[n] = '\0';
        char *line = text, *nl;
        while (line && *line == '#') line = (nl = strchr(line, '\n')) ? nl + 1 : NULL;
        size_t hl = line ? strcspn(line, "\r\n") : 0;
        if (!line || hl != 2 * len) rc = sr_err_set(SR_ERR_PARSE, "%s: expected %zu hex digits", path, 2 * len);
        else line[hl] = '\0', rc = sr_hex_decode(line, out, len) == SR_OK ? SR_OK
                                       : sr_err_set(SR_ERR_PARSE, "%s: not hex", path);
    }
    sr_secure_wipe(text, 1024), sr_secure_free(text);
    return rc;
}

sr_err_t sr_audit_verify_key_load(const char *path, uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES])
{
    return key_file_read(path, pk, SR_AUDIT_SIGN_PUBLIC_BYTES, 0);
}

/* ---- file state --------------------------------------------------------------------------- */

/* The last complete record of the file (seq and hash), or a fresh chain. */
static sr_err_t read_tail(int fd, const char *path, off_t size, uint64_t *seq, uint8_t head[SR_AUDIT_HASH_BYTES],
                          int *sealed)
{
    *seq = 0, *sealed = 1;
    memset(head, 0, SR_AUDIT_HASH_BYTES);
    if (size == 0) return SR_OK;
    char buf[TAIL_READ + 1];
    off_t from = size > TAIL_READ ? size - TAIL_READ : 0;
    ssize_t n = pread(fd, buf, (size_t)(size - from), from);
    if (n != size - from) return sr_err_set_errno(SR_ERR_IO, errno, "cannot read the tail of %s", path);
    if (buf[n - 1] != '\n') return sr_err_set(SR_ERR_CORRUPT, "%s does not end with a complete record", path);
    buf[n - 1] = '\0';
    char *line = strrchr(buf, '\n');
    line = line ? line + 1 : (from == 0 ? buf : NULL);
    if (!line) return sr_err_set(SR_ERR_CORRUPT, "%s: last record longer than %d bytes", path, TAIL_READ);
    sr_audit_record_t r;
    sr_err_t rc = sr_audit_record_parse(line, strlen(line), &r);
    if (rc != SR_OK)
        return sr_err_set(SR_ERR_CORRUPT, "%s: the last record is damaged (%s); run tde-audit verify", path,
                          sr_err_detail());
    *seq = r.seq;
    memcpy(head, r.hash, SR_AUDIT_HASH_BYTES);
    *sealed = !strcmp(r.event, AUDIT_CHECKPOINT_EVENT);
    return SR_OK;
}

/* Cuts a torn last line (a crash mid-write); returns the bytes cut. */
sr_err_t audit_cut_torn_tail(int fd, const char *path, off_t *size, off_t *cut)
{
    *cut = 0;
    if (*size == 0) return SR_OK;
    char buf[TAIL_READ];
    off_t pos = *size;
    while (pos > 0) {
        off_t from = pos > (off_t)sizeof buf ? pos - (off_t)sizeof buf : 0;
        ssize_t n = pread(fd, buf, (size_t)(pos - from), from);
        if (n != pos - from) return sr_err_set_errno(SR_ERR_IO, errno, "cannot read %s", path);
        for (ssize_t i = n - 1; i >= 0; i--)
            if (buf[i] == '\n') {
                off_t keep = from + i + 1;
                *cut = *size - keep;
                if (*cut && ftruncate(fd, keep) != 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot cut %s", path);
                *size = keep;
                return SR_OK;
            }
        pos = from;
    }
    *cut = *size;
    if (ftruncate(fd, 0) != 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot cut %s", path);
    *size = 0;
    return SR_OK;
}

static sr_err_t open_live(sr_audit_writer_t *w)
{
    if (w->fd >= 0) close(w->fd);
    w->fd = open(w->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (w->fd < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open audit log %s", w->path);
    w->end = -1; /* unknown: resync at the next batch */
    return SR_OK;
}

/* The offset and seq of the first line in [from, size) that no holder of
 * the key wrote, after the last checkpoint we can prove (*bad = size: none). */
static sr_err_t first_unproven(sr_audit_writer_t *w, off_t from, off_t size, off_t *bad, uint64_t *bad_seq,
                               uint64_t *last_seq)
{
    *bad = size, *bad_seq = 0, *last_seq = 0;
    int fd = dup(w->fd);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        if (fd >= 0) close(fd);
        return sr_err_set_errno(SR_ERR_IO, errno, "cannot read %s", w->path);
    }
    char *line = NULL;
    size_t cap = 0;
    off_t at = from;
    ssize_t n;
    sr_err_t rc = fseeko(f, from, SEEK_SET) == 0 ? SR_OK : sr_err_set_errno(SR_ERR_IO, errno, "cannot seek %s", w->path);
    while (rc == SR_OK && at < size && (n = getline(&line, &cap, f)) > 0) {
        sr_audit_record_t r;
        int ok = line[n - 1] == '\n' && sr_audit_record_parse(line, (size_t)n - 1, &r) == SR_OK &&
                 audit_tag_ok(w->tag_key, &r);
        if (ok && !strcmp(r.event, AUDIT_CHECKPOINT_EVENT)) *bad = size, *bad_seq = 0; /* sealed up to here */
        else if (!ok && *bad == size && (*bad = at, sscanf(line, "{\"seq\":%llu", (unsigned long long *)bad_seq) != 1))
            *bad_seq = 0;
        if (ok) *last_seq = r.seq;
        at += n;
    }
    free(line);
    fclose(f);
    return rc;
}

/* Moves [bad, *size) aside to PATH.suspect-SEQ, cuts it from the log, and
 * notes it for an audit.tamper_suspected record. */
static sr_err_t quarantine(sr_audit_writer_t *w, off_t bad, off_t *size, uint64_t bad_seq, uint64_t last_seq)
{
    char aside[4200];
    snprintf(aside, sizeof aside, "%s.suspect-%llu-%ld", w->path, (unsigned long long)bad_seq, (long)getpid());
    size_t len = (size_t)(*size - bad);
    char *bytes = malloc(len ? len : 1);
    int out = open(aside, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    sr_err_t rc = !bytes       ? sr_err_set(SR_ERR_NOMEM, "%zu bytes to move aside from %s", len, w->path)
                  : out < 0    ? sr_err_set_errno(SR_ERR_IO, errno, "cannot create %s", aside)
                               : SR_OK;
    if (rc == SR_OK && pread(w->fd, bytes, len, bad) != (ssize_t)len)
        rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot read %s", w->path);
    if (rc == SR_OK) rc = sr_fd_write_all(out, bytes, len);
    if (rc == SR_OK && fsync(out) != 0) rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot sync %s", aside);
    if (rc == SR_OK && (ftruncate(w->fd, bad) != 0 || fsync(w->fd) != 0))
        rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot cut %s", w->path);
    if (out >= 0) close(out);
    free(bytes);
    if (rc != SR_OK) return rc;
    char note[4400];
    snprintf(note, sizeof note, "%zu bytes from seq %llu%s%llu were not written by a holder of the signing key: "
             "not sealed, taken out of the chain, kept in %s", len, (unsigned long long)bad_seq,
             last_seq > bad_seq ? " to " : "", last_seq > bad_seq ? (unsigned long long)last_seq : 0ull, aside);
    if (last_seq <= bad_seq) { /* no readable seq after the first: say so without a range */
        snprintf(note, sizeof note, "%zu bytes from seq %llu on were not written by a holder of the signing key: "
                 "not sealed, taken out of the chain, kept in %s", len, (unsigned long long)bad_seq, aside);
    }
    sr_log_warn("audit log %s: %s", w->path, note);
    free(w->tamper_note);
    w->tamper_note = strdup(note);
    *size = bad;
    return w->tamper_note ? SR_OK : SR_ERR_NOMEM;
}

static sr_err_t prove_growth(sr_audit_writer_t *w, off_t from, off_t *size)
{
    off_t bad;
    uint64_t bad_seq, last_seq;
    sr_err_t rc = first_unproven(w, from, *size, &bad, &bad_seq, &last_seq);
    if (rc == SR_OK && bad < *size) rc = quarantine(w, bad, size, bad_seq, last_seq);
    return rc;
}

/* The tamper note, as the first record of the next batch. */
static sr_err_t add_tamper_record(sr_audit_writer_t *w, size_t *used);

/* Under the lock: make sure we write to the live file and continue its chain. */
static sr_err_t resync(sr_audit_writer_t *w)
{
    struct stat live, ours;
    if (stat(w->path, &live) != 0 || fstat(w->fd, &ours) != 0 || live.st_ino != ours.st_ino) {
        sr_err_t rc = open_live(w); /* rotated by another process */
        if (rc != SR_OK) return rc;
        if (flock(w->fd, LOCK_EX) != 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot lock %s", w->path);
        if (fstat(w->fd, &ours) != 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot stat %s", w->path);
    }
    if (ours.st_size == w->end && ours.st_ino == w->ino) return SR_OK;
    /* Someone else wrote (or we just opened): only what a holder of the key
     * wrote is continued and sealed. */
    off_t from = ours.st_ino == w->ino && w->end >= 0 && w->end <= ours.st_size ? w->end : 0, size = ours.st_size;
    sr_err_t rc = prove_growth(w, from, &size);
    if (rc != SR_OK) return rc;
    w->ino = ours.st_ino;
    w->end = size;
    return read_tail(w->fd, w->path, size, &w->seq, w->head, &w->tail_sealed);
}

/* ---- formatting a batch ---------------------------------------------------------------- */

static sr_err_t buf_reserve(sr_audit_writer_t *w, size_t used, size_t more)
{
    if (used + more <= w->buf_cap) return SR_OK;
    size_t cap = w->buf_cap * 2 > used + more ? w->buf_cap * 2 : used + more;
    char *b = realloc(w->buf, cap);
    if (!b) return sr_err_set(SR_ERR_NOMEM, "cannot grow the audit batch buffer");
    w->buf = b, w->buf_cap = cap;
    return SR_OK;
}

static sr_err_t add_line(sr_audit_writer_t *w, size_t *used, int64_t ts, const sr_event_t *e)
{
    sr_err_t rc = buf_reserve(w, *used, SR_AUDIT_LINE_MAX + 512);
    if (rc != SR_OK) return rc;
    uint8_t hash[SR_AUDIT_HASH_BYTES];
    size_t n = audit_format(w->buf + *used, SR_AUDIT_LINE_MAX + 512, w->seq + 1, ts, w->host, e, w->head, w->tag_key,
                            hash);
    if (n == 0) return sr_err_set(SR_ERR_INTERNAL, "audit record does not fit its line");
    w->seq++;
    memcpy(w->head, hash, SR_AUDIT_HASH_BYTES);
    *used += n;
    w->since_checkpoint++;
    return SR_OK;
}

static sr_err_t add_checkpoint(sr_audit_writer_t *w, size_t *used)
{
    uint8_t msg[48], sig[crypto_sign_BYTES];
    audit_sig_message(w->seq, w->head, msg);
    crypto_sign_detached(sig, NULL, msg, sizeof msg, w->sk);
    char detail[256], sig_hex[2 * crypto_sign_BYTES + 1];
    sr_hex_encode(sig, sizeof sig, sig_hex);
    snprintf(detail, sizeof detail, "key=%s sealed=%llu sig=%s", w->key_id, (unsigned long long)w->seq, sig_hex);
    sr_event_t e = {.component = "audit", .event = AUDIT_CHECKPOINT_EVENT, .outcome = "success", .detail = detail};
    sr_err_t rc = add_line(w, used, sr_time_now_us(), &e);
    w->since_checkpoint = 0;
    w->checkpoint_at_ms = sr_time_mono_ms();
    return rc;
}

static sr_err_t add_tamper_record(sr_audit_writer_t *w, size_t *used)
{
    if (!w->tamper_note) return SR_OK;
    sr_event_t e = {.component = "audit", .event = AUDIT_TAMPER_EVENT, .outcome = "failure", .detail = w->tamper_note};
    sr_err_t rc = add_line(w, used, sr_time_now_us(), &e);
    if (rc == SR_OK) free(w->tamper_note), w->tamper_note = NULL;
    return rc;
}

static sr_err_t write_all(sr_audit_writer_t *w, const char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(w->fd, buf + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            if (ftruncate(w->fd, w->end) != 0) { /* leave no partial line behind */ }
            return e == ENOSPC ? sr_err_set_errno(SR_ERR_DISK_FULL, e, "audit log %s: disk full", w->path)
                               : sr_err_set_errno(SR_ERR_IO, e, "cannot write audit log %s", w->path);
        }
        done += (size_t)n;
    }
    if (fdatasync(w->fd) != 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot sync audit log %s", w->path);
    w->end += (off_t)len;
    for (size_t at = 0; w->syslog && at < len;) { /* copies of what is now durable */
        const char *nl = memchr(buf + at, '\n', len - at);
        size_t line = nl ? (size_t)(nl - (buf + at)) : len - at;
        sr_audit_syslog_send(w->syslog, buf + at, line);
        at += line + 1;
    }
    return SR_OK;
}

static sr_err_t rotate(sr_audit_writer_t *w)
{
    size_t used = 0;
    sr_err_t rc = add_checkpoint(w, &used);
    if (rc == SR_OK) rc = write_all(w, w->buf, used);
    char old[4200];
    snprintf(old, sizeof old, "%s.%012llu", w->path, (unsigned long long)w->seq);
    if (rc == SR_OK && rename(w->path, old) != 0) rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot rotate %s", w->path);
    int old_fd = w->fd;
    w->fd = -1;
    if (rc == SR_OK) rc = open_live(w);
    if (rc == SR_OK && flock(w->fd, LOCK_EX) != 0) rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot lock %s", w->path);
    close(old_fd); /* releases the old file's lock */
    if (rc != SR_OK) return rc;
    struct stat st;
    fstat(w->fd, &st);
    w->ino = st.st_ino, w->end = 0;
    char detail[4300];
    snprintf(detail, sizeof detail, "previous file %s", old);
    sr_event_t e = {.component = "audit", .event = "audit.rotated", .outcome = "success", .detail = detail};
    used = 0;
    rc = add_line(w, &used, sr_time_now_us(), &e);
    return rc == SR_OK ? write_all(w, w->buf, used) : rc;
}

static int checkpoint_due(const sr_audit_writer_t *w)
{
    return w->since_checkpoint >= w->opt.checkpoint_every ||
           (w->since_checkpoint && sr_time_mono_ms() - w->checkpoint_at_ms >= w->opt.checkpoint_ms);
}

/* Writes a batch under the file lock; `force_checkpoint` seals it. */
static sr_err_t flush_batch(sr_audit_writer_t *w, pending_t *batch, size_t n, int force_checkpoint)
{
    if (flock(w->fd, LOCK_EX) != 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot lock %s", w->path);
    sr_err_t rc = resync(w);
    if (rc == SR_OK && w->end >= (off_t)w->opt.rotate_bytes) rc = rotate(w);
    uint64_t seq0 = w->seq; /* to undo the batch if it cannot be written */
    uint8_t head0[SR_AUDIT_HASH_BYTES];
    memcpy(head0, w->head, sizeof head0);
    size_t used = 0;
    if (rc == SR_OK) rc = add_tamper_record(w, &used);
    for (size_t i = 0; rc == SR_OK && i < n; i++) {
        char **f = batch[i].fields;
        sr_event_t e = {.component = f[0], .event = f[1], .subject = f[2], .object = f[3], .outcome = f[4],
                        .source = f[5], .detail = f[6]};
        rc = add_line(w, &used, batch[i].ts_us, &e);
        if (rc == SR_OK && checkpoint_due(w)) rc = add_checkpoint(w, &used);
    }
    if (rc == SR_OK && force_checkpoint && w->since_checkpoint) rc = add_checkpoint(w, &used);
    if (rc == SR_OK && used) rc = write_all(w, w->buf, used);
    if (rc != SR_OK) w->seq = seq0, memcpy(w->head, head0, sizeof head0), w->end = -1; /* nothing of it stays */
    flock(w->fd, LOCK_UN);
    return rc;
}

/* ---- queue ------------------------------------------------------------------------------- */

static void pending_free(pending_t *p)
{
    for (int i = 0; i < 7; i++) free(p->fields[i]);
}


/* Leader: flushes everything queued. Called and returns with w->mu held. */
static void lead(sr_audit_writer_t *w, int force_checkpoint)
{
    w->flushing = 1;
    if (w->opt.commit_delay_us) {
        pthread_mutex_unlock(&w->mu);
        usleep((useconds_t)w->opt.commit_delay_us);
        pthread_mutex_lock(&w->mu);
    }
    pending_t *batch = w->q;
    size_t n = w->qn;
    uint64_t id = w->open_batch++;
    w->q = NULL, w->qn = w->qcap = 0;
    pthread_mutex_unlock(&w->mu);
    sr_err_t rc = flush_batch(w, batch, n, force_checkpoint);
    for (size_t i = 0; i < n; i++) pending_free(&batch[i]);
    free(batch);
    pthread_mutex_lock(&w->mu);
    w->results[id % RESULT_RING] = rc;
    if (rc != SR_OK) snprintf(w->result_detail[id % RESULT_RING], sizeof w->result_detail[0], "%s", sr_err_detail());
    w->durable_batch = id + 1;
    w->flushing = 0;
    pthread_cond_broadcast(&w->cv[id % RESULT_RING]);
    if (w->qn) pthread_cond_signal(&w->cv[(id + 1) % RESULT_RING]); /* a leader for the next batch */
}

static sr_err_t pending_make(const sr_event_t *e, pending_t *p)
{
    *p = (pending_t){.ts_us = sr_time_now_us()};
    const char *src[7] = {e->component, e->event, e->subject, e->object, e->outcome, e->source, e->detail};
    for (int i = 0; i < 7; i++)
        if (src[i] && !(p->fields[i] = strdup(src[i]))) return pending_free(p), sr_err_set(SR_ERR_NOMEM, "audit");
    return SR_OK;
}

sr_err_t sr_audit_append(sr_audit_writer_t *w, const sr_event_t *e) { return audit_append_many(w, e, 1); }

sr_err_t audit_append_many(sr_audit_writer_t *w, const sr_event_t *events, size_t n)
{
    pending_t *ps = calloc(n ? n : 1, sizeof *ps);
    if (!ps) return sr_err_set(SR_ERR_NOMEM, "audit events");
    for (size_t i = 0; i < n; i++)
        if (pending_make(&events[i], &ps[i]) != SR_OK) {
            while (i--) pending_free(&ps[i]);
            free(ps);
            return sr_err_set(SR_ERR_NOMEM, "audit");
        }
    pthread_mutex_lock(&w->mu);
    if (w->qn + n > w->qcap) {
        size_t cap = w->qcap ? w->qcap : 64;
        while (cap < w->qn + n) cap *= 2;
        pending_t *q = realloc(w->q, cap * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&w->mu);
            for (size_t i = 0; i < n; i++) pending_free(&ps[i]);
            free(ps);
            return sr_err_set(SR_ERR_NOMEM, "audit queue");
        }
        w->q = q, w->qcap = cap;
    }
    memcpy(w->q + w->qn, ps, n * sizeof *ps); /* one batch: queued under one lock, led together */
    w->qn += n;
    free(ps);
    uint64_t mine = w->open_batch;
    while (w->durable_batch <= mine) {
        if (!w->flushing) lead(w, 0);
        else pthread_cond_wait(&w->cv[mine % RESULT_RING], &w->mu);
    }
    sr_err_t rc = w->results[mine % RESULT_RING];
    char detail[sizeof w->result_detail[0]] = "";
    if (rc != SR_OK) memcpy(detail, w->result_detail[mine % RESULT_RING], sizeof detail);
    pthread_mutex_unlock(&w->mu);
    return rc == SR_OK ? SR_OK : sr_err_set(rc, "audit record not written: %s", detail);
}

sr_err_t sr_audit_checkpoint(sr_audit_writer_t *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->flushing) { /* rare (rotation, close): poll rather than join a batch's waiters */
        pthread_mutex_unlock(&w->mu);
        usleep(200);
        pthread_mutex_lock(&w->mu);
    }
    uint64_t mine = w->open_batch;
    lead(w, 1);
    sr_err_t rc = w->results[mine % RESULT_RING];
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* ---- open / close --------------------------------------------------------------------------- */

static sr_err_t writer_init(sr_audit_writer_t *w, const sr_audit_options_t *o)
{
    char host[256] = "localhost";
    if (!o->host) gethostname(host, sizeof host - 1);
    w->path = strdup(o->path);
    w->host = strdup(o->host ? o->host : host);
    w->buf_cap = 64 * 1024;
    w->buf = malloc(w->buf_cap);
    w->sk = sr_secure_alloc(SR_AUDIT_SIGN_SECRET_BYTES);
    if (!w->path || !w->host || !w->buf || !w->sk) return sr_err_set(SR_ERR_NOMEM, "cannot allocate the audit writer");
    sr_err_t rc = key_file_read(o->signing_key, w->sk, SR_AUDIT_SIGN_SECRET_BYTES, 1);
    if (rc != SR_OK) return rc;
    sr_log_secret_register(w->sk, SR_AUDIT_SIGN_SECRET_BYTES);
    if (!(w->tag_key = sr_secure_alloc(AUDIT_TAG_KEY_BYTES))) return sr_err_set(SR_ERR_NOMEM, "audit tag key");
    audit_tag_key(w->sk, w->tag_key);
    crypto_sign_ed25519_sk_to_pk(w->pk, w->sk);
    sr_audit_key_id(w->pk, w->key_id);
    w->opt = *o;
    if (o->syslog && (rc = sr_audit_syslog_open(o->syslog, &w->syslog)) != SR_OK) return rc;
    if (!w->opt.checkpoint_every) w->opt.checkpoint_every = 1000;
    if (!w->opt.checkpoint_ms) w->opt.checkpoint_ms = 10000;
    if (!w->opt.rotate_bytes) w->opt.rotate_bytes = 64u << 20;
    w->checkpoint_at_ms = sr_time_mono_ms();
    return SR_OK;
}

static void writer_free(sr_audit_writer_t *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    sr_audit_syslog_close(w->syslog);
    if (w->sk) {
        sr_log_secret_unregister(w->sk);
        sr_secure_wipe(w->sk, SR_AUDIT_SIGN_SECRET_BYTES), sr_secure_free(w->sk);
    }
    if (w->tag_key) sr_secure_wipe(w->tag_key, AUDIT_TAG_KEY_BYTES), sr_secure_free(w->tag_key);
    free(w->tamper_note);
    for (size_t i = 0; i < w->qn; i++) pending_free(&w->q[i]);
    free(w->q), free(w->buf), free(w->path), free(w->host);
    pthread_mutex_destroy(&w->mu);
    for (int i = 0; i < RESULT_RING; i++) pthread_cond_destroy(&w->cv[i]);
    free(w);
}

/* Under the lock: cut a torn tail; start a new chain with audit.started. */
static sr_err_t recover(sr_audit_writer_t *w, off_t *cut, int *fresh)
{
    struct stat st;
    if (flock(w->fd, LOCK_EX) != 0 || fstat(w->fd, &st) != 0)
        return sr_err_set_errno(SR_ERR_IO, errno, "cannot lock %s", w->path);
    off_t size = st.st_size;
    sr_err_t rc = audit_cut_torn_tail(w->fd, w->path, &size, cut);
    if (rc == SR_OK) w->end = -1, rc = resync(w);
    if (rc == SR_OK && (w->tamper_note || !w->tail_sealed)) {
        /* recorded and sealed now: the tamper note, and a crashed writer's
         * own unsealed records (proven by their tags) */
        size_t used = 0;
        rc = add_tamper_record(w, &used);
        if (rc == SR_OK) rc = add_checkpoint(w, &used);
        if (rc == SR_OK) rc = write_all(w, w->buf, used);
    }
    *fresh = rc == SR_OK && w->seq == 0;
    if (rc == SR_OK && *fresh) {
        char detail[64];
        snprintf(detail, sizeof detail, "key=%s", w->key_id);
        sr_event_t e = {.component = "audit", .event = "audit.started", .outcome = "success", .detail = detail};
        size_t used = 0;
        rc = add_line(w, &used, sr_time_now_us(), &e);
        if (rc == SR_OK) rc = write_all(w, w->buf, used);
    }
    flock(w->fd, LOCK_UN);
    return rc;
}

sr_err_t sr_audit_open(const sr_audit_options_t *o, sr_audit_writer_t **out)
{
    if (!o || !o->path || !o->signing_key)
        return sr_err_set(SR_ERR_INVALID_ARG, "an audit log needs a path and a signing key");
    if (sr_secure_init() != SR_OK) return SR_ERR_CRYPTO;
    sr_audit_writer_t *w = calloc(1, sizeof *w);
    if (!w) return sr_err_set(SR_ERR_NOMEM, "cannot allocate the audit writer");
    w->fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    for (int i = 0; i < RESULT_RING; i++) pthread_cond_init(&w->cv[i], NULL);
    off_t cut = 0;
    int fresh = 0;
    sr_err_t rc = writer_init(w, o);
    if (rc == SR_OK) rc = open_live(w);
    if (rc == SR_OK) rc = recover(w, &cut, &fresh);
    if (rc == SR_OK && cut) {
        char detail[128];
        snprintf(detail, sizeof detail, "cut %lld bytes of a torn last record (a crash while writing)", (long long)cut);
        rc = sr_audit_append(w, &(sr_event_t){.component = "audit", .event = "audit.truncated", .outcome = "failure",
                                              .detail = detail});
    }
    if (rc != SR_OK) {
        writer_free(w);
        return rc;
    }
    *out = w;
    return SR_OK;
}

sr_err_t sr_audit_close(sr_audit_writer_t *w)
{
    if (!w) return SR_OK;
    sr_err_t rc = sr_audit_checkpoint(w);
    writer_free(w);
    return rc;
}

static sr_err_t event_sink(void *ctx, const sr_event_t *e) { return sr_audit_append(ctx, e); }

void sr_audit_install_as_event_sink(sr_audit_writer_t *w) { sr_event_set_sink(w ? event_sink : NULL, w); }

static sr_audit_writer_t *env_writer;
static void close_env_writer(void)
{
    sr_event_set_sink(NULL, NULL);
    sr_audit_close(env_writer);
    env_writer = NULL;
}

static sr_audit_client_t *env_client;
static void close_env_client(void)
{
    sr_event_set_sink(NULL, NULL);
    sr_audit_client_close(env_client);
    env_client = NULL;
}

/* STRONGROOM_AUDIT_SOCKET: this process sends its events to the host's sealer
 * (no key, no log of its own; *out stays NULL). */
static sr_err_t open_env_client(const char *socket_path)
{
    if (env_client) return SR_OK;
    sr_err_t rc = sr_audit_client_open(socket_path, &env_client);
    if (rc != SR_OK) return rc;
    sr_audit_client_install_as_event_sink(env_client);
    atexit(close_env_client);
    return SR_OK;
}

sr_err_t sr_audit_open_from_env(sr_audit_writer_t **out)
{
    const char *path = getenv("STRONGROOM_AUDIT_LOG"), *key = getenv("STRONGROOM_AUDIT_KEY");
    const char *sock = getenv("STRONGROOM_AUDIT_SOCKET");
    *out = NULL;
    if (sock && *sock) return open_env_client(sock);
    if (!path || !*path) return SR_OK;
    if (!key || !*key)
        return sr_err_set(SR_ERR_CONFIG, "STRONGROOM_AUDIT_LOG is set but STRONGROOM_AUDIT_KEY (the .sign file) is not");
    if (env_writer) return *out = env_writer, SR_OK;
    sr_audit_options_t o = {.path = path, .signing_key = key, .syslog = getenv("STRONGROOM_AUDIT_SYSLOG")};
    if (o.syslog && !*o.syslog) o.syslog = NULL;
    sr_err_t rc = sr_audit_open(&o, &env_writer);
    if (rc != SR_OK) return rc;
    sr_audit_install_as_event_sink(env_writer);
    atexit(close_env_writer);
    *out = env_writer;
    return SR_OK;
}
