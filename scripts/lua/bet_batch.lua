#!lua
--[[
bet_batch.lua: admit N bets of one bucket and one round atomically, each with its own outcome:
the same answers, balances, pools and bets as placing them one by one, in ARGV order.

KEYS, all in bucket N (hash tag {bN}, see scripts/lua/README.md):
  KEYS[1] tp:{bN}:bal                       HASH user_id -> balance (minor units)
  KEYS[2] tp:{bN}:idem:<round_id>           HASH "<user_id>:<key>" -> idempotency record,
                                            written by versions before the records moved into
                                            the hot index: read only for a key whose entry
                                            names this round and carries no record, never
                                            written
  KEYS[3] tp:{bN}:round:<round_id>:state    HASH state, locks_at, nbands, min_stake, max_stake
                                            (bucket_state.lua: the round's copy and rules)
  KEYS[4] tp:{bN}:pool:<round_id>           HASH band -> stake sum, "total"
  KEYS[5] tp:{bN}:outbox                    STREAM money events
  KEYS[6] tp:{bN}:seq                       STRING bet counter of the bucket
  KEYS[7] tp:{bN}:netlog                    LIST, the leaderboard's stakes log: one entry per
                                            call with an accepted bet, "<user_id> <sum>" pairs
                                            of its players (net_fold.lua, which folds it into
                                            the ZSET tp:{bN}:net)
  KEYS[8] tp:{bN}:excl                      HASH user_id -> self-exclusion end, Unix ms
  KEYS[9] tp:{bN}:paused                    STRING present while the operator has paused the
                                            game (`tickpool admin pause`; see pause.lua)
  KEYS[10] tp:{bN}:disabled                 HASH user_id -> when an operator disabled the
                                            account (`tickpool admin disable`; account_flag.lua)
  KEYS[11] tp:{bN}:idemhot                  HASH "<user_id>:<key>" ->
                                            "<round_id>:<placed_ms>|<record>", the hot key
                                            index: the round each key of a round still in Redis
                                            bet on, and the key's idempotency record (an older
                                            version's entry: "<round_id>:<placed_ms>", its
                                            record in KEYS[2]); archival removes a round's
                                            entries, idem_unindex.lua
  KEYS[12] tp:{bN}:idemfilter:<d-1>:1023   \ the last shard of an older version's per-day
  KEYS[13] tp:{bN}:idemfilter:<d>:1023       > filter of day d - 1, d, d + 1 (d = floor(now_ms /
  KEYS[15] tp:{bN}:idemfilter:<d+1>:1023    /  (TTL * 1000))): while any exists, an older
                                            leader may archive into that layout, so every bet
                                            the filter would be asked about is "check" (read
                                            only: never written here)
  KEYS[14] tp:{bN}:idemslots:1023           the filter's last shard: its size is every
                                            shard's, and it exists once the leader built
                                            every shard ("whole": archival writes only then)
  KEYS[16] tp:{bN}:idemyoung                HASH, the hot key index's young part: the same
                                            entries as KEYS[11], where this script inserts
                                            them while a fork child runs (after it, only the
                                            entries of keys still there) until they are
                                            promoted into KEYS[11] (below); a key's entry here,
                                            if any, is newer than its entry in KEYS[11] and wins
  then one tp:{bN}:betl:<round_id>:<band> (LIST "<bet_id>:<user_id>:<stake>", appended) per
  distinct band of the batch, in order of first appearance in ARGV,
  then one tp:{bN}:ubets:<user_id> (LIST, GET /me/bets) per distinct user, same order,
  then per distinct filter shard s of the bets (same order) tp:{bN}:idemslots:<s>: STRING,
  three days' blocked Bloom filters of the keys archived in the day, 5 bits of one 32-bit word
  per key, interleaved by word: day d's word i at bytes 12i + 4 (d mod 3) .. + 3 (read only:
  archival writes day d's, idem_unindex.lua; the leader zeroes day d + 1's during day d,
  idem_slots.lua). Until the last shard (KEYS[14]) exists no key was archived into any shard:
  the filter holds nothing; once it exists a missing shard (none is ever deleted) is "check".
ARGV (decimal integers without sign or leading zeros):
  [1] round_id  [2] now_ms  [3] number of bands  [4] min_stake  [5] max_stake  (3-5: the
      config's, used only for a round whose state copy predates per-round rules; a round's own
      band count and stake bounds, fixed when it opened, are in its copy, KEYS[3])
  [6] idempotency TTL in seconds  [7] bucket N  [8] number of buckets B  [9] n bets (>= 1)
  [10] 1: skip the filter (the caller found no archived bet of these keys), else 0, or
      "0:<bytes>": each bet's position carries its words' byte range in a shard of <bytes>
      bytes (whole 12-byte triples of words, > 0), used when the shards have that size
  then 5 per bet: user_id, band, stake, idempotency key (1..128 bytes of printable ASCII, as
  sent by the client: the caller checks the bytes, the script length and newline), and the
  key's filter position, hashed by the caller from the SHA-1 of "<user_id>:<key>"
  (src/store/keys.c tp_keys_idem_pos): 10 bytes, the word (0 .. 2^32-1, taken modulo the
  shard's words) and the mask (the 5 bits, nonzero) as two big-endian 32-bit integers, then
  the shard (0 .. 1023) as a big-endian 16-bit integer; with ARGV[10] "0:<bytes>", then one
  byte L (> 0), the first byte of the word's three days in a shard of that size, (word mod
  bytes / 12) * 12, as L decimal digits (tp_keys_idem_byte_offset), then their last byte, that
  + 11, in decimal (at least one digit): the one GETRANGE that reads today's and yesterday's
  word. The caller's, checked here only for
  their shape (a range past a shard's end would read fewer bytes, a silent miss:
  tests/unit/store/test_scripts.c pins the C formula, tests/integ/test_lua_batch.py that it
  reads the words the script would; digits that are none raise GETRANGE's error). The
  request (round, band, stake) is
  the bet's body: a key's record keeps its band and stake, so a replay is told from a conflict
  by those.
Returns a flat array of 2n values, two per bet in ARGV order: what bet.lua answered, less what
the caller sent (round, band and stake are the request's, a replay's included):
  bet_id, balance      accepted now (integers)
  -bet_id, balance     a replay: the key's accepted bet, with the balance it answered then
  "check", 0  the key is not in the hot index but the filter says it may have been accepted
      on an archived round within the TTL: nothing was admitted for this bet; the caller asks
      Postgres (a replay, a conflict, or a false positive sent again with ARGV[10] = 1).
  code, 0  a refusal: idempotency_conflict, game_paused, self_excluded, account_disabled,
      round_not_found, round_not_open, invalid_band, invalid_stake, insufficient_funds, pool_full,
      invalid_request.
  A malformed server-side argument, or a KEYS count other than the one above, is a caller bug:
  the whole call raises "ERR tp_bet_batch: ..." before any write (ARGV 3-5 are parsed, and so
  can raise, only for a round whose copy has no rules of its own). The KEYS names are not
  compared with the layout here: the one caller builds them from the ARGV it passes (below).
  ARGV 6-8 are read with tonumber (an integer in range, whatever its spelling: only the server
  writes them). A round copy (KEYS[3]) whose locks_at or rule is not numeric text (corrupted by
  hand) raises a Lua error, also before any write; numeric text converts as strtod reads it
  (bucket_state.lua writes the server's decimals).

Semantics (scripts/lua/README.md "bet_batch.lua"): bets are evaluated one after the other, so
a player's second bet sees the first one's debit and a repeated (user, key) is a replay of the
first when that one was accepted, or idempotency_conflict when the key's accepted bet of the
last TTL was on another round still in Redis (the hot index, KEYS[11]), or "check" when it
may have been on an archived one (the filter: today's or yesterday's word of its shard holds
it, or an older version's per-day filter exists, or the filter is whole and the shard is
missing); one bet's refusal never touches another. Every check runs before the first write,
and the writes are aggregated: one HSET per hash (the pool's: its bands and total, read before), one RPUSH per band of the round's bets
lists (appended, never a hash's random slot: scripts/lua/README.md), one INCRBY of the
sequence, one XADD carrying every accepted bet, one RPUSH of the players' stakes to the
leaderboard's log, one LPUSH per player (and an LTRIM past UBETS_KEEP + UBETS_SLACK), and one HSET
of the hot index, whose entries carry the records ("<bet_id>|<band>|<stake>|<balance>"; an
older version's "1|<hash>|<bet_id>|<round_id>|<band>|<stake>|<balance>" in KEYS[2] still
replays). Redis runs this for every batch single-threaded, so per-bet work is kept to table
lookups and one string per entry (the filter's hash is the caller's). The filter is never
written or created here: a key needs it only once its records and hot entry are gone, so
archival sets its bits in the step that removes its hot entry (idem_unindex.lua; the window
rule: scripts/lua/README.md "idem_unindex.lua").
]]

local KEYS, ARGV = KEYS, ARGV
local call = redis.call
local format = string.format
local tonumber = tonumber

local function uint(s)
    -- A canonical non-negative decimal integer below 10^15 (exact in a Lua double), else nil.
    if #s > 15 then return nil end
    -- `s + 0` converts with one strtod call, tonumber(s) with two (it asks lua_isnumber
    -- first); the pattern has made sure s converts. Strings Redis returns (balances, pool sums,
    -- times our scripts wrote) are converted the same way below.
    if s:find('^[1-9]%d*$') then return s + 0 end
    if s == '0' then return 0 end
    return nil
end

local POOL_MAX = 4000000000000000
local SHARD_MAX = 1023 -- of 1024 shards (TP_KEYS_IDEM_SHARDS)
-- Entries of a player's GET /me/bets list kept in Redis (TP_PLAYERS_BETS_HOT in
-- include/tickpool/api/players.h must not be higher; readers take the newest UBETS_KEEP). The
-- list is trimmed back to UBETS_KEEP once it holds more than UBETS_KEEP + UBETS_SLACK, so a
-- player betting once per call costs an LTRIM (a write command) every 26th bet, not every one.
local UBETS_KEEP, UBETS_SLACK = 50, 25
-- The hot key index's young part is promoted PROMOTE_CHUNK entries a call after a fork
-- child's exit: an entry's first write to a page of the big part's table then un-protects it (a
-- fault), so a smaller chunk spreads those faults over more calls; a child's ~25k entries take
-- ~200 calls (bench/README.md "Session 28: the young part's drain after a rewrite").
-- A string, the count as HRANDFIELD is sent it: the script never computes with it, and a Lua
-- number would be converted to the same bulk string on every call.
local PROMOTE_CHUNK = '128'
-- Balances are kept in Lua doubles across the batch: exact below 2^53.
local EXACT = 9007199254740992

local function bug(what)
    return redis.error_reply('ERR tp_bet_batch: ' .. what)
end

local function int(s)
    -- A server-side number used only as a number (never in a name or a record): an integer
    -- 0 <= x < 2^53, else nil. tonumber costs a one-bet call ~2k, uint's pattern ~1k more.
    local x = tonumber(s)
    if x and x >= 0 and x < EXACT and x % 1 == 0 then return x end
    return nil
end

local round_s, now_s, bucket_s = ARGV[1], ARGV[2], ARGV[7]
local n = tonumber(ARGV[9] or '')
if #KEYS < 19 or not n or n < 1 or n ~= math.floor(n) or #ARGV ~= 10 + 5 * n then
    return bug('want 16 + bands + users + shards KEYS and 10 + 5n ARGV')
end
local now = uint(now_s)
if not now then return bug('bad now_ms') end
local ttl = int(ARGV[6])
if not ttl or ttl < 1 then return bug('bad idempotency ttl') end
local bucket, nbuckets = int(bucket_s), int(ARGV[8])
if not nbuckets or nbuckets < 1 or not bucket or bucket >= nbuckets then
    return bug('bad bucket')
end
-- "0:<bytes>": the caller's ranges are for shards of <bytes> (built under today's
-- configuration); shards of another size (built before a change of game.idem_filter or
-- game.buckets) have their ranges formatted here. Read with tonumber, as ARGV 6-8.
local flag = ARGV[10]
local skip_filter, given = flag == '1', false
if not skip_filter and flag ~= '0' then
    given = flag:sub(1, 2) == '0:' and int(flag:sub(3))
    if not given or given < 12 or given % 12 ~= 0 then return bug('bad filter flag') end
