/*
 * sealer.c — one sealer per host: the only process that holds the signing key
 * and writes the log; every other process sends it events over a Unix socket.
 *
 * Wire protocol (SOCK_STREAM, AF_UNIX), per event:
 *   client -> sealer   length (u32 BE) | component \0 event \0 subject \0 object \0 outcome \0 source \0 detail
 *   sealer -> client   'A'                              recorded and durable (group commit)
 *                      'E' | length (u32 BE) | reason   not recorded: the client fails closed
 *
 * The record's subject is the kernel's view of the sending process —
 * "uid=U gid=G pid=P exe=PATH" from SO_PEERCRED and /proc/PID/exe — never
 * what the client claims; a claimed subject is kept in the detail as
 * "claimed subject: ...", so a lie is recorded next to the truth (a claim
 * of the kernel's own uid and pid, as tde's events make, adds nothing and is
 * not repeated). Clients need neither the signing key nor write access to
 * the log.
 */
#include "audit_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define EVENT_MAX 16384

/* ---- framing ---------------------------------------------------------------------- */

#define sock_write sr_fd_send_all /* no SIGPIPE in the client's process when the sealer has gone */
#define sock_read sr_fd_read_exact

/* ---- sealer ------------------------------------------------------------------------- *
 * The main thread accepts; WORKERS threads each serve their share of the
 * clients with an epoll loop. A worker's round reads whatever its clients
 * have sent, appends those events together (the writer's group commit: one
 * write, one fdatasync, shared with the rounds of other workers that arrive
 * meanwhile), then answers each client in order. Clients are non-blocking:
 * one that sends half an event, or nothing, holds only its descriptor. One
 * worker: two and four measured slower on a 2-vCPU host (bench_audit_sealer),
 * where the cost is waking the clients, not CPU work. */

#define WORKERS 1
#define ROUND_MAX 4096 /* events taken in one round at the most */
#define PER_UID_CLIENTS 128 /* connections one user may hold (of max_clients, 1,024 by default) */

typedef struct client {
    int fd;
    int dead;              /* closed after this round's answers */
    int in_round;          /* read in the current round */
    char subject[1200];    /* the kernel's view of the peer, taken at accept */
    char self[48];         /* "uid=U pid=P": how our own clients name themselves (tde, tdectl) */
    uid_t uid;
    uint8_t in[4 + EVENT_MAX + 1];
    size_t have;           /* bytes of `in` holding a frame not yet complete */
    struct client *prev, *next;
} client_t;

typedef struct item {      /* one event of a round, or one refusal */
    client_t *c;
    char *payload;         /* the fields, NUL-separated (owned) */
    char *detail;          /* "claimed subject: ..." (owned), or NULL */
    const char *error;     /* refused before the log (a malformed event) */
    sr_event_t ev;
} item_t;

typedef struct sealer sealer_t;

typedef struct worker {
    sealer_t *s;
    pthread_t thread;
    int ep;
    client_t *all;         /* its connected clients */
    item_t items[ROUND_MAX];
    size_t n_items, last_round;
    sr_event_t events[ROUND_MAX];
    client_t *touched[ROUND_MAX]; /* the clients read this round */
    size_t n_touched;
} worker_t;

struct sealer {
    sr_audit_writer_t *w;
    int lfd, max_clients;
    volatile int *stop;
    pthread_mutex_t lock;
    int clients;           /* connected, over all workers (under lock) */
    worker_t workers[WORKERS];
};

/* "uid=U gid=G pid=P exe=PATH" of the process at the other end, and "uid=U pid=P". */
static int peer_subject(int fd, char *out, size_t cap, uid_t *uid, char *self, size_t self_cap)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    *uid = cred.uid;
    snprintf(self, self_cap, "uid=%u pid=%d", (unsigned)cred.uid, (int)cred.pid);
    char link[64], exe[1024] = "?";
    snprintf(link, sizeof link, "/proc/%d/exe", (int)cred.pid);
    ssize_t n = readlink(link, exe, sizeof exe - 1);
    if (n > 0) exe[n] = '\0';
    else snprintf(exe, sizeof exe, "?");
    snprintf(out, cap, "uid=%u gid=%u pid=%d exe=%s", (unsigned)cred.uid, (unsigned)cred.gid, (int)cred.pid, exe);
    return 0;
}

