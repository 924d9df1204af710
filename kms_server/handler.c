/*
 * handler.c — one KMIP request message in, one response message out.
 *
 * Answers in the protocol version the request carries (1.0-1.4), with the
 * result reasons that version defines. Every batch item runs in its own
 * store transaction and is one audit record; the record is written before
 * the transaction commits and before any key material leaves, so an audit
 * log that cannot take it fails the operation (fail closed).
 *
 * Permissions (docs/kms.md): admin — everything; application — creates keys,
 * everything on its own, attributes and Encrypt/Decrypt on keys granted to
 * it; node — attributes and Encrypt/Decrypt on granted keys; auditor —
 * attributes of every key. Objects a principal may not see answer Item Not
 * Found, so one application cannot learn another's keys exist.
 */
#include "kms.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { REASON_ITEM_NOT_FOUND = 1, REASON_INVALID_MESSAGE = 4, REASON_OPERATION_NOT_SUPPORTED = 5,
       REASON_MISSING_DATA = 6, REASON_INVALID_FIELD = 7, REASON_FEATURE_NOT_SUPPORTED = 8,
       REASON_CRYPTOGRAPHIC_FAILURE = 0x0A, REASON_WRONG_STATE = 0x0B, REASON_PERMISSION_DENIED = 0x0C,
       REASON_INDEX_OUT_OF_BOUNDS = 0x0E, REASON_KEY_FORMAT_NOT_SUPPORTED = 0x10,
       REASON_KEY_COMPRESSION_NOT_SUPPORTED = 0x11, REASON_GENERAL_FAILURE = 0x100 };
enum { OP_ADD_ATTRIBUTE = 13, OP_MODIFY_ATTRIBUTE = 14, OP_DELETE_ATTRIBUTE = 15, OP_GET_ATTRIBUTE_LIST = 12 };
enum { MODE_KWP = 0x0C, PADDING_NONE = 1, PADDING_PKCS5 = 3 };
enum { LINK_REPLACEMENT = 0x106, LINK_REPLACED = 0x107 };
enum { BATCH_STOP = 1, BATCH_CONTINUE = 2, BATCH_UNDO = 3 };

typedef enum use { USE_ATTRS, USE_CRYPT, USE_EXPORT, USE_MANAGE } use_t;

typedef struct req {
    kms_store_t *s;
    kms_principal_t *p;
    const sr_kmip_tree_t *t;
    sr_kmip_version_t v;
    sr_kmip_enc_t *e;
    char last_uid[KMS_UID_MAX]; /* the ID placeholder */
    char object[KMS_UID_MAX];   /* for the audit record */
    uint32_t reason;
    char message[200];
    kms_principal_t enrolled; /* an Enrol on a connection without a certificate: the node it now acts for */
} req_t;

/* ---- small helpers --------------------------------------------------------------------- */

