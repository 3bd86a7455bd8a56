/*
 * Which boundary each worker of a host has written to its sockets: one 64-bit word per worker in
 * an anonymous shared mapping the master creates before forking (tp_workers_written_init), so
 * the game leader, in one worker, sees when the others have written a boundary's `round` pair.
 * The leader holds the step after a boundary (the closed round's settlement) until then, at
 * most TP_LEADER_HOLD_MAX_MS: a settlement started while another worker was still writing the
 * pair took Redis, Postgres and its own `round` message's writes from it (bench/README.md,
 * "Boundaries", session 10). Workers of other hosts are not seen: the leader's host is the
 * sample.
 *
 * Before tp_workers_written_init (unit tests, the CLI) there is no table and every boundary
 * counts as written.
 */
#ifndef TP_WORKERS_WRITTEN_H
#define TP_WORKERS_WRITTEN_H

#include <stdbool.h>
#include <stdint.h>

/** Maps the table for `n` workers, all at 0 (master, before fork). 0 or TP_ENOMEM. */
int tp_workers_written_init(int n);
/** Worker `index` has written the `round` messages of boundary `t_ms` (Unix ms) to all its
 * sockets. */
void tp_workers_written_set(int index, int64_t t_ms);
/** True when every worker has written boundary `t_ms` or a later one (true without a table). */
bool tp_workers_written_all(int64_t t_ms);

#endif
