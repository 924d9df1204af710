/*
 * acl_internal.h — the compiled policy, shared by the compiler (policy.c)
 * and the evaluator (decide.c).
 */
#ifndef STRONGROOM_ACL_INTERNAL_H
#define STRONGROOM_ACL_INTERNAL_H

#include "access_ctl.h"

#include <regex.h>
#include <stdint.h>

typedef struct acl_cidr {
    int family;         /* 4 or 6 */
    uint8_t addr[16];
    int prefix;
} acl_cidr_t;

typedef struct acl_names {
    char **v;
    size_t n;
    int any;
} acl_names_t;

typedef struct acl_window {
    int present;
    uint8_t days;       /* bit 0 = Sunday ... bit 6 = Saturday */
    int start, end;     /* minutes since midnight; end <= start crosses midnight */
    char tz[64];
} acl_window_t;

typedef struct acl_rule {
    int allow;
    const char *file;   /* interned in the policy */
    int line;
    char *text;         /* the rule as written, for explain */
    char *comment;
    acl_names_t servers, services;
    acl_names_t accounts; /* names (groups expanded) */
    regex_t *regexes;
    size_t n_regexes;
    int any_account;
    acl_cidr_t *cidrs;
    size_t n_cidrs;
    int any_source, local;
    acl_window_t when;
} acl_rule_t;

/* account name -> the rules naming it (ascending rule index) */
typedef struct acl_bucket {
    char *name;
    int *rules;
    size_t n, cap;
} acl_bucket_t;

/* A binary trie over address bits: each node lists the rules whose prefix
 * ends there (ascending). */
typedef struct acl_trie {
    struct acl_trie *child[2];
    int *rules;
    size_t n, cap;
} acl_trie_t;

/* A file (or a directory an include pattern searches) as it was just
 * before the compiler read it; ino 0: it did not exist. */
typedef struct acl_source {
    char *path;
    sr_acl_file_id_t id;
    unsigned mode;
    int64_t recheck_ns; /* read within a second of its mtime: compiled again once this time is passed (0: settled) */
} acl_source_t;

struct sr_acl_policy {
    acl_rule_t *rules;
    size_t n_rules, cap_rules;
    char **files;       /* interned file names */
    size_t n_files;
    acl_bucket_t *index; /* open addressing, power-of-two size */
    size_t index_size;
    int *any_rules;     /* rules whose accounts are `*` or regexes ... */
    size_t n_any, cap_any;
    int *any_any;       /* ... of those, the ones whose sources are not only CIDR prefixes */
    size_t n_any_any, cap_any_any;
    acl_trie_t *trie[2]; /* ... and the others, by prefix: [0] IPv4, [1] IPv6 */
    acl_source_t *sources; /* every file and searched directory it was compiled from */
    size_t n_sources;
    char version[32];
};

int acl_parse_address(const char *text, acl_cidr_t *out); /* 0 ok; IPv4-mapped IPv6 becomes IPv4 */
int acl_cidr_contains(const acl_cidr_t *net, const acl_cidr_t *addr);
uint64_t acl_hash(const char *s);
const acl_bucket_t *acl_index_find(const sr_acl_policy_t *p, const char *account);
/* Candidate rules of one decision: on the stack up to 256, then on the heap. */
typedef struct acl_candidates {
    int stack[256];
    int *v;
    size_t n, cap;
} acl_candidates_t;
int acl_candidates_add(acl_candidates_t *c, const int *rules, size_t n);
/* Adds the rules for any account whose prefixes contain addr. */
int acl_trie_collect(const sr_acl_policy_t *p, const acl_cidr_t *addr, acl_candidates_t *c);
void acl_trie_free(acl_trie_t *t);

#endif