static int fail(req_t *r, uint32_t reason, const char *fmt, ...) SR_PRINTF(3, 4);
static int fail(req_t *r, uint32_t reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    for (char *c = r->message; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?'; /* clients decode ASCII */
    r->reason = reason;
    return -1;
}

static int store_failed(req_t *r, sr_err_t rc)
{
    sr_log_error("key store: %s (%s)", sr_err_detail(), sr_err_name(rc)); /* the details stay on the server */
    return fail(r, REASON_GENERAL_FAILURE, "key store: %s (%s)", sr_strerror(rc), sr_err_name(rc));
}

static int32_t child(const req_t *r, int32_t parent, uint32_t tag, uint8_t type)
{
    return parent < 0 ? -1 : sr_kmip_child(r->t, parent, tag, type);
}

static const sr_kmip_item_t *item(const req_t *r, int32_t i) { return &r->t->items[i]; }

/* A text field into out; -1 (with reason) if too long. Absent: out = "". */
static int text_of(req_t *r, int32_t i, char *out, size_t cap)
{
    out[0] = '\0';
    if (i < 0) return 0;
    if (item(r, i)->len >= cap) return fail(r, REASON_INVALID_FIELD, "text field of %u bytes", item(r, i)->len);
    memcpy(out, item(r, i)->v.ptr, item(r, i)->len);
    out[item(r, i)->len] = '\0';
    return 0;
}

static int64_t now_s(void) { return sr_time_now_us() / 1000000; }

/* Date-driven transitions, applied when an object is read (KMIP: the state
 * changes when its Activation or Deactivation Date is reached). */
static void apply_dates(kms_object_t *o)
{
    int64_t now = now_s();
    if (o->state == KMS_STATE_PRE_ACTIVE && o->activation_date && o->activation_date <= now) o->state = KMS_STATE_ACTIVE;
    if ((o->state == KMS_STATE_ACTIVE || o->state == KMS_STATE_PRE_ACTIVE) && o->deactivation_date &&
        o->deactivation_date <= now)
        o->state = KMS_STATE_DEACTIVATED;
}

/* How the caller stands to an object: owner, and granted (looked up once,
 * only when the role needs it: admins, auditors and owning applications don't). */
typedef struct standing {
    int owner, granted;
} standing_t;

static standing_t standing_of(req_t *r, const kms_object_t *o)
{
    kms_role_t role = r->p->role;
    standing_t st = {.owner = !strcmp(o->owner, r->p->name)};
    int needs_grant = role == KMS_ROLE_NODE || (role == KMS_ROLE_APPLICATION && !st.owner);
    st.granted = needs_grant && kms_granted(r->s, o->uid, r->p->name);
    return st;
}

static int visible(const req_t *r, standing_t st)
{
    return r->p->role == KMS_ROLE_ADMIN || r->p->role == KMS_ROLE_AUDITOR || st.owner || st.granted;
}

static int allowed(const req_t *r, standing_t st, use_t use)
{
    int uses = use == USE_ATTRS || use == USE_CRYPT;
    switch (r->p->role) {
    case KMS_ROLE_ADMIN: return 1;
    case KMS_ROLE_AUDITOR: return use == USE_ATTRS;
    case KMS_ROLE_APPLICATION: return st.owner || (uses && st.granted);
    /* a node uses granted keys, and reads its own node key (the agent's on-disk cache is wrapped by it) */
    case KMS_ROLE_NODE: return (uses && st.granted) || (st.owner && use != USE_MANAGE);
    default: return 0;
    }
}

/* The object a request names (or the ID placeholder), loaded and checked. */
static int load(req_t *r, int32_t payload, use_t use, kms_object_t *o)
{
    char uid[KMS_UID_MAX];
    if (text_of(r, child(r, payload, SR_KMIP_TAG_UNIQUE_IDENTIFIER, SR_KMIP_TEXT_STRING), uid, sizeof uid)) return -1;
    if (!uid[0]) snprintf(uid, sizeof uid, "%s", r->last_uid);
    if (!uid[0]) return fail(r, REASON_INVALID_FIELD, "no Unique Identifier and no earlier item's to use");
    snprintf(r->object, sizeof r->object, "%s", uid);
    sr_err_t rc = kms_object_load(r->s, uid, o);
    standing_t st = {0};
    if (rc == SR_OK) st = standing_of(r, o);
    if (rc == SR_ERR_NOT_FOUND || (rc == SR_OK && !visible(r, st))) return fail(r, REASON_ITEM_NOT_FOUND, "no object %s", uid);
    if (rc != SR_OK) return store_failed(r, rc);
    if (!allowed(r, st, use))
        return fail(r, REASON_PERMISSION_DENIED, "%s (%s) may not do this with %s", r->p->name,
                    kms_role_name(r->p->role), uid);
    apply_dates(o);
    snprintf(r->last_uid, sizeof r->last_uid, "%s", uid);
    return 0;
}

static int save(req_t *r, kms_object_t *o)
{
    o->last_change_date = now_s();
    sr_err_t rc = kms_object_update(r->s, o);
    /* revoked or destroyed: agents drop the data keys they cached under it at their next heartbeat */
    if (rc == SR_OK && o->state != KMS_STATE_ACTIVE && o->state != KMS_STATE_PRE_ACTIVE)
        rc = kms_access_epoch_bump(r->s);
    return rc == SR_OK ? 0 : store_failed(r, rc);
}

static void put_uid(req_t *r, const char *uid) { sr_kmip_put_text(r->e, SR_KMIP_TAG_UNIQUE_IDENTIFIER, uid); }

/* ---- attributes in and out ------------------------------------------------------------- */

static int is_custom(const char *name) { return !strncmp(name, "x-", 2) || !strncmp(name, "y-", 2); }
static int is_stored_attr(const char *name)
{
    return is_custom(name) || !strcmp(name, "Name") || !strcmp(name, "Object Group") ||
           !strcmp(name, "Contact Information");
}

/* An Attribute structure's value into a kms_attr_t (bytes point into the request). */
static int attr_value(req_t *r, int32_t attr, kms_attr_t *a)
{
    memset(a, 0, sizeof *a);
    int32_t name = child(r, attr, SR_KMIP_TAG_ATTRIBUTE_NAME, SR_KMIP_TEXT_STRING);
    int32_t idx = child(r, attr, SR_KMIP_TAG_ATTRIBUTE_INDEX, SR_KMIP_INTEGER);
    int32_t val = child(r, attr, SR_KMIP_TAG_ATTRIBUTE_VALUE, 0);
    if (name < 0) return fail(r, REASON_INVALID_FIELD, "Attribute without an Attribute Name");
    if (text_of(r, name, a->name, sizeof a->name)) return -1;
    a->index = idx >= 0 ? item(r, idx)->v.i32 : -1;
    if (val < 0) return 0;
    const sr_kmip_item_t *v = item(r, val);
    a->type = v->type;
    switch (v->type) {
    case SR_KMIP_TEXT_STRING:
    case SR_KMIP_BYTE_STRING: a->bytes = (uint8_t *)v->v.ptr, a->len = v->len; break;
    case SR_KMIP_INTEGER: a->num = v->v.i32; break;
    case SR_KMIP_ENUMERATION:
    case SR_KMIP_INTERVAL: a->num = v->v.u32; break;
    case SR_KMIP_BOOLEAN: a->num = v->v.boolean; break;
    case SR_KMIP_LONG_INTEGER:
    case SR_KMIP_DATE_TIME: a->num = v->v.i64; break;
    case SR_KMIP_STRUCTURE: {
        if (strcmp(a->name, "Name") != 0)
            return fail(r, REASON_FEATURE_NOT_SUPPORTED, "structured value for attribute %s", a->name);
        int32_t nv = child(r, val, SR_KMIP_TAG_NAME_VALUE, SR_KMIP_TEXT_STRING);
        if (nv < 0) return fail(r, REASON_INVALID_FIELD, "Name without a Name Value");
        a->bytes = (uint8_t *)item(r, nv)->v.ptr, a->len = item(r, nv)->len;
        break;
    }
    default: return fail(r, REASON_FEATURE_NOT_SUPPORTED, "attribute %s of type %u", a->name, v->type);
    }
    if (!strcmp(a->name, "Name") && v->type != SR_KMIP_STRUCTURE)
        return fail(r, REASON_INVALID_FIELD, "Name must be a structure");
    if ((!strcmp(a->name, "Object Group") || !strcmp(a->name, "Contact Information")) && v->type != SR_KMIP_TEXT_STRING)
        return fail(r, REASON_INVALID_FIELD, "%s must be a text string", a->name);
    return 0;
}

static void put_attr_header(req_t *r, const char *name, int32_t index)
{
    sr_kmip_begin(r->e, SR_KMIP_TAG_ATTRIBUTE);
    sr_kmip_put_text(r->e, SR_KMIP_TAG_ATTRIBUTE_NAME, name);
    if (index > 0) sr_kmip_put_int(r->e, SR_KMIP_TAG_ATTRIBUTE_INDEX, index);
}

static void put_stored_attr(req_t *r, const kms_attr_t *a)
{
    sr_kmip_enc_t *e = r->e;
    put_attr_header(r, a->name, a->index);
    uint32_t tag = SR_KMIP_TAG_ATTRIBUTE_VALUE;
    switch (a->type) {
    case SR_KMIP_STRUCTURE:
        sr_kmip_begin(e, tag);
        sr_kmip_put_text(e, SR_KMIP_TAG_NAME_VALUE, (const char *)a->bytes);
        sr_kmip_put_enum(e, SR_KMIP_TAG_NAME_TYPE, SR_KMIP_NAME_TEXT);
        sr_kmip_end(e);
        break;
    case SR_KMIP_TEXT_STRING: sr_kmip_put_text(e, tag, (const char *)a->bytes); break;
    case SR_KMIP_BYTE_STRING: sr_kmip_put_bytes(e, tag, a->bytes, a->len); break;
    case SR_KMIP_INTEGER: sr_kmip_put_int(e, tag, (int32_t)a->num); break;
    case SR_KMIP_ENUMERATION: sr_kmip_put_enum(e, tag, (uint32_t)a->num); break;
    case SR_KMIP_INTERVAL: sr_kmip_put_interval(e, tag, (uint32_t)a->num); break;
    case SR_KMIP_BOOLEAN: sr_kmip_put_bool(e, tag, (int)a->num); break;
    case SR_KMIP_LONG_INTEGER: sr_kmip_put_long(e, tag, a->num); break;
    case SR_KMIP_DATE_TIME: sr_kmip_put_datetime(e, tag, a->num); break;
    }
    sr_kmip_end(e);
}

/* Server-kept attributes, by name; writes nothing for one not set. */
static void put_object_attr(req_t *r, const kms_object_t *o, const char *name)
{
    sr_kmip_enc_t *e = r->e;
    const uint32_t tag = SR_KMIP_TAG_ATTRIBUTE_VALUE;
    struct { const char *name; int64_t v; } dates[] = {
        {"Initial Date", o->initial_date}, {"Activation Date", o->activation_date},
        {"Deactivation Date", o->deactivation_date}, {"Destroy Date", o->destroy_date},
        {"Compromise Date", o->compromise_date}, {"Compromise Occurrence Date", o->compromise_occurrence_date},
        {"Last Change Date", o->last_change_date}};
    for (size_t i = 0; i < sizeof dates / sizeof dates[0]; i++)
        if (!strcmp(name, dates[i].name)) {
            if (!dates[i].v) return;
            put_attr_header(r, name, 0), sr_kmip_put_datetime(e, tag, dates[i].v), sr_kmip_end(e);
            return;
        }
    if (!strcmp(name, "Unique Identifier")) put_attr_header(r, name, 0), sr_kmip_put_text(e, tag, o->uid);
    else if (!strcmp(name, "Object Type")) put_attr_header(r, name, 0), sr_kmip_put_enum(e, tag, o->object_type);
    else if (!strcmp(name, "Cryptographic Algorithm")) put_attr_header(r, name, 0), sr_kmip_put_enum(e, tag, o->algorithm);
    else if (!strcmp(name, "Cryptographic Length")) put_attr_header(r, name, 0), sr_kmip_put_int(e, tag, o->length);
    else if (!strcmp(name, "Cryptographic Usage Mask"))
        put_attr_header(r, name, 0), sr_kmip_put_int(e, tag, (int32_t)o->usage_mask);
    else if (!strcmp(name, "State")) put_attr_header(r, name, 0), sr_kmip_put_enum(e, tag, o->state);
    else if (!strcmp(name, "Revocation Reason") && o->revocation_code) {
        put_attr_header(r, name, 0);
        sr_kmip_begin(e, tag);
        sr_kmip_put_enum(e, SR_KMIP_TAG_REVOCATION_REASON_CODE, o->revocation_code);
        if (o->revocation_message[0]) sr_kmip_put_text(e, SR_KMIP_TAG_REVOCATION_MESSAGE, o->revocation_message);
        sr_kmip_end(e);
    } else if (!strcmp(name, "Link") && (o->replaces[0] || o->replaced_by[0])) {
        int32_t index = 0;
        const char *links[2] = {o->replaced_by, o->replaces};
        const uint32_t types[2] = {LINK_REPLACEMENT, LINK_REPLACED};
        for (int i = 0; i < 2; i++) {
            if (!links[i][0]) continue;
            put_attr_header(r, name, index++);
            sr_kmip_begin(e, tag);
            sr_kmip_put_enum(e, SR_KMIP_TAG_LINK_TYPE, types[i]);
            sr_kmip_put_text(e, SR_KMIP_TAG_LINKED_OBJECT_IDENTIFIER, links[i]);
            sr_kmip_end(e);
            sr_kmip_end(e);
        }
        return;
    } else {
        return;
    }
    sr_kmip_end(e);
}

static const char *const object_attr_names[] = {
    "Unique Identifier", "Object Type", "Cryptographic Algorithm", "Cryptographic Length",
    "Cryptographic Usage Mask", "State", "Initial Date", "Activation Date", "Deactivation Date", "Destroy Date",
    "Compromise Date", "Compromise Occurrence Date", "Last Change Date", "Revocation Reason", "Link"};
#define N_OBJECT_ATTRS (sizeof object_attr_names / sizeof object_attr_names[0])

/* ---- creating objects -------------------------------------------------------------------- */

typedef struct template {
    uint32_t algorithm, usage_mask;
    int32_t length;
    int64_t activation_date, deactivation_date;
    kms_attr_t stored[32];
    int n_stored;
} template_t;

static int template_attr(req_t *r, int32_t attr, template_t *tp)
{
    kms_attr_t a;
    if (attr_value(r, attr, &a)) return -1;
    if (is_stored_attr(a.name)) {
        if (a.type == 0) return fail(r, REASON_INVALID_FIELD, "attribute %s has no value", a.name);
        if (tp->n_stored == (int)(sizeof tp->stored / sizeof tp->stored[0]))
            return fail(r, REASON_INVALID_FIELD, "more than %d attributes", tp->n_stored);
        tp->stored[tp->n_stored++] = a;
        return 0;
    }
    if (!strcmp(a.name, "Cryptographic Algorithm") && a.type == SR_KMIP_ENUMERATION) tp->algorithm = (uint32_t)a.num;
    else if (!strcmp(a.name, "Cryptographic Length") && a.type == SR_KMIP_INTEGER) tp->length = (int32_t)a.num;
    else if (!strcmp(a.name, "Cryptographic Usage Mask") && a.type == SR_KMIP_INTEGER) tp->usage_mask = (uint32_t)a.num;
    else if (!strcmp(a.name, "Activation Date") && a.type == SR_KMIP_DATE_TIME) tp->activation_date = a.num;
    else if (!strcmp(a.name, "Deactivation Date") && a.type == SR_KMIP_DATE_TIME) tp->deactivation_date = a.num;
    else if (!strcmp(a.name, "Operation Policy Name")) return 0; /* PyKMIP's; ownership here is by certificate */
    else return fail(r, REASON_INVALID_FIELD, "attribute '%s' cannot be set by a client", a.name);
    return 0;
}

static int read_template(req_t *r, int32_t payload, template_t *tp)
{
    memset(tp, 0, sizeof *tp);
    int32_t ta = child(r, payload, SR_KMIP_TAG_TEMPLATE_ATTRIBUTE, SR_KMIP_STRUCTURE);
    if (ta < 0) return 0;
    if (child(r, ta, SR_KMIP_TAG_NAME, 0) >= 0)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "named templates are not supported");
    for (int32_t i = child(r, ta, SR_KMIP_TAG_ATTRIBUTE, SR_KMIP_STRUCTURE); i >= 0; i = sr_kmip_next_same(r->t, i))
        if (template_attr(r, i, tp)) return -1;
    return 0;
}

static int check_aes(req_t *r, const template_t *tp)
{
    if (tp->algorithm != SR_KMIP_ALG_AES)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "only AES keys are supported (algorithm %u)", tp->algorithm);
    if (tp->length != 128 && tp->length != 192 && tp->length != 256)
        return fail(r, REASON_INVALID_FIELD, "an AES key is 128, 192 or 256 bits, not %d", tp->length);
    return 0;
}

static int may_create(req_t *r)
{
    if (r->p->role == KMS_ROLE_ADMIN || r->p->role == KMS_ROLE_APPLICATION) return 0;
    return fail(r, REASON_PERMISSION_DENIED, "%s (%s) may not create objects", r->p->name, kms_role_name(r->p->role));
}

/* Inserts a new object with its stored attributes; r->last_uid names it. */
static int insert(req_t *r, kms_object_t *o, const template_t *tp, const uint8_t *material, size_t len)
{
    sr_uuid_t id;
    char uid[SR_UUID_STR_LEN + 1];
    sr_uuid_generate(&id);
    sr_uuid_format(&id, uid);
    snprintf(o->uid, sizeof o->uid, "%s", uid);
    if (!o->owner[0]) snprintf(o->owner, sizeof o->owner, "%s", r->p->name); /* an enrolling node's key: the node's */
    o->object_type = SR_KMIP_OBJECT_SYMMETRIC_KEY;
    o->initial_date = o->last_change_date = now_s();
    o->state = KMS_STATE_PRE_ACTIVE;
    apply_dates(o);
    sr_err_t rc = kms_object_insert(r->s, o, material, len);
    for (int i = 0; rc == SR_OK && i < tp->n_stored; i++) {
        kms_attr_t a = tp->stored[i];
        a.index = -1;
        rc = kms_attr_add(r->s, o->uid, &a, NULL);
    }
    if (rc != SR_OK) return store_failed(r, rc);
    snprintf(r->last_uid, sizeof r->last_uid, "%s", o->uid);
    snprintf(r->object, sizeof r->object, "%s", o->uid);
    return 0;
}

