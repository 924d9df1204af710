/*
 * kmip_msg.c — KMIP request and response messages (one batch item each).
 *
 *   Request Message { Request Header { Protocol Version { Major, Minor }, Batch Count },
 *                     Batch Item { Operation, Request Payload { ... } } }
 *   Response Message { Response Header { Protocol Version, Time Stamp, Batch Count },
 *                      Batch Item { Operation, Result Status, [Result Reason],
 *                                   [Result Message], [Response Payload] } }
 */
#include "kmip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sr_kmip_request_begin(sr_kmip_enc_t *e, sr_kmip_version_t v, uint32_t operation)
{
    sr_kmip_begin(e, SR_KMIP_TAG_REQUEST_MESSAGE);
    sr_kmip_begin(e, SR_KMIP_TAG_REQUEST_HEADER);
    sr_kmip_begin(e, SR_KMIP_TAG_PROTOCOL_VERSION);
    sr_kmip_put_int(e, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, v.major);
    sr_kmip_put_int(e, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, v.minor);
    sr_kmip_end(e);
    sr_kmip_put_int(e, SR_KMIP_TAG_BATCH_COUNT, 1);
    sr_kmip_end(e);
    sr_kmip_begin(e, SR_KMIP_TAG_BATCH_ITEM);
    sr_kmip_put_enum(e, SR_KMIP_TAG_OPERATION, operation);
    sr_kmip_begin(e, SR_KMIP_TAG_REQUEST_PAYLOAD);
}

void sr_kmip_request_end(sr_kmip_enc_t *e)
{
    sr_kmip_end(e); /* payload */
    sr_kmip_end(e); /* batch item */
    sr_kmip_end(e); /* message */
}

static sr_err_t missing(const char *what)
{
    return sr_err_set(SR_ERR_KMIP_DECODE, "KMIP response has no %s", what);
}

static const char *reason_name(uint32_t reason)
{
    static const char *names[] = {NULL, "Item Not Found", "Response Too Large", "Authentication Not Successful",
                                  "Invalid Message", "Operation Not Supported", "Missing Data", "Invalid Field",
                                  "Feature Not Supported", "Operation Canceled By Requester", "Cryptographic Failure",
                                  "Illegal Operation", "Permission Denied", "Object Archived", "Index Out Of Bounds",
                                  "Application Namespace Not Supported", "Key Format Type Not Supported",
                                  "Key Compression Type Not Supported", "Encoding Option Error",
                                  "Key Value Not Present", "Attestation Required", "Attestation Failed"};
    if (reason < sizeof names / sizeof names[0] && names[reason]) return names[reason];
    return reason == 0x100 ? "General Failure" : "unknown reason";
}

static sr_err_t parse_header(sr_kmip_response_t *r, int32_t msg)
{
    const sr_kmip_tree_t *t = &r->tree;
    int32_t hdr = sr_kmip_child(t, msg, SR_KMIP_TAG_RESPONSE_HEADER, SR_KMIP_STRUCTURE);
    int32_t pv = sr_kmip_child(t, hdr, SR_KMIP_TAG_PROTOCOL_VERSION, SR_KMIP_STRUCTURE);
    int32_t major = sr_kmip_child(t, pv, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, SR_KMIP_INTEGER);
    int32_t minor = sr_kmip_child(t, pv, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, SR_KMIP_INTEGER);
    int32_t ts = sr_kmip_child(t, hdr, SR_KMIP_TAG_TIME_STAMP, SR_KMIP_DATE_TIME);
    int32_t count = sr_kmip_child(t, hdr, SR_KMIP_TAG_BATCH_COUNT, SR_KMIP_INTEGER);
    if (hdr < 0 || major < 0 || minor < 0 || count < 0) return missing("complete Response Header");
    r->version.major = t->items[major].v.i32;
    r->version.minor = t->items[minor].v.i32;
    r->time_stamp = ts >= 0 ? t->items[ts].v.i64 : 0;
    if (t->items[count].v.i32 != 1)
        return sr_err_set(SR_ERR_KMIP_UNEXPECTED, "KMIP response has %d batch items, 1 expected", t->items[count].v.i32);
    return SR_OK;
}

sr_err_t sr_kmip_response_parse(const uint8_t *buf, size_t len, uint32_t expect_operation, sr_kmip_response_t *r)
{
    memset(r, 0, sizeof *r);
    r->message = r->message_buf;
    r->payload = -1;
    sr_err_t rc = sr_kmip_decode(buf, len, &r->tree);
    if (rc != SR_OK) return rc;
    const sr_kmip_tree_t *t = &r->tree;
    if (t->items[0].tag != SR_KMIP_TAG_RESPONSE_MESSAGE || t->items[0].type != SR_KMIP_STRUCTURE)
        return sr_err_set(SR_ERR_KMIP_UNEXPECTED, "not a KMIP Response Message (tag 0x%06x)", t->items[0].tag);
    if ((rc = parse_header(r, 0)) != SR_OK) return rc;
    int32_t item = sr_kmip_child(t, 0, SR_KMIP_TAG_BATCH_ITEM, SR_KMIP_STRUCTURE);
    int32_t op = sr_kmip_child(t, item, SR_KMIP_TAG_OPERATION, SR_KMIP_ENUMERATION);
    int32_t status = sr_kmip_child(t, item, SR_KMIP_TAG_RESULT_STATUS, SR_KMIP_ENUMERATION);
    int32_t reason = sr_kmip_child(t, item, SR_KMIP_TAG_RESULT_REASON, SR_KMIP_ENUMERATION);
    int32_t msg = sr_kmip_child(t, item, SR_KMIP_TAG_RESULT_MESSAGE, SR_KMIP_TEXT_STRING);
    if (item < 0 || status < 0) return missing("Batch Item with a Result Status");
    r->operation = op >= 0 ? t->items[op].v.u32 : 0;
    r->status = t->items[status].v.u32;
    r->reason = reason >= 0 ? t->items[reason].v.u32 : 0;
    if (msg >= 0) {
        size_t n = t->items[msg].len < sizeof r->message_buf - 1 ? t->items[msg].len : sizeof r->message_buf - 1;
        memcpy(r->message_buf, t->items[msg].v.ptr, n);
        r->message_buf[n] = '\0';
    }
    r->payload = sr_kmip_child(t, item, SR_KMIP_TAG_RESPONSE_PAYLOAD, SR_KMIP_STRUCTURE);
    if (op < 0 && r->status == SR_KMIP_STATUS_SUCCESS)
        return sr_err_set(SR_ERR_KMIP_UNEXPECTED, "KMIP response to operation %u names no Operation", expect_operation);
    if (op >= 0 && expect_operation && r->operation != expect_operation)
        return sr_err_set(SR_ERR_KMIP_UNEXPECTED, "KMIP response is for operation %u, the request was %u",
                          r->operation, expect_operation);
    if (r->status != SR_KMIP_STATUS_SUCCESS)
        return sr_err_set(SR_ERR_KMIP_RESULT, "KMIP server: operation %u failed: %s (reason %u)%s%s", expect_operation,
                          reason_name(r->reason), r->reason, r->message[0] ? ": " : "", r->message);
    return SR_OK;
}

void sr_kmip_response_free(sr_kmip_response_t *r)
{
    sr_kmip_tree_free(&r->tree);
    if (r->raw) sr_secure_wipe(r->raw, r->raw_len), free(r->raw); /* may hold key material */
    r->raw = NULL, r->raw_len = 0;
}
