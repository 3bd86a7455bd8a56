/*
 * POST /api/v1/me/exclusion {days} and GET /api/v1/me/exclusion: a player's self-exclusion from
 * betting (tickpool/money/exclusion.h), answered as {"excluded_until": ms or null} or the error
 * envelope (400 invalid_request, 401, 409 exclusion_cannot_shorten, 503 unavailable).
 */
#ifndef TP_API_EXCLUSION_H
#define TP_API_EXCLUSION_H

/** Registers both routes in every worker (a tp_worker_on_init hook). Call once in main, before
 * tp_master_run. */
void tp_api_exclusion_install(void);

#endif
