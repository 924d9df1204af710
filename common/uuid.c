/* uuid.c — RFC 4122 UUIDs through libuuid; lower-case text form. */
#include "common.h"

#include <string.h>
#include <uuid/uuid.h>

void sr_uuid_generate(sr_uuid_t *out) { uuid_generate_random(out->bytes); }

void sr_uuid_format(const sr_uuid_t *uuid, char out[SR_UUID_STR_LEN + 1]) { uuid_unparse_lower(uuid->bytes, out); }

sr_err_t sr_uuid_parse(const char *text, sr_uuid_t *out)
{
    uuid_t parsed;
    if (!text || strlen(text) != SR_UUID_STR_LEN || uuid_parse(text, parsed) != 0)
        return sr_err_set(SR_ERR_PARSE, "'%s' is not a UUID (want 8-4-4-4-12 hex digits)", text ? text : "");
    memcpy(out->bytes, parsed, SR_UUID_BYTES);
    return SR_OK;
}

int sr_uuid_equal(const sr_uuid_t *a, const sr_uuid_t *b) { return memcmp(a->bytes, b->bytes, SR_UUID_BYTES) == 0; }

int sr_uuid_is_nil(const sr_uuid_t *uuid) { return uuid_is_null(uuid->bytes); }
