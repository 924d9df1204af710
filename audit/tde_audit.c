/*
 * tde-audit — the security reviewer's tool for strongroom audit logs.
 *
 *   tde-audit keygen PREFIX                       PREFIX.sign (writer, 0600) + PREFIX.pub (reviewers)
 *   tde-audit verify [--verify-key PUB] [--strict] [--min-seq N] [--against COPY] [--json] FILES...
 *   tde-audit search [FILTERS] [--format table|json|csv] FILES...
 *   tde-audit report [--json] FILES...
 *   tde-audit append --log FILE --sign-key SIGN --component C --event E [--subject ..] [--object ..]
 *                    [--outcome ..] [--source ..] [--detail ..]
 *   tde-audit collect --listen HOST:PORT --dir DIR --tls-ca CA --tls-cert CERT --tls-key KEY [--verify-key PUB]
 *   tde-audit forward --log FILE --to HOST:PORT --tls-ca CA --tls-cert CERT --tls-key KEY [--verify-name N] [--once]
 *   tde-audit register --dir DIR --cert CERT --verify-key PUB
 * The key options say which key: --verify-key (public, for reviewers),
 * --sign-key (the sealer's), --tls-key (TLS); --key and keygen --out PREFIX
 * are the older spellings, still accepted.
 *   tde-audit events [--json]
 *   tde-audit serve --socket PATH --log FILE --sign-key KEY
 *
 * FILES are a log's files oldest first (rotated files sort by name:
 * audit.log.* then audit.log). Exit status (every strongroom tool): 0 ok,
 * 1 a check failed (tampering), 2 usage, 3 could not check (a missing file,
 * a bad key, I/O).
 */
#include "audit_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct command command_t;
static const command_t *command_find(const char *name);
static int usage_of(const command_t *cmd, FILE *to, int status);
static int usage(void) { return usage_of(NULL, stderr, SR_EXIT_USAGE); }

typedef struct opts {
    const char *out, *key, *log, *sign_key, *format;
    int strict;
    uint64_t min_seq;
    int64_t since, until;
    const char *component, *event, *subject, *object, *source, *outcome, *detail;
    const char *listen, *to, *dir, *tls_ca, *tls_cert, *tls_key, *verify_name, *against, *socket, *cert;
    int once, json, require_key;
    int nfiles;
    char **files;
    struct source_filter {
        int family;      /* AF_INET, AF_INET6; 0: a word such as "local", matched exactly */
        uint8_t net[16];
        int bits;        /* prefix length */
    } source_filter;
} opts_t;

/* "tde-audit: what: detail (SR_ERR_NAME)" on stderr; exit status 3. */
static int cannot(const char *what)
{
    fprintf(stderr, "tde-audit: %s: %s (%s)\n", what, sr_err_detail(), sr_err_name(sr_err_last()));
    return SR_EXIT_CANNOT;
}

static int missing(const char *cmd, const char *what)
{
    fprintf(stderr, "tde-audit: %s: %s is required (tde-audit %s --help)\n", cmd, what, cmd);
    return SR_EXIT_USAGE;
}

static int cmd_keygen(opts_t *o)
{
    if (!o->out) return missing("keygen", "PREFIX");
    sr_err_t rc = sr_audit_keygen(o->out);
    if (rc != SR_OK) return cannot("keygen");
    uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];
    char path[4096], id[17];
    snprintf(path, sizeof path, "%s.pub", o->out);
    if (sr_audit_verify_key_load(path, pk) != SR_OK) return cannot("keygen");
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

/* What verify found, said as it goes (text) or gathered for --json. */
typedef struct findings {
    int json;
    struct finding { const char *level; char text[1024]; } item[16];
    int n;
} findings_t;

