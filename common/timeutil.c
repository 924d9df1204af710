/* timeutil.c — monotonic and wall clocks, RFC 3339 in UTC. */
#include "common.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t sr_time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t sr_time_mono_ms(void) { return sr_time_mono_ns() / 1000000u; }

int64_t sr_time_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

sr_err_t sr_time_format_rfc3339(int64_t unix_us, int digits, char *out, size_t out_len)
{
    if (digits != 0 && digits != 3 && digits != 6)
        return sr_err_set(SR_ERR_INVALID_ARG, "RFC 3339 fraction digits must be 0, 3 or 6, not %d", digits);
    int64_t secs = floor_div(unix_us, 1000000);
    int64_t frac = unix_us - secs * 1000000;
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) return sr_err_set(SR_ERR_INVALID_ARG, "time %lld out of range", (long long)unix_us);
    char date[24];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    int n;
    if (digits == 0)
        n = snprintf(out, out_len, "%sZ", date);
    else if (digits == 3)
        n = snprintf(out, out_len, "%s.%03dZ", date, (int)(frac / 1000));
    else
        n = snprintf(out, out_len, "%s.%06dZ", date, (int)frac);
    if (n < 0 || (size_t)n >= out_len) return sr_err_set(SR_ERR_BUFFER_TOO_SMALL, "RFC 3339 buffer too small");
    return SR_OK;
}

/* Reads exactly `n` digits. */
static int read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) return 0;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 1;
}

static int expect(const char **p, char c)
{
    if (**p != c) return 0;
    (*p)++;
    return 1;
}

sr_err_t sr_time_parse_rfc3339(const char *text, int64_t *unix_us)
{
    const char *p = text;
    int year, mon, day, hour = 0, min = 0, sec = 0;
    int64_t frac_us = 0, offset_s = 0;
    if (!text || !read_digits(&p, 4, &year) || !expect(&p, '-') || !read_digits(&p, 2, &mon) ||
        !expect(&p, '-') || !read_digits(&p, 2, &day))
        goto bad;
    if (*p != '\0') {
        if ((*p != 'T' && *p != 't' && *p != ' ') || !(p++, read_digits(&p, 2, &hour)) || !expect(&p, ':') ||
            !read_digits(&p, 2, &min) || !expect(&p, ':') || !read_digits(&p, 2, &sec))
            goto bad;
        if (*p == '.') {
            p++;
            int ndig = 0;
            int64_t scale = 100000;
            while (isdigit((unsigned char)*p)) {
                if (ndig < 6) frac_us += (*p - '0') * scale;
                scale /= 10;
                ndig++;
                p++;
            }
            if (ndig == 0) goto bad;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p == '-' ? -1 : 1, oh, om;
            p++;
            if (!read_digits(&p, 2, &oh) || !expect(&p, ':') || !read_digits(&p, 2, &om) || oh > 23 || om > 59)
                goto bad;
            offset_s = sign * (oh * 3600 + om * 60);
        } else {
            goto bad;
        }
        if (*p != '\0') goto bad;
    }
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) goto bad;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[mon - 1] + (mon == 2 && leap)) goto bad; /* 2026-02-30 */
    /* days since 1970-01-01 (civil calendar arithmetic: no timegm, no locale, no lock) */
    int y = mon <= 2 ? year - 1 : year;
    int era = (y >= 0 ? y : y - 399) / 400, yoe = y - era * 400;
    int doy = (153 * (mon + (mon > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + doe - 719468;
    int64_t t = days * 86400 + hour * 3600 + min * 60 + sec;
    *unix_us = ((int64_t)t - offset_s) * 1000000 + frac_us;
    return SR_OK;
bad:
    return sr_err_set(SR_ERR_PARSE, "'%s' is not an RFC 3339 time (want e.g. 2026-11-23T03:20:21Z or 2026-11-23)",
                      text ? text : "");
}
