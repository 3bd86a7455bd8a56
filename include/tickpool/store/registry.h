/*
 * The worker registry: every worker process announces itself in Redis once a second (a ZSET
 * member "<host>|<pid>|<index>" scored with its last heartbeat, Unix ms), so `tickpool admin
 * status` can list the workers of every host without reaching the hosts. A member whose
 * heartbeat is older than TP_REGISTRY_ALIVE_MS counts as gone; members are forgotten after
 * TP_REGISTRY_FORGET_MS, and a worker that exits cleanly removes itself (best effort).
 */
#ifndef TP_REGISTRY_H
#define TP_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#define TP_REGISTRY_BEAT_MS 1000
#define TP_REGISTRY_ALIVE_MS 3000
#define TP_REGISTRY_FORGET_MS 60000

/* Room for a member: a 63-byte host name, a pid and an index. */
#define TP_REGISTRY_MEMBER_MAX 96

/** Writes the member of worker `index` of process `pid` on `host` into out[n]. */
void tp_registry_member(char *out, size_t n, const char *host, long pid, int index);

/** Reads a member back: host into host[hostlen], *pid, *index. Returns 0, or TP_EINVAL for
 * anything not written by tp_registry_member. */
int tp_registry_parse(const char *member, char *host, size_t hostlen, long *pid, int *index);

/** Registers the heartbeat in every worker (an init hook starting a 1 s timer on the worker's
 * store, an exit hook removing the member). Call once before tp_master_run, after
 * tp_store_install. */
void tp_registry_install(void);

#endif
