-- 0002_pgw: tables written by the Postgres write-behind (src/pgw.c) from the Redis outbox.
--
-- Every row is keyed by the id of the outbox event it comes from, and the writer inserts with
-- ON CONFLICT DO NOTHING, so replaying an outbox entry (crash between COMMIT and XACK, a
-- takeover of a dead writer's pending entries) never writes anything twice. There are no
-- foreign keys between these tables on purpose: they are fed from several Redis streams (one
-- per bucket plus the global one) that are not ordered with respect to each other, so a bet
-- may be written before its round's or its player's row. Money is bigint minor units; times
-- are Unix milliseconds (bigint), as in Redis.

CREATE TABLE pgw_users (
    user_id    bigint PRIMARY KEY,
    username   text   NOT NULL,
    pw_hash    text,
    created_at bigint NOT NULL
);

CREATE TABLE pgw_rounds (
    id        bigint PRIMARY KEY,
    opens_at  bigint NOT NULL,
    locks_at  bigint NOT NULL,
    closes_at bigint NOT NULL,
    seed_hash text   NOT NULL
);

-- A settled or cancelled round's receipt (payouts + rake + breakage + refunds = total).
CREATE TABLE pgw_round_results (
    id            bigint PRIMARY KEY,
    state         text   NOT NULL CHECK (state IN ('settled', 'cancelled')),
    total         bigint NOT NULL CHECK (total >= 0),
    winning_stake bigint NOT NULL CHECK (winning_stake >= 0),
    rake          bigint NOT NULL CHECK (rake >= 0),
    breakage      bigint NOT NULL CHECK (breakage >= 0),
    payouts       bigint NOT NULL CHECK (payouts >= 0),
    refunds       bigint NOT NULL CHECK (refunds >= 0),
    CHECK (payouts + rake + breakage + refunds = total)
);

CREATE TABLE pgw_grants (
    grant_id text   PRIMARY KEY,
    user_id  bigint NOT NULL,
    amount   bigint NOT NULL CHECK (amount > 0),
    balance  bigint NOT NULL,
    ts       bigint NOT NULL
);
CREATE INDEX pgw_grants_user ON pgw_grants (user_id);

CREATE TABLE pgw_bets (
    bet_id   bigint PRIMARY KEY,
    user_id  bigint NOT NULL,
    round_id bigint NOT NULL,
    band     int    NOT NULL CHECK (band >= 0),
    stake    bigint NOT NULL CHECK (stake > 0),
    balance  bigint NOT NULL,
    ts       bigint NOT NULL
);
CREATE INDEX pgw_bets_user ON pgw_bets (user_id, bet_id);
CREATE INDEX pgw_bets_round ON pgw_bets (round_id);

-- Credits of settlement: kind 'payout' (a winning bet) or 'refund' (W = 0 or cancelled).
CREATE TABLE pgw_payouts (
    bet_id   bigint NOT NULL,
    kind     text   NOT NULL CHECK (kind IN ('payout', 'refund')),
    user_id  bigint NOT NULL,
    round_id bigint NOT NULL,
    amount   bigint NOT NULL CHECK (amount >= 0),
    balance  bigint NOT NULL,
    ts       bigint NOT NULL,
    PRIMARY KEY (bet_id, kind)
);
CREATE INDEX pgw_payouts_round ON pgw_payouts (round_id);

-- Double-entry ledger: every money move is one entry of rows that sum to zero.
-- Accounts: 'user:<id>', 'round:<id>' (stakes held by a round), 'house' (rake + breakage),
-- 'system' (source of grants). Entry ids: 'grant:<grant_id>', 'bet:<bet_id>',
-- 'payout:<bet_id>', 'refund:<bet_id>', 'house:<round_id>:b<bucket>'.
CREATE TABLE pgw_ledger (
    entry_id text   NOT NULL,
    account  text   NOT NULL,
    amount   bigint NOT NULL,
    ts       bigint NOT NULL,
    PRIMARY KEY (entry_id, account)
);
CREATE INDEX pgw_ledger_account ON pgw_ledger (account);
