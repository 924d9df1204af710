/*
 * tde-agent — one per database node: joins the KMS with a one-time token,
 * keeps its lease with heartbeats, serves the local engines' data keys over
 * a Unix socket, and leaves on SIGTERM (the scale-in path).
 *
 *   tde-agent run --config agent.conf       (stays in the foreground: systemd, a container)
 *   tde-agent status --config agent.conf [--json]
 *
 * Enrolment (first start): an EC P-256 key and a certificate request made
 * here (the private key never leaves the node), the join token from
 * token_file or $STRONGROOM_JOIN_TOKEN, KMIP vendor operation Enrol over TLS
 * without a client certificate -> node UUID, node key NK (UUID-tagged,
 * Active, in kmsd), a client certificate for CN=<node UUID>. Kept in
 * state_dir (0700): node.key (0600), node.pem, kms.conf, then node.conf last
 * (its presence means enrolled). Later starts reuse it. A node whose
 * membership ended (left, lease expired, revoked) must enrol again with a new
 * token: it gets a new UUID.
 *
 * Key service: each request's peer (SO_PEERCRED: uid, pid, executable) is
 * checked against the access policy (account = the user name, source
 * `local`, service `tde-key`) when one is configured; keys come from kmsd
 * (the KMS provider, with the node's certificate: the master key must be
 * granted to the node or its group) and are cached in locked memory for
 * cache_ttl, so open tablespaces and new opens keep working through a short
 * KMS outage. Every decision is an audit event (component "agent").
 */
#include "agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const sr_config_key_t schema[] = {
    {"agent", "state_dir", SR_CONFIG_PATH, NULL, 1},
    {"agent", "socket", SR_CONFIG_PATH, NULL, 1},
    {"agent", "name", SR_CONFIG_STRING, NULL, 0},
    {"agent", "token_file", SR_CONFIG_PATH, NULL, 0},
    {"agent", "heartbeat", SR_CONFIG_DURATION, "10s", 0},
    {"agent", "cache_ttl", SR_CONFIG_DURATION, "300s", 0},
    {"agent", "master_key", SR_CONFIG_STRING, NULL, 1},
    {"agent", "policy", SR_CONFIG_PATH, NULL, 0},
    {"agent", "policy_push", SR_CONFIG_BOOL, "false", 0},
    {"agent", "disk_cache", SR_CONFIG_BOOL, "false", 0},
    {"agent", "disk_cache_ttl", SR_CONFIG_DURATION, "1h", 0},
    {"audit", "socket", SR_CONFIG_PATH, NULL, 0},
    {"audit", "log", SR_CONFIG_PATH, NULL, 0},
    {"audit", "sign_key", SR_CONFIG_PATH, NULL, 0},
    {"audit", "collector", SR_CONFIG_STRING, NULL, 0},      /* HOST:PORT of tde-audit collect: the log forwarded */
    {"audit", "collector_name", SR_CONFIG_STRING, NULL, 0}, /* its certificate's name (default: [kms] server_name) */
    {"audit", "collector_ca", SR_CONFIG_PATH, NULL, 0},     /* verifies it (default: [kms] ca) */
    {"audit", "collector_cert", SR_CONFIG_PATH, NULL, 0},   /* our identity to it (default: the node's certificate) */
    {"audit", "collector_key", SR_CONFIG_PATH, NULL, 0},
    {"kms", "servers", SR_CONFIG_STRING, NULL, 1},
    {"kms", "server_name", SR_CONFIG_STRING, "localhost", 0},
    {"kms", "ca", SR_CONFIG_PATH, NULL, 1},
};

agent_state_t agent = {.lock = PTHREAD_MUTEX_INITIALIZER, .access_epoch = -1};

volatile sig_atomic_t stop_requested;
static void on_stop(int sig) { (void)sig, stop_requested = 1; }

void event(const char *name, const char *subject, const char *object, const char *outcome, const char *detail)
{
    sr_event_t ev = {.component = "agent", .event = name, .subject = subject, .object = object, .outcome = outcome,
                     .detail = detail, .source = "local"};
    if (sr_event_emit(&ev) != SR_OK) sr_log_warn("audit: agent.%s not recorded: %s", name, sr_err_detail());
}

void state_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", agent.state, name); }

