/* libFuzzer target: the key-header reader (both slots, the wrapped keys inside)
 * never crashes, never reads past its input, and never accepts a header whose
 * fields are out of range. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tde.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t region[SR_TDE_HEADER_REGION];
    memset(region, 0, sizeof region);
    memcpy(region, data, size < sizeof region ? size : sizeof region);
    sr_tde_header_t h;
    if (sr_tde_header_pick(region, NULL, NULL, &h, NULL) == SR_OK) {
        if (h.n_keys == 0 || h.n_keys > SR_TDE_MAX_KEY_VERSIONS || !sr_tde_page_size_valid(h.page_size)) __builtin_trap();
        for (uint32_t i = 0; i < h.n_keys; i++)
            if (h.keys[i].wrapped.blob_len > SR_KEYMGR_WRAPPED_MAX) __builtin_trap();
    }
    sr_wrapped_key_t wk;
    sr_err_t rc = sr_tde_header_decode(data, size, &h);
    rc = sr_wrapped_key_decode(data, size, &wk);
    if (rc == SR_OK && wk.blob_len > SR_KEYMGR_WRAPPED_MAX) __builtin_trap();
    return 0;
}
