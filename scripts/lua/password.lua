#!lua
--[[
password.lua: replace a user's password hash and revoke their earlier tokens in one step
(POST /api/v1/me/password). The caller verified the old password against `old_hash`; the
write happens only if that is still the stored hash, so of two concurrent changes the second
is refused instead of silently undoing the first.

KEYS (global hash tag {g}, see scripts/lua/README.md):
  KEYS[1] tp:{g}:user:<id>   HASH username, pw_hash, created_at
  KEYS[2] tp:{g}:revoked     ZSET user_id -> token watermark (revoke.lua)
  KEYS[3] tp:{g}:outbox      STREAM global events (type=password for the Postgres writer)
ARGV:
  [1] user_id  [2] old pw_hash  [3] new pw_hash (argon2id encoded)
  [4] watermark W (Unix ms: every token the user holds expires at or before it)
  [5] now_ms  [6] the broadcast channel (tp:bcast)
Returns:
  {"ok", W'}              changed; W' is the watermark now in force (as revoke.lua)
  {"err", "changed"}      the stored hash is not old_hash any more (nothing written)
  {"err", "unknown_user"} no such user (nothing written)
Publishes the same `account` message as revoke.lua.
A malformed argument or a KEYS name outside the layout raises "ERR tp_password: ...".
]]

local function uint(s)
    if #s > 15 then return nil end
    if s:find('^[1-9]%d*$') then return tonumber(s) end
    if s == '0' then return 0 end
    return nil
end

if #KEYS ~= 3 or #ARGV ~= 6 then
    return redis.error_reply('ERR tp_password: want 3 KEYS, 6 ARGV')
end
local user, w, now = uint(ARGV[1]), uint(ARGV[4]), uint(ARGV[5])
if not user or user == 0 or not w or w == 0 or not now or #ARGV[3] < 16 then
    return redis.error_reply('ERR tp_password: bad argument')
end
if KEYS[1] ~= 'tp:{g}:user:' .. ARGV[1] or KEYS[2] ~= 'tp:{g}:revoked'
    or KEYS[3] ~= 'tp:{g}:outbox' or ARGV[6] == '' then
    return redis.error_reply('ERR tp_password: KEYS do not match the key layout')
end

local stored = redis.call('HGET', KEYS[1], 'pw_hash')
if not stored then return {'err', 'unknown_user'} end
if stored ~= ARGV[2] then return {'err', 'changed'} end
redis.call('HSET', KEYS[1], 'pw_hash', ARGV[3])
redis.call('XADD', KEYS[3], '*', 'type', 'password', 'user_id', ARGV[1], 'pw_hash', ARGV[3],
           'ts', ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
redis.call('ZADD', KEYS[2], 'GT', ARGV[4], ARGV[1])
local have = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]))
redis.call('PUBLISH', ARGV[6], cmsgpack.pack({t = 'account', user_id = user, revoked_before = have}))
return {'ok', have}
