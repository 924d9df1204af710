/*
 * tde-audit — the security reviewer's tool for strongroom audit logs.
 *
 *   tde-audit keygen --out PREFIX                 PREFIX.sign (writer, 0600) + PREFIX.pub (reviewers)
 *   tde-audit verify [--key PUB] [--strict] [--min-seq N] [--against COPY] FILES...
 *   tde-audit search [FILTERS] [--format table|json|csv] FILES...
 *   tde-audit report FILES...
 *   tde-audit append --log FILE --sign-key SIGN --component C --event E [--subject ..] [--object ..]
 *                    [--outcome ..] [--source ..] [--detail ..]
 *   tde-audit collect --listen HOST:PORT --dir DIR --tls-ca CA --tls-cert CERT --tls-key KEY [--key PUB]
 *   tde-audit forward --log FILE --to HOST:PORT --tls-ca CA --tls-cert CERT --tls-key KEY [--verify-name N] [--once]
 *
 * FILES are a log's files oldest first (rotated files sort by name:
 * audit.log.* then audit.log). Exit status: 0 pass, 1 fail, 2 usage.
 */
#include "audit_internal.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int usage(void)
{
    fputs("usage: tde-audit COMMAND [OPTIONS] FILES...\n"
          "  keygen --out PREFIX            signing key PREFIX.sign (0600) and verify key PREFIX.pub\n"
          "  verify [--key PUB] [--strict] [--min-seq N] [--against COPY] FILES...\n"
          "                                 prove no record was altered, removed, inserted or reordered\n"
          "  search [--since T] [--until T] [--component C] [--event E] [--subject S] [--object O]\n"
          "         [--source IP|CIDR|local] [--outcome R] [--format table|json|csv] FILES...\n"
          "  report FILES...                summaries: logins, key operations, nodes, refusals, chain status\n"
          "  append --log FILE --sign-key SIGN --component C --event E [--subject S] [--object O]\n"
          "         [--outcome R] [--source IP] [--detail D]\n"
          "  collect --listen HOST:PORT --dir DIR --tls-ca CA --tls-cert CERT --tls-key KEY [--key PUB]\n"
          "                                 receive forwarded logs (mutual TLS), one verified file per source\n"
          "  forward --log FILE --to HOST:PORT --tls-ca CA --tls-cert CERT --tls-key KEY [--verify-name N] [--once]\n"
          "  serve --socket PATH --log FILE --sign-key KEY\n"
          "                                 the host's sealer: the only holder of the signing key; processes with\n"
          "                                 STRONGROOM_AUDIT_SOCKET=PATH send it their events (subject: the kernel's)\n"
          "                                 send the log's records the collector lacks; keep following it\n"
          "FILES: oldest first (audit.log.* audit.log). T: RFC 3339 (2026-11-24T10:00:00Z).\n"
          "exit status: 0 pass, 1 fail, 2 usage\n",
          stderr);
    return 2;
}

typedef struct opts {
    const char *out, *key, *log, *sign_key, *format;
    int strict;
    uint64_t min_seq;
    int64_t since, until;
    const char *component, *event, *subject, *object, *source, *outcome, *detail;
    const char *listen, *to, *dir, *tls_ca, *tls_cert, *tls_key, *verify_name, *against, *socket;
    int once;
    int nfiles;
    char **files;
    struct source_filter {
        int family;      /* AF_INET, AF_INET6; 0: a word such as "local", matched exactly */
        uint8_t net[16];
        int bits;        /* prefix length */
    } source_filter;
} opts_t;

static int cmd_keygen(opts_t *o)
{
    if (!o->out) return usage();
    sr_err_t rc = sr_audit_keygen(o->out);
    if (rc != SR_OK) return fprintf(stderr, "tde-audit: keygen: %s\n", sr_err_detail()), 1;
    uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];
    char path[4096], id[17];
    snprintf(path, sizeof path, "%s.pub", o->out);
    if (sr_audit_verify_key_load(path, pk) != SR_OK) return fprintf(stderr, "tde-audit: %s\n", sr_err_detail()), 1;
    sr_audit_key_id(pk, id);
    printf("audit key %s: %s.sign (signing, keep with the writer, 0600) and %s.pub (give to reviewers)\n", id, o->out,
           o->out);
    return 0;
}

