/*
 * decide.c — the evaluator: first matching rule wins, default deny; and the
 * reloadable handle (a new policy replaces the old only once it compiled).
 *
 * Candidates are the rules that name the account (from the index) merged,
 * in rule order, with the rules for any account (`*`, regexes); each is then
 * checked for server, source, service and time window.
 */
#include "acl_internal.h"
#include <errno.h>
#include <sys/stat.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int names_match(const acl_names_t *n, const char *value)
{
    if (n->any) return 1;
    for (size_t i = 0; value && i < n->n; i++)
        if (!strcasecmp(n->v[i], value)) return 1;
    return 0;
}

static int account_matches(const acl_rule_t *r, const char *account)
{
    if (r->any_account) return 1;
    for (size_t i = 0; i < r->accounts.n; i++)
        if (!strcmp(r->accounts.v[i], account)) return 1;
    for (size_t i = 0; i < r->n_regexes; i++)
        if (regexec(&r->regexes[i], account, 0, NULL, 0) == 0) return 1;
    return 0;
}

typedef struct source {
    int local, numeric;
    acl_cidr_t addr;
} source_t;

static void parse_source(const char *text, source_t *s)
{
    memset(s, 0, sizeof *s);
    if (!text || !*text || !strcmp(text, "local")) s->local = 1;
    else if (!strchr(text, '/') && acl_parse_address(text, &s->addr) == 0) s->numeric = 1;
    /* else: a name (reverse DNS): untrusted, matches only `*` */
}

static int source_matches(const acl_rule_t *r, const source_t *s)
{
    if (r->any_source) return 1;
    if (s->local) return r->local;
    for (size_t i = 0; s->numeric && i < r->n_cidrs; i++)
        if (acl_cidr_contains(&r->cidrs[i], &s->addr)) return 1;
    return 0;
}

/* localtime in another zone: glibc has no per-call zone, so TZ is switched
 * under a lock (only rules with a time window pay for it). TZ is replaced,
 * never removed: replacing a variable swaps one pointer in `environ` (glibc
 * keeps the old strings), while adding or removing one moves the array
 * under any other thread's getenv (the agent's threads read STRONGROOM_*).
 * Unset, it becomes ":/etc/localtime", the system's zone said explicitly;
 * the agent sets that before its threads start. */
static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;

static void local_time(const char *tz, int64_t at, struct tm *out)
{
    time_t t = (time_t)at;
    pthread_mutex_lock(&tz_lock);
    char *old = strdup(getenv("TZ") ? getenv("TZ") : SR_ACL_SYSTEM_TZ);
    setenv("TZ", tz, 1);
    tzset();
    localtime_r(&t, out);
    setenv("TZ", old ? old : SR_ACL_SYSTEM_TZ, 1);
    tzset();
    free(old);
    pthread_mutex_unlock(&tz_lock);
}

static int window_matches(const acl_window_t *w, int64_t at)
{
    if (!w->present) return 1;
    struct tm tm;
    local_time(w->tz, at, &tm);
    int minute = tm.tm_hour * 60 + tm.tm_min, today = tm.tm_wday, yesterday = (today + 6) % 7;
    if (w->start < w->end) return (w->days >> today & 1) && minute >= w->start && minute < w->end;
    /* crosses midnight: the evening part belongs to today, the morning part to yesterday's window */
    return ((w->days >> today & 1) && minute >= w->start) || ((w->days >> yesterday & 1) && minute < w->end);
}

static int rule_matches(const acl_rule_t *r, const char *server, const char *account, const source_t *src,
                        const char *service, int64_t at)
{
    return names_match(&r->servers, server) && account_matches(r, account) && source_matches(r, src) &&
           names_match(&r->services, service) && window_matches(&r->when, at);
}

