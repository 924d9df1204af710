/* libFuzzer target: what any local process may send the sealer. A frame is
 * refused with a reason, or becomes a record that fits its line, parses,
 * hashes as written and gives back every field it carried — exactly, when
 * the field fitted its length (a cut one ends " [cut]"). */
#include <stdlib.h>
#include <string.h>

#include "audit_internal.h"

static void check_field(const char *sent, const char *got, size_t limit_escaped)
{
    if (strcmp(sent, got) == 0) return;
    size_t n = strlen(got);
    /* cut: what was kept is the start of what was sent, and says so */
    if (n < 6 || strcmp(got + n - 6, " [cut]") != 0 || strncmp(sent, got, n - 6) != 0 || n - 6 > limit_escaped)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384) return 0; /* the sealer's frame limit */
    char *payload = malloc(size + 1);
    if (!payload) return 0;
    memcpy(payload, data, size);
    payload[size] = '\0';
    const char *f[AUDIT_FRAME_FIELDS];
    if (audit_frame_fields(payload, size, f) == NULL) {
        static char line[SR_AUDIT_LINE_MAX + 512];
        sr_event_t e = {.component = f[0], .event = f[1], .subject = "uid=0 gid=0 pid=1 exe=/fuzz", .object = f[3],
                        .outcome = f[4], .source = f[5], .detail = f[6]};
        uint8_t prev[SR_AUDIT_HASH_BYTES] = {0}, hash[SR_AUDIT_HASH_BYTES], tag_key[AUDIT_TAG_KEY_BYTES] = {1};
        size_t n = audit_format(line, sizeof line, 1, 0, "host", &e, prev, tag_key, hash);
        if (n == 0 || n - 1 > SR_AUDIT_LINE_MAX || line[n - 1] != '\n') __builtin_trap();
        sr_audit_record_t r;
        if (sr_audit_record_parse(line, n - 1, &r) != SR_OK || memcmp(r.hash, hash, sizeof hash) != 0 ||
            !audit_tag_ok(tag_key, &r))
            __builtin_trap();
        const char *got[] = {r.component, r.event, r.object, r.outcome, r.source, r.detail};
        const char *sent[] = {f[0], f[1], f[3], f[4], f[5], f[6]};
        for (int i = 0; i < 6; i++) check_field(sent[i], got[i], i == 5 ? 4096 : 512);
    }
    free(payload);
    return 0;
}
