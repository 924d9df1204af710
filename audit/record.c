/*
 * record.c — the canonical record line: formatting (writer) and a strict,
 * allocation-free parser (verifier, search, fuzzing).
 *
 * Canonical form: fields in the fixed order seq, ts, host, component, event,
 * subject, object, outcome, source, detail, prev, hash; no spaces; absent
 * strings are null; strings escape only `"` `\` (as \" \\) and bytes below
 * 0x20, 0x7f and bytes that are not valid UTF-8 (as \u00XX). One form per
 * content, so a record's hash is reproducible by anyone.
 */
#include "audit_internal.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* SHA-256 with the algorithm fetched once and a context per thread: the
 * one-shot SHA256() of OpenSSL 3 looks the algorithm up on every call, which
 * costs more than hashing a record. */
static EVP_MD *sha256_md;
static pthread_key_t sha256_ctx_key;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_ctx_free(void *ctx) { EVP_MD_CTX_free(ctx); }
static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    pthread_key_create(&sha256_ctx_key, sha256_ctx_free);
}

static void record_sha256(const void *data, size_t len, uint8_t out[SR_AUDIT_HASH_BYTES])
{
    pthread_once(&sha256_once, sha256_fetch);
    EVP_MD_CTX *ctx = pthread_getspecific(sha256_ctx_key);
    if (!ctx && (ctx = EVP_MD_CTX_new())) pthread_setspecific(sha256_ctx_key, ctx);
    unsigned int n = 0;
    if (!ctx || !sha256_md || EVP_DigestInit_ex2(ctx, sha256_md, NULL) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(ctx, out, &n) != 1)
        memset(out, 0, SR_AUDIT_HASH_BYTES); /* cannot match any record: verification fails loudly */
}

typedef struct out {
    char *buf;
    size_t cap, len;
    int overflow;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->len + n >= o->cap) {
        o->overflow = 1;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void puts_lit(out_t *o, const char *s) { put(o, s, strlen(s)); }

/* Length of a valid UTF-8 sequence at s (1..4), or 0 if invalid: no
 * overlong form, no surrogate, nothing past U+10FFFF (RFC 3629). */
static size_t utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80) return 1;
    size_t n = s[0] >= 0xc2 && s[0] <= 0xdf   ? 2
               : s[0] >= 0xe0 && s[0] <= 0xef ? 3
               : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                              : 0;
    unsigned lo = s[0] == 0xe0 ? 0xa0 : s[0] == 0xf0 ? 0x90 : 0x80; /* the second byte's range */
    unsigned hi = s[0] == 0xed ? 0x9f : s[0] == 0xf4 ? 0x8f : 0xbf;
    if (n && (s[1] < lo || s[1] > hi)) return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    return n;
}

/* A JSON string of at most `limit` bytes between its quotes, escapes
 * counted (a field of control characters is six bytes each), then " [cut]"
 * if the text did not fit: every record fits SR_AUDIT_LINE_MAX, whatever a
 * client sends (one that did not would fail the whole group commit). */
