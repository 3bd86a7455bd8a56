#!lua
--[[
tick.lua: append price ticks to the tick stream, fenced by the leader lease.

KEYS[1] tp:{g}:lease   KEYS[2] tp:{g}:ticks (STREAM, entry id "<ts>-0", field price)
ARGV[1] holder  ARGV[2] epoch  ARGV[3] MAXLEN (approximate trim)
ARGV[4], ARGV[5], ...  pairs ts, price (ascending ts, decimal integers)
Returns {'ok', n_added} (ticks at or before the stream's last id are skipped, so a repeated
call or an overlapping backfill adds nothing), or {'err', 'stale_epoch'} with no write.
]]
if #KEYS ~= 2 or #ARGV < 3 or #ARGV % 2 ~= 1 then
    return redis.error_reply('ERR tp_tick: want 2 KEYS and 3 + 2n ARGV')
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '|' .. ARGV[2] then return {'err', 'stale_epoch'} end
local last = 0
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if top[1] then last = tonumber((top[1][1]:match('^(%d+)'))) end
local n = 0
for i = 4, #ARGV, 2 do
    local ts = tonumber(ARGV[i])
    if not ts or not ARGV[i + 1]:match('^%d+$') then
        return redis.error_reply('ERR tp_tick: bad tick')
    end
    if ts > last then
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], ARGV[i] .. '-0', 'price', ARGV[i + 1])
        last = ts
        n = n + 1
    end
end
return {'ok', n}
