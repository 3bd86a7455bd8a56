#!lua
--[[
account_flag.lua: disable or enable an account (tickpool admin disable / enable).

A disabled account cannot sign in, its tokens are refused by every worker (in memory, from the
`account` message published here) and bet_batch.lua refuses its bets (account_disabled), which
covers the moment before a worker hears of it. Enabling removes the flag: the account is as before,
its unexpired tokens included.

KEYS (in the user's bucket N, hash tag {bN}, see scripts/lua/README.md):
  KEYS[1] tp:{bN}:disabled   HASH user_id -> when it was disabled (Unix ms)
  KEYS[2] tp:{bN}:outbox     STREAM: the admin action record (type=admin, README "Admin actions")
ARGV:
  [1] user_id  [2] 1 = disable, 0 = enable  [3] now_ms  [4] bucket N  [5] number of buckets B
  [6] the broadcast channel (tp:bcast)
  [7] admin action id ([A-Za-z0-9_.:-], 1..128)  [8] actor (non-empty)  [9] reason (may be "")
Returns {"ok", changed}: changed = 1 when the flag changed, 0 when it already was so (the
action is recorded either way, with detail {"changed":false}).
Publishes {t="account", user_id, disabled=true|false} on ARGV[6] either way (a repeated command
repairs a worker that missed the first message).
A malformed argument or a KEYS name outside the layout raises "ERR tp_account_flag: ...".
]]

local function uint(s)
    if #s > 15 then return nil end
    if s:find('^[1-9]%d*$') then return tonumber(s) end
    if s == '0' then return 0 end
    return nil
end

local function bug(what)
    return redis.error_reply('ERR tp_account_flag: ' .. what)
end

if #KEYS ~= 2 or #ARGV ~= 9 then return bug('want 2 KEYS and 9 ARGV') end
local user, now = uint(ARGV[1]), uint(ARGV[3])
local bucket, nbuckets = uint(ARGV[4]), uint(ARGV[5])
if not user or user == 0 or not now or (ARGV[2] ~= '1' and ARGV[2] ~= '0') then
    return bug('bad argument')
end
if not nbuckets or nbuckets < 1 or not bucket or bucket >= nbuckets then
    return bug('bad bucket')
end
if user % nbuckets ~= bucket then return bug('user_id not in this bucket') end
-- tp:{bN}: or, in cluster mode, tp:{bN.K}: (src/store/keys.c); every key carries the same one.
local p = KEYS[1]:match('^tp:{b' .. ARGV[4] .. '}:')
    or KEYS[1]:match('^tp:{b' .. ARGV[4] .. '%.%d+}:') or 'tp:{b' .. ARGV[4] .. '}:'
if KEYS[1] ~= p .. 'disabled' or KEYS[2] ~= p .. 'outbox' or ARGV[6] == '' then
    return bug('KEYS do not match the key layout for this bucket')
end
if #ARGV[7] < 1 or #ARGV[7] > 128 or ARGV[7]:match('[^%w_.:%-]') or #ARGV[8] < 1 then
    return bug('bad admin action id or actor')
end

local disable = ARGV[2] == '1'
local changed
if disable then
    changed = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3])
else
    changed = redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('XADD', KEYS[2], '*', 'type', 'admin', 'action_id', ARGV[7],
           'action', disable and 'disable' or 'enable', 'actor', ARGV[8], 'user_id', ARGV[1],
           'reason', ARGV[9], 'ts', ARGV[3],
           'detail', changed == 1 and '{"changed":true}' or '{"changed":false}')
redis.call('PUBLISH', ARGV[6], cmsgpack.pack({t = 'account', user_id = user, disabled = disable}))
return {'ok', changed}
