/*
 * kmip_ttlv.c — the TTLV codec: a strict decoder into a flat tree, an
 * encoder with back-patched structure lengths, and a JSON dump.
 *
 * Decoder rules (each violation is SR_ERR_KMIP_DECODE naming the offset):
 *   - a tag is 0x42xxxx (specification) or 0x54xxxx (extension);
 *   - Integer, Enumeration, Interval: length 4, then 4 zero bytes of padding;
 *     Long Integer, Date-Time, Date-Time Extended: length 8; Boolean: length
 *     8 holding 0 or 1; Big Integer: a non-zero multiple of 8;
 *   - Text String (valid UTF-8) and Byte String: any length, zero padded to 8;
 *   - a Structure's children fill its length exactly; nesting deeper than
 *     SR_KMIP_MAX_DEPTH is SR_ERR_KMIP_DEPTH;
 *   - no length may run past the buffer (all arithmetic in 64 bits).
 */
#include "kmip.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names -------------------------------------------------------------------------- */

typedef struct tag_name {
    uint32_t tag;
    const char *name;
} tag_name_t;

#define SR_KMIP_TAG_NAME_(name, value) {value, #name},
static const tag_name_t tag_names[] = {SR_KMIP_TAG_TABLE(SR_KMIP_TAG_NAME_)};
#undef SR_KMIP_TAG_NAME_

const char *sr_kmip_tag_name(uint32_t tag)
{
    size_t lo = 0, hi = sizeof tag_names / sizeof tag_names[0];
    while (lo < hi) { /* the table is in ascending order */
        size_t mid = (lo + hi) / 2;
        if (tag_names[mid].tag == tag) return tag_names[mid].name;
        if (tag_names[mid].tag < tag) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *sr_kmip_type_name(uint8_t type)
{
    static const char *names[] = {NULL, "Structure", "Integer", "LongInteger", "BigInteger", "Enumeration",
                                  "Boolean", "TextString", "ByteString", "DateTime", "Interval",
                                  "DateTimeExtended"};
    return type >= 1 && type <= 0x0B ? names[type] : "Unknown";
}

/* ---- decoding -------------------------------------------------------------------------- */

static int utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 && c >= 0xc2 ? 2 : (c & 0xf0) == 0xe0 ? 3
                 : (c & 0xf8) == 0xf0 && c <= 0xf4 ? 4 : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

typedef struct decoder {
    const uint8_t *buf;
    size_t len;
    sr_kmip_tree_t *t;
} decoder_t;

static sr_err_t bad(size_t off, const char *why, uint32_t tag)
{
    const char *name = sr_kmip_tag_name(tag);
    return sr_err_set(SR_ERR_KMIP_DECODE, "TTLV at byte %zu (tag 0x%06x%s%s): %s", off, tag, name ? " " : "",
                      name ? name : "", why);
}

static int32_t tree_add(sr_kmip_tree_t *t)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        sr_kmip_item_t *items = realloc(t->items, cap * sizeof *items);
        if (!items) return -1;
        t->items = items, t->cap = cap;
    }
    return (int32_t)t->n++;
}

static int zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static sr_err_t decode_scalar(decoder_t *d, size_t off, sr_kmip_item_t *it, const uint8_t *v, size_t padded)
{
    size_t want = it->type == SR_KMIP_INTEGER || it->type == SR_KMIP_ENUMERATION || it->type == SR_KMIP_INTERVAL ? 4
                : it->type == SR_KMIP_LONG_INTEGER || it->type == SR_KMIP_BOOLEAN || it->type == SR_KMIP_DATE_TIME ||
                  it->type == SR_KMIP_DATE_TIME_EXTENDED ? 8 : 0;
    if (want && it->len != want) return bad(off, "wrong length for its type", it->tag);
    if (it->type == SR_KMIP_BIG_INTEGER && (it->len == 0 || it->len % 8)) return bad(off, "big integer length not a multiple of 8", it->tag);
    if (!zero(v + it->len, padded - it->len)) return bad(off, "non-zero padding", it->tag);
    (void)d;
    switch (it->type) {
    case SR_KMIP_INTEGER: it->v.i32 = (int32_t)sr_get_be32(v); break;
    case SR_KMIP_ENUMERATION:
    case SR_KMIP_INTERVAL: it->v.u32 = sr_get_be32(v); break;
    case SR_KMIP_LONG_INTEGER:
    case SR_KMIP_DATE_TIME:
    case SR_KMIP_DATE_TIME_EXTENDED: it->v.i64 = (int64_t)sr_get_be64(v); break;
    case SR_KMIP_BOOLEAN: {
        uint64_t b = sr_get_be64(v);
        if (b > 1) return bad(off, "boolean other than 0 or 1", it->tag);
        it->v.boolean = (int)b;
        break;
    }
    case SR_KMIP_TEXT_STRING:
        if (!utf8_valid(v, it->len)) return bad(off, "text string is not valid UTF-8", it->tag);
        it->v.ptr = v;
        break;
    default: it->v.ptr = v; break; /* byte string, big integer */
    }
    return SR_OK;
}

