/*
 * Unix-socket plumbing of common/fdio.c: a listening socket appears at its
 * path only once it listens (a client that sees the path is never refused),
 * a dead server's socket is replaced, and waiting for an answer times out.
 */
#include "sr_test.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int connect_to(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return -errno;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 ? fd : -errno;
    if (rc < 0) close(fd);
    return rc;
}

/* A client polls the path and connects the moment it is there, while the
 * server makes and removes its socket 300 times: never refused (bound at the
 * path and then listening, it was refused in between — an engine started
 * beside a starting agent failed its open). */
static void test_a_socket_appears_listening(void)
{
    char path[108];
    snprintf(path, sizeof path, "%s/s.sock", sr_test_tmpdir());
    int pipefd[2];
    SR_CHECK(pipe(pipefd) == 0);
    pid_t client = fork();
    if (client == 0) {
        close(pipefd[0]);
        int refused = 0, connected = 0;
        for (uint64_t end = sr_time_mono_ms() + 4000; sr_time_mono_ms() < end;) {
            struct stat st;
            if (stat(path, &st) != 0) continue;
            int fd = connect_to(path);
            if (fd >= 0) close(fd), connected++;
            else refused += fd == -ECONNREFUSED;
        }
        int counts[2] = {refused, connected};
        _exit(write(pipefd[1], counts, sizeof counts) == sizeof counts ? 0 : 1);
    }
    close(pipefd[1]);
    for (int i = 0; i < 300; i++) {
        int fd = -1;
        SR_CHECK_OK(sr_unix_listen(path, 16, 0, &fd));
        usleep(1000);
        unlink(path); /* gone before it stops listening: a client sees no path rather than a dead one */
        close(fd);
    }
    int counts[2] = {0, 0}, st = 0;
    SR_CHECK(read(pipefd[0], counts, sizeof counts) == sizeof counts);
    waitpid(client, &st, 0);
    close(pipefd[0]);
    SR_CHECK_MSG(counts[0] == 0, "%d connections refused at a path that was there (%d made)", counts[0], counts[1]);
    SR_CHECK_MSG(counts[1] > 0, "the client never connected");
}

/* A socket left by a server that died (bound, nobody listening) is replaced;
 * nothing else is left beside it. */
static void test_a_dead_servers_socket_is_replaced(void)
{
    char path[108], tmp[120];
    snprintf(path, sizeof path, "%s/dead.sock", sr_test_tmpdir());
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int dead = socket(AF_UNIX, SOCK_STREAM, 0);
    SR_CHECK(bind(dead, (struct sockaddr *)&sa, sizeof sa) == 0);
    close(dead);
    SR_CHECK(connect_to(path) == -ECONNREFUSED);
    int fd = -1;
    SR_CHECK_OK(sr_unix_listen(path, 16, SOCK_NONBLOCK, &fd));
    int c = connect_to(path);
    SR_CHECK(c >= 0);
    struct stat st;
    SR_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0666);
    snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid());
    SR_CHECK(access(tmp, F_OK) != 0);
    close(c), close(fd), unlink(path);
    char *long_path = malloc(200);
    memset(long_path, 'a', 199), long_path[199] = '\0';
    SR_CHECK_ERR(sr_unix_listen(long_path, 16, 0, &fd), SR_ERR_CONFIG);
    free(long_path);
}

/* Waiting for an answer: SR_OK once there is input (or the peer closed),
 * SR_ERR_TIMEOUT when nothing came in time. */
static void test_waiting_for_an_answer(void)
{
    int sv[2];
    SR_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    uint64_t t0 = sr_time_mono_ms();
    SR_CHECK_ERR(sr_fd_wait_readable(sv[0], 200), SR_ERR_TIMEOUT);
    uint64_t took = sr_time_mono_ms() - t0;
    SR_CHECK_MSG(took >= 190 && took < 1000, "timed out after %llu ms", (unsigned long long)took);
    SR_CHECK(write(sv[1], "A", 1) == 1);
    SR_CHECK_OK(sr_fd_wait_readable(sv[0], 200));
    char b;
    SR_CHECK(read(sv[0], &b, 1) == 1);
    close(sv[1]);
    SR_CHECK_OK(sr_fd_wait_readable(sv[0], 200)); /* the close: read() says so */
    SR_CHECK(read(sv[0], &b, 1) == 0);
    close(sv[0]);
}

int main(void)
{
    SR_RUN(test_a_socket_appears_listening);
    SR_RUN(test_a_dead_servers_socket_is_replaced);
    SR_RUN(test_waiting_for_an_answer);
    return sr_test_finish();
}
