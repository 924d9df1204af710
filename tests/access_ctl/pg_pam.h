/*
 * pg_pam.h — a PostgreSQL 15 with `pam` authentication for tests and
 * benchmarks, without touching the system's PAM configuration: the server
 * runs as the unprivileged `postgres` user (initdb and postgres refuse root;
 * CI runs as root) under pam_wrapper, which redirects /etc/pam.d to
 * DIR/pam.d; pam_wrapper's pam_matrix checks passwords (passdb: every user's
 * password is "secret").
 */
#ifndef STRONGROOM_TESTS_PG_PAM_H
#define STRONGROOM_TESTS_PG_PAM_H

#include <stddef.h>
#include <stdint.h>

#define PG_BIN "/usr/lib/postgresql/15/bin"
#define PAM_MATRIX "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so"

/* Whether this machine can run it (root, postgresql-15, libpam-wrapper). */
int pgpam_available(void);
/* dir (created, handed to postgres) with pam.d/ and passdb for `users`
 * (comma-separated). 0 or -1. */
int pgpam_init(const char *dir, const char *users);
/* A PAM service: our gate (when policy is given; with audit_socket and
 * agent_socket when given), then the password, then our account check. */
int pgpam_service(const char *dir, const char *name, const char *policy, const char *audit_socket,
                  const char *agent_socket);
/* initdb, pg_hba.conf = hba, listen on 127.0.0.1 and ::1 at a free port,
 * start under pam_wrapper. 0 or -1 (the reason in out). */
int pgpam_start(const char *dir, const char *hba, uint16_t *port, char *out, size_t cap);
/* Runs sql as postgres over the Unix socket. */
int pgpam_sql(const char *dir, uint16_t port, const char *sql, char *out, size_t cap);
void pgpam_stop(const char *dir);

#endif