int acl_candidates_add(acl_candidates_t *c, const int *rules, size_t n)
{
    if (!n) return 0; /* rules may be NULL then */
    if (c->n + n > c->cap) {
        size_t cap = c->cap;
        while (cap < c->n + n) cap *= 2;
        int *v = c->v == c->stack ? malloc(cap * sizeof *v) : realloc(c->v, cap * sizeof *v);
        if (!v) return -1;
        if (c->v == c->stack) memcpy(v, c->stack, c->n * sizeof *v);
        c->v = v, c->cap = cap;
    }
    memcpy(c->v + c->n, rules, n * sizeof *rules);
    c->n += n;
    return 0;
}

static int by_rule(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

static void decided(const sr_acl_policy_t *p, int rule, sr_acl_decision_t *d)
{
    const acl_rule_t *r = &p->rules[rule];
    d->allow = r->allow, d->rule = rule + 1, d->file = r->file, d->line = r->line;
    snprintf(d->why, sizeof d->why, "%s by %s:%d%s%s%s", r->allow ? "allow" : "deny", r->file, r->line,
             r->comment ? " (" : "", r->comment ? r->comment : "", r->comment ? ")" : "");
}

void sr_acl_decide(const sr_acl_policy_t *p, const sr_acl_request_t *req, sr_acl_decision_t *d)
{
    memset(d, 0, sizeof *d);
    d->file = "";
    snprintf(d->policy, sizeof d->policy, "%s", p->version);
    char host[256] = "";
    const char *server = req->server;
    if (!server) server = gethostname(host, sizeof host - 1) == 0 ? host : "";
    if (!req->account || !*req->account) {
        snprintf(d->why, sizeof d->why, "deny: no account given");
        return;
    }
    if (strnlen(req->account, SR_ACL_ACCOUNT_MAX + 1) > SR_ACL_ACCOUNT_MAX) { /* a regex's time grows with it */
        snprintf(d->why, sizeof d->why, "deny: an account name over %d bytes", SR_ACL_ACCOUNT_MAX);
        return;
    }
    source_t src;
    parse_source(req->source, &src);
    int64_t at = req->at ? req->at : (int64_t)time(NULL);
    /* the rules that could match: naming the account, for any account from
     * a prefix holding the address, for any account from anywhere */
    acl_candidates_t c;
    c.v = c.stack, c.n = 0, c.cap = sizeof c.stack / sizeof c.stack[0];
    const acl_bucket_t *b = acl_index_find(p, req->account);
    int ok = (!b || acl_candidates_add(&c, b->rules, b->n) == 0) &&
             acl_candidates_add(&c, p->any_any, p->n_any_any) == 0 &&
             (!src.numeric || acl_trie_collect(p, &src.addr, &c) == 0);
    if (!ok) {
        snprintf(d->why, sizeof d->why, "deny: out of memory while deciding");
        if (c.v != c.stack) free(c.v);
        return;
    }
    qsort(c.v, c.n, sizeof *c.v, by_rule);
    for (size_t i = 0; i < c.n; i++) {
        if (i && c.v[i] == c.v[i - 1]) continue;
        if (rule_matches(&p->rules[c.v[i]], server, req->account, &src, req->service, at)) {
            decided(p, c.v[i], d);
            if (c.v != c.stack) free(c.v);
            return;
        }
    }
    if (c.v != c.stack) free(c.v);
    snprintf(d->why, sizeof d->why, "deny: no rule matched (default deny)");
}

void sr_acl_explain(const sr_acl_policy_t *p, const char *account, const char *source,
                    void (*fn)(void *, int, const char *, int, const char *), void *ctx)
{
    source_t src;
    if (source) parse_source(source, &src);
    for (size_t r = 0; r < p->n_rules; r++) {
        const acl_rule_t *rule = &p->rules[r];
        if (account && !account_matches(rule, account)) continue;
        if (source && !source_matches(rule, &src)) continue;
        fn(ctx, (int)r + 1, rule->file, rule->line, rule->text);
    }
}

/* ---- the reloadable handle -------------------------------------------------------------------- */

struct sr_acl {
    char *path;
    pthread_rwlock_t lock;
    sr_acl_policy_t *policy;
    sr_acl_file_id_t id; /* the file `policy` was compiled from (zero: not known) */
    _Atomic int64_t warned_ms; /* when a failed recompile was last logged (once in 10 s, not per decision) */
};

sr_err_t sr_acl_file_id(const char *path, sr_acl_file_id_t *id)
{
    struct stat st;
    memset(id, 0, sizeof *id);
    if (stat(path, &st) != 0) return sr_err_set_errno(SR_ERR_NOT_FOUND, errno, "cannot open policy file %s", path);
    sr_acl_file_id_of(&st, id);
    return SR_OK;
}

void sr_acl_file_id_of(const struct stat *st, sr_acl_file_id_t *id)
{
    *id = (sr_acl_file_id_t){.dev = (uint64_t)st->st_dev, .ino = (uint64_t)st->st_ino, .size = (uint64_t)st->st_size,
                             .mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec};
}

int sr_acl_file_id_equal(const sr_acl_file_id_t *a, const sr_acl_file_id_t *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns && a->ino;
}

/* Compiles the file and says which file it compiled: the same before and
 * after, else unknown (it changed meanwhile: compiled again next time). */
static sr_err_t compile_identified(const char *path, sr_acl_policy_t **out, sr_acl_file_id_t *id)
{
    sr_acl_file_id_t after;
    sr_err_t rc = sr_acl_file_id(path, id);
    if (rc == SR_OK) rc = sr_acl_compile_trusted(path, out);
    if (rc == SR_OK && (sr_acl_file_id(path, &after) != SR_OK || !sr_acl_file_id_equal(id, &after)))
        memset(id, 0, sizeof *id);
    return rc;
}

sr_err_t sr_acl_open(const char *path, sr_acl_t **out)
{
    sr_acl_t *a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(path))) return free(a), SR_ERR_NOMEM;
    /* writer-preferring: a reload is not starved by a steady stream of decisions */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&a->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    sr_err_t rc = compile_identified(path, &a->policy, &a->id);
    if (rc != SR_OK) {
        sr_acl_close(a);
        return rc;
    }
    *out = a;
    return SR_OK;
}

