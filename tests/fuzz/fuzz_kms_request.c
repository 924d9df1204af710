/* libFuzzer target: kmsd's request handling (decode -> dispatch -> encode)
 * against an in-memory store, as an admin (every operation reachable). Any
 * input is answered with a well-formed response; nothing crashes or leaks. */
#include <stdlib.h>
#include <string.h>

#include "kms.h"

static sr_err_t discard(void *ctx, const sr_event_t *ev) { return (void)ctx, (void)ev, SR_OK; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static kms_store_t *store;
    static sr_keyprov_t *root;
    if (!store) {
        static const uint8_t key[SR_KEYMGR_KEY_BYTES] = {1};
        sr_uuid_t id = {{2}};
        if (sr_secure_init() != SR_OK || sr_keyprov_rawkey_new(&id, key, "fuzz", &root) != SR_OK ||
            kms_store_open(":memory:", root, &store) != SR_OK)
            abort();
        sr_event_set_sink(discard, NULL);
    }
    kms_principal_t p = {.name = "fuzzer", .role = KMS_ROLE_ADMIN, .source = "fuzz"};
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    if (kms_handle(store, &p, data, size, &e) == SR_OK) {
        sr_kmip_tree_t t;
        if (sr_kmip_decode(e.buf, e.len, &t) != SR_OK) __builtin_trap(); /* every answer decodes */
        sr_kmip_tree_free(&t);
    }
    sr_kmip_enc_free(&e);
    return 0;
}
