-- A bet's row is the record of its debit; the writer no longer writes ledger rows for bets.
--
-- Postgres's cost per bet was the writer's limit: the bets row with its indexes, and the two
-- ledger rows 'bet:<id>' {user:<u> -stake, round:<r> +stake} costing about as much again. Those
-- two rows only repeat what the bets row says (user, round, stake). From here on the ledger
-- table holds grants, payouts, refunds, rake and breakage, and bets are read as ledger rows
-- through the view `ledger_full` (account_balances and ledger_unbalanced use it; `tickpool
-- audit` sums the same).
--
-- Upgrading: stop every server of an older version before running this (an older writer would
-- still write a bet's ledger rows, which the views would then count twice: `tickpool audit`
-- reports it as a per-user balance difference).

-- "My bets" pages read bets_user_bet (0005); nothing reads (user_id, placed_at) any more.
DROP INDEX IF EXISTS bets_user;

-- The same uniqueness with the key before the round: lookups by (user, key) with or without the
-- round (the replay of a key whose round left Redis, and a key's 24 h reuse check) use its
-- prefix, so one index serves both instead of two.
CREATE UNIQUE INDEX IF NOT EXISTS bets_user_key_round ON bets (user_id, idempotency_key, round_id);
ALTER TABLE bets DROP CONSTRAINT IF EXISTS bets_user_round_idempotency_key_key;
ALTER TABLE bets ADD CONSTRAINT bets_user_key_round UNIQUE USING INDEX bets_user_key_round;

-- Every bet's two ledger rows as they were written (entry 'bet:<id>').
CREATE VIEW bet_debits AS
    SELECT 'bet:' || id AS entry_id, 'user:' || user_id AS account, -stake AS amount,
           'bet'::text AS kind
    FROM bets
    UNION ALL
    SELECT 'bet:' || id, 'round:' || round_id, stake, 'bet' FROM bets;

-- The whole double-entry ledger: the ledger table and the bets' debits.
CREATE VIEW ledger_full AS
    SELECT entry_id, account, amount, kind FROM ledger
    UNION ALL
    SELECT entry_id, account, amount, kind FROM bet_debits;

CREATE OR REPLACE VIEW ledger_unbalanced AS
    SELECT entry_id, sum(amount) AS imbalance
    FROM ledger_full GROUP BY entry_id HAVING sum(amount) <> 0;

CREATE OR REPLACE VIEW account_balances AS
    SELECT account, sum(amount) AS balance FROM ledger_full GROUP BY account;

-- The ledger rows of bets written before this migration: removed where they say exactly what
-- their bets row says (the views now count it). A row that does not (a bet missing from `bets`,
-- another amount) stays, so `tickpool audit` keeps showing it. In slices of ledger ids, each
-- row probing its bet by primary key (a hash join would scan all of `bets` per slice), with a
-- progress line per slice on a large ledger.
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_mergejoin = off;
DO $$
DECLARE
    lo bigint;
    hi bigint;
    step constant bigint := 500000;
    gone bigint := 0;
    n bigint;
BEGIN
    SELECT min(id), max(id) INTO lo, hi FROM ledger WHERE kind = 'bet';
    IF lo IS NULL THEN
        RETURN;
    END IF;
    WHILE lo <= hi LOOP
        DELETE FROM ledger l USING bets b
        WHERE l.id >= lo AND l.id < lo + step AND l.kind = 'bet'
          AND b.id = substr(l.entry_id, 5) AND l.entry_id = 'bet:' || b.id
          AND ((l.account = 'user:' || b.user_id AND l.amount = -b.stake)
               OR (l.account = 'round:' || b.round_id AND l.amount = b.stake));
        GET DIAGNOSTICS n = ROW_COUNT;
        gone := gone + n;
        lo := lo + step;
        IF hi - (SELECT min(id) FROM ledger) > step THEN
            RAISE NOTICE '0006: % bet ledger rows removed (ledger ids up to % of %)', gone,
                least(lo - 1, hi), hi;
        END IF;
    END LOOP;
END $$;
RESET enable_hashjoin;
RESET enable_mergejoin;
