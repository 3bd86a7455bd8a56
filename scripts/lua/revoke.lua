#!lua
--[[
revoke.lua: revoke a user's session tokens up to a watermark (DELETE /api/v1/sessions/current).

A token carries its expiry (24 h after it was signed), so "every token expiring at or before W"
is "every token signed before W - 24 h": one number per user revokes the token shown and every
earlier one, and workers check it in memory. The watermark only ever rises (ZADD GT), so of two
concurrent revocations the later one wins whatever their order. Entries whose watermark has
passed revoke nothing that has not expired anyway: they are removed here.

KEYS (global hash tag {g}, see scripts/lua/README.md):
  KEYS[1] tp:{g}:revoked   ZSET user_id -> watermark (Unix ms)
ARGV:
  [1] user_id  [2] watermark W (Unix ms; the caller's token expiry)  [3] now_ms
  [4] the broadcast channel (tp:bcast)
Returns {"ok", W'}: the watermark now in force (W or a higher one set before).
Publishes on ARGV[4] the internal MessagePack message {t="account", user_id, revoked_before=W'}
that every worker applies to its in-memory table (src/money/access.c); it is never forwarded
to sockets.
A malformed argument or a KEYS name outside the layout raises "ERR tp_revoke: ...".
]]

local function uint(s)
    if #s > 15 then return nil end
    if s:find('^[1-9]%d*$') then return tonumber(s) end
    if s == '0' then return 0 end
    return nil
end

if #KEYS ~= 1 or #ARGV ~= 4 then return redis.error_reply('ERR tp_revoke: want 1 KEYS, 4 ARGV') end
local user, w, now = uint(ARGV[1]), uint(ARGV[2]), uint(ARGV[3])
if not user or user == 0 or not w or w == 0 or not now then
    return redis.error_reply('ERR tp_revoke: bad argument')
end
if KEYS[1] ~= 'tp:{g}:revoked' or ARGV[4] == '' then
    return redis.error_reply('ERR tp_revoke: KEYS do not match the key layout')
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
local have = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
redis.call('PUBLISH', ARGV[4], cmsgpack.pack({t = 'account', user_id = user, revoked_before = have}))
return {'ok', have}
