/*
 * Private to the store module (store.c, store_load.c, store_resp.c, store_acks.c,
 * store_cluster.c): the script files, RESP for argv commands and replies, the send options the
 * cluster mode needs from one node's connection, WAIT after a script (redis.replicas_ack, both
 * modes), and the cluster mode's entry points, which the public functions of store.c hand over
 * to when redis.mode is cluster.
 */
#ifndef TP_STORE_INTERNAL_H
#define TP_STORE_INTERNAL_H

#include "tickpool/base/crypto.h"
#include "tickpool/base/url.h"
#include "tickpool/store/store.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct tp_buf;
struct tp_config_redis;
struct tp_store_cluster;

/* --- Script files (store_load.c) --- */

struct tp_store_script {
    char name[64];
    const char *body; /* `owned`, or the binary's built-in text */
    char *owned;      /* a body read from a file (malloc'd), or NULL */
    size_t len;
    char sha[TP_SHA1_LEN * 2 + 1];
    int metrics_kind; /* TP_METRICS_REDIS_KIND_* of `name` (SCRIPT when not listed there) */
};

/** Reads every dir/<name>.lua, or the built-in scripts when dir is TP_STORE_SCRIPTS_BUILTIN,
 * sorted by name, into *out (*n entries; free with tp_store_scripts_free). Returns 0 or TP_EIO /
 * TP_ETOOBIG (logged; *out then holds what was read so far). */
int tp_store_scripts_load(const char *dir, struct tp_store_script **out, size_t *n);
/* The scripts built into the binary: scripts/embed-lua generates them from scripts/lua at build
 * time, sorted by name; each body is the file's exact bytes, NUL-terminated. */
extern const size_t tp_lua_count;
extern const char *const tp_lua_names[];
extern const char *const tp_lua_bodies[];
extern const size_t tp_lua_lens[];

/** The script called `name` among `n`, or NULL. */
const struct tp_store_script *tp_store_scripts_find(const struct tp_store_script *scripts, size_t n,
                                                    const char *name);
/** Frees what tp_store_scripts_load returned. */
void tp_store_scripts_free(struct tp_store_script *scripts, size_t n);

/* --- One node's connection, as the cluster mode drives it (store.c) --- */

/* How one command is sent: `deadline` (ev_now seconds, 0 = now + redis.timeout) keeps a
 * redirected command's first deadline; `asking` sends ASKING right before it (an ASK redirect). */
struct tp_store_send {
    double deadline;
    bool asking;
};

/** A standalone store connected to `url` (copied); scripts from scripts_dir (NULL: none).
 * NULL when a script cannot be read (logged). */
struct tp_store *tp_store_new_at(struct ev_loop *loop, const struct tp_url_redis *url,
                                 int timeout_ms, const char *scripts_dir);
/** tp_store_commandargv of a standalone store with send options (`o` NULL: defaults). */
int tp_store_send_argv(struct tp_store *s, const struct tp_store_send *o, tp_store_cb cb, void *ud,
                       int argc, const char **argv, const size_t *argvlen);
/** tp_store_script of a standalone store with send options (`o` NULL: defaults). */
int tp_store_send_script(struct tp_store *s, const struct tp_store_send *o, const char *name,
                         int nkeys, int argc, const char **argv, const size_t *argvlen,
                         tp_store_cb cb, void *ud);
/** Appends argv[i] (lens[i] bytes each) to out as one RESP command, byte for byte what hiredis's
 * redisFormatCommandArgv writes (store_resp.c). */
void tp_store_resp_argv(struct tp_buf *out, int argc, const char **argv, const size_t *lens);
/** Appends EVALSHA sha nkeys argv... as one RESP command (`lens` NULL: the arguments are
 * NUL-terminated strings). */
void tp_store_resp_evalsha(struct tp_buf *out, const char *sha, int nkeys, int argc,
                           const char **argv, const size_t *lens);
/** Appends the reply r to out as RESP (a copy that tp_store_reply_parse reads back). */
void tp_store_resp_reply(struct tp_buf *out, const struct tp_store_reply *r);
/** True for XREAD / XREADGROUP with BLOCK (store_resp.c): a command that waits for data by
 * design (the Postgres writer's read). */
