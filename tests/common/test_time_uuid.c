/* Time helpers (RFC 3339, clocks) and UUIDs. */
#include "sr_test.h"

static void test_rfc3339_format(void)
{
    char buf[SR_TIME_RFC3339_MAX];
    SR_CHECK_OK(sr_time_format_rfc3339(0, 0, buf, sizeof buf));
    SR_CHECK_STR(buf, "1970-01-01T00:00:00Z");
    SR_CHECK_OK(sr_time_format_rfc3339(1795404021123456LL, 6, buf, sizeof buf));
    SR_CHECK_STR(buf, "2026-11-23T03:20:21.123456Z");
    SR_CHECK_OK(sr_time_format_rfc3339(1795404021123456LL, 3, buf, sizeof buf));
    SR_CHECK_STR(buf, "2026-11-23T03:20:21.123Z");
    SR_CHECK_OK(sr_time_format_rfc3339(-1, 6, buf, sizeof buf)); /* before the epoch */
    SR_CHECK_STR(buf, "1969-12-31T23:59:59.999999Z");
    SR_CHECK_ERR(sr_time_format_rfc3339(0, 2, buf, sizeof buf), SR_ERR_INVALID_ARG);
    SR_CHECK_ERR(sr_time_format_rfc3339(0, 6, buf, 10), SR_ERR_BUFFER_TOO_SMALL);
}

static void test_rfc3339_parse(void)
{
    int64_t us;
    SR_CHECK_OK(sr_time_parse_rfc3339("2026-11-23T03:20:21.123456Z", &us));
    SR_CHECK_EQ_INT(us, 1795404021123456LL);
    SR_CHECK_OK(sr_time_parse_rfc3339("2026-11-23T05:20:21.123456+02:00", &us));
    SR_CHECK_EQ_INT(us, 1795404021123456LL);
    SR_CHECK_OK(sr_time_parse_rfc3339("2026-11-23", &us));
    SR_CHECK_EQ_INT(us, 1795392000000000LL);
    SR_CHECK_OK(sr_time_parse_rfc3339("2026-11-23T03:20:21.5Z", &us));
    SR_CHECK_EQ_INT(us % 1000000, 500000);
    const char *bad[] = {"", "2026-13-01", "2026-02-30", "2026-11-23T03:20", "2026-11-23T03:20:21",
                         "2026-11-23T03:20:21Zjunk", "2026-11-23T03:20:21.Z", "26-11-23"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        SR_CHECK_ERR(sr_time_parse_rfc3339(bad[i], &us), SR_ERR_PARSE);
        SR_CHECK_CONTAINS(sr_err_detail(), "is not an RFC 3339 time");
    }
}

static void test_clocks(void)
{
    uint64_t a = sr_time_mono_ns(), b = sr_time_mono_ns();
    SR_CHECK(b >= a);
    SR_CHECK(sr_time_now_us() > 1700000000000000LL);
}

static void test_uuid(void)
{
    sr_uuid_t a, b, parsed;
    sr_uuid_generate(&a);
    sr_uuid_generate(&b);
    SR_CHECK(!sr_uuid_equal(&a, &b));
    SR_CHECK(!sr_uuid_is_nil(&a));
    SR_CHECK_EQ_INT(a.bytes[6] >> 4, 4); /* version 4 */
    char text[SR_UUID_STR_LEN + 1];
    sr_uuid_format(&a, text);
    SR_CHECK_EQ_INT(strlen(text), 36);
    SR_CHECK_OK(sr_uuid_parse(text, &parsed));
    SR_CHECK(sr_uuid_equal(&a, &parsed));
    SR_CHECK_ERR(sr_uuid_parse("not-a-uuid", &parsed), SR_ERR_PARSE);
    SR_CHECK_ERR(sr_uuid_parse("0e5d7b32-1111-2222-3333-44445555666", &parsed), SR_ERR_PARSE);
    sr_uuid_t nil = {{0}};
    SR_CHECK(sr_uuid_is_nil(&nil));
}

int main(void)
{
    SR_RUN(test_rfc3339_format);
    SR_RUN(test_rfc3339_parse);
    SR_RUN(test_clocks);
    SR_RUN(test_uuid);
    return sr_test_finish();
}
