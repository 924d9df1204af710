/*
 * sr_api.h — the export and checking macros every header uses, and the library version.
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_API_H
#define STRONGROOM_SR_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SR_API marks what libstrongroom.so exports: the functions the public
 * headers declare with it, nothing else (the library is built with hidden
 * visibility; tests/api checks the exported list against the headers). */
#if defined(__GNUC__) || defined(__clang__)
#define SR_PRINTF(fmt_idx, args_idx) __attribute__((format(printf, fmt_idx, args_idx)))
#define SR_MUST_CHECK __attribute__((warn_unused_result))
#ifndef SR_API /* modules that export one entry point define it empty */
#define SR_API __attribute__((visibility("default")))
#endif
#else
#define SR_PRINTF(fmt_idx, args_idx)
#define SR_MUST_CHECK
#ifndef SR_API
#define SR_API
#endif
#endif

/* "strongroom 0.1.0" (libstrongroom.so only). */
SR_API const char *sr_version(void);

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_API_H */