/* insert() with fresh random material of the template's length. */
static int insert_fresh(req_t *r, kms_object_t *o, const template_t *tp)
{
    size_t len = (size_t)tp->length / 8;
    uint8_t *key = sr_secure_alloc(32);
    if (!key) return fail(r, REASON_GENERAL_FAILURE, "out of memory");
    int ret = sr_random_bytes(key, len) != SR_OK ? fail(r, REASON_GENERAL_FAILURE, "no randomness")
                                                 : insert(r, o, tp, key, len);
    sr_secure_wipe(key, 32), sr_secure_free(key);
    return ret;
}

static void object_from_template(kms_object_t *o, const template_t *tp)
{
    memset(o, 0, sizeof *o);
    o->algorithm = tp->algorithm, o->length = tp->length, o->usage_mask = tp->usage_mask;
    o->activation_date = tp->activation_date, o->deactivation_date = tp->deactivation_date;
}

static int op_create(req_t *r, int32_t payload)
{
    template_t tp;
    int32_t type = child(r, payload, SR_KMIP_TAG_OBJECT_TYPE, SR_KMIP_ENUMERATION);
    if (may_create(r) || read_template(r, payload, &tp)) return -1;
    if (type < 0) return fail(r, REASON_INVALID_FIELD, "Create without an Object Type");
    if (item(r, type)->v.u32 != SR_KMIP_OBJECT_SYMMETRIC_KEY)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "only symmetric keys are supported (object type %u)",
                    item(r, type)->v.u32);
    if (check_aes(r, &tp)) return -1;
    kms_object_t o;
    object_from_template(&o, &tp);
    if (insert_fresh(r, &o, &tp)) return -1;
    sr_kmip_put_enum(r->e, SR_KMIP_TAG_OBJECT_TYPE, SR_KMIP_OBJECT_SYMMETRIC_KEY);
    put_uid(r, o.uid);
    return 0;
}

static int op_register(req_t *r, int32_t payload)
{
    template_t tp;
    int32_t type = child(r, payload, SR_KMIP_TAG_OBJECT_TYPE, SR_KMIP_ENUMERATION);
    int32_t sk = child(r, payload, SR_KMIP_TAG_SYMMETRIC_KEY, SR_KMIP_STRUCTURE);
    int32_t kb = child(r, sk, SR_KMIP_TAG_KEY_BLOCK, SR_KMIP_STRUCTURE);
    int32_t fmt = child(r, kb, SR_KMIP_TAG_KEY_FORMAT_TYPE, SR_KMIP_ENUMERATION);
    int32_t kv = child(r, kb, SR_KMIP_TAG_KEY_VALUE, SR_KMIP_STRUCTURE);
    int32_t km = child(r, kv, SR_KMIP_TAG_KEY_MATERIAL, SR_KMIP_BYTE_STRING);
    int32_t alg = child(r, kb, SR_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, SR_KMIP_ENUMERATION);
    int32_t len = child(r, kb, SR_KMIP_TAG_CRYPTOGRAPHIC_LENGTH, SR_KMIP_INTEGER);
    if (may_create(r) || read_template(r, payload, &tp)) return -1;
    if (type < 0 || item(r, type)->v.u32 != SR_KMIP_OBJECT_SYMMETRIC_KEY || sk < 0)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "only symmetric keys can be registered");
    if (child(r, kb, SR_KMIP_TAG_KEY_WRAPPING_DATA, 0) >= 0)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "wrapped key material is not supported");
    if (fmt < 0 || item(r, fmt)->v.u32 != SR_KMIP_KEY_FORMAT_RAW || km < 0)
        return fail(r, r->v.minor >= 1 ? REASON_KEY_FORMAT_NOT_SUPPORTED : REASON_FEATURE_NOT_SUPPORTED,
                    "only Raw key material is supported");
    if (alg >= 0) tp.algorithm = item(r, alg)->v.u32;
    tp.length = (int32_t)item(r, km)->len * 8;
    if (len >= 0 && item(r, len)->v.i32 != tp.length)
        return fail(r, REASON_INVALID_FIELD, "Cryptographic Length %d but %d bits of material", item(r, len)->v.i32,
                    tp.length);
    if (check_aes(r, &tp)) return -1;
    kms_object_t o;
    object_from_template(&o, &tp);
    if (insert(r, &o, &tp, item(r, km)->v.ptr, item(r, km)->len)) return -1;
    put_uid(r, o.uid);
    return 0;
}

static int op_rekey(req_t *r, int32_t payload)
{
    kms_object_t old, o;
    if (load(r, payload, USE_MANAGE, &old)) return -1;
    if (old.state >= KMS_STATE_DESTROYED) return fail(r, REASON_WRONG_STATE, "%s is destroyed", old.uid);
    template_t tp;
    memset(&tp, 0, sizeof tp);
    kms_attr_t *attrs = NULL;
    size_t n = 0;
    sr_err_t rc = kms_attr_list(r->s, old.uid, &attrs, &n);
    if (rc != SR_OK) return store_failed(r, rc);
    for (size_t i = 0; i < n && tp.n_stored < 32; i++) tp.stored[tp.n_stored++] = attrs[i];
    tp.algorithm = old.algorithm, tp.length = old.length, tp.usage_mask = old.usage_mask;
    if (old.state == KMS_STATE_ACTIVE) tp.activation_date = now_s();
    object_from_template(&o, &tp);
    snprintf(o.replaces, sizeof o.replaces, "%s", old.uid);
    int ret = insert_fresh(r, &o, &tp);
    kms_attrs_free(attrs, n);
    if (ret) return ret;
    snprintf(old.replaced_by, sizeof old.replaced_by, "%s", o.uid);
    if (save(r, &old)) return -1;
    put_uid(r, o.uid);
    return 0;
}

/* ---- reading objects ---------------------------------------------------------------------- */

/* Each connection thread keeps one guarded, locked region for the key
 * material and the results of its requests, wiped after each use:
 * sodium_malloc and sodium_free per request cost mmap/mprotect/munmap, whose
 * TLB shootdowns stall every thread of kmsd (seen in bench_kms). */
#define SCRATCH_OUT_BYTES (16 * 1024)
#define SCRATCH_BYTES (SR_KEYMGR_WRAPPED_MAX + SCRATCH_OUT_BYTES)
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    sr_secure_wipe(p, SCRATCH_BYTES);
    sr_secure_free(p);
}

static void scratch_key_make(void) { (void)pthread_key_create(&scratch_key, scratch_free); }

static uint8_t *scratch(void)
{
    pthread_once(&scratch_once, scratch_key_make);
    uint8_t *p = pthread_getspecific(scratch_key);
    if (!p && (p = sr_secure_alloc(SCRATCH_BYTES)) && pthread_setspecific(scratch_key, p) != 0)
        sr_secure_free(p), p = NULL;
    return p;
}

static int op_get(req_t *r, int32_t payload)
{
    kms_object_t o;
    int32_t fmt = child(r, payload, SR_KMIP_TAG_KEY_FORMAT_TYPE, SR_KMIP_ENUMERATION);
    if (load(r, payload, USE_EXPORT, &o)) return -1;
    if (o.state >= KMS_STATE_DESTROYED) return fail(r, REASON_ITEM_NOT_FOUND, "%s is destroyed", o.uid);
    if (fmt >= 0 && item(r, fmt)->v.u32 != SR_KMIP_KEY_FORMAT_RAW)
        return fail(r, r->v.minor >= 1 ? REASON_KEY_FORMAT_NOT_SUPPORTED : REASON_FEATURE_NOT_SUPPORTED,
                    "only Raw key format is supported");
    if (child(r, payload, SR_KMIP_TAG_KEY_COMPRESSION_TYPE, 0) >= 0)
        return fail(r, r->v.minor >= 1 ? REASON_KEY_COMPRESSION_NOT_SUPPORTED : REASON_FEATURE_NOT_SUPPORTED,
                    "key compression is not supported");
    if (child(r, payload, SR_KMIP_TAG_KEY_WRAPPING_SPECIFICATION, 0) >= 0)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "key wrapping on Get is not supported");
    uint8_t *m = scratch();
    size_t len = 0;
    if (!m) return fail(r, REASON_GENERAL_FAILURE, "out of locked memory");
    sr_err_t rc = kms_object_material(r->s, o.uid, m, SR_KEYMGR_WRAPPED_MAX, &len);
    if (rc != SR_OK) return store_failed(r, rc);
    sr_kmip_enc_t *e = r->e;
    sr_kmip_put_enum(e, SR_KMIP_TAG_OBJECT_TYPE, o.object_type);
    put_uid(r, o.uid);
    sr_kmip_begin(e, SR_KMIP_TAG_SYMMETRIC_KEY);
    sr_kmip_begin(e, SR_KMIP_TAG_KEY_BLOCK);
    sr_kmip_put_enum(e, SR_KMIP_TAG_KEY_FORMAT_TYPE, SR_KMIP_KEY_FORMAT_RAW);
    sr_kmip_begin(e, SR_KMIP_TAG_KEY_VALUE);
    sr_kmip_put_bytes(e, SR_KMIP_TAG_KEY_MATERIAL, m, len);
    sr_kmip_end(e);
    sr_kmip_put_enum(e, SR_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, o.algorithm);
    sr_kmip_put_int(e, SR_KMIP_TAG_CRYPTOGRAPHIC_LENGTH, o.length);
    sr_kmip_end(e);
    sr_kmip_end(e);
    sr_secure_wipe(m, len);
    return 0;
}

