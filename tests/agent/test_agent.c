/*
 * Scale-out and scale-in on loopback, no human in the loop: a real kmsd and
 * N tde-agent processes (20 by default; SR_AGENTS=50 for the run),
 * each with its own state directory and one-time join token. Each agent
 * enrols (node UUID, node key, certificate) and serves an encrypted SQLite
 * tablespace to this process through its socket (agent=SOCKET). Then a
 * quarter leave gracefully (SIGTERM: revoked at once) and a quarter vanish
 * (SIGKILL: revoked by the lease sweeper within lease + grace + a heartbeat);
 * the others keep serving. A vanished node's certificate is refused by kmsd;
 * a used or expired token is refused; a process the agent's policy refuses
 * gets no key; each step is an audit record.
 */
#include "kmip.h"
#include "audit.h"
#include "kms.h"
#include "kmsd_server.h"
#include "sr_test.h"
#include "tde.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_AGENTS 256

static char dir[512], mk[128];
static uint16_t port;
static int n_agents;
static pid_t agents[MAX_AGENTS];
static char out[1 << 16];

static const char *agent_dir(int i)
{
    static char path[MAX_AGENTS][600];
    snprintf(path[i], sizeof path[i], "%s/node%03d", sr_test_tmpdir(), i);
    return path[i];
}

static int kmsctl(const char *args) { return kmsctl_run(dir, out, sizeof out, args); }

static void new_token(const char *args, char token[80])
{
    SR_CHECK_MSG(kmsctl(args) == 0, "%s", out);
    kmsctl_answer(out, 64, token, 80);
    SR_CHECK(token[0] != '\0');
}

/* A new join token (kmsctl args) in node i's token file. */
static void give_token(int i, const char *args)
{
    char token[80], path[700];
    new_token(args, token);
    snprintf(path, sizeof path, "%s/token", agent_dir(i));
    SR_CHECK(sr_test_write_file(path, token, strlen(token)) == 0);
}

static void write_agent_config_for_key(int i, const char *master_key, const char *extra)
{
    char path[700], text[2048];
    snprintf(path, sizeof path, "%s/agent.conf", agent_dir(i));
    int n = snprintf(text, sizeof text,
                     "[agent]\nstate_dir = state\nsocket = agent.sock\nname = node-%03d\nheartbeat = 1s\n"
                     "token_file = token\nmaster_key = %s\n%s\n[kms]\nservers = 127.0.0.1:%u\nca = %s/ca.pem\n",
                     i, master_key, extra ? extra : "", port, dir);
    SR_CHECK(sr_test_write_file(path, text, (size_t)n) == 0);
}

static void write_agent_config(int i, const char *extra) { write_agent_config_for_key(i, mk, extra); }

static pid_t start_agent(int i)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(agent_dir(i)) != 0 || !freopen("agent.log", "a", stderr) || !freopen("agent.out", "a", stdout))
            _exit(126);
        execl(sr_test_build_path("agent/tde-agent"), "tde-agent", "run", "--config", "agent.conf", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_for_socket(int i, int timeout_ms)
{
    char sock[700];
    snprintf(sock, sizeof sock, "%s/agent.sock", agent_dir(i));
    struct stat st;
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (stat(sock, &st) == 0 && S_ISSOCK(st.st_mode)) return 0;
        usleep(50000);
    }
    return -1;
}

/* Runs sql on node i's tablespace through its agent; the SQLite result code. */
static int through_agent(int i, const char *sql)
{
    char uri[1200];
    snprintf(uri, sizeof uri, "file:%s/data.db?vfs=strongroom&agent=%s/agent.sock", agent_dir(i), agent_dir(i));
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

/* kmsctl node list --json: the state of the node named node-NNN. */
static void node_state(int i, char state[16])
{
    char name[32];
    snprintf(name, sizeof name, "\"name\": \"node-%03d\"", i);
    state[0] = '\0';
    if (kmsctl("node list --json") != 0) return;
    char *at = strstr(out, name);
    if (!at) return;
    while (at > out && strncmp(at, "\"state\": \"", 10) != 0) at--;
    if (!strncmp(at, "\"state\": \"", 10)) sscanf(at + 10, "%15[a-z]", state);
}

/* `tde-agent status --json` of agent i into out; its exit status. */
static int agent_status(int i)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cd %s && %s status --config agent.conf --json", agent_dir(i),
             sr_test_build_path("agent/tde-agent"));
    return sr_test_command(out, sizeof out, cmd);
}

static long long status_number(const char *field)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\": ", field);
    const char *at = strstr(out, key);
    return at ? atoll(at + strlen(key)) : -1;
}

/* Node i's key (written from its values, not through OpenSSL's encoders) is
 * the PKCS#8 PEM OpenSSL itself writes for that key, and the certificate's. */
static void check_node_key(int i)
{
    char path[700];
    size_t len = 0;
    snprintf(path, sizeof path, "%s/state/node.key", agent_dir(i));
    uint8_t *written = sr_test_read_file(path, &len);
    snprintf(path, sizeof path, "%s/state/node.pem", agent_dir(i));
    FILE *f = fopen(path, "r");
    X509 *cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    BIO *in = written ? BIO_new_mem_buf(written, (int)len) : NULL, *pem = BIO_new(BIO_s_mem());
    EVP_PKEY *key = in ? PEM_read_bio_PrivateKey(in, NULL, NULL, NULL) : NULL;
    char *again = NULL;
    int include_public = 1; /* OpenSSL's default, which a key read back keeps only if the file had it */
    OSSL_PARAM params[] = {OSSL_PARAM_int(OSSL_PKEY_PARAM_EC_INCLUDE_PUBLIC, &include_public), OSSL_PARAM_END};
    long again_len = key && pem && EVP_PKEY_set_params(key, params) && PEM_write_bio_PrivateKey(pem, key, NULL, NULL, 0, NULL, NULL)
                         ? BIO_get_mem_data(pem, &again) : 0;
    SR_CHECK_MSG(key && (size_t)again_len == len && !memcmp(again, written, len), "node.key: %.*s", (int)len,
                 written ? (char *)written : "(none)");
    SR_CHECK(cert && key && X509_check_private_key(cert, key) == 1);
    EVP_PKEY_free(key), X509_free(cert), BIO_free(in), BIO_free(pem), free(written);
}

static void test_scale_out(void)
{
    for (int i = 0; i < n_agents; i++) {
        SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
        give_token(i, "token create --group web --ttl 10m");
        write_agent_config(i, NULL);
    }
    char grep[1600]; /* node 0's token readable by all: its agent warns (the state-directory test's is 0600: none) */
    snprintf(grep, sizeof grep, "%s/token", agent_dir(0));
    SR_CHECK(chmod(grep, 0644) == 0);
    uint64_t t0 = sr_time_mono_ms();
    for (int i = 0; i < n_agents; i++) agents[i] = start_agent(i);
    for (int i = 0; i < n_agents; i++) SR_CHECK_MSG(wait_for_socket(i, 30000) == 0, "agent %d did not start", i);
    printf("  %d agents enrolled and serving in %llu ms\n", n_agents, (unsigned long long)(sr_time_mono_ms() - t0));
    for (int i = 0; i < n_agents; i++) check_node_key(i); /* 2^-n_agents that a wrong bit-string count passes */
    snprintf(grep, sizeof grep, "grep -c 'join token token is readable by other users (mode 644)' %s/agent.log",
             agent_dir(0));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, grep) == 0, "no warning of a readable token: %s", out);
    for (int i = 0; i < n_agents; i++) {
        char state[16];
        SR_CHECK_MSG(through_agent(i, "CREATE TABLE t(x); INSERT INTO t VALUES('NODE-SECRET');") == SQLITE_OK,
                     "node %d: %s", i, sr_err_detail());
        SR_CHECK_EQ_INT(through_agent(i, "SELECT x FROM t"), SQLITE_OK);
        if (i % 7 == 0) {
            node_state(i, state);
            SR_CHECK_MSG(!strcmp(state, "active"), "node %d: %s", i, state);
        }
    }
    /* status from the running agent: its lease, the KMS reached, the key it holds (never the key) */
    SR_CHECK_EQ_INT(agent_status(0), 0);
    SR_CHECK_MSG(strstr(out, "\"serving\": true") && strstr(out, "\"kms_reachable\": true") &&
                     status_number("keys_cached") >= 1 && status_number("lease_remaining_seconds") >= 0 &&
                     status_number("lease_remaining_seconds") <= 3,
                 "status: %s", out);
}

