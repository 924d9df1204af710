/*
 * key_service.c — the Unix socket the local engines (data keys) and the PAM
 * module (login decisions) ask: who asks (SO_PEERCRED), what the policy
 * says, the answer, an audit event for each.
 */
#include "agent.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- the key service ----------------------------------------------------------------------------------- */

typedef struct peer {
    uid_t uid;
    pid_t pid;
    char user[64], exe[256], subject[400];
} peer_t;

/* uid -> user name, remembered for a minute (a lookup reads /etc/passwd or
 * asks NSS: tens of microseconds on every open otherwise). */
static void user_name(uid_t uid, char *out, size_t cap)
{
    static struct {
        uid_t uid;
        int64_t until;
        char name[64];
    } memo[64];
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    int64_t now = sr_time_mono_ms();
    size_t i = (size_t)uid % (sizeof memo / sizeof memo[0]);
    pthread_mutex_lock(&lock);
    int hit = memo[i].until > now && memo[i].uid == uid;
    if (hit) snprintf(out, cap, "%s", memo[i].name);
    pthread_mutex_unlock(&lock);
    if (hit) return;
    struct passwd pw, *res = NULL;
    char buf[1024];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res) snprintf(out, cap, "%s", pw.pw_name);
    else snprintf(out, cap, "uid%u", (unsigned)uid);
    pthread_mutex_lock(&lock);
    memo[i].uid = uid, memo[i].until = now + 60000;
    snprintf(memo[i].name, sizeof memo[i].name, "%s", out);
    pthread_mutex_unlock(&lock);
}

static void describe_peer(const struct ucred *c, peer_t *p)
{
    memset(p, 0, sizeof *p);
    p->uid = c->uid, p->pid = c->pid;
    user_name(c->uid, p->user, sizeof p->user);
}

/* The peer as its events name it; its executable read on first use (a
 * readlink of /proc: after the answer, when the event is only a log line). */
static const char *subject_of(peer_t *p)
{
    if (p->subject[0]) return p->subject;
    char link[64];
    snprintf(link, sizeof link, "/proc/%d/exe", (int)p->pid);
    ssize_t n = readlink(link, p->exe, sizeof p->exe - 1);
    p->exe[n > 0 ? n : 0] = '\0';
    snprintf(p->subject, sizeof p->subject, "uid=%u (%s) pid=%d exe=%s", (unsigned)p->uid, p->user, (int)p->pid,
             p->exe[0] ? p->exe : "?");
    return p->subject;
}

static void answer(int fd, char status, const uint8_t *data, size_t len)
{
    uint8_t head[5];
    sr_put_be32(head, (uint32_t)(len + 1));
    head[4] = (uint8_t)status;
    struct iovec iov[2] = {{head, 5}, {(void *)data, len}}; /* one write: one wake-up of the engine */
    ssize_t n = writev(fd, iov, len ? 2 : 1);
    if (n >= 0 && (size_t)n < 5 + len) { /* a short write (a full socket buffer): the rest in order */
        size_t done = (size_t)n;
        if (done < 5 && sr_fd_write_all(fd, head + done, 5 - done) == SR_OK) done = 5;
        if (done >= 5 && len) (void)!sr_fd_write_all(fd, data + (done - 5), len - (done - 5));
    }
}

static void refuse(int fd, peer_t *p, const char *object, const char *why)
{
    event("key.request", subject_of(p), object, "denied", why);
    answer(fd, 'E', (const uint8_t *)why, strlen(why));
}

/* The key could not be had (the KMS unreachable, ...): a failure, recorded
 * and answered as one with its error class, never as a refusal — a DBA and
 * an auditor must tell an outage from a denial. */
static void fail(int fd, peer_t *p, const char *object, sr_err_t rc, const char *why)
{
    event("key.request", subject_of(p), object, "failure", why);
    uint8_t msg[4 + 1024];
    size_t n = strnlen(why, sizeof msg - 4);
    sr_put_be32(msg, (uint32_t)rc);
    memcpy(msg + 4, why, n);
    answer(fd, 'F', msg, 4 + n);
}

/* The policy's word on this peer; 1 allowed. `why` names the rule and the
 * policy's digest (empty when no policy is configured: every peer allowed). */
