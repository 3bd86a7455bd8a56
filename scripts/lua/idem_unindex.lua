#!lua
--[[
idem_unindex.lua: one step of archival's removal of a round's keys from bucket N's hot idempotency
key index (bet_batch.lua KEYS[11], and its young part KEYS[16]), and the step that puts them in the
idempotency filter: bets only read the filter, archival writes it. For each given key of the round
(the caller reads the round's bets of this bucket from Postgres, which holds them whole by then:
see src/game/leader_archive.c) whose index entry still names this round (a key reused on another
round after the TTL names that one now), the entry, which carries the key's record, is removed and,
unless the bet is past its TTL, the key's 5 bits are set in day d's word of its filter shard
(and day d - 1's, see ARGV[4]); every given field also leaves the round's records hash, where an older version kept the
records; all in this one atomic step: at no moment is a key in neither its hot entry nor the
filter. A replay finds its hot entry before the step, the filter (then Postgres) after it.
Idempotent: a step repeated after a kill -9 finds the fields gone and does nothing more.

KEYS, all in bucket N (one hash slot: the index, the records and the filter share {bN}):
  KEYS[1] tp:{bN}:idemhot                 HASH "<user_id>:<key>" ->
                                          "<round_id>:<placed_ms>|<record>" (an older
                                          version's: "<round_id>:<placed_ms>")
  KEYS[2] tp:{bN}:idemyoung               HASH, its young part (bet_batch.lua KEYS[16]): the
                                          same entries; a field's entry here is newer than
                                          its entry in KEYS[1], if both exist
  KEYS[3] tp:{bN}:idemslots:0             shard 0 of the filter: its size is every shard's
  KEYS[4] tp:{bN}:idemslots:1023          present once the leader built every shard
  then per distinct shard s of the fields, in order of first appearance,
  tp:{bN}:idemslots:<s> (three days, interleaved by 32-bit word: day d's word i at bytes
  12i + 4 (d mod 3); bet_batch.lua), and last, KEYS[#KEYS], tp:{bN}:idem:<round_id>, the round's records hash (HASH
  "<user_id>:<key>" -> record) of a round an older version admitted bets to: every given field
  leaves it.
ARGV[1] round_id  ARGV[2] bucket N  ARGV[3] day d (the caller's clock, src/game/
  leader_archive.c: the day current at archival)
ARGV[4] days written: 1 (d), or 2 (d and d - 1: the first minutes of day d, when a reader
  whose clock lags may still read d - 1 and d - 2; both words are in the same shard)
ARGV[5] since_ms: an entry placed before it is past its TTL: removed, no bits
ARGV[6] n fields (0 .. 4096), then 4 per field: "<user_id>:<key>", and the key's filter
  position as src/store/keys.c tp_keys_idem_pos hashes it: word (0 .. 2^32-1, modulo the
  shard's words), mask (the 5 bits, nonzero, < 2^32), shard (0 .. 1023).
A field's entry naming the round goes from whichever part holds it. When it goes from the young
part, the field's entry in the big part, if any, goes with it: that is an older bet's (bets
write the big part directly only for a field with no young entry, and promotion writes the newer
over the older), of another round and past its TTL when this round's bet was admitted (else
that bet was refused). Left alone it would answer for the key instead of the filter, which now
holds the key: a reuse within the TTL of this round's bet would be admitted. Its own round's
archival then finds it gone, and past its TTL it needs no bits.
Returns the number of the round's index entries removed, or -1 when the filter is not whole (the
leader has not built every shard yet): then nothing is written (no record removed either), and archival
waits for the build (a step never allocates a shard). Malformed arguments raise "ERR
tp_idem_unindex: ...", and so does an entry naming the round whose placed time is not a number (a
corrupt entry), before anything is written: archival then leaves the round in Redis
(src/game/leader_archive.c).
]]
local call = redis.call

local function bug(what)
    return redis.error_reply('ERR tp_idem_unindex: ' .. what)