/* The hash of record `seq` in the files (0 if not found). */
static int hash_of(char **files, int n, uint64_t seq, uint8_t hash[SR_AUDIT_HASH_BYTES])
{
    int found = 0;
    char *line = NULL;
    size_t cap = 0;
    for (int i = 0; i < n && !found; i++) {
        FILE *f = fopen(files[i], "r");
        ssize_t len;
        while (f && !found && (len = getline(&line, &cap, f)) > 0) {
            sr_audit_record_t r;
            if (line[len - 1] == '\n') line[--len] = '\0';
            if (sr_audit_record_parse(line, (size_t)len, &r) == SR_OK && r.seq == seq)
                memcpy(hash, r.hash, SR_AUDIT_HASH_BYTES), found = 1;
        }
        if (f) fclose(f);
    }
    free(line);
    return found;
}

/* --against COPY: the local log and a collector's copy of it, side by side:
 * the seq range either lacks, and whether they agree where both have records. */
static int compare_with_copy(opts_t *o, const uint8_t *pk, const sr_audit_verify_result_t *mine)
{
    sr_audit_verify_result_t copy;
    const char *files[] = {o->against};
    if (sr_audit_verify_files(files, 1, pk, &copy) != SR_OK && copy.error != SR_ERR_AUDIT_UNSEALED) {
        printf("FAIL: the copy %s: %s: %s\n", o->against, copy.where, copy.reason);
        return 1;
    }
    uint64_t shorter = mine->last_seq < copy.last_seq ? mine->last_seq : copy.last_seq;
    uint8_t h[SR_AUDIT_HASH_BYTES];
    const uint8_t *expect = mine->last_seq < copy.last_seq ? mine->last_hash : copy.last_hash;
    int found = mine->last_seq < copy.last_seq ? hash_of((char **)files, 1, shorter, h) : hash_of(o->files, o->nfiles, shorter, h);
    if (shorter && (!found || memcmp(h, expect, sizeof h) != 0)) {
        printf("FAIL: record %llu differs between the log and the copy %s: one of them was rewritten\n",
               (unsigned long long)shorter, o->against);
        return 1;
    }
    if (copy.last_seq > mine->last_seq) {
        printf("FAIL: the log lacks seq %llu..%llu, which the copy %s holds: they were cut from the log's tail\n",
               (unsigned long long)mine->last_seq + 1, (unsigned long long)copy.last_seq, o->against);
        return 1;
    }
    if (mine->last_seq > copy.last_seq)
        printf("the copy %s lacks seq %llu..%llu (not forwarded yet, or cut from the copy)\n", o->against,
               (unsigned long long)copy.last_seq + 1, (unsigned long long)mine->last_seq);
    else
        printf("the copy %s holds the same records (seq %llu..%llu)\n", o->against,
               (unsigned long long)copy.first_seq, (unsigned long long)copy.last_seq);
    return 0;
}

