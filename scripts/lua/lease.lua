#!lua
--[[
lease.lua: acquire, renew or release the game leader lease (see README.md "Game engine").

KEYS[1] tp:{g}:lease   STRING "<holder>|<epoch>", with a PX expiry
KEYS[2] tp:{g}:epoch   STRING fencing epoch, INCR on every acquisition
ARGV[1] holder id (1..128 bytes, no '|')
ARGV[2] epoch the caller believes it holds ("0" when it holds none)
ARGV[3] lease time in ms (> 0); "0" releases the lease if it is the caller's
Returns:
  {'ok', epoch, acquired}  the caller holds the lease with that epoch; acquired = 1 when the
                           epoch is new (fresh acquisition: reload state), 0 for a renewal
  {'err', 'held', "<holder>|<epoch>"}  someone else holds it
  {'ok', 0, 0}             after a release (whether or not it was held)
Malformed arguments raise "ERR tp_lease: ...".
]]
if #KEYS ~= 2 or #ARGV ~= 3 then return redis.error_reply('ERR tp_lease: want 2 KEYS, 3 ARGV') end
local holder, epoch, px = ARGV[1], ARGV[2], tonumber(ARGV[3])
if #holder < 1 or #holder > 128 or holder:find('|', 1, true) then
    return redis.error_reply('ERR tp_lease: bad holder')
end
if not epoch:match('^%d+$') or not px or px < 0 then
    return redis.error_reply('ERR tp_lease: bad epoch or px')
end
local mine = holder .. '|' .. epoch
local cur = redis.call('GET', KEYS[1])
if px == 0 then
    if cur == mine then redis.call('DEL', KEYS[1]) end
    return {'ok', 0, 0}
end
if cur == mine then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {'ok', tonumber(epoch), 0}
end
if cur then return {'err', 'held', cur} end
local e = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], holder .. '|' .. e, 'PX', ARGV[3])
return {'ok', e, 1}
