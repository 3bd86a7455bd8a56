#!lua
--[[
round_cancel.lua: open|live -> cancelling (every stake will be refunded), fenced.

KEYS[1] tp:{g}:lease  KEYS[2] tp:{g}:round:<id>  KEYS[3] tp:{g}:current
KEYS[4] tp:{g}:unfinished
ARGV[1] holder  ARGV[2] epoch  ARGV[3] id  ARGV[4] total T (sum of the bucket pools)
ARGV[5] pools (comma list)  ARGV[6] reason (text)
ARGV[7] band edges (comma list)  ARGV[8] locks_at  ARGV[9] betting_ms: used only for a lost
        round (below)
A lost round: its record is missing while the unfinished index still holds its id (an
operator's DEL, an eviction). Its stakes are still held in the buckets, but its seed commitment
and prices went with the record, so it can never be settled verifiably: a cancelling record is
written in its place (id, state, the refund plan fields, edges, locks_at and betting_ms, which
round_final reads) and the usual refund pages run. A missing record of a round that is not
unfinished is final: not_found, nothing written.
Returns {'ok', 1}, {'ok', 0} (already cancelling/cancelled: idempotent), {'err', 'stale_epoch'},
{'err', 'not_found'}, {'err', 'bad_state'} (settling or settled: too late to cancel).
]]
if #KEYS ~= 4 or #ARGV ~= 9 then return redis.error_reply('ERR tp_round_cancel: want 4 KEYS, 9 ARGV') end
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '|' .. ARGV[2] then return {'err', 'stale_epoch'} end
local st = redis.call('HGET', KEYS[2], 'state')
if not st then
    if not redis.call('ZSCORE', KEYS[4], ARGV[3]) then return {'err', 'not_found'} end
    redis.call('HSET', KEYS[2], 'id', ARGV[3], 'edges', ARGV[7], 'locks_at', ARGV[8],
               'betting_ms', ARGV[9])
    st = 'open'
end
if st == 'cancelling' or st == 'cancelled' then return {'ok', 0} end
if st ~= 'open' and st ~= 'live' then return {'err', 'bad_state'} end
redis.call('HSET', KEYS[2], 'state', 'cancelling', 'total', ARGV[4], 'winning_stake', '0',
           'rake', '0', 'pot', ARGV[4], 'refund_all', '1', 'pools', ARGV[5],
           'cancel_reason', ARGV[6])
local cur = redis.call('HMGET', KEYS[3], 'open', 'live')
if cur[1] == ARGV[3] then redis.call('HDEL', KEYS[3], 'open') end
if cur[2] == ARGV[3] then redis.call('HDEL', KEYS[3], 'live') end
return {'ok', 1}
