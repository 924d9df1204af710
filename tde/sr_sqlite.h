/*
 * sr_sqlite.h — how tde/ reaches SQLite's API.
 *
 * The same VFS sources build into libstrongroom (calls SQLite directly) and
 * into the loadable extension strongroom.so (calls go through the routine
 * table the loading SQLite hands over, as sqlite3ext.h arranges).
 */
#ifndef STRONGROOM_SR_SQLITE_H
#define STRONGROOM_SR_SQLITE_H

#ifdef SR_SQLITE_EXTENSION
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3
#else
#include <sqlite3.h>
#endif

#endif
