#!lua
--[[
round_boundary.lua: one boundary of the game, fenced and all-or-nothing: the close of a live
round, the lock of an open round and the open of the next round, any of the three (at least
one), written together so that no reader of the global keys ever sees one without the others
(at T the game goes from (open N, live N-1) to (open N+1, live N) in one step).

  close C: live -> settling with the close price and the settlement plan;
  lock  L: open -> live with the lock price; reveals round L-1's seed when that round is final
           (its segment ends at this lock), and XADDs it (type round_seed) for the system of
           record, whose receipt of that round went out without it;
  open  O: creates round O in state open (O must be the max id + 1: ids have no gaps, counting
           the floor, the newest id Postgres holds, as an id: a Redis that lost its rounds
           never reuses one, see src/game/leader_floor.c); left
           out while the operator has paused the game (tp:{g}:pause exists when this runs):
           the leader plans its boundaries ahead of T from its own last read of the pause, so
           a pause acknowledged in that lead is obeyed here, at T, in the same step as the
           lock (the game goes to (open none, live N) as a boundary planned paused does).

Every part is checked before anything is written (Redis does not roll a script back); a part
already done is a no-op (a repeated step), so the script is idempotent.

KEYS[1] tp:{g}:lease  KEYS[2] tp:{g}:current  KEYS[3] tp:{g}:outbox  KEYS[4] tp:{g}:rounds (ZSET)
KEYS[5] tp:{g}:unfinished (ZSET id: rounds not yet settled or cancelled; the leader's to-do list)
KEYS[6] tp:{g}:round:<C>
KEYS[7] tp:{g}:round:<L>  KEYS[8] tp:{g}:round:<L-1>  KEYS[9] tp:{g}:seed:<L-1>
KEYS[10] tp:{g}:round:<O>  KEYS[11] tp:{g}:seed:<O>
KEYS[12] tp:{g}:pause (HASH, pause.lua's; exists while the operator has paused the game)
(a part left out still names its keys, of round 0, and never touches them)
ARGV[1] holder  ARGV[2] epoch
close: ARGV[3] C (0: no close)  ARGV[4] close price  ARGV[5] winning band  ARGV[6] total T
       ARGV[7] winning stake W  ARGV[8] rake  ARGV[9] pot  ARGV[10] refund_all (0|1)
       ARGV[11] pools (comma list, one per band)
lock:  ARGV[12] L (0: no lock)  ARGV[13] lock price (cents)
open:  ARGV[14] O (0: no open)  ARGV[15] opens_at  ARGV[16] locks_at  ARGV[17] closes_at
       ARGV[18] seed (64 hex)  ARGV[19] seed_hash (64 hex)  ARGV[20] vol_ppb  ARGV[21] rake_bps
       ARGV[22] edges (comma list of bps, may be empty)  ARGV[23] tick_ms  ARGV[24] betting_ms
       ARGV[25] min_stake  ARGV[26] max_stake
       (the round's rules, the config's at its open, are stored here for good: every later step
       reads them from the round, so a config change with a restart applies to later rounds)
       ARGV[27] floor: the newest round id Postgres holds (0: none, or not known while Redis
       holds rounds)
Returns {'ok', closed, locked, opened} (1: written by this call, 0: absent or already done),
{'ok', closed, locked, 0, 'paused'} when the open was left out for the pause, or
{'err', code, part} with nothing written: stale_epoch (part 'fence'), not_found, bad_state
(close of a round not live, lock of a cancelled round), too_early (Redis TIME before closes_at
or locks_at), bad_id (open of an id other than max(max id, floor) + 1).
]]
if #KEYS ~= 12 or #ARGV ~= 27 then
    return redis.error_reply('ERR tp_round_boundary: want 12 KEYS, 27 ARGV')
end
local call = redis.call
if call('GET', KEYS[1]) ~= ARGV[1] .. '|' .. ARGV[2] then return {'err', 'stale_epoch', 'fence'} end
local c_id, l_id, o_id = ARGV[3], ARGV[12], ARGV[14]
local t = call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Checks: decide what each part will do; nothing is written before all of them passed.
local do_close, do_lock, do_open, paused = false, false, false, false
if c_id ~= '0' then
    local r = call('HMGET', KEYS[6], 'state', 'closes_at')
    if not r[1] then return {'err', 'not_found', 'close'} end
    if r[1] ~= 'settling' and r[1] ~= 'settled' then
        if r[1] ~= 'live' then return {'err', 'bad_state', 'close'} end
        if now < tonumber(r[2]) then return {'err', 'too_early', 'close'} end
        do_close = true
    end
end
if l_id ~= '0' then
    local r = call('HMGET', KEYS[7], 'state', 'locks_at')
    if not r[1] then return {'err', 'not_found', 'lock'} end
    if r[1] ~= 'live' and r[1] ~= 'settling' and r[1] ~= 'settled' then
        if r[1] ~= 'open' then return {'err', 'bad_state', 'lock'} end
        if now < tonumber(r[2]) then return {'err', 'too_early', 'lock'} end
        do_lock = true
    end
end
if o_id ~= '0' and call('EXISTS', KEYS[10]) == 0 then
    if call('EXISTS', KEYS[12]) == 1 then
        paused = true -- no round opens while paused; the id is the next open's after a resume
    else
        local top = call('ZREVRANGE', KEYS[4], 0, 0)
        local want = tonumber(ARGV[27])
        if not want or want < 0 then
            return redis.error_reply('ERR tp_round_boundary: bad floor')
        end
        if top[1] and tonumber(top[1]) > want then want = tonumber(top[1]) end
        want = want + 1
        if tonumber(o_id) ~= want then return {'err', 'bad_id', 'open'} end
        do_open = true
    end
end

-- Writes, in the order that leaves `current` right: the close drops its id from `live` before
-- the lock puts its own there, and the lock drops its id from `open` before the open puts its.
if do_close then
    call('HSET', KEYS[6], 'state', 'settling', 'close_price', ARGV[4], 'winning_band', ARGV[5],
         'total', ARGV[6], 'winning_stake', ARGV[7], 'rake', ARGV[8], 'pot', ARGV[9],
         'refund_all', ARGV[10], 'pools', ARGV[11])
    if call('HGET', KEYS[2], 'live') == c_id then call('HDEL', KEYS[2], 'live') end
end
if do_lock then
    call('HSET', KEYS[7], 'state', 'live', 'lock_price', ARGV[13])
    call('HSET', KEYS[2], 'live', l_id)
    if call('HGET', KEYS[2], 'open') == l_id then call('HDEL', KEYS[2], 'open') end
    local ps = call('HMGET', KEYS[8], 'state', 'seed')
    if (ps[1] == 'settled' or ps[1] == 'cancelled') and not ps[2] then
        local seed = call('GET', KEYS[9])
        if seed then
            call('HSET', KEYS[8], 'seed', seed)
            call('XADD', KEYS[3], '*', 'type', 'round_seed', 'round_id',
                 string.format('%.0f', tonumber(l_id) - 1), 'seed', seed)
        end
    end
end
if do_open then
    call('HSET', KEYS[10], 'id', o_id, 'state', 'open', 'opens_at', ARGV[15], 'locks_at', ARGV[16],
         'closes_at', ARGV[17], 'seed_hash', ARGV[19], 'vol_ppb', ARGV[20], 'rake_bps', ARGV[21],
         'edges', ARGV[22], 'tick_ms', ARGV[23], 'betting_ms', ARGV[24], 'min_stake', ARGV[25],
         'max_stake', ARGV[26])
    call('SET', KEYS[11], ARGV[18])
    call('ZADD', KEYS[4], o_id, o_id)
    call('ZADD', KEYS[5], o_id, o_id)
    call('HSET', KEYS[2], 'open', o_id)
    call('XADD', KEYS[3], '*', 'type', 'round_opened', 'round_id', o_id, 'opens_at', ARGV[15],
         'locks_at', ARGV[16], 'closes_at', ARGV[17], 'seed_hash', ARGV[19], 'edges', ARGV[22],
         'rake_bps', ARGV[21], 'vol_ppb', ARGV[20], 'tick_ms', ARGV[23], 'betting_ms', ARGV[24],
         'min_stake', ARGV[25], 'max_stake', ARGV[26])
end
if paused then return {'ok', do_close and 1 or 0, do_lock and 1 or 0, 0, 'paused'} end
return {'ok', do_close and 1 or 0, do_lock and 1 or 0, do_open and 1 or 0}
