/* libFuzzer target: the configuration parser never crashes or leaks. */
#include <stddef.h>
#include <stdint.h>

#include "common.h"

static const sr_config_key_t schema[] = {
    {"", "log_level", SR_CONFIG_STRING, "info", 0},     {"kms", "host", SR_CONFIG_STRING, NULL, 0},
    {"kms", "port", SR_CONFIG_INT, "5696", 0},          {"kms", "tls", SR_CONFIG_BOOL, "true", 0},
    {"kms", "timeout", SR_CONFIG_DURATION, "5s", 0},    {"kms", "ca", SR_CONFIG_PATH, NULL, 0},
    {"cache", "size", SR_CONFIG_SIZE, "1M", 0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sr_config_t *cfg = NULL;
    if (sr_config_parse("fuzz.conf", (const char *)data, size, schema, sizeof schema / sizeof schema[0], &cfg) ==
        SR_OK) {
        int64_t port;
        uint64_t ms;
        (void)sr_config_get_int(cfg, "kms", "port", &port);
        (void)sr_config_get_duration_ms(cfg, "kms", "timeout", &ms);
        sr_config_free(cfg);
    }
    return 0;
}
