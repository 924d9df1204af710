/*
 * sr_file.h — whole reads and writes on a descriptor, and files replaced
 * atomically (common/fdio.c): the one way every component writes a file a
 * crash must leave whole (key files, enrolment state, policies, keys).
 */
#ifndef STRONGROOM_SR_FILE_H
#define STRONGROOM_SR_FILE_H

#include "sr_api.h"
#include "sr_error.h"

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Through EINTR and short transfers (sockets, pipes); a receive timeout is SR_ERR_TIMEOUT. */
SR_API sr_err_t sr_fd_write_all(int fd, const void *buf, size_t len) SR_MUST_CHECK;
SR_API sr_err_t sr_fd_read_exact(int fd, void *buf, size_t len) SR_MUST_CHECK;
/* Waits until fd has input (or its peer has closed) for up to timeout_ms;
 * else SR_ERR_TIMEOUT. A caller that expects an answer sleeps here before it
 * reads, not in read(): a process asleep in read() on a Unix socket is woken
 * each time its peer takes what it sent (the kernel tells every sleeper on
 * the socket there is room to write), and poll() sleeps for input only. */
SR_API sr_err_t sr_fd_wait_readable(int fd, int timeout_ms) SR_MUST_CHECK;
/* sr_fd_write_all on a socket, without SIGPIPE when the peer has gone (SR_ERR_CLOSED): library code runs in
 * processes that keep SIGPIPE's default, which would kill them. */
SR_API sr_err_t sr_fd_send_all(int fd, const void *buf, size_t len) SR_MUST_CHECK;

/* A listening Unix stream socket at path (every local user may connect:
 * mode 0666; who connects is the kernel's to tell, SO_PEERCRED), made under
 * a temporary name and renamed over path once it listens: a client that
 * sees the path can connect (bound at path itself, it would be refused
 * between bind and listen), and a stale socket of a dead server is
 * replaced. sock_flags: SOCK_NONBLOCK or 0 (SOCK_CLOEXEC always). The
 * temporary name, path + "." + pid, must fit a socket address (107 bytes). */
SR_API sr_err_t sr_unix_listen(const char *path, int backlog, int sock_flags, int *fd_out) SR_MUST_CHECK;

/* The process at the other end of a connected Unix socket runs as root or
 * as this process's user: a service of the host (the key agent, the audit
 * sealer) and not another user's process that took its socket's path. Else
 * SR_ERR_PERMISSION naming the peer (`what`: "the key agent", ...). */
SR_API sr_err_t sr_unix_peer_trusted(int fd, const char *path, const char *what) SR_MUST_CHECK;

/* The whole file, NUL-terminated (malloc'd; *len without the NUL, len may
 * be NULL); SR_ERR_LIMIT if it holds more than max bytes. */
SR_API sr_err_t sr_file_read_all(const char *path, size_t max, char **out, size_t *len) SR_MUST_CHECK;

/* A secret's file, already opened as fd (what is checked is what is read;
 * path names it in errors), is a regular file, readable by its owner alone,
 * owned by this user or root: what group or others can read is no secret,
 * and whoever owns it can replace it. Else SR_ERR_PERMISSION (or
 * SR_ERR_INVALID_ARG) saying what to run; `what` names the file ("private
 * key", "key file"). Its stat in *st if st is not NULL. */
SR_API sr_err_t sr_file_check_private(int fd, const char *path, const char *what, struct stat *st) SR_MUST_CHECK;

/* Makes path's directory entry durable (an fsync of the directory it is in):
 * after a rename or an unlink, so a crash does not bring the old name back. */
SR_API sr_err_t sr_fsync_parent_dir(const char *path) SR_MUST_CHECK;

enum {
    SR_WRITE_NO_REPLACE = 1, /* refuse (SR_ERR_EXISTS) if path exists, instead of replacing it */
    SR_WRITE_NO_DIR_SYNC = 2, /* the caller syncs the directory once after several writes */
    SR_WRITE_NO_SYNC = 4      /* neither the file nor its directory: a file derived anew at each start */
};
/* len bytes to path: a temporary file beside it (mode, written, fsynced),
 * renamed over path (or linked, with SR_WRITE_NO_REPLACE), then the
 * directory fsynced. A reader, or a crash, sees the old file or the new one,
 * never part of either; nothing is left behind on failure. */
SR_API sr_err_t sr_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, int flags)
    SR_MUST_CHECK;

#endif
