#!lua
--[[
round_open.lua: create round <id> in state open (global part), fenced.

KEYS[1] tp:{g}:lease  KEYS[2] tp:{g}:round:<id>  KEYS[3] tp:{g}:seed:<id>
KEYS[4] tp:{g}:rounds (ZSET id)  KEYS[5] tp:{g}:current  KEYS[6] tp:{g}:outbox
KEYS[7] tp:{g}:unfinished (ZSET id: rounds not yet settled or cancelled; the leader's to-do list)
ARGV[1] holder  ARGV[2] epoch  ARGV[3] id  ARGV[4] opens_at  ARGV[5] locks_at
ARGV[6] closes_at  ARGV[7] seed (64 hex)  ARGV[8] seed_hash (64 hex)  ARGV[9] vol_ppb
ARGV[10] rake_bps  ARGV[11] edges (comma list of bps, may be empty)  ARGV[12] tick_ms
ARGV[13] betting_ms  ARGV[14] min_stake  ARGV[15] max_stake
The round's rules (times, edges, rake, stake bounds) are the config's at its open and stored
here for good: every later step reads them from the round, so a config change with a restart
applies to the rounds opened after it.
Returns {'ok', 1} (created), {'ok', 0} (the round exists already: idempotent, nothing written),
{'err', 'stale_epoch'}, {'err', 'bad_id'} (id is not max id + 1: round ids have no gaps).
]]
if #KEYS ~= 7 or #ARGV ~= 15 then return redis.error_reply('ERR tp_round_open: want 7 KEYS, 15 ARGV') end
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '|' .. ARGV[2] then return {'err', 'stale_epoch'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'ok', 0} end
local id = tonumber(ARGV[3])
local top = redis.call('ZREVRANGE', KEYS[4], 0, 0)
local want = 1
if top[1] then want = tonumber(top[1]) + 1 end
if id ~= want then return {'err', 'bad_id'} end
redis.call('HSET', KEYS[2], 'id', ARGV[3], 'state', 'open', 'opens_at', ARGV[4],
           'locks_at', ARGV[5], 'closes_at', ARGV[6], 'seed_hash', ARGV[8], 'vol_ppb', ARGV[9],
           'rake_bps', ARGV[10], 'edges', ARGV[11], 'tick_ms', ARGV[12], 'betting_ms', ARGV[13],
           'min_stake', ARGV[14], 'max_stake', ARGV[15])
redis.call('SET', KEYS[3], ARGV[7])
redis.call('ZADD', KEYS[4], id, ARGV[3])
redis.call('ZADD', KEYS[7], id, ARGV[3])
redis.call('HSET', KEYS[5], 'open', ARGV[3])
redis.call('XADD', KEYS[6], '*', 'type', 'round_opened', 'round_id', ARGV[3],
           'opens_at', ARGV[4], 'locks_at', ARGV[5], 'closes_at', ARGV[6], 'seed_hash', ARGV[8],
           'edges', ARGV[11], 'rake_bps', ARGV[10])
return {'ok', 1}
