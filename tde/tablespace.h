/*
 * tablespace.h — (internal to tde/) an open tablespace file: its key header on
 * disk, its keys in memory, shared by every connection of the process.
 *
 * Used by the SQLite VFS and by tdectl. Header updates take an OFD lock on the
 * header region (shared with other processes) and an in-process mutex.
 */
#ifndef STRONGROOM_TDE_TABLESPACE_H
#define STRONGROOM_TDE_TABLESPACE_H

#include "tde.h"

typedef struct sr_tde_ts sr_tde_ts_t;

typedef struct sr_tde_ts_options {
    sr_tde_cipher_t cipher; /* for a new tablespace; 0 = AES-256-GCM */
    uint32_t page_size;     /* for a new tablespace; 0 = 4096 */
    int may_create;         /* an empty file becomes a new tablespace */
} sr_tde_ts_options_t;

/* Opens (or joins, if this process has it open) the tablespace in `path`.
 * Every open unwraps the keys with `prov`, so a wrong key fails even when
 * another connection has the tablespace open. Errors: SR_ERR_WRONG_KEY,
 * SR_ERR_TDE_NO_HEADER (detail says "plaintext SQLite database" for one),
 * SR_ERR_CORRUPT, SR_ERR_VERSION, SR_ERR_TRUNCATED. */
/* Every tde event, said one way: subject "uid=U pid=P", object the database
 * path, source "local" (the vocabulary: common/event.c, docs/audit.md).
 * Returns the sink's result: the open fails closed on it. */
sr_err_t sr_tde_event(const char *event, const char *path, int ok, const char *detail);

sr_err_t sr_tde_ts_open(const char *path, sr_keyprov_t *prov, const sr_tde_ts_options_t *opts, sr_tde_ts_t **out);
sr_tde_ts_t *sr_tde_ts_retain(sr_tde_ts_t *ts); /* another user (a WAL or journal) */
void sr_tde_ts_release(sr_tde_ts_t *ts);

sr_tde_space_t *sr_tde_ts_space(sr_tde_ts_t *ts);
uint32_t sr_tde_ts_page_size(sr_tde_ts_t *ts);
const char *sr_tde_ts_path(sr_tde_ts_t *ts);
/* SQLite changed the page size (VACUUM): record it in the header. */
sr_err_t sr_tde_ts_set_page_size(sr_tde_ts_t *ts, uint32_t page_size);
/* Reload the header (authenticated): new key versions, the active one, flags. */
sr_err_t sr_tde_ts_refresh(sr_tde_ts_t *ts);
/* Refresh if another process changed the header since we last loaded it
 * (two 8-byte reads when nothing changed). Called at each write transaction. */
sr_err_t sr_tde_ts_check_fresh(sr_tde_ts_t *ts);
/* The header's record that SQLite pages exist: set after the first page is
 * written, cleared before the file is cut to no pages. A file with no pages
 * whose header says it has some was truncated behind SQLite's back. */
sr_err_t sr_tde_ts_set_has_pages(sr_tde_ts_t *ts, int has_pages);
int sr_tde_ts_has_pages(sr_tde_ts_t *ts);

/* Pages per key version, straight from the trailers (no key needed). */
typedef struct sr_tde_version_count {
    uint32_t versions[SR_TDE_MAX_KEY_VERSIONS];
    uint64_t count[SR_TDE_MAX_KEY_VERSIONS];
    uint64_t pages, other; /* other: versions past the table's room */
} sr_tde_version_count_t;
void sr_tde_count_version(sr_tde_version_count_t *vc, uint32_t version);
/* Page images of fd from `first`, each `stride` bytes apart, page_size bytes at +skip, up to the end of the file. */
sr_err_t sr_tde_count_versions_fd(int fd, off_t first, size_t skip, size_t stride, uint32_t page_size,
                                  sr_tde_version_count_t *vc);
/* Drops from the header every key version that is neither active nor
 * carried by a page of the database or of its WAL (wal_path, NULL for none);
 * *before and *after: the versions the header held. The caller holds the
 * database's write lock, so no page can be written under a dropped version
 * meanwhile (SR_FCNTL_DROP_UNUSED_KEYS). */
sr_err_t sr_tde_ts_drop_unused_keys(sr_tde_ts_t *ts, const char *wal_path, uint32_t *before, uint32_t *after);

/* ---- on a path, for tdectl (opens and closes its own descriptor) ---- */
/* prov NULL: the header is read without authenticating it (status without a key). */
sr_err_t sr_tde_file_header_read(const char *path, sr_keyprov_t *prov, sr_tde_header_t *out, int *slot_out);
/* Writes a new encrypted tablespace header into an empty or absent file. */
sr_err_t sr_tde_file_create(const char *path, sr_keyprov_t *prov, const sr_tde_ts_options_t *opts,
                            sr_tde_header_t *out);
/* Master-key rotation: every DEK re-wrapped under the provider's newest master key. */
sr_err_t sr_tde_file_rewrap(const char *path, sr_keyprov_t *prov, sr_tde_header_t *out);
/* DEK rotation: a new key version becomes active for every page written from now on. */
sr_err_t sr_tde_file_add_key(const char *path, sr_keyprov_t *prov, sr_tde_header_t *out);
/* The same under another cipher: the tablespace's cipher from now on (the
 * older versions' pages stay readable under theirs until rewritten). */
sr_err_t sr_tde_file_add_key_cipher(const char *path, sr_keyprov_t *prov, sr_tde_cipher_t cipher, sr_tde_header_t *out);
/* The header's state (tdectl rekey --rewrite marks REKEYING while it runs, so a re-run resumes). */
sr_err_t sr_tde_file_set_state(const char *path, sr_keyprov_t *prov, sr_tde_state_t state, sr_tde_header_t *out);

#ifdef SR_BENCH_PASSTHROUGH
/* Benchmarks only (strongroom-bench.so, never shipped): registers
 * "strongroom-passthrough", the same shim with the cipher off, so a benchmark
 * can tell the shim's own cost from the cipher's. */
int sr_sqlite_register_passthrough(void);
#endif

#endif