static void say(findings_t *f, const char *level /* "error" (could not check), "fail", "warning", "info" */, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(findings_t *f, const char *level, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (!f->json && !strcmp(level, "error")) {
        fprintf(stderr, "tde-audit: verify: cannot check: %s\n", text);
    } else if (!f->json) {
        printf("%s%s\n", !strcmp(level, "fail") ? "FAIL: " : !strcmp(level, "warning") ? "warning: " : "", text);
    } else if (f->n < (int)(sizeof f->item / sizeof f->item[0])) {
        f->item[f->n].level = level;
        snprintf(f->item[f->n++].text, sizeof f->item[0].text, "%s", text);
    }
}

/* --against COPY: the local log and a collector's copy of it, side by side:
 * the seq range either lacks, and whether they agree where both have records. */
static int compare_with_copy(opts_t *o, const uint8_t *pk, const sr_audit_verify_result_t *mine, findings_t *f)
{
    sr_audit_verify_result_t copy;
    const char *files[] = {o->against};
    if (sr_audit_verify_files(files, 1, pk, &copy) != SR_OK && copy.error != SR_ERR_AUDIT_UNSEALED) {
        int cannot_read = copy.error == SR_ERR_IO || copy.error == SR_ERR_NOT_FOUND;
        say(f, cannot_read ? "error" : "fail", "the copy %s: %s: %s", o->against, copy.where, copy.reason);
        return cannot_read ? SR_EXIT_CANNOT : SR_EXIT_FAILED;
    }
    uint64_t shorter = mine->last_seq < copy.last_seq ? mine->last_seq : copy.last_seq;
    uint8_t h[SR_AUDIT_HASH_BYTES];
    const uint8_t *expect = mine->last_seq < copy.last_seq ? mine->last_hash : copy.last_hash;
    int found = mine->last_seq < copy.last_seq ? hash_of((char **)files, 1, shorter, h) : hash_of(o->files, o->nfiles, shorter, h);
    if (shorter && (!found || memcmp(h, expect, sizeof h) != 0)) {
        say(f, "fail", "record %llu differs between the log and the copy %s: one of them was rewritten",
            (unsigned long long)shorter, o->against);
        return SR_EXIT_FAILED;
    }
    if (copy.last_seq > mine->last_seq) {
        say(f, "fail", "the log lacks seq %llu..%llu, which the copy %s holds: they were cut from the log's tail",
            (unsigned long long)mine->last_seq + 1, (unsigned long long)copy.last_seq, o->against);
        return SR_EXIT_FAILED;
    }
    if (mine->last_seq > copy.last_seq)
        say(f, "info", "the copy %s lacks seq %llu..%llu (not forwarded yet, or cut from the copy)", o->against,
            (unsigned long long)copy.last_seq + 1, (unsigned long long)mine->last_seq);
    else
        say(f, "info", "the copy %s holds the same records (seq %llu..%llu)", o->against,
            (unsigned long long)copy.first_seq, (unsigned long long)copy.last_seq);
    return SR_EXIT_OK;
}

/* --json: one object (docs/audit.md gives its shape). */
static void verify_json(const opts_t *o, const sr_audit_verify_result_t *r, int checked, int status,
                        const findings_t *f)
{
    char last[40] = "", sealed[40] = "";
    if (r->last_ts_us) sr_time_format_rfc3339(r->last_ts_us, 0, last, sizeof last);
    if (r->sealed_ts_us) sr_time_format_rfc3339(r->sealed_ts_us, 0, sealed, sizeof sealed);
    printf("{\"result\": \"%s\", \"files\": [", status == SR_EXIT_OK ? "pass" : status == SR_EXIT_FAILED ? "fail" : "error");
    for (int i = 0; i < o->nfiles; i++) printf(i ? ", " : ""), sr_json_string(stdout, o->files[i]);
    printf("]");
    if (checked)
        printf(", \"records\": %llu, \"first_seq\": %llu, \"last_seq\": %llu, \"last_time\": \"%s\", "
               "\"checkpoints\": %llu, \"signatures_checked\": %s, \"sealed_seq\": %llu, \"sealed_time\": \"%s\", "
               "\"unsealed\": %llu",
               (unsigned long long)r->records, (unsigned long long)r->first_seq, (unsigned long long)r->last_seq, last,
               (unsigned long long)r->checkpoints, r->signatures_checked ? "true" : "false",
               (unsigned long long)r->sealed_seq, sealed, (unsigned long long)r->unsealed);
    printf(", \"findings\": [");
    for (int i = 0; i < f->n; i++) {
        printf("%s{\"level\": \"%s\", \"text\": ", i ? ", " : "", f->item[i].level);
        sr_json_string(stdout, f->item[i].text);
        printf("}");
    }
    printf("]}\n");
}

static int cmd_verify(opts_t *o)
{
    if (o->nfiles < 1) return usage_of(command_find("verify"), stderr, SR_EXIT_USAGE);
    uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];
    if (o->key && sr_audit_verify_key_load(o->key, pk) != SR_OK) return cannot("--key");
    findings_t f = {.json = o->json};
    sr_audit_verify_result_t r;
    sr_err_t rc = sr_audit_verify_files((const char *const *)o->files, (size_t)o->nfiles, o->key ? pk : NULL, &r);
    if (rc != SR_OK) { /* a file that cannot be read could not be checked; anything else is a failed check */
        int status = r.error == SR_ERR_IO || r.error == SR_ERR_NOT_FOUND ? SR_EXIT_CANNOT : SR_EXIT_FAILED;
        say(&f, status == SR_EXIT_CANNOT ? "error" : "fail", "%s: %s", r.where, r.reason);
        if (o->json) verify_json(o, &r, 0, status, &f);
        return status;
    }
    if (!o->json)
        printf("chain ok: %llu records (seq %llu..%llu) in %d file(s), %llu checkpoints%s\n",
               (unsigned long long)r.records, (unsigned long long)r.first_seq, (unsigned long long)r.last_seq,
               o->nfiles, (unsigned long long)r.checkpoints, r.signatures_checked ? ", signatures verified" : "");
    int status = SR_EXIT_OK;
    if (!r.signatures_checked) say(&f, "warning", "no --key given: checkpoint signatures not checked");
    char last[40] = "", sealed[40] = "";
    sr_time_format_rfc3339(r.last_ts_us, 0, last, sizeof last);
    sr_time_format_rfc3339(r.sealed_ts_us, 0, sealed, sizeof sealed);
    if (r.sealed_seq)
        say(&f, "info", "proved: seq 1..%llu, the last sealed by the checkpoint at seq %llu (%s); the log ends at seq "
            "%llu (%s). A cut right after a checkpoint leaves no trace in the log itself: only --min-seq (a seq seen "
            "before) or a collector's copy (--against COPY) shows it",
            (unsigned long long)r.sealed_seq, (unsigned long long)r.sealed_seq, sealed, (unsigned long long)r.last_seq,
            last);
    if (r.unsealed) {
        say(&f, o->strict ? "fail" : "warning", "%llu record(s) after the last checkpoint (seq %llu) are not sealed: "
            "cutting them from the tail would leave no trace%s", (unsigned long long)r.unsealed,
            (unsigned long long)r.sealed_seq,
            r.ends_sealed ? "" : " (the writer did not close cleanly, or the log was cut)");
        if (o->strict) status = SR_EXIT_FAILED;
    }
    if (o->min_seq && r.last_seq < o->min_seq) {
        say(&f, "fail", "the log ends at seq %llu, but seq %llu was seen before: records were cut from the tail",
            (unsigned long long)r.last_seq, (unsigned long long)o->min_seq);
        status = SR_EXIT_FAILED;
    }
    if (o->against) {
        int copy_status = compare_with_copy(o, o->key ? pk : NULL, &r, &f);
        if (copy_status > status) status = copy_status;
    }
    if (o->json) verify_json(o, &r, 1, status, &f);
    else if (status == SR_EXIT_OK) printf("PASS\n");
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
        if (!f) {
            sr_err_set_errno(SR_ERR_IO, errno, "cannot open %s", o->files[i]);
            free(line), free(copy);
            return cannot(o->files[i]);
        }
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

/* The principal a component named in a record the sealer wrote: the detail's
 * "claimed subject: X; ..." (the sealer's own subject is the sending process).
 * Its length (0: none), *claim at its start. */
static size_t claim_of(const char *detail, const char **claim)
{
    static const char claimed[] = "claimed subject: ";
    if (strncmp(detail, claimed, sizeof claimed - 1) != 0) return 0;
    *claim = detail + sizeof claimed - 1;
    const char *end = strstr(*claim, "; ");
    return end ? (size_t)(end - *claim) : strlen(*claim);
}

/* --subject: the record's subject, or the principal its component claimed
 * (search --subject alice finds alice's logins, which a sealer records as
 * sent by the PostgreSQL backend). */
static int subject_matches(const char *want, const sr_audit_record_t *r)
{
    if (field_matches(want, r->subject)) return 1; /* no --subject: every record, nothing more to read */
    const char *claim = NULL;
    size_t n = claim_of(r->detail, &claim);
    char named[1024];
    snprintf(named, sizeof named, "%.*s", (int)n, n ? claim : "");
    return n && field_matches(want, named);
}

static int record_selected(const opts_t *o, const sr_audit_record_t *r)
{
    return (!o->since || r->ts_us >= o->since) && (!o->until || r->ts_us <= o->until) &&
           field_matches(o->component, r->component) && field_matches(o->event, r->event) &&
           subject_matches(o->subject, r) && field_matches(o->object, r->object) &&
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

/* text in a table column of `width`: cut ones end with '~' (never silently). */
static const char *cell(const char *text, int width, char *out, size_t cap)
{
    if ((int)strlen(text) <= width) return text;
    snprintf(out, cap, "%.*s~", width - 1, text);
    return out;
}

/* The kernel's view of a process ("uid=U gid=G pid=P exe=PATH") as "uid=U pid=P" for a table (the
 * rest is in the json and csv forms); another subject as it is. */
static const char *table_subject(const char *subject, char *out, size_t cap)
{
    const char *pid = strstr(subject, " pid=");
    if (strncmp(subject, "uid=", 4) != 0 || !pid) return subject;
    snprintf(out, cap, "%.*s%.*s", (int)strcspn(subject, " "), subject, (int)strcspn(pid + 1, " ") + 1, pid);
    return out;
}

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
        char subject[256], subject_cell[32], object_cell[40], source_cell[24], detail_cell[64];
        const char *who = table_subject(r->subject, subject, sizeof subject);
        printf("%-7llu %-20s %-10s %-22s %-20s %-38s %-8s %-15s %s\n", (unsigned long long)r->seq, ts, r->component,
               r->event, cell(who, 20, subject_cell, sizeof subject_cell),
               cell(r->object, 38, object_cell, sizeof object_cell), r->outcome,
               cell(r->source, 15, source_cell, sizeof source_cell),
               cell(r->detail, 60, detail_cell, sizeof detail_cell));
    }
    return 0;
}

