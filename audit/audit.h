/*
 * audit.h — the tamper-evident audit log: writer, reader/verifier, and
 * collection (store-and-forward to a collector).
 */
#ifndef STRONGROOM_AUDIT_H
#define STRONGROOM_AUDIT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== log: records, writer, reader, verify (owner: audit log) ==== */

/* ==== collection: forwarder, spool, collector (owner: audit collection) ==== */

#ifdef __cplusplus
}
#endif
#endif