static int op_get_attributes(req_t *r, int32_t payload)
{
    kms_object_t o;
    if (load(r, payload, USE_ATTRS, &o)) return -1;
    kms_attr_t *attrs = NULL;
    size_t n = 0;
    sr_err_t rc = kms_attr_list(r->s, o.uid, &attrs, &n);
    if (rc != SR_OK) return store_failed(r, rc);
    put_uid(r, o.uid);
    int32_t first = child(r, payload, SR_KMIP_TAG_ATTRIBUTE_NAME, SR_KMIP_TEXT_STRING);
    if (first < 0) { /* all of them */
        for (size_t i = 0; i < N_OBJECT_ATTRS; i++) put_object_attr(r, &o, object_attr_names[i]);
        for (size_t i = 0; i < n; i++) put_stored_attr(r, &attrs[i]);
    }
    for (int32_t i = first; i >= 0; i = sr_kmip_next_same(r->t, i)) {
        char name[KMS_TEXT_MAX];
        if (text_of(r, i, name, sizeof name)) break;
        put_object_attr(r, &o, name);
        for (size_t k = 0; k < n; k++)
            if (!strcmp(attrs[k].name, name)) put_stored_attr(r, &attrs[k]);
    }
    kms_attrs_free(attrs, n);
    return r->reason ? -1 : 0;
}

static int op_get_attribute_list(req_t *r, int32_t payload)
{
    kms_object_t o;
    if (load(r, payload, USE_ATTRS, &o)) return -1;
    kms_attr_t *attrs = NULL;
    size_t n = 0;
    sr_err_t rc = kms_attr_list(r->s, o.uid, &attrs, &n);
    if (rc != SR_OK) return store_failed(r, rc);
    put_uid(r, o.uid);
    /* the names of what Get Attributes would return, each once */
    for (size_t i = 0; i < N_OBJECT_ATTRS; i++) {
        size_t before = r->e->len;
        put_object_attr(r, &o, object_attr_names[i]);
        int present = r->e->len != before;
        sr_kmip_enc_rewind(r->e, before, r->e->depth);
        if (present) sr_kmip_put_text(r->e, SR_KMIP_TAG_ATTRIBUTE_NAME, object_attr_names[i]);
    }
    for (size_t i = 0; i < n; i++) {
        int seen = 0;
        for (size_t k = 0; k < i; k++) seen |= !strcmp(attrs[k].name, attrs[i].name);
        if (!seen) sr_kmip_put_text(r->e, SR_KMIP_TAG_ATTRIBUTE_NAME, attrs[i].name);
    }
    kms_attrs_free(attrs, n);
    return 0;
}

/* ---- attributes changed by clients ------------------------------------------------------- */

static int changeable(req_t *r, const kms_attr_t *a)
{
    if (is_stored_attr(a->name)) return 0;
    return fail(r, REASON_INVALID_FIELD, "attribute '%s' cannot be changed by a client", a->name);
}

static int op_add_attribute(req_t *r, int32_t payload)
{
    kms_object_t o;
    kms_attr_t a;
    int32_t attr = child(r, payload, SR_KMIP_TAG_ATTRIBUTE, SR_KMIP_STRUCTURE);
    if (load(r, payload, USE_MANAGE, &o)) return -1;
    if (attr < 0) return fail(r, REASON_INVALID_FIELD, "Add Attribute without an Attribute");
    if (attr_value(r, attr, &a) || changeable(r, &a)) return -1;
    if (a.type == 0) return fail(r, REASON_INVALID_FIELD, "attribute %s has no value", a.name);
    a.index = -1;
    int32_t index = 0;
    sr_err_t rc = kms_attr_add(r->s, o.uid, &a, &index);
    if (rc != SR_OK) return store_failed(r, rc);
    a.index = index;
    if (save(r, &o)) return -1;
    put_uid(r, o.uid);
    put_stored_attr(r, &a);
    return 0;
}

static int op_modify_attribute(req_t *r, int32_t payload)
{
    kms_object_t o;
    kms_attr_t a;
    int32_t attr = child(r, payload, SR_KMIP_TAG_ATTRIBUTE, SR_KMIP_STRUCTURE);
    if (load(r, payload, USE_MANAGE, &o)) return -1;
    if (attr < 0) return fail(r, REASON_INVALID_FIELD, "Modify Attribute without an Attribute");
    if (attr_value(r, attr, &a) || changeable(r, &a)) return -1;
    if (a.type == 0) return fail(r, REASON_INVALID_FIELD, "attribute %s has no value", a.name);
    if (a.index < 0) a.index = 0;
    sr_err_t rc = kms_attr_replace(r->s, o.uid, &a);
    if (rc == SR_ERR_NOT_FOUND)
        return fail(r, REASON_ITEM_NOT_FOUND, "%s has no attribute %s index %d", o.uid, a.name, a.index);
    if (rc != SR_OK) return store_failed(r, rc);
    if (save(r, &o)) return -1;
    put_uid(r, o.uid);
    put_stored_attr(r, &a);
    return 0;
}

static int op_delete_attribute(req_t *r, int32_t payload)
{
    kms_object_t o;
    char name[KMS_TEXT_MAX];
    int32_t idx = child(r, payload, SR_KMIP_TAG_ATTRIBUTE_INDEX, SR_KMIP_INTEGER);
    if (load(r, payload, USE_MANAGE, &o)) return -1;
    if (text_of(r, child(r, payload, SR_KMIP_TAG_ATTRIBUTE_NAME, SR_KMIP_TEXT_STRING), name, sizeof name)) return -1;
    kms_attr_t probe = {.type = SR_KMIP_TEXT_STRING};
    snprintf(probe.name, sizeof probe.name, "%s", name);
    if (changeable(r, &probe)) return -1;
    int32_t index = idx >= 0 ? item(r, idx)->v.i32 : 0;
    kms_attr_t *attrs = NULL;
    size_t n = 0;
    sr_err_t rc = kms_attr_list(r->s, o.uid, &attrs, &n);
    const kms_attr_t *victim = NULL;
    for (size_t i = 0; rc == SR_OK && i < n; i++)
        if (!strcmp(attrs[i].name, name) && attrs[i].index == index) victim = &attrs[i];
    int ret = 0;
    if (rc != SR_OK) ret = store_failed(r, rc);
    else if (!victim) ret = fail(r, REASON_ITEM_NOT_FOUND, "%s has no attribute %s index %d", o.uid, name, index);
    else if ((rc = kms_attr_delete(r->s, o.uid, name, index)) != SR_OK) ret = store_failed(r, rc);
    else if (!(ret = save(r, &o))) put_uid(r, o.uid), put_stored_attr(r, victim);
    kms_attrs_free(attrs, n);
    return ret;
}

/* ---- locate -------------------------------------------------------------------------------- */

static int locate_date(req_t *r, const kms_attr_t *a, int64_t *from, int64_t *to)
{
    if (a->type != SR_KMIP_DATE_TIME) return fail(r, REASON_INVALID_FIELD, "%s must be a date", a->name);
    if (!*from && !*to) *from = *to = a->num; /* one value: that instant; two: a range */
    else if (a->num < *from) *from = a->num;
    else *to = a->num;
    return 0;
}

static int locate_filter(req_t *r, int32_t attr, kms_filter_t *f, char texts[3][KMS_TEXT_MAX], char *custom_name)
{
    kms_attr_t a;
    if (attr_value(r, attr, &a)) return -1;
    int numeric = a.type == SR_KMIP_ENUMERATION || a.type == SR_KMIP_INTEGER;
    int textual = a.type == SR_KMIP_TEXT_STRING || a.type == SR_KMIP_STRUCTURE;
    if (!strcmp(a.name, "Object Type") && numeric) f->object_type = (uint32_t)a.num;
    else if (!strcmp(a.name, "Cryptographic Algorithm") && numeric) f->algorithm = (uint32_t)a.num;
    else if (!strcmp(a.name, "Cryptographic Length") && numeric) f->length = (int32_t)a.num;
    else if (!strcmp(a.name, "State") && numeric) f->state = (uint32_t)a.num;
    else if (!strcmp(a.name, "Activation Date")) return locate_date(r, &a, &f->activation_from, &f->activation_to);
    else if (!strcmp(a.name, "Initial Date")) return locate_date(r, &a, &f->initial_from, &f->initial_to);
    else if (textual && (!strcmp(a.name, "Name") || !strcmp(a.name, "Object Group") || is_custom(a.name))) {
        int k = !strcmp(a.name, "Name") ? 0 : !strcmp(a.name, "Object Group") ? 1 : 2;
        const char **slot = k == 0 ? &f->name : k == 1 ? &f->group : &f->custom_text;
        if (*slot) return fail(r, REASON_INVALID_FIELD, "Locate by two values of %s", a.name);
        if (a.len >= KMS_TEXT_MAX) return fail(r, REASON_INVALID_FIELD, "%s value too long", a.name);
        memcpy(texts[k], a.bytes, a.len), texts[k][a.len] = '\0';
        *slot = texts[k];
        if (slot == &f->custom_text) snprintf(custom_name, KMS_TEXT_MAX, "%s", a.name), f->custom_name = custom_name;
    } else {
        return fail(r, REASON_INVALID_FIELD, "cannot locate by attribute '%s' of type %u", a.name, a.type);
    }
    return 0;
}

