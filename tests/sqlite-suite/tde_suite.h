/* tde_suite.h — the SQLITE_EXTRA_INIT hook of the suite's testfixture. */
#ifndef STRONGROOM_TDE_SUITE_H
#define STRONGROOM_TDE_SUITE_H
int sr_suite_init(const char *unused);
#endif