static int permitted(const peer_t *p, char *why, size_t cap)
{
    pthread_mutex_lock(&agent.lock);
    sr_acl_t *policy = agent.policy;
    pthread_mutex_unlock(&agent.lock);
    why[0] = '\0';
    if (!policy && agent.policy_push) /* fail closed until the KMS's policy is here */
        return snprintf(why, cap, "deny: no access policy received from the KMS yet (policy_push)"), 0;
    if (!policy) return 1;
    sr_acl_request_t req = {.account = p->user, .source = "local", .service = "tde-key"};
    sr_acl_decision_t d;
    sr_acl_file_id_t id;
    sr_acl_evaluate_current(policy, &req, &d, &id); /* a file replaced since (tde-acl install) is compiled again */
    snprintf(why, cap, "%s; policy %s", d.why, d.policy);
    return d.allow;
}

/* D: the policy's decision for a login, asked by the PAM module: the module
 * compiles nothing when this agent's policy is its policy file as it is now
 * (it compares the file identity sent back). When the agent's events are
 * recorded (its embedded sealer, or a sealer it sends to), it records the
 * decision itself, durably, before it answers, naming the asking process as
 * the kernel sees it: the login then costs one round trip, not two (the
 * module records it otherwise). The request: NUL-terminated policy path,
 * server, account, source, service; the answer: allow (1) | recorded (1) |
 * file identity (4 x u64 BE) | why NUL | digest NUL. The policy file is
 * world-readable, so answering any local process tells it nothing new. */
static void decide_for(int fd, peer_t *p, const uint8_t *body, size_t len)
{
    const char *f[5];
    size_t at = 0;
    for (int i = 0; i < 5; i++) {
        const uint8_t *end = at < len ? memchr(body + at, '\0', len - at) : NULL;
        if (!end) return refuse(fd, p, NULL, "malformed decision request");
        f[i] = (const char *)body + at, at = (size_t)(end - body) + 1;
    }
    pthread_mutex_lock(&agent.lock);
    sr_acl_t *policy = agent.policy;
    pthread_mutex_unlock(&agent.lock);
    sr_acl_request_t req = {.server = *f[1] ? f[1] : NULL, .account = f[2], .source = *f[3] ? f[3] : NULL,
                            .service = *f[4] ? f[4] : NULL};
    sr_acl_decision_t d;
    sr_acl_file_id_t id, asked;
    if (policy) sr_acl_evaluate_current(policy, &req, &d, &id);
    /* the file decided with is the file asked about, however each names it */
    if (!policy || sr_acl_file_id(f[0], &asked) != SR_OK || asked.dev != id.dev || asked.ino != id.ino) {
        const char *why = "this agent does not hold that policy file";
        return answer(fd, 'E', (const uint8_t *)why, strlen(why));
    }
    int recorded = 0;
    if (sr_event_has_sink()) {
        char detail[700];
        snprintf(detail, sizeof detail, "account %.64s: %s; policy %s (decided and recorded by tde-agent)", f[2], d.why,
                 d.policy);
        sr_event_t ev = {.component = "pam", .event = "login", .subject = subject_of(p), .object = *f[4] ? f[4] : NULL,
                         .outcome = d.allow ? "success" : "denied", .detail = detail, .source = *f[3] ? f[3] : "local"};
        recorded = sr_event_emit(&ev) == SR_OK;
    }
    uint8_t out[2 + 32 + sizeof d.why + sizeof d.policy];
    out[0] = (uint8_t)(d.allow != 0), out[1] = (uint8_t)recorded;
    sr_put_be64(out + 2, id.dev), sr_put_be64(out + 10, id.ino), sr_put_be64(out + 18, id.size);
    sr_put_be64(out + 26, (uint64_t)id.mtime_ns);
    size_t n = 34;
    n += (size_t)snprintf((char *)out + n, sizeof d.why, "%s", d.why) + 1;
    n += (size_t)snprintf((char *)out + n, sizeof d.policy, "%s", d.policy) + 1;
    answer(fd, 'K', out, n);
}

/* S: the running agent's state, for `tde-agent status` (root or the agent's
 * own user only): revoked (1) | lease (i64 BE, s) | last heartbeat the KMS
 * took (i64 BE, Unix s) | keys cached (u32 BE) | pushed policy version (i64
 * BE) | why the last heartbeat failed, NUL ("" : it reached the KMS) | why
 * the membership ended, NUL. Identifiers and counts, never a key. */