static int cmd_verify(opts_t *o)
{
    if (o->nfiles < 1) return usage();
    uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];
    if (o->key && sr_audit_verify_key_load(o->key, pk) != SR_OK)
        return fprintf(stderr, "tde-audit: %s\n", sr_err_detail()), 2;
    sr_audit_verify_result_t r;
    sr_err_t rc = sr_audit_verify_files((const char *const *)o->files, (size_t)o->nfiles, o->key ? pk : NULL, &r);
    if (rc != SR_OK) {
        printf("FAIL: %s: %s\n", r.where, r.reason);
        return 1;
    }
    printf("chain ok: %llu records (seq %llu..%llu) in %d file(s), %llu checkpoints",
           (unsigned long long)r.records, (unsigned long long)r.first_seq, (unsigned long long)r.last_seq, o->nfiles,
           (unsigned long long)r.checkpoints);
    printf(r.signatures_checked ? ", signatures verified\n" : "\n");
    int status = 0;
    if (!r.signatures_checked) printf("warning: no --key given: checkpoint signatures not checked\n");
    char last[40] = "", sealed[40] = "";
    sr_time_format_rfc3339(r.last_ts_us, 0, last, sizeof last);
    sr_time_format_rfc3339(r.sealed_ts_us, 0, sealed, sizeof sealed);
    if (r.sealed_seq)
        printf("proved: seq 1..%llu, the last sealed by the checkpoint at seq %llu (%s); the log ends at seq %llu (%s). "
               "A cut right after a checkpoint leaves no trace in the log itself: only --min-seq (a seq seen before) "
               "or a collector's copy (--against COPY) shows it\n",
               (unsigned long long)r.sealed_seq, (unsigned long long)r.sealed_seq, sealed, (unsigned long long)r.last_seq,
               last);
    if (r.unsealed) {
        printf("%s: %llu record(s) after the last checkpoint (seq %llu) are not sealed: cutting them from the tail "
               "would leave no trace%s\n", o->strict ? "FAIL" : "warning", (unsigned long long)r.unsealed,
               (unsigned long long)r.sealed_seq, r.ends_sealed ? "" : " (the writer did not close cleanly, or the log was cut)");
        if (o->strict) status = 1;
    }
    if (o->min_seq && r.last_seq < o->min_seq) {
        printf("FAIL: the log ends at seq %llu, but seq %llu was seen before: records were cut from the tail\n",
               (unsigned long long)r.last_seq, (unsigned long long)o->min_seq);
        status = 1;
    }
    if (o->against) status |= compare_with_copy(o, o->key ? pk : NULL, &r);
    if (!status) printf("PASS\n");
    return status;
}

/* ---- search ------------------------------------------------------------------------------- */

typedef int (*record_fn)(void *ctx, const sr_audit_record_t *r, const char *raw);

/* Calls fn for every parsable record of the files (unparsable lines are
 * counted and reported: verify says why). */
static int each_record(opts_t *o, record_fn fn, void *ctx, uint64_t *bad)
{
    char *line = NULL, *copy = NULL;
    size_t cap = 0;
    ssize_t n;
    for (int i = 0; i < o->nfiles; i++) {
        FILE *f = fopen(o->files[i], "r");
        if (!f) return fprintf(stderr, "tde-audit: cannot open %s\n", o->files[i]), 1;
        while ((n = getline(&line, &cap, f)) > 0) {
            if (line[n - 1] == '\n') line[--n] = '\0';
            copy = realloc(copy, (size_t)n + 1);
            memcpy(copy, line, (size_t)n + 1);
            sr_audit_record_t r;
            if (sr_audit_record_parse(line, (size_t)n, &r) != SR_OK) {
                (*bad)++;
                continue;
            }
            fn(ctx, &r, copy);
        }
        fclose(f);
    }
    free(line), free(copy);
    return 0;
}

/* --source: "10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1" or "local".
 * An address that does not parse, or a prefix longer than its family's, is
 * a usage error (it would match nothing and exit 0). */
static int source_filter_parse(const char *text, struct source_filter *f)
{
    char addr[64];
    const char *slash = strchr(text, '/');
    snprintf(addr, sizeof addr, "%.*s", slash ? (int)(slash - text) : (int)strlen(text), text);
    memset(f, 0, sizeof *f);
    if (!slash && strcmp(text, "local") == 0) return 0;
    if (inet_pton(AF_INET, addr, f->net) == 1) f->family = AF_INET, f->bits = 32;
    else if (inet_pton(AF_INET6, addr, f->net) == 1) f->family = AF_INET6, f->bits = 128;
    else return fprintf(stderr, "tde-audit: --source %s: not an IPv4 or IPv6 address, a CIDR prefix or \"local\"\n",
                        text), -1;
    if (slash) {
        int64_t bits = -1;
        int max = f->family == AF_INET ? 32 : 128;
        if (sr_parse_int64(slash + 1, &bits) != SR_OK || bits < 0 || bits > max)
            return fprintf(stderr, "tde-audit: --source %s: the prefix length must be 0..%d\n", text, max), -1;
        f->bits = (int)bits;
    }
    return 0;
}

