/*
 * policy.c — the policy file's parser and compiler (format: access_ctl.h).
 *
 * Every error is SR_ERR_PARSE "file:line: what is wrong". Groups are
 * expanded into names at compile time and account names are indexed (a hash
 * table of name -> rules), so a decision looks only at the rules naming the
 * account plus those for any account, in rule order.
 */
#include "acl_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_INCLUDE_DEPTH 8
#define MAX_FILE_BYTES (16u << 20)
#define MAX_GROUPS 4096

typedef struct group {
    char *name;
    acl_names_t members;
} group_t;

typedef struct compiler {
    sr_acl_policy_t *p;
    char *open_files[MAX_INCLUDE_DEPTH + 1]; /* real paths being compiled: an include of one is a cycle */
    int n_open;
    group_t *groups;
    size_t n_groups;
    EVP_MD_CTX *digest;
    int standalone; /* no include, no groups FILE: the text alone is the policy */
    long glob_left; /* directory entries the include patterns may still look at (bounded_glob) */
} compiler_t;

/* ---- small pieces --------------------------------------------------------------------- */

static sr_err_t at(const char *file, int line, const char *fmt, ...) SR_PRINTF(3, 4);
static sr_err_t at(const char *file, int line, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return sr_err_set(SR_ERR_PARSE, "%s:%d: %s", file, line, what);
}

static sr_err_t names_add(acl_names_t *n, const char *s, size_t len)
{
    char **v = realloc(n->v, (n->n + 1) * sizeof *v);
    if (!v) return SR_ERR_NOMEM;
    n->v = v;
    if (!(v[n->n] = strndup(s, len))) return SR_ERR_NOMEM;
    n->n++;
    return SR_OK;
}

static void names_free(acl_names_t *n)
{
    for (size_t i = 0; i < n->n; i++) free(n->v[i]);
    free(n->v);
}

static int valid_name(const char *s, size_t len)
{
    if (!len) return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-$@", s[i])) return 0;
    return 1;
}

/* Calls fn on each comma-separated item; a /regex/ item runs to its closing
 * slash, so `/a{1,8}/` is one item. */
static sr_err_t each_item(const char *list, sr_err_t (*fn)(void *, const char *, size_t), void *ctx)
{
    for (const char *p = list; *p;) {
        const char *close = *p == '/' ? strstr(p + 1, "/,") : NULL;
        const char *end = strchr(close ? close + 1 : *p == '/' ? p + strlen(p) : p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        sr_err_t rc = fn(ctx, p, len);
        if (rc != SR_OK) return rc;
        p += len + (end ? 1 : 0);
        if (end && !*p) return fn(ctx, p, 0); /* a trailing comma: an empty item */
    }
    return SR_OK;
}

/* ---- addresses ----------------------------------------------------------------------------- */

int acl_parse_address(const char *text, acl_cidr_t *out)
{
    char buf[64];
    const char *slash = strchr(text, '/');
    size_t len = slash ? (size_t)(slash - text) : strlen(text);
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, text, len), buf[len] = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) out->family = 4, out->prefix = 32;
    else if (inet_pton(AF_INET6, buf, out->addr) == 1) out->family = 6, out->prefix = 128;
    else return -1;
    if (slash) {
        char *end = NULL;
        errno = 0;
        long pfx = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || errno || pfx < 0 || pfx > out->prefix) return -1;
        out->prefix = (int)pfx;
    }
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (out->family == 6 && !memcmp(out->addr, mapped, 12) && (!slash || out->prefix >= 96)) {
        memmove(out->addr, out->addr + 12, 4), memset(out->addr + 4, 0, 12);
        out->family = 4, out->prefix -= 96;
    }
    return 0;
}

int acl_cidr_contains(const acl_cidr_t *net, const acl_cidr_t *a)
{
    if (net->family != a->family) return 0;
    int full = net->prefix / 8, bits = net->prefix % 8;
    if (memcmp(net->addr, a->addr, (size_t)full) != 0) return 0;
    if (!bits) return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - bits));
    return (net->addr[full] & mask) == (a->addr[full] & mask);
}

/* ---- rule fields ------------------------------------------------------------------------------- */

typedef struct field_ctx {
    compiler_t *c;
    acl_rule_t *r;
    acl_names_t *names;
    const char *file, *what;
    int line;
} field_ctx_t;

static sr_err_t add_plain_name(void *arg, const char *s, size_t len)
{
    field_ctx_t *f = arg;
    if (len == 1 && s[0] == '*') return f->names->any = 1, SR_OK;
    if (!valid_name(s, len)) return at(f->file, f->line, "%s: '%.*s' is not a name (letters, digits, . _ - $)", f->what,
                                       (int)len, s);
    return names_add(f->names, s, len);
}

static const group_t *find_group(const compiler_t *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->n_groups; i++)
        if (strlen(c->groups[i].name) == len && !memcmp(c->groups[i].name, name, len)) return &c->groups[i];
    return NULL;
}

#define REGEX_NODES_MAX 4096
#define TEXT_OF(n) TEXT_OF_(n)
#define TEXT_OF_(n) #n

