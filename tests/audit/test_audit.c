/*
 * The audit log: a clean log verifies; each kind of tampering (altered,
 * deleted, inserted, reordered records; a cut tail; a chain recomputed and
 * re-signed with another key) is detected with the right reason and place;
 * 8 threads and 4 processes appending at once lose nothing and keep one
 * valid chain; a writer killed with SIGKILL loses no acknowledged record; a
 * torn last line is cut on reopen and recorded; rotation keeps the chain
 * across files and a missing file is detected; a full disk is an error.
 */
#include "audit_internal.h"
#include "sr_test.h"

#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char sign_key[512], pub_key[512];
static uint8_t pk[SR_AUDIT_SIGN_PUBLIC_BYTES];

static sr_audit_writer_t *open_log(const char *path, uint64_t every, uint64_t rotate)
{
    sr_audit_writer_t *w = NULL;
    sr_audit_options_t o = {.path = path, .signing_key = sign_key, .host = "testhost", .checkpoint_every = every,
                            .rotate_bytes = rotate};
    SR_CHECK_OK(sr_audit_open(&o, &w));
    return w;
}

static void append_n(sr_audit_writer_t *w, const char *subject, int n)
{
    for (int i = 0; i < n; i++) {
        char detail[64];
        snprintf(detail, sizeof detail, "%s #%d", subject, i);
        SR_CHECK_OK(sr_audit_append(w, &(sr_event_t){.component = "tde", .event = "tablespace.open",
                                                    .subject = subject, .object = "shop.db", .outcome = "success",
                                                    .source = "10.1.2.3", .detail = detail}));
    }
}

static const char *make_log(const char *name, int records)
{
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s", sr_test_path(name));
    sr_audit_writer_t *w = open_log(p, 10, 0);
    append_n(w, "alice", records);
    SR_CHECK_OK(sr_audit_close(w));
    return p;
}

static sr_err_t verify1(const char *path, sr_audit_verify_result_t *r)
{
    const char *files[] = {path};
    return sr_audit_verify_files(files, 1, pk, r);
}

/* Lines of a file, editable, written back. */
typedef struct lines {
    char **l;
    int n;
} lines_t;

static void lines_read(const char *path, lines_t *ls)
{
    size_t len = 0;
    uint8_t *bytes = sr_test_read_file(path, &len);
    char *text = calloc(1, len + 1), *save = NULL; /* NUL-terminated for strtok_r */
    if (bytes) memcpy(text, bytes, len);
    free(bytes);
    ls->n = 0;
    ls->l = calloc(len / 16 + 16, sizeof *ls->l); /* room for one more (inserted) line */
    for (char *t = strtok_r(text, "\n", &save); t; t = strtok_r(NULL, "\n", &save))
        ls->l[ls->n++] = strdup(t);
    free(text);
}

static void lines_write(const char *path, lines_t *ls)
{
    FILE *f = fopen(path, "w");
    for (int i = 0; i < ls->n; i++) fprintf(f, "%s\n", ls->l[i]);
    fclose(f);
    for (int i = 0; i < ls->n; i++) free(ls->l[i]);
    free(ls->l);
}

static void expect_failure(const char *path, sr_err_t want, const char *reason_part, const char *where_part)
{
    sr_audit_verify_result_t r;
    SR_CHECK_ERR(verify1(path, &r), want);
    SR_CHECK_MSG(strstr(r.reason, reason_part) != NULL, "reason: %s", r.reason);
    SR_CHECK_MSG(strstr(r.where, where_part) != NULL, "where: %s", r.where);
}

static void test_clean_log_verifies(void)
{
    const char *p = make_log("clean.log", 25);
    sr_audit_verify_result_t r;
    SR_CHECK_OK(verify1(p, &r));
    SR_CHECK_EQ_INT(r.records, 1 + 25 + 3); /* started, records, checkpoints every 10 + close */
    SR_CHECK(r.checkpoints == 3 && r.unsealed == 0 && r.ends_sealed && r.signatures_checked);
}

static void test_each_tampering_detected(void)
{
    lines_t ls;
    const char *p = make_log("alter.log", 20);
    lines_read(p, &ls);
    char *at = strstr(ls.l[5], "alice #4");
    at[0] = 'm'; /* altered detail */
    lines_write(p, &ls);
    expect_failure(p, SR_ERR_AUDIT_CHAIN, "record altered", "alter.log:6");

    p = make_log("delete.log", 20);
    lines_read(p, &ls);
    free(ls.l[7]);
    memmove(&ls.l[7], &ls.l[8], (size_t)(ls.n - 8) * sizeof ls.l[0]);
    ls.n--;
    lines_write(p, &ls);
    expect_failure(p, SR_ERR_AUDIT_SEQUENCE, "deleted", "delete.log:8 (seq 9)");

    p = make_log("insert.log", 20);
    lines_read(p, &ls);
    memmove(&ls.l[5], &ls.l[4], (size_t)(ls.n - 4) * sizeof ls.l[0]);
    ls.l[4] = strdup(ls.l[2]); /* an older record inserted again */
    ls.n++;
    lines_write(p, &ls);
    expect_failure(p, SR_ERR_AUDIT_SEQUENCE, "inserted or reordered", "insert.log:5 (seq 3)");

    p = make_log("reorder.log", 20);
    lines_read(p, &ls);
    char *t = ls.l[3];
    ls.l[3] = ls.l[4], ls.l[4] = t;
    lines_write(p, &ls);
    expect_failure(p, SR_ERR_AUDIT_SEQUENCE, "seq 5 follows seq 3", "reorder.log:4");

    p = make_log("first.log", 20); /* the head deleted */
    lines_read(p, &ls);
    free(ls.l[0]);
    memmove(&ls.l[0], &ls.l[1], (size_t)(ls.n - 1) * sizeof ls.l[0]);
    ls.n--;
    lines_write(p, &ls);
    expect_failure(p, SR_ERR_AUDIT_SEQUENCE, "does not start at seq 1", "first.log:1");
}

