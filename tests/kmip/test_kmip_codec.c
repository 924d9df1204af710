/*
 * The TTLV codec: the encoding examples of the KMIP specification (section
 * 9.1.2) byte for byte in both directions, a round-trip property over
 * random trees, every strictness rule as a precise error, and the message
 * layer's request and response shapes.
 */
#include "kmip.h"
#include "sr_test.h"

#include <stdlib.h>

static size_t hex(const char *h, uint8_t *out)
{
    size_t n = 0;
    for (const char *p = h; *p; p++) {
        if (*p == ' ' || *p == '|') continue;
        unsigned v;
        sscanf(p, "%2x", &v);
        out[n++] = (uint8_t)v;
        p++;
    }
    return n;
}

static void expect_bytes(sr_kmip_enc_t *e, const char *want_hex)
{
    uint8_t want[512];
    size_t n = hex(want_hex, want);
    SR_CHECK_OK(sr_kmip_enc_finish(e));
    SR_CHECK_MSG(e->len == n && memcmp(e->buf, want, n) == 0, "encoding differs from the specification (%zu vs %zu bytes)",
                 e->len, n);
    sr_kmip_tree_t t;
    SR_CHECK_OK(sr_kmip_decode(want, n, &t));
    sr_kmip_tree_free(&t);
    sr_kmip_enc_free(e);
    sr_kmip_enc_init(e);
}

static void test_specification_examples(void)
{
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    sr_kmip_put_int(&e, 0x420020, 8);
    expect_bytes(&e, "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00");
    sr_kmip_put_long(&e, 0x420020, 123456789000000000LL);
    expect_bytes(&e, "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00");
    uint8_t big[16];
    hex("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00", big);
    sr_kmip_put_bigint(&e, 0x420020, big, 16);
    expect_bytes(&e, "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00");
    sr_kmip_put_enum(&e, 0x420020, 255);
    expect_bytes(&e, "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00");
    sr_kmip_put_bool(&e, 0x420020, 1);
    expect_bytes(&e, "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01");
    sr_kmip_put_text(&e, 0x420020, "Hello World");
    expect_bytes(&e, "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00");
    sr_kmip_put_bytes(&e, 0x420020, (const uint8_t *)"\x01\x02\x03", 3);
    expect_bytes(&e, "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00");
    sr_kmip_put_datetime(&e, 0x420020, 0x47DA67F8); /* Friday, March 14, 2008, 11:56:40 GMT */
    expect_bytes(&e, "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8");
    sr_kmip_put_interval(&e, 0x420020, 864000); /* 10 days */
    expect_bytes(&e, "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00");
    sr_kmip_begin(&e, 0x420020);
    sr_kmip_put_enum(&e, 0x420004, 254);
    sr_kmip_put_int(&e, 0x420005, 255);
    sr_kmip_end(&e);
    expect_bytes(&e, "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | "
                     "42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00");
    sr_kmip_enc_free(&e);

    /* and decoded back to the same values */
    uint8_t b[64];
    sr_kmip_tree_t t;
    size_t n = hex("42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00", b);
    SR_CHECK_OK(sr_kmip_decode(b, n, &t));
    SR_CHECK(t.items[0].type == SR_KMIP_LONG_INTEGER && t.items[0].v.i64 == 123456789000000000LL);
    sr_kmip_tree_free(&t);
    n = hex("42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00", b);
    SR_CHECK_OK(sr_kmip_decode(b, n, &t));
    SR_CHECK(t.items[0].len == 11 && memcmp(t.items[0].v.ptr, "Hello World", 11) == 0);
    sr_kmip_tree_free(&t);
}