end

-- Per-bet server-side arguments, and the distinct bands and users (their KEYS follow).
-- Per bet: the filter word (before the modulo), mask and shard the caller hashed, and the
-- distinct shards in order (their KEYS follow the users').
-- A user is checked once per batch, when first seen (a canonical decimal, and with more than
-- one bucket its bucket: only then is it converted), a band or stake string parsed once per
-- batch, when first seen (`num`: a band's or stake's number, or false when malformed): a
-- string-to-number conversion costs Redis a strtod
-- call, and a pattern match about 50 instructions per byte (bench/README.md "Session 8"); the
-- word, mask and shard come as bytes for the same reason (sessions 9 and 15: the shard's
-- decimal cost a pattern and an ARGV entry per bet, ~2.7k).
-- `fields` are the records' and hot index's field names, "<user_id>:<key>". `place` maps a
-- user to its place k among the distinct users, `users` k back to the user (users[1..nu], in
-- order): two tables, since one holding both grew by rehashing its string keys at every
-- growth of its array part too (bench/README.md "Session 26"); `bands` maps a band to its KEYS
-- index and lists the pool's fields read: its total, then each band's (bands[1..nb + 1]).
-- Every table costs a one-bet call ~1.4k instructions
-- (bench/README.md "Session 15"), so the filter positions are not kept: the filter loop reads
-- them from ARGV again.
local tobit, byte = bit.tobit, string.byte
local bands, users, place, nb, nu, num = {'total'}, {}, {}, 0, 0, {}
local shards, ns, fields = {}, 0, {}
for i = 0, n - 1 do
    local o = 11 + 5 * i
    local user_s, band_s, pos = ARGV[o], ARGV[o + 1], ARGV[o + 4]
    if not place[user_s] then
        -- uint's test inline, and the number (a strtod) made only for a bucket to check: at
        -- the HTTP ceiling every bet of a call is another player's (bench/README.md "Session 25").
        if #user_s > 15 or not user_s:find('^[1-9]%d*$') then return bug('bad user_id') end
        if nbuckets > 1 and (user_s + 0) % nbuckets ~= bucket then
            return bug('user_id not in this bucket')
        end
        nu = nu + 1; place[user_s] = nu; users[nu] = user_s
    end
    local _, _, _, _, m1, m2, m3, m4, s1, s2, ln = byte(pos, 1, 11)
    if #pos ~= 10 and not given or given and (not ln or ln < 1 or 12 + ln > #pos) or
        (m1 == 0 and m2 == 0 and m3 == 0 and m4 == 0) then
        return bug('bad filter position')
    end
    local sh = s1 * 256 + s2
    if not shards[sh] then
        if sh > SHARD_MAX then return bug('bad filter position') end
        ns = ns + 1; shards[sh] = ns
    end
    if not bands[band_s] then
        nb = nb + 1; bands[band_s] = 16 + nb; bands[nb + 1] = band_s
        if num[band_s] == nil then num[band_s] = uint(band_s) or false end
    end
    fields[i + 1] = user_s .. ':' .. ARGV[o + 3]
end
if #KEYS ~= 16 + nb + nu + ns then return bug('want 16 + bands + users + shards KEYS') end

-- A round id outside the layout would name another round's keys: every bet is refused, as
-- bet.lua refuses it (the key names below are then not checked, nothing is touched).
if not uint(round_s) then
    local out = {}
    for i = 1, n do out[2 * i - 1], out[2 * i] = 'invalid_request', 0 end
    return out
end
-- The KEYS are not compared with the names the layout gives them: the one caller,
-- tp_script_bet_batch (src/store/scripts.c), builds every name with src/store/keys.c from the
-- same round, bucket, window, bands, users and shards it passes in ARGV, and
-- tests/unit/store/test_scripts.c checks what it builds. Building and comparing the ~20 names
-- here cost Redis ~21k instructions per call, more than a tenth of a one-bet call
-- (bench/README.md "Session 10"); their count is checked above.
-- The filter's days: each is one TTL long, and both d and d - 1 are read, so a key that
-- archival set in day d (the one current at archival, idem_unindex.lua) is found from its
-- archival until at least one TTL after it, hence for the rest of its bet's TTL.
local span = ttl * 1000
local sbase = 16 + nb + nu -- shard j's KEY: sbase + j

-- Reads, once per batch: the hot index entry of every (user, key), which carries the key's
-- record; the pause, balances and exclusions of every player, the round state, the pool total.
-- A key's entry is in the young part (KEYS[16]) or the big one (KEYS[11]); where both hold
-- one (the key reused past its TTL while its older entry was already promoted), the young one
-- is the newer, and the answer.
local idx, young = call('HMGET', KEYS[11], unpack(fields)), call('HMGET', KEYS[16], unpack(fields))
for i = 1, n do
    if young[i] then idx[i] = young[i] end
end

-- The hot index: the round a key's newest accepted bet of a round still in Redis named, when,
-- and that bet's record. `hit[i]` for a bet with an entry: that round is not this one and the
-- bet is under a TTL old (the body differs: round_id is part of it); for a bet without one
-- (below): the filters hold its key (one table for both: a table costs ~1.4k). The record of
-- an entry naming this round is the key's answer (a replay, or a conflict of its body); an
-- entry naming another round means the key's newest bet was there (reused after the TTL),
-- whatever this round holds. A key with no hot entry may have been used within the TTL on an
-- archived round: the filters say (below).
-- The record in the entry saves the records hash's HSET per bet and its HMGET on replays
-- (bench/README.md, "Session 13: the idempotency record"). An older version's entry,
-- "<round_id>:<placed_ms>", has its record in the round's records hash, KEYS[2], read then
-- for those keys only.
-- (Records written by a version before the hot index have no entry: docs/operations.md §4,
-- "Upgrading".)
local hit, recs, old = {}, false, false
for i = 1, n do
    local e = idx[i]
    if e then
        local e_round, e_ms, r = e:match('^(%d+):(%d+)|?(.*)$')
        if not e_round then return bug('corrupt idempotency key index entry') end
        if e_round ~= round_s then
            hit[i] = now - e_ms < span
        elseif r ~= '' then
            if not recs then recs = {} end
            recs[i] = r
        else
            old = true
        end
    end
end
if old then
    local rv, mine = call('HMGET', KEYS[2], unpack(fields)), round_s .. ':'
    if not recs then recs = {} end
    for i = 1, n do
        local e = idx[i]
        if e and not recs[i] and e:sub(1, #mine) == mine then recs[i] = rv[i] end
    end
end

-- The filter: blocked Bloom filters of 32-bit words, one per day. A key's hash (the caller's,
-- from the SHA-1 of "<user_id>:<key>") picks a shard, one word in it (modulo the shard's words
-- of a day) and 5 bits in the word: a key with no hot entry whose 5 bits are all set in today's
-- or yesterday's word may have been accepted on an archived round. A shard holds three days,
-- their words interleaved (day d's word i at bytes 12i + 4 (d mod 3)), so one GETRANGE of the
-- word's 12 bytes reads both days a bet needs, at a range that does not depend on the day
-- (bench/README.md "Session 28: both filter days in one key"); the third day is the one the
-- leader zeroes for tomorrow (idem_slots.lua). One call per bet: the bets of a call rarely
-- share a shard (74 bets hit ~71 of 1,024), and grouping them cost more in Lua tables than the
-- few calls it saved. The range goes as strings (Redis formats a number argument with snprintf
-- "%.17g"), the caller's when it gave them for this shard size (ARGV[10]). Every shard has
-- the last shard's size (the leader creates them all, idem_slots.lua), so a changed
-- configuration never misreads one.
local band, floor, sub = bit.band, math.floor, string.sub
-- The pause, an older version's per-day filter and the disabled accounts' hash exist only in
-- rare states (an operator's pause; an upgrade until the leader folded the per-day filter into
-- the shards; Redis drops a hash with its last field: it exists only while some player of the
-- bucket is disabled). One EXISTS tells the usual case (none) in one call, and only otherwise
-- is each one read. EXISTS counts a key once per time it is named: the disabled hash is named 5
-- times, so the count is below 5 when it is missing, and the other four (at most 4) are its
-- remainder modulo 5. Skipping the HMGET of a missing hash is exact (it answers every field
-- nil): a one-bet call ~4k instructions fewer of its ~322k, the names included
-- (bench/README.md "Session 12").
local present = call('EXISTS', KEYS[9], KEYS[12], KEYS[13], KEYS[15], KEYS[10], KEYS[10],
                     KEYS[10], KEYS[10], KEYS[10])
local rare = present % 5 ~= 0
-- The filter's size is read only when some bet needs it.
local need = false
if not skip_filter then
    for i = 1, n do
        if not idx[i] then need = true; break end
    end
end
if need then
    -- An older leader's per-day filter (its last shard: archival's "whole") means keys may be
    -- archived where this script does not read: every bet the filter decides is "check", and
    -- Postgres answers (idem_slots.lua folds that filter into the shards, its last shard last).
    local old = rare and call('EXISTS', KEYS[12], KEYS[13], KEYS[15]) > 0
    -- Each bet with no hot entry (hence no record, above) reads its shard (KEYS sbase + j) once:
    -- today's word and yesterday's. One loop over the bets: a bet's position is read, its mask
    -- made and its range taken once (bench/README.md "Session 25"). No function per read: a
    -- closure over this chunk's locals cost a one-bet call ~6k with its calls (bench/README.md
    -- "Session 12"). The shards' size is the last shard's (KEYS[14]).
    -- A missing last shard means nothing was ever archived into the shards, so every key
    -- reads as absent, as a missing window of the per-day filter did before: archival writes
    -- only once it exists (idem_unindex.lua returns -1 before any write otherwise), the leader
    -- creates it alone and last, after every other shard's step answered
    -- (leader_idemfilter.c), and no shard is ever deleted (no TTL; the zeroing never creates
    -- or deletes one). So on a fresh Redis, or while a slow leader builds, a fresh key needs
    -- no Postgres. A restored snapshot or AOF is a state Redis once had: the same holds in it
    -- (a key archived after it is back in its hot entry, which archival had removed in the
    -- same step). Keys an older version archived are in its per-day filter, whose last shard
    -- makes `old` (above) until the fold moves them in: the fold deletes it in the step that
    -- creates this last shard, so one of the two always answers.
    -- Once it exists: a size under a triple of words, or a shard that reads fewer than 12
    -- bytes (missing, which the leader never leaves; or a range past its end, only a wrong
    -- offset), holds every key: "check", never a silent miss.
    -- The caller's ranges hold for shards of the size it gave: a '%d' fewer per bet
    -- (bench/README.md "Session 22").
    local len = call('STRLEN', KEYS[14])
    local day = floor(now / span)
    local t, y = 1 + 4 * (day % 3), 1 + 4 * ((day + 2) % 3) -- today's, yesterday's first byte
    local triples = floor(len / 12)
    if old or len > 0 then
        for i = 1, n do
            if not idx[i] then
                local hold = old or triples < 1
                if not hold then
                    local p = ARGV[10 + 5 * i]
                    local w1, w2, w3, w4, m1, m2, m3, m4, s1, s2, ln = byte(p, 1, 11)
                    local mask = tobit(((m1 * 256 + m2) * 256 + m3) * 256 + m4)
                    local a, z
                    if len == given then
                        a, z = sub(p, 12, 11 + ln), sub(p, 12 + ln)
                    else
                        -- Shards not of the size the caller's ranges are for (built before a
                        -- change of game.idem_filter or game.buckets).
                        local x = (((w1 * 256 + w2) * 256 + w3) * 256 + w4) % triples * 12
                        a, z = format('%d', x), format('%d', x + 11)
                    end
                    local g = call('GETRANGE', KEYS[sbase + shards[s1 * 256 + s2]], a, z)
                    if #g < 12 then
                        hold = true
                    else
                        local b1, b2, b3, b4 = byte(g, t, t + 3)
                        hold = band(((b1 * 256 + b2) * 256 + b3) * 256 + b4, mask) == mask
                        if not hold then
                            b1, b2, b3, b4 = byte(g, y, y + 3)
                            hold = band(((b1 * 256 + b2) * 256 + b3) * 256 + b4, mask) == mask
                        end
                    end
                end
                if hold then hit[i] = true end
            end
        end
    end