static void test_scale_in(void)
{
    int q = n_agents / 4;
    char state[16], cmd[1024];
    /* graceful: SIGTERM -> leave -> revoked at once */
    for (int i = 0; i < q; i++) kill(agents[i], SIGTERM);
    for (int i = 0; i < q; i++) {
        int status = 0;
        waitpid(agents[i], &status, 0);
        SR_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        agents[i] = 0;
        node_state(i, state);
        SR_CHECK_MSG(!strcmp(state, "left"), "node %d after SIGTERM: '%s'", i, state);
    }
    /* vanished: SIGKILL -> the lease runs out -> revoked by the sweeper */
    uint64_t t0 = sr_time_mono_ms();
    for (int i = q; i < 2 * q; i++) kill(agents[i], SIGKILL), waitpid(agents[i], NULL, 0), agents[i] = 0;
    int all = 0;
    while (!all && sr_time_mono_ms() - t0 < 15000) {
        usleep(250000);
        all = 1;
        for (int i = q; i < 2 * q && all; i++) node_state(i, state), all = !strcmp(state, "expired");
    }
    uint64_t took = sr_time_mono_ms() - t0;
    printf("  %d nodes left (revoked at once), %d vanished: all revoked %llu ms after SIGKILL (lease 3 s + grace 1 s)\n",
           q, q, (unsigned long long)took);
    SR_CHECK_MSG(all && took <= 3000 + 1000 + 1000 + 1500, "vanished nodes revoked after %llu ms", (unsigned long long)took);
    /* the others keep their keys */
    for (int i = 2 * q; i < n_agents; i++)
        SR_CHECK_MSG(through_agent(i, "INSERT INTO t VALUES('still here')") == SQLITE_OK, "node %d lost access", i);
    /* a vanished node's certificate is refused by kmsd */
    char ca[600], crt[700], key[700], found[2][SR_KMIP_UID_MAX];
    size_t n = 0;
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(crt, sizeof crt, "%s/state/node.pem", agent_dir(q));
    snprintf(key, sizeof key, "%s/state/node.key", agent_dir(q));
    sr_kmip_client_options_t o = {.host = "127.0.0.1", .port = port, .verify_name = "localhost", .ca_file = ca,
                                  .cert_file = crt, .key_file = key, .timeout_ms = 3000};
    sr_kmip_client_t *c = NULL;
    SR_CHECK_OK(sr_kmip_client_new(&o, &c));
    SR_CHECK(sr_kmip_locate_by_name(c, "x", found, 2, &n) != SR_OK);
    sr_kmip_client_free(c);
    /* a revoked node that comes back is refused: it must enrol again with a new token (a new UUID) */
    snprintf(cmd, sizeof cmd, "cd %s && %s status --config agent.conf", agent_dir(q), sr_test_build_path("agent/tde-agent"));
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 1 && strstr(out, "is expired"));
}

/* kmsd down: tablespaces opened before keep opening from the agents' caches;
 * a tablespace whose key no agent holds cannot be created (an outage, told
 * and recorded as one, not as a refusal); kmsd back (after
 * longer than a lease): nothing revoked, everything works, no agent restarted. */
static void test_kms_outage(void)
{
    int i = n_agents - 1;
    char state[16];
    SR_CHECK_EQ_INT(kmsd_stop(SIGTERM), 0);
    SR_CHECK_MSG(through_agent(i, "SELECT count(*) FROM t") == SQLITE_OK, "cached key: %s", sr_err_detail());
    char uri[1200];
    snprintf(uri, sizeof uri, "file:%s/new.db?vfs=strongroom&agent=%s/agent.sock", agent_dir(i), agent_dir(i));
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "CREATE TABLE x(y)", NULL, NULL, NULL);
    sqlite3_close(db);
    /* an outage, not a refusal: SQLITE_CANTOPEN ("the key service cannot be reached"), recorded as a failure
     * naming the unreachable KMS (it was SQLITE_AUTH and "denied": an auditor would have read a policy refusal) */
    SR_CHECK_MSG(rc == SQLITE_CANTOPEN, "a new tablespace with the KMS down: %d (%s)", rc, sqlite3_errstr(rc));
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "grep 'agent.key.request outcome=failure' %s/agent.log | grep -c 'no KMS could be reached'",
             agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "no failure record for the outage: %s", out);
    snprintf(cmd, sizeof cmd, "grep 'agent.key.request outcome=denied' %s/agent.log | grep -c 'reached' || true",
             agent_dir(i));
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0 && atoi(out) == 0);
    usleep(1500000); /* a heartbeat that cannot reach the KMS */
    SR_CHECK_EQ_INT(agent_status(i), 0); /* still a member: an outage ends nothing */
    SR_CHECK_MSG(strstr(out, "\"kms_reachable\": false") && !strstr(out, "\"kms_error\": \"\"") &&
                     status_number("keys_cached") >= 1 && strstr(out, "\"serving\": true"),
                 "status in the outage: %s", out);
    sleep(4); /* longer than lease + grace, with the above */
    SR_CHECK(kmsd_start(dir, port) == 0);
    usleep(1500000); /* a sweep and a heartbeat */
    node_state(i, state);
    SR_CHECK_MSG(!strcmp(state, "active"), "after the outage node %d is '%s'", i, state);
    SR_CHECK_MSG(through_agent(i, "CREATE TABLE u(v); INSERT INTO u VALUES(1)") == SQLITE_OK, "after: %s",
                 sr_err_detail());
    snprintf(uri, sizeof uri, "file:%s/new2.db?vfs=strongroom&agent=%s/agent.sock", agent_dir(i), agent_dir(i));
    rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "CREATE TABLE x(y)", NULL, NULL, NULL);
    sqlite3_close(db);
    SR_CHECK_MSG(rc == SQLITE_OK, "a new tablespace after the outage: %s", sr_err_detail());
}

static void test_tokens_are_one_time_and_expire(void)
{
    int i = n_agents; /* a fresh directory, a used token */
    char token[80], path[700], used[80];
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    snprintf(path, sizeof path, "%s/token", agent_dir(0));
    size_t len = 0;
    uint8_t *t = sr_test_read_file(path, &len);
    snprintf(used, sizeof used, "%.*s", (int)len, (const char *)t);
    free(t);
    snprintf(path, sizeof path, "%s/token", agent_dir(i));
    SR_CHECK(sr_test_write_file(path, used, strlen(used)) == 0);
    write_agent_config(i, NULL);
    pid_t p = start_agent(i);
    int status = 0;
    waitpid(p, &status, 0);
    SR_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    snprintf(path, sizeof path, "grep -c 'already used' %s/agent.log", agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, path) == 0, "%s", out);
    /* an expired token */
    new_token("token create --group web --ttl 1s", token);
    sleep(2);
    snprintf(path, sizeof path, "%s/token", agent_dir(i));
    SR_CHECK(sr_test_write_file(path, token, strlen(token)) == 0);
    p = start_agent(i);
    waitpid(p, &status, 0);
    SR_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    snprintf(path, sizeof path, "grep -c 'expired' %s/agent.log", agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, path) == 0, "%s", out);
}

/* One request of the node's on c (no payload: Heartbeat, Leave). */
static sr_err_t node_request(sr_kmip_client_t *c, uint32_t op)
{
    sr_kmip_enc_t e;
    sr_kmip_response_t r = {0};
    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 4}, op);
    sr_kmip_request_end(&e);
    sr_err_t rc = sr_kmip_enc_finish(&e);
    if (rc == SR_OK) rc = sr_kmip_client_call(c, &e, op, &r);
    sr_kmip_response_free(&r);
    sr_kmip_enc_free(&e);
    return rc;
}

/* An Enrol with `token` and a fresh P-256 request on c: its result; the node UUID, and whether kmsd bound c to it. */
static sr_err_t enrol_on(sr_kmip_client_t *c, const char *token, char uuid[64], int *bound)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    unsigned char *der = NULL;
    int n = key && req && X509_REQ_set_pubkey(req, key) && X509_REQ_sign(req, key, EVP_sha256()) > 0
                ? i2d_X509_REQ(req, &der) : -1;
    X509_REQ_free(req), EVP_PKEY_free(key);
    if (n <= 0) return SR_ERR_CRYPTO;
    sr_kmip_enc_t e;
    sr_kmip_response_t r = {0};
    sr_kmip_enc_init(&e);
    sr_kmip_request_begin(&e, (sr_kmip_version_t){1, 4}, SR_KMIP_OP_ENROL);
    sr_kmip_put_text(&e, SR_KMIP_TAG_X_JOIN_TOKEN, token);
    sr_kmip_put_bytes(&e, SR_KMIP_TAG_X_CSR, der, (size_t)n);
    sr_kmip_put_text(&e, SR_KMIP_TAG_X_NODE_NAME, "bound-node");
    sr_kmip_request_end(&e);
    OPENSSL_free(der);
    sr_err_t rc = sr_kmip_enc_finish(&e);
    if (rc == SR_OK) rc = sr_kmip_client_call(c, &e, SR_KMIP_OP_ENROL, &r);
    int32_t id = rc == SR_OK ? sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_X_NODE_UUID, SR_KMIP_TEXT_STRING) : -1;
    int32_t b = rc == SR_OK ? sr_kmip_child(&r.tree, r.payload, SR_KMIP_TAG_X_CONNECTION_BOUND, SR_KMIP_BOOLEAN) : -1;
    if (id >= 0) snprintf(uuid, 64, "%.*s", (int)r.tree.items[id].len, r.tree.items[id].v.ptr);
    *bound = b >= 0 && r.tree.items[b].v.boolean;
    sr_kmip_response_free(&r); /* a refusal's too */
    sr_kmip_enc_free(&e);
    return rc;
}

static sr_kmip_client_t *anonymous_client(void)
{
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    sr_kmip_client_options_t o = {.host = "127.0.0.1", .port = port, .verify_name = "localhost", .ca_file = ca,
                                  .timeout_ms = 5000};
    sr_kmip_client_t *c = NULL;
    SR_CHECK_OK(sr_kmip_client_new(&o, &c));
    return c;
}

/* kmsd binds the connection an Enrol succeeded on to the node it made (the
 * node's first requests need no second handshake): the node's requests
 * work on it, and stop working the moment the node is revoked. A
 * connection whose Enrol was refused stays anonymous: it can do nothing
 * but Enrol. */
