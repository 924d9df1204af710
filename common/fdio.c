/* fdio.c — whole reads and writes on a descriptor, through EINTR and short
 * transfers (sockets, pipes); files replaced atomically. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

sr_err_t sr_fd_write_all(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return sr_err_set_errno(sr_err_from_errno(n < 0 ? errno : EPIPE), n < 0 ? errno : EPIPE, "write failed");
        p += n, len -= (size_t)n;
    }
    return SR_OK;
}

sr_err_t sr_fd_wait_readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int n;
    while ((n = poll(&pfd, 1, timeout_ms)) < 0 && errno == EINTR) {}
    if (n == 0) return sr_err_set(SR_ERR_TIMEOUT, "no answer in %d ms", timeout_ms);
    if (n < 0) return sr_err_set_errno(SR_ERR_IO, errno, "poll failed");
    return SR_OK;
}

sr_err_t sr_fd_send_all(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return sr_err_set(SR_ERR_CLOSED, "the peer has gone");
        if (n <= 0) return sr_err_set_errno(sr_err_from_errno(n < 0 ? errno : EPIPE), n < 0 ? errno : EPIPE, "send failed");
        p += n, len -= (size_t)n;
    }
    return SR_OK;
}

sr_err_t sr_fd_read_exact(int fd, void *buf, size_t len)
{
    unsigned char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return sr_err_set_errno(errno == EAGAIN ? SR_ERR_TIMEOUT : sr_err_from_errno(errno), errno, "read failed");
        if (n == 0) return got ? sr_err_set(SR_ERR_TRUNCATED, "the peer closed part-way") : SR_ERR_CLOSED;
        got += (size_t)n;
    }
    return SR_OK;
}

sr_err_t sr_file_check_private(int fd, const char *path, const char *what, struct stat *st)
{
    struct stat own;
    if (!st) st = &own;
    if (fstat(fd, st) != 0)
        return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot read %s %s", what, path);
    if (!S_ISREG(st->st_mode)) return sr_err_set(SR_ERR_INVALID_ARG, "%s %s is not a regular file", what, path);
    if (st->st_mode & 077)
        return sr_err_set(SR_ERR_PERMISSION, "%s %s is readable by group or others (mode %03o); run: chmod 600 %s",
                          what, path, (unsigned)(st->st_mode & 0777), path);
    if (st->st_uid != geteuid() && st->st_uid != 0)
        return sr_err_set(SR_ERR_PERMISSION, "%s %s is owned by uid %ld, not by this user (uid %ld) or root; "
                          "run: chown %ld %s", what, path, (long)st->st_uid, (long)geteuid(), (long)geteuid(), path);
    return SR_OK;
}

sr_err_t sr_fsync_parent_dir(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    if (n >= sizeof dir) return sr_err_set(SR_ERR_INVALID_ARG, "path too long: %s", path);
    memcpy(dir, slash ? path : ".", n);
    dir[n] = '\0';
    if (slash == path) snprintf(dir, sizeof dir, "/");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return sr_err_set_errno(SR_ERR_IO, errno, "cannot open directory %s", dir);
    int r = fsync(fd), e = errno;
    close(fd);
    return r == 0 ? SR_OK : sr_err_set_errno(SR_ERR_IO, e, "cannot sync directory %s", dir);
}

sr_err_t sr_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, int flags)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
        return sr_err_set(SR_ERR_INVALID_ARG, "path too long: %s", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot create a file beside %s", path);
    sr_err_t rc = fchmod(fd, mode) == 0 ? sr_fd_write_all(fd, data, len)
                                        : sr_err_set_errno(SR_ERR_IO, errno, "cannot set the mode of %s", tmp);
    if (rc == SR_OK && !(flags & SR_WRITE_NO_SYNC) && fsync(fd) != 0)
        rc = sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot sync %s", tmp);
    if (close(fd) != 0 && rc == SR_OK) rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot write %s", tmp);
    if (rc == SR_OK && ((flags & SR_WRITE_NO_REPLACE) ? link(tmp, path) : rename(tmp, path)) != 0)
        rc = errno == EEXIST ? sr_err_set(SR_ERR_EXISTS, "%s already exists; refusing to overwrite it", path)
                             : sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot put %s in place", path);
    if (rc != SR_OK || (flags & SR_WRITE_NO_REPLACE)) unlink(tmp); /* after a rename it is gone already */
    if (rc == SR_OK && !(flags & (SR_WRITE_NO_DIR_SYNC | SR_WRITE_NO_SYNC))) rc = sr_fsync_parent_dir(path);
    return rc;
}

sr_err_t sr_file_read_all(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot open %s", path);
    struct stat st;
    /* room for what fstat says, and one byte more to see the end */
    size_t cap = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size <= max ? (size_t)st.st_size + 1 : 4096;
    char *buf = malloc(cap + 1);
    size_t n = 0;
    sr_err_t rc = buf ? SR_OK : sr_err_set(SR_ERR_NOMEM, "cannot read %s: out of memory", path);
    while (rc == SR_OK) {
        if (n == cap) {
            char *more = cap <= max ? realloc(buf, (cap = cap * 2 > max + 1 ? max + 1 : cap * 2) + 1) : NULL;
            if (!more) {
                rc = n > max ? sr_err_set(SR_ERR_LIMIT, "%s holds more than %zu bytes", path, max)
                             : sr_err_set(SR_ERR_NOMEM, "cannot read %s: out of memory", path);
                break;
            }
            buf = more;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = sr_err_set_errno(SR_ERR_IO, errno, "cannot read %s", path);
        if (r <= 0) break;
        n += (size_t)r;
        if (n > max) rc = sr_err_set(SR_ERR_LIMIT, "%s holds more than %zu bytes", path, max);
    }
    close(fd);
    if (rc != SR_OK) return free(buf), rc;
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return SR_OK;
}

sr_err_t sr_unix_listen(const char *path, int backlog, int sock_flags, int *fd_out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char tmp[sizeof sa.sun_path];
    if (snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return sr_err_set(SR_ERR_CONFIG, "socket path too long: %s", path);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", tmp);
    unlink(tmp);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | sock_flags, 0);
    /* the mode set on the name without following it: a link put there in a writable directory is not chmod'ed */
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        fchmodat(AT_FDCWD, tmp, 0666, AT_SYMLINK_NOFOLLOW) != 0 || listen(fd, backlog) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        if (fd >= 0) close(fd), unlink(tmp);
        return sr_err_set_errno(SR_ERR_IO, e, "cannot listen on %s", path);
    }
    *fd_out = fd;
    return SR_OK;
}

sr_err_t sr_unix_peer_trusted(int fd, const char *path, const char *what)
{
    struct ucred peer = {0};
    socklen_t len = sizeof peer;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0)
        return sr_err_set_errno(SR_ERR_PERMISSION, errno, "cannot tell who listens at %s", path);
    if (peer.uid == 0 || peer.uid == geteuid()) return SR_OK;
    return sr_err_set(SR_ERR_PERMISSION, "the process at %s (pid %d) runs as uid %u, neither root nor this user: not %s",
                      path, (int)peer.pid, (unsigned)peer.uid, what);
}
