/*
 * pam_strongroom.so — the access policy as a PAM gate.
 *
 *   auth     requisite  pam_strongroom.so policy=/etc/strongroom/acl.conf [server=NAME] [audit_socket=PATH]
 *                                         [agent_socket=PATH]
 *   account  required   pam_strongroom.so policy=/etc/strongroom/acl.conf
 *
 * Stacked `requisite` before the password check, a refused client is
 * refused before it is asked for a password. Reads PAM_USER (PostgreSQL: the
 * role), PAM_RHOST (the numeric client address; absent for a Unix-socket
 * login; a name is untrusted and matches only `*`) and PAM_SERVICE. No DNS
 * lookups. The compiled policy is kept while its file is unchanged; a
 * replaced file is compiled at the next decision, and a half-written one is
 * refused as a whole. Every PostgreSQL login is a new process, so with
 * agent_socket= the host's tde-agent, whose policy is the same file, decides
 * instead (it holds the policy compiled; its answer names the file it
 * compiled, which must be the file as it is now): a login then compiles
 * nothing, whatever the policy's size. An agent that does not answer, holds
 * another file or an older version of it leaves the decision here. Fails
 * closed: a
 * policy that cannot be read or parsed, or a decision that cannot be
 * audited, is a refusal. One audit record per decision: component "pam",
 * event "login", to the host's sealer (audit_socket= or
 * $STRONGROOM_AUDIT_SOCKET), so its subject is the kernel's view of the
 * process.
 */
#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#include <security/pam_modules.h>

#include "access_ctl.h"
#include "audit.h"
#include "keymgr.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct args {
    const char *policy, *server, *audit_socket, *agent_socket;
} args_t;

static int parse_args(int argc, const char **argv, args_t *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "policy=", 7)) a->policy = argv[i] + 7;
        else if (!strncmp(argv[i], "server=", 7)) a->server = argv[i] + 7;
        else if (!strncmp(argv[i], "audit_socket=", 13)) a->audit_socket = argv[i] + 13;
        else if (!strncmp(argv[i], "agent_socket=", 13)) a->agent_socket = argv[i] + 13;
        else return -1;
    }
    return a->policy ? 0 : -1;
}

static const char *item(pam_handle_t *pamh, int type)
{
    const void *v = NULL;
    return pam_get_item(pamh, type, &v) == PAM_SUCCESS ? v : NULL;
}

/* The decision's record; SR_OK only if it was recorded. */
static sr_err_t record(const args_t *a, const char *user, const char *rhost, const char *service, const char *outcome,
                       const char *detail)
{
    sr_event_t ev = {.component = "pam", .event = "login", .subject = user ? user : "(none)", .object = service,
                     .outcome = outcome, .detail = detail, .source = rhost && *rhost ? rhost : "local"};
    const char *sock = a->audit_socket ? a->audit_socket : getenv("STRONGROOM_AUDIT_SOCKET");
    if (!sock || !*sock) return sr_event_emit(&ev); /* no sealer configured: the log */
    sr_audit_client_t *c = NULL;
    sr_err_t rc = sr_audit_client_open(sock, &c);
    if (rc == SR_OK) rc = sr_audit_client_send(c, &ev);
    sr_audit_client_close(c);
    return rc;
}

/* The compiled policy, kept while its files are unchanged (same inode, size
 * and modification time; sr_acl_policy_unchanged): a login's auth and account stages, and every login of
 * a long-running service, compile it once. A replaced file (tde-acl install
 * renames) has a new inode, so it is compiled again at the next decision. */
