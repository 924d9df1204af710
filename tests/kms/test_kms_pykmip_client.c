/*
 * Interop: the PyKMIP client (ProxyKmipClient from Debian's python3-pykmip,
 * run with Debian's interpreter) against kmsd over mutual TLS. The checks
 * are in pykmip_client.py; this starts kmsd with two application
 * certificates and runs it.
 */
#include "kmsd_server.h"
#include "sr_test.h"

#include <signal.h>
#include <stdio.h>

static void test_pykmip_client_against_kmsd(void)
{
    static const char *const certs[] = {"client:application", "client2:application", NULL};
    char dir[512], cmd[2048];
    static char out[1 << 16];
    uint16_t port = 0;
    snprintf(dir, sizeof dir, "%s", sr_test_path("kms"));
    SR_CHECK(kmsd_init(dir, certs, &port) == 0);
    SR_CHECK(kmsd_start(dir, port) == 0);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s 127.0.0.1 %u %s", sr_test_source_path("tests/kms/pykmip_client.py"),
             port, dir);
    int status = sr_test_command(out, sizeof out, cmd);
    printf("%s", out);
    SR_CHECK_MSG(status == 0 && strstr(out, "all checks passed"), "PyKMIP client exited %d", status);
    SR_CHECK_EQ_INT(kmsd_stop(SIGTERM), 0);
}

int main(void)
{
    SR_RUN(test_pykmip_client_against_kmsd);
    return sr_test_finish();
}