static void test_cut_tail_is_visible(void)
{
    const char *p = make_log("cut.log", 25); /* checkpoints at 12, 24, and the closing one */
    lines_t ls;
    lines_read(p, &ls);
    int keep = ls.n - 3;
    for (int i = keep; i < ls.n; i++) free(ls.l[i]);
    ls.n = keep; /* the closing checkpoint and two records cut */
    lines_write(p, &ls);
    sr_audit_verify_result_t r;
    SR_CHECK_OK(verify1(p, &r)); /* the chain itself holds... */
    SR_CHECK(!r.ends_sealed);    /* ...but it does not end with a closing checkpoint */
    SR_CHECK(r.unsealed > 0);
    /* a reviewer who saw seq 29 before proves the cut */
    char cmd[2048], out[2048];
    snprintf(cmd, sizeof cmd, "%s verify --key %s --min-seq 29 %s", sr_test_build_path("audit/tde-audit"), pub_key, p);
    FILE *pp = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof out - 1, pp);
    out[n] = '\0';
    SR_CHECK_EQ_INT(WEXITSTATUS(pclose(pp)), 1);
    SR_CHECK_MSG(strstr(out, "cut from the tail") != NULL, "%s", out);
}

/* The attacker rewrites a record and recomputes every hash after it; the
 * checkpoints must then be re-signed, with a key that is not the writer's. */
static void test_recomputed_and_resigned_chain_is_detected(void)
{
    const char *p = make_log("forged.log", 20);
    char evil_prefix[512], evil_sign[600];
    snprintf(evil_prefix, sizeof evil_prefix, "%s", sr_test_path("evil"));
    SR_CHECK_OK(sr_audit_keygen(evil_prefix));
    snprintf(evil_sign, sizeof evil_sign, "%s.sign", evil_prefix);
    uint8_t *esk = malloc(64), epk[32];
    {
        size_t len = 0;
        char *text = (char *)sr_test_read_file(evil_sign, &len), *hex = strchr(text, '\n') + 1;
        hex[128] = '\0';
        SR_CHECK_OK(sr_hex_decode(hex, esk, 64));
        free(text);
        memcpy(epk, esk + 32, 32);
    }
    char evil_id[17];
    sr_audit_key_id(epk, evil_id);
    lines_t ls;
    lines_read(p, &ls);
    uint8_t prev[32] = {0};
    FILE *f = fopen(p, "w");
    for (int i = 0; i < ls.n; i++) {
        sr_audit_record_t r;
        sr_err_t prc = sr_audit_record_parse(ls.l[i], strlen(ls.l[i]), &r);
        SR_CHECK_MSG(prc == SR_OK, "line %d: %s: [%s]", i + 1, sr_err_detail(), ls.l[i]);
        char detail[512], line[SR_AUDIT_LINE_MAX + 512];
        snprintf(detail, sizeof detail, "%s", r.detail);
        if (strcmp(r.detail, "alice #3") == 0) snprintf(detail, sizeof detail, "mallory #3");
        if (strcmp(r.event, AUDIT_CHECKPOINT_EVENT) == 0) {
            uint8_t msg[48], sig[64];
            char sig_hex[129];
            audit_sig_message(r.seq - 1, prev, msg);
            crypto_sign_detached(sig, NULL, msg, sizeof msg, esk);
            sr_hex_encode(sig, 64, sig_hex);
            snprintf(detail, sizeof detail, "key=%s sealed=%llu sig=%s", evil_id, (unsigned long long)(r.seq - 1),
                     sig_hex);
        }
        sr_event_t e = {.component = r.component, .event = r.event, .subject = r.subject[0] ? r.subject : NULL,
                        .object = r.object[0] ? r.object : NULL, .outcome = r.outcome,
                        .source = r.source[0] ? r.source : NULL, .detail = detail};
        uint8_t hash[32];
        size_t n = audit_format(line, sizeof line, r.seq, r.ts_us, r.host, &e, prev, NULL, hash);
        fwrite(line, 1, n, f);
        memcpy(prev, hash, 32);
        free(ls.l[i]);
    }
    free(ls.l);
    fclose(f);
    free(esk);
    sr_audit_verify_result_t r;
    const char *files[] = {p};
    SR_CHECK_OK(sr_audit_verify_files(files, 1, NULL, &r)); /* without the key the forgery is a valid chain */
    expect_failure(p, SR_ERR_AUDIT_SIGNATURE, "not by the verify key", "forged.log");
}

/* Appends to path a record that continues its chain correctly (right seq,
 * right prev, valid hash) but that no holder of the signing key wrote. */
static void append_forgery(const char *path, const char *detail)
{
    lines_t ls;
    lines_read(path, &ls);
    sr_audit_record_t last;
    SR_CHECK(ls.n > 0 && sr_audit_record_parse(ls.l[ls.n - 1], strlen(ls.l[ls.n - 1]), &last) == SR_OK);
    sr_event_t e = {.component = "tde", .event = "tablespace.open", .subject = "mallory", .outcome = "success",
                    .detail = detail};
    char line[SR_AUDIT_LINE_MAX + 512];
    uint8_t hash[32];
    size_t n = audit_format(line, sizeof line, last.seq + 1, sr_time_now_us(), "testhost", &e, last.hash, NULL, hash);
    FILE *f = fopen(path, "a");
    SR_CHECK(f && fwrite(line, 1, n, f) == n);
    fclose(f);
    for (int i = 0; i < ls.n; i++) free(ls.l[i]);
    free(ls.l);
}

static int count_in_file(const char *path, const char *needle)
{
    lines_t ls;
    lines_read(path, &ls);
    int k = 0;
    for (int i = 0; i < ls.n; i++) k += strstr(ls.l[i], needle) != NULL, free(ls.l[i]);
    free(ls.l);
    return k;
}

