/*
 * Player views:
 *   GET /api/v1/me                         the caller's user_id, username and balance
 *   GET /api/v1/me/bets?limit=N&before=ID  the caller's bets, newest first, with status and payout
 *   GET /api/v1/leaderboard?limit=N        players by net winnings
 *
 * Sources: the bet script's per-player list tp:{bN}:ubets:<user> ("bet_id:round:band:stake", newest
 * first, up to 75 entries of which only the newest TP_PLAYERS_BETS_HOT are read) and per-bucket
 * ZSET tp:{bN}:net (−stake at bet time, +payout/refund at settlement); round outcomes from
 * tp:{g}:round:<id> (state, winning_band, winning_stake, refund_all) and payouts from
 * tp:{bN}:paid:<round_id> (HASH bet_id → amount). Older bets, and the rounds that have left Redis,
 * are read from Postgres off the loop (tickpool/store/pgr.h).
 */
#ifndef TP_PLAYERS_H
#define TP_PLAYERS_H

/* Bounds of the `limit` query parameters. */
#define TP_PLAYERS_BETS_DEFAULT 50
#define TP_PLAYERS_BETS_MAX 200
#define TP_PLAYERS_BOARD_DEFAULT 10
#define TP_PLAYERS_BOARD_MAX 100
/* Entries bet_batch.lua keeps in a player's Redis list (its UBETS_KEEP, which must not be lower):
 * the default page. A page reaching past a full list goes on in Postgres. */
#define TP_PLAYERS_BETS_HOT 50

/** Registers the three routes in every worker (a tp_worker_on_init hook). Call once in main,
 * after tp_accounts_install and before tp_master_run. */
void tp_players_install(void);

#endif