end
local paused = rare and call('EXISTS', KEYS[9]) == 1
local balv = call('HMGET', KEYS[1], unpack(users, 1, nu))
local exclv = call('HMGET', KEYS[8], unpack(users, 1, nu))
-- Accounts an operator disabled (account_flag.lua): workers refuse their tokens in memory too,
-- this covers the moment before a worker hears of it. Read only while the hash exists (above).
local disabled = present >= 5 and call('HMGET', KEYS[10], unpack(users, 1, nu))
-- By the user's place k (place[user_s]), in the replies' own tables.
local bal, excl = balv, exclv
for k = 1, nu do
    local b = (balv[k] or 0) + 0
    if b >= EXACT then return bug('balance beyond 2^53') end
    bal[k] = b
    excl[k] = exclv[k] and tonumber(exclv[k])
end
-- The round's copy: its state and its own rules (bucket_state.lua), fixed when it opened; after
-- a restart with new band edges or stake bounds the config's (ARGV[3..5]) are not the round's
-- and only stand in for a copy written before rounds carried them. Its numbers are the
-- server's decimals as bucket_state.lua wrote them, converted with `s + 0` (one strtod, ~0.9k;
-- uint's pattern ~2k more, four times a call): a copy whose number is not one (corrupted
-- by hand) raises a Lua error before any write, the whole call refused (bench/README.md
-- "Session 15").
local st = call('HMGET', KEYS[3], 'state', 'locks_at', 'nbands', 'min_stake', 'max_stake')
local found, open = st[1] and true or false, false
if found then
    local locks_at = st[2] and st[2] + 0
    open = st[1] == 'open' and locks_at and now < locks_at or false
