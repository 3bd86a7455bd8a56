/*
 * Self-exclusion: a player stops their own betting for 1 to 365 days. Stored per player in Redis
 * (tp:{bN}:excl, written only by scripts/lua/exclusion.lua, which refuses to shorten one in
 * force); bet_batch.lua reads the same field in the script that would debit, so once a request here
 * was answered no bet of that player is accepted on any worker (self_excluded). No transport
 * here: the HTTP face is tickpool/api/exclusion.h.
 */
#ifndef TP_EXCLUSION_H
#define TP_EXCLUSION_H

#include "tickpool/base/codec.h"

#include <stddef.h>
#include <stdint.h>

struct tp_worker;

/* Longest and shortest exclusion, in days. */
#define TP_EXCLUSION_DAYS_MIN 1
#define TP_EXCLUSION_DAYS_MAX 365
/* Largest request body accepted (both formats). */
#define TP_EXCLUSION_MAX_BODY 4096

enum tp_exclusion_code {
    TP_EXCLUSION_OK = 0,
    TP_EXCLUSION_CANNOT_SHORTEN, /* an exclusion ending later is in force; nothing changed */
    TP_EXCLUSION_UNAVAILABLE,    /* Redis down, slow or refusing the script */
};

/* Outcome of tp_exclusion_set / tp_exclusion_get. `excluded_until` (Unix ms) is the exclusion in
 * force: the new one on OK, the later one on CANNOT_SHORTEN; 0 when none (get only). */
struct tp_exclusion_result {
    enum tp_exclusion_code code;
    int64_t excluded_until;
};

/** Completion on the worker's loop thread; `res` is borrowed. */
typedef void (*tp_exclusion_cb)(const struct tp_exclusion_result *res, void *ud);

/**
 * Validates a request body of `len` bytes in `fmt`: a map with exactly one member, `days`, an
 * integer in [TP_EXCLUSION_DAYS_MIN, TP_EXCLUSION_DAYS_MAX] (1.0, 1e2, "7", true, null, an
 * overflowing number, another member: all refused). Returns 0 and *days, or TP_EINVAL.
 */
int tp_exclusion_parse(enum tp_fmt fmt, const void *body, size_t len, int *days);

/**
 * Excludes `user_id` from betting until now + `days` days, or answers CANNOT_SHORTEN when an
 * exclusion ending later is in force (one exclusion.lua call). Returns 0 (cb called exactly once,
 * later) or, with cb never called, TP_EINVAL (days out of range, bad arguments) or TP_EUNAVAIL.
 */
int tp_exclusion_set(struct tp_worker *w, int64_t user_id, int days, tp_exclusion_cb cb, void *ud);

/** Reads the exclusion in force for `user_id` (excluded_until 0 when none or ended). Returns 0
 * (cb called exactly once, later) or, with cb never called, TP_EINVAL or TP_EUNAVAIL. */
int tp_exclusion_get(struct tp_worker *w, int64_t user_id, tp_exclusion_cb cb, void *ud);

#endif