/* ---- the host's audit sealer, embedded ([audit] socket, log, sign_key) ------------------------------------- */
/*
 * The agent can be the host's sealer: the only process holding the signing
 * key and writing the log, local processes (engines with
 * STRONGROOM_AUDIT_SOCKET, tdectl, the PAM module) sending it events, each
 * record's subject the kernel's view of its sender. The agent's own events
 * go through the same socket. It starts before enrolment (so that is
 * recorded) and stops last (after the leave), sealing the log.
 */
static struct {
    pthread_t thread;
    int running;
    volatile int stop;
    _Atomic int ended;
    sr_err_t rc;
    sr_audit_sealer_options_t o;
    sr_audit_client_t *client;
} sealer;

static void *sealer_main(void *arg)
{
    (void)arg;
    sealer.rc = sr_audit_serve(&sealer.o, &sealer.stop);
    sealer.ended = 1;
    return NULL;
}

static sr_err_t sealer_start(void)
{
    const char *sock = sr_config_get(agent.cfg, "audit", "socket"), *log = sr_config_get(agent.cfg, "audit", "log");
    const char *key = sr_config_get(agent.cfg, "audit", "sign_key");
    if (!log && !key) return SR_OK; /* not the sealer: events go where STRONGROOM_AUDIT_* say */
    if (!sock || !log || !key)
        return sr_err_set(SR_ERR_CONFIG, "[audit]: the embedded sealer needs socket, log and sign_key, all three");
    sealer.o = (sr_audit_sealer_options_t){.socket_path = sock, .log = {.path = log, .signing_key = key}};
    if (pthread_create(&sealer.thread, NULL, sealer_main, NULL) != 0)
        return sr_err_set(SR_ERR_INTERNAL, "cannot start the audit sealer");
    sealer.running = 1;
    sr_err_t rc = SR_ERR_TIMEOUT;
    for (int waited = 0; waited < 10000 && !sealer.ended && rc != SR_OK; waited += 20) {
        rc = sr_audit_client_open(sock, &sealer.client);
        if (rc != SR_OK) usleep(20000);
    }
    if (sealer.ended) return sr_err_set(sealer.rc ? sealer.rc : SR_ERR_IO, "the audit sealer stopped: %s", sr_err_detail());
    if (rc != SR_OK) return sr_err_set(rc, "the audit sealer on %s does not answer", sock);
    sr_audit_client_install_as_event_sink(sealer.client);
    return SR_OK;
}

/* The last thing the agent does: its own client closed, the log sealed. */
static void sealer_finish(void)
{
    if (!sealer.running) return;
    sr_audit_client_install_as_event_sink(NULL);
    sr_audit_client_close(sealer.client);
    sealer.stop = 1;
    pthread_join(sealer.thread, NULL);
    sealer.running = 0;
    if (sealer.rc != SR_OK) fprintf(stderr, "tde-agent: audit sealer: %s\n", sr_err_detail());
}

/* ---- the host's log, forwarded to the collector ---------------------------------------------------------------- *
 * With [audit] collector, a thread follows the log the embedded sealer
 * writes and sends the collector (tde-audit collect) what it lacks, as
 * `tde-audit forward` does: store-and-forward, so a collector that is down
 * gets everything when it is back (the forwarder retries with backoff). Its
 * identity is the node's certificate by default — the collector stores the
 * host's log under it — and at shutdown one last pass sends the leave and
 * the final seal before the node is gone. */
static struct {
    pthread_t thread;
    int running;
    volatile int stop;
    char host[256], cert[4200], key[4200];
    sr_audit_forwarder_options_t o;
} forwarder;

static void *forwarder_main(void *arg)
{
    (void)arg;
    if (sr_audit_forward(&forwarder.o, &forwarder.stop) != SR_OK) sr_log_error("audit forwarder: %s", sr_err_detail());
    return NULL;
}

