/*
 * common.h — the runtime every strongroom component shares.
 *
 * Error codes (one enum, one sr_strerror, a thread-local detail message),
 * logging that never prints a registered secret, the one configuration
 * format every daemon reads, secure memory for keys, UUIDs, time helpers and
 * TLS (mutual, OpenSSL 3) for the components that talk over the network.
 *
 * One header per module (libsodium's layout): sr_api.h, sr_error.h, sr_log.h,
 * sr_config.h, sr_secmem.h, sr_uuid.h, sr_time.h, sr_event.h, sr_tls.h,
 * sr_file.h, sr_bytes.h; this one includes them all.
 *
 * Conventions (see CONTRIBUTING.md):
 *  - Functions return sr_err_t (SR_OK == 0). On failure nothing is written to
 *    out-parameters, and sr_err_set() has recorded a message that says what,
 *    where and what to do; read it with sr_err_detail().
 *  - Out-parameters come last. Buffers come with their sizes.
 *  - Secrets live in sr_secure_alloc() memory and are never logged.
 */
#ifndef STRONGROOM_COMMON_H
#define STRONGROOM_COMMON_H

#include "sr_api.h"
#include "sr_error.h"
#include "sr_log.h"
#include "sr_config.h"
#include "sr_secmem.h"
#include "sr_uuid.h"
#include "sr_time.h"
#include "sr_event.h"
#include "sr_file.h"
#include "sr_tls.h"
#include "sr_bytes.h"

#endif /* STRONGROOM_COMMON_H */
