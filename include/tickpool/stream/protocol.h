/*
 * The WebSocket protocol `tickpool.v1` on the wire (docs/protocol.md): one encoder per server
 * message, the Round object the HTTP API shares, and tp_protocol_peek, which reads a broadcast
 * back for the fan-out. This is the only place that knows a message's field names, order and
 * nil rules; session, bcast, odds and the leader's broadcasts (installed by bcast) call these
 * and never write or pick apart a server message by hand. A new message kind gets its encoder
 * here, its section in docs/protocol.md and its case in tests/unit/stream/test_protocol.c.
 *
 * Every message is one MessagePack map with a string `t`, appended to a caller-owned tp_buf
 * (never reset, so several may be batched) through the codec writer. Output is deterministic:
 * the same arguments give the same bytes (odds change detection and pub/sub fan-out, which
 * forwards bytes unchanged, rely on it). Pure: no I/O, no clock.
 */
#ifndef TP_PROTOCOL_H
#define TP_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tickpool/game/round.h"
#include "tickpool/money/access.h"
#include "tickpool/money/bet.h"

struct tp_buf;
struct tp_game_pause;
struct tp_game_round;
struct tp_val;
struct tp_wr;

/** Writes the Round object (docs/http-api.md §3, in the writer's format): settling shows as
 * live, cancelling as cancelled; multipliers nil where a pool is empty; receipt nil until final. */
void tp_protocol_write_round(struct tp_wr *w, const struct tp_game_round *r);

/** {t:"hello", server_time, user_id, balance}: user_id nil when user_id <= 0 (anonymous);
 * balance nil when anonymous or !has_balance (Redis could not be read). */
void tp_protocol_hello(struct tp_buf *out, int64_t server_time, int64_t user_id, bool has_balance,
                       int64_t balance);

/** The game's pause state as clients see it (docs/http-api.md §3, "paused"): nil when `p` is
 * NULL or not paused, else {since, reason}. Shared by /rounds/current, `snapshot` and `pause`. */
void tp_protocol_write_paused(struct tp_wr *w, const struct tp_game_pause *p);

/** {t:"snapshot", rounds:{open, live}, ticks, paused}: `open`/`live` NULL write nil; `ticks`
 * holds nticks (ts, price) pairs, oldest first (may be NULL when nticks is 0); `paused` as
 * tp_protocol_write_paused. */
void tp_protocol_snapshot(struct tp_buf *out, const struct tp_game_round *open,
                          const struct tp_game_round *live, const int64_t *ticks, size_t nticks,
                          const struct tp_game_pause *paused);

/** {t:"pause", paused}: the operator paused (paused = {since, reason}) or resumed (nil) the
 * game; tp_protocol_write_paused. */
void tp_protocol_pause(struct tp_buf *out, const struct tp_game_pause *p);

/** The open round's pools as `odds` shows them: pools[0..n) (1 <= n <= TP_ROUND_MAX_BANDS)
 * with the rake the multipliers are computed with (tp_settle_multipliers, nil where empty). */
struct tp_protocol_odds {
    int64_t round_id;
    int n;
    int rake_bps;
    int64_t pools[TP_ROUND_MAX_BANDS];
};

/** The beat {t:"tick", ts, price[, odds:{round_id, pools, total, multipliers}]}: `odds` (may be
 * NULL: no field) carries the open round's pools when they changed since the previous beat. */
void tp_protocol_tick(struct tp_buf *out, int64_t ts, int64_t price,
                      const struct tp_protocol_odds *odds);

/** {t:"odds", round_id, pools, total, multipliers}: new odds when no beat is due soon. */
void tp_protocol_odds(struct tp_buf *out, const struct tp_protocol_odds *odds);

/** {t:"round", round, rounds:{open, live}}: the leader's announcement of a state change of
 * `round`, with the game's current pair right after it (`open`/`live` NULL write nil), so a
 * client sees each boundary as one consistent state. */
void tp_protocol_round(struct tp_buf *out, const struct tp_game_round *r,
                       const struct tp_game_round *open, const struct tp_game_round *live);

/** {t:"bet_ok", req, bet_id, round_id, band, stake, balance}: `req` is the client's value as
 * one encoded MessagePack value (reqlen 0: nil); the rest as tp_bet_write_fields. */
