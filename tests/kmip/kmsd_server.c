/* kmsd_server.c — see kmsd_server.h. */
#include "kmsd_server.h"
#include "sr_test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t server_pid;

pid_t kmsd_pid(void) { return server_pid; }

int kmsctl_run(const char *dir, char *out, size_t cap, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "KMSCTL_CONFIG=%s/kmsctl.conf %s %s", dir, sr_test_build_path("kms_server/kmsctl"), args);
    return sr_test_command(out, cap, cmd);
}

const char *kmsd_postgres(void)
{
    const char *url = getenv("STRONGROOM_TEST_PG");
    return url && *url ? url : NULL;
}

int kmsd_new_database(char *url, size_t cap)
{
    static int made;
    char name[64], cmd[1024], out[4096];
    snprintf(name, sizeof name, "kms_%d_%d", (int)getpid(), made++);
    snprintf(cmd, sizeof cmd, "psql -X -q '%s/postgres' -c 'CREATE DATABASE %s'", kmsd_postgres(), name);
    if (sr_test_command(out, sizeof out, cmd) != 0) return fprintf(stderr, "%s\n", out), -1;
    snprintf(url, cap, "%s/%s", kmsd_postgres(), name);
    return 0;
}

int kmsd_init(const char *dir, const char *const *certs, uint16_t *port)
{
    char cmd[4096], out[8192], store[1024] = "";
    *port = sr_test_free_port();
    if (kmsd_postgres()) {
        char url[600];
        if (kmsd_new_database(url, sizeof url) != 0) return -1;
        snprintf(store, sizeof store, " --store-url %s", url);
    }
    snprintf(cmd, sizeof cmd, "%s init --dir %s --port %u%s", sr_test_build_path("kms_server/kmsctl"), dir, *port,
             store);
    if (sr_test_command(out, sizeof out, cmd) != 0) return fprintf(stderr, "kmsctl init failed:\n%s\n", out), -1;
    for (int i = 0; certs && certs[i]; i++) {
        char name[128], args[300];
        snprintf(name, sizeof name, "%s", certs[i]);
        char *role = strchr(name, ':');
        if (!role) return fprintf(stderr, "kmsd_init: '%s' is not name:role\n", certs[i]), -1;
        *role++ = '\0';
        snprintf(args, sizeof args, "cert issue %s --role %s", name, role);
        if (kmsctl_run(dir, out, sizeof out, args) != 0) return fprintf(stderr, "kmsctl %s:\n%s\n", args, out), -1;
    }
    return 0;
}

pid_t kmsd_spawn(const char *conf, const char *log, uint16_t port)
{
    fflush(NULL); /* the child's freopen would write our buffered output again */
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(log, "a", stderr) || !freopen("/dev/null", "w", stdout)) _exit(126);
        execl(sr_test_build_path("kms_server/kmsd"), "kmsd", "--config", conf, "--foreground", (char *)NULL);
        _exit(127);
    }
    if (pid > 0 && sr_test_wait_port(port, 15000)) return pid;
    fprintf(stderr, "kmsd did not start (see %s)\n", log);
    if (pid > 0) kill(pid, SIGKILL), waitpid(pid, NULL, 0);
    return -1;
}

int kmsd_start(const char *dir, uint16_t port)
{
    char conf[600], log[600];
    snprintf(conf, sizeof conf, "%s/kmsd.conf", dir);
    snprintf(log, sizeof log, "%s/kmsd.stderr", dir);
    server_pid = kmsd_spawn(conf, log, port);
    return server_pid > 0 ? 0 : -1;
}

int kmsd_stop(int sig)
{
    if (server_pid <= 0) return -1;
    int status = 0;
    kill(server_pid, sig);
    waitpid(server_pid, &status, 0);
    server_pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int kmsctl_answer(const char *out, size_t len, char *dst, size_t cap)
{
    dst[0] = '\0';
    for (const char *l = out; *l; l += strcspn(l, "\n") + (l[strcspn(l, "\n")] != '\0'))
        if (strcspn(l, "\n") == len && strspn(l, "0123456789abcdef-") == len)
            return snprintf(dst, cap, "%.*s", (int)len, l), 0;
    return -1;
}

sr_kmip_client_t *kmsd_client(const char *dir, uint16_t port, const char *name, sr_kmip_version_t v)
{
    char ca[600], crt[600], key[600];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(crt, sizeof crt, "%s/%s.pem", dir, name);
    snprintf(key, sizeof key, "%s/%s.key", dir, name);
    sr_kmip_client_options_t o = {.host = "127.0.0.1", .port = port, .verify_name = "localhost", .ca_file = ca,
                                  .cert_file = crt, .key_file = key, .timeout_ms = 10000, .version = v};
    sr_kmip_client_t *c = NULL;
    SR_CHECK_OK(sr_kmip_client_new(&o, &c));
    return c;
}