/* Answers are small and clients wait for each before sending the next: one
 * that does not take its answers (its socket buffer is full) is dropped. */
#define ANSWER_MAX (5 + 1024)

/* One answer into msg: 'A', or 'E' | length | reason. Its length. */
static size_t answer(uint8_t *msg, const char *error)
{
    if (!error) return msg[0] = 'A', 1;
    size_t n = strnlen(error, 1024);
    msg[0] = 'E';
    sr_put_be32(msg + 1, (uint32_t)n);
    memcpy(msg + 5, error, n);
    return 5 + n;
}

/* Answers sent whole or the client is dropped (one that does not read its answers). */
static void send_answers(client_t *c, const uint8_t *msg, size_t len)
{
    if (len && !c->dead && send(c->fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len) c->dead = 1;
}

static void reply(client_t *c, const char *error)
{
    uint8_t msg[ANSWER_MAX];
    send_answers(c, msg, answer(msg, error));
}

const char *audit_frame_fields(const char *payload, size_t len, const char *f[AUDIT_FRAME_FIELDS])
{
    size_t at = 0;
    for (int i = 0; i < AUDIT_FRAME_FIELDS; i++) {
        if (at > len) return "malformed audit event: fields missing";
        f[i] = payload + at;
        at += strnlen(payload + at, len - at) + 1;
    }
    return at == len + 1 ? NULL : "malformed audit event: bytes after its last field";
}

/* One complete frame of c: its fields checked, the kernel's subject put in. */
static void take_frame(worker_t *s, client_t *c, const uint8_t *frame, size_t len)
{
    item_t *it = &s->items[s->n_items++];
    *it = (item_t){.c = c, .payload = malloc(len + 1)};
    if (!it->payload) {
        it->error = "the sealer is out of memory";
        return;
    }
    memcpy(it->payload, frame, len);
    it->payload[len] = '\0';
    const char *f[AUDIT_FRAME_FIELDS];
    if ((it->error = audit_frame_fields(it->payload, len, f))) return;
    const char *detail = f[6];
    if (*f[2] && strcmp(f[2], c->self) != 0) { /* what the client claims about itself, beside the truth */
        size_t n = strlen(f[2]) + strlen(f[6]) + 32;
        if ((it->detail = malloc(n))) snprintf(it->detail, n, "claimed subject: %s%s%s", f[2], *f[6] ? "; " : "", f[6]);
        detail = it->detail ? it->detail : f[6];
    }
    it->ev = (sr_event_t){.component = f[0], .event = f[1], .subject = c->subject, .object = f[3], .outcome = f[4],
                          .source = *f[5] ? f[5] : "local", .detail = detail};
}

/* Reads what c has sent; takes its complete frames (room permitting). */
static void read_client(worker_t *s, client_t *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->have, sizeof c->in - 1 - c->have, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            c->dead = 1;
            return;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n > 0) c->have += (size_t)n;
        size_t at = 0;
        while (c->have - at >= 4 && s->n_items < ROUND_MAX) {
            uint32_t len = sr_get_be32(c->in + at);
            if (len > EVENT_MAX) {
                reply(c, "audit event too long");
                c->dead = 1;
                return;
            }
            if (c->have - at < 4 + (size_t)len) break;
            take_frame(s, c, c->in + at + 4, len);
            at += 4 + len;
        }
        memmove(c->in, c->in + at, c->have - at);
        c->have -= at;
        if (n < 0 || s->n_items == ROUND_MAX) return; /* drained, or the round is full (the rest: next round) */
    }
}