static void test_forged_record_is_never_sealed(void)
{
    char path[512], cmd[1024], out[4096];
    snprintf(path, sizeof path, "%s", sr_test_path("forged-live.log"));
    /* 1. while the writer runs: someone appends a well-formed record */
    sr_audit_writer_t *w = open_log(path, 1000, 0);
    append_n(w, "alice", 3);
    append_forgery(path, "FORGED-1 mallory was here");
    append_n(w, "bob", 2); /* the writer finds the line it did not write */
    SR_CHECK_OK(sr_audit_close(w));
    SR_CHECK_EQ_INT(count_in_file(path, "FORGED-1"), 0);
    SR_CHECK_EQ_INT(count_in_file(path, "\"event\":\"audit.tamper_suspected\""), 1);
    SR_CHECK_EQ_INT(count_in_file(path, "\"subject\":\"bob\""), 2);
    snprintf(cmd, sizeof cmd, "cat %s.suspect-* | grep -c FORGED-1", path);
    SR_CHECK_MSG(sr_test_command(out, sizeof out, cmd) == 0, "the forged line is not kept aside: %s", out);
    sr_audit_verify_result_t r;
    SR_CHECK_ERR(verify1(path, &r), SR_ERR_AUDIT_CHAIN); /* the chain is whole, but verify reports the attempt */
    SR_CHECK_MSG(strstr(r.reason, "audit.tamper_suspected") != NULL, "%s", r.reason);
    SR_CHECK(r.unsealed == 0 && r.checkpoints >= 1);

    /* 2. a log cut at its final checkpoint, forged records appended: found at open */
    char path2[512];
    snprintf(path2, sizeof path2, "%s", make_log("forged-open.log", 5));
    append_forgery(path2, "FORGED-2");
    append_forgery(path2, "FORGED-3");
    w = open_log(path2, 1000, 0);
    append_n(w, "carol", 1);
    SR_CHECK_OK(sr_audit_close(w));
    SR_CHECK_EQ_INT(count_in_file(path2, "FORGED-"), 0);
    SR_CHECK_EQ_INT(count_in_file(path2, "\"event\":\"audit.tamper_suspected\""), 1);
    SR_CHECK_EQ_INT(count_in_file(path2, "not written by a holder of the signing key"), 1);
    SR_CHECK_ERR(verify1(path2, &r), SR_ERR_AUDIT_CHAIN);

    /* 3. a crashed writer's own unsealed tail: proven by its tags, sealed after restart */
    char path3[512];
    snprintf(path3, sizeof path3, "%s", sr_test_path("crashed.log"));
    pid_t pid = fork();
    if (pid == 0) {
        sr_audit_writer_t *cw = open_log(path3, 1000, 0);
        append_n(cw, "dave", 7);
        _exit(0); /* no close: no final checkpoint */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    w = open_log(path3, 1000, 0);
    SR_CHECK_OK(sr_audit_close(w));
    SR_CHECK_EQ_INT(count_in_file(path3, "\"subject\":\"dave\""), 7);
    SR_CHECK_EQ_INT(count_in_file(path3, "tamper_suspected"), 0);
    SR_CHECK_OK(verify1(path3, &r));
    SR_CHECK(r.unsealed == 0);
}

static void *thread_writer(void *arg)
{
    sr_audit_writer_t *w = ((void **)arg)[0];
    append_n(w, ((void **)arg)[1], 1500);
    return NULL;
}

static void count_subjects(const char *path, const char *const *subjects, int n, int per)
{
    lines_t ls;
    lines_read(path, &ls);
    int *seen = calloc((size_t)n * per, sizeof *seen);
    for (int i = 0; i < ls.n; i++) {
        sr_audit_record_t r;
        if (sr_audit_record_parse(ls.l[i], strlen(ls.l[i]), &r) != SR_OK) continue;
        for (int s = 0; s < n; s++) {
            size_t len = strlen(subjects[s]);
            if (strcmp(r.subject, subjects[s]) == 0 && strncmp(r.detail, subjects[s], len) == 0)
                seen[s * per + atoi(r.detail + len + 2)]++;
        }
    }
    int missing = 0, duplicated = 0;
    for (int i = 0; i < n * per; i++) missing += seen[i] == 0, duplicated += seen[i] > 1;
    SR_CHECK_EQ_INT(missing, 0);
    SR_CHECK_EQ_INT(duplicated, 0);
    free(seen);
    for (int i = 0; i < ls.n; i++) free(ls.l[i]);
    free(ls.l);
}

static void test_threads_and_processes_lose_nothing(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", sr_test_path("busy.log"));
    sr_audit_writer_t *w = open_log(path, 100, 0);
    static const char *names[] = {"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "p0", "p1", "p2", "p3"};
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        if ((kids[k] = fork()) == 0) {
            sr_audit_writer_t *cw = open_log(path, 100, 0);
            append_n(cw, names[8 + k], 1500);
            _exit(sr_audit_close(cw) == SR_OK && sr_test_failures_in_current == 0 ? 0 : 1);
        }
    }
    pthread_t th[8];
    void *args[8][2];
    for (int i = 0; i < 8; i++) args[i][0] = w, args[i][1] = (void *)names[i], pthread_create(&th[i], NULL, thread_writer, args[i]);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    for (int k = 0; k < 4; k++) {
        int st = 0;
        waitpid(kids[k], &st, 0);
        SR_CHECK_EQ_INT(WEXITSTATUS(st), 0);
    }
    SR_CHECK_OK(sr_audit_close(w));
    sr_audit_verify_result_t r;
    SR_CHECK_OK(verify1(path, &r));
    SR_CHECK_MSG(strlen(r.reason) == 0, "%s: %s", r.where, r.reason);
    count_subjects(path, names, 12, 1500);
    SR_CHECK(r.records >= 12 * 1500 + 1);
}

static void test_sigkill_loses_no_acknowledged_record(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", sr_test_path("killed.log"));
    for (int round = 0; round < 5; round++) {
        int fds[2];
        SR_CHECK(pipe(fds) == 0);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            sr_audit_writer_t *cw = open_log(path, 50, 0);
            for (int i = 0;; i++) {
                char subject[32];
                snprintf(subject, sizeof subject, "k%d-%d", round, i);
                append_n(cw, subject, 1);
                if (write(fds[1], &i, sizeof i) != sizeof i) _exit(1);
            }
        }
        close(fds[1]);
        /* killed after a number of acknowledged records, not after a sleep:
         * under load a sleep could end before the first checkpoint (every
         * 50), and verify would rightly call the log unsealed */
        int last = -1, v, kill_after = 60 + round * 37;
        while (last < kill_after && read(fds[0], &v, sizeof v) == sizeof v) last = v;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        while (read(fds[0], &v, sizeof v) == sizeof v) last = v;
        close(fds[0]);
        SR_CHECK(last >= 0);
        /* reopen: the chain continues; every acknowledged record is there */
        sr_audit_writer_t *w = open_log(path, 50, 0);
        SR_CHECK_OK(sr_audit_close(w));
        sr_audit_verify_result_t r;
        SR_CHECK_OK(verify1(path, &r));
        char want[64];
        snprintf(want, sizeof want, "\"subject\":\"k%d-%d\"", round, last);
        SR_CHECK_MSG(sr_test_file_contains(path, want, strlen(want)), "acknowledged record %s missing", want);
    }
}

