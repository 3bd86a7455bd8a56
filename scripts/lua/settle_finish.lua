#!lua
--[[
settle_finish.lua: close bucket N's part of a round once its pages are done: the bucket's
stakes not paid out (T_b - paid_b, negative when its winners won more than it staked;
0 for a refund) go to the house, the round leaves the
bucket's `unsettled` set, and the bucket's state copy becomes final. Idempotent.

KEYS[1] tp:{bN}:plan:<id>  KEYS[2] tp:{bN}:pool:<id>  KEYS[3] tp:{bN}:house
KEYS[4] tp:{bN}:unsettled  KEYS[5] tp:{bN}:round:<id>:state  KEYS[6] tp:{bN}:outbox
ARGV[1] round id  ARGV[2] final state (settled | cancelled)  ARGV[3] now_ms
Returns {'ok', T_b, paid_b, refund (0|1)} (also when already finished: the same numbers),
{'err', 'no_plan'}, {'err', 'not_done'} (pages remain).
Outbox: type=house, round_id, amount (T_b - paid_b), ts (once).
]]
if #KEYS ~= 6 or #ARGV ~= 3 then return redis.error_reply('ERR tp_settle_finish: want 6 KEYS, 3 ARGV') end
local p = redis.call('HMGET', KEYS[1], 'done', 'paid', 'refund', 'finished')
if not p[1] then return {'err', 'no_plan'} end
local total = tonumber(redis.call('HGET', KEYS[2], 'total') or '0')
local paid = tonumber(p[2])
local refund = p[3] == '1' and 1 or 0
if p[4] == '1' then return {'ok', total, paid, refund} end
if p[1] ~= '1' then return {'err', 'not_done'} end
local rest = total - paid
-- rest < 0 is normal: winners of this bucket may win more than this bucket's stakes (pots are
-- shared across buckets); the house accounts of the buckets sum to rake + breakage.
if rest ~= 0 then redis.call('INCRBY', KEYS[3], string.format('%.0f', rest)) end
redis.call('HSET', KEYS[1], 'finished', '1')
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[5], 'state', ARGV[2])
redis.call('XADD', KEYS[6], '*', 'type', 'house', 'round_id', ARGV[1],
           'amount', string.format('%.0f', rest), 'ts', ARGV[3])
return {'ok', total, paid, refund}
