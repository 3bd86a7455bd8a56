-- A round as the API shows it, kept whole in Postgres.
--
-- Settled and cancelled rounds leave Redis after a retention window (game.retain_s) and are
-- then served from here, with the same Round object as before. 0001 lacked what that object
-- needs beyond the receipt: the price-walk parameters a verifier recomputes the ticks from
-- (vol_ppb, tick_ms, betting_ms), its stake bounds, the pools per band, and whether the round
-- refunded everyone
-- (GET /me/bets shows such bets as refunded). Rounds written before this migration have them
-- NULL; they are never archived from Redis (the archiver compares both copies first).
--
-- A bet keeps the player's balance right after it (balance_after, from the outbox event): the
-- answer to a bet is {bet_id, round_id, band, stake, balance}, and a replay of its
-- idempotency key after its round left Redis must answer the same bytes.
ALTER TABLE rounds ADD COLUMN IF NOT EXISTS vol_ppb    bigint;
ALTER TABLE rounds ADD COLUMN IF NOT EXISTS tick_ms    bigint;
ALTER TABLE rounds ADD COLUMN IF NOT EXISTS betting_ms bigint;
-- The round's own stake bounds (the Round object shows them; NULL there for older rounds).
ALTER TABLE rounds ADD COLUMN IF NOT EXISTS min_stake  bigint;
ALTER TABLE rounds ADD COLUMN IF NOT EXISTS max_stake  bigint;
ALTER TABLE rounds ADD COLUMN IF NOT EXISTS pools      bigint[];
ALTER TABLE rounds ADD COLUMN IF NOT EXISTS refund_all boolean;
ALTER TABLE bets ADD COLUMN IF NOT EXISTS balance_after bigint;
