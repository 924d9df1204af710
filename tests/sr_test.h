/*
 * sr_test.h — the small harness every C test uses.
 *
 *   #include "sr_test.h"
 *   static void test_thing(void) { SR_CHECK(x == 1); SR_CHECK_OK(f()); }
 *   int main(void) { SR_RUN(test_thing); return sr_test_finish(); }
 *
 * A failed check prints file:line and the expression and the test goes on;
 * sr_test_finish() prints "N passed, N failed" and returns nonzero on any
 * failure, so ctest sees it.
 */
#ifndef STRONGROOM_SR_TEST_H
#define STRONGROOM_SR_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

extern int sr_test_failures_in_current;

void sr_test_fail(const char *file, int line, const char *fmt, ...) SR_PRINTF(3, 4);
void sr_test_run(const char *name, void (*fn)(void));
int sr_test_finish(void);

/* A fresh directory under $TMPDIR (or /tmp), removed by sr_test_finish()
 * unless a test failed (then kept, and its path printed). */
const char *sr_test_tmpdir(void);
/* Path inside sr_test_tmpdir(); returns a static buffer rotated over 8 slots. */
const char *sr_test_path(const char *name);
/* $SR_SOURCE_DIR/<rel> or $SR_BUILD_DIR/<rel> (set by ctest; falls back to
 * the compile-time directories). Static buffer rotated over 8 slots. */
const char *sr_test_source_path(const char *rel);
const char *sr_test_build_path(const char *rel);
/* Reads a whole file into malloc'd memory; NULL if it cannot. */
uint8_t *sr_test_read_file(const char *path, size_t *len_out);
int sr_test_write_file(const char *path, const void *data, size_t len);
/* A TCP port on 127.0.0.1 that was free a moment ago (0 if none). */
uint16_t sr_test_free_port(void);
/* Waits up to timeout_ms for 127.0.0.1:port to accept connections; 1 if it does. */
int sr_test_wait_port(uint16_t port, int timeout_ms);
/* Runs a shell command line, stdout and stderr into out (NUL-terminated,
 * cut at cap); returns its exit status (-1 if it did not exit). */
int sr_test_command(char *out, size_t cap, const char *command);
/* Needs root: a process running as nobody listening on a Unix socket
 * `name` in a world-writable directory of the test's, answering every
 * connection's first message with `answer` (an impostor of a host service);
 * its path into path_out; its pid, or -1. The caller kills it. */
pid_t sr_test_impostor_server(const char *name, const void *answer, size_t len, char *path_out, size_t cap);
/* A real `tde-audit serve` on sock, writing log with the signing key sign;
 * returns once its socket is there (its pid: the caller stops it). */
pid_t sr_test_start_sealer(const char *sock, const char *log, const char *sign);
/* A relay on path in front of the sealer on `sealer` that refuses every
 * event named `refused` (as the sealer refuses one its log cannot take: the
 * fault a full disk gives, when the test chooses) and passes the rest on;
 * serves one client at a time. Its pid: the caller kills it. */
pid_t sr_test_refusing_relay(const char *path, const char *sealer, const char *refused);
/* 1 if `needle` occurs anywhere in the file. */
int sr_test_file_contains(const char *path, const void *needle, size_t needle_len);

#define SR_RUN(fn) sr_test_run(#fn, fn)

#define SR_CHECK(cond)                                                       \
    do {                                                                     \
        if (!(cond)) sr_test_fail(__FILE__, __LINE__, "check failed: %s", #cond); \
    } while (0)

#define SR_CHECK_MSG(cond, ...)                                              \
    do {                                                                     \
        if (!(cond)) sr_test_fail(__FILE__, __LINE__, __VA_ARGS__);          \
    } while (0)

#define SR_CHECK_OK(expr)                                                    \
    do {                                                                     \
        sr_err_t sr_check_rc_ = (expr);                                      \
        if (sr_check_rc_ != SR_OK)                                           \
            sr_test_fail(__FILE__, __LINE__, "%s returned %s: %s", #expr,    \
                         sr_err_name(sr_check_rc_), sr_err_detail());        \
    } while (0)

#define SR_CHECK_ERR(expr, want)                                             \
    do {                                                                     \
        sr_err_t sr_check_rc_ = (expr);                                      \
        if (sr_check_rc_ != (want))                                          \
            sr_test_fail(__FILE__, __LINE__, "%s returned %s, want %s", #expr, \
                         sr_err_name(sr_check_rc_), sr_err_name(want));      \
    } while (0)

#define SR_CHECK_EQ_INT(a, b)                                                \
    do {                                                                     \
        long long sr_a_ = (long long)(a), sr_b_ = (long long)(b);            \
        if (sr_a_ != sr_b_)                                                  \
            sr_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, sr_a_, sr_b_); \
    } while (0)

#define SR_CHECK_STR(a, b)                                                   \
    do {                                                                     \
        const char *sr_a_ = (a), *sr_b_ = (b);                               \
        if (!sr_a_ || !sr_b_ || strcmp(sr_a_, sr_b_) != 0)                   \
            sr_test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, \
                         sr_a_ ? sr_a_ : "(null)", sr_b_ ? sr_b_ : "(null)"); \
    } while (0)

#define SR_CHECK_CONTAINS(haystack, needle)                                  \
    do {                                                                     \
        const char *sr_h_ = (haystack), *sr_n_ = (needle);                   \
        if (!sr_h_ || !strstr(sr_h_, sr_n_))                                 \
            sr_test_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", \
                         sr_h_ ? sr_h_ : "(null)", sr_n_);                   \
    } while (0)

#define SR_CHECK_MEM(a, b, n)                                                \
    do {                                                                     \
        if (memcmp((a), (b), (n)) != 0)                                      \
            sr_test_fail(__FILE__, __LINE__, "memory differs: %s vs %s (%zu bytes)", #a, #b, (size_t)(n)); \
    } while (0)

#endif