static void put_string(out_t *o, const char *s, size_t limit)
{
    if (!s) {
        puts_lit(o, "null");
        return;
    }
    put(o, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    size_t used = 0;
    while (*p) {
        size_t run = 0; /* plain characters, copied at once (the sealer formats every record: this was its hot loop) */
        while (used + run < limit && p[run] >= 0x20 && p[run] < 0x7f && p[run] != '"' && p[run] != '\\') run++;
        if (run) {
            put(o, (const char *)p, run);
            p += run, used += run;
            continue;
        }
        size_t n = utf8_len(p), in = 1, len; /* bytes taken, bytes written */
        char esc[8];
        if (*p == '"' || *p == '\\') len = 2, esc[0] = '\\', esc[1] = (char)*p;
        else if (*p < 0x20 || *p == 0x7f || n == 0) len = 6, snprintf(esc, sizeof esc, "\\u%04x", *p);
        else len = in = n, memcpy(esc, p, n);
        if (used + len > limit) break;
        put(o, esc, len);
        p += in, used += len;
    }
    if (*p) puts_lit(o, " [cut]");
    put(o, "\"", 1);
}

static void put_hex(out_t *o, const uint8_t *b, size_t n)
{
    char hex[2 * SR_AUDIT_HASH_BYTES + 1];
    sr_hex_encode(b, n, hex);
    put(o, "\"", 1);
    put(o, hex, 2 * n);
    put(o, "\"", 1);
}

void audit_tag_key(const uint8_t *sk, uint8_t key[AUDIT_TAG_KEY_BYTES])
{
    static const char label[] = "strongroom audit record tag v1";
    crypto_generichash(key, AUDIT_TAG_KEY_BYTES, (const uint8_t *)label, sizeof label - 1, sk, 32 /* the seed */);
}

void audit_tag(const uint8_t key[AUDIT_TAG_KEY_BYTES], const uint8_t hash[SR_AUDIT_HASH_BYTES], uint8_t tag[16])
{
    crypto_generichash(tag, 16, hash, SR_AUDIT_HASH_BYTES, key, AUDIT_TAG_KEY_BYTES);
}

int audit_tag_ok(const uint8_t key[AUDIT_TAG_KEY_BYTES], const sr_audit_record_t *r)
{
    uint8_t want[16];
    audit_tag(key, r->hash, want);
    return r->has_tag && sodium_memcmp(want, r->tag, sizeof want) == 0;
}

size_t audit_format(char *buf, size_t cap, uint64_t seq, int64_t ts_us, const char *host, const sr_event_t *e,
                    const uint8_t prev[SR_AUDIT_HASH_BYTES], const uint8_t *tag_key,
                    uint8_t hash_out[SR_AUDIT_HASH_BYTES])
{
    out_t o = {.buf = buf, .cap = cap};
    char num[32], ts[40];
    snprintf(num, sizeof num, "{\"seq\":%llu", (unsigned long long)seq);
    puts_lit(&o, num);
    if (sr_time_format_rfc3339(ts_us, 6, ts, sizeof ts) != SR_OK) snprintf(ts, sizeof ts, "1970-01-01T00:00:00.000000Z");
    puts_lit(&o, ",\"ts\":\"");
    puts_lit(&o, ts);
    puts_lit(&o, "\",\"host\":");
    put_string(&o, host, 256);
    const char *names[] = {"component", "event", "subject", "object", "outcome", "source", "detail"};
    const char *values[] = {e->component, e->event, e->subject, e->object, e->outcome, e->source, e->detail};
    for (size_t i = 0; i < 7; i++) {
        put(&o, ",\"", 2);
        puts_lit(&o, names[i]);
        put(&o, "\":", 2);
        put_string(&o, values[i], i == 6 ? 4096 : 512);
    }
    puts_lit(&o, ",\"prev\":");
    put_hex(&o, prev, SR_AUDIT_HASH_BYTES);
    if (o.overflow) return 0;
    record_sha256(buf, o.len, hash_out);
    puts_lit(&o, ",\"hash\":");
    put_hex(&o, hash_out, SR_AUDIT_HASH_BYTES);
    if (tag_key) {
        uint8_t tag[16];
        audit_tag(tag_key, hash_out, tag);
        puts_lit(&o, ",\"tag\":");
        put_hex(&o, tag, sizeof tag);
    }
    puts_lit(&o, "}\n");
    return o.overflow ? 0 : o.len;
}

void audit_sig_message(uint64_t sealed_seq, const uint8_t head[SR_AUDIT_HASH_BYTES], uint8_t msg[8 + 8 + 32])
{
    memcpy(msg, AUDIT_SIG_CONTEXT, 8);
    for (int i = 0; i < 8; i++) msg[8 + i] = (uint8_t)(sealed_seq >> (56 - 8 * i));
    memcpy(msg + 16, head, SR_AUDIT_HASH_BYTES);
}

sr_err_t audit_checkpoint_parse(const char *detail, char key_id[17], uint64_t *sealed, uint8_t sig[64])
{
    char sig_hex[129];
    unsigned long long s = 0;
    int n = 0;
    if (sscanf(detail, "key=%16[0-9a-f] sealed=%llu sig=%128[0-9a-f]%n", key_id, &s, sig_hex, &n) != 3 ||
        detail[n] != '\0' || strlen(sig_hex) != 128 || sr_hex_decode(sig_hex, sig, 64) != SR_OK)
        return sr_err_set(SR_ERR_PARSE, "checkpoint detail is not 'key=<id> sealed=<seq> sig=<signature>'");
    *sealed = s;
    return SR_OK;
}

/* ---- parsing ---------------------------------------------------------------------- */

typedef struct cursor {
    char *p, *end;
    const char *why;
} cursor_t;

static int expect(cursor_t *c, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) return c->why = lit, 0;
    c->p += n;
    return 1;
}

