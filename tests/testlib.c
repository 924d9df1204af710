/* testlib.c — the harness behind sr_test.h. */
#include "sr_test.h"

#include "sr_bytes.h"
#include "sr_file.h"

#include <sys/wait.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

int sr_test_failures_in_current;
static int passed, failed;
static char tmpdir[4096];

void sr_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    sr_test_failures_in_current++;
}

void sr_test_run(const char *name, void (*fn)(void))
{
    const char *only = getenv("SR_TEST_ONLY"); /* run the tests whose name holds this */
    if (only && !strstr(name, only)) return;
    sr_test_failures_in_current = 0;
    fn();
    if (sr_test_failures_in_current) {
        failed++;
        fprintf(stderr, "FAIL %s\n", name);
    } else {
        passed++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int sr_test_finish(void)
{
    if (tmpdir[0]) {
        if (failed)
            fprintf(stderr, "kept test directory %s\n", tmpdir);
        else
            nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

const char *sr_test_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/srtest-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return tmpdir;
}

static char *rotating_buffer(void)
{
    static char bufs[8][4096];
    static unsigned next;
    return bufs[next++ % 8];
}

const char *sr_test_path(const char *name)
{
    char *buf = rotating_buffer();
    snprintf(buf, 4096, "%s/%s", sr_test_tmpdir(), name);
    return buf;
}

static const char *dir_path(const char *env, const char *fallback, const char *rel)
{
    const char *dir = getenv(env);
    char *buf = rotating_buffer();
    snprintf(buf, 4096, "%s/%s", dir && *dir ? dir : fallback, rel);
    return buf;
}

const char *sr_test_source_path(const char *rel) { return dir_path("SR_SOURCE_DIR", SR_TEST_SOURCE_DIR, rel); }
const char *sr_test_build_path(const char *rel) { return dir_path("SR_BUILD_DIR", SR_TEST_BUILD_DIR, rel); }

uint8_t *sr_test_read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 65536, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *bigger = realloc(buf, cap *= 2);
            if (!bigger) { free(buf); buf = NULL; }
            buf = bigger;
        }
    }
    fclose(f);
    if (buf) *len_out = len;
    return buf;
}

int sr_test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, len, f) == len;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

int sr_test_file_contains(const char *path, const void *needle, size_t needle_len)
{
    size_t len;
    uint8_t *data = sr_test_read_file(path, &len);
    if (!data) return 0;
    int found = needle_len <= len && memmem(data, len, needle, needle_len) != NULL;
    free(data);
    return found;
}

uint16_t sr_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        a.sin_port = 0;
    if (fd >= 0) close(fd);
    return ntohs(a.sin_port);
}

int sr_test_wait_port(uint16_t port, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        if (fd >= 0) close(fd);
        if (ok) return 1;
        usleep(50000);
    }
    return 0;
}

int sr_test_command(char *out, size_t cap, const char *command)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s 2>&1", command);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, cap - 1, p) : 0;
    out[n] = '\0';
    int st = p ? pclose(p) : -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

pid_t sr_test_start_sealer(const char *sock, const char *log, const char *sign)
{
    pid_t sealer = fork();
    if (sealer == 0) {
        execl(sr_test_build_path("audit/tde-audit"), "tde-audit", "serve", "--socket", sock, "--log", log, "--sign-key",
              sign, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; sealer > 0 && i < 200 && access(sock, F_OK) != 0; i++) usleep(20000);
    return sealer;
}

/* A relay in front of the real sealer that refuses one event by name, as the
 * sealer refuses an event its log cannot take: the fault a full disk gives,
 * at the moment the test chooses. Everything else reaches the sealer. */
pid_t sr_test_refusing_relay(const char *path, const char *sealer, const char *refused)
{
    int l = -1;
    SR_CHECK_OK(sr_unix_listen(path, 4, 0, &l));
    pid_t pid = fork();
    if (pid != 0) return close(l), pid;
    for (int c; (c = accept(l, NULL, NULL)) >= 0; close(c)) { /* one client at a time */
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sealer);
        int up = socket(AF_UNIX, SOCK_STREAM, 0);
        if (up < 0 || connect(up, (struct sockaddr *)&sa, sizeof sa) != 0) _exit(2);
        uint8_t frame[4 + 16384 + 1], answer[5 + 1024];
        while (sr_fd_read_exact(c, frame, 4) == SR_OK) {
            uint32_t len = sr_get_be32(frame);
            if (len > 16384 || sr_fd_read_exact(c, frame + 4, len) != SR_OK) break;
            frame[4 + len] = '\0';
            const char *event = (const char *)frame + 4 + strlen((const char *)frame + 4) + 1;
            size_t n = 1;
            if (!strcmp(event, refused)) {
                const char *why = "the log's file system is full (injected by the test)";
                answer[0] = 'E', sr_put_be32(answer + 1, (uint32_t)strlen(why)), memcpy(answer + 5, why, strlen(why));
                n = 5 + strlen(why);
            } else if (sr_fd_send_all(up, frame, 4 + len) != SR_OK || sr_fd_read_exact(up, answer, 1) != SR_OK ||
                       (answer[0] == 'E' && (sr_fd_read_exact(up, answer + 1, 4) != SR_OK ||
                                             sr_fd_read_exact(up, answer + 5, sr_get_be32(answer + 1)) != SR_OK))) {
                break;
            } else if (answer[0] == 'E') {
                n = 5 + sr_get_be32(answer + 1);
            }
            if (sr_fd_send_all(c, answer, n) != SR_OK) break;
        }
        close(up);
    }
    _exit(0);
}

pid_t sr_test_impostor_server(const char *name, const void *answer, size_t len, char *path_out, size_t cap)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s", sr_test_path("open-dir"));
    if ((mkdir(dir, 0777) != 0 && errno != EEXIST) || chmod(dir, 0777) != 0 || chmod(sr_test_tmpdir(), 0755) != 0)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(path_out, cap, "%s/%s", dir, name) >= (cap < sizeof sa.sun_path ? cap : sizeof sa.sun_path))
        return -1;
    memcpy(sa.sun_path, path_out, strlen(path_out) + 1);
    pid_t pid = fork();
    if (pid == 0) {
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (setgid(65534) != 0 || setuid(65534) != 0 || l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 ||
            listen(l, 4) != 0)
            _exit(2);
        for (;;) {
            int c = accept(l, NULL, NULL);
            char buf[4096];
            if (c >= 0 && read(c, buf, sizeof buf) > 0 && write(c, answer, len) < 0) _exit(3);
            if (c >= 0) close(c);
        }
    }
    for (int i = 0; pid > 0 && i < 100 && access(path_out, F_OK) != 0; i++) usleep(20000);
    return pid;
}