static int cmd_search(opts_t *o)
{
    if (o->nfiles < 1) return usage_of(command_find("search"), stderr, SR_EXIT_USAGE);
    const char *fmt = o->format ? o->format : "table"; /* stated, never guessed from the terminal */
    search_ctx_t s = {.o = o, .mode = strcmp(fmt, "json") == 0 ? 1 : strcmp(fmt, "csv") == 0 ? 2 : 0};
    if (s.mode == 0 && strcmp(fmt, "table") != 0)
        return fprintf(stderr, "tde-audit: search: --format %s: table, json or csv\n", fmt), SR_EXIT_USAGE;
    if (s.mode == 2) puts("seq,ts,host,component,event,subject,object,outcome,source,detail");
    if (s.mode == 0)
        printf("%-7s %-20s %-10s %-22s %-20s %-38s %-8s %-15s %s\n", "SEQ", "TIME", "COMPONENT", "EVENT", "SUBJECT",
               "OBJECT", "OUTCOME", "SOURCE", "DETAIL");
    uint64_t bad = 0;
    int status = each_record(o, search_one, &s, &bad);
    if (status) return status;
    if (bad) fprintf(stderr, "tde-audit: %llu unreadable line(s) skipped: run tde-audit verify\n", (unsigned long long)bad);
    return 0;
}

