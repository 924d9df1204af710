/* fdio.c — whole reads and writes on a descriptor, through EINTR and short
 * transfers (sockets, pipes). */
#include "common.h"

#include <errno.h>
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
