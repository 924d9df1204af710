/*
 * event.c — the process-wide security-event sink.
 *
 * Components call sr_event_emit(); the audit writer (or the agent's
 * forwarder) installs itself as the sink. Without a sink the event still
 * reaches a human through the log, so nothing is silently dropped.
 */
#include "common.h"

#include <pthread.h>

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

static const char *or_dash(const char *s) { return s && *s ? s : "-"; }

sr_err_t sr_event_emit(const sr_event_t *ev)
{
    if (!ev || !ev->component || !ev->event || !ev->outcome)
        return sr_err_set(SR_ERR_INVALID_ARG, "sr_event_emit: component, event and outcome are required");
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