static int source_matches(const struct source_filter *f, const char *want, const char *addr)
{
    if (!f->family) return strcmp(want, addr) == 0;
    uint8_t a[16];
    if (inet_pton(f->family, addr, a) != 1) return 0;
    for (int bit = 0; bit < f->bits; bit += 8) {
        int n = f->bits - bit >= 8 ? 8 : f->bits - bit;
        uint8_t mask = (uint8_t)(0xff00 >> n);
        if ((a[bit / 8] & mask) != (f->net[bit / 8] & mask)) return 0;
    }
    return 1;
}

static int field_matches(const char *want, const char *have)
{
    if (!want) return 1;
    size_t n = strlen(want);
    if (n && want[n - 1] == '*') return strncmp(want, have, n - 1) == 0; /* "key.*" */
    return strcmp(want, have) == 0;
}

static int record_selected(const opts_t *o, const sr_audit_record_t *r)
{
    return (!o->since || r->ts_us >= o->since) && (!o->until || r->ts_us <= o->until) &&
           field_matches(o->component, r->component) && field_matches(o->event, r->event) &&
           field_matches(o->subject, r->subject) && field_matches(o->object, r->object) &&
           field_matches(o->outcome, r->outcome) && (!o->source || source_matches(&o->source_filter, o->source, r->source));
}

static void csv_field(const char *s, int last)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') putchar('"');
        putchar(*s);
    }
    putchar('"');
    putchar(last ? '\n' : ',');
}

typedef struct search_ctx {
    opts_t *o;
    int mode; /* 0 table, 1 json, 2 csv */
    uint64_t shown;
} search_ctx_t;

static int search_one(void *ctx, const sr_audit_record_t *r, const char *raw)
{
    search_ctx_t *s = ctx;
    if (!record_selected(s->o, r)) return 0;
    s->shown++;
    char ts[40];
    sr_time_format_rfc3339(r->ts_us, 0, ts, sizeof ts);
    if (s->mode == 1) {
        puts(raw);
    } else if (s->mode == 2) {
        printf("%llu,", (unsigned long long)r->seq);
        const char *f[] = {ts, r->host, r->component, r->event, r->subject, r->object, r->outcome, r->source, r->detail};
        for (int i = 0; i < 9; i++) csv_field(f[i], i == 8);
    } else {
        printf("%-7llu %-20s %-10s %-22s %-16.16s %-38.38s %-8s %-15s %.60s\n", (unsigned long long)r->seq, ts,
               r->component, r->event, r->subject, r->object, r->outcome, r->source, r->detail);
    }
    return 0;
}

static int cmd_search(opts_t *o)
{
    if (o->nfiles < 1) return usage();
    const char *fmt = o->format ? o->format : (isatty(STDOUT_FILENO) ? "table" : "json");
    search_ctx_t s = {.o = o, .mode = strcmp(fmt, "json") == 0 ? 1 : strcmp(fmt, "csv") == 0 ? 2 : 0};
    if (s.mode == 0 && strcmp(fmt, "table") != 0) return usage();
    if (s.mode == 2) puts("seq,ts,host,component,event,subject,object,outcome,source,detail");
    if (s.mode == 0)
        printf("%-7s %-20s %-10s %-22s %-16s %-38s %-8s %-15s %s\n", "SEQ", "TIME", "COMPONENT", "EVENT", "SUBJECT",
               "OBJECT", "OUTCOME", "SOURCE", "DETAIL");
    uint64_t bad = 0;
    if (each_record(o, search_one, &s, &bad)) return 1;
    if (bad) fprintf(stderr, "tde-audit: %llu unreadable line(s) skipped: run tde-audit verify\n", (unsigned long long)bad);
    return 0;
}

