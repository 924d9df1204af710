/*
 * keyprov_agent.c — the agent key provider: the engine asks the host's
 * tde-agent, over its Unix socket, for a tablespace's data key; the agent
 * checks who is asking (SO_PEERCRED, the access policy), asks kmsd with the
 * node's own certificate, and keeps the key in its locked cache.
 *
 * Wire, one request per connection: u32 BE length, then
 *   op (1: 'C' create, 'U' unwrap, 'R' rewrap) | tablespace UUID (16) |
 *   DEK version (u32 BE) | wrapped key, sr_wrapped_key_encode'd (U, R)
 * and the answer: u32 BE length, then 'K' | DEK (32; C, U) | wrapped (C, R),
 * 'E' | a message (refused: the policy, the node's membership, the KMS), or
 * 'F' | error code (u32 BE, sr_err_t) | a message (the agent could not get
 * the key: the KMS unreachable, ...; the engine reports it as that class of
 * error, not as a refusal).
 */
#include "keymgr.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define ANSWER_MAX 4096
#define ANSWER_TIMEOUT_S 30

typedef struct agent_provider {
    char path[108];
} agent_provider_t;

/* The agent answers from its cache in tens of microseconds: less than a
 * sleeping process takes to be woken on a virtual machine (a bare Unix-socket
 * round trip measured 17 µs in a tight loop here, 54 µs between opens). So
 * the caller waits on the CPU for the answer before it sleeps in poll(), for
 * up to three times the recent answer time (an average kept per process):
 * when answers come fast (an idle host, the agent's cache) they are taken
 * without a wake-up; when they come slowly (a loaded host, the agent asking
 * the KMS) three times the average passes SPIN_MAX_US and the caller sleeps
 * at once, leaving the CPU to the agent. Never on one CPU. */
#define SPIN_MAX_US 500
static _Atomic uint32_t recent_answer_us = 100;

static void await_answer(int fd, uint64_t sent_ns)
{
    static _Atomic long cpus;
    if (!cpus) cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t budget_us = 3 * (uint64_t)recent_answer_us;
    if (cpus < 2 || budget_us > SPIN_MAX_US) return;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    uint64_t until = sent_ns + budget_us * 1000;
    while (poll(&pfd, 1, 0) == 0 && sr_time_mono_ns() < until) {}
}

static void answer_took(uint64_t sent_ns)
{
    uint64_t us = (sr_time_mono_ns() - sent_ns) / 1000;
    uint32_t avg = recent_answer_us;
    recent_answer_us = (uint32_t)((7 * (uint64_t)avg + (us > 100000 ? 100000 : us)) / 8);
}

sr_err_t sr_agent_request(const char *socket_path, const uint8_t *req, size_t len, uint8_t *answer, size_t cap,
                          size_t *answer_len)
{
    uint8_t head[4], msg[4 + SR_AGENT_REQUEST_MAX];
    if (len > SR_AGENT_REQUEST_MAX || cap < 2)
        return sr_err_set(SR_ERR_INVALID_ARG, "key agent request of %zu bytes, answer room %zu", len, cap);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", socket_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return sr_err_set_errno(SR_ERR_NETWORK, e, "the key agent at %s is not running", socket_path);
    }
    /* root or this user: another user's process on the path (the agent down, its directory writable) would hand
     * out keys it chose, or say "allow" */
    sr_err_t trusted = sr_unix_peer_trusted(fd, socket_path, "the key agent");
    if (trusted != SR_OK) return close(fd), trusted;
    struct timeval tv = {.tv_sec = ANSWER_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sr_put_be32(msg, (uint32_t)len);
    memcpy(msg + 4, req, len);
    uint64_t sent = sr_time_mono_ns();
    sr_err_t rc = sr_fd_send_all(fd, msg, 4 + len); /* one write: one wake-up of the agent; no SIGPIPE */
    if (rc == SR_OK) await_answer(fd, sent);
    if (rc == SR_OK) rc = sr_fd_wait_readable(fd, ANSWER_TIMEOUT_S * 1000);
    if (rc == SR_OK) rc = sr_fd_read_exact(fd, head, 4);
    if (rc == SR_OK) answer_took(sent);
    uint32_t n = rc == SR_OK ? sr_get_be32(head) : 0;
    if (rc == SR_OK && (n < 1 || n > cap)) rc = sr_err_set(SR_ERR_PROTOCOL, "the key agent answered %u bytes", n);
    if (rc == SR_OK) rc = sr_fd_read_exact(fd, answer, n);
    close(fd);
    if (rc != SR_OK) return sr_err_set(rc, "key agent %s: %s", socket_path, sr_err_detail());
    if (answer[0] == 'E') {
        answer[n < cap ? n : cap - 1] = '\0';
        return sr_err_set(SR_ERR_PERMISSION, "the key agent refused: %s", (const char *)answer + 1);
    }
    if (answer[0] == 'F' && n >= 5) {
        sr_err_t code = (sr_err_t)sr_get_be32(answer + 1);
        answer[n < cap ? n : cap - 1] = '\0';
        if (code == SR_OK || !strcmp(sr_err_name(code), "SR_ERR_UNKNOWN") || code == SR_ERR_PERMISSION)
            return sr_err_set(SR_ERR_PROTOCOL, "the key agent failed with code %d: %s", (int)code, (const char *)answer + 5);
        return sr_err_set(code, "the key agent could not get the key: %s", (const char *)answer + 5);
    }
    if (answer[0] != 'K') return sr_err_set(SR_ERR_PROTOCOL, "the key agent answered '%c'", answer[0]);
    *answer_len = n;
    return SR_OK;
}

