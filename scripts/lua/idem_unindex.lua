#!lua
--[[
idem_unindex.lua: one step of archival's removal of a round's keys from bucket N's hot
idempotency key index (bet_batch.lua KEYS[11]). The round's records name every key its bets
used; an index entry is removed only while it still names this round (a key reused on another
round after the TTL names that one now). Idempotent: a step repeated after a kill -9 finds
what is left, and the records are deleted only after the last step.

KEYS[1] tp:{bN}:idem:<round_id>   HASH "<user_id>:<key>" -> record (read)
KEYS[2] tp:{bN}:idemhot           HASH "<user_id>:<key>" -> "<round_id>:<placed_ms>"
ARGV[1] round_id  ARGV[2] HSCAN cursor of KEYS[1] ("0" to start)  ARGV[3] COUNT (1..4096)
ARGV[4] bucket N
Returns {next cursor ("0": the round's records are all seen), entries removed}. A record hash
small enough to be a listpack comes back in one HSCAN whatever COUNT is (hash-max-listpack-
entries, 128 in the embedded Redis). Malformed arguments raise "ERR tp_idem_unindex: ...".
]]
local call = redis.call

local function bug(what)
    return redis.error_reply('ERR tp_idem_unindex: ' .. what)
end

if #KEYS ~= 2 or #ARGV ~= 4 then return bug('want 2 KEYS, 4 ARGV') end
local round_s, cursor, count, bucket_s = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if not round_s:find('^[1-9]%d*$') or #round_s > 15 then return bug('bad round_id') end
if not cursor:find('^%d+$') then return bug('bad cursor') end
if not count or count < 1 or count > 4096 or count ~= math.floor(count) then
    return bug('bad count')
end
if not bucket_s:find('^%d+$') then return bug('bad bucket') end
local p = KEYS[2]:match('^(tp:{b' .. bucket_s .. '}:)idemhot$')
    or KEYS[2]:match('^(tp:{b' .. bucket_s .. '%.%d+}:)idemhot$')
if not p or KEYS[1] ~= p .. 'idem:' .. round_s then
    return bug('KEYS do not match the key layout for this bucket/round')
end

local r = call('HSCAN', KEYS[1], cursor, 'COUNT', count)
local kv, fields = r[2], {}
for i = 1, #kv, 2 do fields[#fields + 1] = kv[i] end
local removed = 0
if #fields > 0 then
    local v = call('HMGET', KEYS[2], unpack(fields))
    local del, mine = {}, round_s .. ':'
    for i = 1, #fields do
        if v[i] and v[i]:sub(1, #mine) == mine then del[#del + 1] = fields[i] end
    end
    if #del > 0 then removed = call('HDEL', KEYS[2], unpack(del)) end
end
return {r[1], removed}
