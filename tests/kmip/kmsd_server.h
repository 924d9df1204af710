/*
 * kmsd_server.h — a kmsd for tests: `kmsctl init` in a fresh directory,
 * client certificates issued with `kmsctl cert issue`, kmsd started on a
 * free loopback port, and stopped or killed by the test.
 */
#ifndef STRONGROOM_TESTS_KMSD_SERVER_H
#define STRONGROOM_TESTS_KMSD_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kmip.h"

/* kmsctl init in dir (which must not hold a store yet), then one certificate
 * per "name:role" in certs (NULL-terminated). 0, or -1 with the reason on stderr.
 * With $STRONGROOM_TEST_PG (postgresql://user@host:port, as tests/kms/with-postgres
 * sets it) the store is a new database there, else an SQLite file in dir. */
int kmsd_init(const char *dir, const char *const *certs, uint16_t *port);
/* The PostgreSQL the stores are made on, or NULL (SQLite stores). */
const char *kmsd_postgres(void);
/* A new, empty database on the test's PostgreSQL; its URI in url. */
int kmsd_new_database(char *url, size_t cap);
/* Starts kmsd on dir/kmsd.conf and waits for its port; 0 or -1. */
int kmsd_start(const char *dir, uint16_t port);
/* Sends sig (SIGTERM: waits for a clean exit, returns its status; SIGKILL: reaps). */
int kmsd_stop(int sig);
pid_t kmsd_pid(void);
/* Another kmsd (config conf, stderr to log), waited for on port; its pid or -1. */
pid_t kmsd_spawn(const char *conf, const char *log, uint16_t port);
/* Runs kmsctl with KMSCTL_CONFIG=dir/kmsctl.conf; its exit status, output in out. */
int kmsctl_run(const char *dir, char *out, size_t cap, const char *args);
/* kmsctl's answer among its log lines: the first line of out made of exactly
 * `len` characters of [0-9a-f-] (a UUID: 36, a join token: 64) into dst; 0,
 * or -1 (dst empty) if there is none. */
int kmsctl_answer(const char *out, size_t len, char *dst, size_t cap);
/* A KMIP client of the kmsd on port with the certificate dir/NAME.pem (kmsd_init's "name:role"; "admin" and "app"
 * come with kmsctl init), speaking KMIP version v; the test fails without one. */
sr_kmip_client_t *kmsd_client(const char *dir, uint16_t port, const char *name, sr_kmip_version_t v);

#endif
