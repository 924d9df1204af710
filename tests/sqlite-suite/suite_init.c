/*
 * suite_init.c — compiled into SQLite's testfixture (SQLITE_EXTRA_INIT) so
 * that SQLite's own test suite runs with strongroom as the default VFS,
 * without changing any test file. tester.tcl shuts SQLite down and
 * initialises it again, which makes "unix" the default once more: this runs
 * at every sqlite3_initialize() and makes strongroom the default again. The
 * key comes from $STRONGROOM_KEYFILE, which the run script sets.
 */
#include <sqlite3.h>

#include "tde.h"
#include "tde_suite.h"

int sr_suite_init(const char *unused)
{
    (void)unused;
    sr_log_set_level(SR_LOG_WARN); /* tablespace events are NOTICE lines: not in the tests' output */
    return sr_sqlite_register(NULL, 1);
}
