/*
 * pykmip_server.h — start and stop Debian's PyKMIP server on loopback, with a
 * fresh test PKI, for the interop test and the KMIP benchmark.
 */
#ifndef STRONGROOM_TESTS_PYKMIP_SERVER_H
#define STRONGROOM_TESTS_PYKMIP_SERVER_H

#include <stdint.h>

/* Makes the PKI in dir (tests/pki/make-test-pki), writes server.conf, starts
 * the server on a free port and waits until it accepts connections.
 * Returns 0, or -1 with the reason on stderr. */
int pykmip_start(const char *dir, const char *make_pki, uint16_t *port);
void pykmip_stop(void);

#endif
