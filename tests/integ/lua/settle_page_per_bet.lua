#!lua
--[[
The per-bet settlement page as it was before pages were aggregated, kept unchanged (below this
note) as the reference that test_lua_settle.py compares scripts/lua/settle_page.lua with: the
same bets must get the same credits, balances, round totals, net winnings and, once the new
page entries are expanded line by line, the same outbox credits. Not loaded by tickpool.
]]
--[[
settle_page.lua: pay (or refund) one HSCAN page of bucket N's bets of a round, exactly once.

KEYS[1] tp:{bN}:plan:<id>     KEYS[2] tp:{bN}:bal       KEYS[3] tp:{bN}:paid:<id>
KEYS[4] tp:{bN}:payout:<id>   KEYS[5] tp:{bN}:outbox
KEYS[6 .. 5+nbands] tp:{bN}:bets:<id>:<band> for band 0 .. nbands-1
KEYS[6+nbands] tp:{bN}:net    ZSET user -> net winnings (bet.lua subtracts stakes; we add credits)
ARGV[1] round id  ARGV[2] page size (HSCAN COUNT)  ARGV[3] now_ms
Plan (bucket_plan.lua): win → scans only the winning band, each bet of stake s gets
floor(s * pot / W); refund → scans every band, each bet gets its stake back.
Each bet is credited at most once (HSETNX paid bet_id amount), even when a page is repeated
(a leader died after the page ran but before it saw the reply). Per page every player is
credited once with his sum (HINCRBY bal, ZINCRBY net), `payout:<id>` keeps his round total, and each bet's
credit is XADDed to the outbox: type payout|refund, bet_id, user_id, round_id, amount,
balance (after this page's credit), ts. The cursor lives in the plan, so a new leader resumes.
Returns {'ok', done (0|1), bets credited by this call}, or {'err', 'no_plan'}.
]]
if #KEYS < 6 or #ARGV ~= 3 then return redis.error_reply('ERR tp_settle_page: bad KEYS/ARGV') end
local p = redis.call('HMGET', KEYS[1], 'band', 'pot', 'w', 'refund', 'nbands', 'pos', 'cur', 'done')
if not p[1] then return {'err', 'no_plan'} end
if p[8] == '1' then return {'ok', 1, 0} end
local band, pot, w, refund = tonumber(p[1]), tonumber(p[2]), tonumber(p[3]), p[4] == '1'
local nbands, pos, cur = tonumber(p[5]), tonumber(p[6]), p[7]
if #KEYS ~= 6 + nbands then return redis.error_reply('ERR tp_settle_page: want 6 + nbands KEYS') end

-- floor(a * b / c) exactly for 0 <= a, 0 <= b < c < 2^52 (doubles hold integers < 2^53 only,
-- and a * b may not): binary long multiplication keeping quotient and remainder.
local function mulfloordiv(a, b, c)
    local bits = {}
    while a > 0 do
        bits[#bits + 1] = a % 2
        a = (a - a % 2) / 2
    end
    local q, r = 0, 0
    for i = #bits, 1, -1 do
        q, r = q * 2, r * 2
        if r >= c then q, r = q + 1, r - c end
        if bits[i] == 1 then
            r = r + b
            if r >= c then q, r = q + 1, r - c end
        end
    end
    return q
end
local q0, r0 = 0, 0
if not refund then
    r0 = pot % w
    q0 = (pot - r0) / w
end
local function str(n) return string.format('%.0f', n) end

local scan_band = refund and pos or band
local res = redis.call('HSCAN', KEYS[6 + scan_band], cur, 'COUNT', ARGV[2])
local items = res[2]
local sums, order, credits = {}, {}, {}
local n = 0
for i = 1, #items, 2 do
    local bet_id, v = items[i], items[i + 1]
    local user, stake = v:match('^(%d+):(%d+)$')
    stake = tonumber(stake)
    local amount = refund and stake or (stake * q0 + mulfloordiv(stake, r0, w))
    if redis.call('HSETNX', KEYS[3], bet_id, str(amount)) == 1 then
        if not sums[user] then
            sums[user] = 0
            order[#order + 1] = user
        end
        sums[user] = sums[user] + amount
        credits[#credits + 1] = {bet_id, user, amount}
        n = n + 1
    end
end
local bal = {}
local total = 0
for _, user in ipairs(order) do
    bal[user] = redis.call('HINCRBY', KEYS[2], user, str(sums[user]))
    redis.call('HINCRBY', KEYS[4], user, str(sums[user]))
    redis.call('ZINCRBY', KEYS[6 + nbands], str(sums[user]), user)
    total = total + sums[user]
end
local kind = refund and 'refund' or 'payout'
for _, c in ipairs(credits) do
    redis.call('XADD', KEYS[5], '*', 'type', kind, 'bet_id', c[1], 'user_id', c[2],
               'round_id', ARGV[1], 'amount', str(c[3]), 'balance', str(bal[c[2]]), 'ts', ARGV[3])
end
local done = '0'
if res[1] == '0' then
    if refund and pos + 1 < nbands then
        redis.call('HSET', KEYS[1], 'pos', str(pos + 1), 'cur', '0')
    else
        done = '1'
    end
else
    redis.call('HSET', KEYS[1], 'cur', res[1])
end
redis.call('HSET', KEYS[1], 'done', done)
if total > 0 then redis.call('HINCRBY', KEYS[1], 'paid', str(total)) end
return {'ok', tonumber(done), n}
