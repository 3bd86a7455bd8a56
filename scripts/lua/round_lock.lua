#!lua
--[[
round_lock.lua: open -> live with lock price L, fenced; reveals the previous round's seed
when that round is final (its segment ends at this lock).

KEYS[1] tp:{g}:lease  KEYS[2] tp:{g}:round:<id>  KEYS[3] tp:{g}:current
KEYS[4] tp:{g}:round:<id-1>  KEYS[5] tp:{g}:seed:<id-1>
ARGV[1] holder  ARGV[2] epoch  ARGV[3] id  ARGV[4] lock price (cents)
Returns {'ok', 1} (locked), {'ok', 0} (already live or later: idempotent, no write),
{'err', 'stale_epoch'}, {'err', 'not_found'}, {'err', 'too_early'} (Redis TIME < locks_at),
{'err', 'bad_state'} (cancelled).
]]
if #KEYS ~= 5 or #ARGV ~= 4 then return redis.error_reply('ERR tp_round_lock: want 5 KEYS, 4 ARGV') end
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '|' .. ARGV[2] then return {'err', 'stale_epoch'} end
local r = redis.call('HMGET', KEYS[2], 'state', 'locks_at')
if not r[1] then return {'err', 'not_found'} end
if r[1] == 'live' or r[1] == 'settling' or r[1] == 'settled' then return {'ok', 0} end
if r[1] ~= 'open' then return {'err', 'bad_state'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(r[2]) then return {'err', 'too_early'} end
redis.call('HSET', KEYS[2], 'state', 'live', 'lock_price', ARGV[4])
redis.call('HSET', KEYS[3], 'live', ARGV[3])
if redis.call('HGET', KEYS[3], 'open') == ARGV[3] then redis.call('HDEL', KEYS[3], 'open') end
local ps = redis.call('HMGET', KEYS[4], 'state', 'seed')
if (ps[1] == 'settled' or ps[1] == 'cancelled') and not ps[2] then
    local seed = redis.call('GET', KEYS[5])
    if seed then redis.call('HSET', KEYS[4], 'seed', seed) end
end
return {'ok', 1}
