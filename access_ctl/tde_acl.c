/*
 * tde-acl — the access policy, from the command line.
 *
 *   tde-acl check   --policy FILE --user U [--from ADDR|local] [--service S] [--server H] [--at TIME] [--json]
 *   tde-acl lint    FILE [--json]
 *   tde-acl explain --policy FILE [--user U] [--from ADDR] [--json]
 *   tde-acl install FILE TARGET      lint FILE, then replace TARGET atomically (readers see old or new)
 *
 * Exit status: 0 allowed / valid, 1 denied / invalid, 2 usage, 3 the policy
 * could not be read.
 */
#include "access_ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


typedef struct opts {
    const char *policy, *user, *from, *service, *server, *at, *file;
    int json;
} opts_t;

static int usage(FILE *f, int status)
{
    fprintf(f, "usage: tde-acl check --policy FILE --user U [--from ADDR|local] [--service S] [--server H] [--at TIME] [--json]\n"
               "       tde-acl lint FILE [--json]\n"
               "       tde-acl explain --policy FILE [--user U] [--from ADDR] [--json]\n"
               "       tde-acl install FILE TARGET   (lint, then replace TARGET atomically)\n"
               "Exit status: 0 allowed (check) or valid (lint), 1 denied or invalid, 2 usage, 3 policy unreadable.\n"
               "The policy format is in the README (\"Access policy\").\n");
    return status;
}

/* Each command's options; any other is a usage error. */
static int parse(const char *cmd, int argc, char **argv, const char *allowed, opts_t *o)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (strcmp(cmd, "lint") != 0 || o->file)
                return fprintf(stderr, "tde-acl: %s: unexpected argument '%s'\n", cmd, a), -1;
            o->file = a;
            continue;
        }
        char key[32];
        snprintf(key, sizeof key, " %s ", a + 2);
        if (!strstr(allowed, key)) return fprintf(stderr, "tde-acl: %s: option %s does not apply\n", cmd, a), -1;
        if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        if (i + 1 == argc) return fprintf(stderr, "tde-acl: %s: %s needs a value\n", cmd, a), -1;
        const char *v = argv[++i];
        if (!strcmp(a, "--policy")) o->policy = v;
        else if (!strcmp(a, "--user")) o->user = v;
        else if (!strcmp(a, "--from")) o->from = v;
        else if (!strcmp(a, "--service")) o->service = v;
        else if (!strcmp(a, "--server")) o->server = v;
        else if (!strcmp(a, "--at")) o->at = v;
    }
    return 0;
}

static int load(const char *path, sr_acl_policy_t **p)
{
    if (sr_acl_compile_trusted(path, p) == SR_OK) return 0; /* what the PAM module and the agent accept */
    fprintf(stderr, "tde-acl: %s (%s)\n", sr_err_detail(), sr_err_name(sr_err_last()));
    return sr_err_last() == SR_ERR_PARSE ? SR_EXIT_FAILED : SR_EXIT_CANNOT;
}

static int cmd_check(int argc, char **argv)
{
    opts_t o = {0};
    if (parse("check", argc, argv, " policy user from service server at json ", &o)) return SR_EXIT_USAGE;
    if (!o.policy || !o.user) return fprintf(stderr, "tde-acl: check needs --policy and --user\n"), SR_EXIT_USAGE;
    int64_t at_us = 0;
    if (o.at && sr_time_parse_rfc3339(o.at, &at_us) != SR_OK)
        return fprintf(stderr, "tde-acl: check: --at '%s' is not an RFC 3339 time\n", o.at), SR_EXIT_USAGE;
    sr_acl_policy_t *p = NULL;
    int st = load(o.policy, &p);
    if (st) return st == SR_EXIT_FAILED ? SR_EXIT_CANNOT : st;
    sr_acl_request_t r = {.server = o.server, .account = o.user, .source = o.from, .service = o.service,
                          .at = at_us / 1000000};
    sr_acl_decision_t d;
    sr_acl_decide(p, &r, &d);
    if (o.json) {
        printf("{\"decision\": \"%s\", \"rule\": %d, \"file\": ", d.allow ? "allow" : "deny", d.rule);
        sr_json_string(stdout, d.file);
        printf(", \"line\": %d, \"why\": ", d.line);
        sr_json_string(stdout, d.why);
        printf(", \"policy\": \"%s\"}\n", sr_acl_policy_version(p));
    } else {
        printf("%s\n", d.why);
    }
    sr_acl_policy_free(p);
    return d.allow ? 0 : SR_EXIT_FAILED;
}

/* A policy that compiles replaces TARGET by rename: a login reading the
 * file meanwhile sees the old policy or the new, never half of one. It is
 * compiled as it will be read there: its includes and groups files are
 * those beside TARGET, not beside FILE. */
