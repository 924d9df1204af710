/* The config parser: types, defaults, and file:line on every error. */
#include "sr_test.h"

static const sr_config_key_t schema[] = {
    {"", "log_level", SR_CONFIG_STRING, "info", 0},
    {"kms", "host", SR_CONFIG_STRING, NULL, 1},
    {"kms", "port", SR_CONFIG_INT, "5696", 0},
    {"kms", "tls", SR_CONFIG_BOOL, "true", 0},
    {"kms", "timeout", SR_CONFIG_DURATION, "5s", 0},
    {"kms", "ca", SR_CONFIG_PATH, NULL, 0},
    {"cache", "size", SR_CONFIG_SIZE, "1M", 0},
};
#define N (sizeof schema / sizeof schema[0])

static sr_err_t parse(const char *text, sr_config_t **cfg)
{
    return sr_config_parse("/etc/sr/test.conf", text, strlen(text), schema, N, cfg);
}

static void test_valid_file(void)
{
    sr_config_t *cfg = NULL;
    SR_CHECK_OK(parse("# comment\nlog_level = debug\n\n[kms]\nhost = \"kms.example \\\"q\\\"\"\n"
                      "port=15696 # trailing comment\ntimeout = 250ms\nca = certs/ca.pem\n; other comment\n"
                      "[cache]\nsize = 64k\n",
                      &cfg));
    if (!cfg) return;
    SR_CHECK_STR(sr_config_get(cfg, "", "log_level"), "debug");
    SR_CHECK_STR(sr_config_get(cfg, "kms", "host"), "kms.example \"q\"");
    int64_t port;
    SR_CHECK_OK(sr_config_get_int(cfg, "kms", "port", &port));
    SR_CHECK_EQ_INT(port, 15696);
    uint64_t ms, size;
    SR_CHECK_OK(sr_config_get_duration_ms(cfg, "kms", "timeout", &ms));
    SR_CHECK_EQ_INT(ms, 250);
    SR_CHECK_OK(sr_config_get_size(cfg, "cache", "size", &size));
    SR_CHECK_EQ_INT(size, 65536);
    int tls;
    SR_CHECK_OK(sr_config_get_bool(cfg, "kms", "tls", &tls)); /* default */
    SR_CHECK_EQ_INT(tls, 1);
    SR_CHECK_STR(sr_config_get(cfg, "kms", "ca"), "/etc/sr/certs/ca.pem");
    SR_CHECK_STR(sr_config_where(cfg, "kms", "port"), "/etc/sr/test.conf:6");
    SR_CHECK_STR(sr_config_where(cfg, "kms", "tls"), "<default>");
    sr_config_free(cfg);
}

static void expect_error(const char *text, const char *message)
{
    sr_config_t *cfg = NULL;
    SR_CHECK_ERR(parse(text, &cfg), SR_ERR_CONFIG);
    SR_CHECK(cfg == NULL);
    SR_CHECK_CONTAINS(sr_err_detail(), message);
}

static void test_errors_name_file_and_line(void)
{
    expect_error("[kms]\nhost = a\nhots = b\n", "/etc/sr/test.conf:3: unknown key 'hots' in [kms]");
    expect_error("[kms]\nhost = a\n[kmss]\n", "/etc/sr/test.conf:3: unknown section [kmss]");
    expect_error("[kms]\nhost = a\nport = 5696x\n", "/etc/sr/test.conf:3: port: '5696x' is not a whole number");
    expect_error("[kms]\nhost = a\nhost = b\n", "/etc/sr/test.conf:3: duplicate key 'host' (first set at /etc/sr/test.conf:2)");
    expect_error("[kms]\nhost a\n", "/etc/sr/test.conf:2: expected 'key = value'");
    expect_error("[kms\nhost = a\n", "/etc/sr/test.conf:1: malformed section header");
    expect_error("[kms]\nhost = \"open\n", "/etc/sr/test.conf:2: unterminated quoted value");
    expect_error("[kms]\nhost = a\ntls = maybe\n", "/etc/sr/test.conf:3: tls: 'maybe' is not a boolean");
    expect_error("[kms]\nhost = a\ntimeout = -5s\n", "/etc/sr/test.conf:3: timeout:");
    expect_error("[kms]\nport = 1\n", "required key 'host' missing from [kms]");
    expect_error("host = a\n", "/etc/sr/test.conf:1: unknown key 'host' in the top level");
}

static void test_load_from_file(void)
{
    sr_config_t *cfg = NULL;
    const char *path = sr_test_path("x.conf");
    SR_CHECK(sr_test_write_file(path, "[kms]\nhost = h\nport = zz\n", 24) == 0);
    SR_CHECK_ERR(sr_config_load(path, schema, N, &cfg), SR_ERR_CONFIG);
    char want[4200];
    snprintf(want, sizeof want, "%s:3: port:", path);
    SR_CHECK_CONTAINS(sr_err_detail(), want);
    SR_CHECK_ERR(sr_config_load(sr_test_path("missing.conf"), schema, N, &cfg), SR_ERR_CONFIG);
    SR_CHECK_CONTAINS(sr_err_detail(), "No such file or directory");
}

static void test_value_parsers(void)
{
    uint64_t v;
    SR_CHECK_OK(sr_parse_duration_ms("2h", &v));
    SR_CHECK_EQ_INT(v, 7200000);
    SR_CHECK_OK(sr_parse_duration_ms("30", &v));
    SR_CHECK_EQ_INT(v, 30000);
    SR_CHECK_ERR(sr_parse_duration_ms("30y", &v), SR_ERR_PARSE);
    SR_CHECK_OK(sr_parse_size("2G", &v));
    SR_CHECK_EQ_INT(v, 2147483648LL);
    SR_CHECK_ERR(sr_parse_size("99999999999999999999k", &v), SR_ERR_PARSE);
    SR_CHECK_ERR(sr_parse_size("18446744073709551615k", &v), SR_ERR_PARSE);
    int b;
    SR_CHECK_OK(sr_parse_bool("OFF", &b));
    SR_CHECK_EQ_INT(b, 0);
}

static void test_host_port(void)
{
    char host[16];
    uint16_t port = 0;
    SR_CHECK_OK(sr_parse_host_port("kms1.example:5696", host, sizeof host, &port));
    SR_CHECK(!strcmp(host, "kms1.example") && port == 5696);
    SR_CHECK_OK(sr_parse_host_port("[::1]:1", host, sizeof host, &port));
    SR_CHECK(!strcmp(host, "::1") && port == 1);
    SR_CHECK_OK(sr_parse_host_port("::1:65535", host, sizeof host, &port)); /* the last colon */
    SR_CHECK(!strcmp(host, "::1") && port == 65535);
    const char *bad[] = {"host", ":5696", "[]:5696", "host:0", "host:65536", "host:", "host:-1", "host: 80",
                         "host:80x", "[::1:80", "a[b]:80", "a-very-long-host-name:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        SR_CHECK_ERR(sr_parse_host_port(bad[i], host, sizeof host, &port), SR_ERR_PARSE);
        SR_CHECK_CONTAINS(sr_err_detail(), "is not HOST:PORT");
    }
}

int main(void)
{
    SR_RUN(test_valid_file);
    SR_RUN(test_errors_name_file_and_line);
    SR_RUN(test_load_from_file);
    SR_RUN(test_value_parsers);
    SR_RUN(test_host_port);
    return sr_test_finish();
}
