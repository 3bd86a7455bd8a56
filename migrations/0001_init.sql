-- 0001_init: the system-of-record schema.
--
-- Redis holds the live state; Postgres is written behind it, idempotently by id, so every table
-- is keyed by the id Redis assigned and writers insert with ON CONFLICT DO NOTHING (or update
-- forward-only state). Money is bigint minor units (1.00 credit = 100), never float. Game times
-- (round opens/locks/closes) are Unix milliseconds as bigint, exactly as in Redis and the API;
-- created_at columns record when the row reached Postgres.
--
-- No foreign keys between the game tables: the writer is fed from several outbox streams that
-- are not ordered with respect to each other, so a bet may arrive before its round or player.
-- Integrity is checked by `tickpool audit` (conservation) and by CHECK constraints per row.

CREATE TABLE users (
    id            bigint      PRIMARY KEY,
    username      text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (username ~ '^[A-Za-z0-9_-]{3,32}$')
);
-- Usernames are unique case-insensitively (sign-up treats "Bob" and "bob" as the same name).
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

-- Credits granted to a player (the start balance, later top-ups): the only source of money.
CREATE TABLE grants (
    id         text        PRIMARY KEY,
    user_id    bigint      NOT NULL,
    amount     bigint      NOT NULL CHECK (amount > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grants_user ON grants (user_id);

CREATE TABLE rounds (
    id            bigint PRIMARY KEY,
    state         text   NOT NULL CHECK (state IN ('open', 'live', 'settled', 'cancelled')),
    opens_at      bigint NOT NULL,
    locks_at      bigint NOT NULL,
    closes_at     bigint NOT NULL,
    band_edges_bps int[] NOT NULL,
    rake_bps      int    NOT NULL CHECK (rake_bps BETWEEN 0 AND 1000),
    seed_hash     text   NOT NULL CHECK (seed_hash ~ '^[0-9a-f]{64}$'),
    seed          text            CHECK (seed ~ '^[0-9a-f]{64}$'),
    lock_price    bigint,
    close_price   bigint,
    winning_band  smallint,
    -- The receipt, known once settled or cancelled:
    total         bigint NOT NULL DEFAULT 0 CHECK (total >= 0),
    winning_stake bigint CHECK (winning_stake >= 0),
    rake          bigint CHECK (rake >= 0),
    breakage      bigint CHECK (breakage >= 0),
    payouts       bigint CHECK (payouts >= 0),
    refunds       bigint CHECK (refunds >= 0),
    settled_at    bigint,
    CHECK (opens_at <= locks_at AND locks_at <= closes_at),
    CHECK (state NOT IN ('settled', 'cancelled')
           OR payouts + rake + breakage + refunds = total)
);
CREATE INDEX rounds_state ON rounds (state) WHERE state IN ('open', 'live');

CREATE TABLE bets (
    id              text        PRIMARY KEY,
    user_id         bigint      NOT NULL,
    round_id        bigint      NOT NULL,
    band            smallint    NOT NULL CHECK (band >= 0),
    stake           bigint      NOT NULL CHECK (stake > 0),
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'won', 'lost', 'refunded')),
    payout          bigint      NOT NULL DEFAULT 0 CHECK (payout >= 0),
    idempotency_key text        NOT NULL,
    placed_at       bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
-- "My bets, newest first" pages by (user_id, placed_at, id); settlement reads a round's bets.
CREATE INDEX bets_user ON bets (user_id, placed_at DESC, id DESC);
CREATE INDEX bets_round ON bets (round_id, band);

-- Credits of settlement: 'win' for a winning bet, 'refund' when nobody backed the winning band
-- or the round was cancelled. At most one of each kind per bet.
CREATE TABLE payouts (
    id         text        PRIMARY KEY,
    bet_id     text        NOT NULL,
    user_id    bigint      NOT NULL,
    round_id   bigint      NOT NULL,
    amount     bigint      NOT NULL CHECK (amount >= 0),
    kind       text        NOT NULL CHECK (kind IN ('win', 'refund')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bet_id, kind)
);
CREATE INDEX payouts_round ON payouts (round_id);
CREATE INDEX payouts_user ON payouts (user_id);

-- Double-entry ledger. Every money move is one entry_id with rows summing to zero, e.g. a bet
-- 'bet:<id>' is {user:<u> -stake, round:<r> +stake}; a payout moves round → user; the rake and
-- breakage move round → house; a grant moves system → user. The unique (entry_id, account)
-- makes replays idempotent (INSERT ... ON CONFLICT DO NOTHING). Account balances are sums.
CREATE TABLE ledger (
    id         bigserial   PRIMARY KEY,
    entry_id   text        NOT NULL,
    account    text        NOT NULL CHECK (account ~ '^(user:[0-9]+|round:[0-9]+|house|system)$'),
    amount     bigint      NOT NULL CHECK (amount <> 0),
    kind       text        NOT NULL
                           CHECK (kind IN ('grant', 'bet', 'payout', 'refund', 'rake', 'breakage')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (entry_id, account)
);
CREATE INDEX ledger_account ON ledger (account, id);

-- Entries that do not sum to zero (should always be empty; used by the audit and tests).
CREATE VIEW ledger_unbalanced AS
    SELECT entry_id, sum(amount) AS imbalance
    FROM ledger GROUP BY entry_id HAVING sum(amount) <> 0;

CREATE VIEW account_balances AS
    SELECT account, sum(amount) AS balance FROM ledger GROUP BY account;
