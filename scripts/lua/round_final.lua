#!lua
--[[
round_final.lua: settling -> settled or cancelling -> cancelled with the receipt, fenced; run
after settle_finish in every bucket. Reveals the seed when its segment is past (Redis TIME >=
locks_at + betting_ms; otherwise the next round's lock reveals it), XADDs the receipt with the
lock and close prices, winning band and (when revealed) seed for the system of record.

KEYS[1] tp:{g}:lease  KEYS[2] tp:{g}:round:<id>  KEYS[3] tp:{g}:seed:<id>  KEYS[4] tp:{g}:outbox
KEYS[5] tp:{g}:unfinished (the round leaves it with its final state, also on a rerun)
ARGV[1] holder  ARGV[2] epoch  ARGV[3] id  ARGV[4] Σ T_b  ARGV[5] Σ paid_b (payouts or refunds)
Receipt: total, winning_stake, rake, breakage, payouts, refunds with
payouts + rake + breakage + refunds = total.
Returns {'ok', 1, state}, {'ok', 0, state} (already final), {'err', 'stale_epoch'},
{'err', 'not_found'}, {'err', 'bad_state'} (not settling/cancelling), {'err', 'mismatch'}
(bucket sums disagree with the recorded total, or negative breakage: nothing written).
]]
if #KEYS ~= 5 or #ARGV ~= 5 then return redis.error_reply('ERR tp_round_final: want 5 KEYS, 5 ARGV') end
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '|' .. ARGV[2] then return {'err', 'stale_epoch'} end
local r = redis.call('HMGET', KEYS[2], 'state', 'total', 'winning_stake', 'rake', 'refund_all',
                     'locks_at', 'betting_ms', 'lock_price', 'close_price', 'winning_band',
                     'pools')
if not r[1] then return {'err', 'not_found'} end
if r[1] == 'settled' or r[1] == 'cancelled' then
    redis.call('ZREM', KEYS[5], ARGV[3])
    return {'ok', 0, r[1]}
end
if r[1] ~= 'settling' and r[1] ~= 'cancelling' then return {'err', 'bad_state'} end
local total, w, rake = tonumber(r[2]), tonumber(r[3]), tonumber(r[4])
local sum_t, paid = tonumber(ARGV[4]), tonumber(ARGV[5])
if sum_t ~= total then return {'err', 'mismatch'} end
local payouts, refunds, breakage = 0, 0, 0
if r[5] == '1' then
    refunds = paid
    rake = 0
    if refunds ~= total then return {'err', 'mismatch'} end
else
    payouts = paid
    breakage = total - rake - payouts
    if breakage < 0 then return {'err', 'mismatch'} end
end
local final = r[1] == 'settling' and 'settled' or 'cancelled'
local function s(n) return string.format('%.0f', n) end
-- Everything that can fail (TIME, locks_at/betting_ms arithmetic) runs before the first write:
-- Redis does not roll back, and a state already final with no receipt XADDed could never be
-- repaired (a rerun answers {'ok', 0} and the system of record never gets the receipt).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reveal = now >= tonumber(r[6]) + tonumber(r[7])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('HSET', KEYS[2], 'state', final, 'r_total', s(total), 'r_winning_stake', s(w),
           'r_rake', s(rake), 'r_breakage', s(breakage), 'r_payouts', s(payouts),
           'r_refunds', s(refunds))
local ev = {'type', 'round_' .. final, 'round_id', ARGV[3], 'total', s(total),
            'winning_stake', s(w), 'rake', s(rake), 'breakage', s(breakage),
            'payouts', s(payouts), 'refunds', s(refunds),
            'refund_all', r[5] == '1' and '1' or '0'}
-- The pools per band, recorded at close or cancel (what the Round object shows once final).
if r[11] then ev[#ev + 1], ev[#ev + 2] = 'pools', r[11] end
if reveal then
    local seed = redis.call('GET', KEYS[3])
    if seed then
        redis.call('HSET', KEYS[2], 'seed', seed)
        ev[#ev + 1], ev[#ev + 2] = 'seed', seed
    end
end
-- Optional fields (absent for a round cancelled before its lock or close).
if r[8] then ev[#ev + 1], ev[#ev + 2] = 'lock_price', r[8] end
if r[9] and final == 'settled' then
    ev[#ev + 1], ev[#ev + 2] = 'close_price', r[9]
    if r[10] then ev[#ev + 1], ev[#ev + 2] = 'winning_band', r[10] end
end
redis.call('XADD', KEYS[4], '*', unpack(ev))
return {'ok', 1, final}