bool tp_store_resp_blocking_read(int argc, const char **argv, const size_t *lens);
/** Callbacks a standalone store still owes. */
size_t tp_store_owed(const struct tp_store *s);

/* --- Acked means replicated: redis.replicas_ack (store_acks.c) --- */

/* One store's (or cluster client's) WAIT settings and its stretch of shortfalls. */
struct tp_store_acks {
    int need;           /* redis.replicas_ack: 0 = scripts answer at once, no WAIT */
    int wait_ms;        /* WAIT's own timeout: redis.timeout / 10, within 10-500 ms */
    uint64_t held_back; /* script answers turned into TP_EUNAVAIL since the start */
    uint64_t stretch;   /* of them, since WAIT was last met (0: none, nothing to report) */
};

/** Sets a for `need` replicas and the store's command timeout. */
void tp_store_acks_init(struct tp_store_acks *a, int need, int timeout_ms);
/** Holds the script reply r (copied) and sends `WAIT need wait_ms` on `node`, the store whose
 * connection ran the script, with the script's `deadline` (as tp_store_send). cb runs once:
 * (0, the held reply) when enough replicas have the write; TP_EUNAVAIL on a shortfall or a lost
 * connection, TP_ETIMEDOUT past the deadline, TP_ECLOSED when the store is freed. Returns 0, or
 * TP_EUNAVAIL when WAIT could not be sent (cb is then not called; counted as a shortfall). */
int tp_store_acks_wait(struct tp_store_acks *a, struct tp_store *node, double deadline,
                       const struct tp_store_reply *r, tp_store_cb cb, void *ud);
/** tp_store_send_script on a standalone store, then tp_store_acks_wait on it for a reply that is
 * not a Redis error (a failure or an error reply is delivered as it is). Returns as
 * tp_store_send_script (TP_EINVAL for a NULL cb, as without WAIT). */
int tp_store_acks_script(struct tp_store_acks *a, struct tp_store *s, double deadline,
                         const char *name, int nkeys, int argc, const char **argv,
                         const size_t *argvlen, tp_store_cb cb, void *ud);

/* --- The cluster mode (store_cluster.c) --- */

/** A cluster client over the seeds of cfg->url (comma-separated redis:// URLs); NULL (logged)
 * on a bad URL or an unreadable script. */
struct tp_store_cluster *tp_store_cluster_new(struct ev_loop *loop,
                                              const struct tp_config_redis *cfg,
                                              const char *scripts_dir);
/** Frees the client: every owed callback gets TP_ECLOSED exactly once before this returns. */
void tp_store_cluster_free(struct tp_store_cluster *c);
/** True while the slot map is known and at least one master's connection is ready (a command
 * for a master that is not fails at submission), or, subscribing, while subscribed. */
bool tp_store_cluster_ready(const struct tp_store_cluster *c);
/** Sums of the node connections' counters. */
void tp_store_cluster_stats(const struct tp_store_cluster *c, struct tp_store_stats *out);
/** tp_store_commandargv in cluster mode: routed by the slot of the command's keys. */
int tp_store_cluster_argv(struct tp_store_cluster *c, tp_store_cb cb, void *ud, int argc,
                          const char **argv, const size_t *argvlen);
/** tp_store_command in cluster mode: `cmd` is the command as hiredis formats it (RESP). */
int tp_store_cluster_resp(struct tp_store_cluster *c, tp_store_cb cb, void *ud, const char *cmd,
                          size_t len);
/** tp_store_script in cluster mode: routed by the slot of its first key. */
int tp_store_cluster_script(struct tp_store_cluster *c, const char *name, int nkeys, int argc,
                            const char **argv, const size_t *argvlen, tp_store_cb cb, void *ud);
/** tp_store_subscribe in cluster mode (plain pub/sub on one node, moved on failure). */
int tp_store_cluster_subscribe(struct tp_store_cluster *c, const char *channel, tp_store_cb cb,
                               void *ud);
/** True when a subscription was made (the client then accepts no commands). */
bool tp_store_cluster_subscribed(const struct tp_store_cluster *c);

#endif
