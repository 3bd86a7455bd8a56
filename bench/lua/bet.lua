#!lua
--[[
bet.lua: place one parimutuel bet atomically (debit, pools, bet list, outbox, idempotency).
The one-bet reference the benches and test_lua_batch.py compare bet_batch.lua with, kept in the
layout of its time: it writes a bet into the band's HASH tp:{bN}:bets:<round_id>:<band>, where
bet_batch.lua appends it to the LIST tp:{bN}:betl:<round_id>:<band> since session 26 (both are
read by settlement: scripts/lua/README.md).

All KEYS live in the player's bucket N (hash tag {bN}, see scripts/lua/README.md):
  KEYS[1] tp:{bN}:bal                       HASH user_id -> balance (minor units)
  KEYS[2] tp:{bN}:idem:<user_id>:<key>      STRING idempotency record
  KEYS[3] tp:{bN}:round:<round_id>:state    HASH state, locks_at, nbands, min_stake, max_stake
                                            (bucket_state.lua: the round's copy and rules)
  KEYS[4] tp:{bN}:pool:<round_id>           HASH band -> stake sum, "total"
  KEYS[5] tp:{bN}:bets:<round_id>:<band>    HASH bet_id -> "<user_id>:<stake>"
  KEYS[6] tp:{bN}:outbox                    STREAM money events
  KEYS[7] tp:{bN}:seq                       STRING bet counter of the bucket
  KEYS[8] tp:{bN}:ubets:<user_id>           LIST "bet_id:round_id:band:stake", newest first,
                                            trimmed to 1000 (GET /api/v1/me/bets)
  KEYS[9] tp:{bN}:net                       ZSET user_id -> net winnings (-stake here,
                                            +payout/refund at settlement; leaderboard)
  KEYS[10] tp:{bN}:excl                     HASH user_id -> self-exclusion end, Unix ms
                                            (written by exclusion.lua; read only here)
  KEYS[11] tp:{bN}:paused                   STRING present while the operator has paused the
                                            game (`tickpool admin pause`; see pause.lua)
ARGV (decimal integers without sign or leading zeros unless noted):
  [1] user_id  [2] round_id  [3] band  [4] stake
  [5] idempotency key (1..128 bytes, as sent by the client; also part of KEYS[2])
  [6] request hash: 64 lowercase hex = SHA-256 of "v1|<round_id>|<band>|<stake>"
  [7] now_ms  [8] number of bands  [9] min_stake  [10] max_stake  (8-10: the config's, used
      only for a round whose state copy predates per-round rules; a round's own band count and
      stake bounds, fixed when it opened, are in its copy, KEYS[3])
  [11] idempotency TTL in seconds  [12] bucket N  [13] number of buckets B
Returns a flat array:
  {"ok", bet_id, round_id, band, stake, balance, replayed}   all integers but "ok";
      bet_id = seq * B + N (unique across buckets, increasing per player); balance is the
      player's balance right after THIS bet; replayed = 1 when the reply comes from the
      idempotency record (no effect at all), 0 for a new bet.
  {"err", code}  with code one of: idempotency_conflict, game_paused, self_excluded, round_not_found,
      round_not_open, invalid_band, invalid_stake, insufficient_funds, pool_full,
      invalid_request.
  pool_full: this bucket's pool of the round would exceed floor(POOL_MAX / B), so the round's
      total over all buckets stays <= POOL_MAX = 4 * 10^15 < 2^52, where every settlement
      number (T, W, pot, floor(s * pot / W) in settle_page.lua, the receipt) is an exact Lua
      double. src/base/config.c refuses a max_stake above floor(POOL_MAX / B), so a lone bet
      of max_stake always fits (TP_CONFIG_POOL_MAX is this constant on the C side).
  A malformed server-side argument (user_id, hash, now, bounds, TTL, bucket, a KEYS name that
  does not match the layout) is a bug in the caller: it raises a Redis error "ERR tp_bet: ...".

Every check runs before the first write: Redis does not roll a script back, so a rejected bet
must leave no trace (only successful bets store an idempotency record; see README).

Cost (bench/README.md "Bet path profile"): Redis runs this script for every bet, single-threaded,
so it is written for instruction count: each redis.call costs far more than the command itself
(argument and reply conversion, AOF propagation of writes), hence no write nobody reads and LTRIM
only when the list is over its bound; each check is one pattern match or comparison, and strings
are built with one `..` chain (one concatenation) rather than table.concat.
]]

local KEYS, ARGV = KEYS, ARGV
local call = redis.call
local format = string.format

local function uint(s)
    -- A canonical non-negative decimal integer below 10^15 (exact in a Lua double), else nil.
    -- One anchored pattern: "0", or a non-zero digit then digits (no sign, no leading zeros).
    if #s > 15 then return nil end
    if s:find('^[1-9]%d*$') then return tonumber(s) end
    if s == '0' then return 0 end
    return nil
end

local POOL_MAX = 4000000000000000

local function bug(what)
    return redis.error_reply('ERR tp_bet: ' .. what)
end

-- Counted first: every ARGV element is then a string (Redis passes nothing else).
if #KEYS ~= 11 or #ARGV ~= 13 then
    return bug('want 11 KEYS and 13 ARGV')
end

local user_s, round_s, band_s, stake_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idem_key, req_hash, now_s, bucket_s = ARGV[5], ARGV[6], ARGV[7], ARGV[12]

local user = uint(user_s)
if not user or user == 0 then return bug('bad user_id') end
if #req_hash ~= 64 or req_hash:find('[^0-9a-f]') then return bug('bad request hash') end
local now = uint(now_s)
if not now then return bug('bad now_ms') end
local nbands = uint(ARGV[8])
if not nbands or nbands < 1 then return bug('bad band count') end
local min_stake, max_stake = uint(ARGV[9]), uint(ARGV[10])
if not min_stake or not max_stake or min_stake < 1 or min_stake > max_stake then
    return bug('bad stake bounds')
end
local ttl = uint(ARGV[11])
if not ttl or ttl < 1 then return bug('bad idempotency ttl') end
local bucket, nbuckets = uint(bucket_s), uint(ARGV[13])
if not nbuckets or nbuckets < 1 or not bucket or bucket >= nbuckets then
    return bug('bad bucket')
end
if user % nbuckets ~= bucket then return bug('user_id not in this bucket') end

-- The client-supplied parts of key names: a key outside the layout would be a different slot
-- or a different round, so refuse rather than touch it.
if #idem_key < 1 or #idem_key > 128 or not uint(round_s) then
    return {'err', 'invalid_request'}
end

local p = 'tp:{b' .. bucket_s .. '}:'
if KEYS[1] ~= p .. 'bal' or KEYS[2] ~= p .. 'idem:' .. user_s .. ':' .. idem_key
    or KEYS[3] ~= p .. 'round:' .. round_s .. ':state' or KEYS[4] ~= p .. 'pool:' .. round_s
    or KEYS[5] ~= p .. 'bets:' .. round_s .. ':' .. band_s
    or KEYS[6] ~= p .. 'outbox' or KEYS[7] ~= p .. 'seq'
    or KEYS[8] ~= p .. 'ubets:' .. user_s or KEYS[9] ~= p .. 'net' or KEYS[10] ~= p .. 'excl'
    or KEYS[11] ~= p .. 'paused' then
    return bug('KEYS do not match the key layout for this bucket/user/round/band')
end

-- (1) Idempotency: a stored success is replayed exactly, whatever the round state is now.
local rec = call('GET', KEYS[2])
if rec then
    local h, b_id, r_id, bnd, stk, bal =
        rec:match('^1|(%x+)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)$')
    if not h then return bug('corrupt idempotency record') end
    if h ~= req_hash then return {'err', 'idempotency_conflict'} end
    return {'ok', tonumber(b_id), tonumber(r_id), tonumber(bnd), tonumber(stk), tonumber(bal), 1}
end

-- (1b) The operator's pause: no new bet while the game is paused, on any worker or host, from
-- the moment `tickpool admin pause` wrote this bucket's copy. A replay above still answers.
if call('EXISTS', KEYS[11]) == 1 then return {'err', 'game_paused'} end

-- (2) A player who excluded themselves bets nothing until the exclusion's end. Checked here, in
-- the script that debits, so no bet can slip in after exclusion.lua answered (any worker, any
-- host); a replay above is not a new bet and still gets its first answer.
local excl = call('HGET', KEYS[10], user_s)
if excl and now < tonumber(excl) then return {'err', 'self_excluded'} end

-- (3) The round's copy in this bucket: its state and its own rules (bucket_state.lua).
local st = call('HMGET', KEYS[3], 'state', 'locks_at', 'nbands', 'min_stake', 'max_stake')
if not st[1] then return {'err', 'round_not_found'} end

-- (4) Band and stake against the ROUND's rules, fixed when it opened: after a restart with new
-- band edges or stake bounds the config's are not the round's. ARGV[8..10] only stand in for a
-- copy written before rounds carried them. The C side checks only the shape (integers, band
-- below 16, stake of 1..15 digits): this is the authority. Bad input still goes before a
-- closed round (invalid_stake, not round_not_open), as when the C side knew the bounds.
local band = uint(band_s)
local round_nbands = st[3] and uint(st[3]) or nbands
if not band or band >= round_nbands then return {'err', 'invalid_band'} end
local stake = uint(stake_s)
local lo = st[4] and uint(st[4]) or min_stake
local hi = st[5] and uint(st[5]) or max_stake
if not stake or stake < lo or stake > hi then return {'err', 'invalid_stake'} end

-- (5) The round must be OPEN in this copy, and not past its lock time.
local locks_at = st[2] and uint(st[2])
if st[1] ~= 'open' or not locks_at or now >= locks_at then
    return {'err', 'round_not_open'}
end

-- (6) Funds. A player without a balance field has nothing to bet.
local bal = tonumber(call('HGET', KEYS[1], user_s) or '0')
if bal < stake then return {'err', 'insufficient_funds'} end

-- (7) The pool bound (see pool_full above). floor(POOL_MAX / B) is exact: the quotient is below
-- 2^52 and at least 1/B from the next integer, more than half its ulp.
local pooled = tonumber(call('HGET', KEYS[4], 'total') or '0')
if pooled + stake > math.floor(POOL_MAX / nbuckets) then return {'err', 'pool_full'} end

-- Writes: nothing below can fail for a well-formed key space (WRONGTYPE would be a layout bug).
-- Numbers are formatted here (%.0f: exact for integral doubles; tostring would print 1.2e+14)
-- and every argument is passed as a string, so Redis does not format them again.
local neg = '-' .. stake_s
local new_bal = call('HINCRBY', KEYS[1], user_s, neg)
local bal_s = format('%.0f', new_bal)
local bet_id = format('%.0f', call('INCR', KEYS[7]) * nbuckets + bucket)
call('HINCRBY', KEYS[4], band_s, stake_s)
call('HINCRBY', KEYS[4], 'total', stake_s)
call('HSET', KEYS[5], bet_id, user_s .. ':' .. stake_s)
call('XADD', KEYS[6], '*', 'type', 'bet', 'bet_id', bet_id, 'user_id', user_s,
     'round_id', round_s, 'band', band_s, 'stake', stake_s, 'balance', bal_s, 'ts', now_s,
     'idem_key', idem_key)
-- The list holds at most 1000 entries after every bet; LTRIM only when this push went over.
if call('LPUSH', KEYS[8], bet_id .. ':' .. round_s .. ':' .. band_s .. ':' .. stake_s) > 1000 then
    call('LTRIM', KEYS[8], '0', '999')
end
call('ZINCRBY', KEYS[9], neg, user_s)
call('SET', KEYS[2], '1|' .. req_hash .. '|' .. bet_id .. '|' .. round_s .. '|' .. band_s .. '|'
     .. stake_s .. '|' .. bal_s, 'EX', ARGV[11])
return {'ok', tonumber(bet_id), tonumber(round_s), band, stake, new_bal, 0}