end
local round_nbands, lo, hi = st[3] and st[3] + 0, st[4] and st[4] + 0, st[5] and st[5] + 0
if not round_nbands or not lo or not hi then
    -- The config's stand in (parsed only then: each number costs a pattern and a strtod).
    local nbands = uint(ARGV[3])
    if not nbands or nbands < 1 then return bug('bad band count') end
    local min_stake, max_stake = uint(ARGV[4]), uint(ARGV[5])
    if not min_stake or not max_stake or min_stake < 1 or min_stake > max_stake then
        return bug('bad stake bounds')
    end
    round_nbands, lo, hi = round_nbands or nbands, lo or min_stake, hi or max_stake
end
-- The pool: its total and every band of the batch in one read, written back in one HSET
-- (one HINCRBY per band and one of the total cost a write command each). Each value is
-- converted before the first write (the total here, a band at its first accepted bet), so a
-- malformed one fails the call whole instead of after the balances were written.
local pv = call('HMGET', KEYS[4], unpack(bands, 1, nb + 1))
local pooled = (pv[1] or 0) + 0
local pool_cap = math.floor(POOL_MAX / nbuckets)

-- Each bet in order, its answer into out[2i - 1], out[2i]. Accepted bets are listed in `acc`,
-- the k-th as its index in ARGV (acc[2k - 1]) and the balance after it (acc[2k]); `fresh` maps
-- a field accepted in this batch to k (a later duplicate is its replay: out[2i - 1] = false,
-- out[2i] = k until the ids are known); answers of accepted bets are filled in once the bet ids
-- are known. (One list, not a table each: a table costs a small call ~0.4k.)
local out, acc, fresh, nacc, ndup = {}, {}, {}, 0, 0
-- Two bets share a field only with their user (a user id has no ':'): with every user once in
-- the batch, none does, and `fresh`, a string-keyed table growing by rehashing, stays empty.
local dups = nu < n
-- band_pool: a band's pool after the batch; usum: a player's stakes accepted, by its place u
-- (users[u]), nil for none. The players' tables are indexed by their place, not by the user id
-- string: every string-keyed table grows its hash part by rehashing, at the HTTP ceiling a
-- hundred players a call (bench/README.md "Session 26: the bet script's Lua-side cost").
local band_pool, usum = {}, {}
for i = 1, n do
    local o = 6 + 5 * i
    local user_s, band_s, stake_s, key = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
    local f, code, u = fields[i], nil, place[user_s]
    if #key < 1 or #key > 128 or key:find('\n', 1, true) then
        -- Keys are printable ASCII: the caller checks every byte (tp_script_bet_batch,
        -- src/store/scripts.c), which a pattern here cost Redis about 80 instructions per byte.
        -- Here what keeps the outbox entry's lines apart (a plain find).
        code = 'invalid_request'
    elseif dups and fresh[f] then
        -- (1) a repeat of a bet accepted earlier in this batch: its replay, or a conflict.
        local j = acc[2 * fresh[f] - 1]
        local oj = 6 + 5 * j
        if ARGV[oj + 1] ~= band_s or ARGV[oj + 2] ~= stake_s then
            code = 'idempotency_conflict'
        else
            out[2 * i - 1], out[2 * i], ndup = false, fresh[f], ndup + 1
        end
    elseif recs and recs[i] then
        -- (1) a stored success is replayed exactly, whatever the round state is now. The record
        -- is of this round (idem:<round_id>), so the body is the same when band and stake are.
        local r = recs[i]
        local b_id, bnd, stk, b = r:match('^(%d+)|(%d+)|(%d+)|(%d+)$')
        if not b_id then
            -- An older version's record: "1|<hash of the body>|<bet_id>|<round_id>|<band>|
            -- <stake>|<balance>" (the hash is the body's, which round, band and stake are).
            local r_id
            b_id, r_id, bnd, stk, b = r:match('^1|%x+|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)$')
            if not b_id or r_id ~= round_s then return bug('corrupt idempotency record') end
        end
        if bnd ~= band_s or stk ~= stake_s then
            code = 'idempotency_conflict'
        else
            out[2 * i - 1], out[2 * i] = -tonumber(b_id), tonumber(b)
        end
    elseif hit[i] then
        -- (1a) with an entry: the key placed a bet on another round, still in Redis, within the
        -- TTL; (1b) without: perhaps on an archived round: Postgres knows; nothing is admitted.
        code = idx[i] and 'idempotency_conflict' or 'check'
    elseif paused then
        code = 'game_paused' -- (1b) the operator's pause; a replay above still answers
    elseif excl[u] and now < excl[u] then
        code = 'self_excluded' -- (2)
    elseif disabled and disabled[u] then
        code = 'account_disabled' -- (2b) tickpool admin disable
    elseif not found then
        code = 'round_not_found' -- (3)
    else
        -- (4) band and stake against the round's rules, before its state: bad input is
        -- answered as such even for a closed round. The C side checks only their shape.
        local band, stake = num[band_s], num[stake_s]
        if stake == nil then stake = uint(stake_s) or false; num[stake_s] = stake end
        if not band or band >= round_nbands then
            code = 'invalid_band'
        elseif not stake or stake < lo or stake > hi then
            code = 'invalid_stake'
        elseif not open then
            code = 'round_not_open' -- (5)
        elseif bal[u] < stake then
            code = 'insufficient_funds' -- (6)
        elseif pooled + stake > pool_cap then
            code = 'pool_full' -- (7)
        else
            bal[u] = bal[u] - stake
            pooled = pooled + stake
            band_pool[band_s] = (band_pool[band_s] or ((pv[bands[band_s] - 15] or 0) + 0))
                + stake
            usum[u] = (usum[u] or 0) + stake
            nacc = nacc + 1
            acc[2 * nacc - 1], acc[2 * nacc] = i, bal[u]
            if dups then fresh[f] = nacc end
        end
    end
    if code then out[2 * i - 1], out[2 * i] = code, 0 end