/* After the enrolment: the node's certificate exists then. */
static sr_err_t forwarder_start(void)
{
    const char *to = sr_config_get(agent.cfg, "audit", "collector");
    if (!to) return SR_OK;
    if (!sealer.running)
        return sr_err_set(SR_ERR_CONFIG, "[audit] collector: the agent forwards the log of its embedded sealer "
                          "(set [audit] socket, log and sign_key)");
    uint16_t port = 0;
    sr_err_t rc = sr_parse_host_port(to, forwarder.host, sizeof forwarder.host, &port);
    if (rc != SR_OK) return sr_err_set(SR_ERR_CONFIG, "[audit] collector: %s", sr_err_detail());
    const char *cert = sr_config_get(agent.cfg, "audit", "collector_cert");
    const char *key = sr_config_get(agent.cfg, "audit", "collector_key");
    if (!cert != !key) return sr_err_set(SR_ERR_CONFIG, "[audit] collector_cert and collector_key go together");
    if (cert) {
        snprintf(forwarder.cert, sizeof forwarder.cert, "%s", cert);
        snprintf(forwarder.key, sizeof forwarder.key, "%s", key);
    } else { /* the node's own identity */
        state_path(forwarder.cert, sizeof forwarder.cert, "node.pem");
        state_path(forwarder.key, sizeof forwarder.key, "node.key");
    }
    const char *ca = sr_config_get(agent.cfg, "audit", "collector_ca");
    const char *name = sr_config_get(agent.cfg, "audit", "collector_name");
    forwarder.o = (sr_audit_forwarder_options_t){
        .log = sealer.o.log.path, .host = forwarder.host, .port = port,
        .verify_name = name ? name : sr_config_get(agent.cfg, "kms", "server_name"),
        .tls = {.ca_file = ca ? ca : sr_config_get(agent.cfg, "kms", "ca"), .cert_file = forwarder.cert,
                .key_file = forwarder.key}};
    if (pthread_create(&forwarder.thread, NULL, forwarder_main, NULL) != 0)
        return sr_err_set(SR_ERR_INTERNAL, "cannot start the audit forwarder");
    forwarder.running = 1;
    return SR_OK;
}

/* After the sealer's last record: one more pass, so the collector has the node's last words. */
static void forwarder_finish(void)
{
    if (!forwarder.running) return;
    forwarder.stop = 1;
    pthread_join(forwarder.thread, NULL);
    forwarder.running = 0;
    sr_audit_forwarder_options_t last = forwarder.o;
    last.once = 1;
    volatile int go_on = 0;
    if (sr_audit_forward(&last, &go_on) != SR_OK)
        fprintf(stderr, "tde-agent: the log's last records were not forwarded (%s): the collector lacks them\n",
                sr_err_detail());
}

/* ---- run ----------------------------------------------------------------------------------------------------- */

static sr_err_t start_services(void)
{
    char path[4200];
    uint64_t ms = 0;
    sr_err_t rc = sr_config_get_duration_ms(agent.cfg, "agent", "heartbeat", &agent.heartbeat_ms);
    if (rc == SR_OK) rc = sr_config_get_duration_ms(agent.cfg, "agent", "cache_ttl", &ms);
    agent.cache_ttl_ms = ms;
    if (rc == SR_OK) rc = sr_keycache_new(1024, ms, &agent.cache);
    state_path(path, sizeof path, "kms.conf");
    if (rc == SR_OK) rc = sr_keyprov_kmip_open(path, &agent.kms);
    const char *policy = sr_config_get(agent.cfg, "agent", "policy");
    if (rc == SR_OK) rc = sr_config_get_bool(agent.cfg, "agent", "policy_push", &agent.policy_push);
    if (rc == SR_OK && agent.policy_push && !policy)
        rc = sr_err_set(SR_ERR_CONFIG, "[agent] policy_push needs policy = PATH (where the pushed policy is installed)");
    char digest[32];
    if (rc == SR_OK && agent.policy_push) agent.policy_version = installed_policy_version(digest);
    /* with policy_push and nothing received yet, keys are refused until the first policy arrives */
    if (rc == SR_OK && policy && !(agent.policy_push && access(policy, F_OK) != 0)) rc = sr_acl_open(policy, &agent.policy);
    if (rc == SR_OK) rc = disk_cache_start();
    return rc;
}

/* agent.conf, and the state directory it names: made 0700 if missing (run),
 * and refused unless it is a directory of the agent's own user — whoever
 * owns it reads node.key and can swap node.pem (a directory another user
 * made first, under /tmp say, would be theirs). */