/* ---- report ------------------------------------------------------------------------------- */

#define TALLY_MAX 4096
typedef struct tally {
    char *key[TALLY_MAX];
    uint64_t n[TALLY_MAX];
    size_t used;
} tally_t;

static void tally_add(tally_t *t, const char *a, const char *b, const char *c)
{
    char k[600];
    snprintf(k, sizeof k, "%-24s %-22s %s", a, b, c);
    for (size_t i = 0; i < t->used; i++)
        if (strcmp(t->key[i], k) == 0) return (void)t->n[i]++;
    if (t->used < TALLY_MAX) t->key[t->used] = strdup(k), t->n[t->used++] = 1;
}

static void tally_print(const char *title, tally_t *t, size_t top)
{
    printf("\n%s\n", title);
    if (!t->used) printf("  (none)\n");
    for (size_t shown = 0; shown < top && shown < t->used; shown++) {
        size_t best = shown;
        for (size_t i = shown + 1; i < t->used; i++)
            if (t->n[i] > t->n[best]) best = i;
        char *k = t->key[best];
        uint64_t n = t->n[best];
        t->key[best] = t->key[shown], t->n[best] = t->n[shown];
        t->key[shown] = k, t->n[shown] = n;
        printf("  %8llu  %s\n", (unsigned long long)n, k);
    }
    for (size_t i = 0; i < t->used; i++) free(t->key[i]);
    t->used = 0;
}

typedef struct report {
    tally_t logins, keys, nodes, refused, events;
    uint64_t records;
    int64_t first, last;
} report_t;

static int refused(const char *outcome) { return strcmp(outcome, "denied") == 0 || strcmp(outcome, "failure") == 0; }

static int report_one(void *ctx, const sr_audit_record_t *r, const char *raw)
{
    (void)raw;
    report_t *rep = ctx;
    if (!rep->records++) rep->first = r->ts_us;
    rep->last = r->ts_us;
    tally_add(&rep->events, r->component, r->event, r->outcome);
    if (strncmp(r->event, "login", 5) == 0) tally_add(&rep->logins, r->subject, r->source, r->outcome);
    if (strncmp(r->event, "key.", 4) == 0 || strncmp(r->event, "tablespace.", 11) == 0)
        tally_add(&rep->keys, r->event, r->subject[0] ? r->subject : r->component, r->outcome);
    if (strncmp(r->event, "node.", 5) == 0) tally_add(&rep->nodes, r->event, r->subject, r->outcome);
    if (refused(r->outcome)) tally_add(&rep->refused, r->source[0] ? r->source : "(local)", r->event, r->subject);
    return 0;
}

static int cmd_report(opts_t *o)
{
    if (o->nfiles < 1) return usage();
    static report_t rep;
    uint64_t bad = 0;
    if (each_record(o, report_one, &rep, &bad)) return 1;
    char a[40] = "-", b[40] = "-";
    if (rep.records) sr_time_format_rfc3339(rep.first, 0, a, sizeof a), sr_time_format_rfc3339(rep.last, 0, b, sizeof b);
    printf("audit report: %llu records, %s .. %s\n", (unsigned long long)rep.records, a, b);
    sr_audit_verify_result_t r;
    if (sr_audit_verify_files((const char *const *)o->files, (size_t)o->nfiles, NULL, &r) == SR_OK)
        printf("chain: intact (%llu checkpoints, %llu unsealed records; signatures: run verify --key)\n",
               (unsigned long long)r.checkpoints, (unsigned long long)r.unsealed);
    else
        printf("chain: BROKEN at %s: %s\n", r.where, r.reason);
    if (bad) printf("unreadable lines: %llu\n", (unsigned long long)bad);
    tally_print("logins (account, source, outcome):", &rep.logins, 20);
    tally_print("key and tablespace operations (operation, principal, outcome):", &rep.keys, 20);
    tally_print("nodes (event, node, outcome):", &rep.nodes, 20);
    tally_print("top refused or failed sources (source, event, subject):", &rep.refused, 10);
    tally_print("all events (component, event, outcome):", &rep.events, 40);
    return 0;
}

