#!lua
--[[
grant.lua: credit (or, for an operator's correction, debit) an account once per grant id: the
start balance of a new account, or `tickpool admin grant`. Keeps the bucket's grant ledger,
outbox and, for an operator grant, the admin action record in step, in one atomic step.

All KEYS live in the player's bucket N (hash tag {bN}, see scripts/lua/README.md):
  KEYS[1] tp:{bN}:bal       HASH user_id -> balance (minor units)
  KEYS[2] tp:{bN}:grants    HASH grant_id -> "<user_id>:<amount>" (the ledger; never expires)
  KEYS[3] tp:{bN}:granted   STRING sum of all amounts in KEYS[2]
  KEYS[4] tp:{bN}:outbox    STREAM money events
ARGV (decimal integers without sign or leading zeros unless noted):
  [1] user_id  [2] grant_id (1..128 bytes of [A-Za-z0-9_.:-] ending in ":<user_id>", e.g.
      "signup:<user_id>": an id names its user, so its user's bucket is the one ledger that can
      hold it, and this bucket's check makes it unique deployment-wide, as Postgres's grants
      primary key needs; a grant of one bucket cannot read another's ledger)
  [3] amount: > 0, or, for an operator's correction only (ARGV[7..9] present), < 0 with a
      leading "-"; never 0
  [4] now_ms  [5] bucket N  [6] number of buckets B
  [7] admin action id, [8] actor, [9] reason: present for `tickpool admin grant` only (an
      admin action, see README "Admin actions"); absent (6 ARGV) for the sign-up credit
Returns:
  {"ok", balance, replayed}  balance = the player's balance now (integer); replayed = 1 when
      this grant id was already applied (no effect), 0 when it was applied by this call.
  {"err", "grant_conflict"}  the grant id exists for another user or amount (no effect).
  {"err", "insufficient_funds", balance}  a correction larger than the balance: a balance
      never goes negative (no effect).
  A malformed argument or a KEYS name outside the layout is a caller bug: Redis error
  "ERR tp_grant: ...".
]]

local function uint(s)
    if type(s) ~= 'string' or #s == 0 or #s > 15 or not s:match('^%d+$') then
        return nil
    end
    if #s > 1 and s:sub(1, 1) == '0' then
        return nil
    end
    return tonumber(s)
end

local function bug(what)
    return redis.error_reply('ERR tp_grant: ' .. what)
end

if #KEYS ~= 4 or (#ARGV ~= 6 and #ARGV ~= 9) then return bug('want 4 KEYS and 6 or 9 ARGV') end
local user_s, grant_id, amount_s = ARGV[1], ARGV[2], ARGV[3]
local admin = #ARGV == 9
-- A correction (negative amount) is an operator's act only: sign-ups never take money.
local debit = admin and amount_s:sub(1, 1) == '-'
local user, amount, now = uint(user_s), uint(debit and amount_s:sub(2) or amount_s), uint(ARGV[4])
local bucket, nbuckets = uint(ARGV[5]), uint(ARGV[6])
if not user or user == 0 then return bug('bad user_id') end
if not amount or amount == 0 then return bug('bad amount') end
if not now then return bug('bad now_ms') end
if type(grant_id) ~= 'string' or #grant_id < 1 or #grant_id > 128
    or grant_id:match('[^%w_.:%-]') then
    return bug('bad grant_id')
end
if not nbuckets or nbuckets < 1 or not bucket or bucket >= nbuckets then
    return bug('bad bucket')
end
if user % nbuckets ~= bucket then return bug('user_id not in this bucket') end
-- tp:{bN}: or, in cluster mode, tp:{bN.K}: (src/store/keys.c); every key carries the same one.
local p = KEYS[1]:match('^tp:{b' .. ARGV[5] .. '}:')
    or KEYS[1]:match('^tp:{b' .. ARGV[5] .. '%.%d+}:')
if not p then return bug('KEYS do not match the key layout for this bucket') end
if KEYS[1] ~= p .. 'bal' or KEYS[2] ~= p .. 'grants' or KEYS[3] ~= p .. 'granted'
    or KEYS[4] ~= p .. 'outbox' then
    return bug('KEYS do not match the key layout for this bucket')
end

if grant_id:sub(-(#user_s + 1)) ~= ':' .. user_s then
    return bug('grant_id must end with :<user_id>')
end
if admin and (#ARGV[7] < 1 or #ARGV[7] > 128 or ARGV[7]:match('[^%w_.:%-]') or #ARGV[8] < 1) then
    return bug('bad admin action id or actor')
end

local want = user_s .. ':' .. amount_s
local have = redis.call('HGET', KEYS[2], grant_id)
if have then
    if have ~= want then return {'err', 'grant_conflict'} end
    return {'ok', tonumber(redis.call('HGET', KEYS[1], user_s) or '0'), 1}
end

local have_bal = tonumber(redis.call('HGET', KEYS[1], user_s) or '0')
if debit and have_bal < amount then return {'err', 'insufficient_funds', have_bal} end

redis.call('HSET', KEYS[2], grant_id, want)
redis.call('INCRBY', KEYS[3], amount_s)
local bal = redis.call('HINCRBY', KEYS[1], user_s, amount_s)
local bal_s = string.format('%.0f', bal)
redis.call('XADD', KEYS[4], '*', 'type', 'grant', 'grant_id', grant_id, 'user_id', user_s,
           'amount', amount_s, 'balance', bal_s, 'ts', ARGV[4])
if admin then
    -- The admin action record (README "Admin actions"), in the same script as the grant, so
    -- Postgres gets it exactly when the grant happened. grant_id is [A-Za-z0-9_.:-]: JSON-safe.
    redis.call('XADD', KEYS[4], '*', 'type', 'admin', 'action_id', ARGV[7], 'action', 'grant',
               'actor', ARGV[8], 'user_id', user_s, 'reason', ARGV[9], 'ts', ARGV[4],
               'detail', '{"grant_id":"' .. grant_id .. '","amount":' .. amount_s ..
               ',"balance":' .. bal_s .. '}')
end
return {'ok', bal, 0}
