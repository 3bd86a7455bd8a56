#!lua
--[[
pause.lua: the operator pauses or resumes the game (`tickpool admin pause|resume`), and the
admin action is recorded in the same step.

While paused the leader opens no new round (the open round still locks, the live one settles)
and bet.lua refuses bets with game_paused; the bucket copies it reads (tp:{bN}:paused) are
written by the caller with plain SET/DEL, BEFORE this script on pause and on resume (a cluster
script cannot reach other slots), so a command cut half-way is completed by running it again:
this key stays the authority for "paused?".

KEYS (global hash tag {g}, see scripts/lua/README.md):
  KEYS[1] tp:{g}:pause    HASH reason, since (Unix ms), by (actor), action_id; absent: running
  KEYS[2] tp:{g}:outbox   STREAM global events (type=admin for the Postgres writer)
ARGV:
  [1] "pause" or "resume"  [2] now_ms (decimal)
  [3] admin action id (1..128 bytes of [A-Za-z0-9_.:-])  [4] actor (1..160 bytes)
  [5] reason (0..200 bytes; "" for none)
Returns:
  {"ok", since}                       paused now (since = now_ms), or resumed (since = when the
                                      pause had started)
  {"err", "already_paused", since}    pause while paused (nothing written)
  {"err", "not_paused"}               resume while running (nothing written)
  A malformed argument or KEYS name: Redis error "ERR tp_pause: ...".
]]
local function bug(what)
    return redis.error_reply('ERR tp_pause: ' .. what)
end

if #KEYS ~= 2 or #ARGV ~= 5 then return bug('want 2 KEYS and 5 ARGV') end
local op, now, id, actor, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if op ~= 'pause' and op ~= 'resume' then return bug('bad op') end
if not now:match('^[1-9]%d*$') or #now > 15 then return bug('bad now_ms') end
if #id < 1 or #id > 128 or id:match('[^%w_.:%-]') then return bug('bad action id') end
if #actor < 1 or #actor > 160 or #reason > 200 then return bug('bad actor or reason') end
if KEYS[1] ~= 'tp:{g}:pause' or KEYS[2] ~= 'tp:{g}:outbox' then
    return bug('KEYS do not match the key layout')
end

local since = redis.call('HGET', KEYS[1], 'since')
local detail
if op == 'pause' then
    if since then return {'err', 'already_paused', tonumber(since)} end
    redis.call('HSET', KEYS[1], 'reason', reason, 'since', now, 'by', actor, 'action_id', id)
    since = now
    detail = '{}'
else
    if not since then return {'err', 'not_paused'} end
    redis.call('DEL', KEYS[1])
    detail = '{"paused_since":' .. since .. '}'
end
redis.call('XADD', KEYS[2], '*', 'type', 'admin', 'action_id', id, 'action', op, 'actor', actor,
           'user_id', '', 'reason', reason, 'ts', now, 'detail', detail)
return {'ok', tonumber(since)}