static struct {
    pthread_mutex_t lock;
    char path[4096];
    sr_acl_file_id_t id;
    sr_acl_policy_t *p;
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static sr_err_t usable_policy_file(const char *path, struct stat *st)
{
    if (stat(path, st) != 0) return sr_err_set_errno(SR_ERR_NOT_FOUND, errno, "cannot open policy file %s", path);
    if (st->st_mode & 022) /* whoever may write it may let themselves in */
        return sr_err_set(SR_ERR_PERMISSION, "policy file %s is writable by group or others (mode %03o)", path,
                          (unsigned)(st->st_mode & 0777));
    return SR_OK;
}

/* Decides with the cached or freshly compiled policy (under the lock). */
static sr_err_t decide_with_policy(const char *path, const sr_acl_request_t *req, sr_acl_decision_t *d, char *version,
                                   size_t cap)
{
    struct stat st;
    sr_acl_file_id_t id;
    pthread_mutex_lock(&cache.lock);
    sr_err_t rc = usable_policy_file(path, &st);
    if (rc == SR_OK) sr_acl_file_id_of(&st, &id);
    if (rc == SR_OK && !(cache.p && !strcmp(cache.path, path) && sr_acl_file_id_equal(&cache.id, &id) &&
                         sr_acl_policy_unchanged(cache.p))) {
        sr_acl_policy_t *fresh = NULL;
        rc = sr_acl_compile_trusted(path, &fresh);
        if (rc == SR_OK) {
            sr_acl_policy_free(cache.p);
            cache.p = fresh, cache.id = id;
            snprintf(cache.path, sizeof cache.path, "%s", path);
        }
    }
    if (rc == SR_OK) {
        sr_acl_decide(cache.p, req, d);
        snprintf(version, cap, "%s", sr_acl_policy_version(cache.p));
    }
    pthread_mutex_unlock(&cache.lock);
    return rc;
}

/* The agent's decision, if it decided with this very file (see above);
 * *recorded: the agent recorded it durably itself. */
static sr_err_t decide_by_agent(const args_t *a, const sr_acl_request_t *req, sr_acl_decision_t *d, char *version,
                                size_t cap, int *recorded)
{
    struct stat st;
    sr_acl_file_id_t mine;
    sr_err_t rc = usable_policy_file(a->policy, &st);
    if (rc != SR_OK) return rc;
    sr_acl_file_id_of(&st, &mine);
    const char *field[5] = {a->policy, req->server ? req->server : "", req->account ? req->account : "",
                            req->source ? req->source : "", req->service ? req->service : ""};
    uint8_t msg[SR_AGENT_REQUEST_MAX], ans[1024];
    size_t n = 0, got = 0;
    msg[n++] = 'D';
    for (int i = 0; i < 5; i++) {
        size_t len = strlen(field[i]) + 1;
        if (n + len > sizeof msg) return sr_err_set(SR_ERR_LIMIT, "decision request too long");
        memcpy(msg + n, field[i], len), n += len;
    }
    rc = sr_agent_request(a->agent_socket, msg, n, ans, sizeof ans, &got);
    if (rc != SR_OK) return rc;
    /* 'K' | allow | recorded | identity (32) | why NUL | digest NUL */
    enum { WHY = 35 };
    const uint8_t *why_end = got > WHY ? memchr(ans + WHY, '\0', got - WHY) : NULL;
    const uint8_t *digest = why_end ? why_end + 1 : NULL;
    if (!digest || digest >= ans + got || !memchr(digest, '\0', got - (size_t)(digest - ans)) ||
        (size_t)(why_end - (ans + WHY)) >= sizeof d->why)
        return sr_err_set(SR_ERR_PROTOCOL, "the agent's decision is malformed");
    sr_acl_file_id_t theirs = {sr_get_be64(ans + 3), sr_get_be64(ans + 11), sr_get_be64(ans + 19),
                               (int64_t)sr_get_be64(ans + 27)};
    /* recorded or not, a decision made with another version of the file is not this login's */
    if (!sr_acl_file_id_equal(&mine, &theirs))
        return sr_err_set(SR_ERR_STATE, "the agent decided with another version of %s", a->policy);
    memset(d, 0, sizeof *d);
    d->allow = ans[1] == 1;
    *recorded = ans[2] == 1;
    memcpy(d->why, ans + WHY, (size_t)(why_end - (ans + WHY)) + 1);
    snprintf(version, cap, "%.*s", (int)cap - 1, (const char *)digest);
    return SR_OK;
}

static int decide(pam_handle_t *pamh, int argc, const char **argv, int refused)
{
    args_t a;
    const char *user = item(pamh, PAM_USER), *rhost = item(pamh, PAM_RHOST), *service = item(pamh, PAM_SERVICE);
    char detail[600];
    if (parse_args(argc, argv, &a) != 0) {
        (void)record(&a, user, rhost, service, "failure", "pam_strongroom: bad module arguments (policy= is required)");
        return refused;
    }
    sr_acl_request_t req = {.server = a.server, .account = user, .source = rhost, .service = service};
    sr_acl_decision_t d;
    char version[40];
    int recorded = 0, by_agent = a.agent_socket && decide_by_agent(&a, &req, &d, version, sizeof version, &recorded) == SR_OK;
    if (!by_agent && decide_with_policy(a.policy, &req, &d, version, sizeof version) != SR_OK) {
        snprintf(detail, sizeof detail, "policy unavailable, refused (fail closed): %s", sr_err_detail());
        (void)record(&a, user, rhost, service, "failure", detail);
        return refused;
    }
    snprintf(detail, sizeof detail, "%s; policy %s%s", d.why, version, by_agent ? " (decided by tde-agent)" : "");
    if (!recorded && record(&a, user, rhost, service, d.allow ? "success" : "denied", detail) != SR_OK) return refused;
    return d.allow ? PAM_SUCCESS : refused;
}

#define DECIDED_KEY "strongroom-allowed"

static void forget(pam_handle_t *pamh, void *data, int status) { (void)pamh, (void)status, free(data); }

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    int rc = decide(pamh, argc, argv, PAM_AUTH_ERR);
    /* the account stage of this same login need not decide (and record) it again */
    const char *user = item(pamh, PAM_USER), *rhost = item(pamh, PAM_RHOST);
    char *mark = rc == PAM_SUCCESS ? malloc(600) : NULL;
    if (mark) snprintf(mark, 600, "%s|%s", user ? user : "", rhost ? rhost : "");
    if (mark && pam_set_data(pamh, DECIDED_KEY, mark, forget) != PAM_SUCCESS) free(mark);
    return rc;
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh, (void)flags, (void)argc, (void)argv;
    return PAM_IGNORE;
}

PAM_EXTERN int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    const void *mark = NULL;
    const char *user = item(pamh, PAM_USER), *rhost = item(pamh, PAM_RHOST);
    char now[600];
    snprintf(now, sizeof now, "%s|%s", user ? user : "", rhost ? rhost : "");
    /* allowed (and recorded) by the auth stage of this login, for this user and address */
    if (pam_get_data(pamh, DECIDED_KEY, &mark) == PAM_SUCCESS && mark && !strcmp(mark, now)) return PAM_SUCCESS;
    return decide(pamh, argc, argv, PAM_PERM_DENIED);
}