static void report_status(int fd, peer_t *p)
{
    if (p->uid != 0 && p->uid != geteuid()) return refuse(fd, p, NULL, "status is for root or the agent's user");
    uint8_t out[1 + 8 + 8 + 4 + 8 + sizeof agent.kms_error + sizeof agent.revoked_why];
    pthread_mutex_lock(&agent.lock);
    out[0] = (uint8_t)(agent.revoked != 0);
    sr_put_be64(out + 1, (uint64_t)agent.lease_s), sr_put_be64(out + 9, (uint64_t)agent.last_heartbeat_ok);
    sr_put_be32(out + 17, (uint32_t)sr_keycache_count(agent.cache));
    sr_put_be64(out + 21, (uint64_t)agent.policy_version);
    size_t n = 29;
    n += (size_t)snprintf((char *)out + n, sizeof agent.kms_error, "%s", agent.kms_error) + 1;
    n += (size_t)snprintf((char *)out + n, sizeof agent.revoked_why, "%s", agent.revoked ? agent.revoked_why : "") + 1;
    pthread_mutex_unlock(&agent.lock);
    answer(fd, 'K', out, n);
}

/* U: the DEK (cache, else the KMS); C: a new DEK wrapped by the KMS; R: re-wrapped. */
static sr_err_t serve_key(char op, const sr_uuid_t *ts, uint32_t version, const sr_wrapped_key_t *in, uint8_t *dek,
                          sr_wrapped_key_t *out, int *cached)
{
    size_t len = 0;
    *cached = 0;
    if (op == 'U' && sr_keycache_get(agent.cache, ts, version, dek, SR_KEYMGR_KEY_BYTES, &len) == SR_OK)
        return *cached = 1, SR_OK;
    pthread_mutex_lock(&agent.lock);
    uint64_t dropped = agent.keys_dropped;
    pthread_mutex_unlock(&agent.lock);
    sr_err_t rc = op == 'C' ? sr_keyprov_dek_create(agent.kms, ts, version, dek, out)
                  : op == 'U' ? sr_keyprov_dek_unwrap(agent.kms, ts, version, in, dek)
                              : sr_keyprov_dek_rewrap(agent.kms, ts, version, in, out);
    if (rc != SR_OK || op == 'R') return rc;
    /* the KMS answered before a revocation the cache was dropped for meanwhile: this request is served, the key
     * is not kept (the lock makes the check and the put one step against the drop) */
    pthread_mutex_lock(&agent.lock);
    int keep = dropped == agent.keys_dropped;
    if (keep) rc = sr_keycache_put(agent.cache, ts, version, dek, SR_KEYMGR_KEY_BYTES, agent.cache_ttl_ms);
    pthread_mutex_unlock(&agent.lock);
    if (rc == SR_OK && keep) disk_cache_add(ts, version, dek, dropped);
    return rc;
}

/* Reads what the request still lacks, waiting for it until the deadline:
 * 1 whole, 0 not yet, -1 the peer closed or failed, or a length out of range. */
