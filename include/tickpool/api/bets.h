/*
 * POST /api/v1/bets: authenticates the caller, reads the Idempotency-Key header and the body
 * (JSON or MessagePack by Content-Type), and hands the bet to admission (tickpool/money/bet.h).
 * The outcome is answered as the contract's 201 body or error, with the status tp_bets_status
 * gives and Retry-After: 1 on 429 and 503.
 */
#ifndef TP_API_BETS_H
#define TP_API_BETS_H

#include "tickpool/money/bet.h"

/** The HTTP status of an admission outcome (201 for TP_BET_OK, 503 for an unknown code). */
int tp_bets_status(enum tp_bet_code c);

/** Registers the route in every worker (a tp_worker_on_init hook). Call once in main, before
 * tp_master_run. */
void tp_bets_install(void);

#endif