static void test_the_enrolment_connection_acts_for_the_node(void)
{
    char token[80], uuid[64] = "", other[64] = "", cmd[200];
    int bound = 0;
    new_token("token create --group web --ttl 10m", token);
    sr_kmip_client_t *c = anonymous_client(), *refused = anonymous_client();
    SR_CHECK_ERR(node_request(c, SR_KMIP_OP_HEARTBEAT), SR_ERR_KMIP_RESULT); /* anonymous: not a node yet */
    SR_CHECK_OK(enrol_on(c, token, uuid, &bound));
    SR_CHECK_MSG(bound && uuid[0], "Enrol answered without binding the connection (node '%s')", uuid);
    SR_CHECK_MSG(node_request(c, SR_KMIP_OP_HEARTBEAT) == SR_OK, "the node's heartbeat on its enrolment connection: %s",
                 sr_err_detail());
    /* the used token again, on another anonymous connection: refused, and that connection is nobody's */
    SR_CHECK_ERR(enrol_on(refused, token, other, &bound), SR_ERR_KMIP_RESULT);
    SR_CHECK_ERR(node_request(refused, SR_KMIP_OP_HEARTBEAT), SR_ERR_KMIP_RESULT);
    SR_CHECK(strstr(sr_err_detail(), "not registered") != NULL);
    /* revoked: the same connection is refused from its next request on */
    snprintf(cmd, sizeof cmd, "node revoke %s --yes", uuid);
    SR_CHECK_MSG(kmsctl(cmd) == 0, "%s", out);
    SR_CHECK_ERR(node_request(c, SR_KMIP_OP_HEARTBEAT), SR_ERR_KMIP_RESULT);
    SR_CHECK_MSG(strstr(sr_err_detail(), "revoked") != NULL, "after the revocation: %s", sr_err_detail());
    sr_kmip_client_free(c), sr_kmip_client_free(refused);
}

/* The agent goes on with its enrolment connection: its first tablespace
 * open needs neither a second handshake nor its key file (made garbage
 * here, after the enrolment: it is read only to connect anew). Restarted
 * (killed, back within its lease) with a [kms] server added in front in
 * agent.conf, it connects anew with its key, through the new list. */
static void test_the_agent_carries_on_its_enrolment_connection(void)
{
    int i = n_agents + 19, status = 0;
    char path[800], cmd[1600], state[16];
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    give_token(i, "token create --group web --ttl 10m");
    write_agent_config(i, NULL);
    pid_t p = start_agent(i);
    SR_CHECK_MSG(wait_for_socket(i, 30000) == 0, "agent %d did not start", i);
    snprintf(cmd, sizeof cmd, "cd %s/state && cp node.key node.key.saved && printf 'not a key' > node.key",
             agent_dir(i));
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    SR_CHECK_MSG(through_agent(i, "CREATE TABLE t(x); INSERT INTO t VALUES(1)") == SQLITE_OK,
                 "the first open through a just-enrolled agent: %s", sr_err_detail());
    kill(p, SIGKILL), waitpid(p, NULL, 0);
    snprintf(cmd, sizeof cmd, "cd %s && mv state/node.key.saved state/node.key && rm -f agent.sock && "
             "sed -i 's/^servers = /servers = 127.0.0.1:1, /' agent.conf", agent_dir(i));
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    p = start_agent(i);
    SR_CHECK_MSG(wait_for_socket(i, 30000) == 0, "agent %d did not start again", i);
    SR_CHECK_MSG(through_agent(i, "INSERT INTO t VALUES(2)") == SQLITE_OK, "after the restart: %s", sr_err_detail());
    snprintf(path, sizeof path, "grep -c '^servers = 127.0.0.1:1, 127.0.0.1:' %s/state/kms.conf", agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, path) == 0, "kms.conf keeps the old [kms] servers: %s", out);
    kill(p, SIGTERM), waitpid(p, &status, 0); /* the leave goes on the same connection */
    SR_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    node_state(i, state);
    SR_CHECK_MSG(!strcmp(state, "left"), "node %d after SIGTERM: '%s'", i, state);
}

static int serves_or_exits(int i, pid_t p, int *status);

/* Agent i's exit status, for an agent that must refuse to start: -1 if it
 * served instead, or did not end in time (then it is killed). */
static int refused_start(int i, pid_t p)
{
    int status = -1;
    if (serves_or_exits(i, p, &status) || status == -1) kill(p, SIGKILL), waitpid(p, NULL, 0), status = -1;
    return status;
}

/* ---- a KMS that hands out a bad certificate ---------------------------------------------------------- *
 * A TLS relay holding kmsd's own certificate and key (a compromised or
 * impostor KMS: the agent cannot tell it from kmsd) passes one connection
 * through to the real kmsd and changes the node certificate in the Enrol
 * response, in place (the message's lengths unchanged). */
typedef struct relay {
    int lfd;
    void (*mangle)(uint8_t *cert, size_t len);
    int mangled;
    pthread_t thread;
} relay_t;

/* One TTLV message (header and value) from c into *msg; its length, 0 at the end. */
static size_t relay_read(sr_tls_conn_t *c, uint8_t **msg)
{
    uint8_t head[8];
    if (sr_tls_read_exact(c, head, sizeof head) != SR_OK) return 0;
    size_t len = (size_t)head[4] << 24 | (size_t)head[5] << 16 | (size_t)head[6] << 8 | head[7];
    *msg = len < (1u << 20) ? malloc(8 + len) : NULL;
    if (!*msg) return 0;
    memcpy(*msg, head, 8);
    if (sr_tls_read_exact(c, *msg + 8, len) != SR_OK) return free(*msg), 0;
    return 8 + len;
}

static void relay_mangle(relay_t *r, uint8_t *msg, size_t len)
{
    sr_kmip_tree_t t = {0};
    if (sr_kmip_decode(msg, len, &t) != SR_OK) return;
    for (size_t i = 0; i < t.n; i++)
        if (t.items[i].tag == SR_KMIP_TAG_X_NODE_CERTIFICATE && t.items[i].type == SR_KMIP_BYTE_STRING)
            r->mangle(msg + (t.items[i].v.ptr - msg), t.items[i].len), r->mangled++; /* its bytes in msg */
    sr_kmip_tree_free(&t);
}

static void *relay_main(void *arg)
{
    relay_t *r = arg;
    char ca[600], crt[600], key[600];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir), snprintf(crt, sizeof crt, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    sr_ssl_ctx_t *server = NULL, *client = NULL;
    sr_tls_conn_t *node = NULL, *kms = NULL;
    int fd = -1;
    if (sr_tls_server_ctx_new(&(sr_tls_options_t){.ca_file = ca, .cert_file = crt, .key_file = key}, &server) ==
            SR_OK &&
        sr_tls_client_ctx_new(&(sr_tls_options_t){.ca_file = ca}, &client) == SR_OK &&
        (fd = accept(r->lfd, NULL, NULL)) >= 0 && sr_tls_accept(server, fd, 10000, &node) == SR_OK &&
        sr_tls_connect(client, "127.0.0.1", port, "localhost", 10000, &kms) == SR_OK) {
        uint8_t *msg = NULL;
        size_t n;
        while ((n = relay_read(node, &msg)) > 0) { /* one request, its response */
            sr_err_t rc = sr_tls_write_all(kms, msg, n);
            free(msg);
            if (rc != SR_OK || (n = relay_read(kms, &msg)) == 0) break;
            relay_mangle(r, msg, n);
            rc = sr_tls_write_all(node, msg, n);
            free(msg);
            if (rc != SR_OK) break;
        }
    }
    if (node) sr_tls_close(node);
    if (kms) sr_tls_close(kms);
    sr_tls_ctx_free(server), sr_tls_ctx_free(client);
    return NULL;
}

static void not_der(uint8_t *cert, size_t len) { (void)len, cert[0] = 0x31; /* a SET, not a SEQUENCE */ }

/* Another key in the certificate: the last byte of its public point changed. */
static void another_key(uint8_t *cert, size_t len)
{
    const unsigned char *p = cert;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    unsigned char *spki = NULL;
    int n = x ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki) : -1;
    uint8_t *at = n > 0 ? memmem(cert, len, spki, (size_t)n) : NULL;
    if (at) at[n - 1] ^= 0x01;
    OPENSSL_free(spki), X509_free(x);
}

/* An agent enrolling through the relay: refused, nothing saved, the refusal recorded. */
static void enrol_through_bad_kms(int i, void (*mangle)(uint8_t *, size_t), const char *why)
{
    relay_t r = {.mangle = mangle};
    SR_CHECK_OK(sr_tls_listen("127.0.0.1", 0, 4, &r.lfd));
    SR_CHECK(pthread_create(&r.thread, NULL, relay_main, &r) == 0);
    char path[800], cmd[1600];
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    give_token(i, "token create --group web --ttl 10m");
    write_agent_config(i, NULL);
    snprintf(cmd, sizeof cmd, "sed -i 's/^servers = .*/servers = 127.0.0.1:%u/' %s/agent.conf",
             sr_tls_listener_port(r.lfd), agent_dir(i));
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    int status = refused_start(i, start_agent(i));
    shutdown(r.lfd, SHUT_RDWR); /* a relay still waiting for the agent stops waiting */
    pthread_join(r.thread, NULL);
    close(r.lfd);
    SR_CHECK_EQ_INT(r.mangled, 1);
    SR_CHECK_MSG(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1, "agent %d: exit status %d", i, status);
    snprintf(cmd, sizeof cmd, "grep 'node.enrol outcome=failure' %s/agent.log | grep -c '%s'", agent_dir(i), why);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "agent.log lacks the refusal (%s): %s", why, out);
    for (const char *const *f = (const char *const[]){"node.conf", "node.key", "node.pem", NULL}; *f; f++) {
        snprintf(path, sizeof path, "%s/state/%s", agent_dir(i), *f);
        SR_CHECK_MSG(access(path, F_OK) != 0, "%s saved from a refused enrolment", path);
    }
}

