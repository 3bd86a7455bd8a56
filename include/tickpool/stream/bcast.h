/*
 * Cross-process fan-out: every worker process subscribes to the pub/sub channel tp:bcast
 * (TP_KEYS_BCAST_CHANNEL) with its own Redis connection and forwards each message's bytes
 * unchanged, as one shared WebSocket frame per message, to its ready sockets. `tick` and
 * `odds` are droppable (newest wins), everything else direct. After a resubscription every
 * socket is resynced with a snapshot; a settled or cancelled `round` sends each connected
 * player with a payout record a `payout` message. Internal `account` messages (a token
 * revocation, a disabled account) go to tickpool/money/access.h instead of the sockets, and the
 * account state is reloaded once subscribed and after every resubscription.
 *
 * The publishing side lives here too: tp_bcast_publish is the one way onto the channel, and
 * tp_bcast_start installs the game leader's observer (tickpool/game/leader.h), which turns the
 * leader's facts into `round` and `tick` messages (tickpool/stream/protocol.h) and publishes
 * them, odds included: new odds (tp_bcast_odds) ride on the next beat (`tick`) when one is due
 * soon, so a socket gets one frame per tick. Which sockets are ready and whose they are is the
 * session layer's business: it hands bcast a struct tp_bcast_sessions, so bcast never includes
 * session.h.
 */
#ifndef TP_BCAST_H
#define TP_BCAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_conn;
struct tp_protocol_odds;
struct tp_store;
struct tp_worker;

/** What bcast asks of the sockets' owner (the session layer), on the worker's loop. */
struct tp_bcast_sessions {
    /** True when socket `c` may receive broadcasts (its snapshot is queued). */
    bool (*ready)(const struct tp_conn *c);
    /** The user of socket `c`, 0 when anonymous: payouts go to users' sockets. */
    int64_t (*user)(const struct tp_conn *c);
    /** Sends a fresh snapshot to every ready socket of `w` (messages may have been lost). */
    void (*resync)(struct tp_worker *w);
};

/** Takes the broadcaster's worker slot and registers an init hook running tp_bcast_start in
 * every worker, asking `sessions` (borrowed, static) about sockets. Call once before
 * tp_master_run, after tp_game_install (tp_session_install does). */
void tp_bcast_install(const struct tp_bcast_sessions *sessions);
/** Starts this worker's subscriber (a dedicated tp_store) and installs the leader observer that
 * publishes `round` and `tick` (tickpool/game/leader.h). Idempotent per worker. */
void tp_bcast_start(struct tp_worker *w);

/** PUBLISHes one encoded message on the broadcast channel with `store`, fire and forget (a lost
 * message is what resync covers). Returns 0 or the tp_store_command error. */
int tp_bcast_publish(struct tp_store *store, const void *msg, size_t len);

/* Longest wait for a beat to carry new odds; later than that they go as an `odds` message. */
#define TP_BCAST_ODDS_WAIT_MS 100

/** The leader's new odds for the open round (copied): published inside the next `tick` when one
 * is due within TP_BCAST_ODDS_WAIT_MS on this worker, else at once as `odds` with `store`
 * (also when that beat is more than ~20 ms late). Fire and forget, like tp_bcast_publish. */
void tp_bcast_odds(struct tp_worker *w, struct tp_store *store,
                   const struct tp_protocol_odds *odds);

/** Forwards one published message (`data`, MessagePack with a string `t`) to the ready sockets
 * of `w` and starts the payout fan-out for a final `round`. Exposed for tests. */
void tp_bcast_dispatch(struct tp_worker *w, const uint8_t *data, size_t len);

#endif