/* What makes a regex too costly for glibc's regcomp or regexec, each found
 * by the policy fuzzer or the reason beside it. */
typedef enum {
    REGEX_FINE,
    REGEX_TOO_BIG,  /* each repeat copies what it repeats (`{m,n}` n times, `+` and `?` twice), so nested repeats
                     * multiply: `((a{99}){99}){99}` would take gigabytes */
    REGEX_BACKREF,  /* \1: glibc then matches by backtracking, over an account name the client chooses */
    REGEX_STACKED,  /* a repeat right after a repeat (`a*+`, `a{2}{3}`): a tree copy each, 2 GB for 30 of them,
                     * and the closure over 13 took 15 s */
} regex_cost_t;

static const char *const regex_refusal[] = {
    [REGEX_TOO_BIG] = "repeats too much (nested or stacked repeats multiply; at most " TEXT_OF(REGEX_NODES_MAX)
                      " states)",
    [REGEX_BACKREF] = "back-references (\\1...\\9) are not allowed",
    [REGEX_STACKED] = "a repeat right after a repeat (*+, ++, {2}{3}) is not allowed",
};

/* The automaton's size is estimated as the pattern is read, up to REGEX_NODES_MAX. */
static regex_cost_t regex_cost(const char *p, size_t len)
{
    size_t outer[16], cur = 0, last = 0; /* the group being read so far; what a repeat would copy */
    int depth = 0, repeated = 0;         /* repeated: the last thing read was a repeat */
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        int was_repeated = repeated;
        repeated = 0;
        if (ch == '(') {
            if (depth == 16) return REGEX_TOO_BIG;
            outer[depth++] = cur, cur = last = 0;
            continue;
        }
        if (ch == ')' && depth) {
            last = cur, cur = outer[--depth] + last;
        } else if (ch == '*' || ch == '+' || ch == '?' || ch == '{') {
            if (was_repeated) return REGEX_STACKED; /* undefined in POSIX */
            repeated = 1;
            size_t times = 2;
            if (ch == '{') { /* {m}, {m,}, {m,n}: n copies (m + 1 when unbounded) */
                unsigned long m = strtoul(p + i + 1, NULL, 10), n = m + 1;
                const char *comma = memchr(p + i, ',', len - i), *close = memchr(p + i, '}', len - i);
                if (!close) return REGEX_FINE; /* regcomp says what is wrong */
                if (comma && comma < close && comma[1] != '}') n = strtoul(comma + 1, NULL, 10);
                else if (!comma || comma > close) n = m;
                times = n > 1 ? n : 1;
                i = (size_t)(close - p);
            }
            if (times > REGEX_NODES_MAX || last > REGEX_NODES_MAX / times) return REGEX_TOO_BIG;
            cur += last * (times - 1), last *= times;
        } else if (ch == '|') {
            last = 0;
        } else {
            if (ch == '\\' && i + 1 < len && p[i + 1] >= '1' && p[i + 1] <= '9') return REGEX_BACKREF;
            if (ch == '\\' && i + 1 < len) i++;
            else if (ch == '[') { /* a bracket expression is one atom: "[]a]" and "[^]a]" hold a ']' */
                size_t j = i + 1 + (i + 1 < len && p[i + 1] == '^');
                j += j < len && p[j] == ']';
                while (j < len && p[j] != ']') j++;
                i = j;
            }
            cur++, last = 1;
        }
        if (cur > REGEX_NODES_MAX) return REGEX_TOO_BIG;
    }
    return REGEX_FINE;
}

static sr_err_t add_regex(field_ctx_t *f, const char *s, size_t len)
{
    if (len < 3 || s[len - 1] != '/') return at(f->file, f->line, "accounts: a regular expression is /.../");
    char pattern[1100];
    if (len > 1000) return at(f->file, f->line, "accounts: regular expression too long");
    regex_cost_t cost = regex_cost(s + 1, len - 2);
    if (cost != REGEX_FINE)
        return at(f->file, f->line, "accounts: regular expression %.*s%s %s", (int)(len > 60 ? 60 : len), s,
                  cost == REGEX_TOO_BIG ? "" : ":", regex_refusal[cost]);
    snprintf(pattern, sizeof pattern, "^(%.*s)$", (int)len - 2, s + 1);
    regex_t *v = realloc(f->r->regexes, (f->r->n_regexes + 1) * sizeof *v);
    if (!v) return SR_ERR_NOMEM;
    f->r->regexes = v;
    int rc = regcomp(&v[f->r->n_regexes], pattern, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char why[200];
        regerror(rc, &v[f->r->n_regexes], why, sizeof why);
        return at(f->file, f->line, "accounts: bad regular expression %.*s: %s", (int)len, s, why);
    }
    f->r->n_regexes++;
    return SR_OK;
}

