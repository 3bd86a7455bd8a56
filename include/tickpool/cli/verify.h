/*
 * `tickpool verify ROUND`: recomputes a settled round from Redis (seed against seed_hash, the
 * ticks from the lock price, the close price, the winning band, every payout and the receipt)
 * and prints each check.
 */
#ifndef TP_VERIFY_H
#define TP_VERIFY_H

struct tp_config;

/** Runs the verify command; argv[0] is the round id. Returns the exit status: 0 when every
 * check passed, 1 on a mismatch, 2 on usage or connection errors. */
int tp_verify_main(const struct tp_config *cfg, int argc, char **argv);

#endif