static sr_err_t load_config(const char *config, int create_state)
{
    if (sr_config_load(config, schema, sizeof schema / sizeof schema[0], &agent.cfg) != SR_OK) return sr_err_last();
    snprintf(agent.state, sizeof agent.state, "%s", sr_config_get(agent.cfg, "agent", "state_dir"));
    if (create_state && mkdir(agent.state, 0700) != 0 && errno != EEXIST)
        return sr_err_set_errno(SR_ERR_IO, errno, "cannot create %s", agent.state);
    struct stat st;
    if (stat(agent.state, &st) != 0) /* status: not enrolled yet */
        return errno == ENOENT && !create_state ? SR_OK
                                                : sr_err_set_errno(SR_ERR_IO, errno, "cannot read %s", agent.state);
    if (!S_ISDIR(st.st_mode)) return sr_err_set(SR_ERR_CONFIG, "state_dir %s is not a directory", agent.state);
    /* root asking about an agent that runs as another user: as that user (its files, its key, its socket's answer) */
    if (!create_state && st.st_uid != geteuid() && geteuid() == 0 &&
        (setegid(st.st_gid) != 0 || seteuid(st.st_uid) != 0))
        return sr_err_set_errno(SR_ERR_PERMISSION, errno, "cannot act as uid %u, the owner of %s", (unsigned)st.st_uid,
                                agent.state);
    if (st.st_uid != geteuid())
        return sr_err_set(SR_ERR_PERMISSION, "state_dir %s belongs to uid %u, not to the agent's user (uid %u): "
                          "whoever owns it holds the node's identity", agent.state, (unsigned)st.st_uid,
                          (unsigned)geteuid());
    if ((st.st_mode & 077) && chmod(agent.state, 0700) != 0)
        return sr_err_set_errno(SR_ERR_PERMISSION, errno, "cannot make %s private (chmod 700)", agent.state);
    return SR_OK;
}

static int cmd_run(const char *config)
{
    if (load_config(config, 1) != SR_OK)
        return fprintf(stderr, "tde-agent: %s (%s)\n", sr_err_detail(), sr_err_name(sr_err_last())), SR_EXIT_CANNOT;
    sr_err_t rc = sealer_start();
    if (rc != SR_OK) {
        sealer_finish();
        return fprintf(stderr, "tde-agent: %s (%s)\n", sr_err_detail(), sr_err_name(rc)), SR_EXIT_CANNOT;
    }
    int just_enrolled = !load_enrolment();
    if (just_enrolled) {
        rc = enrol();
        if (rc != SR_OK) {
            fprintf(stderr, "tde-agent: enrolment refused or failed: %s (%s)\n", sr_err_detail(), sr_err_name(rc));
            event("node.enrol", "tde-agent", NULL, "failure", sr_err_detail());
            sealer_finish();
            return SR_EXIT_FAILED;
        }
        printf("tde-agent: enrolled as node %s (node key %s, lease %llds)\n", agent.node_uuid, agent.nk,
               (long long)agent.lease_s);
        event("node.enrol", agent.node_uuid, agent.nk, "success", "enrolled");
        agent.last_heartbeat_ok = sr_time_now_us() / 1000000; /* the enrolment renewed the lease */
    } else {
        printf("tde-agent: node %s (enrolled before; state in %s)\n", agent.node_uuid, agent.state);
    }
    fflush(stdout);
    int lfd = -1;
    if (rc == SR_OK) rc = write_kms_conf();
    if (rc == SR_OK) rc = forwarder_start();
    if (rc == SR_OK) rc = start_services();
    hand_on_enrolment_connection();
    if (rc == SR_OK) rc = sr_unix_listen(sr_config_get(agent.cfg, "agent", "socket"), 512, 0, &lfd);
    if (rc == SR_OK) rc = workers_start(lfd);
    if (rc != SR_OK) {
        fprintf(stderr, "tde-agent: %s\n", sr_err_detail());
        sealer_finish();
        forwarder_finish();
        return SR_EXIT_CANNOT;
    }
    pthread_t hb;
    pthread_create(&hb, NULL, heartbeat_main, &just_enrolled);
    while (!stop_requested) usleep(100000); /* the workers serve; SIGTERM may land on any thread */
    workers_stop();
    close(lfd);
    unlink(sr_config_get(agent.cfg, "agent", "socket"));
    pthread_join(hb, NULL);
    sr_keycache_purge(agent.cache, NULL);
    disk_cache_purge("the node leaves");
    /* scale-in: leave at once, so the node key is revoked now, not at lease expiry */
    sr_kmip_response_t r;
    sr_err_t left = agent.revoked ? SR_ERR_STATE : node_call(SR_KMIP_OP_LEAVE, &r);
    if (!agent.revoked) sr_kmip_response_free(&r);
    if (left == SR_OK) {
        printf("tde-agent: node %s left; its node key is revoked\n", agent.node_uuid);
        event("node.leave", agent.node_uuid, agent.nk, "success", "graceful leave");
    } else if (!agent.revoked) {
        fprintf(stderr, "tde-agent: could not tell the KMS we leave (%s): the lease will expire\n", sr_err_detail());
    }
    sr_keycache_free(agent.cache);
    sr_keyprov_free(agent.kms);
    sr_acl_close(agent.policy);
    sealer_finish();
    forwarder_finish(); /* after the seal: the leave and the final checkpoint go too */
    sr_config_free(agent.cfg);
    return 0;
}

