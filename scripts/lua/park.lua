#!lua
--[[
park.lua: the Postgres writer parks one outbox entry it refused (malformed, or refused by
Postgres for its data): a copy goes to the outbox's rejected stream and the entry is
acknowledged in the same step, so no crash, lost reply or Redis restart can leave a copy with the
entry still pending (which the next try would park a second time). AOF and replicas receive
the two writes as one MULTI/EXEC: both or neither.

An entry already acknowledged is not parked again (a try whose reply was lost, or another writer
that claimed it). An entry delivered more than once (re-read after a crash or a failure) is
first looked for among the newest ARGV[4] copies: one with its src_stream and src_id (left by a
version before this script, whose XADD and XACK were two commands) is kept, and the entry is
only acknowledged. A first delivery cannot have a copy yet: nothing is searched.

KEYS (one bucket's hash tag, or {g}; see scripts/lua/README.md):
  KEYS[1] tp:{bN}:outbox           STREAM the entry's outbox (or tp:{g}:outbox)
  KEYS[2] tp:{bN}:outbox:rejected  STREAM the parked copies (KEYS[1] .. ':rejected')
ARGV:
  [1] consumer group ("pgw")  [2] src_id: the entry's id in KEYS[1] ("<ms>-<seq>")
  [3] error: why it was refused (1..1024 bytes)
  [4] look-back: newest copies searched for an earlier one (0..10000)
  [5..] the entry's fields, name then value (at least one pair)
Returns:
  {"parked", copy_id}    the copy (its fields, then src_stream, src_id, error) added to KEYS[2]
                         and the entry acknowledged
  {"had_copy", copy_id}  a copy was already there: the entry acknowledged, nothing added
  {"not_pending"}        the entry is not pending in the group: nothing written
  A malformed argument or KEYS name: Redis error "ERR tp_park: ..." (nothing written); a
  missing group: Redis's NOGROUP error; KEYS[2] not a stream: WRONGTYPE (nothing written).
]]
local function bug(what)
    return redis.error_reply('ERR tp_park: ' .. what)
end

if #KEYS ~= 2 or #ARGV < 6 or #ARGV % 2 ~= 0 then
    return bug('want 2 KEYS and 4 ARGV, then field pairs')
end
local src, parked = KEYS[1], KEYS[2]
local group, id, err, back = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not src:match('^tp:{[^}]+}:outbox$') or parked ~= src .. ':rejected' then
    return bug('KEYS do not match the key layout')
end
if #group < 1 or #group > 64 then return bug('bad group') end
if not id:match('^%d+%-%d+$') or #id > 41 then return bug('bad src_id') end
if #err < 1 or #err > 1024 then return bug('bad error') end
if not back:match('^%d+$') or #back > 5 or tonumber(back) > 10000 then
    return bug('bad look-back')
end

-- XPENDING <stream> <group> <id> <id> 1: {{id, consumer, idle, deliveries}} or {}.
local p = redis.call('XPENDING', src, group, id, id, 1)
if #p == 0 then return {'not_pending'} end

if p[1][4] > 1 and tonumber(back) > 0 then -- (XREVRANGE … COUNT 0 answers a null array)
    -- A copy carries src_stream, src_id and error as its last three pairs (the entry's own
    -- fields may hold names alike: only the tail counts).
    for _, e in ipairs(redis.call('XREVRANGE', parked, '+', '-', 'COUNT', tonumber(back))) do
        local f = e[2]
        local n = #f
        if n >= 6 and f[n - 5] == 'src_stream' and f[n - 4] == src and f[n - 3] == 'src_id' and
            f[n - 2] == id then
            redis.call('XACK', src, group, id)
            return {'had_copy', e[1]}
        end
    end
end

-- The copy first: should anything refuse it (a memory limit, a wrong type), nothing is written.
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
for _, v in ipairs({'src_stream', src, 'src_id', id, 'error', err}) do fields[#fields + 1] = v end
local copy = redis.call('XADD', parked, '*', unpack(fields))
redis.call('XACK', src, group, id)
return {'parked', copy}