/* Runs tde-audit with the arguments; stdout and stderr into out; exit status. */
static int tde_audit(char *out, size_t cap, const char *args)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "%s %s", sr_test_build_path("audit/tde-audit"), args);
    return sr_test_command(out, cap, cmd);
}

/* tde-audit with the arguments; only its stdout (or only its stderr) in out. */
static int tde_audit_stream(char *out, size_t cap, int want_stderr, const char *args)
{
    char cmd[20000];
    snprintf(cmd, sizeof cmd, want_stderr ? "%s %s 2>&1 >/dev/null; exit $?" : "%s %s 2>/dev/null; exit $?",
             sr_test_build_path("audit/tde-audit"), args);
    return sr_test_command(out, cap, cmd);
}

/* The CLI convention (code health issue), command by command: --help on
 * stdout with exit 0; an unknown option and an option of another command
 * are usage errors (2) on stderr naming the command; a missing file or key
 * is "could not" (3), never 1; a success is 0, --json a JSON object. */
static void test_cli_convention(void)
{
    const char *log = make_log("cli.log", 12);
    char dir[512], args[4096], out[16384];
    snprintf(dir, sizeof dir, "%s", sr_test_path("cli"));
    SR_CHECK(mkdir(dir, 0700) == 0);
    static const char *commands[] = {"keygen", "verify", "search", "report", "append",
                                     "serve",  "collect", "register", "forward"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const char *c = commands[i];
        char want[64];
        snprintf(args, sizeof args, "%s --help", c);
        SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 0);
        snprintf(want, sizeof want, "usage: tde-audit %s", c);
        SR_CHECK_MSG(strstr(out, want) != NULL, "%s --help: %s", c, out);
        snprintf(args, sizeof args, "%s --no-such-option", c);
        SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 1, args), 2);
        snprintf(want, sizeof want, "tde-audit: %s: ", c);
        SR_CHECK_MSG(strstr(out, want) != NULL, "%s --no-such-option: %s", c, out);
        snprintf(args, sizeof args, "%s %s x", c, strcmp(c, "forward") == 0 ? "--json" : "--once");
        SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 1, args), 2);
        SR_CHECK_MSG(strstr(out, "does not apply") != NULL, "%s: %s", c, out);
    }
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, "--help"), 0);
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, "--version"), 0);
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 1, "frobnicate"), 2);
    /* could not check: 3 */
    char cannot[7][2048];
    snprintf(cannot[0], sizeof cannot[0], "verify %s/missing.log", dir);
    snprintf(cannot[1], sizeof cannot[1], "search %s/missing.log", dir);
    snprintf(cannot[2], sizeof cannot[2], "report %s/missing.log", dir);
    snprintf(cannot[3], sizeof cannot[3], "keygen --out %s/no/such/dir/k", dir);
    snprintf(cannot[4], sizeof cannot[4], "verify --key %s/missing.pub %s", dir, log);
    snprintf(cannot[5], sizeof cannot[5], "register --dir %s --cert /nonexistent.pem --key /nonexistent.pub", dir);
    snprintf(cannot[6], sizeof cannot[6], "append --log %s/no/such/dir/a.log --sign-key /nonexistent.sign "
             "--component c --event e", dir);
    for (size_t i = 0; i < sizeof cannot / sizeof cannot[0]; i++) {
        SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 1, cannot[i]), 3);
        SR_CHECK_MSG(strstr(out, "tde-audit: ") != NULL, "%s: %s", cannot[i], out);
    }
    /* success, and --json; the key options' current spellings */
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s/cli-key", dir);
    snprintf(args, sizeof args, "keygen %s", prefix); /* a path, as tdectl keygen */
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 0);
    snprintf(args, sizeof args, "verify --verify-key %s.pub %s", prefix, log); /* another key: its signatures fail */
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 1);
    snprintf(args, sizeof args, "verify --json --verify-key %s %s", pub_key, log);
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 0);
    SR_CHECK_MSG(strstr(out, "{\"result\": \"pass\"") && strstr(out, "\"records\": 15") &&
                 strstr(out, "\"signatures_checked\": true"), "%s", out);
    snprintf(args, sizeof args, "report --json %s", log);
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 0);
    SR_CHECK_MSG(strstr(out, "\"chain\": {\"intact\": true") &&
                 strstr(out, "{\"component\": \"tde\", \"event\": \"tablespace.open\", \"outcome\": \"success\", \"count\": 12}"),
                 "%s", out);
    snprintf(args, sizeof args, "search --event tablespace.open %s", log);
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 0);
    SR_CHECK_MSG(strncmp(out, "SEQ ", 4) == 0, "search is a table unless --format says otherwise: %s", out);
    /* a tampered log: 1, and --json says fail */
    char bad[600];
    snprintf(bad, sizeof bad, "%s.bad", log);
    size_t len = 0;
    uint8_t *bytes = sr_test_read_file(log, &len);
    char *at = bytes ? memmem(bytes, len, "alice #3", 8) : NULL;
    SR_CHECK(at != NULL);
    if (at) at[7] = '9';
    SR_CHECK(sr_test_write_file(bad, bytes, len) == 0);
    free(bytes);
    snprintf(args, sizeof args, "verify --json --key %s %s", pub_key, bad);
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 1);
    SR_CHECK_MSG(strstr(out, "{\"result\": \"fail\"") && strstr(out, "record altered"), "%s", out);
}