/* A random tree, encoded; decoded; encoded again from the tree: same bytes. */
static void encode_random(sr_kmip_enc_t *e, unsigned *seed, int depth)
{
    int n = 1 + rand_r(seed) % 5;
    for (int i = 0; i < n; i++) {
        uint32_t tag = 0x420001 + (uint32_t)(rand_r(seed) % 0xD0);
        uint8_t bytes[40];
        for (size_t k = 0; k < sizeof bytes; k++) bytes[k] = (uint8_t)rand_r(seed);
        switch (rand_r(seed) % (depth < 6 ? 11 : 10)) {
        case 0: sr_kmip_put_int(e, tag, (int32_t)rand_r(seed)); break;
        case 1: sr_kmip_put_long(e, tag, (int64_t)rand_r(seed) << 20); break;
        case 2: sr_kmip_put_bigint(e, tag, bytes, 8 * (1 + rand_r(seed) % 4)); break;
        case 3: sr_kmip_put_enum(e, tag, (uint32_t)rand_r(seed)); break;
        case 4: sr_kmip_put_bool(e, tag, rand_r(seed) & 1); break;
        case 5: {
            static const char text[] = "strongroom \xc3\xa9t\xc3\xa9"; /* UTF-8, cut only at ASCII */
            sr_kmip_put_text(e, tag, &text[rand_r(seed) % 5]);
            break;
        }
        case 6: sr_kmip_put_bytes(e, tag, bytes, (size_t)(rand_r(seed) % 40)); break;
        case 7: sr_kmip_put_datetime(e, tag, rand_r(seed)); break;
        case 8: sr_kmip_put_interval(e, tag, (uint32_t)rand_r(seed)); break;
        case 9: sr_kmip_put_datetime_ext(e, tag, (int64_t)rand_r(seed) * 1000); break;
        default:
            sr_kmip_begin(e, tag);
            encode_random(e, seed, depth + 1);
            sr_kmip_end(e);
        }
    }
}

static void encode_tree(sr_kmip_enc_t *e, const sr_kmip_tree_t *t, int32_t i)
{
    const sr_kmip_item_t *it = &t->items[i];
    switch (it->type) {
    case SR_KMIP_STRUCTURE:
        sr_kmip_begin(e, it->tag);
        for (int32_t c = it->first_child; c >= 0; c = t->items[c].next) encode_tree(e, t, c);
        sr_kmip_end(e);
        break;
    case SR_KMIP_INTEGER: sr_kmip_put_int(e, it->tag, it->v.i32); break;
    case SR_KMIP_LONG_INTEGER: sr_kmip_put_long(e, it->tag, it->v.i64); break;
    case SR_KMIP_BIG_INTEGER: sr_kmip_put_bigint(e, it->tag, it->v.ptr, it->len); break;
    case SR_KMIP_ENUMERATION: sr_kmip_put_enum(e, it->tag, it->v.u32); break;
    case SR_KMIP_BOOLEAN: sr_kmip_put_bool(e, it->tag, it->v.boolean); break;
    case SR_KMIP_TEXT_STRING: {
        char s[64];
        memcpy(s, it->v.ptr, it->len);
        s[it->len] = '\0';
        sr_kmip_put_text(e, it->tag, s);
        break;
    }
    case SR_KMIP_BYTE_STRING: sr_kmip_put_bytes(e, it->tag, it->v.ptr, it->len); break;
    case SR_KMIP_DATE_TIME: sr_kmip_put_datetime(e, it->tag, it->v.i64); break;
    case SR_KMIP_INTERVAL: sr_kmip_put_interval(e, it->tag, it->v.u32); break;
    case SR_KMIP_DATE_TIME_EXTENDED: sr_kmip_put_datetime_ext(e, it->tag, it->v.i64); break;
    }
}

static void test_round_trip_property(void)
{
    unsigned seed = 7;
    for (int round = 0; round < 2000; round++) {
        sr_kmip_enc_t a, b;
        sr_kmip_enc_init(&a), sr_kmip_enc_init(&b);
        sr_kmip_begin(&a, SR_KMIP_TAG_REQUEST_MESSAGE);
        encode_random(&a, &seed, 1);
        sr_kmip_end(&a);
        SR_CHECK_OK(sr_kmip_enc_finish(&a));
        sr_kmip_tree_t t;
        SR_CHECK_OK(sr_kmip_decode(a.buf, a.len, &t));
        encode_tree(&b, &t, 0);
        SR_CHECK_OK(sr_kmip_enc_finish(&b));
        SR_CHECK_MSG(a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0, "round %d: re-encoding differs", round);
        char *json = sr_kmip_to_json(&t, 0);
        SR_CHECK(json && strstr(json, "RequestMessage") == NULL && strstr(json, "REQUEST_MESSAGE") != NULL);
        free(json);
        sr_kmip_tree_free(&t);
        sr_kmip_enc_free(&a), sr_kmip_enc_free(&b);
        if (sr_test_failures_in_current) break;
    }
}

static void expect_decode_error(const char *h, sr_err_t want, const char *reason)
{
    uint8_t b[256];
    size_t n = hex(h, b);
    sr_kmip_tree_t t;
    SR_CHECK_ERR(sr_kmip_decode(b, n, &t), want);
    SR_CHECK_MSG(strstr(sr_err_detail(), reason) != NULL, "%s: %s", h, sr_err_detail());
}

