/* Error table, detail messages (per thread), errno mapping. */
#include <errno.h>
#include <pthread.h>

#include "sr_test.h"

static void test_names_and_texts(void)
{
    SR_CHECK_STR(sr_err_name(SR_ERR_TDE_PAGE_AUTH), "SR_ERR_TDE_PAGE_AUTH");
    SR_CHECK_STR(sr_strerror(SR_ERR_TDE_PAGE_AUTH), "page failed authentication");
    SR_CHECK_STR(sr_strerror(SR_OK), "success");
    SR_CHECK_STR(sr_strerror((sr_err_t)9999), "unknown error");
    SR_CHECK_STR(sr_err_name((sr_err_t)9999), "SR_ERR_UNKNOWN");
}

static void test_detail(void)
{
    sr_err_clear();
    SR_CHECK_STR(sr_err_detail(), "success");
    SR_CHECK_EQ_INT(sr_err_set(SR_ERR_PARSE, "%s:%d: bad", "x.conf", 7), SR_ERR_PARSE);
    SR_CHECK_STR(sr_err_detail(), "x.conf:7: bad");
    SR_CHECK_EQ_INT(sr_err_last(), SR_ERR_PARSE);
    sr_err_set_errno(SR_ERR_IO, ENOENT, "open %s", "/nope");
    SR_CHECK_STR(sr_err_detail(), "open /nope: No such file or directory");
}

static void *other_thread(void *arg)
{
    sr_err_set(SR_ERR_NETWORK, "thread detail");
    return arg;
}

static void test_detail_is_per_thread(void)
{
    sr_err_set(SR_ERR_CONFIG, "main detail");
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    SR_CHECK_STR(sr_err_detail(), "main detail");
}

static void test_errno_mapping(void)
{
    SR_CHECK_EQ_INT(sr_err_from_errno(ENOSPC), SR_ERR_DISK_FULL);
    SR_CHECK_EQ_INT(sr_err_from_errno(ENOENT), SR_ERR_NOT_FOUND);
    SR_CHECK_EQ_INT(sr_err_from_errno(EACCES), SR_ERR_PERMISSION);
    SR_CHECK_EQ_INT(sr_err_from_errno(EIO), SR_ERR_IO);
}

static int sink_calls;
static sr_err_t counting_sink(void *ctx, const sr_event_t *ev)
{
    sink_calls++;
    SR_CHECK_STR(ev->event, "page.auth_failed");
    return *(sr_err_t *)ctx;
}

static void test_event_sink(void)
{
    sr_event_t ev = {.component = "tde", .event = "page.auth_failed", .outcome = "failure", .object = "x.db:3"};
    sr_err_t sink_result = SR_OK;
    sr_event_set_sink(counting_sink, &sink_result);
    SR_CHECK_OK(sr_event_emit(&ev));
    sink_result = SR_ERR_DISK_FULL; /* a failing sink is reported to the caller */
    SR_CHECK_ERR(sr_event_emit(&ev), SR_ERR_DISK_FULL);
    SR_CHECK_EQ_INT(sink_calls, 2);
    sr_event_set_sink(NULL, NULL);
    sr_event_t incomplete = {.component = "tde"};
    SR_CHECK_ERR(sr_event_emit(&incomplete), SR_ERR_INVALID_ARG);
}

int main(void)
{
    SR_RUN(test_names_and_texts);
    SR_RUN(test_detail);
    SR_RUN(test_detail_is_per_thread);
    SR_RUN(test_errno_mapping);
    SR_RUN(test_event_sink);
    return sr_test_finish();
}