end
if nacc == 0 then return out end

-- Writes: nothing below can fail for a well-formed key space. Numbers are formatted once and
-- passed as strings: '%d' (a C long) is exact for every integral double below 2^53 and a tenth
-- of the cost of '%.0f', whose float formatting made two thirds of the script's sprintf time.
local last = call('INCRBY', KEYS[6], nacc)
local first = last - nacc + 1
-- `ubal`: a player's balance after its last accepted bet of the call, as that bet's record
-- wrote it, which is the balance the call leaves (one '%d' fewer per player, ~1.7k); it,
-- `lone`, `pushes` and `ustake` (the stake string of a player's one accepted bet: its sum in the
-- stakes log, unformatted) by the player's place u, as `usum`.
local balw, idxw, lines, bets_by_band, pushes, lone, ubal, ustake = {}, {}, {}, {}, {}, {}, {}, {}
local placed = round_s .. ':' .. now_s .. '|'
for k = 1, nacc do
    local i, b = acc[2 * k - 1], acc[2 * k]
    local o = 6 + 5 * i
    local user_s, band_s, stake_s, key = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
    local id = (first + k - 1) * nbuckets + bucket
    local id_s, bal_s = format('%d', id), format('%d', b)
    local u = place[user_s]
    out[2 * i - 1], out[2 * i] = id, b
    ubal[u] = bal_s
    idxw[2 * k - 1] = fields[i]
    idxw[2 * k] = placed .. id_s .. '|' .. band_s .. '|' .. stake_s .. '|' .. bal_s
    lines[k] = id_s .. ',' .. user_s .. ',' .. band_s .. ',' .. stake_s .. ',' .. bal_s .. ','
        .. key
    local bb = bets_by_band[band_s]
    if not bb then bb = {}; bets_by_band[band_s] = bb end
    bb[#bb + 1] = id_s .. ':' .. user_s .. ':' .. stake_s
    -- A player's first entry goes into `lone`, a list of its entries in `pushes` only from
    -- its second: at the HTTP ceiling nearly every bet of a call is another player's, and a
    -- table each cost ~1.4k instructions (made and collected; bench/README.md "Session 21:
    -- where a batched bet's Redis time goes").
    local e, pu = id_s .. ':' .. round_s .. ':' .. band_s .. ':' .. stake_s, pushes[u]
    if pu then
        pu[#pu + 1] = e
    elseif lone[u] then
        pushes[u] = {lone[u], e}
    else
        lone[u], ustake[u] = e, stake_s
    end
end
-- Replays of a bet accepted in this batch answer what it answered, flagged as a replay.
if ndup > 0 then
    for i = 1, n do
        if out[2 * i - 1] == false then
            local k = out[2 * i]
            out[2 * i - 1], out[2 * i] = -out[2 * acc[2 * k - 1] - 1], acc[2 * k]
        end
    end
end
-- The players with an accepted bet, in their order of first appearance (the order of the
-- writes to distinct fields and lists is no part of what they leave). `netw`: the call's entry of
-- the stakes log, below.
local nw, netw = 0, {}
for u = 1, nu do
    if usum[u] then
        balw[nw + 1], balw[nw + 2], nw = users[u], ubal[u], nw + 2
        netw[nw - 1], netw[nw] = users[u], pushes[u] and format('%d', usum[u]) or ustake[u]
        local k = 16 + nb + u
        -- The list holds at least the newest UBETS_KEEP (older ones: Postgres); LTRIM only when
        -- over by more than the slack.
        local pu, len = pushes[u]
        if pu then
            len = call('LPUSH', KEYS[k], unpack(pu))
        else
            len = call('LPUSH', KEYS[k], lone[u])
        end
        if len > UBETS_KEEP + UBETS_SLACK then
            call('LTRIM', KEYS[k], '0', UBETS_KEEP - 1)
        end
    end
end
call('HSET', KEYS[1], unpack(balw, 1, nw))
-- Net winnings (the leaderboard): the call's players with their accepted stakes, one entry of
-- the stakes log `netlog` (KEYS[7]) that net_fold.lua folds into `net` (the worker after every
-- NETLOG_FOLD_CALLS of its calls to the bucket, and GET /api/v1/leaderboard before it reads);
-- net winnings are `net`'s score less the log's sums. An append of one string, where the
-- ZMSCORE + ZADD of the call's players cost ~12 % of a bet's Redis instructions at the HTTP
-- ceiling, a score formatted and a skiplist node moved per player (bench/README.md "Session 31:
-- the leaderboard's stakes in a log").
call('RPUSH', KEYS[7], table.concat(netw, ' ', 1, nw))
local poolw = {'total', format('%d', pooled)}
for band_s, v in pairs(band_pool) do
    poolw[#poolw + 1] = band_s
    poolw[#poolw + 1] = format('%d', v)
    call('RPUSH', KEYS[bands[band_s]], unpack(bets_by_band[band_s]))
end
call('HSET', KEYS[4], unpack(poolw))
call('XADD', KEYS[5], '*', 'type', 'bets', 'round_id', round_s, 'ts', now_s, 'bets',
     table.concat(lines, '\n'))
-- The hot index entries, each carrying its key's record, live until the round's archival (no
-- TTL: a round archived late, Postgres down for hours, keeps its keys hot, so the hot index
-- never forgets a key whose bet Postgres cannot show yet); archival puts each key in the filter
-- in the step that removes its hot entry (idem_unindex.lua).
-- While a fork child runs (an RDB save, an AOF rewrite: `INFO persistence`) they go into the
-- young part instead: an insert writes a random slot
-- of its hash table, and in the big part (one entry per bet of every hot round, 2^20 slots of
-- 8 bytes at a million bets) every such page written during the child is a page the fork copies
-- (~2,000 of a rewrite's first ~3,000 faults; bench/README.md "Session 27: the hot key index's
-- young part"). Outside a child the big part's pages are the parent's own: an insert there
-- costs no copy (right after the child's exit the first write to each still faults once,
-- un-protecting it: cheaper than a copy), and moving an entry later costs ~8–12k instructions, so
-- bets insert there directly whenever no child runs, also while the young part drains: only a
-- bet whose field has a young entry (the key reused past its TTL) writes the young part then,
-- over that entry. So the big part is never written for a field with a young entry, a field's
-- young entry is always its newest (a field in both: the key reused past its TTL), and the
-- drain moves only the child's entries, however many bets the calls bring (session 27's
-- design sent them to the young part too until it was empty: bench/README.md "Session 28: the
-- young part's drain after a rewrite").
-- Promotion, when no child runs: each call moves PROMOTE_CHUNK young entries (or the rest) into
-- the big part until the young part is empty, each chunk whole in this script: an entry is in
-- one part or the other at every moment. The chunk is HRANDFIELD's distinct fields, not an
-- HSCAN from 0: its moved entries leave emptied buckets at the table's start (the table shrinks
-- only below a tenth full), which every later call's scan walked again, ~2x the moves' own
-- instructions for a child's 25k entries in chunks of 128 (bench/README.md "Session 28: the
-- young part's drain after a rewrite").
local child = call('INFO', 'persistence'):find('_in_progress:1', 1, true)
if child then
    call('HSET', KEYS[16], unpack(idxw))
elseif call('HLEN', KEYS[16]) == 0 then
    call('HSET', KEYS[11], unpack(idxw))
else
    -- After a child, until the young part is empty: an entry whose field has a young one (the
    -- key reused past its TTL) overwrites that one, every other goes into the big part.
    local bigw, yw, nbig, ny = {}, {}, 0, 0
    for k = 1, nacc do
        if young[acc[2 * k - 1]] then
            yw[ny + 1], yw[ny + 2], ny = idxw[2 * k - 1], idxw[2 * k], ny + 2
        else
            bigw[nbig + 1], bigw[nbig + 2], nbig = idxw[2 * k - 1], idxw[2 * k], nbig + 2
        end
    end
    if nbig > 0 then call('HSET', KEYS[11], unpack(bigw, 1, nbig)) end
    if ny > 0 then call('HSET', KEYS[16], unpack(yw, 1, ny)) end
    local kv, names = call('HRANDFIELD', KEYS[16], PROMOTE_CHUNK, 'WITHVALUES'), {}
    if #kv > 0 then
        for j = 1, #kv / 2 do names[j] = kv[2 * j - 1] end
        call('HSET', KEYS[11], unpack(kv))
        call('HDEL', KEYS[16], unpack(names))
    end
end
return out
