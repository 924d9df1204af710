/*
 * sr_secmem.h — secure memory for keys, random bytes, process hardening.
 * Part of common.h (which includes every one of these); include just this
 * one where that is all a file needs.
 */
#ifndef STRONGROOM_SR_SECMEM_H
#define STRONGROOM_SR_SECMEM_H

#include "sr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Secure memory and process hardening (libsodium)
 * ---------------------------------------------------------------------- */
/* Initialises libsodium; safe to call many times and from many threads. */
SR_API sr_err_t sr_secure_init(void);
/* mlock'd memory, wiped when freed. Over 112 bytes: its own guard-paged
 * sodium_malloc; up to 112 (keys): a slot of a locked, guard-paged chunk,
 * an overrun caught by a canary when freed (no system call per region).
 * NULL on failure, with detail set. */
SR_API void *sr_secure_alloc(size_t len);
/* Wipes and frees; aborts if the region was overrun. NULL is allowed. */
SR_API void sr_secure_free(void *ptr);
/* 1 if ptr is a slot of the small-region chunks (not page-protectable). */
SR_API int sr_secure_is_slot(const void *ptr);
/* Zeroes memory in a way the compiler cannot remove (sodium_memzero). */
SR_API void sr_secure_wipe(void *ptr, size_t len);
/* Constant-time equality: 1 if equal, 0 otherwise. */
SR_API int sr_secure_equal(const void *a, const void *b, size_t len);
/* Page protection of an sr_secure_alloc() region over 112 bytes
 * (sodium_mprotect_*); SR_ERR_INVALID_ARG for a smaller one. */
SR_API sr_err_t sr_secure_protect_readonly(void *ptr);
SR_API sr_err_t sr_secure_protect_readwrite(void *ptr);
SR_API sr_err_t sr_secure_protect_noaccess(void *ptr);
/* Cryptographically secure random bytes (OpenSSL's DRBG). */
SR_API sr_err_t sr_random_bytes(void *buf, size_t len) SR_MUST_CHECK;
/* For daemons: no core dumps, not ptrace-attachable by other users
 * (prctl(PR_SET_DUMPABLE, 0), RLIMIT_CORE = 0). */
SR_API sr_err_t sr_process_harden(void);

#ifdef __cplusplus
}
#endif
#endif /* STRONGROOM_SR_SECMEM_H */
