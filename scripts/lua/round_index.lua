#!lua
--[[
round_index.lua: put the unfinished rounds among a page of ids into tp:{g}:unfinished, fenced.
The leader finds the rounds it owes something only through that index, which round_boundary
(its open) and round_final keep; rounds a server without the index left in flight are not in
it. A new lease runs this over every round id above the scan mark, a page at a time
(src/game/leader_index.c): the first time over the whole history, then only over the rounds
opened since, which round_boundary indexed already. Reading a round's state and adding it in
one script cannot race round_final (which leaves the index in the script that finishes it).

KEYS[1] tp:{g}:lease  KEYS[2] tp:{g}:unfinished  KEYS[3] tp:{g}:unfinished_scan (STRING: the
highest round id checked)  KEYS[3 + i] tp:{g}:round:<ARGV[3 + i]>, i = 1..n (n <= 256)
ARGV[1] holder  ARGV[2] epoch  ARGV[3] the page's highest id  ARGV[3 + i] round ids
Returns {'ok', added} (rounds open, live, settling or cancelling added; missing or final rounds
are skipped) and raises the mark to ARGV[3], or {'err', 'stale_epoch'} (nothing written).
]]
local n = #ARGV - 3
if n < 0 or n > 256 or #KEYS ~= n + 3 then
    return redis.error_reply('ERR tp_round_index: want 3 + n KEYS, 3 + n ARGV, n <= 256')
end
if not ARGV[3]:find('^%d+$') then return redis.error_reply('ERR tp_round_index: bad mark') end
for i = 1, n do
    if not ARGV[3 + i]:find('^[1-9]%d*$') or KEYS[3 + i] ~= 'tp:{g}:round:' .. ARGV[3 + i] then
        return redis.error_reply('ERR tp_round_index: KEYS do not match the round ids')
    end
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '|' .. ARGV[2] then return {'err', 'stale_epoch'} end
local added = 0
for i = 1, n do
    local st = redis.call('HGET', KEYS[3 + i], 'state')
    if st and st ~= 'settled' and st ~= 'cancelled' then
        added = added + redis.call('ZADD', KEYS[2], ARGV[3 + i], ARGV[3 + i])
    end
end
local mark = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[3]) > mark then redis.call('SET', KEYS[3], ARGV[3]) end
return {'ok', added}
