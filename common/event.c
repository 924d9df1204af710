/*
 * event.c — the process-wide security-event sink.
 *
 * Components call sr_event_emit(); the audit writer (or the agent's
 * forwarder) installs itself as the sink. Without a sink the event still
 * reaches a human through the log, so nothing is silently dropped.
 */
#include "common.h"

#include <pthread.h>
#include <string.h>

static pthread_rwlock_t sink_lock = PTHREAD_RWLOCK_INITIALIZER;
static sr_event_sink_fn sink_fn;
static void *sink_ctx;

void sr_event_set_sink(sr_event_sink_fn sink, void *ctx)
{
    pthread_rwlock_wrlock(&sink_lock);
    sink_fn = sink;
    sink_ctx = ctx;
    pthread_rwlock_unlock(&sink_lock);
}

int sr_event_has_sink(void)
{
    pthread_rwlock_rdlock(&sink_lock);
    int has = sink_fn != NULL;
    pthread_rwlock_unlock(&sink_lock);
    return has;
}

static const char *or_dash(const char *s) { return s && *s ? s : "-"; }

/* Subjects and objects, said the same way everywhere. */
#define LOCAL_PROCESS "uid=U pid=P (the process's own)"
#define PEER_PROCESS "uid=U pid=P exe=PATH of the asking process (the kernel's: SO_PEERCRED)"
#define DB_PATH "the database path"
#define PRINCIPAL "the client certificate's CN"

static const sr_event_spec_t vocabulary[] = {
    /* tde: the VFS and the tablespace layer, in every process that opens a database */
    {"tde", "tablespace.open", LOCAL_PROCESS, DB_PATH, "a database opened through strongroom (success; the open "
     "fails if it cannot be recorded), or refused: wrong key, not encrypted, key service refused (failure)"},
    {"tde", "tablespace.created", LOCAL_PROCESS, DB_PATH, "a new encrypted tablespace (detail: its UUID)"},
    {"tde", "key.rolled", LOCAL_PROCESS, DB_PATH, "a data key reached its encryption limit; a new version is active"},
    {"tde", "page.auth_failed", LOCAL_PROCESS, DB_PATH, "a page, WAL frame or journal page failed authentication "
     "(detail: which page and why)"},
    {"tde", "tablespace.truncated", LOCAL_PROCESS, DB_PATH, "the file is shorter than its header says"},
    {"tde", "wal.torn_frame", LOCAL_PROCESS, DB_PATH, "the WAL ends in a frame that does not authenticate after "
     "the last commit (a crash mid-write): the log ends there"},
    {"tde", "wal.frames_discarded", LOCAL_PROCESS, DB_PATH, "WAL frames after a bad one were ignored, committed "
     "transactions among them"},
    {"tde", "journal.unsealed", LOCAL_PROCESS, DB_PATH, "a rollback journal whose seal does not verify was not "
     "played back"},
    /* tdectl: the DBA's actions */
    {"tdectl", "tablespace.verify", LOCAL_PROCESS, DB_PATH, "tdectl verify: every page authenticated, or not"},
    {"tdectl", "tablespace.encrypt", LOCAL_PROCESS, DB_PATH, "tdectl encrypt wrote an encrypted copy (object: the "
     "copy, detail: the source)"},
    {"tdectl", "tablespace.decrypt", LOCAL_PROCESS, DB_PATH, "tdectl decrypt wrote a plaintext copy (detail: the "
     "copy)"},
    {"tdectl", "tablespace.backup", LOCAL_PROCESS, DB_PATH, "tdectl backup: an encrypted, verified copy (detail: "
     "the copy) or a failure"},
    {"tdectl", "tablespace.restore", LOCAL_PROCESS, DB_PATH, "tdectl restore: a verified backup copied to a new "
     "database (detail: the backup)"},
    {"tdectl", "key.rekey", LOCAL_PROCESS, DB_PATH, "a new data key version"},
    {"tdectl", "key.versions_dropped", LOCAL_PROCESS, DB_PATH, "key versions no page uses left the header"},
    {"tdectl", "key.master_rotated", LOCAL_PROCESS, "the key file", "a new master key version in the key file"},
    {"tdectl", "key.rewrap", LOCAL_PROCESS, DB_PATH, "the data keys re-wrapped under the current master key"},
    /* audit: the log itself and the collector */
    {"audit", "audit.started", "-", "-", "a writer opened the log (detail: pid, host, key id)"},
    {"audit", "audit.checkpoint", "-", "-", "a signed checkpoint sealing the records before it"},
    {"audit", "audit.rotated", "-", "-", "the log continues from a rotated file (detail: its name)"},
    {"audit", "audit.truncated", "-", "-", "a torn last record was cut at open"},
    {"audit", "audit.tamper_suspected", "-", "-", "records the writer cannot prove were written by a key holder "
     "were moved aside (detail: seq range and where they went)"},
    {"audit", "collect.refused", PRINCIPAL, "-", "the collector refused a forwarded record (detail: why)"},
    /* kms: kmsd and kmsctl */
    {"kms", "kmip.*", PRINCIPAL, "the object UUID", "one per KMIP request, allowed or refused: kmip.create, "
     "kmip.get, kmip.decrypt, kmip.enrol, ... (detail: role and reason)"},
    {"kms", "tls.connection", "the peer address or CN", "-", "a TLS connection refused (handshake failure, revoked "
     "certificate)"},
    {"kms", "key.grant", "kmsctl", "the key UUID", "kmsctl key grant (detail: to whom)"},
    {"kms", "key.ungrant", "kmsctl", "the key UUID", "kmsctl key ungrant: a grant taken back (detail: from whom)"},
    {"kms", "token.created", "kmsctl", "the node group", "kmsctl token create (never the token itself)"},
    {"kms", "cert.issued", "kmsctl", "the certificate's CN", "kmsctl cert issue: a client certificate and its role "
     "(detail: role, days, fingerprint)"},
    {"kms", "cert.revoked", "kmsctl", "the certificate's CN", "kmsctl cert revoke: every certificate of the name "
     "refused (detail: how many)"},
    {"kms", "node.revoked", "kmsctl", "the node UUID", "kmsctl node revoke"},
    {"kms", "node.lease_expired", "the node UUID", "the node key UUID", "a node's lease ran out: its key revoked"},
    {"kms", "node.key_destroyed", "the node UUID", "the node key UUID", "a revoked node key destroyed after its "
     "retention period"},
    {"kms", "policy.pushed", "kmsctl", "policy vN", "kmsctl policy push: a new access policy version for the "
     "agents (detail: its digest, rules, source file)"},
    {"kms", "store.backup", "kmsctl", "the backup file", "kmsctl store backup"},
    {"kms", "store.restore", "kmsctl", "the backup file", "kmsctl store restore"},
    {"kms", "key.deactivated", "kmsd", "the key UUID", "a key's Deactivation Date passed: saved Deactivated, the "
     "agents drop their cached data keys"},
    /* agent: tde-agent */
    {"agent", "node.enrol", "the node UUID", "the node key UUID", "the agent enrolled (or failed to)"},
    {"agent", "node.leave", "the node UUID", "the node key UUID", "the agent left (SIGTERM): its key revoked"},
    {"agent", "node.membership_ended", "the node UUID", "the node key UUID", "kmsd says the node is no longer a "
     "member (revoked, expired)"},
    {"agent", "node.keys_dropped", "the node UUID", "the node key UUID", "the KMS revoked a key or took back a "
     "grant (its access epoch moved): every cached data key dropped"},
    {"agent", "policy.installed", "the node UUID", "policy vN", "a pushed access policy validated and put in "
     "force (detail: its digest and path)"},
    {"agent", "policy.rejected", "the node UUID", "policy vN", "a pushed access policy that does not compile on this "
     "node: the one in force stays (detail: file:line and why)"},
    {"agent", "key.request", PEER_PROCESS, "the tablespace UUID", "a local process asked for a data key: served "
     "or denied by policy"},
    /* pam: pam_strongroom.so */
    {"pam", "login", "the account", "the PAM service", "a login decision (success or denied; detail: the rule and "
     "the policy digest; source: the client address). When the agent decided and recorded it (the module's "
     "agent_socket=): subject " PEER_PROCESS ", detail `account NAME: ...`"},
};

