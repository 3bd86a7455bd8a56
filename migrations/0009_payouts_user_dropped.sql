-- `payouts_user (user_id)` dropped: nothing reads payouts by player.
--
-- Every winning or refunded bet's payouts row paid an entry in each of payouts' four indexes.
-- Their readers: the primary key (the writer's ON CONFLICT), `(bet_id, kind)` unique (the
-- bets' late status, `GET /me/bets`'s payouts, `tickpool verify`), `payouts_round` (archival's
-- count, the writer's probe of a round that has payouts). The audit sums the whole table. No
-- query of the server, the CLI or the Lua scripts filters payouts on user_id alone, so this
-- one was an index entry and its WAL per credit for no reader (bench/README.md, "Session 16").
--
-- Applying it: an ACCESS EXCLUSIVE lock on `payouts` for an instant, once every running read
-- of payouts has ended; a wait over 5 s fails the migration (nothing applied; run it again
-- later) instead of queueing the writer's and the readers' statements behind it, as 0008.
-- Undo: `CREATE INDEX CONCURRENTLY payouts_user ON payouts (user_id)`.
SET LOCAL lock_timeout = '5s';
DROP INDEX IF EXISTS payouts_user;