sr_err_t sr_acl_reload(sr_acl_t *a)
{
    sr_acl_policy_t *fresh = NULL;
    sr_acl_file_id_t id;
    sr_err_t rc = compile_identified(a->path, &fresh, &id);
    if (rc != SR_OK) return rc; /* the policy in force stays */
    pthread_rwlock_wrlock(&a->lock);
    sr_acl_policy_t *old = a->policy;
    a->policy = fresh, a->id = id;
    pthread_rwlock_unlock(&a->lock);
    sr_acl_policy_free(old);
    return SR_OK;
}

void sr_acl_evaluate(sr_acl_t *a, const sr_acl_request_t *r, sr_acl_decision_t *d)
{
    pthread_rwlock_rdlock(&a->lock);
    sr_acl_decide(a->policy, r, d);
    pthread_rwlock_unlock(&a->lock);
}

void sr_acl_evaluate_current(sr_acl_t *a, const sr_acl_request_t *r, sr_acl_decision_t *d, sr_acl_file_id_t *id)
{
    /* the policy's own record of its files covers a->path (one stat each); a->id is zero when the file changed
     * while it was compiled, which makes it compiled again */
    pthread_rwlock_rdlock(&a->lock);
    int current = a->id.ino && sr_acl_policy_unchanged(a->policy);
    pthread_rwlock_unlock(&a->lock);
    if (!current && sr_acl_reload(a) != SR_OK) {
        int64_t at = (int64_t)sr_time_mono_ms(), last = a->warned_ms;
        if (!last || at - last >= 10000) {
            a->warned_ms = at;
            sr_log(SR_LOG_WARN, "access policy %s: %s (the policy in force stays)", a->path, sr_err_detail());
        }
    }
    pthread_rwlock_rdlock(&a->lock);
    sr_acl_decide(a->policy, r, d);
    *id = a->id;
    pthread_rwlock_unlock(&a->lock);
}

void sr_acl_close(sr_acl_t *a)
{
    if (!a) return;
    sr_acl_policy_free(a->policy);
    pthread_rwlock_destroy(&a->lock);
    free(a->path);
    free(a);
}
