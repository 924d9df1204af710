/*
 * decide.c — the evaluator: first matching rule wins, default deny; and the
 * reloadable handle (a new policy replaces the old only once it compiled).
 *
 * Candidates are the rules that name the account (from the index) merged,
 * in rule order, with the rules for any account (`*`, regexes); each is then
 * checked for server, source, service and time window.
 */
#include "acl_internal.h"

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
 * under a lock (only rules with a time window pay for it). */
static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;

static void local_time(const char *tz, int64_t at, struct tm *out)
{
    time_t t = (time_t)at;
    pthread_mutex_lock(&tz_lock);
    char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    setenv("TZ", tz, 1);
    tzset();
    localtime_r(&t, out);
    if (old) setenv("TZ", old, 1);
    else unsetenv("TZ");
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
    char host[256] = "";
    const char *server = req->server;
    if (!server) server = gethostname(host, sizeof host - 1) == 0 ? host : "";
    if (!req->account || !*req->account) {
        snprintf(d->why, sizeof d->why, "deny: no account given");
        return;
    }
    source_t src;
    parse_source(req->source, &src);
    int64_t at = req->at ? req->at : (int64_t)time(NULL);
    const acl_bucket_t *b = acl_index_find(p, req->account);
    size_t i = 0, k = 0, nb = b ? b->n : 0;
    while (i < nb || k < p->n_any) { /* both lists ascending: merge */
        int next;
        if (k == p->n_any || (i < nb && b->rules[i] <= p->any_rules[k])) {
            next = b->rules[i++];
            if (k < p->n_any && p->any_rules[k] == next) k++;
        } else {
            next = p->any_rules[k++];
        }
        if (rule_matches(&p->rules[next], server, req->account, &src, req->service, at)) {
            decided(p, next, d);
            return;
        }
    }
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
};

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
    sr_err_t rc = sr_acl_compile_file(path, &a->policy);
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
    sr_err_t rc = sr_acl_compile_file(a->path, &fresh);
    if (rc != SR_OK) return rc; /* the policy in force stays */
    pthread_rwlock_wrlock(&a->lock);
    sr_acl_policy_t *old = a->policy;
    a->policy = fresh;
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

void sr_acl_close(sr_acl_t *a)
{
    if (!a) return;
    sr_acl_policy_free(a->policy);
    pthread_rwlock_destroy(&a->lock);
    free(a->path);
    free(a);
}
