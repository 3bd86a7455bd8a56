#!lua
--[[
idem_slots.lua: one step of the leader's upkeep of bucket N's idempotency filter
(src/game/leader_idemfilter.c): each of its 1,024 shards tp:{bN}:idemslots:<s> holds three
days, their 32-bit words interleaved (day d's word i at bytes 12i + 4 (d mod 3); bet_batch.lua
reads today's and yesterday's in one GETRANGE, idem_unindex.lua writes day d's). Three modes:

"build": creates the missing shards among KEYS[3..] (shard 0, KEYS[2], first when missing, with
  ARGV[2] bytes: three days of today's configured day size; every other shard gets shard 0's
  size) and, in the same step, folds an older version's per-day filter of days d - 1, d, d + 1
  for each given shard into its day (then deletes it): its words are ORed into the day's words
  when its size is the day's, else the day's words are all set (a key's word in another size
  cannot be found again; its day then answers "check" for every key: Postgres answers). The
  older version's shard 0 of each of those days is replaced by a tombstone (a HASH, with the
  old shard's expiry): an older server's bet script then fails its batch on it (WRONGTYPE,
  before any write: 503, nothing admitted), an older archival step fails on it before writing,
  and an older leader cannot build that day again: from the first step of a pass, no older
  process reads a filter that misses a key archived into the shards, or archives where a new
  bet script does not read. The caller sends shard 0 alone and first, shard 1023 alone and
  last: shard 1023 present tells archival the filter is whole; its older per-day shards (their
  "whole" marker, which bet_batch.lua reads as "every filter bet is check") go in that same
  last step, so bets trust the shards only once every older shard is in them.
  A step repeated after a kill -9 or by a new leader creates and folds only what is left.
"zero": during day d, between ARGV[6] ms after its start and ARGV[6] ms before its end by the
  caller's clock, ARGV[7] (a reader or archival whose clock is up to that far off reads and
  writes days d - 1 and d, or d and d + 1 near the edges), zeroes day d + 1's words (day d - 2's, read by
  nobody now) of the given shards: one BITOP AND of the shard with a mask (zeros at that day's
  words, ones elsewhere; KEYS[1], made in the first step, expiring with the day); the step
  given shard 1023 records day d + 1 as zeroed (tp:{bN}:idemslots:zeroed). Outside that part
  of the day it does nothing and returns -1 (archival may be writing day d + 1 already).
"probe": returns {shard 1023 exists (0/1), an older per-day filter's trace left (0/1), the day
  recorded as zeroed (or -1), shard 1023's bytes (0: missing)}: what the leader's pass has to do,
  and the size the shards were built at (the leader warns when its configuration asks another).

KEYS[1] zero: tp:{bN}:idemslots:mask:<(d + 1) mod 3>; build: tp:{bN}:idemslots:fold (scratch,
  deleted in the step); probe: tp:{bN}:idemslots:1023
KEYS[2] tp:{bN}:idemslots:0
KEYS[3] tp:{bN}:idemslots:zeroed   STRING, the newest day whose words were zeroed whole
build: then per shard s: tp:{bN}:idemslots:<s>, tp:{bN}:idemfilter:<d-1>:<s>,
  tp:{bN}:idemfilter:<d>:<s>, tp:{bN}:idemfilter:<d+1>:<s> (4 KEYS a shard)
zero: then per shard s: tp:{bN}:idemslots:<s>
probe: then tp:{bN}:idemfilter:<x>:0 and :1023 for x = d - 1, d, d + 1
ARGV[1] mode  ARGV[2] bytes of shard 0 when created: a multiple of 12, 12 .. 3 * 2^19
ARGV[3] day d (the caller's clock)  ARGV[4] bucket N  ARGV[5] a day's ms (the TTL's)
ARGV[6] build: a tombstone's expiry, ms, when no older shard 0 had one (the end of day d + 2
  plus slack); zero: the margin, ms (> 0); probe: unused (1)
ARGV[7] zero: now_ms, the caller's clock (archival trusts the same clock, leader_archive.c);
  else unused (0)
Returns the number of shards created (build), zeroed (zero; -1: outside the day's part), or the
probe's triple. Malformed arguments raise "ERR tp_idem_slots: ...".
]]
local call = redis.call

local function bug(what)
    return redis.error_reply('ERR tp_idem_slots: ' .. what)
end

local SHARDS = 1024
if #KEYS < 3 or #ARGV ~= 7 then return bug('want 3.. KEYS, 7 ARGV') end
local mode, bytes, day_s, bucket_s = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local span, extra = tonumber(ARGV[5]), tonumber(ARGV[6])
if mode ~= 'build' and mode ~= 'zero' and mode ~= 'probe' then return bug('bad mode') end
if not bytes or bytes < 12 or bytes > 3 * 524288 or bytes % 12 ~= 0 then
    return bug('bad size')
end
if not day_s:find('^[1-9]%d*$') or #day_s > 15 then return bug('bad day') end
if not bucket_s:find('^%d+$') then return bug('bad bucket') end
if not span or span < 1000 or span ~= math.floor(span) then return bug('bad span') end
if not extra or extra < 1 or extra ~= math.floor(extra) then return bug('bad expiry/margin') end
local day, format = tonumber(day_s), string.format
local k0 = KEYS[2]
local p = k0:match('^(tp:{b' .. bucket_s .. '}:)idemslots:0$')
    or k0:match('^(tp:{b' .. bucket_s .. '%.%d+}:)idemslots:0$')
if not p or KEYS[3] ~= p .. 'idemslots:zeroed' then
    return bug('KEYS do not match the key layout for this bucket')
end
local slots, oldf = p .. 'idemslots:', p .. 'idemfilter:'
local function shard_of(k, base)
    local s = k:sub(#base + 1)
    if k:sub(1, #base) ~= base or not s:find('^%d+$') or tonumber(s) >= SHARDS
        or (#s > 1 and s:sub(1, 1) == '0') then
        return nil
    end
    return s
end

if mode == 'probe' then
    if #KEYS ~= 9 or KEYS[1] ~= slots .. (SHARDS - 1) then return bug('probe KEYS') end
    local old = 0
    for j = 0, 2 do
        local x = format('%d', day - 1 + j)
        local z, l = KEYS[4 + 2 * j], KEYS[5 + 2 * j]
        if z ~= oldf .. x .. ':0' or l ~= oldf .. x .. ':' .. (SHARDS - 1) then
            return bug('probe KEYS')
        end
        -- A per-day shard 0 that is not a tombstone (a string; or none yet: a day an older
        -- leader could still build), or a last shard: that day's fold is not done.
        if call('TYPE', z).ok ~= 'hash' or call('EXISTS', l) == 1 then old = 1 end
    end
    local zd = call('GET', KEYS[3])
    local built = call('STRLEN', KEYS[1])
    return {built > 0 and 1 or 0, old, zd and tonumber(zd) or -1, built}
end

-- A triple's 12 bytes with `word` at day r's place (0, 1, 2) and `fill` at the other two.
local function triple(r, word, fill)
    return fill:rep(r) .. word .. fill:rep(2 - r)
end

if mode == 'zero' then
    local r = (day + 1) % 3
    if KEYS[1] ~= slots .. 'mask:' .. r then return bug('KEYS do not match the mask layout') end
    for i = 4, #KEYS do
        if not shard_of(KEYS[i], slots) then return bug('KEYS do not match the shard layout') end
    end
    local now = tonumber(ARGV[7])
    if not now or now < day * span + extra or now > (day + 1) * span - extra then return -1 end
    local size = call('STRLEN', k0)
    if size < 12 then return 0 end
    if call('STRLEN', KEYS[1]) ~= size then
        local ones, zero = '\255\255\255\255', '\0\0\0\0'
        call('SET', KEYS[1], triple(r, zero, ones):rep(size / 12), 'PX',
             format('%d', (day + 1) * span - now))
    end
    local done = 0
    for i = 4, #KEYS do
        -- A missing shard stays missing (BITOP would create it): it reads as "check".
        if call('EXISTS', KEYS[i]) == 1 then
            call('BITOP', 'AND', KEYS[i], KEYS[i], KEYS[1])
            done = done + 1
        end
        if KEYS[i] == slots .. (SHARDS - 1) then call('SET', KEYS[3], format('%d', day + 1)) end
    end
    return done
end

-- build
if (#KEYS - 3) % 4 ~= 0 or #KEYS < 7 or KEYS[1] ~= slots .. 'fold' then
    return bug('want 3 + 4n KEYS')
end
local list = {}
for i = 4, #KEYS, 4 do
    local s = shard_of(KEYS[i], slots)
    if not s then return bug('KEYS do not match the shard layout') end
    for j = 0, 2 do
        if KEYS[i + 1 + j] ~= oldf .. format('%d', day - 1 + j) .. ':' .. s then
            return bug('KEYS do not match the per-day layout')
        end
    end
    list[#list + 1] = i
end
local created, size = 0, call('STRLEN', k0)
if size == 0 then
    call('SETRANGE', k0, bytes - 1, '\0')
    size = bytes
    created = 1
end
local dsize = size / 12 * 4 -- a day's bytes
local zero4 = '\0\0\0\0'
for _, i in ipairs(list) do
    local k = KEYS[i]
    if call('STRLEN', k) == 0 then
        call('SETRANGE', k, size - 1, '\0')
        created = created + 1
    end
    for j = 0, 2 do
        local old, r = KEYS[i + 1 + j], (day - 1 + j) % 3
        local ty = call('TYPE', old).ok
        if ty == 'string' then
            -- Its words into day r's: ORed when it has a day's size, else day r all ones.
            local v, src = call('GET', old), nil
            if #v == dsize then
                -- Each word between the other days' zeros: one gsub, whose replacement string
                -- is expanded in C (a Lua loop over the words held Redis ~150 ms a day here).
                src = v:gsub('....', zero4:rep(r) .. '%0' .. zero4:rep(2 - r))
            else
                src = triple(r, '\255\255\255\255', zero4):rep(size / 12)
            end
            call('SET', KEYS[1], src)
            call('BITOP', 'OR', k, k, KEYS[1])
            call('DEL', KEYS[1])
            if k == k0 then
                -- The tombstone, with the old shard's expiry (its last reader's end).
                local pt = call('PTTL', old)
                call('DEL', old)
                call('HSET', old, 'folded', '1')
                call('PEXPIRE', old, pt > 0 and pt or extra)
            else
                call('DEL', old)
            end
        elseif ty == 'none' and k == k0 then
            call('HSET', old, 'folded', '1')
            call('PEXPIRE', old, extra)
        elseif ty ~= 'none' and ty ~= 'hash' then
            return bug('an older per-day shard of another type')
        end
    end
end
return created