/* One new client, given to the next worker in turn. */
static void accept_client(sealer_t *s, int *next_worker)
{
    int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) poll(NULL, 0, 50); /* EMFILE: no spin */
        return;
    }
    client_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    if (peer_subject(fd, c->subject, sizeof c->subject, &c->uid, c->self, sizeof c->self) != 0) {
        reply(c, "the sealer cannot tell who is sending (SO_PEERCRED)");
        close(fd), free(c);
        return;
    }
    worker_t *wk = &s->workers[(*next_worker)++ % WORKERS];
    pthread_mutex_lock(&s->lock);
    int mine = 0; /* one user's connections: a flood from one user cannot take every slot */
    for (int w = 0; w < WORKERS; w++)
        for (client_t *o = s->workers[w].all; o; o = o->next) mine += o->uid == c->uid;
    if (mine >= PER_UID_CLIENTS) {
        pthread_mutex_unlock(&s->lock);
        char why[128];
        snprintf(why, sizeof why, "uid %u has %d connections to the sealer already", (unsigned)c->uid, mine);
        reply(c, why);
        close(fd), free(c);
        return;
    }
    c->next = wk->all; /* the worker's list: linked before the worker can see the client */
    if (wk->all) wk->all->prev = c;
    wk->all = c;
    s->clients++;
    pthread_mutex_unlock(&s->lock);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(wk->ep, EPOLL_CTL_ADD, fd, &ev) != 0) c->dead = 1; /* dropped at shutdown */
}