static void test_a_bad_node_certificate_is_refused(void)
{
    enrol_through_bad_kms(n_agents + 20, not_der, "is not one DER structure");
    enrol_through_bad_kms(n_agents + 21, another_key, "does not carry the node");
}

/* A state directory another user made (or owns) is refused before the
 * enrolment (that user would read node.key): the token stays unused, and
 * the agent enrols with it once the directory is its own. Needs root (chown). */
static void test_a_state_dir_of_another_user_is_refused(void)
{
    if (geteuid() != 0) {
        printf("  (skipped: chown needs root)\n");
        return;
    }
    int i = n_agents + 22, status = 0;
    char state[700], path[800], cmd[1600];
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    give_token(i, "token create --group web --ttl 10m");
    snprintf(path, sizeof path, "%s/token", agent_dir(i));
    SR_CHECK(chmod(path, 0600) == 0);
    write_agent_config(i, NULL);
    snprintf(state, sizeof state, "%s/state", agent_dir(i));
    SR_CHECK(mkdir(state, 0700) == 0 && chown(state, 65534, 65534) == 0);
    status = refused_start(i, start_agent(i));
    SR_CHECK_MSG(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 3, "agent exit status %d", status);
    snprintf(cmd, sizeof cmd, "grep -c 'state_dir state belongs to uid 65534' %s/agent.log", agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "agent.log: %s", out);
    snprintf(path, sizeof path, "%s/node.key", state);
    SR_CHECK(access(path, F_OK) != 0);
    SR_CHECK(chmod(agent_dir(i), 0711) == 0); /* root's status acts as the directory's owner, who must get there */
    SR_CHECK_MSG(agent_status(i) == 1 && strstr(out, "\"enrolled\": false"), "status as root: %s", out);
    snprintf(cmd, sizeof cmd, "cd %s && runuser -u daemon -- %s status --config agent.conf", agent_dir(i),
             sr_test_build_path("agent/tde-agent")); /* and another user's is refused, saying whose it is */
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 3 && strstr(out, "belongs to uid 65534"), "%s", out);
    SR_CHECK(chown(state, 0, 0) == 0 && chmod(state, 0777) == 0); /* ours, open to all: made private */
    pid_t p = start_agent(i);
    SR_CHECK_MSG(wait_for_socket(i, 30000) == 0, "agent %d did not enrol with its unused token", i);
    struct stat st;
    SR_CHECK(stat(state, &st) == 0 && (st.st_mode & 0777) == 0700);
    snprintf(cmd, sizeof cmd, "grep -c 'readable by other users' %s/agent.log", agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) != 0, "a 0600 token warned about: %s", out);
    kill(p, SIGTERM), waitpid(p, &status, 0);
    SR_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_policy_refuses_a_local_process(void)
{
    int i = n_agents + 1;
    char path[700], policy[700];
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    give_token(i, "token create --group web");
    snprintf(policy, sizeof policy, "%s/policy.conf", agent_dir(i));
    const char *text = "deny * root local tde-key   # no key for root on this node\n";
    SR_CHECK(sr_test_write_file(policy, text, strlen(text)) == 0);
    char extra[800];
    snprintf(extra, sizeof extra, "policy = %s", policy);
    write_agent_config(i, extra);
    pid_t p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    SR_CHECK_EQ_INT(through_agent(i, "CREATE TABLE t(x)"), SQLITE_AUTH);
    snprintf(path, sizeof path, "grep 'agent.key.request outcome=denied' %s/agent.log | grep -c 'uid=0 (root)'",
             agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, path) == 0, "%s", out);
    kill(p, SIGTERM);
    waitpid(p, NULL, 0);
}

/* pam_strongroom.so with agent_socket=: the agent, which holds the same
 * policy file compiled, decides each login (a PostgreSQL login is a new
 * process, which would compile the policy every time); a file replaced
 * since is compiled again by the agent before it decides; with the agent
 * stopped, or asked about a file it does not hold, the module decides
 * itself. Through pamtester under pam_wrapper. */
static void test_pam_module_asks_the_agent(void)
{
#ifdef SR_SANITIZED
    printf("  skipped in the sanitizer build: pam_wrapper cannot host a sanitized module\n");
    return;
#endif
    if (sr_test_command(out, sizeof out, "command -v pamtester && ls /usr/lib/*/libpam_wrapper.so") != 0) {
        printf("  skipped: pamtester and libpam-wrapper are not installed\n");
        return;
    }
    int i = n_agents + 30;
    char policy[700], other[700], extra[800], pamd[700], service[2400], cmd[4096], sock[700];
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    give_token(i, "token create --group web");
    snprintf(policy, sizeof policy, "%s/acl.conf", agent_dir(i));
    snprintf(other, sizeof other, "%s/other.conf", agent_dir(i));
    const char *v1 = "allow * alice ::1 srtest-agent-pam\n";
    SR_CHECK(sr_test_write_file(policy, v1, strlen(v1)) == 0 && chmod(policy, 0644) == 0);
    const char *v1_other = "allow * alice ::1 srtest-agent-pam-other\n";
    SR_CHECK(sr_test_write_file(other, v1_other, strlen(v1_other)) == 0 && chmod(other, 0644) == 0);
    snprintf(extra, sizeof extra, "policy = acl.conf"); /* relative: the agent runs in its directory */
    write_agent_config(i, extra);
    pid_t p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    snprintf(pamd, sizeof pamd, "%s/pam.d", agent_dir(i));
    SR_CHECK(mkdir(pamd, 0755) == 0);
    snprintf(sock, sizeof sock, "%s/agent.sock", agent_dir(i));
    const char *module = sr_test_build_path("access_ctl/pam_strongroom.so");
    for (int k = 0; k < 2; k++) {
        snprintf(service, sizeof service, "auth requisite %s policy=%s agent_socket=%s\naccount required %s policy=%s "
                 "agent_socket=%s\n", module, k ? other : policy, sock, module, k ? other : policy, sock);
        snprintf(cmd, sizeof cmd, "%s/%s", pamd, k ? "srtest-agent-pam-other" : "srtest-agent-pam");
        SR_CHECK(sr_test_write_file(cmd, service, strlen(service)) == 0);
    }
#define PAMTESTER(svc, user) \
    (snprintf(cmd, sizeof cmd, "LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=%s pamtester -I " \
              "rhost=::1 %s %s acct_mgmt 2>&1", pamd, svc, user), sr_test_command(out, sizeof out, cmd))
    SR_CHECK_MSG(PAMTESTER("srtest-agent-pam", "alice") == 0, "%s", out);
    SR_CHECK_CONTAINS(out, "decided by tde-agent");
    SR_CHECK(PAMTESTER("srtest-agent-pam", "mallory") != 0);
    SR_CHECK_CONTAINS(out, "decided by tde-agent");
    /* tde-acl install's way: a new file renamed over the old; the agent compiles it before it decides */
    const char *v2 = "deny * alice ::1 srtest-agent-pam\n";
    snprintf(extra, sizeof extra, "%s.new", policy);
    SR_CHECK(sr_test_write_file(extra, v2, strlen(v2)) == 0 && chmod(extra, 0644) == 0 && rename(extra, policy) == 0);
    SR_CHECK(PAMTESTER("srtest-agent-pam", "alice") != 0);
    SR_CHECK_CONTAINS(out, "decided by tde-agent");
    /* a file the agent does not hold: the module decides */
    SR_CHECK_MSG(PAMTESTER("srtest-agent-pam-other", "alice") == 0, "%s", out);
    SR_CHECK(strstr(out, "decided by tde-agent") == NULL);
    /* the agent stopped: the module decides, with the file as it is */
    kill(p, SIGTERM);
    waitpid(p, NULL, 0);
    SR_CHECK(PAMTESTER("srtest-agent-pam", "alice") != 0);
    SR_CHECK(strstr(out, "decided by tde-agent") == NULL && strstr(out, "deny by") != NULL);
    /* an agent that is the host's sealer records the decision itself, durably, before it answers: the module
     * records nothing of its own (one round trip per login) */
    snprintf(cmd, sizeof cmd, "%s keygen --out %s/audit", sr_test_build_path("audit/tde-audit"), agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);
    SR_CHECK(sr_test_write_file(policy, v1, strlen(v1)) == 0);
    write_agent_config(i, "policy = acl.conf\n[audit]\nsocket = audit.sock\nlog = audit.log\nsign_key = audit.sign");
    p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    SR_CHECK_MSG(PAMTESTER("srtest-agent-pam", "alice") == 0, "%s", out);
    SR_CHECK_MSG(strstr(out, "pam.login") == NULL, "the module recorded the login too: %s", out);
    SR_CHECK(PAMTESTER("srtest-agent-pam", "mallory") != 0);
    kill(p, SIGTERM), waitpid(p, NULL, 0);
    char log[700];
    snprintf(log, sizeof log, "%s/audit.log", agent_dir(i));
    snprintf(cmd, sizeof cmd, "%s verify %s --key %s/audit.pub --strict && grep -c 'decided and recorded by tde-agent' %s",
             sr_test_build_path("audit/tde-audit"), log, agent_dir(i), log);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0 && strstr(out, "\n2\n"), "%s", out);
    static const char *const wanted[] = {"account alice: allow by", "account mallory: deny", "exe=/usr/bin/pamtester"};
    for (size_t k = 0; k < sizeof wanted / sizeof wanted[0]; k++)
        SR_CHECK_MSG(sr_test_file_contains(log, wanted[k], strlen(wanted[k])), "no %s in the log", wanted[k]);