/* ---- report ------------------------------------------------------------------------------- */

#define TALLY_MAX 4096
typedef struct tally {
    const char *name, *title, *field[3]; /* JSON member, heading, the three fields counted together */
    size_t top;                          /* how many rows are shown */
    char *key[TALLY_MAX][3];
    uint64_t n[TALLY_MAX];
    size_t used;
} tally_t;

static void tally_add(tally_t *t, const char *a, const char *b, const char *c)
{
    for (size_t i = 0; i < t->used; i++)
        if (!strcmp(t->key[i][0], a) && !strcmp(t->key[i][1], b) && !strcmp(t->key[i][2], c)) return (void)t->n[i]++;
    if (t->used < TALLY_MAX) {
        t->key[t->used][0] = strdup(a), t->key[t->used][1] = strdup(b), t->key[t->used][2] = strdup(c);
        t->n[t->used++] = 1;
    }
}

/* The top rows, most frequent first; then the tally is emptied. */
static void tally_print(tally_t *t, int json, int first)
{
    if (json) printf("%s\"%s\": [", first ? "" : ", ", t->name);
    else printf("\n%s (%s, %s, %s):\n%s", t->title, t->field[0], t->field[1], t->field[2], t->used ? "" : "  (none)\n");
    for (size_t shown = 0; shown < t->top && shown < t->used; shown++) {
        size_t best = shown;
        for (size_t i = shown + 1; i < t->used; i++)
            if (t->n[i] > t->n[best]) best = i;
        char *k[3] = {t->key[best][0], t->key[best][1], t->key[best][2]};
        uint64_t n = t->n[best];
        memcpy(t->key[best], t->key[shown], sizeof k), t->n[best] = t->n[shown];
        memcpy(t->key[shown], k, sizeof k), t->n[shown] = n;
        if (!json) {
            printf("  %8llu  %-24s %-22s %s\n", (unsigned long long)n, k[0], k[1], k[2]);
            continue;
        }
        printf("%s{", shown ? ", " : "");
        for (int f = 0; f < 3; f++) printf("\"%s\": ", t->field[f]), sr_json_string(stdout, k[f]), printf(", ");
        printf("\"count\": %llu}", (unsigned long long)n);
    }
    if (json) printf("]");
    for (size_t i = 0; i < t->used; i++) free(t->key[i][0]), free(t->key[i][1]), free(t->key[i][2]);
    t->used = 0;
}

typedef struct report {
    tally_t logins, keys, nodes, refused, events;
    uint64_t records;
    int64_t first, last;
} report_t;

static int refused(const char *outcome) { return strcmp(outcome, "denied") == 0 || strcmp(outcome, "failure") == 0; }

/* A process as its record names it, without what varies per process:
 * "uid=U gid=G pid=P exe=PATH" (the sealer's) or "uid=U pid=P" (tde's, to
 * the direct writer) is "uid=U PATH" or "uid=U"; anything else as it is. */
static void process_of(const char *subject, size_t len, char *out, size_t cap)
{
    unsigned uid = 0;
    int used = 0;
    char head[32];
    snprintf(head, sizeof head, "%.*s", (int)(len < sizeof head - 1 ? len : sizeof head - 1), subject);
    if (sscanf(head, "uid=%u%n", &uid, &used) != 1 || (head[used] != ' ' && head[used] != '\0'))
        return (void)snprintf(out, cap, "%.*s", (int)len, subject);
    const char *exe = memmem(subject, len, " exe=", 5);
    if (!exe) return (void)snprintf(out, cap, "uid=%u", uid);
    exe += 5;
    snprintf(out, cap, "uid=%u %.*s", uid, (int)(len - (size_t)(exe - subject)), exe);
}

/* Who a record is about, for the report's rows: the principal the component
 * named (the account logging in, the KMIP client, the node, the process that
 * asked the agent: a "claimed subject" once a sealer wrote the record) with
 * the process that said so as the kernel saw it — "alice (uid=101
 * /usr/lib/postgresql/15/bin/postgres)" — or that process alone. */