/* What `tde-agent status` reports about the node. */
typedef struct node_status {
    int running;              /* the agent answered on its socket (else: asked the KMS itself) */
    int member;               /* the KMS still accepts the node */
    int kms_reachable;
    int64_t lease_left_s;     /* of the lease the KMS last renewed */
    uint32_t keys_cached;
    char why[300];            /* why not a member, or why the KMS was not reached */
} node_status_t;

/* From the running agent: its own view (no second connection to the KMS). */
static int status_from_agent(const char *sock, node_status_t *st)
{
    uint8_t a[1 + 29 + 300 + 256 + 2];
    size_t n = 0;
    if (sr_agent_request(sock, (const uint8_t *)"S", 1, a, sizeof a - 1, &n) != SR_OK || n < 32) return -1;
    a[n] = '\0';
    const char *kms_error = (const char *)a + 30, *ended = kms_error + strlen(kms_error) + 1;
    if (ended >= (const char *)a + n) ended = "";
    int64_t lease_end = (int64_t)sr_get_be64(a + 10) + (int64_t)sr_get_be64(a + 2), now = sr_time_now_us() / 1000000;
    st->running = 1;
    st->member = !a[1];
    st->kms_reachable = !kms_error[0] && st->member;
    st->lease_left_s = st->member && lease_end > now ? lease_end - now : 0;
    st->keys_cached = sr_get_be32(a + 18);
    snprintf(st->why, sizeof st->why, "%s", !st->member ? ended : kms_error);
    return 0;
}

/* The agent not running: a heartbeat of our own, as the node (it renews the lease). */
static void status_from_kms(node_status_t *st)
{
    char path[4200];
    state_path(path, sizeof path, "kms.conf");
    sr_kmip_response_t r;
    sr_err_t rc = sr_keyprov_kmip_open(path, &agent.kms);
    if (rc == SR_OK) rc = node_call(SR_KMIP_OP_HEARTBEAT, &r), sr_kmip_response_free(&r);
    st->member = rc == SR_OK;
    st->kms_reachable = !kms_unreachable(rc);
    st->lease_left_s = st->member ? agent.lease_s : 0;
    if (rc != SR_OK) snprintf(st->why, sizeof st->why, "%s", sr_err_detail());
    sr_keyprov_free(agent.kms), agent.kms = NULL;
}