#undef PAMTESTER
}

/* How many nodes named node-NNN kmsd lists in each state. */
static void count_states(int i, int *active, int *left, int *expired)
{
    char name[32];
    snprintf(name, sizeof name, "\"name\": \"node-%03d\"", i);
    *active = *left = *expired = 0;
    if (kmsctl("node list --json") != 0) return;
    for (char *at = strstr(out, name); at; at = strstr(at + 1, name)) {
        char *obj = at, state[16] = "";
        while (obj > out && *obj != '{') obj--;
        char *st = strstr(obj, "\"state\": \"");
        if (st) sscanf(st + 10, "%15[a-z]", state);
        *active += !strcmp(state, "active"), *left += !strcmp(state, "left"), *expired += !strcmp(state, "expired");
    }
}

/* Waits for agent i to serve (1) or to exit (0, its status in *status). */
static int serves_or_exits(int i, pid_t p, int *status)
{
    char sock[700];
    snprintf(sock, sizeof sock, "%s/agent.sock", agent_dir(i));
    for (int waited = 0; waited < 15000; waited += 20) {
        struct stat st;
        if (stat(sock, &st) == 0 && S_ISSOCK(st.st_mode)) return 1;
        if (waitpid(p, status, WNOHANG) == p) return 0;
        usleep(20000);
    }
    return 0;
}

/* SIGKILL at random moments of an agent's first start (its enrolment). The
 * restart finds the enrolment whole (node.conf is written last, each file
 * by rename) and serves, or finds none: its token was used, so it is refused
 * (exit 1) until it gets a new one. The node kmsd enrolled for an agent that
 * never saved it is revoked when its lease runs out: no node stays active
 * behind a dead agent. */
static void test_killed_mid_enrolment(void)
{
    enum { ROUNDS = 12 };
    int base = n_agents + 2, whole = 0, refused = 0, before = 0;
    srand(5);
    for (int k = 0; k < ROUNDS && base + k < MAX_AGENTS; k++) {
        int i = base + k, status = 0;
        char path[700];
        SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
        give_token(i, "token create --group web");
        write_agent_config(i, NULL);
        pid_t p = start_agent(i);
        usleep((useconds_t)(k * 2000 + rand() % 2000)); /* 0..24 ms: across the enrolment (about 15 ms here) */
        kill(p, SIGKILL);
        waitpid(p, NULL, 0);
        snprintf(path, sizeof path, "%s/state/node.conf", agent_dir(i));
        int enrolled = access(path, F_OK) == 0;
        snprintf(path, sizeof path, "%s/agent.sock", agent_dir(i));
        unlink(path); /* left by the killed agent */
        p = start_agent(i);
        if (serves_or_exits(i, p, &status)) {
            whole += enrolled, before += !enrolled; /* killed after saving, or before kmsd took the token */
        } else {
            SR_CHECK_MSG(!enrolled && WIFEXITED(status) && WEXITSTATUS(status) == 1, "round %d: status %d", k, status);
            refused++;
            give_token(i, "token create --group web");
            p = start_agent(i);
            SR_CHECK_MSG(serves_or_exits(i, p, &status), "round %d: no enrolment with a new token", k);
        }
        SR_CHECK_EQ_INT(through_agent(i, "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (1)"), SQLITE_OK);
        kill(p, SIGTERM);
        waitpid(p, NULL, 0);
    }
    printf("  %d agents killed while enrolling: %d restarts found the enrolment whole, %d had been killed before "
           "kmsd took the token, %d were refused and enrolled with a new one\n", ROUNDS, whole, before, refused);
    int active = 1, left = 0, expired = 0, orphans = 0;
    uint64_t t0 = sr_time_mono_ms();
    while (sr_time_mono_ms() - t0 < 10000) { /* lease 3 s + grace 1 s + the sweep */
        int a = 0;
        orphans = 0, active = 0;
        for (int k = 0; k < ROUNDS; k++) count_states(base + k, &a, &left, &expired), active += a, orphans += expired;
        if (!active) break;
        usleep(250000);
    }
    SR_CHECK_MSG(active == 0, "%d node(s) still active behind agents that left or died", active);
    SR_CHECK_EQ_INT(orphans, refused); /* each abandoned enrolment expired */
}

/* kmsd SIGKILLed while 8 agents enrol at once: after its restart, a node it
 * lists active is one whose agent holds its credential and serves (and
 * opens a tablespace); a node kmsd committed but whose agent never got the
 * answer is held by nobody and expires with its lease; an agent that did
 * not get its answer exits refused (or enrols, if kmsd never took its token)
 * and enrols with a new token. No node is left half-enrolled with a usable
 * key. */
static void test_kmsd_killed_mid_enrolment(void)
{
    enum { N = 8 };
    int base = n_agents + 40, serving = 0, retried = 0;
    pid_t p[N];
    for (int k = 0; k < N; k++) {
        SR_CHECK(mkdir(agent_dir(base + k), 0700) == 0);
        give_token(base + k, "token create --group web");
        write_agent_config(base + k, NULL);
    }
    for (int k = 0; k < N; k++) p[k] = start_agent(base + k);
    usleep(30000); /* the enrolments under way (about 50 ms for 8 here) */
    SR_CHECK_EQ_INT(kmsd_stop(SIGKILL), 128 + SIGKILL);
    int up[N], status[N];
    for (int k = 0; k < N; k++) up[k] = serves_or_exits(base + k, p[k], &status[k]);
    SR_CHECK(kmsd_start(dir, port) == 0);
    for (int k = 0; k < N; k++) {
        int i = base + k;
        if (up[k]) {
            serving++;
            continue;
        }
        SR_CHECK_MSG(WIFEXITED(status[k]) && WEXITSTATUS(status[k]) == 1, "agent %d: status %d", i, status[k]);
        char path[700];
        snprintf(path, sizeof path, "%s/state/node.conf", agent_dir(i));
        SR_CHECK_MSG(access(path, F_OK) != 0, "agent %d exited with an enrolment saved", i);
        p[k] = start_agent(i); /* the same token: kmsd took it (refused) or never did (enrols) */
        if (!serves_or_exits(i, p[k], &status[k])) {
            give_token(i, "token create --group web");
            p[k] = start_agent(i);
            SR_CHECK_MSG(serves_or_exits(i, p[k], &status[k]), "agent %d: no enrolment with a new token", i);
            retried++;
        }
    }
    printf("  kmsd killed while 8 agents enrolled: %d had enrolled, %d needed a new token\n", serving, retried);
    usleep(6500000); /* kmsd's restart gives active nodes a full lease: 3 s + grace 1 s + sweeps and heartbeats */
    for (int k = 0; k < N; k++) {
        int i = base + k, active = 0, left = 0, expired = 0;
        SR_CHECK_MSG(through_agent(i, "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (1)") == SQLITE_OK,
                     "agent %d: %s", i, sr_err_detail());
        count_states(i, &active, &left, &expired);
        SR_CHECK_MSG(active == 1, "node-%03d: %d active nodes (one per serving agent)", i, active);
        kill(p[k], SIGTERM), waitpid(p[k], NULL, 0);
    }
}

/* Local processes that connect to the key service and say nothing, or send
 * a request a byte at a time, hold a connection each for at most 2 s and
 * never a worker: an open through the agent is served at once. One user may
 * have 8 connections at once: the rest are refused at once, so a user's
 * stalled or flooding processes never hold up another user. As root, nine
 * users do it at once (72 connections held: more than the 64 workers, which
 * each waited 2 s for a silent one before they were parked); otherwise one. */
static pid_t hold_silent_connections(const char *sock, int user, uid_t uid, int n, int report)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    if (uid && (setgid(uid) != 0 || setuid(uid) != 0)) _exit(2);
    int fds[16], refused = 0;
    for (int k = 0; k < n; k++) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
        fds[k] = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fds[k] < 0 || connect(fds[k], (struct sockaddr *)&sa, sizeof sa) != 0) _exit(3);
        if (k % 2 && write(fds[k], "\0", 1) != 1) _exit(4); /* the start of a length, then nothing */
    }
    usleep(300000);
    for (int k = 0; k < n; k++) { /* an immediate answer: 4-byte length, 'E', "uid ... already" */
        char buf[200] = "";
        struct timeval tv = {0, 1000};
        setsockopt(fds[k], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t got = read(fds[k], buf, sizeof buf - 1);
        if (got > 5 && buf[4] == 'E' && strstr(buf + 5, "connections to the key service already")) refused++;
    }
    int said[2] = {user, refused}; /* one write: whole among the other users' */
    if (write(report, said, sizeof said) != sizeof said) _exit(5);
    usleep(3000000);
    _exit(0);
}

