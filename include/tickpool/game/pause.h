/*
 * The operator's pause (`tickpool admin pause|resume`), read side: the stored form of
 * tp:{g}:pause (scripts/lua/pause.lua writes it) as one struct, for everyone who shows or obeys
 * it (the leader's planner, /rounds/current, the `round` and `snapshot` messages, /readyz,
 * `tickpool admin status`). While paused the leader opens no new round and the bet script refuses
 * bets (game_paused); docs/operations.md "Pausing the game".
 */
#ifndef TP_GAME_PAUSE_H
#define TP_GAME_PAUSE_H

#include <stdbool.h>
#include <stdint.h>

struct tp_store;
struct tp_store_reply;

/* Bounds of the stored strings (pause.lua enforces them; longer ones are cut). */
#define TP_GAME_PAUSE_REASON_MAX 200
#define TP_GAME_PAUSE_BY_MAX 160

struct tp_game_pause {
    bool paused;
    int64_t since;                             /* Unix ms the pause began (0 when running) */
    char reason[TP_GAME_PAUSE_REASON_MAX + 1]; /* "" when none was given */
    char by[TP_GAME_PAUSE_BY_MAX + 1];         /* who paused */
};

/** Reads a reply of the pause's read (HMGET of since, reason and by; tp_game_pause_load sends
 * it) into *out: running when `since` is nil. Returns 0, or TP_EPROTO for a reply of another
 * shape (out then says running). */
int tp_game_pause_parse(const struct tp_store_reply *r, struct tp_game_pause *out);

/** Completion of tp_game_pause_load: err 0 and `p` (borrowed during the call), or an error. */
typedef void (*tp_game_pause_cb)(int err, const struct tp_game_pause *p, void *ud);

/** Reads the pause from `store`. Returns 0 and calls cb exactly once, or an error (TP_EUNAVAIL)
 * without calling it. */
int tp_game_pause_load(struct tp_store *store, tp_game_pause_cb cb, void *ud);

#endif
