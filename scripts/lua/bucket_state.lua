#!lua
--[[
bucket_state.lua: write bucket N's copy of a round's state (what bet.lua reads). Not fenced
(a cluster script cannot read the {g} lease from a {bN} slot): monotonic compare-and-set
instead, so a stale leader can never move a state backwards nor lock a bucket early.

KEYS[1] tp:{bN}:round:<id>:state (HASH state, locks_at, nbands, min_stake, max_stake)
KEYS[2] tp:{bN}:unsettled (SET)
ARGV[1] id  ARGV[2] new state: open | live | cancelled  ARGV[3] locks_at (Unix ms)
ARGV[4] grace_ms (cancel of an open round is refused before locks_at + grace)
ARGV[5] the round's own band count  ARGV[6] its min_stake  ARGV[7] its max_stake (the round's
        rules, fixed when it opened, written with a new copy: bet.lua checks a bet against them,
        so a restart with other band edges or stake bounds does not change a round in flight;
        min_stake 0: a round opened before rounds carried bounds, none written)
Rank: (none) 0 < open 1 < live 2 < settled = cancelled 3; a write that does not raise the rank
is a no-op. open adds <id> to `unsettled` (the bucket's rounds whose stakes are still held).
Returns {'ok', 1, state} (written) or {'ok', 0, current_state} (no-op), {'err', 'too_early'}
(live before locks_at, or an early cancel of an open round, by Redis TIME).
]]
if #KEYS ~= 2 or #ARGV ~= 7 then return redis.error_reply('ERR tp_bucket_state: want 2 KEYS, 7 ARGV') end
local rank = {open = 1, live = 2, settled = 3, cancelled = 3}
local want = ARGV[2]
if not rank[want] or want == 'settled' then return redis.error_reply('ERR tp_bucket_state: bad state') end
local cur = redis.call('HGET', KEYS[1], 'state')
local cr = cur and rank[cur] or 0
if cr >= rank[want] then return {'ok', 0, cur} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local locks_at = tonumber(redis.call('HGET', KEYS[1], 'locks_at') or ARGV[3])
if want == 'live' and now < locks_at then return {'err', 'too_early'} end
if want == 'cancelled' and cur == 'open' and now < locks_at + tonumber(ARGV[4]) then
    return {'err', 'too_early'}
end
if cr == 0 then
    if ARGV[6] == '0' then
        redis.call('HSET', KEYS[1], 'state', want, 'locks_at', ARGV[3], 'nbands', ARGV[5])
    else
        redis.call('HSET', KEYS[1], 'state', want, 'locks_at', ARGV[3], 'nbands', ARGV[5],
                   'min_stake', ARGV[6], 'max_stake', ARGV[7])
    end
    redis.call('SADD', KEYS[2], ARGV[1])
else
    redis.call('HSET', KEYS[1], 'state', want)
end
return {'ok', 1, want}