static void who(const sr_audit_record_t *r, char *out, size_t cap)
{
    char sender[700];
    process_of(r->subject, strlen(r->subject), sender, sizeof sender);
    const char *claim = NULL;
    size_t len = claim_of(r->detail, &claim);
    if (!len) return (void)snprintf(out, cap, "%s", sender[0] ? sender : r->component);
    char principal[700];
    process_of(claim, len, principal, sizeof principal);
    size_t n = strlen(principal);
    if (!strncmp(sender, principal, n) && (sender[n] == ' ' || !sender[n])) /* the sender, less precisely */
        return (void)snprintf(out, cap, "%s", sender);
    snprintf(out, cap, "%s (%s)", principal, sender);
}

static int report_one(void *ctx, const sr_audit_record_t *r, const char *raw)
{
    (void)raw;
    report_t *rep = ctx;
    if (!rep->records++) rep->first = r->ts_us;
    rep->last = r->ts_us;
    tally_add(&rep->events, r->component, r->event, r->outcome);
    int login = strncmp(r->event, "login", 5) == 0, node = strncmp(r->event, "node.", 5) == 0;
    int key = strncmp(r->event, "key.", 4) == 0 || strncmp(r->event, "tablespace.", 11) == 0, bad = refused(r->outcome);
    if (!login && !node && !bad && !key) return 0; /* counted among the events only: no one to name */
    char name[1500];
    who(r, name, sizeof name);
    if (login) tally_add(&rep->logins, name, r->source, r->outcome);
    if (key) tally_add(&rep->keys, r->event, name, r->outcome);
    if (node) tally_add(&rep->nodes, r->event, name, r->outcome);
    if (bad) tally_add(&rep->refused, r->source[0] ? r->source : "(local)", r->event, name);
    return 0;
}

static int cmd_report(opts_t *o)
{
    if (o->nfiles < 1) return usage_of(command_find("report"), stderr, SR_EXIT_USAGE);
    static report_t rep = {
        .logins = {.name = "logins", .title = "logins", .field = {"account", "source", "outcome"}, .top = 20},
        .keys = {.name = "key_operations", .title = "key and tablespace operations",
                 .field = {"operation", "principal", "outcome"}, .top = 20},
        .nodes = {.name = "nodes", .title = "nodes", .field = {"event", "node", "outcome"}, .top = 20},
        .refused = {.name = "refused", .title = "top refused or failed sources",
                    .field = {"source", "event", "subject"}, .top = 10},
        .events = {.name = "events", .title = "all events", .field = {"component", "event", "outcome"}, .top = 40}};
    uint64_t bad = 0;
    int status = each_record(o, report_one, &rep, &bad);
    if (status) return status;
    char a[40] = "", b[40] = "";
    if (rep.records) sr_time_format_rfc3339(rep.first, 0, a, sizeof a), sr_time_format_rfc3339(rep.last, 0, b, sizeof b);
    sr_audit_verify_result_t r;
    int intact = sr_audit_verify_files((const char *const *)o->files, (size_t)o->nfiles, NULL, &r) == SR_OK;
    if (o->json) {
        printf("{\"records\": %llu, \"first_time\": \"%s\", \"last_time\": \"%s\", \"unreadable_lines\": %llu, "
               "\"chain\": {\"intact\": %s", (unsigned long long)rep.records, a, b, (unsigned long long)bad,
               intact ? "true" : "false");
        if (intact) printf(", \"checkpoints\": %llu, \"unsealed\": %llu}", (unsigned long long)r.checkpoints,
                           (unsigned long long)r.unsealed);
        else printf(", \"where\": "), sr_json_string(stdout, r.where), printf(", \"reason\": "),
             sr_json_string(stdout, r.reason), printf("}");
        printf(", ");
    } else {
        printf("audit report: %llu records, %s .. %s\n", (unsigned long long)rep.records, rep.records ? a : "-",
               rep.records ? b : "-");
        if (intact)
            printf("chain: intact (%llu checkpoints, %llu unsealed records; signatures: run verify --verify-key PUB)\n",
                   (unsigned long long)r.checkpoints, (unsigned long long)r.unsealed);
        else
            printf("chain: BROKEN at %s: %s\n", r.where, r.reason);
        if (bad) printf("unreadable lines: %llu\n", (unsigned long long)bad);
    }
    tally_t *tallies[] = {&rep.logins, &rep.keys, &rep.nodes, &rep.refused, &rep.events};
    for (size_t i = 0; i < sizeof tallies / sizeof tallies[0]; i++) tally_print(tallies[i], o->json, i == 0);
    if (o->json) printf("}\n");
    return SR_EXIT_OK;
}

