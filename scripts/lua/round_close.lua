#!lua
--[[
round_close.lua: live -> settling with the close price and the settlement plan, fenced.

KEYS[1] tp:{g}:lease  KEYS[2] tp:{g}:round:<id>  KEYS[3] tp:{g}:current
ARGV[1] holder  ARGV[2] epoch  ARGV[3] id  ARGV[4] close price  ARGV[5] winning band
ARGV[6] total T  ARGV[7] winning stake W  ARGV[8] rake  ARGV[9] pot  ARGV[10] refund_all (0|1)
ARGV[11] pools (comma list, one per band)
Returns {'ok', 1} (recorded), {'ok', 0} (already settling/settled: nothing written; the caller
re-reads the recorded plan), {'err', 'stale_epoch'}, {'err', 'not_found'},
{'err', 'too_early'} (TIME < closes_at), {'err', 'bad_state'} (open or cancelled).
]]
if #KEYS ~= 3 or #ARGV ~= 11 then return redis.error_reply('ERR tp_round_close: want 3 KEYS, 11 ARGV') end
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '|' .. ARGV[2] then return {'err', 'stale_epoch'} end
local r = redis.call('HMGET', KEYS[2], 'state', 'closes_at')
if not r[1] then return {'err', 'not_found'} end
if r[1] == 'settling' or r[1] == 'settled' then return {'ok', 0} end
if r[1] ~= 'live' then return {'err', 'bad_state'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(r[2]) then return {'err', 'too_early'} end
redis.call('HSET', KEYS[2], 'state', 'settling', 'close_price', ARGV[4], 'winning_band', ARGV[5],
           'total', ARGV[6], 'winning_stake', ARGV[7], 'rake', ARGV[8], 'pot', ARGV[9],
           'refund_all', ARGV[10], 'pools', ARGV[11])
if redis.call('HGET', KEYS[3], 'live') == ARGV[3] then redis.call('HDEL', KEYS[3], 'live') end
return {'ok', 1}