/* The report's rows name who a record is about: the principal a component
 * claimed (the account logging in, the KMIP client) with the process that
 * sent it, as the sealer wrote them; the process alone without its pid (two
 * backends' logins of one account from one address are one row). */
static void test_report_names_the_principal_and_its_process(void)
{
    const char *path = sr_test_path("who.log");
    sr_audit_writer_t *w = open_log(path, 10, 0);
    static const char pg[] = "uid=101 gid=104 pid=%d exe=/usr/lib/postgresql/15/bin/postgres";
    char subject[3][128];
    for (int i = 0; i < 3; i++) snprintf(subject[i], sizeof subject[i], pg, 4000 + i);
    sr_event_t login = {.component = "pam", .event = "login", .subject = subject[0], .outcome = "success",
                        .source = "10.1.2.3", .detail = "claimed subject: alice; allow by acl.conf:1"};
    SR_CHECK_OK(sr_audit_append(w, &login));
    login.subject = subject[1];
    SR_CHECK_OK(sr_audit_append(w, &login));
    login.subject = subject[2], login.outcome = "denied", login.detail = "claimed subject: mallory";
    SR_CHECK_OK(sr_audit_append(w, &login));
    sr_event_t open = {.component = "tde", .event = "tablespace.open", .subject = "uid=7 gid=7 pid=12 exe=/usr/bin/x",
                       .object = "db", .outcome = "success", .detail = "claimed subject: uid=7 pid=12"};
    SR_CHECK_OK(sr_audit_append(w, &open));
    SR_CHECK_OK(sr_audit_close(w));
    char args[1024], out[16384];
    snprintf(args, sizeof args, "report --json %s", path);
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 0);
    SR_CHECK_CONTAINS(out, "{\"account\": \"alice (uid=101 /usr/lib/postgresql/15/bin/postgres)\", "
                           "\"source\": \"10.1.2.3\", \"outcome\": \"success\", \"count\": 2}");
    SR_CHECK_CONTAINS(out, "{\"source\": \"10.1.2.3\", \"event\": \"login\", "
                           "\"subject\": \"mallory (uid=101 /usr/lib/postgresql/15/bin/postgres)\", \"count\": 1}");
    SR_CHECK_CONTAINS(out, "{\"operation\": \"tablespace.open\", \"principal\": \"uid=7 /usr/bin/x\", ");
    /* search --subject finds a claimed principal too, as well as the sender */
    static const struct { const char *subject; int records; } finds[] = {
        {"alice", 2}, {"mall*", 1}, {"uid=101*", 3}, {"uid=7 pid=12", 1}, {"bob", 0}};
    for (size_t i = 0; i < sizeof finds / sizeof finds[0]; i++) {
        snprintf(args, sizeof args, "search --format csv --subject '%s' %s | wc -l", finds[i].subject, path);
        SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 0);
        SR_CHECK_MSG(atoi(out) == 1 + finds[i].records, "--subject %s: %d lines", finds[i].subject, atoi(out));
    }
}

/* The event vocabulary in docs/audit.md is the code's (tde-audit events
 * prints the code's table), and an event outside it is refused. */
static void test_event_vocabulary_documented(void)
{
    static char table[65536];
    size_t doc_len = 0;
    char *doc = (char *)sr_test_read_file(sr_test_source_path("docs/audit.md"), &doc_len);
    SR_CHECK(doc != NULL);
    SR_CHECK_EQ_INT(tde_audit_stream(table, sizeof table, 0, "events"), 0);
    int rows = 0;
    for (char *line = strtok(table, "\n"); line && doc; line = strtok(NULL, "\n"), rows++)
        SR_CHECK_MSG(strstr(doc, line) != NULL, "docs/audit.md lacks the vocabulary row: %s", line);
    SR_CHECK_MSG(rows > 30, "only %d rows in the vocabulary", rows);
    free(doc);
    SR_CHECK(sr_event_lookup("kms", "kmip.get") != NULL && sr_event_lookup("kms", "kmip.") == NULL);
    SR_CHECK_ERR(sr_event_emit(&(sr_event_t){.component = "tde", .event = "tablespace.opened", .outcome = "success"}),
                 SR_ERR_INVALID_ARG);
    SR_CHECK_CONTAINS(sr_err_detail(), "not in the event vocabulary");
}

/* --source: IPv4 and IPv6 prefixes and "local" select the right records; an
 * address or prefix that cannot be is a usage error, not "nothing found"
 * (audit hardening issue). */
/* The table shows a kernel subject as uid and pid, and marks what it cuts. */
static void test_search_table_cells(void)
{
    const char *path = sr_test_path("table.log");
    sr_audit_writer_t *w = open_log(path, 1000, 0);
    char detail[200];
    memset(detail, 'd', sizeof detail - 1), detail[sizeof detail - 1] = '\0';
    SR_CHECK_OK(sr_audit_append(w, &(sr_event_t){.component = "tde", .event = "tablespace.open",
                                                .subject = "uid=1000 gid=1000 pid=4242 exe=/usr/bin/sqlite3",
                                                .object = "shop.db", .outcome = "success", .source = "local",
                                                .detail = detail}));
    SR_CHECK_OK(sr_audit_close(w));
    char args[700], out[8192];
    snprintf(args, sizeof args, "search --event tablespace.open %s", path);
    SR_CHECK_EQ_INT(tde_audit_stream(out, sizeof out, 0, args), 0);
    SR_CHECK_CONTAINS(out, " uid=1000 pid=4242 ");
    SR_CHECK_MSG(strstr(out, "ddd~\n") && !strstr(out, "exe="), "%s", out);
}