static void test_silent_local_clients_do_not_block_the_key_service(void)
{
    int i = n_agents - 1; /* running since scale-out, its tablespace made */
    int as_root = geteuid() == 0, users = as_root ? 9 : 1, report[2], refused[9];
    pid_t holder[9];
    char sock[700];
    snprintf(sock, sizeof sock, "%s/agent.sock", agent_dir(i));
    SR_CHECK(pipe(report) == 0);
    /* the other users reach the socket (0666) through the directories */
    if (as_root) SR_CHECK(chmod(sr_test_tmpdir(), 0711) == 0 && chmod(agent_dir(i), 0711) == 0);
    for (int u = 0; u < users; u++) { /* the first user tries 12 (4 refused), the others 8 each */
        refused[u] = -1;
        holder[u] = hold_silent_connections(sock, u, as_root ? (uid_t)(30001 + u) : 0,
                                            u == 0 ? (as_root ? 12 : 6) : 8, report[1]);
    }
    for (int u = 0; u < users; u++) {
        int said[2] = {-1, -1};
        SR_CHECK_MSG(read(report[0], said, sizeof said) == sizeof said && said[0] >= 0 && said[0] < users,
                     "a user's silent connections were not made");
        if (said[0] >= 0 && said[0] < users) refused[said[0]] = said[1];
    }
    uint64_t t0 = sr_time_mono_ms();
    SR_CHECK_EQ_INT(through_agent(i, "INSERT INTO t VALUES ('beside the silent ones')"), SQLITE_OK);
    uint64_t took = sr_time_mono_ms() - t0;
    int held = 0;
    for (int u = 0; u < users; u++) held += (u == 0 ? (as_root ? 12 : 6) : 8) - refused[u];
    printf("  an open and a write through the agent beside %d silent local connections of %d user(s): %llu ms; "
           "%d refused at once (8 per user)\n", held, users, (unsigned long long)took, refused[0]);
    SR_CHECK_MSG(took < 1000, "the key service was held up %llu ms", (unsigned long long)took);
    SR_CHECK_EQ_INT(refused[0], as_root ? 4 : 0);
    for (int u = 1; u < users; u++) SR_CHECK_EQ_INT(refused[u], 0);
    for (int u = 0; u < users; u++) kill(holder[u], SIGKILL), waitpid(holder[u], NULL, 0);
    close(report[0]), close(report[1]);
    if (as_root) chmod(agent_dir(i), 0700), chmod(sr_test_tmpdir(), 0700);
}

/* 256 connections at most wait for the rest of their request: 32 users
 * holding 8 each fill them; a 33rd user's slow request is then refused at
 * once, saying why, while a request sent whole is still served. */
static void test_parked_connections_are_bounded(void)
{
    if (geteuid() != 0) {
        printf("     (skipped: needs root, to hold connections as 33 users)\n");
        return;
    }
    int i = n_agents - 1, report[2];
    pid_t holder[32];
    char sock[700];
    snprintf(sock, sizeof sock, "%s/agent.sock", agent_dir(i));
    SR_CHECK(pipe(report) == 0);
    SR_CHECK(chmod(sr_test_tmpdir(), 0711) == 0 && chmod(agent_dir(i), 0711) == 0);
    for (int u = 0; u < 32; u++) holder[u] = hold_silent_connections(sock, u, (uid_t)(30101 + u), 8, report[1]);
    for (int u = 0; u < 32; u++) {
        int said[2];
        SR_CHECK(read(report[0], said, sizeof said) == sizeof said && said[1] == 0);
    }
    pid_t late = fork();
    if (late == 0) { /* a 33rd user, slow: answered at once that too many wait */
        if (setgid(30200) != 0 || setuid(30200) != 0) _exit(2);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || write(fd, "\0", 1) != 1) _exit(3);
        char buf[200] = "";
        struct timeval tv = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t got = read(fd, buf, sizeof buf - 1);
        _exit(got > 5 && buf[4] == 'E' && strstr(buf + 5, "too many incomplete requests") ? 0 : 4);
    }
    int status = -1;
    waitpid(late, &status, 0);
    SR_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a slow request beside 256 parked ones: status %d",
                 status);
    uint64_t t0 = sr_time_mono_ms();
    SR_CHECK_EQ_INT(through_agent(i, "INSERT INTO t VALUES ('beside 256 parked')"), SQLITE_OK);
    printf("  256 parked connections of 32 users: a 33rd user's slow request refused at once, an open served in "
           "%llu ms\n", (unsigned long long)(sr_time_mono_ms() - t0));
    for (int u = 0; u < 32; u++) kill(holder[u], SIGKILL), waitpid(holder[u], NULL, 0);
    close(report[0]), close(report[1]);
    chmod(agent_dir(i), 0700), chmod(sr_test_tmpdir(), 0700);
}

/* `tde-agent status --json`: the pushed policy version in force (0: none). */
static long long policy_in_force(int i)
{
    (void)agent_status(i);
    return status_number("policy_version");
}

static int wait_policy(int i, long long version)
{
    for (int waited = 0; waited < 8000; waited += 200) {
        if (policy_in_force(i) == version) return 0;
        usleep(200000);
    }
    return -1;
}

/* Stores a policy in the KMS as kmsctl would, but unchecked: one this host
 * accepts and a node does not (a time zone its tzdata lacks). In a child:
 * opening an SQLite store registers the VFS with the store's root key. */
