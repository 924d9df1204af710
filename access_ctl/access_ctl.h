/*
 * access_ctl.h — who may connect from where to which server: the policy
 * file, its compiler and evaluator, and a reloadable handle shared by the
 * PAM module (pam_strongroom.so), tde-acl and (later) the agent's key service.
 *
 * Policy file (first match wins, default deny; pg_hba-like):
 *
 *   # action  servers  accounts           sources            services  [when=DAYS/HH:MM-HH:MM/TZ]  [# comment]
 *   allow     db1,db2  alice,@dba         10.0.0.0/8,::1     pgprod    when=mon-fri/08:00-18:00/Europe/Paris  # office
 *   deny      *        /tmp_[a-z0-9]+/    *                  *
 *   allow     *        postgres           local              *
 *   group     dba = alice, bob
 *   groups    /etc/strongroom/groups      (lines "name: member, member")
 *   include   acl.d/NAME.conf              (relative to this file; a glob pattern)
 *
 * Lists are comma-separated, `*` matches anything. Accounts: names, @group,
 * /ERE/ (anchored: the whole name must match). Sources: IPv4/IPv6 CIDR or
 * address, `local` (a Unix-socket login: no remote address); an IPv4-mapped
 * IPv6 address is matched as IPv4; a source that is not a numeric address
 * (a host name from reverse DNS) matches only `*`. Time windows: days
 * (mon-fri, sat+sun, *), hours (an end before the start crosses midnight,
 * and belongs to the day it starts), a time zone from the tz database.
 */
#ifndef STRONGROOM_ACCESS_CTL_H
#define STRONGROOM_ACCESS_CTL_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sr_acl_policy sr_acl_policy_t;

/* Parses and compiles a policy file (and what it includes); SR_ERR_PARSE
 * with "file:line: what is wrong" on the first error. */
sr_err_t sr_acl_compile_file(const char *path, sr_acl_policy_t **out) SR_MUST_CHECK;
/* The same for an enforcement point (the PAM module, the agent): refused
 * (SR_ERR_PERMISSION) when the file, a file it includes, a groups file or a
 * directory an include pattern searches is writable by group or others
 * (whoever may write one may let themselves in). */
sr_err_t sr_acl_compile_trusted(const char *path, sr_acl_policy_t **out) SR_MUST_CHECK;
/* That check alone, on a compiled policy (SR_OK or SR_ERR_PERMISSION). */
sr_err_t sr_acl_policy_trusted(const sr_acl_policy_t *p) SR_MUST_CHECK;
/* The same from text in memory (`name` stands for the file in messages). */
sr_err_t sr_acl_compile_text(const char *name, const char *text, sr_acl_policy_t **out) SR_MUST_CHECK;
/* A policy that must mean the same on every host it is sent to (kmsctl
 * policy push, the agent installing it): `include` and `groups FILE` are
 * refused (they name files of one host); `group NAME = ...` is kept. */
sr_err_t sr_acl_compile_standalone(const char *name, const char *text, sr_acl_policy_t **out) SR_MUST_CHECK;
/* Reads a file (up to 16 MiB of text) and compiles it standalone; the text
 * (malloc'd) and the policy, or an error with file:line. */
sr_err_t sr_acl_read_standalone(const char *path, char **text, sr_acl_policy_t **out) SR_MUST_CHECK;
void sr_acl_policy_free(sr_acl_policy_t *p);
size_t sr_acl_policy_rules(const sr_acl_policy_t *p);
/* A digest of the compiled rules ("sha256:..." first 16 hex digits), for audit records. */
const char *sr_acl_policy_version(const sr_acl_policy_t *p);
/* Whether every file the policy was compiled from (the file, the files it
 * includes, its groups files, the directories its include patterns search)
 * is as it was when read: same device, inode, size and modification time,
 * or still absent. A policy compiled from text in memory has none. */
int sr_acl_policy_unchanged(const sr_acl_policy_t *p);

/* A longer account name is denied before any rule (LOGIN_NAME_MAX; the
 * client chooses it, and matching a regex takes time with its length). */
#define SR_ACL_ACCOUNT_MAX 256

typedef struct sr_acl_request {
    const char *server;  /* NULL: gethostname() */
    const char *account; /* PAM_USER, the database role */
    const char *source;  /* numeric address, "local" or NULL (local), or an untrusted name */
    const char *service; /* PAM service / database alias */
    int64_t at;          /* unix seconds; 0: now */
} sr_acl_request_t;

typedef struct sr_acl_decision {
    int allow;
    int rule;            /* 1-based index of the matching rule; 0: none matched (default deny) */
    const char *file;    /* where the rule is; "" when none matched */
    int line;
    char why[256];       /* "allow by /etc/strongroom/acl.conf:12 (office)" */
    char policy[32];     /* the digest of the policy that decided (sr_acl_policy_version) */
} sr_acl_decision_t;

/* Evaluates a request; never fails (an unusable request is denied). Safe to
 * call from many threads on one policy. */
void sr_acl_decide(const sr_acl_policy_t *p, const sr_acl_request_t *r, sr_acl_decision_t *d);

/* Rules that could match an account and/or a source (NULL: any), for
 * `tde-acl explain`: calls fn with each rule's index, file, line, text. */
void sr_acl_explain(const sr_acl_policy_t *p, const char *account, const char *source,
                    void (*fn)(void *ctx, int rule, const char *file, int line, const char *text), void *ctx);

/* What tells a policy file's contents apart without reading them: device,
 * inode, size and modification time (tde-acl install renames a new file in:
 * a new inode; an edit changes the size or the time). The files it includes
 * are followed by sr_acl_policy_unchanged. */
typedef struct sr_acl_file_id {
    uint64_t dev, ino, size;
    int64_t mtime_ns;
} sr_acl_file_id_t;
sr_err_t sr_acl_file_id(const char *path, sr_acl_file_id_t *id) SR_MUST_CHECK;
struct stat;
void sr_acl_file_id_of(const struct stat *st, sr_acl_file_id_t *id); /* the same from a stat() already made */
int sr_acl_file_id_equal(const sr_acl_file_id_t *a, const sr_acl_file_id_t *b);

/* Rules with a time window switch TZ to compute the local time in their
 * zone; a program with threads sets TZ (to this, if unset) before starting
 * them, so it is never added to the environment while another thread reads it. */
#define SR_ACL_SYSTEM_TZ ":/etc/localtime"

/* ---- a reloadable policy ----------------------------------------------------------- */
typedef struct sr_acl sr_acl_t;
sr_err_t sr_acl_open(const char *path, sr_acl_t **out) SR_MUST_CHECK;
/* Compiles the file again; on any error (or a file it reads writable by
 * group or others) the policy in force stays, and the error is returned. Concurrent decisions see the old or the new
 * policy, never a mix. */
sr_err_t sr_acl_reload(sr_acl_t *a) SR_MUST_CHECK;
void sr_acl_evaluate(sr_acl_t *a, const sr_acl_request_t *r, sr_acl_decision_t *d);
/* The same with the file as it is now: it or a file it includes changed
 * since it was compiled, it is compiled again first (if that fails, the policy in force decides and the
 * error is logged). *id: the file the deciding policy was compiled from. */
void sr_acl_evaluate_current(sr_acl_t *a, const sr_acl_request_t *r, sr_acl_decision_t *d, sr_acl_file_id_t *id);
void sr_acl_close(sr_acl_t *a);

#ifdef __cplusplus
}
#endif
#endif