static size_t request(uint8_t *req, char op, const sr_uuid_t *ts, uint32_t version, const sr_wrapped_key_t *wk)
{
    req[0] = (uint8_t)op;
    memcpy(req + 1, ts->bytes, SR_UUID_BYTES);
    sr_put_be32(req + 1 + SR_UUID_BYTES, version);
    size_t len = 1 + SR_UUID_BYTES + 4, enc = 0;
    if (wk && sr_wrapped_key_encode(wk, req + len, SR_WRAPPED_KEY_ENCODED_MAX, &enc) != SR_OK) return 0;
    return len + enc;
}

/* The answer carries a key: it lands in locked memory, one buffer per
 * thread kept for the thread's life (allocating and freeing locked memory
 * for every answer — mmap, mlock, mprotect, munmap — was a third of what an
 * open through the agent added over a key file). Wiped after every use. */
static pthread_key_t answer_key;
static pthread_once_t answer_once = PTHREAD_ONCE_INIT;
static void answer_buffer_free(void *p) { sr_secure_free(p); }
static void answer_key_make(void) { (void)pthread_key_create(&answer_key, answer_buffer_free); }

static uint8_t *answer_buffer(void)
{
    pthread_once(&answer_once, answer_key_make);
    uint8_t *b = pthread_getspecific(answer_key);
    if (!b && (b = sr_secure_alloc(ANSWER_MAX)) && pthread_setspecific(answer_key, b) != 0) sr_secure_free(b), b = NULL;
    return b;
}

static sr_err_t call(void *impl, char op, const sr_uuid_t *ts, uint32_t version, const sr_wrapped_key_t *in,
                     uint8_t *dek_out, sr_wrapped_key_t *wrapped_out)
{
    uint8_t req[1 + SR_UUID_BYTES + 4 + SR_WRAPPED_KEY_ENCODED_MAX];
    uint8_t *answer = answer_buffer();
    if (!answer) return sr_err_set(SR_ERR_NOMEM, "no locked memory for the key agent's answer");
    size_t len = request(req, op, ts, version, in), n = 0;
    sr_err_t rc = len ? sr_agent_request(((const agent_provider_t *)impl)->path, req, len, answer, ANSWER_MAX, &n)
                      : sr_err_set(SR_ERR_INVALID_ARG, "wrapped key too large");
    size_t at = 1;
    if (rc == SR_OK && dek_out) {
        if (n < at + SR_KEYMGR_KEY_BYTES) rc = sr_err_set(SR_ERR_PROTOCOL, "the key agent sent no key");
        else memcpy(dek_out, answer + at, SR_KEYMGR_KEY_BYTES), at += SR_KEYMGR_KEY_BYTES;
    }
    if (rc == SR_OK && wrapped_out) rc = sr_wrapped_key_decode(answer + at, n - at, wrapped_out);
    sr_secure_wipe(answer, n > 0 && n <= ANSWER_MAX ? n : ANSWER_MAX);
    if (rc != SR_OK && dek_out) sr_secure_wipe(dek_out, SR_KEYMGR_KEY_BYTES);
    return rc;
}

static sr_err_t agent_create(void *impl, const sr_uuid_t *ts, uint32_t version, uint8_t *dek, sr_wrapped_key_t *out)
{
    return call(impl, 'C', ts, version, NULL, dek, out);
}

static sr_err_t agent_unwrap(void *impl, const sr_uuid_t *ts, uint32_t version, const sr_wrapped_key_t *wk,
                             uint8_t *dek)
{
    return call(impl, 'U', ts, version, wk, dek, NULL);
}

static sr_err_t agent_rewrap(void *impl, const sr_uuid_t *ts, uint32_t version, const sr_wrapped_key_t *old,
                             sr_wrapped_key_t *out)
{
    return call(impl, 'R', ts, version, old, NULL, out);
}

static void agent_destroy(void *impl) { free(impl); }

static const sr_keyprov_ops_t agent_ops = {
    .kind = "agent",
    .dek_create = agent_create,
    .dek_unwrap = agent_unwrap,
    .dek_rewrap = agent_rewrap,
    .destroy = agent_destroy,
};

sr_err_t sr_keyprov_agent_open(const char *socket_path, sr_keyprov_t **out)
{
    agent_provider_t *a = calloc(1, sizeof *a);
    if (!a) return SR_ERR_NOMEM;
    if (strlen(socket_path) >= sizeof a->path) {
        free(a);
        return sr_err_set(SR_ERR_INVALID_ARG, "agent socket path too long: %s", socket_path);
    }
    snprintf(a->path, sizeof a->path, "%s", socket_path);
    char desc[160];
    snprintf(desc, sizeof desc, "agent:%s", socket_path);
    return sr_keyprov_new(&agent_ops, a, desc, out);
}