static int cmd_status(const char *config, int json)
{
    if (load_config(config, 0) != SR_OK)
        return fprintf(stderr, "tde-agent: %s (%s)\n", sr_err_detail(), sr_err_name(sr_err_last())), SR_EXIT_CANNOT;
    int enrolled = load_enrolment();
    const char *sock = sr_config_get(agent.cfg, "agent", "socket");
    node_status_t st = {0};
    if (enrolled && status_from_agent(sock, &st) != 0) {
        if (write_kms_conf() != SR_OK) sr_log_info("kms.conf: %s (the one there is used)", sr_err_detail());
        status_from_kms(&st);
    }
    /* the policy in force: the file's digest as the key service and the PAM module compile it */
    const char *policy_path = sr_config_get(agent.cfg, "agent", "policy");
    char digest[32] = "", pushed_digest[32];
    int64_t pushed = installed_policy_version(pushed_digest);
    sr_acl_policy_t *p = NULL;
    if (policy_path && sr_acl_compile_trusted(policy_path, &p) == SR_OK)
        snprintf(digest, sizeof digest, "%s", sr_acl_policy_version(p)), sr_acl_policy_free(p);
    char policy[300];
    if (!policy_path) snprintf(policy, sizeof policy, "no policy (every local process gets keys)");
    else if (!digest[0]) snprintf(policy, sizeof policy, "policy %.200s: none in force (keys refused)", policy_path);
    else if (pushed && !strcmp(digest, pushed_digest)) snprintf(policy, sizeof policy, "policy v%lld %s", (long long)pushed, digest);
    else snprintf(policy, sizeof policy, "policy %.200s %s", policy_path, digest);
    if (json) {
        printf("{\"enrolled\": %s, \"node\": \"%s\", \"node_key\": \"%s\", \"lease_seconds\": %lld, "
               "\"lease_remaining_seconds\": %lld, \"kms_accepts_node\": %s, \"kms_reachable\": %s, \"kms_error\": ",
               enrolled ? "true" : "false", agent.node_uuid, agent.nk, (long long)agent.lease_s,
               (long long)st.lease_left_s, st.member ? "true" : "false", st.kms_reachable ? "true" : "false");
        sr_json_string(stdout, st.why);
        printf(", \"serving\": %s, \"keys_cached\": %u, \"socket\": ", st.running ? "true" : "false",
               (unsigned)st.keys_cached);
        sr_json_string(stdout, sock);
        printf(", \"policy_version\": %lld, \"policy_digest\": \"%s\"}\n",
               digest[0] && !strcmp(digest, pushed_digest) ? (long long)pushed : 0LL, digest);
    } else if (!enrolled) {
        printf("not enrolled (state %s)\n", agent.state);
    } else {
        char kms[400];
        if (!st.member) snprintf(kms, sizeof kms, "%s", st.why);
        else if (!st.kms_reachable) snprintf(kms, sizeof kms, "unreachable (%s); cached keys stay usable", st.why);
        else snprintf(kms, sizeof kms, "accepts this node");
        printf("node %s, node key %s, lease %llds (%llds left); KMS %s; key service %s (%s), %u keys cached; %s\n",
               agent.node_uuid, agent.nk, (long long)agent.lease_s, (long long)st.lease_left_s, kms,
               st.running ? "listening" : "not running", sock, (unsigned)st.keys_cached, policy);
    }
    sr_config_free(agent.cfg);
    return enrolled && st.member ? 0 : SR_EXIT_FAILED;
}

static int usage(FILE *f, int status)
{
    fprintf(f, "usage: tde-agent run --config FILE\n"
               "       tde-agent status --config FILE [--json]\n"
               "Exit status: 0 ok, 1 refused (enrolment, membership), 2 usage, 3 could not run.\n");
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage(stderr, SR_EXIT_USAGE);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return usage(stdout, 0);
    if (!strcmp(argv[1], "--version")) return puts("tde-agent (strongroom)"), 0;
    if (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "status") != 0)
        return fprintf(stderr, "tde-agent: unknown command '%s'\n", argv[1]), usage(stderr, SR_EXIT_USAGE);
    const char *config = NULL;
    int json = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout, 0);
        if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
        else if (!strcmp(argv[i], "--json") && !strcmp(argv[1], "status")) json = 1;
        else
            return fprintf(stderr, "tde-agent: %s: option %s does not apply\n", argv[1], argv[i]),
                   usage(stderr, SR_EXIT_USAGE);
    }
    if (!config) return fprintf(stderr, "tde-agent: %s: --config FILE is required\n", argv[1]), SR_EXIT_USAGE;
    if (sr_secure_init() != SR_OK) return SR_EXIT_CANNOT;
    setenv("TZ", SR_ACL_SYSTEM_TZ, 0); /* present before any thread: time-window rules switch it (access_ctl.h) */
    sr_audit_writer_t *w = NULL;
    if (sr_audit_open_from_env(&w) != SR_OK) return fprintf(stderr, "tde-agent: %s\n", sr_err_detail()), SR_EXIT_CANNOT;
    if (!strcmp(argv[1], "status")) {
        uid_t euid = geteuid();
        gid_t egid = getegid();
        int status = cmd_status(config, json);
        /* root again if it acted as the agent's user: a process whose ids changed cannot be traced by its own
         * threads, which LeakSanitizer (the test suite's ASan build) needs at exit */
        if (geteuid() != euid && (seteuid(euid) != 0 || setegid(egid) != 0)) return SR_EXIT_CANNOT;
        return status;
    }
    if (strcmp(argv[1], "run") != 0) return usage(stderr, SR_EXIT_USAGE);
    if (sr_process_harden() != SR_OK) return SR_EXIT_CANNOT;
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return cmd_run(config);
}
