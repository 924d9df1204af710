/* Logging: levels, format, control characters, and secret redaction. */
#include <stdlib.h>

#include "sr_test.h"

static char *log_text(const char *path)
{
    size_t len;
    char *text = (char *)sr_test_read_file(path, &len);
    if (!text) return NULL;
    char *z = realloc(text, len + 1);
    if (z) z[len] = '\0';
    return z;
}

static void test_levels_and_format(void)
{
    const char *path = sr_test_path("levels.log");
    SR_CHECK_OK(sr_log_open("tester", path, SR_LOG_NOTICE));
    sr_log_info("hidden info");
    sr_log_warn("shown %d", 42);
    sr_log_error("forged\nline");
    sr_log_close();
    char *text = log_text(path);
    SR_CHECK(text && !strstr(text, "hidden info"));
    SR_CHECK_CONTAINS(text, "tester[");
    SR_CHECK_CONTAINS(text, "] WARN shown 42\n");
    SR_CHECK_CONTAINS(text, "ERROR forged?line\n"); /* no forged second line */
    SR_CHECK(text && text[4] == '-' && strstr(text, "Z tester["));
    free(text);
    sr_log_level_t lvl;
    SR_CHECK_OK(sr_log_level_parse("DEBUG", &lvl));
    SR_CHECK_EQ_INT(lvl, SR_LOG_DEBUG);
    SR_CHECK_ERR(sr_log_level_parse("loud", &lvl), SR_ERR_CONFIG);
}

static void test_registered_secret_never_logged(void)
{
    uint8_t *key = sr_secure_alloc(32);
    SR_CHECK(key != NULL);
    if (!key) return;
    SR_CHECK_OK(sr_random_bytes(key, 32));
    for (int i = 0; i < 32; i++)
        if (key[i] < 0x20 || key[i] == 0x7f) key[i] = 'A' + (key[i] & 15); /* keep the raw form printable */
    char hex[65], upper[65];
    sr_hex_encode(key, 32, hex);
    for (int i = 0; i < 65; i++) upper[i] = (hex[i] >= 'a' && hex[i] <= 'f') ? (char)(hex[i] - 32) : hex[i];

    const char *path = sr_test_path("secret.log");
    SR_CHECK_OK(sr_log_open("tester", path, SR_LOG_DEBUG));
    SR_CHECK_OK(sr_log_secret_register(key, 32));
    sr_log_debug("hex key=%s done", hex);
    sr_log_debug("upper key=%s done", upper);
    sr_log_debug("raw key=%.32s done", (const char *)key);
    sr_log_debug("twice %s and %s", hex, hex);
    sr_log_secret_unregister(key);
    sr_log_debug("after unregister %s", hex);
    sr_log_close();

    char *text = log_text(path);
    SR_CHECK(text != NULL);
    if (text) {
        char *after = strstr(text, "after unregister");
        SR_CHECK(after != NULL);
        if (after) *after = '\0'; /* only lines logged while registered must be clean */
        SR_CHECK_MSG(!strstr(text, hex), "lower-case hex secret reached the log");
        SR_CHECK_MSG(!strstr(text, upper), "upper-case hex secret reached the log");
        SR_CHECK_MSG(!memmem(text, strlen(text), key, 32), "raw secret reached the log");
        SR_CHECK_CONTAINS(text, "hex key=[REDACTED] done");
        SR_CHECK_CONTAINS(text, "twice [REDACTED] and [REDACTED]");
        SR_CHECK_CONTAINS(text, "raw key=[REDACTED] done");
    }
    free(text);
    sr_secure_free(key);
}

static void test_base64_secret_redacted(void)
{
    static const uint8_t secret[] = "correct horse battery staple!!";
    const char *b64 = "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZSEh"; /* base64 of the 30 bytes */
    const char *path = sr_test_path("b64.log");
    SR_CHECK_OK(sr_log_open("tester", path, SR_LOG_DEBUG));
    SR_CHECK_OK(sr_log_secret_register(secret, 30));
    sr_log_info("token %s", b64);
    sr_log_secret_unregister(secret);
    sr_log_close();
    char *text = log_text(path);
    SR_CHECK(text && !strstr(text, b64));
    SR_CHECK_CONTAINS(text, "token [REDACTED]");
    free(text);
}

int main(void)
{
    SR_RUN(test_levels_and_format);
    SR_RUN(test_registered_secret_never_logged);
    SR_RUN(test_base64_secret_redacted);
    return sr_test_finish();
}
