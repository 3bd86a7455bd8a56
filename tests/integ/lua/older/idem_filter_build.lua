#!lua
--[[
idem_filter_build.lua: one step of the leader's build of a window's idempotency filter in
bucket N ahead of the window (src/game/leader_idemfilter.c), so that bet_batch.lua never
allocates it: creates the missing shards among KEYS[2..], each in one SETRANGE of at most
2^19 bytes. Shard 0 (KEYS[1]) is created first when missing, with ARGV[2] bytes; every other
shard gets shard 0's size, whatever the caller's configuration says, so a leader that changed
hands with another game.idem_filter mid-build still builds one size. A shard that exists is
left alone (archival may have set bits in it): a step repeated after a kill -9 or by a new leader
creates only what is missing. The caller creates the last shard (1023) alone and last: its
presence tells bet_batch.lua the window is whole.

KEYS[1] tp:{bN}:idemfilter:<w>:0    KEYS[2..] tp:{bN}:idemfilter:<w>:<s>, s in 0..1023
ARGV[1] "build", or "probe" (create nothing: 1 when KEYS[2] exists, else 0)
ARGV[2] bytes of shard 0 when it is created: whole 32-bit words, 4 .. 2^19
ARGV[3] PEXPIRE of a created shard, ms (> 0): the end of window w + 1 plus slack, as
        bet_batch.lua gives the shards it creates
ARGV[4] window w  ARGV[5] bucket N
Returns the number of shards created (probe: 0 or 1). Malformed arguments raise
"ERR tp_idem_filter_build: ...".
]]
local call = redis.call

local function bug(what)
    return redis.error_reply('ERR tp_idem_filter_build: ' .. what)
end

if #KEYS < 2 or #KEYS > 1025 or #ARGV ~= 5 then return bug('want 2..1025 KEYS, 5 ARGV') end
local mode, bytes, expire = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local win_s, bucket_s = ARGV[4], ARGV[5]
if mode ~= 'build' and mode ~= 'probe' then return bug('bad mode') end
if not bytes or bytes < 4 or bytes > 524288 or bytes % 4 ~= 0 then return bug('bad size') end
if not expire or expire < 1 or expire ~= math.floor(expire) then return bug('bad expiry') end
if not win_s:find('^%d+$') or #win_s > 15 then return bug('bad window') end
if not bucket_s:find('^%d+$') then return bug('bad bucket') end
local k1 = KEYS[1]
local p = k1:match('^tp:{b' .. bucket_s .. '}:') or k1:match('^tp:{b' .. bucket_s .. '%.%d+}:')
if not p or k1 ~= p .. 'idemfilter:' .. win_s .. ':0' then
    return bug('KEYS do not match the key layout for this bucket/window')
end
local base = p .. 'idemfilter:' .. win_s .. ':'
for i = 2, #KEYS do
    local s = KEYS[i]:sub(#base + 1)
    if KEYS[i]:sub(1, #base) ~= base or not s:find('^%d+$') or tonumber(s) > 1023
        or (#s > 1 and s:sub(1, 1) == '0') then
        return bug('KEYS do not match the key layout for this bucket/window/shard')
    end
end

if mode == 'probe' then
    return call('EXISTS', KEYS[2])
end
local created = 0
local size = call('STRLEN', k1)
if size == 0 then
    call('SETRANGE', k1, bytes - 1, '\0')
    call('PEXPIRE', k1, ARGV[3])
    size = bytes
    created = 1
end
for i = 2, #KEYS do
    if call('STRLEN', KEYS[i]) == 0 then
        call('SETRANGE', KEYS[i], size - 1, '\0')
        call('PEXPIRE', KEYS[i], ARGV[3])
        created = created + 1
    end
end
return created