static int cmd_append(opts_t *o)
{
    if (!o->log || !o->sign_key || !o->component || !o->event) return usage();
    sr_audit_writer_t *w = NULL;
    sr_audit_options_t ao = {.path = o->log, .signing_key = o->sign_key};
    sr_err_t rc = sr_audit_open(&ao, &w);
    sr_event_t e = {.component = o->component, .event = o->event, .subject = o->subject, .object = o->object,
                    .outcome = o->outcome ? o->outcome : "success", .source = o->source, .detail = o->detail};
    if (rc == SR_OK) rc = sr_audit_append(w, &e);
    sr_err_t close_rc = w ? sr_audit_close(w) : SR_OK;
    if (rc == SR_OK) rc = close_rc;
    if (rc != SR_OK) return fprintf(stderr, "tde-audit: append: %s\n", sr_err_detail()), 1;
    return 0;
}

static volatile int stop_requested;
static void request_stop(int sig) { (void)sig, stop_requested = 1; }

/* "host:port" (the last colon: IPv6 literals keep theirs) */
static int split_host_port(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    int64_t p = 0;
    if (!colon || (size_t)(colon - s) >= cap || sr_parse_int64(colon + 1, &p) != SR_OK || p < 0 || p > 65535) return 0;
    snprintf(host, cap, "%.*s", (int)(colon - s), s);
    *port = (uint16_t)p;
    return 1;
}

static void on_signals(void)
{
    struct sigaction sa = {.sa_handler = request_stop};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int cmd_collect(opts_t *o)
{
    char host[256];
    uint16_t port = 0;
    uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];
    if (!o->dir || !o->tls_ca || !o->tls_cert || !o->tls_key || !split_host_port(o->listen, host, sizeof host, &port))
        return usage();
    if (o->key && sr_audit_verify_key_load(o->key, pk) != SR_OK) return fprintf(stderr, "tde-audit: %s\n", sr_err_detail()), 2;
    sr_log_set_level(SR_LOG_NOTICE);
    on_signals();
    sr_audit_collector_options_t co = {.host = host, .port = port, .dir = o->dir,
                                       .tls = {o->tls_ca, o->tls_cert, o->tls_key}, .verify_key = o->key ? pk : NULL};
    if (sr_audit_collect(&co, &stop_requested) != SR_OK) return fprintf(stderr, "tde-audit: collect: %s\n", sr_err_detail()), 1;
    return 0;
}

/* The host's sealer: the only holder of the signing key; local processes
 * send it events over the socket (STRONGROOM_AUDIT_SOCKET=PATH). */
static int cmd_serve(opts_t *o)
{
    if (!o->socket || !o->log || !o->sign_key) return usage();
    sr_log_set_level(SR_LOG_NOTICE);
    on_signals();
    sr_audit_sealer_options_t so = {.socket_path = o->socket,
                                    .log = {.path = o->log, .signing_key = o->sign_key, .host = NULL}};
    if (sr_audit_serve(&so, &stop_requested) != SR_OK) return fprintf(stderr, "tde-audit: serve: %s\n", sr_err_detail()), 1;
    return 0;
}