static void test_strict_decoding(void)
{
    expect_decode_error("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08", SR_ERR_KMIP_DECODE, "runs past");
    expect_decode_error("42 00 20 | 02 | 00 00 00 05 | 00 00 00 08 00 00 00 00", SR_ERR_KMIP_DECODE, "wrong length");
    expect_decode_error("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 01", SR_ERR_KMIP_DECODE, "padding");
    expect_decode_error("42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 02", SR_ERR_KMIP_DECODE, "boolean");
    expect_decode_error("42 00 20 | 0C | 00 00 00 00", SR_ERR_KMIP_DECODE, "unknown item type 0x0c");
    expect_decode_error("43 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00", SR_ERR_KMIP_DECODE, "tag outside");
    expect_decode_error("42 00 20 | 07 | 00 00 00 02 | C3 28 00 00 00 00 00 00", SR_ERR_KMIP_DECODE, "UTF-8");
    expect_decode_error("42 00 20 | 04 | 00 00 00 04 | 00 00 00 01 00 00 00 00", SR_ERR_KMIP_DECODE, "multiple of 8");
    expect_decode_error("42 00 20 | 01 | 00 00 00 18 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | "
                        "42 00 05 | 02 | 00 00 00 04", SR_ERR_KMIP_DECODE, "runs past the end of its container");
    expect_decode_error("42 00 20 | 01 | 00 00 00 10 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | "
                        "42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00", SR_ERR_KMIP_DECODE, "bytes after");
    expect_decode_error("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00 | 00", SR_ERR_KMIP_DECODE,
                        "bytes after");
    expect_decode_error("42 00 20 | 02 | 00 00 00", SR_ERR_KMIP_DECODE, "truncated");
    /* 17 nested structures */
    uint8_t deep[17 * 8];
    for (int i = 0; i < 17; i++) {
        uint8_t *p = deep + i * 8;
        uint32_t len = (uint32_t)(16 - i) * 8;
        p[0] = 0x42, p[1] = 0x00, p[2] = 0x20, p[3] = 0x01;
        p[4] = (uint8_t)(len >> 24), p[5] = (uint8_t)(len >> 16), p[6] = (uint8_t)(len >> 8), p[7] = (uint8_t)len;
    }
    sr_kmip_tree_t t;
    SR_CHECK_ERR(sr_kmip_decode(deep, sizeof deep, &t), SR_ERR_KMIP_DEPTH);
}