static void test_search_source_filter(void)
{
    char path[512], args[1024], out[65536];
    snprintf(path, sizeof path, "%s", sr_test_path("sources.log"));
    sr_audit_writer_t *w = open_log(path, 10, 0);
    static const char *sources[] = {"10.1.2.3", "10.9.0.1", "192.168.7.7", "2001:db8::5", "2001:dead::1", "local"};
    for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++)
        SR_CHECK_OK(sr_audit_append(w, &(sr_event_t){.component = "pam", .event = "login", .subject = sources[i],
                                                    .object = "pg", .outcome = "success", .source = sources[i]}));
    SR_CHECK_OK(sr_audit_close(w));
    static const struct { const char *filter; int matches; } cases[] = {
        {"10.0.0.0/8", 2}, {"10.1.2.3", 1}, {"10.1.0.0/16", 1}, {"0.0.0.0/0", 3}, {"2001:db8::/32", 1},
        {"2001::/16", 2}, {"local", 1}, {"192.168.7.7/32", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "search --event login --format csv --source %s %s", cases[i].filter, path);
        SR_CHECK_EQ_INT(tde_audit(out, sizeof out, args), 0);
        int lines = 0;
        for (char *c = out; *c; c++) lines += *c == '\n';
        SR_CHECK_MSG(lines - 1 == cases[i].matches, "--source %s: %d records, want %d", cases[i].filter, lines - 1,
                     cases[i].matches);
    }
    static const char *bad[] = {"10.0.0.0/99", "300.1.1.1", "2001:db8::/129", "10.0.0.0/abc", "nowhere"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "search --source %s %s", bad[i], path);
        SR_CHECK_EQ_INT(tde_audit(out, sizeof out, args), 2);
        SR_CHECK_CONTAINS(out, "--source");
    }
}

/* A log cut right after a checkpoint verifies, even with --strict (verify
 * says so and what it proved); compared with a collector's copy, the cut
 * shows: the seq range the log lacks (audit hardening issue). */
static void test_cut_at_checkpoint_caught_against_copy(void)
{
    const char *log = make_log("cut-at-ckpt.log", 35); /* checkpoints every 10 */
    char copy[600], other_copy[600], args[2048], out[16384];
    snprintf(copy, sizeof copy, "%s", sr_test_path("collector-copy.log"));
    size_t len = 0;
    uint8_t *all = sr_test_read_file(log, &len);
    SR_CHECK(all && sr_test_write_file(copy, all, len) == 0);
    /* cut the log right after its second checkpoint */
    size_t cut = 0;
    int seen = 0;
    for (size_t i = 0; all && i < len && !cut; i++)
        if (all[i] == '\n') {
            size_t start = i;
            while (start > 0 && all[start - 1] != '\n') start--;
            if (memmem(all + start, i - start, "\"event\":\"audit.checkpoint\"", 26) && ++seen == 2) cut = i + 1;
        }
    SR_CHECK(cut > 0 && cut < len);
    SR_CHECK(sr_test_write_file(log, all, cut) == 0);
    snprintf(args, sizeof args, "verify --key %s --strict %s", pub_key, log);
    SR_CHECK_EQ_INT(tde_audit(out, sizeof out, args), 0); /* the limit, stated */
    SR_CHECK_CONTAINS(out, "A cut right after a checkpoint leaves no trace");
    snprintf(args, sizeof args, "verify --key %s --strict --against %s %s", pub_key, copy, log);
    SR_CHECK_EQ_INT(tde_audit(out, sizeof out, args), 1);
    SR_CHECK_CONTAINS(out, "the log lacks seq");
    snprintf(args, sizeof args, "verify --key %s --against %s %s", pub_key, log, copy); /* the other way round */
    SR_CHECK_EQ_INT(tde_audit(out, sizeof out, args), 0);
    SR_CHECK_CONTAINS(out, "lacks seq");
    /* a copy that is another log: they disagree where both have records */
    snprintf(other_copy, sizeof other_copy, "%s", make_log("another.log", 40));
    snprintf(args, sizeof args, "verify --key %s --against %s %s", pub_key, other_copy, log);
    SR_CHECK_EQ_INT(tde_audit(out, sizeof out, args), 1);
    SR_CHECK_CONTAINS(out, "differs between the log and the copy");
    free(all);
}

static void test_torn_tail_cut_and_recorded(void)
{
    const char *p = make_log("torn.log", 5);
    FILE *f = fopen(p, "a");
    fputs("{\"seq\":99,\"ts\":\"2026-", f); /* a crash in the middle of a write */
    fclose(f);
    sr_audit_verify_result_t r;
    SR_CHECK_ERR(verify1(p, &r), SR_ERR_TRUNCATED);
    sr_audit_writer_t *w = open_log(p, 10, 0);
    append_n(w, "bob", 2);
    SR_CHECK_OK(sr_audit_close(w));
    SR_CHECK_OK(verify1(p, &r));
    SR_CHECK(sr_test_file_contains(p, "audit.truncated", 15));
    SR_CHECK(sr_test_file_contains(p, "cut 21 bytes", 12));
}

