/*
 * pam_strongroom.so — the access policy as a PAM gate.
 *
 *   auth     requisite  pam_strongroom.so policy=/etc/strongroom/acl.conf [server=NAME] [audit_socket=PATH]
 *   account  required   pam_strongroom.so policy=/etc/strongroom/acl.conf
 *
 * Stacked `requisite` before the password check, a refused client is
 * refused before it is asked for a password. Reads PAM_USER (PostgreSQL: the
 * role), PAM_RHOST (the numeric client address; absent for a Unix-socket
 * login; a name is untrusted and matches only `*`) and PAM_SERVICE. No DNS
 * lookups. The policy is compiled at each call (PostgreSQL loads the module
 * in a fresh backend per login, so a changed file takes effect at the next
 * login, and a half-written one is refused as a whole). Fails closed: a
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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct args {
    const char *policy, *server, *audit_socket;
} args_t;

static int parse_args(int argc, const char **argv, args_t *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "policy=", 7)) a->policy = argv[i] + 7;
        else if (!strncmp(argv[i], "server=", 7)) a->server = argv[i] + 7;
        else if (!strncmp(argv[i], "audit_socket=", 13)) a->audit_socket = argv[i] + 13;
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

static int decide(pam_handle_t *pamh, int argc, const char **argv, int refused)
{
    args_t a;
    const char *user = item(pamh, PAM_USER), *rhost = item(pamh, PAM_RHOST), *service = item(pamh, PAM_SERVICE);
    char detail[600];
    if (parse_args(argc, argv, &a) != 0) {
        (void)record(&a, user, rhost, service, "failure", "pam_strongroom: bad module arguments (policy= is required)");
        return refused;
    }
    sr_acl_policy_t *p = NULL;
    if (sr_acl_compile_file(a.policy, &p) != SR_OK) {
        snprintf(detail, sizeof detail, "policy unavailable, refused (fail closed): %s", sr_err_detail());
        (void)record(&a, user, rhost, service, "failure", detail);
        return refused;
    }
    sr_acl_request_t req = {.server = a.server, .account = user, .source = rhost, .service = service};
    sr_acl_decision_t d;
    sr_acl_decide(p, &req, &d);
    snprintf(detail, sizeof detail, "%s; policy %s", d.why, sr_acl_policy_version(p));
    sr_acl_policy_free(p);
    if (record(&a, user, rhost, service, d.allow ? "success" : "denied", detail) != SR_OK) return refused;
    return d.allow ? PAM_SUCCESS : refused;
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    return decide(pamh, argc, argv, PAM_AUTH_ERR);
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh, (void)flags, (void)argc, (void)argv;
    return PAM_IGNORE;
}

PAM_EXTERN int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    return decide(pamh, argc, argv, PAM_PERM_DENIED);
}
