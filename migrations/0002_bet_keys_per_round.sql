-- Idempotency keys are unique per player and round, not per player forever.
--
-- Redis is the idempotency authority: it remembers an accepted bet's key for 24 h, after which
-- a player may reuse the key for a bet in a later round. 0001's UNIQUE (user_id,
-- idempotency_key) made the writer's INSERT … ON CONFLICT DO NOTHING silently drop such a
-- later bet from the system of record (while its ledger rows were written). A round lasts far
-- less than 24 h, so within one round a key still names one bet.
ALTER TABLE bets DROP CONSTRAINT IF EXISTS bets_user_id_idempotency_key_key;
ALTER TABLE bets ADD CONSTRAINT bets_user_round_idempotency_key_key
    UNIQUE (user_id, round_id, idempotency_key);
