/* Secure memory: locked, guarded, wiped; randomness; hex; hardening. */
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sr_test.h"

static long locked_kib(void)
{
    size_t len;
    char *status = (char *)sr_test_read_file("/proc/self/status", &len);
    long kib = -1;
    char *line = status ? strstr(status, "VmLck:") : NULL;
    if (line) kib = strtol(line + 6, NULL, 10);
    free(status);
    return kib;
}

#if defined(__SANITIZE_ADDRESS__)
#define SR_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SR_UNDER_ASAN 1
#endif
#endif

static void test_alloc_is_locked(void)
{
#ifdef SR_UNDER_ASAN
    /* AddressSanitizer intercepts mlock() as a no-op, so VmLck cannot move;
     * the plain build runs this check. */
    printf("     (skipped under AddressSanitizer: mlock is intercepted)\n");
    return;
#endif
    long before = locked_kib();
    uint8_t *key = sr_secure_alloc(64 * 1024);
    SR_CHECK(key != NULL);
    if (!key) return;
    long after = locked_kib();
    SR_CHECK_MSG(after >= before + 64, "VmLck went from %ld to %ld kB: secure memory is not mlock'd", before, after);
    sr_secure_free(key);
}

static void test_wipe_clears(void)
{
    uint8_t *key = sr_secure_alloc(32);
    SR_CHECK(key != NULL);
    if (!key) return;
    memset(key, 0xA5, 32);
    sr_secure_wipe(key, 32);
    static const uint8_t zero[32];
    SR_CHECK_MEM(key, zero, 32);
    sr_secure_free(key);
    sr_secure_free(NULL); /* allowed */
}

/* Writing one byte past a secure allocation must fault (guard page). */
static void test_guard_page_faults(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        uint8_t *p = sr_secure_alloc(4096);
        volatile uint8_t *past = p + 4096 + 64;
        *past = 1;
        _exit(0); /* reached only if nothing guarded the overrun */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK_MSG(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "overrunning a secure buffer did not fault");
}

static void test_noaccess_protection(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        uint8_t *p = sr_secure_alloc(32);
        p[0] = 7;
        if (sr_secure_protect_noaccess(p) != SR_OK) _exit(3);
        volatile uint8_t v = p[0];
        (void)v;
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK_MSG(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "reading a noaccess secure buffer did not fault");
}

static void test_equal_and_random(void)
{
    uint8_t a[32], b[32];
    SR_CHECK_OK(sr_random_bytes(a, sizeof a));
    SR_CHECK_OK(sr_random_bytes(b, sizeof b));
    SR_CHECK(!sr_secure_equal(a, b, sizeof a)); /* 2^-256 chance of a false failure */
    memcpy(b, a, sizeof a);
    SR_CHECK(sr_secure_equal(a, b, sizeof a));
    b[31] ^= 1;
    SR_CHECK(!sr_secure_equal(a, b, sizeof a));
}

static void test_hex(void)
{
    const uint8_t data[] = {0x00, 0x7f, 0xab, 0xff};
    char hex[9];
    sr_hex_encode(data, 4, hex);
    SR_CHECK_STR(hex, "007fabff");
    uint8_t back[4];
    SR_CHECK_OK(sr_hex_decode("007FABff", back, 4));
    SR_CHECK_MEM(back, data, 4);
    SR_CHECK_ERR(sr_hex_decode("007fabf", back, 4), SR_ERR_PARSE);
    SR_CHECK_ERR(sr_hex_decode("007fabfg", back, 4), SR_ERR_PARSE);
    SR_CHECK_ERR(sr_hex_decode("007fabff00", back, 4), SR_ERR_PARSE);
}

static void test_harden(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl;
        if (sr_process_harden() != SR_OK) _exit(2);
        if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) _exit(3);
        if (getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0 || rl.rlim_max != 0) _exit(4);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "hardening check failed with status %d", status);
}

int main(void)
{
    SR_CHECK_OK(sr_secure_init());
    SR_RUN(test_alloc_is_locked);
    SR_RUN(test_wipe_clears);
    SR_RUN(test_guard_page_faults);
    SR_RUN(test_noaccess_protection);
    SR_RUN(test_equal_and_random);
    SR_RUN(test_hex);
    SR_RUN(test_harden);
    return sr_test_finish();
}