static void test_rotation_keeps_one_chain(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", sr_test_path("rot/audit.log"));
    char dir[512];
    snprintf(dir, sizeof dir, "%s", sr_test_path("rot"));
    mkdir(dir, 0700);
    sr_audit_writer_t *w = open_log(path, 20, 4096);
    append_n(w, "carol", 200);
    SR_CHECK_OK(sr_audit_close(w));
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "ls %s/audit.log.* | sort > %s/list", dir, dir);
    SR_CHECK(system(cmd) == 0);
    lines_t files;
    snprintf(cmd, sizeof cmd, "%s/list", dir);
    lines_read(cmd, &files);
    SR_CHECK_MSG(files.n >= 5, "only %d rotated files", files.n);
    const char **all = calloc((size_t)files.n + 2, sizeof *all);
    for (int i = 0; i < files.n; i++) all[i] = files.l[i];
    all[files.n] = path;
    sr_audit_verify_result_t r;
    SR_CHECK_OK(sr_audit_verify_files(all, (size_t)files.n + 1, pk, &r));
    SR_CHECK(r.records > 200);
    /* a rotated file missing from the middle */
    memmove(&all[2], &all[3], (size_t)(files.n - 2) * sizeof all[0]);
    SR_CHECK_ERR(sr_audit_verify_files(all, (size_t)files.n, pk, &r), SR_ERR_AUDIT_SEQUENCE);
    SR_CHECK(strstr(r.reason, "deleted") != NULL);
    for (int i = 0; i < files.n; i++) free(files.l[i]);
    free(files.l), free(all);
}

static void test_full_disk_and_unwritable_log_are_errors(void)
{
    sr_audit_writer_t *w = NULL;
    sr_audit_options_t o = {.path = "/dev/full", .signing_key = sign_key};
    SR_CHECK_ERR(sr_audit_open(&o, &w), SR_ERR_DISK_FULL);
    o.path = "/proc/version/audit.log";
    SR_CHECK(sr_audit_open(&o, &w) != SR_OK);
    /* a signing key others can read is no longer the writer's alone: refused, saying what to run */
    o.path = sr_test_path("loose-key.log");
    SR_CHECK(chmod(sign_key, 0640) == 0);
    SR_CHECK_ERR(sr_audit_open(&o, &w), SR_ERR_PERMISSION);
    SR_CHECK_CONTAINS(sr_err_detail(), "signing key");
    SR_CHECK_CONTAINS(sr_err_detail(), "run: chmod 600");
    SR_CHECK(chmod(sign_key, 0600) == 0);
}

/* Every thread of a failed group commit gets the leader's reason, not a
 * generic text (code health issue). In a child process whose files may not
 * grow: 4 threads append at once; each error names the write failure. */
typedef struct failing_append { sr_audit_writer_t *w; sr_err_t rc; char detail[600]; } failing_append_t;

static void *append_one(void *arg)
{
    failing_append_t *a = arg;
    char big[4000];
    memset(big, 'x', sizeof big - 1), big[sizeof big - 1] = '\0';
    a->rc = sr_audit_append(a->w, &(sr_event_t){.component = "tde", .event = "tablespace.open", .outcome = "success",
                                               .detail = big});
    snprintf(a->detail, sizeof a->detail, "%s", sr_err_detail());
    return NULL;
}

static void test_group_commit_failure_keeps_its_reason(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", sr_test_path("grown.log"));
    sr_audit_writer_t *w = open_log(path, 1000, 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct stat st;
        if (stat(path, &st) != 0) _exit(10);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = {(rlim_t)st.st_size + 100, (rlim_t)st.st_size + 100};
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(11);
        failing_append_t a[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) a[i] = (failing_append_t){.w = w}, pthread_create(&th[i], NULL, append_one, &a[i]);
        int bad = 0;
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            if (a[i].rc == SR_OK || !strstr(a[i].detail, "File too large")) {
                fprintf(stderr, "thread %d: rc %d, detail \"%s\"\n", i, a[i].rc, a[i].detail);
                bad = 1;
            }
        }
        _exit(bad ? 12 : 0);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    SR_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    SR_CHECK_OK(sr_audit_close(w));
}

static void test_event_sink(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", sr_test_path("sink.log"));
    sr_audit_writer_t *w = open_log(path, 10, 0);
    sr_audit_install_as_event_sink(w);
    SR_CHECK_OK(sr_event_emit(&(sr_event_t){.component = "tde", .event = "page.auth_failed", .object = "x.db:7",
                                            .outcome = "failure", .detail = "tag mismatch"}));
    sr_audit_install_as_event_sink(NULL);
    SR_CHECK_OK(sr_audit_close(w));
    SR_CHECK(sr_test_file_contains(path, "page.auth_failed", 16));
}

/* Each durable record also reaches a syslog collector, in RFC 5424 form. */
/* The exact bytes a record's strings become (the chain hashes them, so they
 * never change): quotes and backslashes escaped, control characters, DEL and
 * bytes that are not UTF-8 as \u00XX, valid UTF-8 kept, a field over its
 * limit cut with " [cut]"; and the record parses back. */
static void test_record_strings_escaped_exactly(void)
{
    static char detail[5000];
    memset(detail, 'd', sizeof detail - 1);
    sr_event_t e = {.component = "tde", .event = "tablespace.open", .subject = "a\"b\\c\x01\x7f\xc3\xa9\xff end",
                    .object = "/db/\xe2\x82\xac.db", .outcome = "success",
                    .source = "\xed\xa0\x80\xe0\x80\xaf\xf5\x80\x80\x80", .detail = detail};
    uint8_t prev[32] = {0}, hash[32];
    char line[SR_AUDIT_LINE_MAX + 512];
    size_t n = audit_format(line, sizeof line, 7, 0, "host", &e, prev, NULL, hash);
    SR_CHECK(n > 0 && n < sizeof line);
    line[n] = '\0';
    SR_CHECK_CONTAINS(line, "\"subject\":\"a\\\"b\\\\c\\u0001\\u007f\xc3\xa9\\u00ff end\"");
    SR_CHECK_CONTAINS(line, "\"object\":\"/db/\xe2\x82\xac.db\"");
    /* a surrogate, an overlong '/', a lead byte past U+10FFFF: not UTF-8, escaped byte by byte */
    SR_CHECK_CONTAINS(line, "\"source\":\"\\u00ed\\u00a0\\u0080\\u00e0\\u0080\\u00af\\u00f5\\u0080\\u0080\\u0080\"");
    char cut[4200];
    memset(cut, 'd', 4096);
    snprintf(cut + 4096, sizeof cut - 4096, " [cut]\"");
    SR_CHECK_CONTAINS(line, cut);
    SR_CHECK_MSG(!strstr(line, "ddddd [cut]d"), "more than 4096 bytes of the detail kept");
    sr_audit_record_t r;
    SR_CHECK_OK(sr_audit_record_parse(line, n - 1, &r)); /* without its newline */
    SR_CHECK(strcmp(r.object, "/db/\xe2\x82\xac.db") == 0);
}