static int cmd_forward(opts_t *o)
{
    char host[256];
    uint16_t port = 0;
    if (!o->log || !o->tls_ca || !o->tls_cert || !o->tls_key || !split_host_port(o->to, host, sizeof host, &port))
        return usage();
    on_signals();
    sr_audit_forwarder_options_t fo = {.log = o->log, .host = host, .port = port, .verify_name = o->verify_name,
                                       .tls = {o->tls_ca, o->tls_cert, o->tls_key}, .once = o->once};
    if (sr_audit_forward(&fo, &stop_requested) != SR_OK)
        return fprintf(stderr, "tde-audit: forward: %s\n", sr_err_detail()), 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) return usage();
    static const struct option longopts[] = {
        {"out", 1, 0, 'O'},       {"key", 1, 0, 'k'},     {"strict", 0, 0, 'S'},   {"min-seq", 1, 0, 'm'}, {"against", 1, 0, 'G'}, {"socket", 1, 0, 'U'},
        {"since", 1, 0, 's'},     {"until", 1, 0, 'u'},   {"component", 1, 0, 'c'}, {"event", 1, 0, 'e'},
        {"subject", 1, 0, 'j'},   {"object", 1, 0, 'o'},  {"source", 1, 0, 'r'},   {"outcome", 1, 0, 'x'},
        {"format", 1, 0, 'f'},    {"log", 1, 0, 'l'},     {"sign-key", 1, 0, 'K'}, {"detail", 1, 0, 'd'},
        {"listen", 1, 0, 'L'},    {"to", 1, 0, 'T'},      {"dir", 1, 0, 'D'},      {"tls-ca", 1, 0, 'A'},
        {"tls-cert", 1, 0, 'C'},  {"tls-key", 1, 0, 'Y'}, {"verify-name", 1, 0, 'V'}, {"once", 0, 0, '1'},
        {"help", 0, 0, 'h'},      {0, 0, 0, 0}};
    opts_t o = {0};
    int ch;
    int64_t v;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'O': o.out = optarg; break;
        case 'k': o.key = optarg; break;
        case 'S': o.strict = 1; break;
        case 'm': if (sr_parse_int64(optarg, &v) != SR_OK || v < 0) return usage(); o.min_seq = (uint64_t)v; break;
        case 'G': o.against = optarg; break;
        case 'U': o.socket = optarg; break;
        case 's': if (sr_time_parse_rfc3339(optarg, &o.since) != SR_OK) return usage(); break;
        case 'u': if (sr_time_parse_rfc3339(optarg, &o.until) != SR_OK) return usage(); break;
        case 'c': o.component = optarg; break;
        case 'e': o.event = optarg; break;
        case 'j': o.subject = optarg; break;
        case 'o': o.object = optarg; break;
        case 'r':
            o.source = optarg;
            if (source_filter_parse(optarg, &o.source_filter) != 0) return 2;
            break;
        case 'x': o.outcome = optarg; break;
        case 'f': o.format = optarg; break;
        case 'l': o.log = optarg; break;
        case 'K': o.sign_key = optarg; break;
        case 'd': o.detail = optarg; break;
        case 'L': o.listen = optarg; break;
        case 'T': o.to = optarg; break;
        case 'D': o.dir = optarg; break;
        case 'A': o.tls_ca = optarg; break;
        case 'C': o.tls_cert = optarg; break;
        case 'Y': o.tls_key = optarg; break;
        case 'V': o.verify_name = optarg; break;
        case '1': o.once = 1; break;
        default: return usage();
        }
    }
    o.nfiles = argc - optind;
    o.files = argv + optind;
    sr_log_set_level(SR_LOG_WARN);
    if (sr_process_harden() != SR_OK) { /* no core dumps, no ptrace by other users: it holds the signing key */
        fprintf(stderr, "tde-audit: %s (%s)\n", sr_err_detail(), sr_err_name(sr_err_last()));
        return 1;
    }
    static const struct { const char *name; int (*run)(opts_t *); } cmds[] = {
        {"keygen", cmd_keygen}, {"verify", cmd_verify}, {"search", cmd_search},
        {"report", cmd_report}, {"append", cmd_append}, {"collect", cmd_collect}, {"forward", cmd_forward},
        {"serve", cmd_serve}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0) return cmds[i].run(&o);
    fprintf(stderr, "tde-audit: unknown command '%s'\n", argv[1]);
    return usage();
}