static int op_locate(req_t *r, int32_t payload)
{
    kms_filter_t f;
    memset(&f, 0, sizeof f);
    char texts[3][KMS_TEXT_MAX], custom_name[KMS_TEXT_MAX] = "";
    int32_t max = child(r, payload, SR_KMIP_TAG_MAXIMUM_ITEMS, SR_KMIP_INTEGER);
    int32_t off = child(r, payload, SR_KMIP_TAG_OFFSET_ITEMS, SR_KMIP_INTEGER);
    if (max >= 0 && item(r, max)->v.i32 <= 0) return fail(r, REASON_INVALID_FIELD, "Maximum Items must be positive");
    if (off >= 0 && item(r, off)->v.i32 < 0) return fail(r, REASON_INVALID_FIELD, "Offset Items must not be negative");
    if (max >= 0) f.max_items = item(r, max)->v.i32;
    if (off >= 0) f.offset = item(r, off)->v.i32;
    for (int32_t i = child(r, payload, SR_KMIP_TAG_ATTRIBUTE, SR_KMIP_STRUCTURE); i >= 0; i = sr_kmip_next_same(r->t, i))
        if (locate_filter(r, i, &f, texts, custom_name)) return -1;
    if (r->p->role != KMS_ROLE_ADMIN && r->p->role != KMS_ROLE_AUDITOR) f.visible_to = r->p->name;
    char(*uids)[KMS_UID_MAX] = NULL;
    size_t n = 0;
    sr_err_t rc = kms_locate(r->s, &f, &uids, &n);
    if (rc != SR_OK) return store_failed(r, rc);
    if (r->v.minor >= 3) sr_kmip_put_int(r->e, SR_KMIP_TAG_LOCATED_ITEMS, (int32_t)n);
    for (size_t i = 0; i < n; i++) put_uid(r, uids[i]);
    if (n) snprintf(r->last_uid, sizeof r->last_uid, "%s", uids[0]);
    free(uids);
    return 0;
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static int op_activate(req_t *r, int32_t payload)
{
    kms_object_t o;
    if (load(r, payload, USE_MANAGE, &o)) return -1;
    if (o.state != KMS_STATE_PRE_ACTIVE)
        return fail(r, REASON_WRONG_STATE, "%s is %s, not Pre-Active", o.uid, kms_state_name(o.state));
    o.state = KMS_STATE_ACTIVE;
    o.activation_date = now_s();
    if (save(r, &o)) return -1;
    put_uid(r, o.uid);
    return 0;
}

static int op_revoke(req_t *r, int32_t payload)
{
    kms_object_t o;
    int32_t reason = child(r, payload, SR_KMIP_TAG_REVOCATION_REASON, SR_KMIP_STRUCTURE);
    int32_t code = child(r, reason, SR_KMIP_TAG_REVOCATION_REASON_CODE, SR_KMIP_ENUMERATION);
    int32_t msg = child(r, reason, SR_KMIP_TAG_REVOCATION_MESSAGE, SR_KMIP_TEXT_STRING);
    int32_t occurred = child(r, payload, SR_KMIP_TAG_COMPROMISE_OCCURRENCE_DATE, SR_KMIP_DATE_TIME);
    if (load(r, payload, USE_MANAGE, &o)) return -1;
    if (code < 0) return fail(r, REASON_INVALID_FIELD, "Revoke without a Revocation Reason Code");
    if (text_of(r, msg, o.revocation_message, sizeof o.revocation_message)) return -1;
    uint32_t c = item(r, code)->v.u32;
    int compromise = c == SR_KMIP_REVOKE_KEY_COMPROMISE || c == 3 /* CA Compromise */;
    if (compromise) {
        if (o.state == KMS_STATE_COMPROMISED || o.state == KMS_STATE_DESTROYED_COMPROMISED)
            return fail(r, REASON_WRONG_STATE, "%s is already %s", o.uid, kms_state_name(o.state));
        o.state = o.state == KMS_STATE_DESTROYED ? KMS_STATE_DESTROYED_COMPROMISED : KMS_STATE_COMPROMISED;
        o.compromise_date = now_s();
        o.compromise_occurrence_date = occurred >= 0 ? item(r, occurred)->v.i64 : o.compromise_date;
    } else {
        if (o.state != KMS_STATE_ACTIVE)
            return fail(r, REASON_WRONG_STATE, "%s is %s: only an Active object is revoked for a reason other than "
                        "compromise", o.uid, kms_state_name(o.state));
        o.state = KMS_STATE_DEACTIVATED;
        o.deactivation_date = now_s();
    }
    o.revocation_code = c;
    if (save(r, &o)) return -1;
    put_uid(r, o.uid);
    return 0;
}

static int op_destroy(req_t *r, int32_t payload)
{
    kms_object_t o;
    if (load(r, payload, USE_MANAGE, &o)) return -1;
    if (o.state == KMS_STATE_ACTIVE) return fail(r, REASON_WRONG_STATE, "%s is Active: revoke it first", o.uid);
    if (o.state >= KMS_STATE_DESTROYED) return fail(r, REASON_WRONG_STATE, "%s is already destroyed", o.uid);
    o.state = o.state == KMS_STATE_COMPROMISED ? KMS_STATE_DESTROYED_COMPROMISED : KMS_STATE_DESTROYED;
    o.destroy_date = now_s();
    sr_err_t rc = kms_object_wipe_material(r->s, o.uid);
    if (rc != SR_OK) return store_failed(r, rc);
    if (save(r, &o)) return -1;
    put_uid(r, o.uid);
    return 0;
}

/* ---- cryptographic operations ------------------------------------------------------------------ */

typedef struct crypt {
    uint32_t mode, padding;
    int tag_len, random_iv;
    const sr_kmip_item_t *data, *iv, *aad, *tag;
} crypt_t;

static int crypt_params(req_t *r, int32_t payload, crypt_t *c)
{
    memset(c, 0, sizeof *c);
    c->mode = SR_KMIP_MODE_GCM, c->tag_len = 16;
    int32_t cp = child(r, payload, SR_KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS, SR_KMIP_STRUCTURE);
    int32_t mode = child(r, cp, SR_KMIP_TAG_BLOCK_CIPHER_MODE, SR_KMIP_ENUMERATION);
    int32_t alg = child(r, cp, SR_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, SR_KMIP_ENUMERATION);
    int32_t tl = child(r, cp, SR_KMIP_TAG_TAG_LENGTH, SR_KMIP_INTEGER);
    int32_t pad = child(r, cp, SR_KMIP_TAG_PADDING_METHOD, SR_KMIP_ENUMERATION);
    int32_t riv = child(r, cp, SR_KMIP_TAG_RANDOM_IV, SR_KMIP_BOOLEAN);
    if (mode >= 0) c->mode = item(r, mode)->v.u32;
    if (tl >= 0) c->tag_len = item(r, tl)->v.i32;
    c->padding = pad >= 0 ? item(r, pad)->v.u32 : PADDING_NONE;
    c->random_iv = riv >= 0 && item(r, riv)->v.boolean;
    if (alg >= 0 && item(r, alg)->v.u32 != SR_KMIP_ALG_AES)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "only AES is supported (algorithm %u)", item(r, alg)->v.u32);
    if (c->mode != SR_KMIP_MODE_GCM && c->mode != MODE_KWP && c->mode != SR_KMIP_MODE_CBC)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "block cipher mode %u is not supported (GCM, CBC, AES Key Wrap "
                    "with Padding)", c->mode);
    /* the tag and AAD fields exist from KMIP 1.4: GCM in an older version would lose its tag */
    if (c->mode == SR_KMIP_MODE_GCM && r->v.minor < 4)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "AES-GCM needs KMIP 1.4 or later (this request is 1.%d)",
                    r->v.minor);
    if (c->mode == SR_KMIP_MODE_CBC && c->padding != PADDING_NONE && c->padding != PADDING_PKCS5)
        return fail(r, REASON_FEATURE_NOT_SUPPORTED, "CBC padding method %u is not supported (None, PKCS5)",
                    c->padding);
    if (c->mode == SR_KMIP_MODE_GCM && (c->tag_len < 12 || c->tag_len > 16))
        return fail(r, REASON_INVALID_FIELD, "GCM tag length %d (12 to 16)", c->tag_len);
    int32_t d = child(r, payload, SR_KMIP_TAG_DATA, SR_KMIP_BYTE_STRING);
    int32_t iv = child(r, payload, SR_KMIP_TAG_IV_COUNTER_NONCE, SR_KMIP_BYTE_STRING);
    int32_t aad = child(r, payload, SR_KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, SR_KMIP_BYTE_STRING);
    int32_t tag = child(r, payload, SR_KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, SR_KMIP_BYTE_STRING);
    if (d < 0) return fail(r, REASON_INVALID_FIELD, "no Data");
    c->data = item(r, d);
    c->iv = iv >= 0 ? item(r, iv) : NULL;
    c->aad = aad >= 0 ? item(r, aad) : NULL;
    c->tag = tag >= 0 ? item(r, tag) : NULL;
    if (c->data->len > (1u << 20)) return fail(r, REASON_INVALID_FIELD, "Data over 1 MiB");
    if (c->iv && (c->iv->len < 8 || c->iv->len > 64)) return fail(r, REASON_INVALID_FIELD, "IV of %u bytes", c->iv->len);
    return 0;
}

/* Loads an Active key that may be used for `usage`, and its material. */
static int crypt_key(req_t *r, int32_t payload, uint32_t usage, kms_object_t *o, uint8_t *m, size_t *len)
{
    if (load(r, payload, USE_CRYPT, o)) return -1;
    if (o->state != KMS_STATE_ACTIVE)
        return fail(r, REASON_WRONG_STATE, "%s is %s: only an Active key is used", o->uid, kms_state_name(o->state));
    if (!(o->usage_mask & usage))
        return fail(r, REASON_PERMISSION_DENIED, "the usage mask of %s does not allow this (0x%x)", o->uid,
                    o->usage_mask);
    sr_err_t rc = kms_object_material(r->s, o->uid, m, SR_KEYMGR_WRAPPED_MAX, len);
    return rc == SR_OK ? 0 : store_failed(r, rc);
}

static int gcm(req_t *r, int encrypt, const uint8_t *key, size_t key_len, const crypt_t *c, const uint8_t *iv,
               size_t iv_len, uint8_t *out, uint8_t *tag_out);
static int cbc(req_t *r, int encrypt, const uint8_t *key, size_t key_len, const crypt_t *c, const uint8_t *iv,
               uint8_t *out, size_t *out_len);

