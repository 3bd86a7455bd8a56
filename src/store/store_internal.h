/*
 * Private to the store module (store.c, store_owed.c, store_conn.c, store_load.c, store_resp.c,
 * store_acks.c, store_cluster.c): the script files, RESP for argv commands and replies, the send
 * options the cluster mode needs from one node's connection, WAIT after a script
 * (redis.replicas_ack, both modes), a standalone store's state and the calls between its three
 * files, and the cluster mode's entry points, which the public functions of store.c hand over
 * to when redis.mode is cluster.
 */
#ifndef TP_STORE_INTERNAL_H
#define TP_STORE_INTERNAL_H

#include "tickpool/base/crypto.h"
#include "tickpool/base/url.h"
#include "tickpool/store/store.h"

#include <ev.h>

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

/* --- One node's connection, as the cluster mode drives it (a standalone store: below) --- */

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

/* --- A standalone store: its state, shared by its three files ---
 *
 *   store.c       creation and teardown, the mode dispatch, reconnects, the entries from the loop
 *   store_owed.c  the callbacks it owes: the pending list by deadline, the command timer
 *   store_conn.c  the hiredis context (the only file that includes hiredis): connect and
 *                 handshake, the commands' bytes and replies, pub/sub, the reply objects
 */

struct redisAsyncContext; /* hiredis's: only store_conn.c looks inside */

enum tp_store_state {
    TP_STORE_DOWN,       /* no context; retry timer armed (or closed) */
    TP_STORE_CONNECTING, /* context exists: TCP connect and handshake in progress */
    TP_STORE_READY,      /* handshake done: commands accepted */
    TP_STORE_CLOSED,     /* tp_store_free was called */
};

struct tp_store_pending {
    struct tp_store_pending *prev, *next; /* in store->pending while the user callback is owed */
    tp_store_cb cb;                       /* NULL once the user callback has been called */
    void *ud;
    double deadline; /* ev_now() seconds */
    int64_t sent_ns; /* tp_mono_ns at send, for tickpool_redis_command_seconds */
    /* A blocking read (XREADGROUP BLOCK), or sent behind one on this connection: Redis answers
     * it only after that read returns, so its wait is not a round trip and is not timed. */
    bool blocking;
    bool blocking_read; /* this one is the blocking read (counted in s->blocking_reads) */
    /* EVALSHA only: a copy of the command for the one NOSCRIPT retry */
    const struct tp_store_script *script;
    bool retried;
    char *resp;
    size_t resp_len;
};

struct tp_store_sub {
    struct tp_store_sub *next;
    struct tp_store *store; /* NULL once the store is gone (the sub waits for hiredis) */
    tp_store_cb cb;
    void *ud;
    bool attached;  /* a SUBSCRIBE is registered in the current context */
    bool confirmed; /* the server confirmed it at least once */
    bool gap;       /* a reconnect happened since: report TP_EUNAVAIL on re-confirmation */
    char channel[];
};

struct tp_store {
    struct ev_loop *loop;
    struct tp_url_redis url;
    int timeout_ms;
    struct redisAsyncContext *ac;
    enum tp_store_state state;
    struct tp_store_pending *head, *tail; /* owed user callbacks, by deadline */
    size_t owed;                          /* their number */
    size_t inflight;                      /* user commands sent on the current context */
    size_t blocking_reads;  /* blocking reads owed a callback (see struct tp_store_pending) */
    double last_progress;   /* last reply (or first send after idle) */
    ev_timer cmd_timer;     /* earliest command deadline, and stall detection */
    ev_timer retry_timer;   /* reconnect backoff */
    ev_timer connect_timer; /* bounds TCP connect + handshake */
    int backoff_ms;
    unsigned attempts;   /* failed attempts since the last success */
    uint64_t rng;        /* xorshift state for backoff jitter (random() is shared state) */
    bool up;             /* READY was reached on the current context (for the log) */
    bool ever_connected; /* for the reconnects counter and the log */
    bool down_logged;    /* "unreachable" logged for the current outage */
    struct tp_store_script *scripts;
    size_t nscripts;
    struct tp_store_sub *subs;
    struct tp_store_stats stats;
    struct tp_store_cluster *cl; /* redis.mode = cluster: every call goes there */
    struct tp_store_acks acks;   /* standalone redis.replicas_ack (store_acks.c) */
    unsigned depth;              /* nested entries from the loop */
    bool dead; /* tp_store_free was called; free the struct when depth drops to 0 */
};

/* store.c */
/** Enters the store from the loop (a callback); pair with tp_store_leave. */
void tp_store_enter(struct tp_store *s);
/** Leaves a loop entry; frees the store if tp_store_free ran meanwhile. True when it is gone
 * (the caller must not touch it). */
bool tp_store_leave(struct tp_store *s);
/** The context is gone or failed: logs it, drops it and schedules the next attempt. */
void tp_store_connection_failed(struct tp_store *s, const char *why);
/** The handshake is done: the store takes commands and (re)subscribes. */
void tp_store_on_ready(struct tp_store *s);

/* store_owed.c */
/** Calls p's user callback once (with `reply`, or NULL and `err`): unlinks p and clears its cb
 * first, so a re-entrant call can never call it again. Does not free p. */
void tp_store_complete(struct tp_store *s, struct tp_store_pending *p, int err,
                       const struct tp_store_reply *reply);
/** Completes every owed callback with `err`; the caller holds a depth reference. */
void tp_store_fail_all(struct tp_store *s, int err);
/** The command timer's callback: times out owed callbacks past their deadline, drops a stalled
 * connection. */
void tp_store_on_cmd_timer(struct ev_loop *loop, ev_timer *w, int revents);
/** Registers p as owed and sent (`deadline` 0: the store's timeout from now). */
void tp_store_track(struct tp_store *s, struct tp_store_pending *p, double deadline);
/** 0 when s takes a command with callback cb now; TP_EINVAL or TP_EUNAVAIL. */
int tp_store_check_usable(const struct tp_store *s, tp_store_cb cb);

/* store_conn.c */
/** Opens a new context (connect, then the pipelined handshake); a failure goes to
 * tp_store_connection_failed. */
void tp_store_start_connect(struct tp_store *s);
/** Abandons the current context: owed callbacks get `err`, its later hiredis callbacks do
 * nothing. */
void tp_store_drop_context(struct tp_store *s, int err);
/** Sends sb's SUBSCRIBE on the current context, unless it is already registered there. */
void tp_store_subscribe_one(struct tp_store *s, struct tp_store_sub *sb);

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
