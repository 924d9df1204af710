/* libFuzzer target: the TTLV decoder and the response parser never crash or
 * read past their input; an accepted tree's items stay inside it. */
#include <stdlib.h>
#include <string.h>

#include "kmip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sr_kmip_tree_t t;
    if (sr_kmip_decode(data, size, &t) == SR_OK) {
        for (size_t i = 0; i < t.n; i++) {
            const sr_kmip_item_t *it = &t.items[i];
            int ptr = it->type == SR_KMIP_TEXT_STRING || it->type == SR_KMIP_BYTE_STRING || it->type == SR_KMIP_BIG_INTEGER;
            if (ptr && (it->v.ptr < data || it->v.ptr + it->len > data + size)) __builtin_trap();
        }
        char *json = sr_kmip_to_json(&t, 0);
        free(json);
        sr_kmip_tree_free(&t);
    }
    sr_kmip_response_t r;
    (void)!sr_kmip_response_parse(data, size, 0, &r);
    sr_kmip_response_free(&r);
    return 0;
}