/* The worst a client can send — every field at its length, every byte one
 * that is escaped six bytes long — is still a record that fits its line,
 * is cut where it says so, and verifies: such an event once failed the
 * whole group commit it was in, every other client's event with it. */
static void test_record_of_escapes_fits_its_line(void)
{
    static char field[6][600], detail[16000];
    for (int i = 0; i < 6; i++) memset(field[i], i % 2 ? '\x01' : '"', sizeof field[i] - 1);
    memset(detail, '\xff', sizeof detail - 1);
    const char *path = sr_test_path("escapes.log");
    sr_audit_writer_t *w = open_log(path, 1000, 0);
    SR_CHECK_OK(sr_audit_append(w, &(sr_event_t){.component = field[0], .event = field[1], .subject = field[2],
                                                .object = field[3], .outcome = field[4], .source = field[5],
                                                .detail = detail}));
    SR_CHECK_OK(sr_audit_close(w));
    size_t len = 0;
    char *text = (char *)sr_test_read_file(path, &len);
    SR_CHECK(text != NULL);
    if (!text) return;
    char *line = strstr(text, "\n") + 1, *end = strchr(line, '\n'); /* after audit.started */
    SR_CHECK_MSG((size_t)(end - line) <= SR_AUDIT_LINE_MAX, "%zu bytes", (size_t)(end - line));
    sr_audit_record_t r;
    SR_CHECK_OK(sr_audit_record_parse(line, (size_t)(end - line), &r));
    SR_CHECK(strlen(r.detail) == 4096 / 6 + strlen(" [cut]") && strstr(r.detail, " [cut]"));
    SR_CHECK(strlen(r.component) == 512 / 2 + strlen(" [cut]") && strlen(r.event) == 512 / 6 + strlen(" [cut]"));
    free(text);
    sr_audit_verify_result_t v;
    SR_CHECK_OK(verify1(path, &v));
}

static void test_syslog_copy(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    SR_CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char target[64], path[512];
    snprintf(target, sizeof target, "udp:127.0.0.1:%u", ntohs(a.sin_port));
    snprintf(path, sizeof path, "%s", sr_test_path("syslog.log"));
    sr_audit_writer_t *w = NULL;
    sr_audit_options_t o = {.path = path, .signing_key = sign_key, .host = "db1", .syslog = target};
    SR_CHECK_OK(sr_audit_open(&o, &w));
    SR_CHECK_OK(sr_audit_append(w, &(sr_event_t){.component = "pam", .event = "login", .subject = "mallory",
                                                .outcome = "denied", .source = "203.0.113.9"}));
    char msg[9000];
    ssize_t n = recv(fd, msg, sizeof msg - 1, 0); /* audit.started */
    SR_CHECK(n > 0 && strncmp(msg, "<85>1 ", 6) == 0);
    n = recv(fd, msg, sizeof msg - 1, 0);
    SR_CHECK(n > 0);
    msg[n > 0 ? n : 0] = '\0';
    SR_CHECK_MSG(strncmp(msg, "<84>1 ", 6) == 0, "%s", msg); /* authpriv.warning: a refusal */
    SR_CHECK_MSG(strstr(msg, " login [strongroom@32473 seq=\"2\" component=\"pam\" outcome=\"denied\"] {\"seq\":2,") != NULL,
                 "%s", msg);
    SR_CHECK_MSG(strstr(msg, "\"source\":\"203.0.113.9\"") != NULL, "%s", msg);
    SR_CHECK_OK(sr_audit_close(w));
    close(fd);
}

int main(void)
{
    snprintf(sign_key, sizeof sign_key, "%s.sign", sr_test_path("audit"));
    snprintf(pub_key, sizeof pub_key, "%s.pub", sr_test_path("audit"));
    SR_CHECK_OK(sr_audit_keygen(sr_test_path("audit")));
    SR_CHECK_OK(sr_audit_verify_key_load(pub_key, pk));
    SR_RUN(test_clean_log_verifies);
    SR_RUN(test_each_tampering_detected);
    SR_RUN(test_cut_tail_is_visible);
    SR_RUN(test_recomputed_and_resigned_chain_is_detected);
    SR_RUN(test_forged_record_is_never_sealed);
    SR_RUN(test_threads_and_processes_lose_nothing);
    SR_RUN(test_sigkill_loses_no_acknowledged_record);
    SR_RUN(test_torn_tail_cut_and_recorded);
    SR_RUN(test_search_source_filter);
    SR_RUN(test_search_table_cells);
    SR_RUN(test_cli_convention);
    SR_RUN(test_report_names_the_principal_and_its_process);
    SR_RUN(test_event_vocabulary_documented);
    SR_RUN(test_cut_at_checkpoint_caught_against_copy);
    SR_RUN(test_rotation_keeps_one_chain);
    SR_RUN(test_full_disk_and_unwritable_log_are_errors);
    SR_RUN(test_group_commit_failure_keeps_its_reason);
    SR_RUN(test_event_sink);
    SR_RUN(test_syslog_copy);
    SR_RUN(test_record_strings_escaped_exactly);
    SR_RUN(test_record_of_escapes_fits_its_line);
    return sr_test_finish();
}