static int read_request(int fd, uint8_t *msg, size_t cap, size_t *got, uint64_t deadline_ms)
{
    for (;;) {
        if (*got >= 4) {
            uint32_t n = sr_get_be32(msg);
            if (n < 1 || n > SR_AGENT_REQUEST_MAX) return -1;
            if (*got >= 4 + (size_t)n) return 1;
        }
        ssize_t r = recv(fd, msg + *got, cap - *got, MSG_DONTWAIT); /* what is there: usually the whole request */
        if (r > 0) {
            *got += (size_t)r;
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return -1;
        uint64_t now = sr_time_mono_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (now >= deadline_ms) return 0;
        if (poll(&pfd, 1, (int)(deadline_ms - now)) < 0 && errno != EINTR) return -1;
    }
}

#define REQUEST_MS 2000 /* a whole request, from the connection, however slow the sender */
#define FAST_MS 20      /* a worker waits this long for it (sent at once: ~100 bytes), then parks it */
#define WORKERS 64      /* connections served at once; more wait in the listen backlog */
#define REPLY_BYTES (SR_KEYMGR_KEY_BYTES + SR_WRAPPED_KEY_ENCODED_MAX)
#define REQUEST_BYTES (4 + SR_AGENT_REQUEST_MAX)

/* A request read (whole: 1; the peer closed or sent a bad length: -1; not
 * whole in time: 0): served, or refused as malformed or incomplete — or
 * closed without a word if not even its length came. */
static void conclude(int fd, const struct ucred *cred, const uint8_t *msg, size_t got, int whole, uint8_t *reply)
{
    peer_t p;
    if (whole != 1 && got < 4) return;
    describe_peer(cred, &p);
    struct timeval tv = {.tv_sec = 5}; /* for the answer (not inherited from the listening socket) */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (whole != 1) return refuse(fd, &p, NULL, "malformed or incomplete request");
    uint8_t req[1 + SR_UUID_BYTES + 4 + SR_WRAPPED_KEY_ENCODED_MAX];
    uint32_t n = sr_get_be32(msg);
    if (msg[4] == 'D') return decide_for(fd, &p, msg + 5, n - 1);
    if (msg[4] == 'S') return report_status(fd, &p);
    if (n < 1 + SR_UUID_BYTES + 4 || n > sizeof req) return refuse(fd, &p, NULL, "malformed request");
    memcpy(req, msg + 4, n);
    sr_uuid_t ts;
    memcpy(ts.bytes, req + 1, SR_UUID_BYTES);
    uint32_t version = sr_get_be32(req + 1 + SR_UUID_BYTES);
    char object[64], why[300];
    sr_uuid_format(&ts, object);
    char op = (char)req[0];
    sr_wrapped_key_t in, out;
    size_t at = 1 + SR_UUID_BYTES + 4;
    if (op != 'C' && op != 'U' && op != 'R') return refuse(fd, &p, object, "unknown request");
    if (op != 'C' && sr_wrapped_key_decode(req + at, n - at, &in) != SR_OK) return refuse(fd, &p, object, "bad wrapped key");
    pthread_mutex_lock(&agent.lock);
    int revoked = agent.revoked;
    snprintf(why, sizeof why, "this node's membership ended: %s", agent.revoked_why);
    pthread_mutex_unlock(&agent.lock);
    if (revoked) return refuse(fd, &p, object, why);
    if (!permitted(&p, why, sizeof why)) return refuse(fd, &p, object, why);
    char allowed_by[300];
    snprintf(allowed_by, sizeof allowed_by, "%s", why);
    int cached = 0;
    size_t len = 0, enc = 0;
    sr_err_t rc = serve_key(op, &ts, version, &in, reply, &out, &cached);
    if (rc == SR_OK && op != 'R') len = SR_KEYMGR_KEY_BYTES;
    if (rc == SR_OK && op != 'U')
        rc = sr_wrapped_key_encode(&out, reply + len, SR_WRAPPED_KEY_ENCODED_MAX, &enc), len += enc;
    if (rc == SR_OK) {
        snprintf(why, sizeof why, "%s data key v%u%s%s%.200s", op == 'C' ? "created" : op == 'U' ? "unwrapped" : "re-wrapped",
                 version, cached ? " (cached)" : "", allowed_by[0] ? "; " : "", allowed_by);
        /* recorded before the key leaves when events are recorded; a log
         * line only (no sink) follows the answer, off the engine's open */
        int durable = sr_event_has_sink();
        if (durable) event("key.request", subject_of(&p), object, "success", why);
        answer(fd, 'K', reply, len);
        if (!durable) event("key.request", subject_of(&p), object, "success", why);
    } else if (rc == SR_ERR_PERMISSION) { /* the KMS's word: a revoked or ungranted master key */
        refuse(fd, &p, object, sr_err_detail());
    } else {
        fail(fd, &p, object, rc, sr_err_detail());
    }
    sr_secure_wipe(reply, REPLY_BYTES);
}

/* A pool of workers, each with its own locked reply buffer, each accepting
 * connections itself (the kernel hands a connection to one waiting accept:
 * no queue, no second wake-up per open). Two to begin with; one more when
 * the last idle one takes a connection, up to WORKERS (they stay: a node
 * with 200 agents does not pay 64 threads each). A request costs no thread
 * creation and no mmap (both showed in the cached open's cost).
 *
 * A connection whose request has not come whole within FAST_MS is parked:
 * one thread (started the first time) waits for the rest of every parked
 * connection (epoll), serves each that completes, and refuses each not
 * whole REQUEST_MS after it was accepted. Silent or slow local processes
 * then hold a descriptor each, never a worker: one user may have PER_UID
 * connections at once (served or parked; more are refused at once), and
 * MAX_PARKED are parked at most (a slow request beyond is refused, saying
 * so), so stalled processes of many users cannot hold up an engine's open. */
#define PER_UID 8       /* connections one user may have at once */
#define MAX_PARKED 256  /* connections waiting for the rest of their request */

typedef struct parked {
    int fd;
    struct ucred cred;
    uint64_t deadline;
    size_t got;
    struct parked *prev, *next;
    uint8_t msg[REQUEST_BYTES];
} parked_t;

static struct {
    pthread_mutex_t lock;
    int lfd, busy, started;
    _Atomic int stopping;
    struct { uid_t uid; int n; } users[WORKERS + MAX_PARKED]; /* connections per user (n > 0) */
    pthread_t thread[WORKERS];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .lfd = -1};

static struct {
    pthread_mutex_t lock;
    int epfd, count, running;
    _Atomic int stop;
    parked_t *head;
    pthread_t thread;
} parking = {.lock = PTHREAD_MUTEX_INITIALIZER, .epfd = -1};

#define USERS ((int)(sizeof pool.users / sizeof pool.users[0]))

/* Adds delta to uid's connections (under pool.lock); its count after, or
 * -1 if the table is full (it cannot be: at most WORKERS + MAX_PARKED connections). */
static int user_count(uid_t uid, int delta)
{
    int free_slot = -1;
    for (int i = 0; i < USERS; i++) {
        if (pool.users[i].n > 0 && pool.users[i].uid == uid) return pool.users[i].n += delta;
        if (pool.users[i].n <= 0 && free_slot < 0) free_slot = i;
    }
    if (free_slot < 0 || delta <= 0) return -1;
    pool.users[free_slot].uid = uid;
    return pool.users[free_slot].n = delta;
}

static void user_done(uid_t uid)
{
    pthread_mutex_lock(&pool.lock);
    user_count(uid, -1);
    pthread_mutex_unlock(&pool.lock);
}

static int worker_add(void);

/* A user with PER_UID connections already is answered at once that it has
 * too many: one user's stalled or flooding processes can hold up that user,
 * never another. 1 if the connection is to be served. */
static int admit(int fd, struct ucred *peer)
{
    struct ucred cred = {0};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
    *peer = cred;
    pthread_mutex_lock(&pool.lock);
    int mine = user_count(cred.uid, +1);
    if (mine < 0 || mine > PER_UID) {
        if (mine > 0) user_count(cred.uid, -1);
        pthread_mutex_unlock(&pool.lock);
        char why[96];
        snprintf(why, sizeof why, "uid %u has %d connections to the key service already: try again", (unsigned)cred.uid,
                 PER_UID);
        answer(fd, 'E', (const uint8_t *)why, strlen(why));
        return 0;
    }
    if (++pool.busy == pool.started && pool.started < WORKERS && worker_add() != 0) /* none left waiting */
        sr_log(SR_LOG_WARN, "key service: cannot add a worker (%d serve)", pool.started);
    pthread_mutex_unlock(&pool.lock);
    return 1;
}

static void *parking_main(void *arg);

/* The parking thread, started when the first connection is parked (a host
 * whose engines send their requests at once never has one); 0 or -1. Under
 * parking.lock. */
static int parking_start(void)
{
    if (parking.running) return 0;
    uint8_t *reply = sr_secure_alloc(REPLY_BYTES);
    if (parking.epfd < 0) parking.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!reply || parking.epfd < 0 || pthread_create(&parking.thread, NULL, parking_main, reply) != 0) {
        sr_secure_free(reply);
        sr_log(SR_LOG_WARN, "key service: cannot start the thread that waits for slow requests");
        return -1;
    }
    parking.running = 1;
    return 0;
}

