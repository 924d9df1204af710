/*
 * sr_time.h — wall and monotonic clocks, RFC 3339.
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_TIME_H
#define STRONGROOM_SR_TIME_H

#include "sr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Time
 * ---------------------------------------------------------------------- */
/* Monotonic clock, for timeouts and durations. */
SR_API uint64_t sr_time_mono_ns(void);
SR_API uint64_t sr_time_mono_ms(void);
/* Wall clock, microseconds since the Unix epoch (UTC). */
SR_API int64_t sr_time_now_us(void);
/* "2026-11-23T03:20:21.123456Z" (digits: 0 = seconds, 3 = ms, 6 = us).
 * `out` holds at least SR_TIME_RFC3339_MAX bytes. */
#define SR_TIME_RFC3339_MAX 32
SR_API sr_err_t sr_time_format_rfc3339(int64_t unix_us, int digits, char *out, size_t out_len);
/* Accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)" and "YYYY-MM-DD". */
SR_API sr_err_t sr_time_parse_rfc3339(const char *text, int64_t *unix_us);

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_TIME_H */
