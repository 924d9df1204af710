/*
 * extension.c — strongroom.so, the loadable extension for any SQLite program
 * (the stock sqlite3 CLI: `.load ./strongroom`). It registers the strongroom
 * VFS (not as the default unless STRONGROOM_DEFAULT=1) and stays loaded for
 * the life of the process (SQLITE_OK_LOAD_PERMANENTLY), since open databases
 * keep using it after the loading connection closes.
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "tablespace.h"
#include "tde.h"

__attribute__((visibility("default"))) int sqlite3_strongroom_init(sqlite3 *db, char **pzErrMsg,
                                                                   const sqlite3_api_routines *pApi);

int sqlite3_strongroom_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi)
{
    (void)db;
    SQLITE_EXTENSION_INIT2(pApi);
    const char *def = getenv("STRONGROOM_DEFAULT"), *level = getenv("STRONGROOM_LOG_LEVEL");
    sr_log_level_t min = SR_LOG_WARN; /* a shell user sees warnings; events go to the audit log */
    if (level) (void)sr_log_level_parse(level, &min);
    sr_log_set_level(min);
    sr_audit_writer_t *audit = NULL; /* $STRONGROOM_AUDIT_LOG: security events to the audit log */
    if (sr_audit_open_from_env(&audit) != SR_OK) {
        *pzErrMsg = sqlite3_mprintf("strongroom: audit log: %s", sr_err_detail());
        return SQLITE_ERROR;
    }
    int rc = sr_sqlite_register(NULL, def && strcmp(def, "1") == 0);
#ifdef SR_BENCH_PASSTHROUGH
    if (rc == SQLITE_OK) rc = sr_sqlite_register_passthrough(); /* strongroom-bench.so: the shim's own cost */
#endif
    if (rc != SQLITE_OK) {
        *pzErrMsg = sqlite3_mprintf("strongroom: cannot register the VFS (%s: %s)", sqlite3_errstr(rc),
                                    sr_err_detail());
        return rc;
    }
    return SQLITE_OK_LOAD_PERMANENTLY;
}