static sr_err_t add_account(void *arg, const char *s, size_t len)
{
    field_ctx_t *f = arg;
    if (len == 1 && s[0] == '*') return f->r->any_account = 1, SR_OK;
    if (len && s[0] == '/') return add_regex(f, s, len);
    if (len && s[0] == '@') {
        const group_t *g = find_group(f->c, s + 1, len - 1);
        if (!g) return at(f->file, f->line, "accounts: no group '%.*s' defined above this line", (int)len - 1, s + 1);
        for (size_t i = 0; i < g->members.n; i++) {
            sr_err_t rc = names_add(&f->r->accounts, g->members.v[i], strlen(g->members.v[i]));
            if (rc != SR_OK) return rc;
        }
        return SR_OK;
    }
    f->names = &f->r->accounts, f->what = "accounts";
    return add_plain_name(f, s, len);
}

static sr_err_t add_source(void *arg, const char *s, size_t len)
{
    field_ctx_t *f = arg;
    char buf[80];
    if (len == 1 && s[0] == '*') return f->r->any_source = 1, SR_OK;
    if (len == 5 && !memcmp(s, "local", 5)) return f->r->local = 1, SR_OK;
    if (len >= sizeof buf) return at(f->file, f->line, "sources: '%.*s' is too long", (int)len, s);
    memcpy(buf, s, len), buf[len] = '\0';
    acl_cidr_t c;
    if (acl_parse_address(buf, &c) != 0)
        return at(f->file, f->line, "sources: '%s' is not an address, a CIDR prefix, local or *", buf);
    acl_cidr_t *v = realloc(f->r->cidrs, (f->r->n_cidrs + 1) * sizeof *v);
    if (!v) return SR_ERR_NOMEM;
    f->r->cidrs = v;
    v[f->r->n_cidrs++] = c;
    return SR_OK;
}

static int parse_hhmm(const char *s, int *minutes)
{
    if (strlen(s) != 5 || !isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]) || s[2] != ':' ||
        !isdigit((unsigned char)s[3]) || !isdigit((unsigned char)s[4]))
        return -1;
    int h = (s[0] - '0') * 10 + s[1] - '0', m = (s[3] - '0') * 10 + s[4] - '0';
    if (h > 24 || m > 59 || (h == 24 && m)) return -1;
    *minutes = h * 60 + m;
    return 0;
}