/* Hands a connection whose request is not whole yet to the parking thread;
 * 0 if MAX_PARKED wait already (the caller refuses it, saying so). */
static int park(int fd, const struct ucred *cred, const uint8_t *msg, size_t got, uint64_t deadline)
{
    parked_t *c = calloc(1, sizeof *c);
    if (!c) return 0;
    c->fd = fd, c->cred = *cred, c->deadline = deadline, c->got = got;
    memcpy(c->msg, msg, got);
    pthread_mutex_lock(&parking.lock);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    int ok = parking.count < MAX_PARKED && parking_start() == 0 &&
             epoll_ctl(parking.epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
    if (ok) {
        c->next = parking.head;
        if (parking.head) parking.head->prev = c;
        parking.head = c, parking.count++;
    }
    pthread_mutex_unlock(&parking.lock);
    if (!ok) free(c);
    return ok;
}

/* Takes a parked connection out, concludes it (whole: 1 served; else
 * refused or closed) and closes it (the parking thread only). */
static void unpark(parked_t *c, int whole, uint8_t *reply)
{
    pthread_mutex_lock(&parking.lock);
    epoll_ctl(parking.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->prev) c->prev->next = c->next;
    else parking.head = c->next;
    if (c->next) c->next->prev = c->prev;
    parking.count--;
    pthread_mutex_unlock(&parking.lock);
    conclude(c->fd, &c->cred, c->msg, c->got, whole, reply);
    close(c->fd);
    user_done(c->cred.uid);
    free(c);
}

/* The first parked connection past its deadline (all of them once told to stop), or NULL. */
static parked_t *first_late(uint64_t now, int stop)
{
    pthread_mutex_lock(&parking.lock);
    parked_t *late = parking.head;
    while (late && late->deadline > now && !stop) late = late->next;
    pthread_mutex_unlock(&parking.lock);
    return late;
}

static void *parking_main(void *arg)
{
    uint8_t *reply = arg;
    struct epoll_event ev[64];
    for (int stop = 0; !stop;) {
        stop = parking.stop; /* set once no worker is left to park a connection */
        int n = epoll_wait(parking.epfd, ev, 64, stop ? 0 : 100); /* and every 0.1 s: the deadlines */
        for (int k = 0; k < n; k++) {
            parked_t *c = ev[k].data.ptr;
            int whole = read_request(c->fd, c->msg, sizeof c->msg, &c->got, 0);
            if (whole != 0) unpark(c, whole, reply);
        }
        for (parked_t *late; (late = first_late(sr_time_mono_ms(), stop));) unpark(late, 0, reply);
    }
    sr_secure_free(reply);
    return NULL;
}

/* Accepted, admitted: served by this worker if the request comes whole
 * within FAST_MS, else parked (0: the connection is the parking thread's). */
static int handle(int fd, const struct ucred *cred, uint8_t *reply)
{
    uint8_t msg[REQUEST_BYTES];
    size_t got = 0;
    uint64_t accepted = sr_time_mono_ms();
    int whole = read_request(fd, msg, sizeof msg, &got, accepted + FAST_MS);
    if (whole == 0 && park(fd, cred, msg, got, accepted + REQUEST_MS)) return 0;
    if (whole == 0) { /* a slow sender, with MAX_PARKED waiting already */
        peer_t p;
        describe_peer(cred, &p);
        refuse(fd, &p, NULL, "the key service has too many incomplete requests waiting: send the request whole");
        return 1;
    }
    conclude(fd, cred, msg, got, whole, reply);
    return 1;
}

static void *worker_main(void *arg)
{
    uint8_t *reply = arg;
    while (!pool.stopping) {
        int fd = accept4(pool.lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) usleep(50000); /* out of descriptors: do not spin */
            continue;
        }
        struct ucred peer = {0};
        int mine = 1; /* the connection is still this worker's */
        if (admit(fd, &peer)) {
            mine = handle(fd, &peer, reply);
            pthread_mutex_lock(&pool.lock);
            pool.busy--;
            if (mine) user_count(peer.uid, -1);
            pthread_mutex_unlock(&pool.lock);
        }
        if (mine) close(fd);
    }
    sr_secure_free(reply);
    return NULL;
}