static int cmd_append(opts_t *o)
{
    if (!o->log || !o->sign_key || !o->component || !o->event)
        return missing("append", "--log, --sign-key, --component and --event");
    sr_audit_writer_t *w = NULL;
    sr_audit_options_t ao = {.path = o->log, .signing_key = o->sign_key};
    sr_err_t rc = sr_audit_open(&ao, &w);
    sr_event_t e = {.component = o->component, .event = o->event, .subject = o->subject, .object = o->object,
                    .outcome = o->outcome ? o->outcome : "success", .source = o->source, .detail = o->detail};
    if (rc == SR_OK) rc = sr_audit_append(w, &e);
    sr_err_t close_rc = w ? sr_audit_close(w) : SR_OK;
    if (rc == SR_OK) rc = close_rc;
    return rc == SR_OK ? SR_EXIT_OK : cannot("append");
}

static volatile int stop_requested;
static void request_stop(int sig) { (void)sig, stop_requested = 1; }

/* "host:port" (the last colon: IPv6 literals keep theirs) */
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
    if (!o->listen || !o->dir || !o->tls_ca || !o->tls_cert || !o->tls_key)
        return missing("collect", "--listen, --dir, --tls-ca, --tls-cert and --tls-key");
    if (sr_parse_host_port(o->listen, host, sizeof host, &port) != SR_OK)
        return fprintf(stderr, "tde-audit: collect: --listen: %s\n", sr_err_detail()), SR_EXIT_USAGE;
    if (o->key && sr_audit_verify_key_load(o->key, pk) != SR_OK) return cannot("--key");
    sr_log_set_level(SR_LOG_NOTICE);
    on_signals();
    sr_audit_collector_options_t co = {.host = host, .port = port, .dir = o->dir,
                                       .tls = {.ca_file = o->tls_ca, .cert_file = o->tls_cert, .key_file = o->tls_key}, .verify_key = o->key ? pk : NULL,
                                       .require_key = o->require_key};
    return sr_audit_collect(&co, &stop_requested) == SR_OK ? SR_EXIT_OK : cannot("collect");
}

/* src to dst through a temporary file and a rename: a reader sees the old
 * file or the new one, never half of it. */
static sr_err_t copy_small_file(const char *src, const char *dst)
{
    char *text = NULL;
    size_t n = 0;
    sr_err_t rc = sr_file_read_all(src, 4096, &text, &n);
    if (rc == SR_OK) rc = sr_file_write_atomic(dst, text, n, 0644, 0);
    free(text);
    return rc;
}

/* A source's own verify key, registered in the collector's store under the
 * fingerprint of the certificate it forwards with (DIR/<fingerprint>.pub):
 * its checkpoints are then verified with it, from its next connection. */
static int cmd_register(opts_t *o)
{
    if (!o->dir || !o->cert || !o->key) return missing("register", "--dir, --cert and --key");
    uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];
    char fingerprint[65], path[4200], id[17];
    if (sr_audit_verify_key_load(o->key, pk) != SR_OK) return cannot("--key");
    if (sr_tls_cert_file_fingerprint(o->cert, fingerprint) != SR_OK) return cannot("--cert");
    snprintf(path, sizeof path, "%s/%s.pub", o->dir, fingerprint);
    if (copy_small_file(o->key, path) != SR_OK) return cannot("register");
    sr_audit_key_id(pk, id);
    printf("%s: the checkpoints of the source with certificate %s (%s) must be signed by audit key %s\n", o->dir,
           o->cert, fingerprint, id);
    return SR_EXIT_OK;
}

/* The host's sealer: the only holder of the signing key; local processes
 * send it events over the socket (STRONGROOM_AUDIT_SOCKET=PATH). */
static int cmd_serve(opts_t *o)
{
    if (!o->socket || !o->log || !o->sign_key) return missing("serve", "--socket, --log and --sign-key");
    sr_log_set_level(SR_LOG_NOTICE);
    on_signals();
    sr_audit_sealer_options_t so = {.socket_path = o->socket,
                                    .log = {.path = o->log, .signing_key = o->sign_key, .host = NULL}};
    return sr_audit_serve(&so, &stop_requested) == SR_OK ? SR_EXIT_OK : cannot("serve");
}

static int cmd_forward(opts_t *o)
{
    char host[256];
    uint16_t port = 0;
    if (!o->log || !o->to || !o->tls_ca || !o->tls_cert || !o->tls_key)
        return missing("forward", "--log, --to, --tls-ca, --tls-cert and --tls-key");
    if (sr_parse_host_port(o->to, host, sizeof host, &port) != SR_OK)
        return fprintf(stderr, "tde-audit: forward: --to: %s\n", sr_err_detail()), SR_EXIT_USAGE;
    on_signals();
    sr_audit_forwarder_options_t fo = {.log = o->log, .host = host, .port = port, .verify_name = o->verify_name,
                                       .tls = {.ca_file = o->tls_ca, .cert_file = o->tls_cert, .key_file = o->tls_key}, .once = o->once};
    if (sr_audit_forward(&fo, &stop_requested) == SR_OK) return SR_EXIT_OK;
    int refused = sr_err_last() == SR_ERR_AUDIT_CHAIN; /* the collector refused a record, or the chains diverge */
    int status = cannot("forward");
    return refused ? SR_EXIT_FAILED : status;
}

