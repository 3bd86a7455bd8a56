#!lua
--[[
bet.lua: place one parimutuel bet atomically (debit, pools, bet list, outbox, idempotency).

All KEYS live in the player's bucket N (hash tag {bN}, see scripts/lua/README.md):
  KEYS[1] tp:{bN}:bal                       HASH user_id -> balance (minor units)
  KEYS[2] tp:{bN}:idem:<user_id>:<key>      STRING idempotency record
  KEYS[3] tp:{bN}:round:<round_id>:state    HASH state, locks_at (written by the round scripts)
  KEYS[4] tp:{bN}:pool:<round_id>           HASH band -> stake sum, "total"
  KEYS[5] tp:{bN}:ustake:<round_id>         HASH "<user_id>:<band>" -> stake sum
  KEYS[6] tp:{bN}:bets:<round_id>:<band>    HASH bet_id -> "<user_id>:<stake>"
  KEYS[7] tp:{bN}:outbox                    STREAM money events
  KEYS[8] tp:{bN}:seq                       STRING bet counter of the bucket
  KEYS[9] tp:{bN}:ubets:<user_id>           LIST "bet_id:round_id:band:stake", newest first,
                                            trimmed to 1000 (GET /api/v1/me/bets)
  KEYS[10] tp:{bN}:net                      ZSET user_id -> net winnings (-stake here,
                                            +payout/refund at settlement; leaderboard)
ARGV (decimal integers without sign or leading zeros unless noted):
  [1] user_id  [2] round_id  [3] band  [4] stake
  [5] idempotency key (1..128 bytes, as sent by the client; also part of KEYS[2])
  [6] request hash: 64 lowercase hex = SHA-256 of "v1|<round_id>|<band>|<stake>"
  [7] now_ms  [8] number of bands  [9] min_stake  [10] max_stake
  [11] idempotency TTL in seconds  [12] bucket N  [13] number of buckets B
Returns a flat array:
  {"ok", bet_id, round_id, band, stake, balance, replayed}   all integers but "ok";
      bet_id = seq * B + N (unique across buckets, increasing per player); balance is the
      player's balance right after THIS bet; replayed = 1 when the reply comes from the
      idempotency record (no effect at all), 0 for a new bet.
  {"err", code}  with code one of: idempotency_conflict, round_not_found, round_not_open,
      invalid_band, invalid_stake, insufficient_funds, invalid_request.
  A malformed server-side argument (user_id, hash, now, bounds, TTL, bucket, a KEYS name that
  does not match the layout) is a bug in the caller: it raises a Redis error "ERR tp_bet: ...".

Every check runs before the first write: Redis does not roll a script back, so a rejected bet
must leave no trace (only successful bets store an idempotency record; see README).
]]

local function uint(s)
    -- A canonical non-negative decimal integer below 10^15 (exact in a Lua double), else nil.
    if type(s) ~= 'string' or #s == 0 or #s > 15 or not s:match('^%d+$') then
        return nil
    end
    if #s > 1 and s:sub(1, 1) == '0' then
        return nil
    end
    return tonumber(s)
end

local function bug(what)
    return redis.error_reply('ERR tp_bet: ' .. what)
end

local function str(n)
    -- tostring() would print large integers as 1.2e+14; %.0f is exact for integral doubles.
    return string.format('%.0f', n)
end

local user_s, round_s, band_s, stake_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idem_key, req_hash = ARGV[5], ARGV[6]

local user = uint(user_s)
local now = uint(ARGV[7])
local nbands = uint(ARGV[8])
local min_stake, max_stake = uint(ARGV[9]), uint(ARGV[10])
local ttl = uint(ARGV[11])
local bucket, nbuckets = uint(ARGV[12]), uint(ARGV[13])

if #KEYS ~= 10 or #ARGV ~= 13 then
    return bug('want 10 KEYS and 13 ARGV')
end
if not user or user == 0 then return bug('bad user_id') end
if type(req_hash) ~= 'string' or #req_hash ~= 64 or req_hash:match('[^0-9a-f]') then
    return bug('bad request hash')
end
if not now then return bug('bad now_ms') end
if not nbands or nbands < 1 then return bug('bad band count') end
if not min_stake or not max_stake or min_stake < 1 or min_stake > max_stake then
    return bug('bad stake bounds')
