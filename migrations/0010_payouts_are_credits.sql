-- A payout's row is the record of its credit; the writer no longer writes ledger rows for
-- payouts and refunds.
--
-- After 0006 every winning or refunded bet was still written twice: its `payouts` row and the
-- ledger entry '<payout|refund>:<bet_id>' {round:<r> -amount, user:<u> +amount}, two more rows
-- and their four index entries that only repeat what the payouts row says (id, user, round,
-- amount, kind) (bench/README.md, Writer, "Session 16" and "Session 17"). From here on the
-- ledger table holds grants, rake and breakage, and payouts and refunds are read as ledger rows
-- through the view `payout_credits`, which `ledger_full` (and so account_balances and
-- ledger_unbalanced) adds, as 0006 did for bets.
--
-- Upgrading: stop every server of an older version before running this (an older writer would
-- still write a payout's ledger rows, which the views would then count twice: `tickpool audit`
-- reports it as a per-user balance difference). A newer server may run before it: it writes no
-- such rows (the views miss its credits until this runs).
--
-- Applying it: the ledger's old payout rows are deleted first, as long as 0006's delete of the
-- bets' rows took (17 s for 2,000,000 rows of 1,000,000 payouts on the shared 2-core machine,
-- load 7): ROW EXCLUSIVE on `ledger` and row locks on the deleted rows, which nothing else
-- updates, so the writer's grant, rake and breakage rows and every read go on. Then the views
-- are replaced: an ACCESS EXCLUSIVE lock on `ledger_full` until this commits, an instant, once
-- every running read of the views has ended; a wait over 5 s fails the migration (nothing
-- applied, the delete rolled back; run it again later), as 0008 and 0009. A newer `tickpool
-- audit` refuses a database this has not run on (it counts payouts rows as the credits).

SET LOCAL lock_timeout = '5s';

-- The ledger rows of payouts and refunds written before this migration: removed where they say
-- exactly what their payouts row says (the view now gives them). A row that does not (a credit
-- missing from `payouts`, another amount or account) stays, so `tickpool audit` keeps showing
-- it. In slices of ledger ids, each row probing its payout by primary key (the entry id is the
-- payout's id), with a progress line per slice on a large ledger: a NOTICE, which `tickpool
-- migrate` (client_min_messages = warning for its own statements) shows only when asked here.
SET LOCAL client_min_messages = notice;
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
    SELECT min(id), max(id) INTO lo, hi FROM ledger WHERE kind IN ('payout', 'refund');
    IF lo IS NULL THEN
        RETURN;
    END IF;
    WHILE lo <= hi LOOP
        DELETE FROM ledger l USING payouts p
        WHERE l.id >= lo AND l.id < lo + step AND l.kind IN ('payout', 'refund')
          AND p.id = l.entry_id
          AND l.kind = CASE p.kind WHEN 'win' THEN 'payout' ELSE 'refund' END
          AND ((l.account = 'user:' || p.user_id AND l.amount = p.amount)
               OR (l.account = 'round:' || p.round_id AND l.amount = -p.amount));
        GET DIAGNOSTICS n = ROW_COUNT;
        gone := gone + n;
        lo := lo + step;
        IF hi - (SELECT min(id) FROM ledger) > step THEN
            RAISE NOTICE '0010: % payout ledger rows removed (ledger ids up to % of %)', gone,
                least(lo - 1, hi), hi;
        END IF;
    END LOOP;
END $$;
RESET enable_hashjoin;
RESET enable_mergejoin;
SET LOCAL client_min_messages = warning;

-- Every payout's and refund's two ledger rows as the writer wrote them: entry '<payout|refund>:
-- <bet_id>' (the payouts row's id), the round gives the amount, the user receives it. A zero
-- amount had no rows (the ledger refuses zero amounts), so it has none here.
CREATE OR REPLACE VIEW payout_credits AS
    SELECT id AS entry_id, 'round:' || round_id AS account, -amount AS amount,
           CASE kind WHEN 'win' THEN 'payout' ELSE 'refund' END AS kind
    FROM payouts WHERE amount <> 0
    UNION ALL
    SELECT id, 'user:' || user_id, amount, CASE kind WHEN 'win' THEN 'payout' ELSE 'refund' END
    FROM payouts WHERE amount <> 0;

-- The whole double-entry ledger: the ledger table, the bets' debits and the payouts' credits.
-- The columns stay as 0006 made them, so account_balances and ledger_unbalanced read it as
-- before.
CREATE OR REPLACE VIEW ledger_full AS
    SELECT entry_id, account, amount, kind FROM ledger
    UNION ALL
    SELECT entry_id, account, amount, kind FROM bet_debits
    UNION ALL
    SELECT entry_id, account, amount, kind FROM payout_credits;
