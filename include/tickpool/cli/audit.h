/*
 * `tickpool audit`: checks that money is conserved, in Redis and between Redis and Postgres.
 *
 *  1. Redis, per bucket and in total: Σ balances + house + Σ stakes still held by unsettled
 *     rounds (pool total − already credited) = granted, and the grant ledger sums to granted.
 *  2. Every settled or cancelled round's receipt: payouts + rake + breakage + refunds = total.
 *  3. After the outbox drained (waits up to --wait seconds): Postgres agrees with Redis —
 *     per-user balances (ledger rows minus stakes), the house, grants, bets and payouts per
 *     round — and every ledger entry sums to zero.
 *  4. Leaked hot index entries (tickpool/cli/hot_leaks.h): counted, never a mismatch.
 *
 * Prints each check with its numbers and a readable diff on mismatch.
 */
#ifndef TP_AUDIT_H
#define TP_AUDIT_H

struct tp_config;

/* Exit statuses of tp_audit_main. */
#define TP_AUDIT_OK 0
#define TP_AUDIT_MISMATCH 1
#define TP_AUDIT_USAGE 2

/**
 * Runs the audit with the `nargs` arguments `args` that followed "audit" on the command line:
 * --wait S (default 10), --redis-only, -h.
 * Returns TP_AUDIT_OK when every check holds, TP_AUDIT_MISMATCH on any mismatch (or an outbox
 * that did not drain in time), TP_AUDIT_USAGE on bad options or when Redis/Postgres is unreachable.
 * `cfg` is NULL when the configuration did not load: -h still prints the help, anything else is
 * refused (TP_AUDIT_USAGE).
 */
int tp_audit_main(const struct tp_config *cfg, int nargs, char **args);

#endif