static int parse_u64(cursor_t *c, uint64_t *v)
{
    uint64_t x = 0;
    char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (x > (UINT64_MAX - 9) / 10) return c->why = "number too large", 0;
        x = x * 10 + (uint64_t)(*c->p++ - '0');
    }
    if (c->p == start || (c->p - start > 1 && *start == '0')) return c->why = "a number", 0;
    *v = x;
    return 1;
}

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* A canonical string (or null), unescaped in place and NUL-terminated. */
static int parse_string(cursor_t *c, const char **out)
{
    if ((size_t)(c->end - c->p) >= 4 && memcmp(c->p, "null", 4) == 0) {
        c->p += 4;
        *out = "";
        return 1;
    }
    if (!expect(c, "\"")) return c->why = "a string", 0;
    char *w = c->p, *start = c->p;
    while (c->p < c->end && *c->p != '"') {
        unsigned char ch = (unsigned char)*c->p;
        if (ch < 0x20 || ch == 0x7f) return c->why = "an unescaped control character", 0;
        if (ch != '\\') {
            *w++ = *c->p++;
            continue;
        }
        if (c->end - c->p >= 2 && (c->p[1] == '"' || c->p[1] == '\\')) {
            *w++ = c->p[1];
            c->p += 2;
        } else if (c->end - c->p >= 6 && c->p[1] == 'u' && c->p[2] == '0' && c->p[3] == '0' && hexval(c->p[4]) >= 0 &&
                   hexval(c->p[5]) >= 0) {
            *w++ = (char)(hexval(c->p[4]) << 4 | hexval(c->p[5]));
            c->p += 6;
        } else {
            return c->why = "a non-canonical escape", 0;
        }
    }
    if (c->p >= c->end) return c->why = "the end of a string", 0;
    c->p++; /* the closing quote; the NUL below may overwrite it (already consumed) */
    *w = '\0';
    *out = start;
    return 1;
}

/* "<2n lowercase hex digits>" */
static int parse_hex(cursor_t *c, uint8_t *out, size_t n)
{
    if (!expect(c, "\"") || (size_t)(c->end - c->p) < 2 * n + 1) return c->why = "a quoted hex value", 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(c->p[2 * i]), lo = hexval(c->p[2 * i + 1]);
        if (hi < 0 || lo < 0) return c->why = "lowercase hex digits", 0;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    c->p += 2 * n;
    return expect(c, "\"");
}

static int parse_hash(cursor_t *c, uint8_t out[SR_AUDIT_HASH_BYTES]) { return parse_hex(c, out, SR_AUDIT_HASH_BYTES); }

sr_err_t sr_audit_record_parse(char *line, size_t len, sr_audit_record_t *out)
{
    if (len > SR_AUDIT_LINE_MAX + 256) return sr_err_set(SR_ERR_PARSE, "record of %zu bytes is too long", len);
    char *hf = memmem(line, len, AUDIT_HASH_FIELD, strlen(AUDIT_HASH_FIELD));
    if (!hf) return sr_err_set(SR_ERR_PARSE, "record has no hash field");
    sr_audit_record_t r;
    memset(&r, 0, sizeof r);
    r.hashed_len = (size_t)(hf - line);
    uint8_t computed[SR_AUDIT_HASH_BYTES];
    record_sha256(line, r.hashed_len, computed);
    cursor_t c = {.p = line, .end = line + len};
    const char *ts = NULL;
    const char **fields[] = {&r.host, &r.component, &r.event, &r.subject, &r.object, &r.outcome, &r.source, &r.detail};
    static const char *keys[] = {",\"host\":", ",\"component\":", ",\"event\":", ",\"subject\":",
                                 ",\"object\":", ",\"outcome\":", ",\"source\":", ",\"detail\":"};
    int ok = expect(&c, "{\"seq\":") && parse_u64(&c, &r.seq) && expect(&c, ",\"ts\":") && parse_string(&c, &ts);
    for (size_t i = 0; ok && i < 8; i++) ok = expect(&c, keys[i]) && parse_string(&c, fields[i]);
    ok = ok && expect(&c, ",\"prev\":") && parse_hash(&c, r.prev) && expect(&c, ",\"hash\":") &&
         parse_hash(&c, r.hash);
    if (ok && c.end - c.p >= 7 && !memcmp(c.p, ",\"tag\":", 7)) /* optional: records of older versions have none */
        ok = expect(&c, ",\"tag\":") && parse_hex(&c, r.tag, sizeof r.tag), r.has_tag = ok;
    ok = ok && expect(&c, "}");
    if (!ok) return sr_err_set(SR_ERR_PARSE, "not a canonical record: expected %s at byte %ld", c.why,
                               (long)(c.p - line));
    if (c.p != c.end) return sr_err_set(SR_ERR_PARSE, "trailing bytes after the record");
    if (sr_time_parse_rfc3339(ts, &r.ts_us) != SR_OK) return sr_err_set(SR_ERR_PARSE, "bad timestamp '%s'", ts);
    if (memcmp(computed, r.hash, SR_AUDIT_HASH_BYTES) != 0)
        return sr_err_set(SR_ERR_AUDIT_CHAIN, "record hash does not match its content (record altered)");
    *out = r;
    return SR_OK;
}
