#!lua
--[[
round_cancel.lua: open|live -> cancelling (every stake will be refunded), fenced.

KEYS[1] tp:{g}:lease  KEYS[2] tp:{g}:round:<id>  KEYS[3] tp:{g}:current
ARGV[1] holder  ARGV[2] epoch  ARGV[3] id  ARGV[4] total T (sum of the bucket pools)
ARGV[5] pools (comma list)  ARGV[6] reason (text)
Returns {'ok', 1}, {'ok', 0} (already cancelling/cancelled: idempotent), {'err', 'stale_epoch'},
{'err', 'not_found'}, {'err', 'bad_state'} (settling or settled: too late to cancel).
]]
if #KEYS ~= 3 or #ARGV ~= 6 then return redis.error_reply('ERR tp_round_cancel: want 3 KEYS, 6 ARGV') end
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '|' .. ARGV[2] then return {'err', 'stale_epoch'} end
local st = redis.call('HGET', KEYS[2], 'state')
if not st then return {'err', 'not_found'} end
if st == 'cancelling' or st == 'cancelled' then return {'ok', 0} end
if st ~= 'open' and st ~= 'live' then return {'err', 'bad_state'} end
redis.call('HSET', KEYS[2], 'state', 'cancelling', 'total', ARGV[4], 'winning_stake', '0',
           'rake', '0', 'pot', ARGV[4], 'refund_all', '1', 'pools', ARGV[5],
           'cancel_reason', ARGV[6])
local cur = redis.call('HMGET', KEYS[3], 'open', 'live')
if cur[1] == ARGV[3] then redis.call('HDEL', KEYS[3], 'open') end
if cur[2] == ARGV[3] then redis.call('HDEL', KEYS[3], 'live') end
return {'ok', 1}
