/* pykmip_server.c — see pykmip_server.h. */
#include "pykmip_server.h"
#include "sr_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t server_pid;

int pykmip_start(const char *dir, const char *make_pki, uint16_t *port)
{
    char cmd[2048], conf[600], log[600], policies[600];
    if (access("/usr/bin/pykmip-server", X_OK) != 0) {
        fprintf(stderr, "pykmip-server is missing: install python3-pykmip (scripts/install-deps)\n");
        return -1;
    }
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null", make_pki, dir);
    if (system(cmd) != 0) return fprintf(stderr, "cannot make the test PKI in %s\n", dir), -1;
    snprintf(conf, sizeof conf, "%s/server.conf", dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    snprintf(policies, sizeof policies, "%s/policies", dir);
    mkdir(policies, 0700);
    *port = sr_test_free_port();
    FILE *f = fopen(conf, "w");
    if (!f) return fprintf(stderr, "cannot write %s\n", conf), -1;
    fprintf(f, "[server]\nhostname=127.0.0.1\nport=%u\ncertificate_path=%s/server.pem\nkey_path=%s/server.key\n"
               "ca_path=%s/ca.pem\nauth_suite=TLS1.2\nenable_tls_client_auth=True\npolicy_path=%s\n"
               "database_path=%s/pykmip.db\nlogging_level=INFO\n",
            *port, dir, dir, dir, policies, dir);
    fclose(f);
    if ((server_pid = fork()) == 0) {
        setpgid(0, 0);
        /* Debian's interpreter explicitly: another python3 on PATH does not see python3-pykmip */
        execl("/usr/bin/python3", "python3", "-W", "ignore", "/usr/bin/pykmip-server", "-f", conf, "-l", log,
              (char *)NULL);
        _exit(127);
    }
    if (sr_test_wait_port(*port, 30000)) return 0; /* up to 30 s: PyKMIP imports a lot */
    fprintf(stderr, "the PyKMIP server did not start (log: %s)\n", log);
    pykmip_stop();
    return -1;
}

/* SIGTERM, then SIGKILL after 2 s: PyKMIP's shutdown waits ~10 s for its
 * session threads, which only slows the tests down. */
void pykmip_stop(void)
{
    if (server_pid <= 0) return;
    kill(-server_pid, SIGTERM);
    for (int i = 0; i < 40 && waitpid(server_pid, NULL, WNOHANG) == 0; i++) usleep(50000);
    if (kill(server_pid, 0) == 0) {
        kill(-server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
    }
    server_pid = 0;
}