static int op_crypt(req_t *r, int32_t payload, int encrypt)
{
    crypt_t c;
    kms_object_t o;
    uint8_t *m = scratch();
    size_t mlen = 0;
    if (!m) return fail(r, REASON_GENERAL_FAILURE, "out of locked memory");
    if (crypt_params(r, payload, &c)) return -1;
    uint32_t usage = c.mode == MODE_KWP ? (encrypt ? SR_KMIP_USAGE_WRAP : SR_KMIP_USAGE_UNWRAP)
                               : (encrypt ? SR_KMIP_USAGE_ENCRYPT : SR_KMIP_USAGE_DECRYPT);
    if (crypt_key(r, payload, usage, &o, m, &mlen)) return -1;
    size_t cap = c.data->len + 16;
    int own = cap > SCRATCH_OUT_BYTES; /* a large datum: its own allocation */
    uint8_t *out = own ? sr_secure_alloc(cap) : m + SR_KEYMGR_WRAPPED_MAX, iv[12], tag[16], cbc_iv[16];
    int ret = out ? 0 : fail(r, REASON_GENERAL_FAILURE, "out of memory");
    size_t out_len = 0;
    const uint8_t *ivp = c.iv ? c.iv->v.ptr : iv;
    size_t iv_len = c.iv ? c.iv->len : sizeof iv;
    if (!ret && c.mode == SR_KMIP_MODE_CBC) {
        if (c.iv && c.iv->len != 16) ret = fail(r, REASON_INVALID_FIELD, "a CBC IV is 16 bytes, not %u", c.iv->len);
        else if (!encrypt && !c.iv) ret = fail(r, REASON_INVALID_FIELD, "Decrypt with CBC needs the IV/Counter/Nonce");
        else if (encrypt && !c.iv && sr_random_bytes(cbc_iv, sizeof cbc_iv) != SR_OK)
            ret = fail(r, REASON_GENERAL_FAILURE, "no randomness");
        else ret = cbc(r, encrypt, m, mlen, &c, c.iv ? c.iv->v.ptr : cbc_iv, out, &out_len);
    } else if (!ret && c.mode == MODE_KWP) {
        sr_err_t rc = encrypt ? sr_keymgr_kwp_wrap(m, mlen, c.data->v.ptr, c.data->len, out, cap, &out_len)
                              : sr_keymgr_kwp_unwrap(m, mlen, c.data->v.ptr, c.data->len, out, cap, &out_len);
        if (rc != SR_OK) ret = fail(r, REASON_CRYPTOGRAPHIC_FAILURE, "AES key unwrap: the data does not authenticate");
    } else if (!ret) {
        if (!encrypt && !c.iv) ret = fail(r, REASON_INVALID_FIELD, "Decrypt with GCM needs the IV/Counter/Nonce");
        else if (!encrypt && (!c.tag || (int)c.tag->len != c.tag_len))
            ret = fail(r, REASON_INVALID_FIELD, "Decrypt with GCM needs an Authenticated Encryption Tag of %d bytes",
                       c.tag_len);
        else if (encrypt && !c.iv && sr_random_bytes(iv, sizeof iv) != SR_OK)
            ret = fail(r, REASON_GENERAL_FAILURE, "no randomness");
        else ret = gcm(r, encrypt, m, mlen, &c, ivp, iv_len, out, tag);
        out_len = c.data->len;
    }
    sr_secure_wipe(m, mlen);
    if (!ret) {
        put_uid(r, o.uid);
        sr_kmip_put_bytes(r->e, SR_KMIP_TAG_DATA, out, out_len);
        if (encrypt && c.mode == SR_KMIP_MODE_GCM && !c.iv) sr_kmip_put_bytes(r->e, SR_KMIP_TAG_IV_COUNTER_NONCE, iv, 12);
        if (encrypt && c.mode == SR_KMIP_MODE_CBC && !c.iv)
            sr_kmip_put_bytes(r->e, SR_KMIP_TAG_IV_COUNTER_NONCE, cbc_iv, sizeof cbc_iv);
        if (encrypt && c.mode == SR_KMIP_MODE_GCM)
            sr_kmip_put_bytes(r->e, SR_KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, tag, (size_t)c.tag_len);
    }
    if (out) sr_secure_wipe(out, cap);
    if (own) sr_secure_free(out);
    return ret;
}

static int op_encrypt(req_t *r, int32_t payload) { return op_crypt(r, payload, 1); }
static int op_decrypt(req_t *r, int32_t payload) { return op_crypt(r, payload, 0); }

/* ---- server information --------------------------------------------------------------------------- */

static const sr_kmip_version_t versions[] = {{1, 4}, {1, 3}, {1, 2}, {1, 1}, {1, 0}};