end

local SHARDS, WORD = 1024, 4294967296
local round_s, bucket_s, win_s, nwin_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local since, n = tonumber(ARGV[5] or ''), tonumber(ARGV[6] or '')
if not n or n < 0 or n > 4096 or n ~= math.floor(n) or #ARGV ~= 6 + 4 * n then
    return bug('want 6 + 4n ARGV')
end
if not round_s:find('^[1-9]%d*$') or #round_s > 15 then return bug('bad round_id') end
if not bucket_s:find('^%d+$') then return bug('bad bucket') end
if not (win_s == '0' or win_s:find('^[1-9]%d*$')) or #win_s > 15 then
    return bug('bad window')
end
if nwin_s ~= '1' and nwin_s ~= '2' then return bug('bad window count') end
if not since or since ~= math.floor(since) then return bug('bad since_ms') end
local two = nwin_s == '2'
local p = KEYS[1]:match('^(tp:{b' .. bucket_s .. '}:)idemhot$')
    or KEYS[1]:match('^(tp:{b' .. bucket_s .. '%.%d+}:)idemhot$')
local fw = p and p .. 'idemslots:'
local fixed = 4
local RECORDS = KEYS[#KEYS]
local YOUNG = KEYS[2]
if not p or YOUNG ~= p .. 'idemyoung' or KEYS[3] ~= fw .. '0' or KEYS[4] ~= fw .. (SHARDS - 1)
    or RECORDS ~= p .. 'idem:' .. round_s then
    return bug('KEYS do not match the key layout for this bucket')
end
-- Day d's word of a triple is its (d mod 3)-th, d - 1's its ((d + 2) mod 3)-th: bit offsets in
-- the triple.
local day = tonumber(win_s)
local td, yd = day % 3 * 32, (day + 2) % 3 * 32

-- Per field: its position, and the distinct shards in order (their KEYS follow). A shard is
-- kept as its string, checked once when first seen (canonical, below 1024): its keys' names
-- are then built without formatting a number (x % 1 ~= 0: not an integer, or NaN).
local floor = math.floor
local fields, hw, hm, hs, shards, slist = {}, {}, {}, {}, {}, {}
for i = 1, n do
    local o = 3 + 4 * i
    local f, sh = ARGV[o], ARGV[o + 3]
    local wd, mk = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])
    if not f:find('^[1-9]%d*:.') then return bug('bad field') end
    if not wd or wd < 0 or wd >= WORD or wd % 1 ~= 0 or not mk or mk < 1 or mk >= WORD
        or mk % 1 ~= 0 then
        return bug('bad filter position')
    end
    if not shards[sh] then
        if not (sh == '0' or sh:find('^[1-9]%d?%d?%d?$')) or tonumber(sh) >= SHARDS then
            return bug('bad filter position')
        end
        slist[#slist + 1] = sh; shards[sh] = #slist
    end
    fields[i], hw[i], hm[i], hs[i] = f, wd, bit.tobit(mk), sh
end
if #KEYS ~= fixed + #slist + 1 then return bug('want 4 + shards + 1 KEYS') end
for j, sh in ipairs(slist) do
    if KEYS[fixed + j] ~= fw .. sh then
        return bug('KEYS do not match the key layout for this bucket/shard')
    end
end
if n == 0 then return 0 end

-- The filter must be whole: the leader builds every shard once (leader_idemfilter.c), within
-- seconds of a leader's start on a new deployment or an upgrade; a shard is never created here.
-- Bets rely on this: while the last shard is missing they read every key as absent from the
-- filter (bet_batch.lua), which holds only because no step writes a bit before it exists.
if call('EXISTS', KEYS[4]) == 0 then return -1 end
local wsize = floor(call('STRLEN', KEYS[3]) / 12)

-- The entries that still name this round; those within their TTL get their bits. Read and
-- checked before anything is written: a corrupt entry refuses the whole step.
local v, vy = call('HMGET', KEYS[1], unpack(fields)), call('HMGET', YOUNG, unpack(fields))
local del, dely, mine, add, removed = {}, {}, round_s .. ':', {}, 0
for i = 1, n do
    local e, ey, here = v[i], vy[i], nil
    if ey and ey:sub(1, #mine) == mine then
        -- With the big part's entry of the field, if any: an older bet's (above).
        dely[#dely + 1], here = fields[i], ey
        if e then del[#del + 1] = fields[i] end
    elseif e and e:sub(1, #mine) == mine then
        del[#del + 1], here = fields[i], e
    end
    if here then
        removed = removed + 1
        -- "<round_id>:<placed_ms>|<record>", or an older version's "<round_id>:<placed_ms>".
        local placed = tonumber(here:match('^%d+', #mine + 1))
        if not placed then return bug('corrupt idempotency key index entry') end
        if placed >= since then
            local a = add[hs[i]]
            if not a then a = {}; add[hs[i]] = a end
            a[#a + 1] = i
        end
    end
end

-- An older version's records go whatever their entries say: an entry naming another round
-- (the key reused after the TTL) or none (removed, bits set, by an earlier step) leaves the
-- record nobody's answer. They go last, with the entries (below), so that a step failing
-- half-way (a filter shard of the wrong type) leaves every record its entry needs.
if #del == 0 and #dely == 0 then
    call('HDEL', RECORDS, unpack(fields))
    return 0
end

-- Per shard, one BITFIELD_RO of the words its keys use and one BITFIELD SET u32 of each with
-- the keys' bits added: measured cheaper than one BITFIELD of 5 single-bit SETs per key
-- (bench/README.md), whose 20 arguments Redis parses and propagates to the AOF. With two days
-- both words are in the same triple of the same shard: two GETs and two SETs of one command
-- each. Offsets and words go as strings formatted with '%d' (exact below 2^53): Redis formats
-- a number argument with snprintf "%.17g", several times the cost. A step of 256 keys over
-- 1,024 shards puts one key in most shards: that case makes no tables.
local bor, format, WORDS = bit.bor, string.format, {}
local function set(key, size, list)
    if #list == 1 and not two then
        local i = list[1]
        local off = format('%d', hw[i] % size * 96 + td)
        local v = bor(call('BITFIELD_RO', key, 'GET', 'u32', off)[1], hm[i])
        if v < 0 then v = v + WORD end
        call('BITFIELD', key, 'SET', 'u32', off, format('%d', v))
        return
    end
    local get, at, nw = {}, {}, 0
    for _, i in ipairs(list) do
        local base = hw[i] % size * 96
        for d = 1, two and 2 or 1 do
            local bo = base + (d == 1 and td or yd)
            if not at[bo] then
                nw = nw + 1
                at[bo] = nw
                WORDS[nw] = 0
                get[3 * nw - 2], get[3 * nw - 1], get[3 * nw] = 'GET', 'u32', format('%d', bo)
            end
            WORDS[at[bo]] = bor(WORDS[at[bo]], hm[i])
        end
    end
    local old, ops = call('BITFIELD_RO', key, unpack(get)), {}
    for bo, j in pairs(at) do
        local v = bor(old[j], WORDS[j])
        if v < 0 then v = v + WORD end
        ops[#ops + 1], ops[#ops + 2], ops[#ops + 3], ops[#ops + 4] = 'SET', 'u32',
            format('%d', bo), format('%d', v)
    end
    call('BITFIELD', key, unpack(ops))
end
for j, sh in ipairs(slist) do
    local list = add[sh]
    if list then set(KEYS[fixed + j], wsize, list) end
end
call('HDEL', RECORDS, unpack(fields))
if #dely > 0 then call('HDEL', YOUNG, unpack(dely)) end
if #del > 0 then call('HDEL', KEYS[1], unpack(del)) end
return removed
