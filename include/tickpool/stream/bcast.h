/*
 * Cross-process fan-out: every worker process subscribes to the pub/sub channel tp:bcast
 * (TP_GAME_BCAST_CHANNEL) with its own Redis connection and forwards each message's bytes
 * unchanged, as one shared WebSocket frame per message, to its ready sockets. `tick` and
 * `odds` are droppable (newest wins), everything else direct. After a resubscription every
 * socket is resynced with a snapshot; a settled or cancelled `round` sends each connected
 * player with a payout record a `payout` message.
 */
#ifndef TP_BCAST_H
#define TP_BCAST_H

#include <stddef.h>
#include <stdint.h>

struct tp_worker;

/** Takes the broadcaster's worker slot and registers an init hook running tp_bcast_start in
 * every worker. Call once before tp_master_run (tp_session_install does). */
void tp_bcast_install(void);
/** Starts this worker's subscriber (a dedicated tp_store). Idempotent per worker. */
void tp_bcast_start(struct tp_worker *w);

/** Forwards one published message (`data`, MessagePack with a string `t`) to the ready sockets
 * of `w` and starts the payout fan-out for a final `round`. Exposed for tests. */
void tp_bcast_dispatch(struct tp_worker *w, const uint8_t *data, size_t len);

#endif
