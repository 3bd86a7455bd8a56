#!lua
--[[
ws_sockets.lua: one user's open WebSocket sockets across every worker process and host, so the
per-user socket cap (limits.ws_max_per_user) holds for the whole deployment. Each socket is a
member named by its worker and a serial, scored with the time it expires unless its worker
keeps it: a socket whose worker died (kill -9, a lost host) stops counting after the TTL.

KEYS[1] tp:{bN}:wsock:<user_id> (ZSET socket -> expiry, Unix ms by Redis TIME)
ARGV[1] op: take | keep | give  ARGV[2] socket ("<host>|<pid>|<index>|<serial>")
ARGV[3] cap (take: sockets allowed at once)  ARGV[4] TTL in ms (take, keep)
Returns {'ok', n} with n the user's sockets counted after the call, or {'err', 'too_many', n}
(take when n sockets, n >= cap, are already counted: nothing written).
]]
if #KEYS ~= 1 or #ARGV ~= 4 then return redis.error_reply('ERR tp_ws_sockets: want 1 KEYS, 4 ARGV') end
local op, member = ARGV[1], ARGV[2]
if op == 'give' then
    redis.call('ZREM', KEYS[1], member)
    return {'ok', redis.call('ZCARD', KEYS[1])}
end
local cap, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
if not cap or not ttl or ttl < 1 or (op ~= 'take' and op ~= 'keep') then
    return redis.error_reply('ERR tp_ws_sockets: bad op, cap or ttl')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if op == 'take' and not redis.call('ZSCORE', KEYS[1], member) then
    local n = redis.call('ZCARD', KEYS[1])
    if n >= cap then return {'err', 'too_many', n} end
end
redis.call('ZADD', KEYS[1], now + ttl, member)
redis.call('PEXPIRE', KEYS[1], ttl)
return {'ok', redis.call('ZCARD', KEYS[1])}