static int op_discover_versions(req_t *r, int32_t payload)
{
    int32_t first = child(r, payload, SR_KMIP_TAG_PROTOCOL_VERSION, SR_KMIP_STRUCTURE);
    for (size_t k = 0; first < 0 && k < sizeof versions / sizeof versions[0]; k++) {
        sr_kmip_begin(r->e, SR_KMIP_TAG_PROTOCOL_VERSION);
        sr_kmip_put_int(r->e, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, versions[k].major);
        sr_kmip_put_int(r->e, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, versions[k].minor);
        sr_kmip_end(r->e);
    }
    for (int32_t i = first; i >= 0; i = sr_kmip_next_same(r->t, i)) { /* the client's, in its order, that we speak */
        int32_t ma = child(r, i, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, SR_KMIP_INTEGER);
        int32_t mi = child(r, i, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, SR_KMIP_INTEGER);
        if (ma < 0 || mi < 0 || item(r, ma)->v.i32 != 1 || item(r, mi)->v.i32 < 0 || item(r, mi)->v.i32 > 4) continue;
        sr_kmip_begin(r->e, SR_KMIP_TAG_PROTOCOL_VERSION);
        sr_kmip_put_int(r->e, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
        sr_kmip_put_int(r->e, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, item(r, mi)->v.i32);
        sr_kmip_end(r->e);
    }
    return 0;
}

static int op_query(req_t *r, int32_t payload);

/* ---- nodes: enrolment, leases, leaving (KMIP vendor extensions) --------------------------------- */

static kms_enrolment_t enrolment;
static int enrolment_on;

void kms_enrolment_configure(const kms_enrolment_t *e)
{
    if (e) enrolment = *e;
    enrolment_on = e != NULL;
}

sr_err_t kms_node_end(kms_store_t *s, kms_node_t *n, const char *state, const char *reason)
{
    kms_object_t nk;
    int64_t now = now_s();
    sr_err_t rc = kms_object_load(s, n->nk, &nk);
    if (rc == SR_OK && nk.state == KMS_STATE_ACTIVE) {
        nk.state = KMS_STATE_DEACTIVATED, nk.deactivation_date = nk.last_change_date = now;
        nk.revocation_code = SR_KMIP_REVOKE_CESSATION;
        snprintf(nk.revocation_message, sizeof nk.revocation_message, "%s", reason);
        rc = kms_object_update(s, &nk);
    }
    if (rc == SR_ERR_NOT_FOUND) rc = SR_OK; /* no key to revoke: the membership ends all the same */
    int revoked = 0;
    snprintf(n->state, sizeof n->state, "%s", state);
    snprintf(n->reason, sizeof n->reason, "%s", reason);
    n->left = now;
    if (rc == SR_OK) rc = kms_node_save(s, n);
    if (rc == SR_OK) rc = kms_cert_revoke(s, n->uuid, &revoked);
    return rc;
}

static int op_enrol(req_t *r, int32_t payload)
{
    char token[128], name[KMS_TEXT_MAX], group[KMS_TEXT_MAX];
    int32_t csr = child(r, payload, KMS_TAG_CSR, SR_KMIP_BYTE_STRING);
    if (!enrolment_on) return fail(r, REASON_OPERATION_NOT_SUPPORTED, "enrolment is not enabled on this KMS");
    if (text_of(r, child(r, payload, KMS_TAG_JOIN_TOKEN, SR_KMIP_TEXT_STRING), token, sizeof token) ||
        text_of(r, child(r, payload, KMS_TAG_NODE_NAME, SR_KMIP_TEXT_STRING), name, sizeof name))
        return -1;
    if (!token[0] || csr < 0) return fail(r, REASON_INVALID_FIELD, "Enrol needs a join token and a certificate request");
    sr_err_t rc = kms_token_take(r->s, token, group);
    sr_secure_wipe(token, sizeof token);
    if (rc == SR_ERR_AUTH) return fail(r, REASON_PERMISSION_DENIED, "%s", sr_err_detail());
    if (rc != SR_OK) return store_failed(r, rc);
    kms_node_t n = {.joined = now_s()};
    sr_uuid_t id;
    sr_uuid_generate(&id);
    sr_uuid_format(&id, n.uuid);
    snprintf(n.name, sizeof n.name, "%s", name[0] ? name : n.uuid);
    snprintf(n.group, sizeof n.group, "%s", group);
    snprintf(n.state, sizeof n.state, "active");
    n.lease_expires_ms = sr_time_now_us() / 1000 + enrolment.lease_ms;
    snprintf(r->object, sizeof r->object, "%s", n.uuid);
    uint8_t *cert = NULL;
    size_t cert_len = 0;
    kms_cert_info_t info;
    rc = kms_pki_sign_csr(enrolment.ca, item(r, csr)->v.ptr, item(r, csr)->len, n.uuid, (int)enrolment.cert_days, &cert,
                          &cert_len, &info);
    if (rc == SR_ERR_PARSE || rc == SR_ERR_AUTH) return fail(r, REASON_INVALID_FIELD, "%s", sr_err_detail());
    if (rc != SR_OK) return store_failed(r, rc);
    /* the node key: Active, owned by the node, tagged with its UUID */
    template_t tp;
    memset(&tp, 0, sizeof tp);
    tp.algorithm = SR_KMIP_ALG_AES, tp.length = 256, tp.activation_date = n.joined;
    tp.usage_mask = SR_KMIP_USAGE_ENCRYPT | SR_KMIP_USAGE_DECRYPT | SR_KMIP_USAGE_WRAP | SR_KMIP_USAGE_UNWRAP;
    char key_name[KMS_TEXT_MAX + 16];
    snprintf(key_name, sizeof key_name, "node-key/%s", n.uuid);
    tp.stored[0] = (kms_attr_t){.name = "Name", .type = SR_KMIP_STRUCTURE, .bytes = (uint8_t *)key_name,
                                .len = (uint32_t)strlen(key_name)};
    tp.stored[1] = (kms_attr_t){.name = "x-node-uuid", .type = SR_KMIP_TEXT_STRING, .bytes = (uint8_t *)n.uuid,
                                .len = (uint32_t)strlen(n.uuid)};
    tp.n_stored = 2;
    kms_object_t nk;
    object_from_template(&nk, &tp);
    snprintf(nk.owner, sizeof nk.owner, "%s", n.uuid);
    int ret = insert_fresh(r, &nk, &tp);
    if (!ret) {
        snprintf(n.nk, sizeof n.nk, "%s", nk.uid);
        rc = kms_principal_set(r->s, n.uuid, KMS_ROLE_NODE);
        if (rc == SR_OK) rc = kms_principal_set_group(r->s, n.uuid, group);
        if (rc == SR_OK) rc = kms_cert_record(r->s, info.fingerprint, n.uuid, info.serial, info.not_after);
        if (rc == SR_OK) rc = kms_node_save(r->s, &n);
        if (rc != SR_OK) ret = store_failed(r, rc);
    }
    if (!ret) {
        snprintf(r->object, sizeof r->object, "%s", n.uuid);
        snprintf(r->message, sizeof r->message, "node %s (%.40s) joined group '%.40s'; node key %s", n.uuid, n.name, group,
                 nk.uid);
        sr_kmip_put_text(r->e, KMS_TAG_NODE_UUID, n.uuid);
        put_uid(r, nk.uid);
        sr_kmip_put_bytes(r->e, KMS_TAG_NODE_CERTIFICATE, cert, cert_len);
        sr_kmip_put_int(r->e, KMS_TAG_LEASE_SECONDS, (int32_t)(enrolment.lease_ms / 1000));
        if (!r->p->name[0] && !r->p->fingerprint[0]) { /* the enrolment's connection goes on as the node's */
            r->enrolled = (kms_principal_t){.role = KMS_ROLE_NODE};
            snprintf(r->enrolled.name, sizeof r->enrolled.name, "%s", n.uuid);
            snprintf(r->enrolled.fingerprint, sizeof r->enrolled.fingerprint, "%s", info.fingerprint);
            sr_kmip_put_bool(r->e, KMS_TAG_CONNECTION_BOUND, 1);
        }
    }
    free(cert);
    return ret;
}

/* The calling node's membership, which must be active. */
static int own_node(req_t *r, kms_node_t *n)
{
    snprintf(r->object, sizeof r->object, "%.63s", r->p->name);
    if (r->p->role != KMS_ROLE_NODE) return fail(r, REASON_PERMISSION_DENIED, "only a node may do this");
    sr_err_t rc = kms_node_load(r->s, r->p->name, n);
    if (rc == SR_ERR_NOT_FOUND) return fail(r, REASON_ITEM_NOT_FOUND, "no node %s", r->p->name);
    if (rc != SR_OK) return store_failed(r, rc);
    if (strcmp(n->state, "active") != 0)
        return fail(r, REASON_PERMISSION_DENIED, "node %s is %s (%s): enrol again with a new token", n->uuid, n->state,
                    n->reason);
    return 0;
}

static int op_heartbeat(req_t *r, int32_t payload)
{
    (void)payload;
    kms_node_t n;
    if (own_node(r, &n)) return -1;
    n.lease_expires_ms = sr_time_now_us() / 1000 + enrolment.lease_ms;
    sr_err_t rc = kms_node_save(r->s, &n);
    if (rc != SR_OK) return store_failed(r, rc);
    sr_kmip_put_int(r->e, KMS_TAG_LEASE_SECONDS, (int32_t)(enrolment.lease_ms / 1000));
    sr_kmip_put_int(r->e, SR_KMIP_TAG_X_POLICY_VERSION, (int32_t)kms_policy_newest(r->s)); /* the agent fetches a newer one */
    /* agents compare it for a change, so wrapping at 2^31 is harmless */
    sr_kmip_put_int(r->e, SR_KMIP_TAG_X_ACCESS_EPOCH, (int32_t)(kms_access_epoch(r->s) & INT32_MAX));
    return 0;
}

/* The newest access policy, for a node (its agent installs it) or an admin. */
static int op_get_policy(req_t *r, int32_t payload)
{
    (void)payload;
    kms_node_t n;
    if (r->p->role != KMS_ROLE_ADMIN && own_node(r, &n)) return -1;
    kms_policy_t p;
    sr_err_t rc = kms_policy_load(r->s, &p);
    if (rc == SR_ERR_NOT_FOUND) return fail(r, REASON_ITEM_NOT_FOUND, "%s", sr_err_detail());
    if (rc != SR_OK) return store_failed(r, rc);
    snprintf(r->object, sizeof r->object, "policy v%lld", (long long)p.version);
    sr_kmip_put_int(r->e, SR_KMIP_TAG_X_POLICY_VERSION, (int32_t)p.version);
    sr_kmip_put_text(r->e, SR_KMIP_TAG_X_POLICY_DIGEST, p.digest);
    sr_kmip_put_bytes(r->e, SR_KMIP_TAG_X_POLICY_TEXT, (const uint8_t *)p.text, p.len);
    free(p.text);
    return 0;
}

static int op_leave(req_t *r, int32_t payload)
{
    (void)payload;
    kms_node_t n;
    if (own_node(r, &n)) return -1;
    sr_err_t rc = kms_node_end(r->s, &n, "left", "the node left (graceful)");
    if (rc != SR_OK) return store_failed(r, rc);
    snprintf(r->message, sizeof r->message, "node %s left; node key %s revoked", n.uuid, n.nk);
    sr_kmip_put_text(r->e, KMS_TAG_NODE_UUID, n.uuid);
    return 0;
}

typedef struct operation {
    uint32_t code;
    const char *name;
    int (*run)(req_t *, int32_t);
    int changes; /* its record is written before the commit, under the store lock */
    int quiet;   /* a success is not recorded (heartbeats: a failure is) */
} operation_t;

static const operation_t operations[] = {
    {SR_KMIP_OP_CREATE, "create", op_create, 1, 0},
    {SR_KMIP_OP_REGISTER, "register", op_register, 1, 0},
    {SR_KMIP_OP_REKEY, "rekey", op_rekey, 1, 0},
    {SR_KMIP_OP_LOCATE, "locate", op_locate, 0, 0},
    {SR_KMIP_OP_GET, "get", op_get, 0, 0},
    {SR_KMIP_OP_GET_ATTRIBUTES, "get_attributes", op_get_attributes, 0, 0},
    {OP_GET_ATTRIBUTE_LIST, "get_attribute_list", op_get_attribute_list, 0, 0},
    {OP_ADD_ATTRIBUTE, "add_attribute", op_add_attribute, 1, 0},
    {OP_MODIFY_ATTRIBUTE, "modify_attribute", op_modify_attribute, 1, 0},
    {OP_DELETE_ATTRIBUTE, "delete_attribute", op_delete_attribute, 1, 0},
    {SR_KMIP_OP_ACTIVATE, "activate", op_activate, 1, 0},
    {SR_KMIP_OP_REVOKE, "revoke", op_revoke, 1, 0},
    {SR_KMIP_OP_DESTROY, "destroy", op_destroy, 1, 0},
    {SR_KMIP_OP_QUERY, "query", op_query, 0, 0},
    {SR_KMIP_OP_DISCOVER_VERSIONS, "discover_versions", op_discover_versions, 0, 0},
    {SR_KMIP_OP_ENCRYPT, "encrypt", op_encrypt, 0, 0},
    {SR_KMIP_OP_DECRYPT, "decrypt", op_decrypt, 0, 0},
    {KMS_OP_ENROL, "enrol", op_enrol, 1, 0},
    {KMS_OP_HEARTBEAT, "heartbeat", op_heartbeat, 1, 1},
    {KMS_OP_LEAVE, "leave", op_leave, 1, 0},
    {SR_KMIP_OP_GET_POLICY, "get_policy", op_get_policy, 0, 0},
};
#define N_OPERATIONS (sizeof operations / sizeof operations[0])

static int op_query(req_t *r, int32_t payload)
{
    int want[4] = {0};
    for (int32_t i = child(r, payload, SR_KMIP_TAG_QUERY_FUNCTION, SR_KMIP_ENUMERATION); i >= 0;
         i = sr_kmip_next_same(r->t, i))
        if (item(r, i)->v.u32 < 4) want[item(r, i)->v.u32] = 1;
    for (size_t k = 0; want[1] && k < N_OPERATIONS; k++)
        sr_kmip_put_enum(r->e, SR_KMIP_TAG_OPERATION, operations[k].code);
    if (want[2]) sr_kmip_put_enum(r->e, SR_KMIP_TAG_OBJECT_TYPE, SR_KMIP_OBJECT_SYMMETRIC_KEY);
    if (want[3]) sr_kmip_put_text(r->e, SR_KMIP_TAG_VENDOR_IDENTIFICATION, "strongroom kmsd");
    return 0;
}

/* ---- GCM --------------------------------------------------------------------------------------------- */

static int gcm(req_t *r, int encrypt, const uint8_t *key, size_t key_len, const crypt_t *c, const uint8_t *iv,
               size_t iv_len, uint8_t *out, uint8_t *tag_out)
{
    const EVP_CIPHER *cipher = key_len == 16 ? EVP_aes_128_gcm() : key_len == 24 ? EVP_aes_192_gcm() : EVP_aes_256_gcm();
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx && EVP_CipherInit_ex(ctx, cipher, NULL, NULL, NULL, encrypt) == 1 &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL) == 1 &&
             EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, encrypt) == 1;
    int n = 0;
    if (ok && c->aad) ok = EVP_CipherUpdate(ctx, NULL, &n, c->aad->v.ptr, (int)c->aad->len) == 1;
    if (ok && c->data->len) ok = EVP_CipherUpdate(ctx, out, &n, c->data->v.ptr, (int)c->data->len) == 1;
    if (ok && !encrypt) ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, c->tag_len, (void *)c->tag->v.ptr) == 1;
    if (ok) ok = EVP_CipherFinal_ex(ctx, out + n, &n) == 1;
    if (ok && encrypt) ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, c->tag_len, tag_out) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        sr_secure_wipe(out, c->data->len);
        return fail(r, REASON_CRYPTOGRAPHIC_FAILURE, encrypt ? "AES-GCM encryption failed"
                                                             : "AES-GCM: the data, AAD or tag do not authenticate");
    }
    return 0;
}

static int cbc(req_t *r, int encrypt, const uint8_t *key, size_t key_len, const crypt_t *c, const uint8_t *iv,
               uint8_t *out, size_t *out_len)
{
    const EVP_CIPHER *cipher = key_len == 16 ? EVP_aes_128_cbc() : key_len == 24 ? EVP_aes_192_cbc() : EVP_aes_256_cbc();
    if (c->padding == PADDING_NONE && c->data->len % 16)
        return fail(r, REASON_INVALID_FIELD, "CBC without padding needs whole 16-byte blocks (%u bytes)", c->data->len);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, m = 0;
    int ok = ctx && EVP_CipherInit_ex(ctx, cipher, NULL, key, iv, encrypt) == 1 &&
             EVP_CIPHER_CTX_set_padding(ctx, c->padding == PADDING_PKCS5) == 1 &&
             EVP_CipherUpdate(ctx, out, &n, c->data->v.ptr, (int)c->data->len) == 1 &&
             EVP_CipherFinal_ex(ctx, out + n, &m) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) return fail(r, REASON_CRYPTOGRAPHIC_FAILURE, encrypt ? "AES-CBC encryption failed" : "AES-CBC: bad padding");
    *out_len = (size_t)(n + m);
    return 0;
}

/* ---- the message ------------------------------------------------------------------------------------- */

/* Result reasons a version does not define are sent as the nearest one it does. */
static uint32_t reason_for_version(uint32_t reason, sr_kmip_version_t v)
{
    static const uint32_t newest[] = {0x0C, 0x11, 0x12, 0x15, 0x18}; /* per minor version 0..4 */
    if (reason == REASON_GENERAL_FAILURE || reason <= newest[v.minor]) return reason;
    if (reason == REASON_KEY_FORMAT_NOT_SUPPORTED || reason == REASON_KEY_COMPRESSION_NOT_SUPPORTED)
        return REASON_FEATURE_NOT_SUPPORTED;
    return REASON_GENERAL_FAILURE;
}