static int cmd_install(int argc, char **argv)
{
    if (argc != 2) return fprintf(stderr, "tde-acl: install FILE TARGET\n"), SR_EXIT_USAGE;
    sr_acl_policy_t *p = NULL;
    int st = load(argv[0], &p); /* errors name FILE's lines */
    sr_acl_policy_free(p), p = NULL;
    if (st) return st;
    size_t len = 0;
    char *text = NULL; /* the text compiled, replacing the target whole */
    sr_err_t rc = sr_file_read_all(argv[0], 16u << 20, &text, &len);
    if (rc == SR_OK) rc = sr_acl_compile_text(argv[1], text, &p);
    if (rc == SR_OK) rc = sr_acl_policy_trusted(p);
    if (rc != SR_OK) {
        fprintf(stderr, "tde-acl: %s as %s would read it: %s (%s)\n", argv[0], argv[1], sr_err_detail(),
                sr_err_name(rc));
        sr_acl_policy_free(p), free(text);
        return rc == SR_ERR_PARSE ? SR_EXIT_FAILED : SR_EXIT_CANNOT;
    }
    rc = sr_file_write_atomic(argv[1], text, len, 0644, 0);
    free(text);
    if (rc == SR_OK) {
        printf("%s: installed (%zu rules, policy %s)\n", argv[1], sr_acl_policy_rules(p), sr_acl_policy_version(p));
        sr_acl_policy_free(p);
        return 0;
    }
    fprintf(stderr, "tde-acl: cannot install %s: %s\n", argv[1], sr_err_detail());
    sr_acl_policy_free(p);
    return SR_EXIT_CANNOT;
}

static int cmd_lint(int argc, char **argv)
{
    opts_t o = {0};
    if (parse("lint", argc, argv, " json ", &o)) return SR_EXIT_USAGE;
    if (!o.file) return fprintf(stderr, "tde-acl: lint FILE\n"), SR_EXIT_USAGE;
    sr_acl_policy_t *p = NULL;
    sr_err_t rc = sr_acl_compile_trusted(o.file, &p);
    if (o.json) {
        printf("{\"valid\": %s, ", rc == SR_OK ? "true" : "false");
        if (rc == SR_OK) printf("\"rules\": %zu, \"policy\": \"%s\"}\n", sr_acl_policy_rules(p), sr_acl_policy_version(p));
        else printf("\"error\": "), sr_json_string(stdout, sr_err_detail()), printf("}\n");
    } else if (rc == SR_OK) {
        printf("%s: valid, %zu rules (policy %s)\n", o.file, sr_acl_policy_rules(p), sr_acl_policy_version(p));
    } else {
        fprintf(stderr, "tde-acl: %s\n", sr_err_detail());
    }
    sr_acl_policy_free(p);
    return rc == SR_OK ? 0 : rc == SR_ERR_PARSE ? SR_EXIT_FAILED : SR_EXIT_CANNOT;
}

typedef struct explain_ctx {
    int json, first;
} explain_ctx_t;

static void print_rule(void *arg, int rule, const char *file, int line, const char *text)
{
    explain_ctx_t *x = arg;
    if (!x->json) {
        printf("%4d  %s:%d  %s\n", rule, file, line, text);
        return;
    }
    printf("%s{\"rule\": %d, \"file\": ", x->first ? "" : ",\n ", rule);
    sr_json_string(stdout, file);
    printf(", \"line\": %d, \"text\": ", line);
    sr_json_string(stdout, text);
    printf("}");
    x->first = 0;
}

static int cmd_explain(int argc, char **argv)
{
    opts_t o = {0};
    if (parse("explain", argc, argv, " policy user from json ", &o)) return SR_EXIT_USAGE;
    if (!o.policy) return fprintf(stderr, "tde-acl: explain needs --policy\n"), SR_EXIT_USAGE;
    sr_acl_policy_t *p = NULL;
    int st = load(o.policy, &p);
    if (st) return st == SR_EXIT_FAILED ? SR_EXIT_CANNOT : st;
    explain_ctx_t x = {.json = o.json, .first = 1};
    if (o.json) printf("[");
    sr_acl_explain(p, o.user, o.from, print_rule, &x);
    if (o.json) printf("]\n");
    else printf("(rules that could match%s%s%s%s; first match wins, then default deny)\n", o.user ? " user " : "",
                o.user ? o.user : "", o.from ? " from " : "", o.from ? o.from : "");
    sr_acl_policy_free(p);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage(stderr, SR_EXIT_USAGE);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return usage(stdout, 0);
    if (!strcmp(argv[1], "--version")) return puts("tde-acl (strongroom)"), 0;
    static const struct { const char *name; int (*run)(int, char **); } commands[] = {
        {"check", cmd_check}, {"lint", cmd_lint}, {"explain", cmd_explain}, {"install", cmd_install}};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            if (argc > 2 && !strcmp(argv[2], "--help")) return usage(stdout, 0);
            return commands[i].run(argc - 2, argv + 2);
        }
    fprintf(stderr, "tde-acl: unknown command '%s'\n", argv[1]);
    return usage(stderr, SR_EXIT_USAGE);
}