static int day_index(const char *s, size_t len)
{
    static const char *const days[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
    for (int i = 0; i < 7; i++)
        if (len == 3 && !memcmp(s, days[i], 3)) return i;
    return -1;
}

/* mon-fri, sat+sun, mon+wed+fri, fri-mon (wraps), * */
static int parse_days(const char *s, uint8_t *mask)
{
    *mask = 0;
    if (!strcmp(s, "*")) return *mask = 0x7f, 0;
    for (const char *p = s; *p;) {
        const char *end = strchr(p, '+');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *dash = memchr(p, '-', len);
        int a = day_index(p, dash ? (size_t)(dash - p) : len), b = dash ? day_index(dash + 1, len - (size_t)(dash - p) - 1) : a;
        if (a < 0 || b < 0) return -1;
        for (int d = a;; d = (d + 1) % 7) {
            *mask |= (uint8_t)(1 << d);
            if (d == b) break;
        }
        p += len + (end ? 1 : 0);
    }
    return *mask ? 0 : -1;
}

static int known_zone(const char *tz)
{
    if (!strcmp(tz, "UTC")) return 1;
    if (strstr(tz, "..") || tz[0] == '/') return 0;
    char path[256];
    snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", tz);
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* when=DAYS/HH:MM-HH:MM/TZ */
static sr_err_t parse_when(const char *file, int line, const char *spec, acl_window_t *w)
{
    char buf[160];
    snprintf(buf, sizeof buf, "%s", spec);
    char *hours = strchr(buf, '/'), *tz = hours ? strchr(hours + 1, '/') : NULL;
    if (!hours || !tz) return at(file, line, "when=%s: expected DAYS/HH:MM-HH:MM/TIMEZONE", spec);
    *hours++ = '\0', *tz++ = '\0';
    char *dash = strchr(hours, '-');
    if (dash) *dash = '\0';
    if (parse_days(buf, &w->days) != 0) return at(file, line, "when=%s: days '%s' (mon-fri, sat+sun, *)", spec, buf);
    if (!dash || parse_hhmm(hours, &w->start) != 0 || parse_hhmm(dash + 1, &w->end) != 0)
        return at(file, line, "when=%s: hours are HH:MM-HH:MM (an end before the start crosses midnight)", spec);
    if (w->start == w->end) /* neither no time nor all day is obvious: say which to write */
        return at(file, line, "when=%s: %s-%s is an empty span of hours; the whole day is 00:00-24:00", spec, hours,
                  dash + 1);
    if (!known_zone(tz) || strlen(tz) >= sizeof w->tz)
        return at(file, line, "when=%s: '%s' is not a time zone of the tz database (e.g. UTC, Europe/Paris)", spec, tz);
    snprintf(w->tz, sizeof w->tz, "%s", tz);
    w->present = 1;
    return SR_OK;
}

/* ---- lines ------------------------------------------------------------------------------------- */

/* Splits a line into whitespace-separated tokens; a token starting with '#'
 * begins the comment (returned separately). */
static int tokenize(char *line, char **tok, int max, char **comment)
{
    int n = 0;
    *comment = NULL;
    for (char *p = line; *p;) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        if (*p == '#') {
            *comment = p + 1;
            while (**comment == ' ') (*comment)++;
            break;
        }
        if (n == max) return -1;
        tok[n++] = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        if (*p) *p++ = '\0';
    }
    return n;
}

static const char *intern_file(sr_acl_policy_t *p, const char *file)
{
    for (size_t i = 0; i < p->n_files; i++)
        if (!strcmp(p->files[i], file)) return p->files[i];
    char **v = realloc(p->files, (p->n_files + 1) * sizeof *v);
    if (!v) return NULL;
    p->files = v;
    return (v[p->n_files] = strdup(file)) ? v[p->n_files++] : NULL;
}

static sr_err_t add_rule(compiler_t *c, const char *file, int line, char **tok, int n, const char *comment,
                         const char *text)
{
    sr_acl_policy_t *p = c->p;
    if (n < 5 || n > 6) return at(file, line, "a rule is: allow|deny SERVERS ACCOUNTS SOURCES SERVICES [when=...]");
    if (p->n_rules == p->cap_rules) {
        acl_rule_t *v = realloc(p->rules, (p->cap_rules = p->cap_rules ? 2 * p->cap_rules : 64) * sizeof *v);
        if (!v) return SR_ERR_NOMEM;
        p->rules = v;
    }
    acl_rule_t *r = &p->rules[p->n_rules++];
    memset(r, 0, sizeof *r);
    r->allow = !strcmp(tok[0], "allow");
    r->file = intern_file(p, file), r->line = line;
    r->text = strdup(text), r->comment = comment ? strdup(comment) : NULL;
    if (!r->file || !r->text) return SR_ERR_NOMEM;
    field_ctx_t f = {.c = c, .r = r, .file = file, .line = line};
    sr_err_t rc;
    f.names = &r->servers, f.what = "servers";
    if ((rc = each_item(tok[1], add_plain_name, &f)) != SR_OK) return rc;
    if ((rc = each_item(tok[2], add_account, &f)) != SR_OK) return rc;
    if ((rc = each_item(tok[3], add_source, &f)) != SR_OK) return rc;
    f.names = &r->services, f.what = "services";
    if ((rc = each_item(tok[4], add_plain_name, &f)) != SR_OK) return rc;
    if (n == 6) {
        if (strncmp(tok[5], "when=", 5) != 0) return at(file, line, "unexpected '%s' (only when=... may follow)", tok[5]);
        if ((rc = parse_when(file, line, tok[5] + 5, &r->when)) != SR_OK) return rc;
    }
    if (EVP_DigestUpdate(c->digest, text, strlen(text)) != 1) return SR_ERR_CRYPTO;
    return SR_OK;
}

/* group NAME = a, b c */
static sr_err_t add_group_members(compiler_t *c, const char *file, int line, const char *name, const char *members)
{
    if (!valid_name(name, strlen(name))) return at(file, line, "group: '%s' is not a name", name);
    if (find_group(c, name, strlen(name))) return at(file, line, "group '%s' is defined twice", name);
    if (c->n_groups == MAX_GROUPS) return at(file, line, "more than %d groups", MAX_GROUPS);
    group_t *v = realloc(c->groups, (c->n_groups + 1) * sizeof *v);
    if (!v) return SR_ERR_NOMEM;
    c->groups = v;
    group_t *g = &v[c->n_groups++];
    memset(g, 0, sizeof *g);
    if (!(g->name = strdup(name))) return SR_ERR_NOMEM;
    for (const char *p = members; *p;) {
        p += strspn(p, ", \t");
        size_t len = strcspn(p, ", \t\r\n");
        if (!len) break;
        if (!valid_name(p, len)) return at(file, line, "group %s: '%.*s' is not an account name", name, (int)len, p);
        sr_err_t rc = names_add(&g->members, p, len);
        if (rc != SR_OK) return rc;
        p += len;
    }
    return SR_OK;
}

static sr_err_t compile_file(compiler_t *c, const char *path, int depth);
static int being_compiled(const compiler_t *c, const char *path);

/* Remembers a file or directory as it is before it is read (a change made
 * while it is read then shows at the next check, not never). Modification
 * times tick in the kernel's coarse clock (milliseconds): a write in the
 * same tick as the read, of the same size, would look unchanged. So a file
 * whose time is within a second of now is read once more when that second
 * has passed (once: compiling at every decision meanwhile would cost a big
 * policy's compile per key request just after every push). */
#define SETTLE_NS 1000000000LL

static sr_err_t note_source(compiler_t *c, const char *path)
{
    struct stat st;
    acl_source_t *v = realloc(c->p->sources, (c->p->n_sources + 1) * sizeof *v);
    if (!v) return SR_ERR_NOMEM;
    c->p->sources = v;
    acl_source_t *f = &v[c->p->n_sources];
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return SR_ERR_NOMEM;
    c->p->n_sources++;
    if (stat(path, &st) != 0) return SR_OK;
    sr_acl_file_id_of(&st, &f->id), f->mode = (unsigned)st.st_mode;
    int64_t age_ns = sr_time_now_us() * 1000 - f->id.mtime_ns; /* a time in the future is settled: a write changes it */
    if (age_ns < SETTLE_NS && age_ns > -SETTLE_NS) f->recheck_ns = f->id.mtime_ns + SETTLE_NS;
    return SR_OK;
}

static sr_err_t read_all(const char *path, char **out)
{
    char *buf = NULL;
    size_t n = 0;
    struct stat st; /* a FIFO would block the open, a device the read: a login would wait for ever */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return sr_err_set(SR_ERR_PARSE, "policy file %s is not a regular file", path);
    sr_err_t rc = sr_file_read_all(path, MAX_FILE_BYTES, &buf, &n);
    if (rc == SR_ERR_LIMIT) return sr_err_set(rc, "cannot read policy file %s (over 16 MiB)", path);
    if (rc != SR_OK) return sr_err_set(rc, "policy file: %s", sr_err_detail());
    if (memchr(buf, '\0', n)) {
        free(buf);
        return sr_err_set(SR_ERR_PARSE, "%s: a NUL byte: not a text file", path);
    }
    *out = buf;
    return SR_OK;
}

/* groups FILE: "name: member, member" per line */
static sr_err_t load_groups(compiler_t *c, const char *path)
{
    char *text = NULL;
    sr_err_t rc = note_source(c, path);
    if (rc == SR_OK) rc = read_all(path, &text);
    int line = 0;
    for (char *save = NULL, *l = text ? strtok_r(text, "\n", &save) : NULL; rc == SR_OK && l;
         l = strtok_r(NULL, "\n", &save)) {
        line++;
        l += strspn(l, " \t");
        if (!*l || *l == '#') continue;
        char *colon = strchr(l, ':');
        if (!colon) {
            rc = at(path, line, "expected 'group: member, member'");
            break;
        }
        *colon = '\0';
        char *end = colon;
        while (end > l && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
        rc = add_group_members(c, path, line, l, colon + 1);
    }
    free(text);
    return rc;
}

static void resolve(char *out, size_t cap, const char *from_file, const char *path)
{
    if (path[0] == '/') {
        snprintf(out, cap, "%s", path);
        return;
    }
    const char *slash = strrchr(from_file, '/');
    snprintf(out, cap, "%.*s%s", slash ? (int)(slash - from_file + 1) : 0, from_file, path);
}

/* The directory holding the first `len` bytes of path (up to its last
 * slash): a file added to or removed from it changes what a pattern takes. */
static sr_err_t note_directory_of(compiler_t *c, const char *path, size_t len)
{
    const char *slash = memrchr(path, '/', len);
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", !slash ? 1 : slash == path ? 1 : (int)(slash - path), slash ? path : ".");
    return note_source(c, dir);
}

/* A wildcard in a directory of the pattern (conf.d/site-? /x.conf, without
 * the space): every directory each such level matches, whether or not it
 * holds a match yet — a file added later to one that was empty changes what
 * the pattern takes. */
static int bounded_glob(compiler_t *c, const char *pattern, int flags, glob_t *g, int *over);

static sr_err_t note_wildcard_directories(compiler_t *c, const char *path, const char *wild, int *over)
{
    sr_err_t err = SR_OK;
    for (const char *slash = strchr(wild, '/'); err == SR_OK && !*over && slash; slash = strchr(slash + 1, '/')) {
        char level[4096];
        snprintf(level, sizeof level, "%.*s", (int)(slash - path), path);
        glob_t g;
        int rc = bounded_glob(c, level, GLOB_ERR | GLOB_ONLYDIR, &g, over);
        for (size_t i = 0; rc == 0 && err == SR_OK && i < g.gl_pathc; i++) err = note_source(c, g.gl_pathv[i]);
        if (rc == 0) globfree(&g);
    }
    return err;
}

/* glob(3) that opens directories and reads their entries GLOB_BUDGET times
 * at most in a whole compile: a pattern with wildcards near the root
 * (include /x/x/x/y, each x a star) would walk the whole file system at
 * every compile (the fuzzer found one taking minutes). *over: the budget
 * ran out and the matches may be incomplete. */
#define GLOB_BUDGET 4096
static _Thread_local long *glob_left;

static void *budget_opendir(const char *name) { return --*glob_left >= 0 ? opendir(name) : NULL; }
static struct dirent *budget_readdir(void *dir) { return --*glob_left >= 0 ? readdir(dir) : NULL; }
static void budget_closedir(void *dir) { closedir(dir); }

static int bounded_glob(compiler_t *c, const char *pattern, int flags, glob_t *g, int *over)
{
    memset(g, 0, sizeof *g);
    g->gl_opendir = budget_opendir, g->gl_readdir = budget_readdir, g->gl_closedir = budget_closedir;
    g->gl_stat = stat, g->gl_lstat = lstat;
    glob_left = &c->glob_left;
    int rc = glob(pattern, flags | GLOB_ALTDIRFUNC, NULL, g);
    *over = c->glob_left < 0;
    return rc;
}

static sr_err_t include(compiler_t *c, const char *file, int line, const char *pattern, int depth)
{
    if (depth >= MAX_INCLUDE_DEPTH) return at(file, line, "includes nested deeper than %d (a cycle?)", MAX_INCLUDE_DEPTH);
    char path[4096];
    resolve(path, sizeof path, file, pattern);
    const char *wild = strpbrk(path, "*?[");
    int over = 0;
    sr_err_t err = wild ? note_directory_of(c, path, (size_t)(wild - path)) : SR_OK; /* the wildcard-free part */
    if (err == SR_OK && wild) err = note_wildcard_directories(c, path, wild, &over);
    if (err != SR_OK) return err;
    glob_t g;
    int rc = over ? GLOB_ABORTED : bounded_glob(c, path, GLOB_ERR, &g, &over);
    if (over) {
        if (rc == 0) globfree(&g);
        return at(file, line, "include %s: the patterns of this policy would read over %d directories and entries "
                  "(a wildcard too near the root?)", path, GLOB_BUDGET);
    }
    if (rc == GLOB_NOMATCH && !wild) return at(file, line, "include: %s does not exist", path);
    if (rc != 0 && rc != GLOB_NOMATCH) return at(file, line, "include: cannot read %s", path);
    for (size_t i = 0; rc == 0 && err == SR_OK && i < g.gl_pathc; i++) {
        const char *m = g.gl_pathv[i];
        err = being_compiled(c, m) ? at(file, line, "include cycle: %s is already being read", m)
                                   : compile_file(c, m, depth + 1);
    }
    if (rc == 0) globfree(&g);
    return err;
}

static sr_err_t compile_line(compiler_t *c, const char *file, int line, char *text, int depth)
{
    char *copy = strdup(text), *tok[8], *comment = NULL;
    if (!copy) return SR_ERR_NOMEM;
    for (char *p = text; *p; p++)
        if (*p == '\r') *p = '\0';
    int n = tokenize(text, tok, 8, &comment);
    sr_err_t rc = SR_OK;
    char stripped[4096];
    snprintf(stripped, sizeof stripped, "%s", copy);
    char *hash = strstr(stripped, " #");
    if (hash) *hash = '\0';
    for (size_t len = strlen(stripped); len && (stripped[len - 1] == ' ' || stripped[len - 1] == '\t');)
        stripped[--len] = '\0';
    if (n < 0) rc = at(file, line, "too many fields");
    else if (n == 0) rc = SR_OK;
    else if (!strcmp(tok[0], "allow") || !strcmp(tok[0], "deny")) rc = add_rule(c, file, line, tok, n, comment, stripped);
    else if (c->standalone && (!strcmp(tok[0], "include") || !strcmp(tok[0], "groups")))
        rc = at(file, line, "%s: a pushed policy must stand alone (no files of one host): put the rules in it and "
                "the groups as 'group NAME = member, member'", tok[0]);
    else if (!strcmp(tok[0], "include")) rc = n == 2 ? include(c, file, line, tok[1], depth)
                                                     : at(file, line, "include takes one path");
    else if (!strcmp(tok[0], "groups")) {
        char path[4096];
        if (n != 2) rc = at(file, line, "groups takes one path");
        else resolve(path, sizeof path, file, tok[1]), rc = load_groups(c, path);
    } else if (!strcmp(tok[0], "group")) {
        char *eq = strchr(copy, '=');
        if (n < 3 || strcmp(tok[2], "=") != 0 || !eq) rc = at(file, line, "a group is: group NAME = member, member");
        else {
            char *h = strchr(eq, '#');
            if (h) *h = '\0';
            rc = add_group_members(c, file, line, tok[1], eq + 1);
        }
    } else rc = at(file, line, "unknown directive '%s' (allow, deny, group, groups, include)", tok[0]);
    free(copy);
    return rc;
}

static sr_err_t compile_text(compiler_t *c, const char *name, char *text, int depth)
{
    int line = 0;
    for (char *p = text; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        line++;
        if (strlen(p) >= 4000) return at(name, line, "line longer than 4000 characters");
        sr_err_t rc = compile_line(c, name, line, p, depth);
        if (rc != SR_OK) return rc;
        p = nl ? nl + 1 : NULL;
    }
    return SR_OK;
}

static sr_err_t compile_file(compiler_t *c, const char *path, int depth)
{
    char *text = NULL, *real = realpath(path, NULL);
    sr_err_t rc = note_source(c, path);
    if (rc == SR_OK) rc = read_all(path, &text);
    int pushed = rc == SR_OK && real && c->n_open <= MAX_INCLUDE_DEPTH;
    if (pushed) c->open_files[c->n_open++] = real;
    if (rc == SR_OK) rc = compile_text(c, path, text, depth);
    if (pushed) c->n_open--;
    free(real);
    free(text);
    return rc;
}

static int being_compiled(const compiler_t *c, const char *path)
{
    char *real = realpath(path, NULL);
    int found = 0;
    for (int i = 0; real && i < c->n_open; i++) found |= !strcmp(c->open_files[i], real);
    free(real);
    return found;
}

/* ---- the account index ------------------------------------------------------------------------- */

uint64_t acl_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

const acl_bucket_t *acl_index_find(const sr_acl_policy_t *p, const char *account)
{
    if (!p->index_size) return NULL;
    for (size_t i = acl_hash(account) & (p->index_size - 1);; i = (i + 1) & (p->index_size - 1)) {
        if (!p->index[i].name) return NULL;
        if (!strcmp(p->index[i].name, account)) return &p->index[i];
    }
}

static sr_err_t push_rule(int **v, size_t *n, size_t *cap, int rule)
{
    if (*n && (*v)[*n - 1] == rule) return SR_OK; /* a name listed twice in one rule */
    if (*n == *cap) {
        int *grown = realloc(*v, (*cap = *cap ? 2 * *cap : 4) * sizeof **v);
        if (!grown) return SR_ERR_NOMEM;
        *v = grown;
    }
    (*v)[(*n)++] = rule;
    return SR_OK;
}

static sr_err_t index_account(sr_acl_policy_t *p, const char *name, int rule)
{
    size_t i = acl_hash(name) & (p->index_size - 1);
    while (p->index[i].name && strcmp(p->index[i].name, name) != 0) i = (i + 1) & (p->index_size - 1);
    acl_bucket_t *b = &p->index[i];
    if (!b->name && !(b->name = strdup(name))) return SR_ERR_NOMEM;
    return push_rule(&b->rules, &b->n, &b->cap, rule);
}

static sr_err_t trie_insert(sr_acl_policy_t *p, const acl_cidr_t *c, int rule)
{
    acl_trie_t **at = &p->trie[c->family == 6];
    for (int bit = 0;; bit++) {
        if (!*at && !(*at = calloc(1, sizeof **at))) return SR_ERR_NOMEM;
        if (bit == c->prefix) return push_rule(&(*at)->rules, &(*at)->n, &(*at)->cap, rule);
        at = &(*at)->child[c->addr[bit / 8] >> (7 - bit % 8) & 1];
    }
}

int acl_trie_collect(const sr_acl_policy_t *p, const acl_cidr_t *a, acl_candidates_t *c)
{
    const acl_trie_t *t = p->trie[a->family == 6];
    for (int bit = 0; t; bit++) {
        if (t->n && acl_candidates_add(c, t->rules, t->n) != 0) return -1;
        if (bit == (a->family == 6 ? 128 : 32)) break;
        t = t->child[a->addr[bit / 8] >> (7 - bit % 8) & 1];
    }
    return 0;
}

void acl_trie_free(acl_trie_t *t)
{
    if (!t) return;
    acl_trie_free(t->child[0]), acl_trie_free(t->child[1]);
    free(t->rules), free(t);
}

/* A rule for any account goes by its prefixes into the tries, or, when it
 * also takes `*` or `local` sources, into the list checked for every request. */
static sr_err_t index_any_account(sr_acl_policy_t *p, const acl_rule_t *rule, int r)
{
    sr_err_t rc = push_rule(&p->any_rules, &p->n_any, &p->cap_any, r);
    if (rc == SR_OK && (rule->any_source || rule->local || !rule->n_cidrs))
        return push_rule(&p->any_any, &p->n_any_any, &p->cap_any_any, r);
    for (size_t k = 0; rc == SR_OK && k < rule->n_cidrs; k++) rc = trie_insert(p, &rule->cidrs[k], r);
    return rc;
}

static sr_err_t build_index(sr_acl_policy_t *p)
{
    size_t names = 0;
    for (size_t r = 0; r < p->n_rules; r++) names += p->rules[r].accounts.n;
    p->index_size = 16;
    while (p->index_size < 2 * names + 16) p->index_size *= 2;
    if (!(p->index = calloc(p->index_size, sizeof *p->index))) return SR_ERR_NOMEM;
    for (size_t r = 0; r < p->n_rules; r++) {
        const acl_rule_t *rule = &p->rules[r];
        sr_err_t rc = SR_OK;
        if (rule->any_account || rule->n_regexes) rc = index_any_account(p, rule, (int)r);
        for (size_t k = 0; rc == SR_OK && k < rule->accounts.n; k++) rc = index_account(p, rule->accounts.v[k], (int)r);
        if (rc != SR_OK) return rc;
    }
    return SR_OK;
}

/* ---- entry points ---------------------------------------------------------------------------------- */

static sr_err_t finish(compiler_t *c, sr_err_t rc, sr_acl_policy_t **out)
{
    unsigned char md[32];
    unsigned len = 0;
    if (rc == SR_OK) rc = build_index(c->p);
    if (rc == SR_OK && EVP_DigestFinal_ex(c->digest, md, &len) == 1) {
        memcpy(c->p->version, "sha256:", 7);
        sr_hex_encode(md, 8, c->p->version + 7); /* the first 64 bits: a version name, not a proof */
    }
    for (size_t i = 0; i < c->n_groups; i++) free(c->groups[i].name), names_free(&c->groups[i].members);
    free(c->groups);
    EVP_MD_CTX_free(c->digest);
    if (rc != SR_OK) {
        sr_acl_policy_free(c->p);
        return rc;
    }
    *out = c->p;
    return SR_OK;
}

static sr_err_t start(compiler_t *c)
{
    memset(c, 0, sizeof *c);
    c->glob_left = GLOB_BUDGET;
    c->p = calloc(1, sizeof *c->p);
    c->digest = EVP_MD_CTX_new();
    if (!c->p || !c->digest || EVP_DigestInit_ex(c->digest, EVP_sha256(), NULL) != 1) {
        free(c->p), EVP_MD_CTX_free(c->digest);
        return SR_ERR_NOMEM;
    }
    return SR_OK;
}

sr_err_t sr_acl_compile_file(const char *path, sr_acl_policy_t **out)
{
    compiler_t c;
    sr_err_t rc = start(&c);
    return rc != SR_OK ? rc : finish(&c, compile_file(&c, path, 0), out);
}

sr_err_t sr_acl_policy_trusted(const sr_acl_policy_t *p)
{
    for (size_t i = 0; i < p->n_sources; i++) {
        const acl_source_t *f = &p->sources[i];
        if (f->id.ino && (f->mode & 022))
            return sr_err_set(SR_ERR_PERMISSION, "policy file %s is writable by group or others (mode %03o)", f->path,
                              f->mode & 0777);
    }
    return SR_OK;
}

sr_err_t sr_acl_compile_trusted(const char *path, sr_acl_policy_t **out)
{
    sr_err_t rc = sr_acl_compile_file(path, out);
    if (rc == SR_OK && (rc = sr_acl_policy_trusted(*out)) != SR_OK) sr_acl_policy_free(*out), *out = NULL;
    return rc;
}

static sr_err_t compile_memory(const char *name, const char *text, int standalone, sr_acl_policy_t **out)
{
    compiler_t c;
    char *copy = strdup(text);
    sr_err_t rc = copy ? start(&c) : SR_ERR_NOMEM;
    if (rc != SR_OK) return free(copy), rc;
    c.standalone = standalone;
    rc = finish(&c, compile_text(&c, name, copy, 0), out);
    free(copy);
    return rc;
}

sr_err_t sr_acl_compile_text(const char *name, const char *text, sr_acl_policy_t **out)
{
    return compile_memory(name, text, 0, out);
}

sr_err_t sr_acl_compile_standalone(const char *name, const char *text, sr_acl_policy_t **out)
{
    return compile_memory(name, text, 1, out);
}

sr_err_t sr_acl_read_standalone(const char *path, char **text, sr_acl_policy_t **out)
{
    sr_err_t rc = read_all(path, text);
    if (rc != SR_OK) return rc;
    rc = sr_acl_compile_standalone(path, *text, out);
    if (rc != SR_OK) free(*text), *text = NULL;
    return rc;
}

void sr_acl_policy_free(sr_acl_policy_t *p)
{
    if (!p) return;
    for (size_t r = 0; r < p->n_rules; r++) {
        acl_rule_t *rule = &p->rules[r];
        names_free(&rule->servers), names_free(&rule->services), names_free(&rule->accounts);
        for (size_t k = 0; k < rule->n_regexes; k++) regfree(&rule->regexes[k]);
        free(rule->regexes), free(rule->cidrs), free(rule->text), free(rule->comment);
    }
    for (size_t i = 0; i < p->index_size; i++) free(p->index[i].name), free(p->index[i].rules);
    for (size_t i = 0; i < p->n_files; i++) free(p->files[i]);
    for (size_t i = 0; i < p->n_sources; i++) free(p->sources[i].path);
    acl_trie_free(p->trie[0]), acl_trie_free(p->trie[1]);
    free(p->index), free(p->any_rules), free(p->any_any), free(p->files), free(p->rules), free(p->sources);
    free(p);
}

size_t sr_acl_policy_rules(const sr_acl_policy_t *p) { return p->n_rules; }
const char *sr_acl_policy_version(const sr_acl_policy_t *p) { return p->version; }

int sr_acl_policy_unchanged(const sr_acl_policy_t *p)
{
    for (size_t i = 0; i < p->n_sources; i++) {
        const acl_source_t *f = &p->sources[i];
        struct stat st;
        sr_acl_file_id_t now;
        if (stat(f->path, &st) != 0) {
            if (f->id.ino) return 0;
            continue;
        }
        sr_acl_file_id_of(&st, &now);
        if (!sr_acl_file_id_equal(&f->id, &now)) return 0;
        if (f->recheck_ns && sr_time_now_us() * 1000 >= f->recheck_ns) return 0; /* read too soon: once more */
    }
    return 1;
}