static const operation_t *find_operation(uint32_t code)
{
    for (size_t k = 0; k < N_OPERATIONS; k++)
        if (operations[k].code == code) return &operations[k];
    return NULL;
}

static sr_err_t audit(const req_t *r, const char *op, const char *outcome)
{
    char event[64], detail[260];
    snprintf(event, sizeof event, "kmip.%s", op);
    snprintf(detail, sizeof detail, "%s%s%s", r->p ? kms_role_name(r->p->role) : "", r->message[0] ? ": " : "",
             r->message);
    sr_event_t ev = {.component = "kms", .event = event, .subject = r->p->name[0] ? r->p->name : "(anonymous)",
                     .object = r->object[0] ? r->object : NULL, .outcome = outcome, .detail = detail,
                     .source = r->p->source[0] ? r->p->source : NULL};
    return sr_event_emit(&ev);
}

/* The node an Enrol made, now this connection's principal (committed: the
 * node exists): its certificate is the one the request was for, the
 * connection the one it came on, so the node's first requests need no
 * second TLS handshake. Its certificate's revocation is checked on each
 * request, as for a connection that presented it. */
static void bind_to_node(req_t *r)
{
    snprintf(r->p->name, sizeof r->p->name, "%s", r->enrolled.name);
    snprintf(r->p->fingerprint, sizeof r->p->fingerprint, "%s", r->enrolled.fingerprint);
    r->p->role = r->enrolled.role;
    r->enrolled.name[0] = '\0';
}

/* Runs one batch item: its result and payload, or its failure, into r->e. */
static int run_item(req_t *r, int32_t bi)
{
    sr_kmip_enc_t *e = r->e;
    int32_t op = child(r, bi, SR_KMIP_TAG_OPERATION, SR_KMIP_ENUMERATION);
    int32_t id = child(r, bi, SR_KMIP_TAG_UNIQUE_BATCH_ITEM_ID, SR_KMIP_BYTE_STRING);
    int32_t payload = child(r, bi, SR_KMIP_TAG_REQUEST_PAYLOAD, SR_KMIP_STRUCTURE);
    uint32_t code = op >= 0 ? item(r, op)->v.u32 : 0;
    const operation_t *o = find_operation(code);
    r->reason = 0, r->message[0] = '\0', r->object[0] = '\0';
    sr_kmip_begin(e, SR_KMIP_TAG_BATCH_ITEM);
    if (op >= 0) sr_kmip_put_enum(e, SR_KMIP_TAG_OPERATION, code);
    if (id >= 0) sr_kmip_put_bytes(e, SR_KMIP_TAG_UNIQUE_BATCH_ITEM_ID, item(r, id)->v.ptr, item(r, id)->len);
    size_t mark = e->len;
    int depth = e->depth;
    int ret;
    if (op < 0 || payload < 0) ret = fail(r, REASON_INVALID_MESSAGE, "batch item without Operation or Request Payload");
    else if (!o) ret = fail(r, REASON_OPERATION_NOT_SUPPORTED, "operation %u is not supported", code);
    else if (r->p->refused[0]) ret = fail(r, REASON_PERMISSION_DENIED, "%s", r->p->refused);
    else if (r->p->role == KMS_ROLE_NONE && code != KMS_OP_ENROL)
        ret = fail(r, REASON_PERMISSION_DENIED, "principal '%s' is not registered with this KMS", r->p->name);
    else if ((o->changes ? kms_store_begin(r->s) : kms_store_begin_read(r->s)) != SR_OK)
        ret = fail(r, REASON_GENERAL_FAILURE, "key store busy");
    else {
        sr_kmip_put_enum(e, SR_KMIP_TAG_RESULT_STATUS, SR_KMIP_STATUS_SUCCESS);
        sr_kmip_begin(e, SR_KMIP_TAG_RESPONSE_PAYLOAD);
        ret = o->run(r, payload);
        sr_kmip_end(e);
        if (!ret && e->err) ret = fail(r, REASON_GENERAL_FAILURE, "response too large");
        /* The record first: no change is kept unrecorded (written under the
         * lock, before the commit) and no key leaves unrecorded (the response
         * is sent after). A read's record is written after the lock is
         * released, so concurrent reads share the log's group commit. */
        if (!ret && o->changes && !o->quiet && audit(r, o->name, "success") != SR_OK)
            ret = fail(r, REASON_GENERAL_FAILURE, "the audit log cannot record this operation");
        sr_err_t committed = ret ? SR_OK : kms_store_commit(r->s);
        if (committed != SR_OK) ret = store_failed(r, committed); /* "no space left on device", ... */
        if (ret) kms_store_rollback(r->s);
        else if (r->enrolled.name[0]) bind_to_node(r);
        kms_store_unlock(r->s);
        if (!ret && !o->changes && audit(r, o->name, "success") != SR_OK)
            ret = fail(r, REASON_GENERAL_FAILURE, "the audit log cannot record this operation");
        kms_store_lock(r->s);
    }
    if (ret) {
        sr_kmip_enc_rewind(e, mark, depth);
        sr_kmip_put_enum(e, SR_KMIP_TAG_RESULT_STATUS, SR_KMIP_STATUS_FAILED);
        sr_kmip_put_enum(e, SR_KMIP_TAG_RESULT_REASON, reason_for_version(r->reason, r->v));
        sr_kmip_put_text(e, SR_KMIP_TAG_RESULT_MESSAGE, r->message);
        (void)audit(r, o ? o->name : "unknown",
                    r->reason == REASON_PERMISSION_DENIED || r->reason == REASON_ITEM_NOT_FOUND ? "denied" : "failure");
    }
    sr_kmip_end(e);
    return ret;
}

static void begin_response(req_t *r, int32_t count_at)
{
    sr_kmip_enc_t *e = r->e;
    sr_kmip_begin(e, SR_KMIP_TAG_RESPONSE_MESSAGE);
    sr_kmip_begin(e, SR_KMIP_TAG_RESPONSE_HEADER);
    sr_kmip_begin(e, SR_KMIP_TAG_PROTOCOL_VERSION);
    sr_kmip_put_int(e, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, r->v.major);
    sr_kmip_put_int(e, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, r->v.minor);
    sr_kmip_end(e);
    sr_kmip_put_datetime(e, SR_KMIP_TAG_TIME_STAMP, now_s());
    sr_kmip_put_int(e, SR_KMIP_TAG_BATCH_COUNT, count_at);
    sr_kmip_end(e);
}

/* The header's version, clamped to what we speak (1.0-1.4). */
static void request_version(req_t *r, int32_t hdr)
{
    int32_t pv = child(r, hdr, SR_KMIP_TAG_PROTOCOL_VERSION, SR_KMIP_STRUCTURE);
    int32_t mi = child(r, pv, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, SR_KMIP_INTEGER);
    int32_t ma = child(r, pv, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, SR_KMIP_INTEGER);
    r->v = (sr_kmip_version_t){1, 4};
    if (ma >= 0 && mi >= 0 && item(r, ma)->v.i32 == 1 && item(r, mi)->v.i32 >= 0 && item(r, mi)->v.i32 <= 4)
        r->v.minor = item(r, mi)->v.i32;
}

/* A message we cannot read as a request: one failed item, Invalid Message. */
static sr_err_t answer_invalid(req_t *r, const char *why)
{
    sr_kmip_enc_rewind(r->e, 0, 0);
    begin_response(r, 1);
    fail(r, REASON_INVALID_MESSAGE, "%s", why);
    sr_kmip_begin(r->e, SR_KMIP_TAG_BATCH_ITEM);
    sr_kmip_put_enum(r->e, SR_KMIP_TAG_RESULT_STATUS, SR_KMIP_STATUS_FAILED);
    sr_kmip_put_enum(r->e, SR_KMIP_TAG_RESULT_REASON, REASON_INVALID_MESSAGE);
    sr_kmip_put_text(r->e, SR_KMIP_TAG_RESULT_MESSAGE, r->message);
    sr_kmip_end(r->e);
    sr_kmip_end(r->e);
    (void)audit(r, "invalid_message", "failure");
    return sr_kmip_enc_finish(r->e);
}

sr_err_t kms_handle(kms_store_t *s, kms_principal_t *p, const uint8_t *buf, size_t len, sr_kmip_enc_t *resp)
{
    sr_kmip_tree_t tree = {0};
    req_t r = {.s = s, .p = p, .t = &tree, .v = {1, 4}, .e = resp};
    sr_err_t rc = sr_kmip_decode(buf, len, &tree);
    if (rc != SR_OK) return answer_invalid(&r, sr_err_detail());
    int32_t hdr = child(&r, 0, SR_KMIP_TAG_REQUEST_HEADER, SR_KMIP_STRUCTURE);
    int32_t count = child(&r, hdr, SR_KMIP_TAG_BATCH_COUNT, SR_KMIP_INTEGER);
    int32_t cont = child(&r, hdr, SR_KMIP_TAG_BATCH_ERROR_CONTINUATION_OPTION, SR_KMIP_ENUMERATION);
    int32_t first = child(&r, 0, SR_KMIP_TAG_BATCH_ITEM, SR_KMIP_STRUCTURE);
    request_version(&r, hdr);
    int n = 0;
    for (int32_t i = first; i >= 0; i = sr_kmip_next_same(&tree, i)) n++;
    if (tree.items[0].tag != SR_KMIP_TAG_REQUEST_MESSAGE || hdr < 0 || count < 0 || first < 0)
        rc = answer_invalid(&r, "not a KMIP Request Message with a header and batch items");
    else if (tree.items[count].v.i32 != n)
        rc = answer_invalid(&r, "Batch Count does not match the batch items");
    else if (cont >= 0 && tree.items[cont].v.u32 == BATCH_UNDO)
        rc = answer_invalid(&r, "Batch Error Continuation Option Undo is not supported");
    else {
        int keep_going = cont >= 0 && tree.items[cont].v.u32 == BATCH_CONTINUE;
        size_t count_at = 0;
        begin_response(&r, n);
        count_at = resp->len - 8; /* the Batch Count value, patched below */
        int done = 0;
        kms_store_lock(s);
        for (int32_t i = first; i >= 0; i = sr_kmip_next_same(&tree, i)) {
            done++;
            if (run_item(&r, i) && !keep_going) break;
        }
        kms_store_unlock(s);
        if (!resp->err) sr_put_be32(resp->buf + count_at, (uint32_t)done);
        sr_kmip_end(resp);
        rc = sr_kmip_enc_finish(resp);
    }
    sr_kmip_tree_free(&tree);
    return rc;
}
