#!lua
--[[
signup.lua: create a user record and claim its username in one step, so a crash can never
leave a claimed name without its record (or the reverse). The start balance is granted next by
grant.lua with grant id "signup:<user_id>" (idempotent; re-applied by a retried sign-up and by
every sign-in, so a crash between the two scripts never loses it).

KEYS (global hash tag {g}, see scripts/lua/README.md):
  KEYS[1] tp:{g}:usernames     HASH lower-cased username -> user_id
  KEYS[2] tp:{g}:user:<id>     HASH username, pw_hash, created_at
  KEYS[3] tp:{g}:outbox        STREAM global events (type=user for the Postgres writer)
ARGV:
  [1] lower-cased username  [2] username as typed (3..32 of [A-Za-z0-9_-])
  [3] user_id (from INCR tp:{g}:user_seq)  [4] pw_hash (argon2id encoded)  [5] now_ms
Returns:
  {"ok", user_id}      created (record, claim and outbox event written)
  {"taken", user_id}   the name is claimed already by user_id (nothing written)
  Redis error "ERR tp_signup: ..." for a malformed argument or a user id already in use.
]]
if #KEYS ~= 3 or #ARGV ~= 5 then return redis.error_reply('ERR tp_signup: want 3 KEYS, 5 ARGV') end
local lower, name, id, pw, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if #name < 3 or #name > 32 or name:match('[^%w_%-]') or string.lower(name) ~= lower then
    return redis.error_reply('ERR tp_signup: bad username')
end
if not id:match('^[1-9]%d*$') or #id > 15 or not now:match('^%d+$') or #pw < 16 then
    return redis.error_reply('ERR tp_signup: bad argument')
end
if KEYS[2] ~= 'tp:{g}:user:' .. id then
    return redis.error_reply('ERR tp_signup: KEYS do not match the key layout')
end
local have = redis.call('HGET', KEYS[1], lower)
if have then return {'taken', tonumber(have)} end
if redis.call('EXISTS', KEYS[2]) == 1 then
    return redis.error_reply('ERR tp_signup: user id in use')
end
redis.call('HSET', KEYS[1], lower, id)
redis.call('HSET', KEYS[2], 'username', name, 'pw_hash', pw, 'created_at', now)
redis.call('XADD', KEYS[3], '*', 'type', 'user', 'user_id', id, 'username', name,
           'pw_hash', pw, 'created_at', now)
return {'ok', tonumber(id)}
