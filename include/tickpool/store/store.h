/*
 * Redis store: one asynchronous Redis connection (hiredis over libev) owned by one event loop.
 *
 * Every command carries a deadline (redis.timeout): callbacks are called exactly once when
 * submission returned 0 and never when it failed (docs/conventions.md §4). The connection
 * reconnects by itself with exponential backoff; while it is down, submission fails fast with
 * TP_EUNAVAIL. Lua scripts in a directory are loaded on every (re)connect and run by name with
 * EVALSHA.
 *
 * Error meanings in a callback: 0 = a reply arrived (Redis error replies included: read them
 * with tp_reply_type() == TP_REPLY_ERROR); TP_ETIMEDOUT = no reply before the deadline;
 * TP_EUNAVAIL = the connection was lost while the command was pending; TP_ECLOSED = the store
 * was freed. After TP_ETIMEDOUT or TP_EUNAVAIL the command may or may not have run.
 *
 * With redis.mode = cluster the same calls speak to a Redis Cluster (src/store/store_cluster.c):
 * each command goes to the master of its keys' slot, `MOVED`/`ASK` are followed and
 * `TRYAGAIN`/`CLUSTERDOWN` retried within the command's deadline, invisibly to the caller.
 */
#ifndef TP_STORE_H
#define TP_STORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct tp_config_redis;
struct tp_store;
struct tp_worker;
/* A reply, borrowed during the callback only (copy what you keep). */
struct tp_store_reply;

enum tp_reply_type {
    TP_REPLY_STRING = 1,
    TP_REPLY_ARRAY = 2,
    TP_REPLY_INTEGER = 3,
    TP_REPLY_NIL = 4,
    TP_REPLY_STATUS = 5,
    TP_REPLY_ERROR = 6,
};

/* Completion callback; `reply` is NULL whenever err != 0. */
typedef void (*tp_store_cb)(int err, const struct tp_store_reply *reply, void *ud);

/* Counters of one store (also exported as metrics where the metrics module exists). */
struct tp_store_stats {
    uint64_t commands;    /* commands submitted successfully */
    uint64_t errors;      /* commands that ended in TP_EUNAVAIL/TP_ECLOSED or a Redis error */
    uint64_t timeouts;    /* commands that ended in TP_ETIMEDOUT */
    uint64_t reconnects;  /* successful connections after the first one */
    uint64_t map_changes; /* cluster mode: slot maps (or MOVEDs) that gave a slot another owner */
};

/* scripts_dir naming the Lua scripts built into the binary (scripts/lua at build time), so the
 * server and the CLI run from any working directory. */
#define TP_STORE_SCRIPTS_BUILTIN "builtin:"

/**
 * Creates a store on `loop` and starts connecting to cfg->url (`redis://[[user]:pass@]host
 * [:port][/db]` or `unix:///path.sock[?db=N]`, parsed by tp_url_parse_redis). Reads every
 * `<name>.lua` in scripts_dir (NULL: none; TP_STORE_SCRIPTS_BUILTIN: the built-in scripts). Returns
 * NULL (logged) on a bad URL or an unreadable script. `cfg` is copied.
 */
struct tp_store *tp_store_new(struct ev_loop *loop, const struct tp_config_redis *cfg,
                              const char *scripts_dir);
/** Closes the connection; every pending callback gets TP_ECLOSED exactly once (before this
 * returns). NULL is a no-op. Safe to call from inside a store callback. */
void tp_store_free(struct tp_store *store);
/** True while connected, authenticated and scripts loaded (commands are accepted). In cluster
 * mode: while the slot map is known and some master is connected (a command whose own master
 * is not fails at submission with TP_EUNAVAIL). */
bool tp_store_is_connected(const struct tp_store *store);
/** Copies the store's counters. */
void tp_store_get_stats(const struct tp_store *store, struct tp_store_stats *out);

/* --- The worker's store --- */

/**
 * Gives every worker its command store (the built-in scripts): an init hook creates it in a
 * worker slot, an exit hook frees it once the connections are gone. Call once before
 * tp_master_run and before every module that calls tp_store_of from its own init hook.
 */
void tp_store_install(void);
/** The worker's store (borrowed), NULL when redis.url is empty or invalid or without
 * tp_store_install. */
struct tp_store *tp_store_of(const struct tp_worker *w);
/** Writes the commands sent so far to Redis now, rather than when the loop next polls (a caller
 * about to spend loop time on other work: the bet batch before a fan-out slice). Not from a
 * store callback; a no-op there, when not connected, or in cluster mode (its node
 * connections write at the next poll). */