/* Decodes the item at [off, end); returns its index and where it ends. */
static sr_err_t decode_item(decoder_t *d, size_t off, size_t end, int depth, int32_t *index, size_t *next)
{
    if (depth > SR_KMIP_MAX_DEPTH)
        return sr_err_set(SR_ERR_KMIP_DEPTH, "TTLV at byte %zu: nested deeper than %d structures", off, SR_KMIP_MAX_DEPTH);
    if (end - off < 8) return bad(off, "truncated item header", 0);
    const uint8_t *h = d->buf + off;
    uint32_t tag = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
    if (h[0] != 0x42 && h[0] != 0x54) return bad(off, "tag outside 0x42xxxx/0x54xxxx", tag);
    uint8_t type = h[3];
    if (type < SR_KMIP_STRUCTURE || type > SR_KMIP_DATE_TIME_EXTENDED) {
        char why[48];
        snprintf(why, sizeof why, "unknown item type 0x%02x", type);
        return bad(off, why, tag);
    }
    uint64_t len = sr_get_be32(h + 4), padded = type == SR_KMIP_STRUCTURE ? len : (len + 7) / 8 * 8;
    if (padded > end - off - 8) return bad(off, "length runs past the end of its container", tag);
    int32_t idx = tree_add(d->t);
    if (idx < 0) return sr_err_set(SR_ERR_NOMEM, "TTLV tree");
    sr_kmip_item_t it = {.tag = tag, .type = type, .len = (uint32_t)len, .first_child = -1, .next = -1};
    sr_err_t rc = SR_OK;
    if (type == SR_KMIP_STRUCTURE) {
        if (len % 8) return bad(off, "structure length not a multiple of 8", tag);
        size_t pos = off + 8, stop = off + 8 + (size_t)len;
        int32_t prev = -1;
        while (rc == SR_OK && pos < stop) {
            int32_t child = -1;
            rc = decode_item(d, pos, stop, depth + 1, &child, &pos);
            if (rc == SR_OK) {
                if (prev < 0) it.first_child = child;
                else d->t->items[prev].next = child;
                prev = child;
            }
        }
    } else {
        rc = decode_scalar(d, off, &it, h + 8, (size_t)padded);
    }
    if (rc != SR_OK) return rc;
    d->t->items[idx] = it;
    *index = idx;
    *next = off + 8 + (size_t)padded;
    return SR_OK;
}

sr_err_t sr_kmip_decode(const uint8_t *buf, size_t len, sr_kmip_tree_t *tree)
{
    memset(tree, 0, sizeof *tree);
    if (len > SR_KMIP_MAX_MESSAGE) return sr_err_set(SR_ERR_KMIP_DECODE, "KMIP message of %zu bytes is too large", len);
    decoder_t d = {.buf = buf, .len = len, .t = tree};
    int32_t root = -1;
    size_t next = 0;
    sr_err_t rc = decode_item(&d, 0, len, 1, &root, &next);
    if (rc == SR_OK && next != len) rc = bad(next, "bytes after the top-level item", 0);
    if (rc != SR_OK) sr_kmip_tree_free(tree);
    return rc;
}

void sr_kmip_tree_free(sr_kmip_tree_t *tree)
{
    free(tree->items);
    memset(tree, 0, sizeof *tree);
}

int32_t sr_kmip_child(const sr_kmip_tree_t *t, int32_t parent, uint32_t tag, uint8_t type)
{
    if (parent < 0 || (size_t)parent >= t->n || t->items[parent].type != SR_KMIP_STRUCTURE) return -1;
    for (int32_t c = t->items[parent].first_child; c >= 0; c = t->items[c].next)
        if (t->items[c].tag == tag && (!type || t->items[c].type == type)) return c;
    return -1;
}

int32_t sr_kmip_next_same(const sr_kmip_tree_t *t, int32_t after)
{
    for (int32_t c = t->items[after].next; c >= 0; c = t->items[c].next)
        if (t->items[c].tag == t->items[after].tag) return c;
    return -1;
}

/* ---- JSON ------------------------------------------------------------------------------- */

typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *fmt, ...) SR_PRINTF(2, 3);
static void sb_add(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    for (int attempt = 0; attempt < 2; attempt++) {
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 64) * 2;
        char *s = realloc(b->s, cap);
        if (!s) return;
        b->s = s, b->cap = cap;
    }
}

static void json_item(sbuf_t *b, const sr_kmip_tree_t *t, int32_t i, int indent)
{
    const sr_kmip_item_t *it = &t->items[i];
    const char *name = sr_kmip_tag_name(it->tag);
    char tagbuf[16];
    snprintf(tagbuf, sizeof tagbuf, "0x%06x", it->tag);
    sb_add(b, "%*s{\"tag\": \"%s\", \"type\": \"%s\", \"value\": ", indent, "", name ? name : tagbuf,
           sr_kmip_type_name(it->type));
    switch (it->type) {
    case SR_KMIP_STRUCTURE:
        sb_add(b, "[\n");
        for (int32_t c = it->first_child; c >= 0; c = t->items[c].next) {
            json_item(b, t, c, indent + 2);
            sb_add(b, "%s\n", t->items[c].next >= 0 ? "," : "");
        }
        sb_add(b, "%*s]}", indent, "");
        return;
    case SR_KMIP_INTEGER: sb_add(b, "%d", it->v.i32); break;
    case SR_KMIP_ENUMERATION:
    case SR_KMIP_INTERVAL: sb_add(b, "%u", it->v.u32); break;
    case SR_KMIP_BOOLEAN: sb_add(b, "%s", it->v.boolean ? "true" : "false"); break;
    case SR_KMIP_LONG_INTEGER:
    case SR_KMIP_DATE_TIME:
    case SR_KMIP_DATE_TIME_EXTENDED: sb_add(b, "%lld", (long long)it->v.i64); break;
    case SR_KMIP_TEXT_STRING:
        sb_add(b, "\"");
        for (uint32_t k = 0; k < it->len; k++) {
            uint8_t ch = it->v.ptr[k];
            if (ch == '"' || ch == '\\') sb_add(b, "\\%c", ch);
            else if (ch < 0x20) sb_add(b, "\\u%04x", ch);
            else sb_add(b, "%c", ch);
        }
        sb_add(b, "\"");
        break;
    default:
        sb_add(b, "\"");
        for (uint32_t k = 0; k < it->len; k++) sb_add(b, "%02x", it->v.ptr[k]);
        sb_add(b, "\"");
    }
    sb_add(b, "}");
}

char *sr_kmip_to_json(const sr_kmip_tree_t *t, int32_t root)
{
    sbuf_t b = {0};
    if (root >= 0 && (size_t)root < t->n) json_item(&b, t, root, 0);
    sb_add(&b, "\n");
    return b.s;
}

/* ---- encoding ---------------------------------------------------------------------------- */

void sr_kmip_enc_init(sr_kmip_enc_t *e) { memset(e, 0, sizeof *e); }

void sr_kmip_enc_free(sr_kmip_enc_t *e)
{
    if (e->buf) sr_secure_wipe(e->buf, e->cap); /* requests may carry key material */
    free(e->buf);
    memset(e, 0, sizeof *e);
}

static uint8_t *enc_reserve(sr_kmip_enc_t *e, size_t n)
{
    if (e->err) return NULL;
    if (e->len + n > SR_KMIP_MAX_MESSAGE) {
        e->err = sr_err_set(SR_ERR_LIMIT, "KMIP message larger than %u bytes", SR_KMIP_MAX_MESSAGE);
        return NULL;
    }
    if (e->len + n > e->cap) {
        size_t cap = e->cap ? e->cap : 256;
        while (cap < e->len + n) cap *= 2;
        uint8_t *b = malloc(cap);
        if (!b) {
            e->err = sr_err_set(SR_ERR_NOMEM, "KMIP encoder");
            return NULL;
        }
        if (e->buf) memcpy(b, e->buf, e->len), sr_secure_wipe(e->buf, e->cap), free(e->buf);
        e->buf = b, e->cap = cap;
    }
    uint8_t *p = e->buf + e->len;
    e->len += n;
    return p;
}

/* Header + value + zero padding. */
static void put(sr_kmip_enc_t *e, uint32_t tag, uint8_t type, const uint8_t *v, size_t len)
{
    size_t padded = (len + 7) / 8 * 8;
    if (len > UINT32_MAX) {
        if (!e->err) e->err = sr_err_set(SR_ERR_LIMIT, "KMIP value too long");
        return;
    }
    uint8_t *p = enc_reserve(e, 8 + padded);
    if (!p) return;
    p[0] = (uint8_t)(tag >> 16), p[1] = (uint8_t)(tag >> 8), p[2] = (uint8_t)tag, p[3] = type;
    sr_put_be32(p + 4, (uint32_t)len);
    if (len) memcpy(p + 8, v, len);
    memset(p + 8 + len, 0, padded - len);
}