const sr_event_spec_t *sr_event_vocabulary(size_t *count)
{
    *count = sizeof vocabulary / sizeof vocabulary[0];
    return vocabulary;
}

const sr_event_spec_t *sr_event_lookup(const char *component, const char *event)
{
    for (size_t i = 0; i < sizeof vocabulary / sizeof vocabulary[0]; i++) {
        const sr_event_spec_t *v = &vocabulary[i];
        size_t n = strlen(v->event);
        if (strcmp(v->component, component) != 0) continue;
        if (n >= 2 && strcmp(v->event + n - 2, ".*") == 0 ? strncmp(event, v->event, n - 1) == 0 && event[n - 1]
                                                            : strcmp(event, v->event) == 0)
            return v;
    }
    return NULL;
}

sr_err_t sr_event_emit(const sr_event_t *ev)
{
    if (!ev || !ev->component || !ev->event || !ev->outcome)
        return sr_err_set(SR_ERR_INVALID_ARG, "sr_event_emit: component, event and outcome are required");
    if (!sr_event_lookup(ev->component, ev->event))
        return sr_err_set(SR_ERR_INVALID_ARG, "event %s %s is not in the event vocabulary (common/event.c, "
                          "docs/audit.md)", ev->component, ev->event);
    sr_err_t rc = SR_OK;
    pthread_rwlock_rdlock(&sink_lock);
    if (sink_fn)
        rc = sink_fn(sink_ctx, ev);
    else
        sr_log(SR_LOG_NOTICE, "event %s.%s outcome=%s subject=%s object=%s source=%s detail=%s",
               ev->component, ev->event, ev->outcome, or_dash(ev->subject), or_dash(ev->object),
               or_dash(ev->source), or_dash(ev->detail));
    pthread_rwlock_unlock(&sink_lock);
    return rc;
}
