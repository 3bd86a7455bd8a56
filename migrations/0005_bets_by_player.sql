-- A player's bets by bet id, newest first: GET /me/bets reads here past the newest bets Redis
-- keeps per player (the bet script trims that list). A bet id is a decimal integer without
-- leading zeros that grows with time within the player's bucket, so ordering by (length, bytes)
-- is its numeric order, the list's order; the text order of `id` alone is not. No cast: a
-- non-numeric id stays storable.
CREATE INDEX IF NOT EXISTS bets_user_bet ON bets (user_id, length(id), (id COLLATE "C"));
