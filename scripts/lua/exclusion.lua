#!lua
--[[
exclusion.lua: a player excludes themselves from betting for `days` days from now
(POST /api/v1/me/exclusion). An exclusion can be extended, never shortened: the comparison with
the one in force and the write are this one script, so of two concurrent requests the shorter
can never overwrite the longer. bet.lua reads the same field and refuses the player's bets
(self_excluded) while now < excluded_until.

KEYS (in the player's bucket N, hash tag {bN}, see scripts/lua/README.md):
  KEYS[1] tp:{bN}:excl   HASH user_id -> excluded_until (Unix ms)
ARGV (decimal integers without sign or leading zeros):
  [1] user_id  [2] days (1..365)  [3] now_ms  [4] bucket N  [5] number of buckets B
Returns:
  {"ok", excluded_until}   the exclusion now in force: now + days, or the same end again.
  {"err", "exclusion_cannot_shorten", excluded_until}   an exclusion ending later is in force;
      nothing changed (excluded_until is that later end).
  A malformed argument or a KEYS name outside the layout is a caller bug: Redis error
  "ERR tp_exclusion: ...".

An expired field stays until the player's next exclusion overwrites it: one small field per
player who ever used it, and bet.lua compares it with now, so no clean-up write is needed.
]]

local DAY_MS = 86400000

local function uint(s)
    if #s > 15 then return nil end
    if s:find('^[1-9]%d*$') then return tonumber(s) end
    if s == '0' then return 0 end
    return nil
end

local function bug(what)
    return redis.error_reply('ERR tp_exclusion: ' .. what)
end

if #KEYS ~= 1 or #ARGV ~= 5 then return bug('want 1 KEYS and 5 ARGV') end
local user_s = ARGV[1]
local user, days, now = uint(user_s), uint(ARGV[2]), uint(ARGV[3])
local bucket, nbuckets = uint(ARGV[4]), uint(ARGV[5])
if not user or user == 0 then return bug('bad user_id') end
if not days or days < 1 or days > 365 then return bug('bad days') end
if not now then return bug('bad now_ms') end
if not nbuckets or nbuckets < 1 or not bucket or bucket >= nbuckets then
    return bug('bad bucket')
end
if user % nbuckets ~= bucket then return bug('user_id not in this bucket') end
-- tp:{bN}:excl or, in cluster mode, tp:{bN.K}:excl (src/store/keys.c).
if KEYS[1] ~= 'tp:{b' .. ARGV[4] .. '}:excl'
    and not KEYS[1]:match('^tp:{b' .. ARGV[4] .. '%.%d+}:excl$') then
    return bug('KEYS do not match the key layout for this bucket')
end

local want = now + days * DAY_MS
local have = tonumber(redis.call('HGET', KEYS[1], user_s) or '0')
if have > want then return {'err', 'exclusion_cannot_shorten', have} end
redis.call('HSET', KEYS[1], user_s, string.format('%.0f', want))
return {'ok', want}
