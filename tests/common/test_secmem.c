/* Secure memory: locked, guarded, wiped; randomness; hex; hardening. */
#include <pthread.h>
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
        uint8_t *p = sr_secure_alloc(4096);
        p[0] = 7;
        if (sr_secure_protect_noaccess(p) != SR_OK) _exit(3);
        volatile uint8_t v = p[0];
        (void)v;
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    /* a fault: killed by SIGSEGV, or exit 1 from AddressSanitizer's handler; 3 is a protection refused */
    SR_CHECK_MSG(!(WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3)),
                 "reading a noaccess secure buffer did not fault (status %d)", status);
}

/* Keys (up to 112 bytes) are slots of locked chunks: no page protection of
 * their own, said as such; a region one byte longer is its own allocation. */
static void test_small_regions_are_slots(void)
{
    uint8_t *key = sr_secure_alloc(32), *big = sr_secure_alloc(113);
    SR_CHECK(key && big && sr_secure_is_slot(key) && !sr_secure_is_slot(big));
    SR_CHECK_ERR(sr_secure_protect_noaccess(key), SR_ERR_INVALID_ARG);
    SR_CHECK_OK(sr_secure_protect_readonly(big));
    SR_CHECK_OK(sr_secure_protect_readwrite(big));
    sr_secure_free(key), sr_secure_free(big);
}

/* A freed slot is wiped: the next region given that slot reads zeros. */
static void test_freed_slot_is_wiped(void)
{
    uint8_t *a = sr_secure_alloc(48);
    SR_CHECK(a != NULL);
    if (!a) return;
    memset(a, 0xA5, 48);
    sr_secure_free(a);
    uint8_t *b = sr_secure_alloc(48); /* the lowest free slot: the one just freed */
    static const uint8_t zero[48];
    SR_CHECK(b == a);
    if (b) SR_CHECK_MEM(b, zero, 48);
    sr_secure_free(b);
}

/* More small regions than one chunk holds: each chunk is locked memory. */
static void test_slots_are_locked(void)
{
#ifdef SR_UNDER_ASAN
    printf("     (skipped under AddressSanitizer: mlock is intercepted)\n");
    return;
#endif
    enum { N = 300 }; /* more than two chunks of 128 slots */
    static uint8_t *keys[N];
    long before = locked_kib();
    for (int i = 0; i < N; i++) SR_CHECK((keys[i] = sr_secure_alloc(32)) != NULL);
    long after = locked_kib();
    SR_CHECK_MSG(after >= before + 16, "VmLck went from %ld to %ld kB over %d keys", before, after, N);
    for (int i = 0; i < N; i++) SR_CHECK(keys[i] && sr_secure_is_slot(keys[i]));
    for (int i = 0; i < N; i++) sr_secure_free(keys[i]);
}

/* Writing one byte past a key's region is caught when it is freed. */
static void test_slot_overrun_aborts(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        uint8_t *p = sr_secure_alloc(32);
        volatile uint8_t *past = p + 32;
        *past ^= 0x5A;
        sr_secure_free(p);
        _exit(0); /* reached only if the overrun went unnoticed */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    SR_CHECK_MSG(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "overrunning a key's slot went unnoticed");
}

/* Threads taking and giving back slots at once: each region stays its own. */
static void *slot_churn(void *arg)
{
    uint8_t mark = (uint8_t)(uintptr_t)arg, *held[16];
    size_t len[16];
    for (int i = 0; i < 16; i++) len[i] = 1 + (size_t)(i * 7) % 112; /* 1 to 106 bytes */
    for (int round = 0; round < 2000; round++) {
        for (int i = 0; i < 16; i++)
            if ((held[i] = sr_secure_alloc(len[i]))) memset(held[i], mark, len[i]);
        for (int i = 0; i < 16; i++) {
            for (size_t k = 0; held[i] && k < len[i]; k++)
                if (held[i][k] != mark) return (void *)1;
            sr_secure_free(held[i]);
        }
    }
    return NULL;
}

/* A fork while another thread takes and frees slots: the child can still
 * allocate (a child that forked with the slots' lock held would hang; the
 * alarm ends it). */
static _Atomic int churning;
static void *churn_until_told(void *arg)
{
    (void)arg;
    while (churning) sr_secure_free(sr_secure_alloc(32));
    return NULL;
}

static void test_fork_while_slots_are_busy(void)
{
    pthread_t t;
    churning = 1;
    SR_CHECK(pthread_create(&t, NULL, churn_until_told, NULL) == 0);
    int hung = 0;
    for (int i = 0; i < 100; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(1);
            sr_secure_free(sr_secure_alloc(32));
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        hung += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    churning = 0;
    pthread_join(t, NULL);
    SR_CHECK_MSG(hung == 0, "%d of 100 children forked beside a busy thread could not allocate", hung);
}

static void test_slots_from_many_threads(void)
{
    pthread_t t[8];
    for (int i = 0; i < 8; i++) SR_CHECK(pthread_create(&t[i], NULL, slot_churn, (void *)(uintptr_t)(i + 1)) == 0);
    for (int i = 0; i < 8; i++) {
        void *bad = NULL;
        pthread_join(t[i], &bad);
        SR_CHECK_MSG(bad == NULL, "thread %d found another thread's bytes in its region", i);
    }
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
    SR_RUN(test_small_regions_are_slots);
    SR_RUN(test_freed_slot_is_wiped);
    SR_RUN(test_slots_are_locked);
    SR_RUN(test_slot_overrun_aborts);
    SR_RUN(test_slots_from_many_threads);
    SR_RUN(test_fork_while_slots_are_busy);
    SR_RUN(test_equal_and_random);
    SR_RUN(test_hex);
    SR_RUN(test_harden);
    return sr_test_finish();
}
