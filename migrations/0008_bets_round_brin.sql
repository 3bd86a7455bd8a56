-- A round's bets found by block ranges (BRIN) instead of a B-tree entry per bet.
--
-- `bets_round (round_id, band)` is read once per round: the receipt's 'lost' UPDATE, archival's
-- counts and keys, `tickpool verify`. It cost every bet an index entry: about 6 % of the bets
-- INSERT's instructions and 12 % of its WAL (bench/README.md, Writer, "Session 15"). Bets
-- arrive in round order, so the heap's pages hold one round after another and a block range
-- summary (the smallest and largest round_id of 128 pages) finds a round's pages: on a table of
-- 3 M bets those reads took as long as with the B-tree or less (the heap is read in block order).
-- `band` is only ever filtered on with the round, so it is checked on the rows.
--
-- The pages written since the last summary are read for every round (a range is summarised once
-- it is full, by autovacuum, `autosummarize`, or by any VACUUM of `bets`): docs/operations.md
-- §5 says what to watch.
--
-- Applying it: the build reads the whole heap once and sorts nothing (3 M bets, 900 MB: about
-- 1.2 s); meanwhile writes to `bets` wait (SHARE lock: readers go on, the writer's outbox keeps
-- the bets), then the old index is dropped (an ACCESS EXCLUSIVE lock until this commits, an
-- instant) once every running read of `bets` has ended. A lock that waits more than 5 s fails
-- the migration (nothing applied; run it again later) rather than queue every later read of
-- `bets` behind the DROP while an audit's sums run. The new index takes the B-tree's name.
--
-- An operator may have built bets_round_brin by hand first, concurrently (docs/operations.md,
-- "`tickpool migrate`"); one that build left invalid (it failed) is built again here.
SET LOCAL lock_timeout = '5s';
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('bets_round_brin')
               AND NOT indisvalid) THEN
        DROP INDEX bets_round_brin;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS bets_round_brin ON bets USING brin (round_id)
    WITH (autosummarize = on);
DROP INDEX IF EXISTS bets_round;
ALTER INDEX bets_round_brin RENAME TO bets_round;