static void drop_client(worker_t *wk, client_t *c)
{
    pthread_mutex_lock(&wk->s->lock); /* out of the counts before the peer can see the close */
    if (c->prev) c->prev->next = c->next;
    else wk->all = c->next;
    if (c->next) c->next->prev = c->prev;
    wk->s->clients--;
    pthread_mutex_unlock(&wk->s->lock);
    epoll_ctl(wk->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* The round's events into the log as one group commit, then every answer in order. */
static void seal_round(worker_t *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_items; i++)
        if (!s->items[i].error) s->events[n++] = s->items[i].ev;
    sr_err_t rc = n ? audit_append_many(s->s->w, s->events, n) : SR_OK;
    char why[600] = "";
    if (rc != SR_OK) snprintf(why, sizeof why, "%s", sr_err_detail());
    /* a client's events of this round, read together, are answered in one send: one wake-up of it, not one each */
    uint8_t out[8 * ANSWER_MAX];
    size_t used = 0;
    for (size_t i = 0; i < s->n_items; i++) {
        item_t *it = &s->items[i];
        used += answer(out + used, it->error ? it->error : rc == SR_OK ? NULL : why);
        if (i + 1 == s->n_items || s->items[i + 1].c != it->c || used + ANSWER_MAX > sizeof out)
            send_answers(it->c, out, used), used = 0;
        free(it->payload), free(it->detail);
    }
    s->n_items = 0;
}


/* Reads the clients epoll names ready, within `timeout_ns` (-1: 500 ms). */
static int gather(worker_t *wk, long long timeout_ns)
{
    struct epoll_event evs[256];
    struct timespec ts = {timeout_ns < 0 ? 0 : timeout_ns / 1000000000, timeout_ns < 0 ? 500000000 : timeout_ns % 1000000000};
    int n = epoll_pwait2(wk->ep, evs, 256, &ts, NULL);
    for (int i = 0; i < n && wk->n_items < ROUND_MAX; i++) { /* a full round: the rest wait for the next */
        client_t *c = evs[i].data.ptr;
        if (!c->in_round) c->in_round = 1, wk->touched[wk->n_touched++] = c;
        read_client(wk, c);
    }
    return n;
}

/* A worker's rounds: wait for events, gather, seal, answer, drop the dead.
 * The clients answered last round send their next events within
 * microseconds of each other: waiting up to GATHER_NS for as many as last
 * round makes one fdatasync serve them all, instead of one per straggler. */
#define GATHER_NS 300000
static void *worker_loop(void *arg)
{
    worker_t *wk = arg;
    while (!*wk->s->stop) {
        if (gather(wk, -1) > 0) {
            uint64_t start = sr_time_mono_ns();
            while (wk->n_items < wk->last_round && wk->n_items < ROUND_MAX) {
                uint64_t spent = sr_time_mono_ns() - start;
                if (spent >= GATHER_NS) break;
                if (gather(wk, 0) == 0) sched_yield();
            }
        }
        wk->last_round = wk->n_items;
        seal_round(wk);
        for (size_t i = 0; i < wk->n_touched; i++) { /* after their answers */
            client_t *c = wk->touched[i];
            c->in_round = 0;
            if (c->dead) drop_client(wk, c);
        }
        wk->n_touched = 0;
    }
    return NULL;
}

static int workers_start(sealer_t *s)
{
    for (int i = 0; i < WORKERS; i++) {
        worker_t *wk = &s->workers[i];
        wk->s = s;
        if ((wk->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || pthread_create(&wk->thread, NULL, worker_loop, wk) != 0) {
            sr_err_set_errno(SR_ERR_IO, errno, "cannot start the sealer's workers");
            if (wk->ep >= 0) close(wk->ep);
            *s->stop = 1; /* the ones started end */
            for (int j = 0; j < i; j++) pthread_join(s->workers[j].thread, NULL), close(s->workers[j].ep);
            return -1;
        }
    }
    return 0;
}

sr_err_t sr_audit_serve(const sr_audit_sealer_options_t *o, volatile int *stop)
{
    sealer_t *s = calloc(1, sizeof *s);
    if (!s) return sr_err_set(SR_ERR_NOMEM, "audit sealer");
    s->lfd = -1;
    s->stop = stop;
    s->max_clients = o->max_clients > 0 ? o->max_clients : 1024;
    pthread_mutex_init(&s->lock, NULL);
    sr_err_t rc = sr_audit_open(&o->log, &s->w);
    if (rc == SR_OK) rc = sr_unix_listen(o->socket_path, 512, SOCK_NONBLOCK, &s->lfd);
    if (rc == SR_OK && workers_start(s) != 0) rc = sr_err_last();
    if (rc != SR_OK) {
        if (s->w) (void)sr_audit_close(s->w);
        if (s->lfd >= 0) close(s->lfd), unlink(o->socket_path);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return rc;
    }
    sr_log(SR_LOG_NOTICE, "audit sealer on %s, writing %s", o->socket_path, o->log.path);
    int next_worker = 0;
    while (!*stop) {
        struct pollfd pfd = {.fd = s->lfd, .events = POLLIN};
        if (poll(&pfd, 1, 500) <= 0) continue; /* look at *stop twice a second */
        pthread_mutex_lock(&s->lock);
        int room = s->clients < s->max_clients;
        pthread_mutex_unlock(&s->lock);
        if (room) accept_client(s, &next_worker);
        else poll(NULL, 0, 50); /* at the cap: they wait in the backlog */
    }
    close(s->lfd);
    unlink(o->socket_path);
    for (int i = 0; i < WORKERS; i++) {
        worker_t *wk = &s->workers[i];
        pthread_join(wk->thread, NULL);
        while (wk->all) drop_client(wk, wk->all); /* each has had every answer it was owed */
        close(wk->ep);
    }
    rc = sr_audit_close(s->w); /* sealed at close */
    pthread_mutex_destroy(&s->lock);
    free(s);
    return rc;
}

/* ---- client: the event sink of every other process ---------------------------------- */

/* One connection per client, shared by its threads and pipelined: a thread
 * sends its event and takes a ticket; acknowledgements come back in the
 * order the events were sent, and one waiting thread at a time reads them
 * and hands each to its sender. So a process whose threads emit together
 * (kmsd, the agent) has several events in one round of the sealer, and one
 * wake-up of the process can carry several answers. */
#define IN_FLIGHT 64
#define ANSWER_TIMEOUT_S 10

typedef struct waiter {
    sr_err_t rc;
    char why[1100];
    int done;
} waiter_t;

struct sr_audit_client {
    char path[108];
    int fd;
    pthread_mutex_t lock;    /* everything below, and writes to fd */
    pthread_cond_t cv;
    uint64_t sent, answered; /* tickets on the current connection */
    int reading;             /* a thread is reading an answer, on fd as it was */
    uint64_t generation;     /* of the connection: a new one after each failure */
    int stale_fd;            /* a failed connection the reader still reads: it closes it (-1: none) */
    pid_t pid;               /* the process that connected: a child after fork() connects anew */
    waiter_t *waiting[IN_FLIGHT]; /* the sender of ticket t, at t % IN_FLIGHT, until answered */
};

static sr_err_t client_connect(sr_audit_client_t *c)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", c->path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        sr_err_t rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot reach the audit sealer at %s", c->path);
        if (c->fd >= 0) close(c->fd);
        c->fd = -1;
        return rc;
    }
    /* root or this user: another user's process on the path would acknowledge events and record nothing */
    sr_err_t trusted = sr_unix_peer_trusted(c->fd, c->path, "the audit sealer");
    if (trusted != SR_OK) {
        close(c->fd), c->fd = -1;
        return trusted;
    }
    struct timeval tv = {ANSWER_TIMEOUT_S, 0}; /* a sealer that hangs fails the event, never the caller forever */
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    c->pid = getpid();
    return SR_OK;
}

