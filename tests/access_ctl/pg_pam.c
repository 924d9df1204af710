/* pg_pam.c — see pg_pam.h. */
#include "pg_pam.h"
#include "sr_test.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int sh(char *out, size_t cap, const char *fmt, ...) SR_PRINTF(3, 4);
static int sh(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[8192], scratch[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return sr_test_command(out ? out : scratch, out ? cap : sizeof scratch, cmd);
}

static int write_text(const char *path, const char *text)
{
    int rc = sr_test_write_file(path, text, strlen(text));
    chmod(path, 0644);
    return rc;
}

int pgpam_available(void)
{
    return geteuid() == 0 && access(PG_BIN "/initdb", X_OK) == 0 && access(PAM_MATRIX, R_OK) == 0;
}

int pgpam_init(const char *dir, const char *users)
{
    char path[700], text[4096] = "";
    if (mkdir(dir, 0755) != 0) return -1;
    snprintf(path, sizeof path, "%s/pam.d", dir);
    if (mkdir(path, 0755) != 0) return -1;
    size_t len = 0; /* pam_matrix: one password per user, whatever the service */
    for (const char *u = users; *u;) {
        size_t n = strcspn(u, ",");
        len += (size_t)snprintf(text + len, sizeof text - len, "%.*s:secret:any\n", (int)n, u);
        u += n + (u[n] == ',');
    }
    snprintf(path, sizeof path, "%s/passdb", dir);
    if (write_text(path, text) != 0) return -1;
    return sh(NULL, 0, "chown postgres %s", dir) == 0 ? 0 : -1;
}

int pgpam_service(const char *dir, const char *name, const char *policy, const char *audit_socket,
                  const char *agent_socket)
{
    char path[700], gate[2048] = "", account[2048] = "", text[8192], sock[1600] = "";
    const char *module = sr_test_build_path("access_ctl/pam_strongroom.so");
    if (audit_socket) snprintf(sock, sizeof sock, " audit_socket=%s", audit_socket);
    if (agent_socket) snprintf(sock + strlen(sock), sizeof sock - strlen(sock), " agent_socket=%s", agent_socket);
    if (policy) {
        snprintf(gate, sizeof gate, "auth     requisite  %s policy=%s server=db1%s\n", module, policy, sock);
        snprintf(account, sizeof account, "account  required   %s policy=%s server=db1%s\n", module, policy, sock);
    }
    snprintf(text, sizeof text, "%sauth     required   " PAM_MATRIX " passdb=%s/passdb\n%s", gate, dir,
             policy ? account : "");
    if (!policy) snprintf(text + strlen(text), sizeof text - strlen(text), "account  required   pam_permit.so\n");
    snprintf(path, sizeof path, "%s/pam.d/%s", dir, name);
    return write_text(path, text);
}

int pgpam_start(const char *dir, const char *hba, uint16_t *port, char *out, size_t cap)
{
    char conf[700];
    *port = sr_test_free_port();
    if (sh(out, cap, "cd %s && runuser -u postgres -- sh -c '" PG_BIN "/initdb -D data -A trust -U postgres "
                     ">initdb.log 2>&1'", dir) != 0)
        return -1;
    snprintf(conf, sizeof conf, "%s/data/pg_hba.conf", dir);
    if (write_text(conf, hba) != 0) return -1;
    if (sh(out, cap, "chown postgres %s && printf \"listen_addresses = '127.0.0.1,::1'\\nport = %u\\n"
                     "unix_socket_directories = '%s'\\nmax_connections = 200\\n\" >> %s/data/postgresql.conf",
           conf, *port, dir, dir) != 0)
        return -1;
    return sh(out, cap, "cd %s && runuser -u postgres -- sh -c 'LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1 "
                        "PAM_WRAPPER_SERVICE_DIR=%s/pam.d " PG_BIN "/pg_ctl -D data -l pg.log -w -t 60 start "
                        ">/dev/null'", dir, dir) == 0 ? 0 : -1;
}

int pgpam_sql(const char *dir, uint16_t port, const char *sql, char *out, size_t cap)
{
    return sh(out, cap, "cd %s && runuser -u postgres -- psql -X -q -h %s -p %u -U postgres -d postgres -tAc \"%s\"",
              dir, dir, port, sql);
}

void pgpam_stop(const char *dir)
{
    (void)sh(NULL, 0, "cd %s && runuser -u postgres -- sh -c '" PG_BIN "/pg_ctl -D data -m fast -w stop >/dev/null'", dir);
}
