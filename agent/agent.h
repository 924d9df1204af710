/*
 * agent.h — (internal to agent/) what one tde-agent keeps, and what each of
 * its files serves the others: membership.c (kmsd: enrolment, heartbeats,
 * the policy the KMS pushes), disk_cache.c (keys for a restart during an
 * outage), key_service.c (the Unix socket the engines and the PAM module
 * ask); tde_agent.c reads the configuration, embeds the audit sealer and
 * runs them.
 */
#ifndef STRONGROOM_AGENT_H
#define STRONGROOM_AGENT_H

#include "access_ctl.h"
#include "audit.h"
#include "keymgr.h"
#include "kmip.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

typedef struct agent_state {
    sr_config_t *cfg;
    char state[4096], node_uuid[64], nk[128];
    sr_keyprov_t *kms;
    sr_keycache_t *cache;
    uint64_t cache_ttl_ms, heartbeat_ms;
    sr_acl_t *policy;            /* NULL: none configured (or, with policy_push, none received yet) */
    int policy_push;             /* install what `kmsctl policy push` stored in the KMS at the policy path */
    int64_t policy_version;      /* the pushed version in force (0: a local file) */
    int64_t policy_rejected;     /* the last pushed version that did not compile here */
    pthread_mutex_t lock;
    int revoked;
    char revoked_why[256];
    int64_t last_heartbeat_ok, lease_s;
    char kms_error[300];         /* why the last heartbeat did not reach the KMS ("": it did) */
    int64_t access_epoch;        /* the KMS's access epoch at the last heartbeat (-1: none yet) */
    uint64_t keys_dropped;       /* times the cached keys were dropped (under lock): a key fetched across one is
                                    served but not cached */
} agent_state_t;
extern agent_state_t agent;
extern volatile sig_atomic_t stop_requested;

/* tde_agent.c */
void event(const char *name, const char *subject, const char *object, const char *outcome, const char *detail);
void state_path(char *out, size_t cap, const char *name);

/* membership.c */
int kms_unreachable(sr_err_t rc);
/* A request of the node's (agent.kms must be open), its response in r (the caller frees it). */
sr_err_t node_call(uint32_t op, sr_kmip_response_t *r);
sr_err_t enrol(void);
/* After the enrolment, once agent.kms is open: its connection, bound to the node by kmsd, becomes agent.kms's
 * (without agent.kms, it is closed). */
void hand_on_enrolment_connection(void);
int load_enrolment(void);
sr_err_t write_kms_conf(void);
void *heartbeat_main(void *arg);
int64_t installed_policy_version(char digest[32]);

/* disk_cache.c */
void disk_cache_add(const sr_uuid_t *ts, uint32_t version, const uint8_t *dek, uint64_t generation);
void disk_cache_purge(const char *why);
void disk_cache_drop_keys(uint64_t generation); /* the entries, not the node key */
sr_err_t disk_cache_start(void);

/* key_service.c */
sr_err_t workers_start(int lfd);
void workers_stop(void);

#endif