/* The event vocabulary: what every component emits and what its fields hold
 * (docs/audit.md holds the same table). */
static int cmd_events(opts_t *o)
{
    size_t n = 0;
    const sr_event_spec_t *v = sr_event_vocabulary(&n);
    if (o->json) printf("{\"events\": [");
    else printf("| component | event | subject | object | when |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        if (!o->json) {
            printf("| %s | `%s` | %s | %s | %s |\n", v[i].component, v[i].event, v[i].subject, v[i].object, v[i].when);
            continue;
        }
        const char *name[] = {"component", "event", "subject", "object", "when"};
        const char *value[] = {v[i].component, v[i].event, v[i].subject, v[i].object, v[i].when};
        printf("%s{", i ? ", " : "");
        for (int f = 0; f < 5; f++) printf("%s\"%s\": ", f ? ", " : "", name[f]), sr_json_string(stdout, value[f]);
        printf("}");
    }
    if (o->json) printf("]}\n");
    return SR_EXIT_OK;
}

/* ---- commands and their options --------------------------------------------------------------- */

struct command {
    const char *name;
    int (*run)(opts_t *o);
    const char *options; /* the long options that apply to it, each followed by a space */
    const char *synopsis;
};

static const command_t commands[] = {
    {"keygen", cmd_keygen, "out ", "keygen PREFIX   (or --out PREFIX)\n"
     "    a signing key PREFIX.sign (0600, for the sealer) and its verify key PREFIX.pub (for reviewers)\n"},
    {"verify", cmd_verify, "verify-key key strict min-seq against json ",
     "verify [--verify-key PUB] [--strict] [--min-seq N] [--against COPY] [--json] FILES...\n"
     "    prove no record was altered, removed, inserted or reordered; --strict: unsealed records fail;\n"
     "    --min-seq: a seq seen before must still be there; --against: compare with a collector's copy\n"},
    {"search", cmd_search, "since until component event subject object source outcome format ",
     "search [--since T] [--until T] [--component C] [--event E] [--subject S] [--object O]\n"
     "       [--source IP|CIDR|local] [--outcome R] [--format table|json|csv] FILES...\n"
     "    the records that match every filter (E, S, O, C ending in '*' match a prefix; S: the sender or the\n"
     "    principal its component claimed, e.g. the account logging in); table by default\n"},
    {"report", cmd_report, "json ", "report [--json] FILES...\n"
     "    logins, key operations, nodes, refusals and the chain's state\n"},
    {"append", cmd_append, "log sign-key component event subject object outcome source detail ",
     "append --log FILE --sign-key SIGN --component C --event E [--subject S] [--object O] [--outcome R]\n"
     "       [--source IP] [--detail D]\n"
     "    one record, written directly (single-process tools and tests; hosts run a sealer)\n"},
    {"serve", cmd_serve, "socket log sign-key ", "serve --socket PATH --log FILE --sign-key SIGN\n"
     "    the host's sealer: the only holder of the signing key; processes with STRONGROOM_AUDIT_SOCKET=PATH\n"
     "    send it their events (the subject is the kernel's view of the sender)\n"},
    {"collect", cmd_collect, "listen dir tls-ca tls-cert tls-key verify-key key require-key ",
     "collect --listen HOST:PORT --dir DIR --tls-ca CA --tls-cert CERT --tls-key KEY [--verify-key PUB]\n"
     "        [--require-key]\n"
     "    receive forwarded logs (mutual TLS), one verified file per client certificate; a source's checkpoints\n"
     "    are verified with its registered key (register), else --verify-key; --require-key refuses sources with none\n"},
    {"events", cmd_events, "json ", "events [--json]\n"
     "    the event vocabulary: every event strongroom emits, what its subject and object hold, when\n"},
    {"register", cmd_register, "dir cert verify-key key ", "register --dir DIR --cert CERT --verify-key PUB\n"
     "    the verify key of the source that forwards with certificate CERT, kept in the collector's store\n"},
    {"forward", cmd_forward, "log to tls-ca tls-cert tls-key verify-name once ",
     "forward --log FILE --to HOST:PORT --tls-ca CA --tls-cert CERT --tls-key KEY [--verify-name N] [--once]\n"
     "    send the log's records the collector lacks; keep following it (retrying) unless --once\n"},
};

static const command_t *command_find(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(name, commands[i].name) == 0) return &commands[i];
    return NULL;
}

static int usage_of(const command_t *cmd, FILE *to, int status)
{
    if (cmd) {
        fprintf(to, "usage: tde-audit %s", cmd->synopsis);
    } else {
        fputs("usage: tde-audit COMMAND [OPTIONS] [FILES...]   (tde-audit COMMAND --help for one)\n", to);
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(to, "  %s", commands[i].synopsis);
        fputs("FILES: a log's files, oldest first (audit.log.* audit.log). T: RFC 3339 (2026-11-24T10:00:00Z).\n", to);
    }
    fputs("exit status: 0 ok, 1 a check failed (tampering), 2 usage, 3 could not check (missing file, bad key, I/O)\n",
          to);
    return status;
}