static void test_messages(void)
{
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 4}, SR_KMIP_OP_GET);
    sr_kmip_put_text(&e, SR_KMIP_TAG_UNIQUE_IDENTIFIER, "1");
    sr_kmip_request_end(&e);
    SR_CHECK_OK(sr_kmip_enc_finish(&e));
    sr_kmip_tree_t t;
    SR_CHECK_OK(sr_kmip_decode(e.buf, e.len, &t));
    int32_t item = sr_kmip_child(&t, 0, SR_KMIP_TAG_BATCH_ITEM, SR_KMIP_STRUCTURE);
    int32_t op = sr_kmip_child(&t, item, SR_KMIP_TAG_OPERATION, SR_KMIP_ENUMERATION);
    SR_CHECK(op >= 0 && t.items[op].v.u32 == SR_KMIP_OP_GET);
    sr_kmip_tree_free(&t);
    sr_kmip_enc_free(&e);

    /* a failed response: status, reason and message reach the caller */
    sr_kmip_enc_init(&e);
    sr_kmip_begin(&e, SR_KMIP_TAG_RESPONSE_MESSAGE);
    sr_kmip_begin(&e, SR_KMIP_TAG_RESPONSE_HEADER);
    sr_kmip_begin(&e, SR_KMIP_TAG_PROTOCOL_VERSION);
    sr_kmip_put_int(&e, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
    sr_kmip_put_int(&e, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
    sr_kmip_end(&e);
    sr_kmip_put_datetime(&e, SR_KMIP_TAG_TIME_STAMP, 1700000000);
    sr_kmip_put_int(&e, SR_KMIP_TAG_BATCH_COUNT, 1);
    sr_kmip_end(&e);
    sr_kmip_begin(&e, SR_KMIP_TAG_BATCH_ITEM);
    sr_kmip_put_enum(&e, SR_KMIP_TAG_OPERATION, SR_KMIP_OP_GET);
    sr_kmip_put_enum(&e, SR_KMIP_TAG_RESULT_STATUS, SR_KMIP_STATUS_FAILED);
    sr_kmip_put_enum(&e, SR_KMIP_TAG_RESULT_REASON, SR_KMIP_REASON_ITEM_NOT_FOUND);
    sr_kmip_put_text(&e, SR_KMIP_TAG_RESULT_MESSAGE, "no such object");
    sr_kmip_end(&e);
    sr_kmip_end(&e);
    SR_CHECK_OK(sr_kmip_enc_finish(&e));
    sr_kmip_response_t r;
    SR_CHECK_ERR(sr_kmip_response_parse(e.buf, e.len, SR_KMIP_OP_GET, &r), SR_ERR_KMIP_RESULT);
    SR_CHECK(strstr(sr_err_detail(), "Item Not Found") && strstr(sr_err_detail(), "no such object"));
    SR_CHECK(r.version.major == 1 && r.version.minor == 4 && r.time_stamp == 1700000000);
    sr_kmip_response_free(&r);
    SR_CHECK_ERR(sr_kmip_response_parse(e.buf, e.len, SR_KMIP_OP_CREATE, &r), SR_ERR_KMIP_UNEXPECTED);
    sr_kmip_response_free(&r);
    sr_kmip_enc_free(&e);
}

/* Messages from the KMIP 1.0 use-cases document (OASIS), 3.1.2 "Register /
 * Create / Get Attributes / Destroy": our encoder produces the request bytes
 * exactly, our parser reads the responses. */
static size_t hex_long(const char *h, uint8_t **out)
{
    *out = malloc(strlen(h) / 2 + 1);
    return hex(h, *out);
}

static void test_kmip_use_case_vectors(void)
{
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 1}, SR_KMIP_OP_CREATE);
    sr_kmip_put_enum(&e, SR_KMIP_TAG_OBJECT_TYPE, SR_KMIP_OBJECT_SYMMETRIC_KEY);
    sr_kmip_begin(&e, SR_KMIP_TAG_TEMPLATE_ATTRIBUTE);
    sr_kmip_begin(&e, SR_KMIP_TAG_NAME); /* the template's name */
    sr_kmip_put_text(&e, SR_KMIP_TAG_NAME_VALUE, "Template1");
    sr_kmip_put_enum(&e, SR_KMIP_TAG_NAME_TYPE, SR_KMIP_NAME_TEXT);
    sr_kmip_end(&e);
    static const char *const names[] = {"Cryptographic Algorithm", "Cryptographic Length", "Cryptographic Usage Mask"};
    for (int i = 0; i < 3; i++) {
        sr_kmip_begin(&e, SR_KMIP_TAG_ATTRIBUTE);
        sr_kmip_put_text(&e, SR_KMIP_TAG_ATTRIBUTE_NAME, names[i]);
        if (i == 0) sr_kmip_put_enum(&e, SR_KMIP_TAG_ATTRIBUTE_VALUE, SR_KMIP_ALG_AES);
        else sr_kmip_put_int(&e, SR_KMIP_TAG_ATTRIBUTE_VALUE, i == 1 ? 128 : 12);
        sr_kmip_end(&e);
    }
    sr_kmip_begin(&e, SR_KMIP_TAG_ATTRIBUTE);
    sr_kmip_put_text(&e, SR_KMIP_TAG_ATTRIBUTE_NAME, "Name");
    sr_kmip_begin(&e, SR_KMIP_TAG_ATTRIBUTE_VALUE);
    sr_kmip_put_text(&e, SR_KMIP_TAG_NAME_VALUE, "Key1");
    sr_kmip_put_enum(&e, SR_KMIP_TAG_NAME_TYPE, SR_KMIP_NAME_TEXT);
    sr_kmip_end(&e);
    sr_kmip_end(&e);
    sr_kmip_end(&e);
    sr_kmip_request_end(&e);
    SR_CHECK_OK(sr_kmip_enc_finish(&e));
    uint8_t *want = NULL;
    size_t n = hex_long(
        "42007801000001904200770100000038420069010000002042006A0200000004000000010000000042006B02000000040"
        "00000010000000042000D0200000004000000010000000042000F010000014842005C0500000004000000010000000042"
        "0079010000013042005705000000040000000200000000420091010000011842005301000000284200550700000009546"
        "56D706C617465310000000000000042005405000000040000000100000000420008010000003042000A07000000174372"
        "7970746F6772617068696320416C676F726974686D0042000B05000000040000000300000000420008010000003042000"
        "A070000001443727970746F67726170686963204C656E6774680000000042000B02000000040000008000000000420008"
        "010000003042000A070000001843727970746F67726170686963205573616765204D61736B42000B02000000040000000"
        "C00000000420008010000003842000A07000000044E616D650000000042000B010000002042005507000000044B657931"
        "0000000042005405000000040000000100000000", &want);
    SR_CHECK_MSG(e.len == n && memcmp(e.buf, want, n) == 0, "Create request differs from the use case (%zu/%zu)", e.len, n);
    free(want);
    sr_kmip_enc_free(&e);

    n = hex_long("42007B01000000C042007A0100000048420069010000002042006A0200000004000000010000000042006B02000000040"
                 "0000000000000004200920900000008000000004AFBE7C542000D0200000004000000010000000042000F010000006842"
                 "005C0500000004000000010000000042007F0500000004000000000000000042007C01000000404200570500000004000"
                 "0000200000000420094070000002436316231303631342D643862352D343666392D386431372D32666136656131643734"
                 "376100000000", &want);
    sr_kmip_response_t r;
    SR_CHECK_OK(sr_kmip_response_parse(want, n, SR_KMIP_OP_CREATE, &r));
    SR_CHECK(r.version.major == 1 && r.version.minor == 0 && r.time_stamp == 0x4AFBE7C5);
    int32_t uid = sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_UNIQUE_IDENTIFIER, SR_KMIP_TEXT_STRING);
    SR_CHECK(uid >= 0 && memcmp(r.tree.items[uid].v.ptr, "61b10614-d8b5-46f9-8d17-2fa6ea1d747a", 36) == 0);
    sr_kmip_response_free(&r);
    free(want);

    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 0}, SR_KMIP_OP_GET_ATTRIBUTES);
    sr_kmip_put_text(&e, SR_KMIP_TAG_UNIQUE_IDENTIFIER, "61b10614-d8b5-46f9-8d17-2fa6ea1d747a");
    sr_kmip_put_text(&e, SR_KMIP_TAG_ATTRIBUTE_NAME, "Object Group");
    sr_kmip_put_text(&e, SR_KMIP_TAG_ATTRIBUTE_NAME, "Application Specific Information");
    sr_kmip_put_text(&e, SR_KMIP_TAG_ATTRIBUTE_NAME, "Contact Information");
    sr_kmip_put_text(&e, SR_KMIP_TAG_ATTRIBUTE_NAME, "x-Purpose");
    sr_kmip_request_end(&e);
    SR_CHECK_OK(sr_kmip_enc_finish(&e));
    n = hex_long("42007801000001084200770100000038420069010000002042006A0200000004000000010000000042006B02000000040"
                 "00000000000000042000D0200000004000000010000000042000F01000000C042005C05000000040000000B0000000042"
                 "007901000000A8420094070000002436316231303631342D643862352D343666392D386431372D3266613665613164373"
                 "437610000000042000A070000000C4F626A6563742047726F75700000000042000A07000000204170706C69636174696F"
                 "6E20537065636966696320496E666F726D6174696F6E42000A0700000013436F6E7461637420496E666F726D6174696F6"
                 "E000000000042000A0700000009782D507572706F736500000000000000", &want);
    SR_CHECK_MSG(e.len == n && memcmp(e.buf, want, n) == 0, "Get Attributes request differs from the use case");
    free(want);
    sr_kmip_enc_free(&e);
}

