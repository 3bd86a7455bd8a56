-- Operator actions (`tickpool admin …`) and operator corrections.
--
-- Every admin action is recorded by the Lua script that performs it, as a `type=admin` outbox
-- event next to its effect, so a row exists here exactly when the action happened (once: the
-- writer inserts by the action id with ON CONFLICT DO NOTHING, like every other table).

CREATE TABLE admin_actions (
    id         text        PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    action     text        NOT NULL CHECK (action ~ '^[a-z_]{1,32}$'),
    actor      text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 160),
    user_id    bigint,                          -- the player acted on (NULL: the whole game)
    detail     jsonb       NOT NULL DEFAULT '{}', -- what exactly (amount, grant id, …)
    reason     text        NOT NULL DEFAULT '',
    at         bigint      NOT NULL,            -- when, Unix ms (the script's clock)
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_actions_at ON admin_actions (at);
CREATE INDEX admin_actions_user ON admin_actions (user_id) WHERE user_id IS NOT NULL;

-- An operator's correction is a grant with a negative amount (grant.lua refuses one that
-- would make the balance negative); a grant is never zero.
ALTER TABLE grants DROP CONSTRAINT IF EXISTS grants_amount_check;
ALTER TABLE grants ADD CONSTRAINT grants_amount_check CHECK (amount <> 0);