static void push_unchecked(const char *text)
{
    pid_t pid = fork();
    if (pid == 0) {
        char conf[700], root[700], store[1024] = "";
        snprintf(conf, sizeof conf, "%s/kmsd.conf", dir);
        snprintf(root, sizeof root, "%s/root.key", dir);
        size_t len = 0;
        char *cfg = (char *)sr_test_read_file(conf, &len), *at = cfg ? strstr(cfg, "\nurl = ") : NULL;
        if (at) snprintf(store, sizeof store, "%.*s", (int)strcspn(at + 7, "\n"), at + 7);
        else snprintf(store, sizeof store, "%s/store.db", dir);
        sr_keyprov_t *kp = NULL;
        kms_store_t *s = NULL;
        int64_t v = 0;
        int ok = kms_root_provider(store, root, NULL, 0, &kp) == SR_OK && kms_store_open_encrypted(store, kp, &s) == SR_OK &&
                 kms_store_begin(s) == SR_OK && kms_policy_push(s, text, "sha256:unchecked", "test", &v) == SR_OK &&
                 kms_store_commit(s) == SR_OK;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_policy_pushed_from_the_kms(void)
{
    int i = n_agents + 16;
    char file[700], cmd[1600], text[256];
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    give_token(i, "token create --group web");
    char extra[800];
    snprintf(extra, sizeof extra, "policy = %s/acl.conf\npolicy_push = true", agent_dir(i));
    write_agent_config(i, extra);
    pid_t p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    snprintf(file, sizeof file, "%s/push.conf", sr_test_tmpdir());
    /* v1: root may have keys */
    snprintf(text, sizeof text, "allow * root local tde-key   # pushed v1\n");
    SR_CHECK(sr_test_write_file(file, text, strlen(text)) == 0);
    snprintf(cmd, sizeof cmd, "policy push %s", file);
    SR_CHECK_MSG(kmsctl(cmd) == 0 && strstr(out, "policy v1"), "%s", out);
    uint64_t t0 = sr_time_mono_ms();
    SR_CHECK_MSG(wait_policy(i, 1) == 0, "%s", out);
    printf("  policy v1 pushed: in force on the agent %llu ms later (heartbeat 1 s)\n",
           (unsigned long long)(sr_time_mono_ms() - t0));
    SR_CHECK_EQ_INT(through_agent(i, "CREATE TABLE t(x)"), SQLITE_OK);
    snprintf(cmd, sizeof cmd, "grep 'agent.key.request outcome=success' %s/agent.log | grep -c 'policy sha256:'",
             agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "the decision record names no policy: %s", out);
    /* kmsctl refuses a policy that names files of its own host */
    snprintf(text, sizeof text, "include other.conf\nallow * root local *\n");
    SR_CHECK(sr_test_write_file(file, text, strlen(text)) == 0);
    snprintf(cmd, sizeof cmd, "policy push %s", file);
    SR_CHECK_MSG(kmsctl(cmd) == 1 && strstr(out, "push.conf:1") && strstr(out, "stand alone"), "%s", out);
    /* v2, which this node cannot compile: refused, v1 stays in force */
    push_unchecked("allow * root local tde-key when=mon-sun/00:00-23:59/Nowhere/Atlantis\n");
    snprintf(cmd, sizeof cmd, "for k in $(seq 40); do grep -q 'agent.policy.rejected' %s/agent.log && exit 0; sleep 0.2; "
             "done; exit 1", agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "no policy.rejected record");
    SR_CHECK_EQ_INT(policy_in_force(i), 1);
    snprintf(cmd, sizeof cmd, "%s/acl.conf", agent_dir(i));
    SR_CHECK(sr_test_file_contains(cmd, "pushed v1", 9));
    SR_CHECK_EQ_INT(through_agent(i, "INSERT INTO t VALUES (1)"), SQLITE_OK);
    /* v3: root refused, the record naming the rule */
    snprintf(text, sizeof text, "deny * root local tde-key   # pushed v3\n");
    SR_CHECK(sr_test_write_file(file, text, strlen(text)) == 0);
    snprintf(cmd, sizeof cmd, "policy push %s --json", file);
    SR_CHECK_MSG(kmsctl(cmd) == 0 && strstr(out, "\"version\": 3"), "%s", out);
    SR_CHECK_MSG(wait_policy(i, 3) == 0, "%s", out);
    SR_CHECK_EQ_INT(through_agent(i, "INSERT INTO t VALUES (2)"), SQLITE_AUTH);
    snprintf(cmd, sizeof cmd, "grep 'agent.key.request outcome=denied' %s/agent.log | grep -c 'acl.conf:1 (pushed v3)'",
             agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);
    SR_CHECK_MSG(kmsctl("policy show") == 0 && strstr(out, "# policy v3") && strstr(out, "pushed v3"), "%s", out);
    kill(p, SIGTERM);
    waitpid(p, NULL, 0);
}

static int state_file_exists(int i, const char *name)
{
    char path[800];
    struct stat st;
    snprintf(path, sizeof path, "%s/state/%s", agent_dir(i), name);
    return stat(path, &st) == 0 && (st.st_mode & 077) == 0;
}

/* disk_cache = true: an agent restarted while the KMS is down still serves
 * the keys it had (and only because of the cache); once the node is revoked
 * the cache is gone, and a copy of it put back is refused and removed. */
static void test_disk_cache_serves_a_restart_in_an_outage(void)
{
    int i = n_agents + 17;
    char cmd[2400], uuid[64] = "", saved[700];
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    give_token(i, "token create --group web");
    write_agent_config(i, "disk_cache = true\ndisk_cache_ttl = 10m");
    pid_t p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    SR_CHECK_EQ_INT(through_agent(i, "CREATE TABLE t(x); INSERT INTO t VALUES (1)"), SQLITE_OK);
    SR_CHECK(state_file_exists(i, "keycache") && state_file_exists(i, "nk.key")); /* 0600 */
    snprintf(saved, sizeof saved, "%s/saved", agent_dir(i));
    snprintf(cmd, sizeof cmd, "mkdir %s && cp -p %s/state/keycache %s/state/nk.key %s/", saved, agent_dir(i), agent_dir(i),
             saved);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    /* a crash, then a restart with the KMS down: the cache serves */
    kill(p, SIGKILL), waitpid(p, NULL, 0);
    SR_CHECK_EQ_INT(kmsd_stop(SIGTERM), 0);
    char sock[700];
    snprintf(sock, sizeof sock, "%s/agent.sock", agent_dir(i));
    unlink(sock);
    p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    SR_CHECK_MSG(through_agent(i, "INSERT INTO t VALUES (2)") == SQLITE_OK, "restart in an outage: %s", sr_err_detail());
    /* without the cache file the same restart has no key */
    kill(p, SIGKILL), waitpid(p, NULL, 0), unlink(sock);
    snprintf(cmd, sizeof cmd, "mv %s/state/keycache %s/keycache.aside", agent_dir(i), agent_dir(i));
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    SR_CHECK(through_agent(i, "INSERT INTO t VALUES (3)") != SQLITE_OK);
    kill(p, SIGKILL), waitpid(p, NULL, 0), unlink(sock);
    /* the KMS back, the node revoked: the agent removes its cache */
    SR_CHECK(kmsd_start(dir, port) == 0);
    p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    snprintf(cmd, sizeof cmd, "%s/state/node.conf", agent_dir(i));
    size_t len = 0;
    char *conf = (char *)sr_test_read_file(cmd, &len);
    if (conf) sscanf(conf, "%63s", uuid), free(conf);
    snprintf(cmd, sizeof cmd, "node revoke %s --yes", uuid);
    SR_CHECK_MSG(kmsctl(cmd) == 0, "%s", out);
    /* both files (a start that found kmsd not answering yet wrote no keycache: only nk.key is there to go) */
    for (int waited = 0; waited < 5000 && (state_file_exists(i, "keycache") || state_file_exists(i, "nk.key"));
         waited += 100)
        usleep(100000);
    SR_CHECK(!state_file_exists(i, "keycache") && !state_file_exists(i, "nk.key"));
    kill(p, SIGKILL), waitpid(p, NULL, 0), unlink(sock);
    /* a copy put back (a backup, an attacker): the start finds the node refused and removes it */
    snprintf(cmd, sizeof cmd, "cp -p %s/keycache %s/nk.key %s/state/", saved, saved, agent_dir(i));
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0);
    p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    SR_CHECK(through_agent(i, "INSERT INTO t VALUES (4)") != SQLITE_OK);
    SR_CHECK(!state_file_exists(i, "keycache") && !state_file_exists(i, "nk.key"));
    kill(p, SIGTERM), waitpid(p, NULL, 0);
}

/* [audit] in the agent's configuration: the agent is the host's sealer; its
 * own events and another local process's are in one log, each subject the
 * kernel's view of its sender, sealed when the agent leaves. */
/* The real collector (tde-audit collect), trusting the KMS's CA for its
 * clients and serving with kmsd's certificate: nodes forward with their own. */
static pid_t start_collector(uint16_t cport, const char *store, const char *pub)
{
    char listen[64], ca[700], cert[700], key[700];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", cport);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir), snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(126);
        execl(sr_test_build_path("audit/tde-audit"), "tde-audit", "collect", "--listen", listen, "--dir", store, "--tls-ca",
              ca, "--tls-cert", cert, "--tls-key", key, "--key", pub, (char *)NULL);
        _exit(127);
    }
    SR_CHECK_MSG(sr_test_wait_port(cport, 10000), "the collector did not start");
    return pid;
}

/* The agent as the host's sealer, forwarding the host's log to the
 * collector under the node's certificate: the collector's copy is the log,
 * byte for byte, the leave and the final seal included. */
static void test_agent_is_the_hosts_sealer(void)
{
    int i = n_agents + 18;
    char cmd[2400], sock[700], log[700], store[700], pub[700], conf[800];
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    give_token(i, "token create --group web");
    snprintf(cmd, sizeof cmd, "%s keygen --out %s/audit", sr_test_build_path("audit/tde-audit"), agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);
    snprintf(store, sizeof store, "%s/collected", agent_dir(i));
    snprintf(pub, sizeof pub, "%s/audit.pub", agent_dir(i));
    SR_CHECK(mkdir(store, 0700) == 0);
    uint16_t cport = sr_test_free_port();
    pid_t collector = start_collector(cport, store, pub);
    snprintf(conf, sizeof conf, "[audit]\nsocket = audit.sock\nlog = audit.log\nsign_key = audit.sign\n"
             "collector = 127.0.0.1:%u", cport);
    write_agent_config(i, conf);
    pid_t p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    SR_CHECK_EQ_INT(through_agent(i, "CREATE TABLE t(x)"), SQLITE_OK);
    snprintf(sock, sizeof sock, "%s/audit.sock", agent_dir(i));
    sr_audit_client_t *c = NULL;
    SR_CHECK_OK(sr_audit_client_open(sock, &c));
    sr_event_t ev = {.component = "tde", .event = "tablespace.open", .subject = "someone-else", .object = "/db/x.db",
                     .outcome = "success", .source = "local", .detail = "sent by the test"};
    if (c) SR_CHECK_OK(sr_audit_client_send(c, &ev));
    sr_audit_client_close(c);
    kill(p, SIGTERM), waitpid(p, NULL, 0);
    snprintf(log, sizeof log, "%s/audit.log", agent_dir(i));
    snprintf(cmd, sizeof cmd, "%s verify %s --key %s/audit.pub --strict", sr_test_build_path("audit/tde-audit"), log,
             agent_dir(i));
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "%s", out);
    char pid_subject[64];
    snprintf(pid_subject, sizeof pid_subject, "pid=%d ", (int)getpid());
    static const char *const wanted[] = {"\"event\":\"node.enrol\"", "\"event\":\"key.request\"",
                                         "\"event\":\"node.leave\"", "sent by the test"};
    for (size_t k = 0; k < sizeof wanted / sizeof wanted[0]; k++)
        SR_CHECK_MSG(sr_test_file_contains(log, wanted[k], strlen(wanted[k])), "no %s in the log", wanted[k]);
    SR_CHECK_MSG(sr_test_file_contains(log, pid_subject, strlen(pid_subject)), "the test's record is not its own pid");
    /* the collector's copy, stored under the node's UUID (its certificate's CN), is the log itself */
    snprintf(cmd, sizeof cmd, "u=$(cut -d' ' -f1 %s/state/node.conf) && f=$(awk -F'\t' -v u=\"$u\" '$2==u {print $3}' "
             "%s/sources.tsv) && [ -n \"$f\" ] && cmp %s/$f %s && echo same", agent_dir(i), store, store, log);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0 && strstr(out, "same"), "the collector's copy: %s", out);
    kill(collector, SIGTERM), waitpid(collector, NULL, 0);
}

