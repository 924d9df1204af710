/*
 * sr_event.h — security events, their sink and their vocabulary.
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_EVENT_H
#define STRONGROOM_SR_EVENT_H

#include "sr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Security events
 *
 * Components report what a reviewer must see (a key unwrapped, a page that
 * failed authentication, a login refused) through sr_event_emit(). The audit
 * writer installs itself as the sink (audit/audit.h); until one is installed,
 * events go to the log at NOTICE. Fields are short ASCII, never secrets.
 * ---------------------------------------------------------------------- */
typedef struct sr_event {
    const char *component; /* "tde", "keymgr", "kmsd", "agent", "pam", ... */
    const char *event;     /* dotted name: "page.auth_failed", "key.unwrap" */
    const char *subject;   /* who: user, node UUID, uid/pid; NULL if none */
    const char *object;    /* what: key or tablespace UUID, "file:page"; NULL if none */
    const char *outcome;   /* "success", "failure" or "denied" */
    const char *detail;    /* one line of free text; NULL if none */
    const char *source;    /* where from: IP address, "local"; NULL if none */
} sr_event_t;

typedef sr_err_t (*sr_event_sink_fn)(void *sink_ctx, const sr_event_t *event);

/* Installs the process-wide sink (NULL restores the log fallback). */
SR_API void sr_event_set_sink(sr_event_sink_fn sink, void *sink_ctx);
/* Whether a sink is installed: events are recorded (an audit log or the
 * host's sealer), not only logged. */
SR_API int sr_event_has_sink(void);
/* Delivers an event to the sink. A sink failure is returned: callers that
 * must fail closed (the architecture says which) act on it. An event that
 * is not in the vocabulary below is refused (SR_ERR_INVALID_ARG): a name
 * made up in one place cannot be searched for by anyone. */
SR_API sr_err_t sr_event_emit(const sr_event_t *event);

/* The vocabulary: every event strongroom's components emit, with what its
 * fields hold. An event name ending in ".*" stands for a family (kms
 * "kmip.*": one per KMIP operation). docs/audit.md lists the same table
 * (tde-audit events prints it; a test compares the two). */
typedef struct sr_event_spec {
    const char *component, *event;
    const char *subject, *object, *when; /* what the fields hold; when it is emitted */
} sr_event_spec_t;
SR_API const sr_event_spec_t *sr_event_vocabulary(size_t *count);
SR_API const sr_event_spec_t *sr_event_lookup(const char *component, const char *event);

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_EVENT_H */