sr_err_t sr_audit_client_open(const char *socket_path, sr_audit_client_t **out)
{
    sr_audit_client_t *c = calloc(1, sizeof *c);
    if (!c) return sr_err_set(SR_ERR_NOMEM, "audit client");
    if (strlen(socket_path) >= sizeof c->path) {
        free(c);
        return sr_err_set(SR_ERR_INVALID_ARG, "socket path %s is too long", socket_path);
    }
    snprintf(c->path, sizeof c->path, "%s", socket_path);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->stale_fd = -1;
    sr_err_t rc = client_connect(c);
    if (rc != SR_OK) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return rc;
    }
    *out = c;
    return SR_OK;
}

/* The connection failed: every event still waiting on it fails with rc (under the lock). */
static void client_broken(sr_audit_client_t *c, sr_err_t rc)
{
    for (; c->answered < c->sent; c->answered++) {
        waiter_t *w = c->waiting[c->answered % IN_FLIGHT];
        c->waiting[c->answered % IN_FLIGHT] = NULL;
        w->rc = rc, w->done = 1;
        snprintf(w->why, sizeof w->why, "%s", sr_err_detail());
    }
    /* a reader may be waiting on it: shut it down (its poll and read return) and let the reader close it, so the
     * descriptor's number is not reused under it */
    if (c->fd >= 0 && c->reading) shutdown(c->fd, SHUT_RDWR), c->stale_fd = c->fd;
    else if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->sent = c->answered = 0;
    c->generation++;
    pthread_cond_broadcast(&c->cv);
}

/* Leading 'A' answers already here, up to `most`, taken at once (the sealer
 * sends a round's answers to one process together): how many, 0 if the
 * first is not one. */
static size_t take_acknowledgements(int fd, size_t most)
{
    uint8_t buf[IN_FLIGHT];
    ssize_t got = most > 1 ? recv(fd, buf, most, MSG_PEEK | MSG_DONTWAIT) : 0;
    size_t n = 0;
    while (got > 0 && n < (size_t)got && buf[n] == 'A') n++;
    return n > 1 && recv(fd, buf, n, MSG_DONTWAIT) == (ssize_t)n ? n : 0;
}

/* One answer or more, read without the lock (called with it, returns with it). */
static void read_answer(sr_audit_client_t *c)
{
    int fd = c->fd;
    uint64_t generation = c->generation;
    size_t outstanding = (size_t)(c->sent - c->answered);
    c->reading = 1;
    pthread_mutex_unlock(&c->lock);
    uint8_t status = 0, head[4];
    char why[1024] = "";
    size_t acks = 0;
    sr_err_t rc = sr_fd_wait_readable(fd, ANSWER_TIMEOUT_S * 1000);
    if (rc == SR_OK && (acks = take_acknowledgements(fd, outstanding)) > 0) status = 'A';
    else if (rc == SR_OK) rc = sock_read(fd, &status, 1), acks = 1;
    if (rc == SR_OK && status == 'E' && (rc = sock_read(fd, head, 4)) == SR_OK) {
        uint32_t n = sr_get_be32(head);
        rc = n < sizeof why ? sock_read(fd, why, n) : sr_err_set(SR_ERR_PROTOCOL, "an answer of %u bytes", n);
        if (rc == SR_OK) why[n] = '\0';
    }
    if (rc == SR_OK && status != 'A' && status != 'E') rc = sr_err_set(SR_ERR_PROTOCOL, "the audit sealer answered '%c'", status);
    pthread_mutex_lock(&c->lock);
    c->reading = 0;
    if (generation != c->generation) { /* the connection failed meanwhile: its waiters have their error */
        if (c->stale_fd == fd) close(fd), c->stale_fd = -1;
        pthread_cond_broadcast(&c->cv);
        return;
    }
    if (rc != SR_OK) {
        client_broken(c, rc);
        return;
    }
    for (size_t i = 0; i < acks; i++) {
        waiter_t *w = c->waiting[c->answered % IN_FLIGHT];
        c->waiting[c->answered % IN_FLIGHT] = NULL;
        c->answered++;
        w->done = 1;
        w->rc = status == 'A' ? SR_OK : SR_ERR_IO;
        if (status == 'E') snprintf(w->why, sizeof w->why, "the audit sealer did not record the event: %s", why);
    }
    pthread_cond_broadcast(&c->cv);
}

