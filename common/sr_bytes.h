/*
 * sr_bytes.h — big-endian integers, hex, JSON strings.
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_BYTES_H
#define STRONGROOM_SR_BYTES_H

#include <stdio.h>
#include "sr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes s as a JSON string (quotes, \" \\ and \u00XX escapes); NULL is "". */
SR_API void sr_json_string(FILE *f, const char *s);

/* Lower-case hex; `out` holds 2*len+1 bytes. */
SR_API void sr_hex_encode(const void *data, size_t len, char *out);
/* Exactly `len` bytes from 2*len hex digits (either case). */
SR_API sr_err_t sr_hex_decode(const char *hex, void *out, size_t len);

/* ------------------------------------------------------------------------
 * Big-endian integers: every on-disk and on-wire format here (key header,
 * page trailer, wrapped key, KMIP TTLV, sealer frames) is network order.
 * ------------------------------------------------------------------------ */
static inline void sr_put_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }
static inline void sr_put_be32(uint8_t *p, uint32_t v) { sr_put_be16(p, (uint16_t)(v >> 16)), sr_put_be16(p + 2, (uint16_t)v); }
static inline void sr_put_be64(uint8_t *p, uint64_t v) { sr_put_be32(p, (uint32_t)(v >> 32)), sr_put_be32(p + 4, (uint32_t)v); }
static inline uint16_t sr_get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t sr_get_be32(const uint8_t *p) { return (uint32_t)sr_get_be16(p) << 16 | sr_get_be16(p + 2); }
static inline uint64_t sr_get_be64(const uint8_t *p) { return (uint64_t)sr_get_be32(p) << 32 | sr_get_be32(p + 4); }

/* Whether all n bytes are zero (a page or record never written, a header
 * zeroed in place); reads every byte whatever it finds. */
static inline int sr_bytes_all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc |= b[i];
    return acc == 0;
}

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_BYTES_H */
