/*
 * sr_uuid.h — UUIDs (RFC 4122).
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_UUID_H
#define STRONGROOM_SR_UUID_H

#include "sr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * UUIDs (libuuid), RFC 4122, "0e5d7b32-....-...." lower case.
 * ---------------------------------------------------------------------- */
#define SR_UUID_BYTES 16
#define SR_UUID_STR_LEN 36 /* without the terminating NUL */

typedef struct sr_uuid {
    uint8_t bytes[SR_UUID_BYTES];
} sr_uuid_t;

SR_API void sr_uuid_generate(sr_uuid_t *out); /* random (version 4) */
SR_API void sr_uuid_format(const sr_uuid_t *uuid, char out[SR_UUID_STR_LEN + 1]);
SR_API sr_err_t sr_uuid_parse(const char *text, sr_uuid_t *out);
SR_API int sr_uuid_equal(const sr_uuid_t *a, const sr_uuid_t *b);
SR_API int sr_uuid_is_nil(const sr_uuid_t *uuid);

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_UUID_H */