/* The tag table against PyKMIP's (an independent implementation). */
static void test_tags_match_pykmip(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", sr_test_path("tags.txt"));
    FILE *f = fopen(path, "w");
#define SR_KMIP_TAG_LINE_(name, value) fprintf(f, "%s %d\n", #name, value);
    SR_KMIP_TAG_TABLE(SR_KMIP_TAG_LINE_)
#undef SR_KMIP_TAG_LINE_
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys\nfrom kmip.core import enums\nbad=0\nfor l in open(sys.argv[1]):\n"
             "  n,v=l.split()\n  t=getattr(enums.Tags,n,None)\n  if t is None or t.value!=int(v): print(n); bad+=1\n"
             "sys.exit(1 if bad else 0)' %s", path);
    SR_CHECK_MSG(system(cmd) == 0, "tags differ from PyKMIP's (printed above)");
    SR_CHECK(strcmp(sr_kmip_tag_name(SR_KMIP_TAG_UNIQUE_IDENTIFIER), "UNIQUE_IDENTIFIER") == 0);
    SR_CHECK(sr_kmip_tag_name(0x54FFFF) == NULL);
}

int main(void)
{
    SR_RUN(test_specification_examples);
    SR_RUN(test_round_trip_property);
    SR_RUN(test_strict_decoding);
    SR_RUN(test_messages);
    SR_RUN(test_kmip_use_case_vectors);
    SR_RUN(test_tags_match_pykmip);
    return sr_test_finish();
}
