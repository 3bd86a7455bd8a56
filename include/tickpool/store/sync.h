/*
 * Synchronous Redis for the command-line tools (tickpool audit, tickpool verify): a private
 * ev_loop with one tp_store on it, run until the replies a tool waits for have arrived. The
 * server never uses this (it would block a worker's loop); it exists so that no tool needs a
 * second Redis client or its own loop-driving code.
 *
 * Every command still carries the store's deadline (redis.timeout), so every wait ends.
 */
#ifndef TP_STORE_SYNC_H
#define TP_STORE_SYNC_H

#include <stdarg.h>
#include <stddef.h>

#include "tickpool/store/store.h"

struct tp_config_redis;
struct tp_store_sync;

/* A deep copy of a reply, owned by the caller (tp_store_value_free). */
struct tp_store_value {
    enum tp_reply_type type;
    long long integer; /* INTEGER replies; 0 otherwise */
    char *str;         /* STRING, STATUS, ERROR bytes, NUL-terminated; NULL otherwise */
    size_t len;        /* bytes of str */
    size_t n;          /* ARRAY elements; 0 otherwise */
    struct tp_store_value **elem;
};

/**
 * Creates a private loop and a store on it (`scripts_dir` as for tp_store_new) and waits up to
 * `connect_ms` for it to connect. Returns 0 with *out set (free with tp_store_sync_close),
 * TP_EINVAL when the store cannot be created (bad URL, unreadable scripts: logged), or
 * TP_EUNAVAIL when Redis did not answer in time.
 */
int tp_store_sync_open(const struct tp_config_redis *cfg, const char *scripts_dir, int connect_ms,
                       struct tp_store_sync **out);
/** Frees the store (pending callbacks get TP_ECLOSED) and the loop. NULL is a no-op. */
void tp_store_sync_close(struct tp_store_sync *s);

/**
 * Runs one command (hiredis printf format, as tp_store_command) and waits for its reply.
 * Returns 0 with *out set to a copy of the reply (Redis error replies included: type
 * TP_REPLY_ERROR), or the error of submission or completion (TP_EUNAVAIL, TP_ETIMEDOUT, ...)
 * with *out NULL.
 */
int tp_store_sync_command(struct tp_store_sync *s, struct tp_store_value **out, const char *fmt,
                          ...);
/** tp_store_sync_command with a va_list. */
int tp_store_sync_commandv(struct tp_store_sync *s, struct tp_store_value **out, const char *fmt,
                           va_list ap);

/**
 * For fan-out: the store to submit several asynchronous commands to, then tp_store_sync_wait.
 * Borrowed until tp_store_sync_close.
 */
struct tp_store *tp_store_sync_store(struct tp_store_sync *s);
/** Runs the private loop until *pending is 0 (the caller's callbacks count it down). */
void tp_store_sync_wait(struct tp_store_sync *s, const int *pending);

/** Deep-copies a (borrowed) reply. */
struct tp_store_value *tp_store_value_copy(const struct tp_store_reply *r);
/** Frees a copy and its elements. NULL is a no-op. */
void tp_store_value_free(struct tp_store_value *v);

#endif