/* One more worker (under pool.lock); 0 or -1. */
static int worker_add(void)
{
    uint8_t *reply = sr_secure_alloc(REPLY_BYTES);
    if (!reply || pthread_create(&pool.thread[pool.started], NULL, worker_main, reply) != 0) {
        sr_secure_free(reply);
        return -1;
    }
    pool.started++;
    return 0;
}

sr_err_t workers_start(int lfd)
{
    pool.lfd = lfd;
    pthread_mutex_lock(&pool.lock);
    int ok = worker_add() == 0 && worker_add() == 0;
    pthread_mutex_unlock(&pool.lock);
    return ok ? SR_OK : sr_err_set(SR_ERR_NOMEM, "cannot start the key service's workers");
}

/* At shutdown: the listener shut (waiting accepts return), running requests
 * finish (each within its KMS call), the workers end; then the parking
 * thread refuses what is still parked and ends. */
void workers_stop(void)
{
    pool.stopping = 1;
    shutdown(pool.lfd, SHUT_RDWR);
    pthread_mutex_lock(&pool.lock);
    int started = pool.started;
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < started; i++) pthread_join(pool.thread[i], NULL);
    parking.stop = 1; /* no worker is left to start it or park a connection */
    if (parking.running) pthread_join(parking.thread, NULL), parking.running = 0;
    if (parking.epfd >= 0) close(parking.epfd), parking.epfd = -1;
}