end
if not ttl or ttl < 1 then return bug('bad idempotency ttl') end
if not nbuckets or nbuckets < 1 or not bucket or bucket >= nbuckets then
    return bug('bad bucket')
end
if user % nbuckets ~= bucket then return bug('user_id not in this bucket') end

-- The client-supplied parts of key names: a key outside the layout would be a different slot
-- or a different round, so refuse rather than touch it.
if type(idem_key) ~= 'string' or #idem_key < 1 or #idem_key > 128 or not uint(round_s) then
    return {'err', 'invalid_request'}
end

local p = 'tp:{b' .. ARGV[12] .. '}:'
if KEYS[1] ~= p .. 'bal' or KEYS[2] ~= p .. 'idem:' .. user_s .. ':' .. idem_key
    or KEYS[3] ~= p .. 'round:' .. round_s .. ':state' or KEYS[4] ~= p .. 'pool:' .. round_s
    or KEYS[5] ~= p .. 'ustake:' .. round_s
    or KEYS[6] ~= p .. 'bets:' .. round_s .. ':' .. band_s
    or KEYS[7] ~= p .. 'outbox' or KEYS[8] ~= p .. 'seq'
    or KEYS[9] ~= p .. 'ubets:' .. user_s or KEYS[10] ~= p .. 'net' then
    return bug('KEYS do not match the key layout for this bucket/user/round/band')
end

-- (1) Idempotency: a stored success is replayed exactly, whatever the round state is now.
local rec = redis.call('GET', KEYS[2])
if rec then
    local h, b_id, r_id, bnd, stk, bal =
        rec:match('^1|(%x+)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)$')
    if not h then return bug('corrupt idempotency record') end
    if h ~= req_hash then return {'err', 'idempotency_conflict'} end
    return {'ok', tonumber(b_id), tonumber(r_id), tonumber(bnd), tonumber(stk), tonumber(bal), 1}
end

-- (2) The round must be OPEN in this bucket's copy of its state, and not past its lock time.
local st = redis.call('HMGET', KEYS[3], 'state', 'locks_at')
if not st[1] then return {'err', 'round_not_found'} end
local locks_at = uint(st[2])
if st[1] ~= 'open' or not locks_at or now >= locks_at then
    return {'err', 'round_not_open'}
end

-- (3) Band and stake (the C side validated them already; this is defence in depth).
local band = uint(band_s)
if not band or band >= nbands then return {'err', 'invalid_band'} end
local stake = uint(stake_s)
if not stake or stake < min_stake or stake > max_stake then return {'err', 'invalid_stake'} end

-- (4) Funds. A player without a balance field has nothing to bet.
local bal = tonumber(redis.call('HGET', KEYS[1], user_s) or '0')
if bal < stake then return {'err', 'insufficient_funds'} end

-- Writes: nothing below can fail for a well-formed key space (WRONGTYPE would be a layout bug).
local new_bal = redis.call('HINCRBY', KEYS[1], user_s, '-' .. stake_s)
local seq = redis.call('INCR', KEYS[8])
local bet_id = str(seq * nbuckets + bucket)
redis.call('HINCRBY', KEYS[4], band_s, stake_s)
redis.call('HINCRBY', KEYS[4], 'total', stake_s)
redis.call('HINCRBY', KEYS[5], user_s .. ':' .. band_s, stake_s)
redis.call('HSET', KEYS[6], bet_id, user_s .. ':' .. stake_s)
redis.call('XADD', KEYS[7], '*', 'type', 'bet', 'bet_id', bet_id, 'user_id', user_s,
           'round_id', round_s, 'band', band_s, 'stake', stake_s, 'balance', str(new_bal),
           'ts', ARGV[7])
redis.call('LPUSH', KEYS[9], table.concat({bet_id, round_s, band_s, stake_s}, ':'))
redis.call('LTRIM', KEYS[9], 0, 999)
redis.call('ZINCRBY', KEYS[10], '-' .. stake_s, user_s)
redis.call('SET', KEYS[2], table.concat({'1', req_hash, bet_id, round_s, band_s, stake_s,
                                         str(new_bal)}, '|'), 'EX', ARGV[11])
return {'ok', tonumber(bet_id), tonumber(round_s), band, stake, new_bal, 0}