void tp_protocol_bet_ok(struct tp_buf *out, const void *req, size_t reqlen,
                        const struct tp_bet_result *res);

/** {t:"bet_err", req, code, message}: `req` as for bet_ok; code and message from
 * tp_bet_code_name/tp_bet_code_message. */
void tp_protocol_bet_err(struct tp_buf *out, const void *req, size_t reqlen, enum tp_bet_code code);

/** A client's `bet` message as tp_protocol_bet_read reads it. */
struct tp_protocol_bet_msg {
    int64_t req;
    const char *key; /* into the message's bytes, klen bytes, not NUL-terminated */
    size_t klen;
    int64_t round_id, band, stake; /* as sent: not yet checked against any bound */
};

/**
 * Reads the bet message every client sends without building a document: a fixmap of exactly
 * t "bet", req, key, round_id, band and stake, in any order, each once; req, round_id, band and
 * stake integers of int64 (any encoding); key a fixstr or str8 that tp_bet_check_key accepts;
 * nothing after the map. True when `p` is exactly that, filling *out. False for anything else
 * (another or a missing member, a string req, a key the check refuses, any malformed byte): the
 * caller then parses the message in full, so every message outside this shape gets the full
 * parser's answer, and one in it the same values the full parser reads (tests/fuzz/fuzz_bet.c).
 */
bool tp_protocol_bet_read(const void *p, size_t n, struct tp_protocol_bet_msg *out);

/** {t:"payout", round_id, amount, balance}: balance nil when !has_balance. */
void tp_protocol_payout(struct tp_buf *out, int64_t round_id, int64_t amount, bool has_balance,
                        int64_t balance);

/** {t:"pong", ts}: the client's `ts` value echoed with its type (borrowed). */
void tp_protocol_pong(struct tp_buf *out, const struct tp_val *ts);

/** {t:"error", code, message} (both NUL-terminated, docs/protocol.md §2.1 `error`). */
void tp_protocol_error(struct tp_buf *out, const char *code, const char *message);

/* --- Reading a broadcast back --- */

/** Kinds of server message the fan-out treats differently. */
enum tp_protocol_kind {
    TP_PROTOCOL_OTHER, /* forwarded as is */
    TP_PROTOCOL_TICK,  /* the beat, droppable: a newer tick replaces it */
    TP_PROTOCOL_ODDS,  /* droppable: newer odds replace them */
    TP_PROTOCOL_ROUND, /* may announce payouts */
    /* Internal, never forwarded to sockets: an account's access changed (token revocation,
     * disabled flag). Written by scripts/lua/revoke.lua, password.lua and account_flag.lua as
     * {t: "account", user_id, revoked_before?: Unix ms, disabled?: bool}. */
    TP_PROTOCOL_ACCOUNT,
};

/** What the fan-out needs to know about one encoded server message. */
struct tp_protocol_peek {
    enum tp_protocol_kind kind;
    int64_t round_id; /* TP_PROTOCOL_ROUND: the round's id (0 if unreadable) */
    int64_t tick_ts;  /* TP_PROTOCOL_TICK: the tick's leader timestamp, Unix ms (0 if unreadable) */
    bool tick_odds;   /* TP_PROTOCOL_TICK: the beat carries `odds` */
    /* TP_PROTOCOL_ROUND: settled or cancelled with its receipt, i.e. the payouts are credited
     * (a cancellation is announced once without receipt before its refunds are done). */
    bool round_paid;
    /* TP_PROTOCOL_ROUND: the boundary the message announces, Unix ms: an open round's opens_at,
     * a live one's locks_at (0 for any other state, or unreadable). */
    int64_t round_t_ms;
    /* TP_PROTOCOL_ROUND: the round is open (round_t_ms is its opens_at). */
    bool round_open;
    /* TP_PROTOCOL_ACCOUNT: the change (user_id 0 when unreadable). */
    struct tp_access_update account;
};

/** Reads the kind of the encoded server message data[0..len) (at most TP_DOC_MAX_LEN bytes).
 * Returns 0 and *out; TP_EINVAL when it is no MessagePack value; TP_ENOTFOUND when it has no
 * string `t`. */
int tp_protocol_peek(const void *data, size_t len, struct tp_protocol_peek *out);

#endif