/* Sends one frame and waits for its answer (under the lock). */
static sr_err_t client_send_once(sr_audit_client_t *c, const uint8_t *frame, size_t len)
{
    if (c->fd >= 0 && c->pid != getpid()) {
        /* a child of the process that connected: the connection is the parent's (its answers, and the sealer's
         * record of who sends — SO_PEERCRED is the connecting process); the child's copy goes, it connects anew */
        close(c->fd);
        c->fd = -1, c->sent = c->answered = 0, c->reading = 0, c->stale_fd = -1;
        memset(c->waiting, 0, sizeof c->waiting);
    }
    if (c->fd < 0) {
        sr_err_t rc = client_connect(c);
        if (rc != SR_OK) return rc;
    }
    while (c->fd >= 0 && c->sent - c->answered >= IN_FLIGHT) pthread_cond_wait(&c->cv, &c->lock);
    if (c->fd < 0) return sr_err_set(SR_ERR_IO, "the connection to the audit sealer at %s was lost", c->path);
    waiter_t me = {.rc = SR_OK};
    sr_err_t rc = sock_write(c->fd, frame, len); /* under the lock: frames whole and in ticket order */
    if (rc != SR_OK) {
        client_broken(c, rc);
        return rc;
    }
    c->waiting[c->sent % IN_FLIGHT] = &me;
    c->sent++;
    while (!me.done) {
        if (!c->reading) read_answer(c);
        else pthread_cond_wait(&c->cv, &c->lock);
    }
    return me.rc == SR_OK ? SR_OK : sr_err_set(me.rc, "%s", me.why);
}

sr_err_t sr_audit_client_send(sr_audit_client_t *c, const sr_event_t *e)
{
    const char *f[AUDIT_FRAME_FIELDS] = {e->component, e->event,  e->subject, e->object,
                                         e->outcome,   e->source, e->detail};
    uint8_t *frame = malloc(4 + EVENT_MAX);
    if (!frame) return sr_err_set(SR_ERR_NOMEM, "audit event");
    size_t len = 0;
    for (int i = 0; i < AUDIT_FRAME_FIELDS; i++) {
        size_t n = f[i] ? strlen(f[i]) : 0;
        if (len + n + 1 > EVENT_MAX) {
            free(frame);
            return sr_err_set(SR_ERR_INVALID_ARG, "audit event longer than %d bytes", EVENT_MAX);
        }
        if (n) memcpy(frame + 4 + len, f[i], n);
        frame[4 + len + n] = '\0';
        len += n + 1;
    }
    sr_put_be32(frame, (uint32_t)(len - 1)); /* the last NUL is implied */
    pthread_mutex_lock(&c->lock);
    sr_err_t rc = client_send_once(c, frame, 4 + len - 1);
    if (rc != SR_OK && c->fd < 0) rc = client_send_once(c, frame, 4 + len - 1); /* a sealer restarted: once more */
    pthread_mutex_unlock(&c->lock);
    free(frame);
    return rc;
}

void sr_audit_client_close(sr_audit_client_t *c)
{
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    if (c->stale_fd >= 0) close(c->stale_fd);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static sr_err_t client_sink(void *ctx, const sr_event_t *e) { return sr_audit_client_send(ctx, e); }

void sr_audit_client_install_as_event_sink(sr_audit_client_t *c)
{
    sr_event_set_sink(c ? client_sink : NULL, c);
}
