/*
 * Internals of bet admission shared by its files (private to module money/bet):
 *
 *   bet.c         validation, codes, the 201 fields
 *   bet_batch.c   the submission in batches of bet_batch.lua and their answers
 *   bet_replay.c  the answer for a round Redis no longer has (archived), and for a key the
 *                 filter of archived keys may hold: from Postgres
 */
#ifndef TP_BET_INTERNAL_H
#define TP_BET_INTERNAL_H

#include "tickpool/money/bet.h"

#include <stddef.h>
#include <stdint.h>

struct tp_worker;

/* Idempotency records live 24 h (scripts/lua/README.md): a replay older than that is a new
 * request. The TTL is tp_keys_idem_ttl_s() (86400 s; shorter only under a test hook). */

/**
 * bet_batch.lua answered round_not_found: the round may have been archived (its keys left Redis for
 * Postgres). Asks Postgres through the worker's reader whether (user, round, key) names a bet
 * placed within the TTL: the same band and stake → that bet's first answer (replayed,
 * nothing debited); another body → idempotency_conflict; no such bet but the round exists →
 * round_not_open; no round → round_not_found; Postgres unreachable → unavailable. Returns 0
 * (cb called exactly once, later) or an error (no reader: cb never called).
 */
int tp_bet_replay_archived(struct tp_worker *w, int64_t user_id, const struct tp_bet_req *req,
                           const char *key, size_t len, tp_bet_cb cb, void *ud);

/* tp_bet_check_archived's answer: `res` is the bet's answer, or NULL when Postgres holds no bet
 * of the key within the TTL (the filter's false positive: admit the bet). */
typedef void (*tp_bet_check_cb)(const struct tp_bet_result *res, void *ud);

/**
 * bet_batch.lua answered "check": the key is in no round Redis holds, but the filter of archived
 * keys may hold it. Asks Postgres through the worker's reader for the newest bet of (user, key)
 * placed within the TTL: the same round, band and stake → its first answer (replayed,
 * nothing debited); another body → idempotency_conflict; none → res NULL; Postgres unreachable
 * or slow → unavailable. Counts the outcome (bets_idem_checks_total, an error return as
 * unavailable). Returns 0 (cb called exactly once, later) or an error (no reader, its queue
 * full: cb never called).
 */
int tp_bet_check_archived(struct tp_worker *w, int64_t user_id, const struct tp_bet_req *req,
                          const char *key, size_t len, tp_bet_check_cb cb, void *ud);

#endif