void sr_kmip_begin(sr_kmip_enc_t *e, uint32_t tag)
{
    if (e->depth == SR_KMIP_MAX_DEPTH) {
        if (!e->err) e->err = sr_err_set(SR_ERR_KMIP_DEPTH, "KMIP structures nested deeper than %d", SR_KMIP_MAX_DEPTH);
        return;
    }
    size_t at = e->len;
    put(e, tag, SR_KMIP_STRUCTURE, NULL, 0);
    if (!e->err) e->open[e->depth++] = at;
}

void sr_kmip_end(sr_kmip_enc_t *e)
{
    if (e->err) return;
    if (e->depth == 0) {
        e->err = sr_err_set(SR_ERR_INTERNAL, "KMIP encoder: end without begin");
        return;
    }
    size_t at = e->open[--e->depth];
    sr_put_be32(e->buf + at + 4, (uint32_t)(e->len - at - 8));
}

void sr_kmip_put_int(sr_kmip_enc_t *e, uint32_t tag, int32_t v)
{
    uint8_t b[4];
    sr_put_be32(b, (uint32_t)v);
    put(e, tag, SR_KMIP_INTEGER, b, 4);
}

static void put64(sr_kmip_enc_t *e, uint32_t tag, uint8_t type, uint64_t v)
{
    uint8_t b[8];
    sr_put_be32(b, (uint32_t)(v >> 32));
    sr_put_be32(b + 4, (uint32_t)v);
    put(e, tag, type, b, 8);
}

void sr_kmip_put_long(sr_kmip_enc_t *e, uint32_t tag, int64_t v) { put64(e, tag, SR_KMIP_LONG_INTEGER, (uint64_t)v); }
void sr_kmip_put_bool(sr_kmip_enc_t *e, uint32_t tag, int v) { put64(e, tag, SR_KMIP_BOOLEAN, v ? 1 : 0); }
void sr_kmip_put_datetime(sr_kmip_enc_t *e, uint32_t tag, int64_t s) { put64(e, tag, SR_KMIP_DATE_TIME, (uint64_t)s); }
void sr_kmip_put_datetime_ext(sr_kmip_enc_t *e, uint32_t tag, int64_t us)
{
    put64(e, tag, SR_KMIP_DATE_TIME_EXTENDED, (uint64_t)us);
}

void sr_kmip_put_enum(sr_kmip_enc_t *e, uint32_t tag, uint32_t v)
{
    uint8_t b[4];
    sr_put_be32(b, v);
    put(e, tag, SR_KMIP_ENUMERATION, b, 4);
}

void sr_kmip_put_interval(sr_kmip_enc_t *e, uint32_t tag, uint32_t v)
{
    uint8_t b[4];
    sr_put_be32(b, v);
    put(e, tag, SR_KMIP_INTERVAL, b, 4);
}

void sr_kmip_put_bigint(sr_kmip_enc_t *e, uint32_t tag, const uint8_t *be, size_t len)
{
    if (len == 0 || len % 8) {
        if (!e->err) e->err = sr_err_set(SR_ERR_INVALID_ARG, "a KMIP big integer is a multiple of 8 bytes");
        return;
    }
    put(e, tag, SR_KMIP_BIG_INTEGER, be, len);
}

void sr_kmip_put_text(sr_kmip_enc_t *e, uint32_t tag, const char *s)
{
    put(e, tag, SR_KMIP_TEXT_STRING, (const uint8_t *)s, strlen(s));
}

void sr_kmip_put_bytes(sr_kmip_enc_t *e, uint32_t tag, const uint8_t *b, size_t len)
{
    put(e, tag, SR_KMIP_BYTE_STRING, b, len);
}

void sr_kmip_enc_rewind(sr_kmip_enc_t *e, size_t len, int depth)
{
    if (len > e->len || depth > e->depth) return;
    if (e->buf) sr_secure_wipe(e->buf + len, e->len - len);
    e->len = len, e->depth = depth, e->err = SR_OK;
}

sr_err_t sr_kmip_enc_finish(sr_kmip_enc_t *e)
{
    if (e->err) return e->err;
    if (e->depth) return sr_err_set(SR_ERR_INTERNAL, "KMIP encoder: %d structure(s) left open", e->depth);
    return SR_OK;
}