void tp_store_flush(struct tp_store *store);
/** The worker's store writes the commands sent so far before the worker's prepare hook runs its
 * next fan-out slice, rather than after it: for a command sent from a reply callback, where
 * tp_store_flush cannot (the next link of a chain of round trips). No-op without a store. */
void tp_store_flush_soon(struct tp_worker *w);

/**
 * Sends one command in hiredis printf format (`%s` C string, `%b` pointer+size_t length).
 * Returns 0 (cb will be called exactly once), TP_EUNAVAIL when not connected, TP_EINVAL on a
 * bad format or on a store used for subscriptions.
 */
int tp_store_command(struct tp_store *store, tp_store_cb cb, void *ud, const char *fmt, ...);
/** Like tp_store_command with a va_list (for wrappers such as store/sync). */
int tp_store_commandv(struct tp_store *store, tp_store_cb cb, void *ud, const char *fmt,
                      va_list ap);
/** Like tp_store_command with an argument vector (`argvlen` NULL: strlen of each). */
int tp_store_commandargv(struct tp_store *store, tp_store_cb cb, void *ud, int argc,
                         const char **argv, const size_t *argvlen);
/* Most arguments tp_store_commandl takes. */
#define TP_STORE_COMMANDL_MAX 16
/**
 * Like tp_store_commandargv with the arguments listed as C strings and a NULL after the last:
 * `tp_store_commandl(store, cb, ud, "HGETALL", key, NULL)`. For the commands sent every tick,
 * step or timer: no format string to parse (hiredis's printf formatter cost ~8k instructions a
 * command, bench/README.md "Session 17"). TP_EINVAL for none or more than TP_STORE_COMMANDL_MAX.
 */
__attribute__((sentinel)) int tp_store_commandl(struct tp_store *store, tp_store_cb cb, void *ud,
                                                ...);

/**
 * Runs the script `name` (file name without .lua) by EVALSHA: argv[0..nkeys) are KEYS, the
 * rest ARGV (`argvlen` NULL: strlen). On NOSCRIPT it reloads the script and retries once,
 * transparently. Returns 0, TP_ENOTFOUND for an unknown script, TP_EUNAVAIL, TP_EINVAL.
 */
int tp_store_script(struct tp_store *store, const char *name, int nkeys, int argc,
                    const char **argv, const size_t *argvlen, tp_store_cb cb, void *ud);
/** The lowercase hex SHA-1 of a loaded script, or NULL when unknown (borrowed). */
const char *tp_store_script_sha(const struct tp_store *store, const char *name);

/**
 * Subscribes to `channel` (use a dedicated store: one with subscriptions accepts no other
 * commands). cb(0, reply) once when the subscription is first confirmed, reply = ["subscribe",
 * channel, count] (what was published before may be missing: load it now), then for each
 * message, reply = ["message", channel, payload]; after a reconnect the channel is resubscribed
 * and cb(TP_EUNAVAIL, NULL) is called once so the owner can resync; tp_store_free calls
 * cb(TP_ECLOSED, NULL) last. Returns 0, TP_ECONFLICT when already subscribed, TP_EINVAL.
 */
int tp_store_subscribe(struct tp_store *store, const char *channel, tp_store_cb cb, void *ud);

/** Type of a reply. */
enum tp_reply_type tp_reply_type(const struct tp_store_reply *r);
/** Value of an INTEGER reply (0 for other types). */
long long tp_reply_integer(const struct tp_store_reply *r);
/** Bytes of a STRING, STATUS or ERROR reply (NULL for other types); *len gets the length
 * when `len` is not NULL. Always NUL-terminated. Borrowed like the reply. */
const char *tp_reply_str(const struct tp_store_reply *r, size_t *len);
/** Number of elements of an ARRAY reply (0 for other types). */
size_t tp_reply_len(const struct tp_store_reply *r);
/** Element `i` of an ARRAY reply, or NULL when out of range or not an array. */
const struct tp_store_reply *tp_reply_at(const struct tp_store_reply *r, size_t i);
/** Parses exactly one RESP-encoded reply into an owned reply (recorded replies in tests, the
 * cluster mode's merged reads); NULL when `resp` is anything else. Free with
 * tp_store_reply_free. */
struct tp_store_reply *tp_store_reply_parse(const char *resp, size_t len);
/** Frees a reply from tp_store_reply_parse (NULL is a no-op). */
void tp_store_reply_free(struct tp_store_reply *r);

#endif