static void test_each_step_audited(void)
{
    kmsd_stop(SIGTERM);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "grep -c 'kms.kmip.enrol outcome=success' %s/kmsd.stderr", dir);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0 && atoi(out) >= n_agents);
    /* every event kmsd and the agents made was taken (an event outside the vocabulary is refused, and warned of) */
    snprintf(cmd, sizeof cmd, "grep -h 'not recorded:' %s/kmsd.stderr %s/node*/agent.log", dir, sr_test_tmpdir());
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 1, "%s", out);
    snprintf(cmd, sizeof cmd, "grep -c 'kms.kmip.leave outcome=success' %s/kmsd.stderr", dir);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0 && atoi(out) >= n_agents / 4);
    snprintf(cmd, sizeof cmd, "grep -c 'kms.node.lease_expired' %s/kmsd.stderr", dir);
    SR_CHECK(sr_test_command(out, sizeof out, cmd) == 0 && atoi(out) >= n_agents / 4);
    snprintf(cmd, sizeof cmd, "grep -c 'kms.kmip.enrol outcome=denied' %s/kmsd.stderr", dir);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0 && atoi(out) >= 2, "%s", out);
}

/* Milliseconds until node i's tablespace no longer opens (-1: it still did after timeout_ms). The tests below
 * expect a heartbeat (1 s) and a sweep, and allow 6 s for a loaded machine: cache_ttl is 300 s. */
static int ms_until_refused(int i, int timeout_ms)
{
    uint64_t t0 = sr_time_mono_ms();
    for (;;) {
        int elapsed = (int)(sr_time_mono_ms() - t0);
        if (through_agent(i, "SELECT count(*) FROM t") != SQLITE_OK) return elapsed;
        if (elapsed > timeout_ms) return -1;
        usleep(50000);
    }
}

/* Node i, enrolled in group web, serving a new tablespace under master key `key` (granted to @web here); its
 * agent's pid. */
static pid_t serve_under_key(int i, const char *key)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "key grant %s @web", key);
    SR_CHECK_MSG(kmsctl(cmd) == 0, "%s", out);
    SR_CHECK(mkdir(agent_dir(i), 0700) == 0);
    give_token(i, "token create --group web");
    write_agent_config_for_key(i, key, NULL);
    pid_t p = start_agent(i);
    SR_CHECK(wait_for_socket(i, 30000) == 0);
    SR_CHECK_EQ_INT(through_agent(i, "CREATE TABLE t(x); INSERT INTO t VALUES (1)"), SQLITE_OK);
    return p;
}

/* A key the KMS takes back reaches the agents' caches within a heartbeat,
 * not their cache_ttl (300 s): a tablespace under a second master key,
 * granted to the node's group and cached by its agent; the grant taken back
 * (kmsctl key ungrant): the next opens are refused within a heartbeat (1 s)
 * and a fetch; granted again, it opens; the key revoked: refused again. */
static void test_a_key_taken_back_leaves_the_cache(void)
{
    int i = n_agents + 23;
    char cmd[600], key[128];
    SR_CHECK_MSG(kmsctl("key create taken-back --activate") == 0, "%s", out);
    kmsctl_answer(out, 36, key, sizeof key);
    pid_t p = serve_under_key(i, key);
    usleep(2500000); /* past the first heartbeat, which drops what was fetched before it */
    SR_CHECK_EQ_INT(through_agent(i, "INSERT INTO t VALUES (2)"), SQLITE_OK);
    snprintf(cmd, sizeof cmd, "key ungrant %s @web", key);
    SR_CHECK_MSG(kmsctl(cmd) == 0, "%s", out);
    int ms = ms_until_refused(i, 8000);
    printf("  grant taken back: the node's cached key refused %d ms later (heartbeat 1 s, cache_ttl 300 s)\n", ms);
    SR_CHECK_MSG(ms >= 0 && ms < 6000, "still served from the cache %d ms after the grant was taken back", ms);
    snprintf(cmd, sizeof cmd, "key grant %s @web", key);
    SR_CHECK_MSG(kmsctl(cmd) == 0, "%s", out);
    SR_CHECK_EQ_INT(through_agent(i, "INSERT INTO t VALUES (3)"), SQLITE_OK);
    snprintf(cmd, sizeof cmd, "key revoke %s --yes", key);
    SR_CHECK_MSG(kmsctl(cmd) == 0, "%s", out);
    ms = ms_until_refused(i, 8000);
    printf("  key revoked: refused %d ms later\n", ms);
    SR_CHECK_MSG(ms >= 0 && ms < 6000, "still served from the cache %d ms after the key was revoked", ms);
    snprintf(cmd, sizeof cmd, "%s/agent.log", agent_dir(i));
    SR_CHECK(sr_test_file_contains(cmd, "cached data keys dropped", 24));
    SR_CHECK_MSG(sr_test_file_contains(cmd, "event agent.node.keys_dropped", 29), "the drop is not an audit event");
    kill(p, SIGTERM), waitpid(p, NULL, 0);
}

/* A key whose Deactivation Date passes leaves the caches as a revoked one
 * does: kmsd's sweeper saves it Deactivated (a request would only apply the
 * date to the key it loads) and the access epoch moves. A key made through
 * KMIP with its Deactivation Date 4 s ahead (kmsctl does not set one),
 * activated and granted to the node's group, serves a tablespace until then
 * and is refused from the cache within a heartbeat after. */
static void test_a_key_past_its_deactivation_date_leaves_the_cache(void)
{
    int i = n_agents + 24;
    char cmd[600], key[SR_KMIP_UID_MAX];
    int64_t until = sr_time_now_us() / 1000000 + 4;
    sr_kmip_key_template_t t = {.name = "deactivated-by-date", .usage_mask = SR_KMIP_USAGE_ENCRYPT |
                                SR_KMIP_USAGE_DECRYPT, .deactivation_date = until};
    sr_kmip_client_t *admin = kmsd_client(dir, port, "admin", (sr_kmip_version_t){1, 4});
    SR_CHECK_OK(sr_kmip_create_aes_key(admin, &t, key));
    sr_kmip_client_free(admin);
    snprintf(cmd, sizeof cmd, "key activate %s", key);
    SR_CHECK_MSG(kmsctl(cmd) == 0, "%s", out);
    pid_t p = serve_under_key(i, key);
    while (sr_time_now_us() / 1000000 < until - 1) { /* served, from the cache too, until the date */
        SR_CHECK_EQ_INT(through_agent(i, "INSERT INTO t VALUES (2)"), SQLITE_OK);
        usleep(200000);
    }
    while (sr_time_now_us() / 1000000 < until) usleep(20000);
    int ms = ms_until_refused(i, 8000);
    printf("  Deactivation Date passed: the node's cached key refused %d ms later (heartbeat 1 s)\n", ms);
    SR_CHECK_MSG(ms >= 0 && ms < 6000, "still served from the cache %d ms after the key's Deactivation Date", ms);
    snprintf(cmd, sizeof cmd, "grep -c 'kms.key.deactivated' %s/kmsd.stderr", dir);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "no key.deactivated event: %s", out);
    kill(p, SIGTERM), waitpid(p, NULL, 0);
}

int main(void)
{
    const char *env = getenv("SR_AGENTS");
    n_agents = env ? atoi(env) : 20;
    if (n_agents < 4 || n_agents > MAX_AGENTS - 20) n_agents = 20;
    snprintf(dir, sizeof dir, "%s", sr_test_path("kms"));
    if (kmsd_init(dir, NULL, &port) != 0) return 1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "sed -i 's/^lease = 30s/lease = 3s/; s/^grace = 5s/grace = 1s/' %s/kmsd.conf", dir);
    if (sr_test_command(out, sizeof out, cmd) != 0 || kmsd_start(dir, port) != 0) return 1;
    if (kmsctl("key create tablespaces --activate") != 0) return fprintf(stderr, "%s\n", out), 1;
    kmsctl_answer(out, 36, mk, sizeof mk);
    snprintf(cmd, sizeof cmd, "key grant %s @web", mk);
    if (kmsctl(cmd) != 0) return fprintf(stderr, "%s\n", out), 1;
    if (sr_secure_init() != SR_OK || sr_sqlite_register(NULL, 0) != SQLITE_OK) return 1;
    SR_RUN(test_scale_out);
    SR_RUN(test_scale_in);
    SR_RUN(test_kms_outage);
    SR_RUN(test_tokens_are_one_time_and_expire);
    SR_RUN(test_the_enrolment_connection_acts_for_the_node);
    SR_RUN(test_the_agent_carries_on_its_enrolment_connection);
    SR_RUN(test_a_bad_node_certificate_is_refused);
    SR_RUN(test_a_state_dir_of_another_user_is_refused);
    SR_RUN(test_policy_refuses_a_local_process);
    SR_RUN(test_pam_module_asks_the_agent);
    SR_RUN(test_policy_pushed_from_the_kms);
    SR_RUN(test_disk_cache_serves_a_restart_in_an_outage);
    SR_RUN(test_a_key_taken_back_leaves_the_cache);
    SR_RUN(test_a_key_past_its_deactivation_date_leaves_the_cache);
    SR_RUN(test_agent_is_the_hosts_sealer);
    SR_RUN(test_silent_local_clients_do_not_block_the_key_service);
    SR_RUN(test_parked_connections_are_bounded);
    SR_RUN(test_killed_mid_enrolment);
    SR_RUN(test_kmsd_killed_mid_enrolment);
    SR_RUN(test_each_step_audited);
    for (int i = 0; i < n_agents; i++)
        if (agents[i] > 0) kill(agents[i], SIGTERM), waitpid(agents[i], NULL, 0);
    kmsd_stop(SIGTERM);
    return sr_test_finish();
}