static int applies(const command_t *cmd, const char *option)
{
    size_t n = strlen(option);
    for (const char *p = cmd->options; (p = strstr(p, option)); p += n)
        if ((p == cmd->options || p[-1] == ' ') && p[n] == ' ') return 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage();
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) return usage_of(NULL, stdout, SR_EXIT_OK);
    if (strcmp(argv[1], "--version") == 0) return puts("tde-audit (strongroom)"), SR_EXIT_OK;
    const command_t *cmd = command_find(argv[1]);
    if (!cmd) return fprintf(stderr, "tde-audit: unknown command '%s'\n", argv[1]), usage();
    static const struct option longopts[] = {
        {"out", 1, 0, 'O'},       {"key", 1, 0, 'k'},     {"verify-key", 1, 0, 'k'},     {"strict", 0, 0, 'S'},   {"min-seq", 1, 0, 'm'},
        {"against", 1, 0, 'G'},   {"socket", 1, 0, 'U'},  {"since", 1, 0, 's'},    {"until", 1, 0, 'u'},
        {"component", 1, 0, 'c'}, {"event", 1, 0, 'e'},   {"subject", 1, 0, 'j'},  {"object", 1, 0, 'o'},
        {"source", 1, 0, 'r'},    {"outcome", 1, 0, 'x'}, {"format", 1, 0, 'f'},   {"log", 1, 0, 'l'},
        {"sign-key", 1, 0, 'K'},  {"detail", 1, 0, 'd'},  {"listen", 1, 0, 'L'},   {"to", 1, 0, 'T'},
        {"dir", 1, 0, 'D'},       {"tls-ca", 1, 0, 'A'},  {"tls-cert", 1, 0, 'C'}, {"tls-key", 1, 0, 'Y'},
        {"verify-name", 1, 0, 'V'}, {"once", 0, 0, '1'},  {"json", 0, 0, 'J'},     {"cert", 1, 0, 'E'},
        {"require-key", 0, 0, 'R'}, {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    opts_t o = {0};
    int ch, index = 0;
    int64_t v;
    optind = 2;
    opterr = 0; /* our messages name the command */
    while ((ch = getopt_long(argc, argv, "", longopts, &index)) != -1) {
        if (ch == 'h') return usage_of(cmd, stdout, SR_EXIT_OK);
        if (ch == '?' || ch == ':')
            return fprintf(stderr, "tde-audit: %s: %s: unknown option or missing value\n", cmd->name, argv[optind - 1]),
                   usage_of(cmd, stderr, SR_EXIT_USAGE);
        if (!applies(cmd, longopts[index].name))
            return fprintf(stderr, "tde-audit: %s: option --%s does not apply\n", cmd->name, longopts[index].name),
                   SR_EXIT_USAGE;
        switch (ch) {
        case 'O': o.out = optarg; break;
        case 'k': o.key = optarg; break;
        case 'S': o.strict = 1; break;
        case 'm':
            if (sr_parse_int64(optarg, &v) != SR_OK || v < 0)
                return fprintf(stderr, "tde-audit: %s: --min-seq %s: a record number\n", cmd->name, optarg), SR_EXIT_USAGE;
            o.min_seq = (uint64_t)v;
            break;
        case 'G': o.against = optarg; break;
        case 'U': o.socket = optarg; break;
        case 's':
        case 'u':
            if (sr_time_parse_rfc3339(optarg, ch == 's' ? &o.since : &o.until) != SR_OK)
                return fprintf(stderr, "tde-audit: %s: --%s %s: an RFC 3339 time (2026-11-24T10:00:00Z)\n", cmd->name,
                               longopts[index].name, optarg), SR_EXIT_USAGE;
            break;
        case 'c': o.component = optarg; break;
        case 'e': o.event = optarg; break;
        case 'j': o.subject = optarg; break;
        case 'o': o.object = optarg; break;
        case 'r':
            o.source = optarg;
            if (source_filter_parse(optarg, &o.source_filter) != 0) return SR_EXIT_USAGE;
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
        case 'J': o.json = 1; break;
        case 'E': o.cert = optarg; break;
        case 'R': o.require_key = 1; break;
        }
    }
    o.nfiles = argc - optind;
    o.files = argv + optind;
    if (cmd->run == cmd_keygen && !o.out && o.nfiles == 1) o.out = o.files[0], o.nfiles = 0; /* as tdectl keygen PATH */
    if (o.nfiles && (cmd->run == cmd_keygen || cmd->run == cmd_events || cmd->run == cmd_append || cmd->run == cmd_collect ||
                     cmd->run == cmd_register || cmd->run == cmd_serve || cmd->run == cmd_forward))
        return fprintf(stderr, "tde-audit: %s: unexpected argument '%s'\n", cmd->name, o.files[0]), SR_EXIT_USAGE;
    sr_log_set_level(SR_LOG_WARN);
    if (sr_process_harden() != SR_OK) /* no core dumps, no ptrace by other users: it holds the signing key */
        return cannot("init");
    return cmd->run(&o);
}
