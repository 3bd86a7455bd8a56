#!lua
--[[
settle_page.lua: pay (or refund) one page of bucket N's bets of a round, exactly once. A page is
bounded in bets credited (ARGV[2], the leader's estimate of what fits its time target) and in
Redis time (ARGV[4]: no further bet is taken once the script has run that long, checked after
each HSCAN chunk, and every 16 bets inside a listpack's chunk or on the exact slow arithmetic),
so Redis serves the bets queued behind it within about a page's time, however many entries one
HSCAN returns; the leader sizes the next page from the time this one reports.

KEYS[1] tp:{bN}:plan:<id>     KEYS[2] tp:{bN}:bal       KEYS[3] tp:{bN}:paid:<id>
KEYS[4] tp:{bN}:payout:<id>   KEYS[5] tp:{bN}:outbox
KEYS[6 .. 5+nbands] tp:{bN}:bets:<id>:<band> for band 0 .. nbands-1
KEYS[6+nbands] tp:{bN}:net    ZSET user -> net winnings (bet_batch.lua subtracts stakes; we add credits)
ARGV[1] round id  ARGV[2] most bets to credit (>= 1)  ARGV[3] now_ms  ARGV[4] time budget in µs
Plan (bucket_plan.lua): win → scans only the winning band, each bet of stake s gets
floor(s * pot / W); refund → scans every band in turn, each bet gets its stake back.
Each bet is credited at most once: `paid:<id>` (bet_id → amount) is read for each chunk's bets
before anything is written, so a repeated page (a leader died after the page ran but before it
saw the reply, HSCAN returned an entry twice, or a page stopped inside a chunk and the next reads
it again) credits nothing again. Writes are per page:
one HSET of `paid`; every player once with his sum (`bal`, `payout:<id>` his round total, `net`),
read and written with one command per key; and ONE outbox entry carrying every credit of the
page: type credits, kind payout|refund, round_id, ts, credits = one line per bet
"<bet_id>,<user_id>,<amount>,<balance>" (balance after this page's credit), `\n`-separated.
The cursor lives in the plan, so a new leader resumes.
Returns {'ok', done (0|1), bets credited by this call, bets scanned (credited, or found paid),
µs of Redis time this call took}, or {'err', 'no_plan'}. Malformed arguments or bets entries are script errors with
nothing written.
]]

local KEYS, ARGV = KEYS, ARGV
local call, format, tonumber = redis.call, string.format, tonumber

local function bug(what)
    return redis.error_reply('ERR tp_settle_page: ' .. what)
end

local function uint(s)
    -- A canonical non-negative decimal integer below 10^15 (exact in a Lua double), else nil.
    if type(s) ~= 'string' or #s > 15 then return nil end
    if s:find('^[1-9]%d*$') then return tonumber(s) end
    if s == '0' then return 0 end
    return nil
end

local t0 = call('TIME')
local function elapsed_us()
    local t = call('TIME')
    return (tonumber(t[1]) - tonumber(t0[1])) * 1000000 + tonumber(t[2]) - tonumber(t0[2])
end

if #KEYS < 7 or #ARGV ~= 4 then return bug('bad KEYS/ARGV') end
local max_bets, budget = uint(ARGV[2]), uint(ARGV[4])
if not max_bets or max_bets < 1 or not budget or not uint(ARGV[1]) or not uint(ARGV[3]) then
    return bug('bad ARGV')
end
local p = call('HMGET', KEYS[1], 'band', 'pot', 'w', 'refund', 'nbands', 'pos', 'cur', 'done')
if not p[1] then return {'err', 'no_plan'} end
if p[8] == '1' then return {'ok', 1, 0, 0, elapsed_us()} end
local band, pot, w, refund = tonumber(p[1]), tonumber(p[2]), tonumber(p[3]), p[4] == '1'
local nbands, pos, cur = tonumber(p[5]), tonumber(p[6]), p[7]
if #KEYS ~= 6 + nbands then return bug('want 6 + nbands KEYS') end

-- Up to 8000 values fit Lua's stack at once: long argument lists go in slices.
local SLICE = 4000
local function sliced(cmd, key, list, out)
    for i = 1, #list, SLICE do
        local r = call(cmd, key, unpack(list, i, math.min(i + SLICE - 1, #list)))
        if out then
            for j = 1, #r do out[#out + 1] = r[j] end
        end
    end
    return out
end

-- floor(a * b / c) exactly for 0 <= a, 0 <= b < c < 2^52 (doubles hold integers < 2^53 only,
-- and a * b may not): a * b directly when it is exact, else binary long multiplication keeping
-- quotient and remainder.
local EXACT = 9007199254740992
-- An integer as decimal text: '%d' (a C long) where the double is exact, which costs a tenth of
-- the floating-point formatting of '%.0f'; '%.0f' beyond.
local function dec(x)
    if x < EXACT and x > -EXACT then return format('%d', x) end
    return format('%.0f', x)
end
local function mulfloordiv(a, b, c)
    local ab = a * b
    if ab < EXACT then return (ab - ab % c) / c end
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

-- Scan: HSCAN chunks; each bet not paid yet is taken until the page holds max_bets bets or its
-- time is spent. A chunk can be far longer than asked for (a hash small enough to be a listpack
-- comes back whole, 512 entries by Redis's default), so a page may stop inside one: it then
-- leaves the cursor where that chunk began, and the next page reads the chunk again and skips
-- the bets this one paid.
local CHUNK, CHECK = 128, 16
local match, find = string.match, string.find
-- What a stake is owed, as a number and as text (stakes repeat: the same few amounts are most
-- bets).
local owed, owed_s = {}, {}
local ids, users, amounts, amount_s, seen, n = {}, {}, {}, {}, {}, 0
local scanned, done, full, slow = 0, false, false, false
local scan_band = refund and pos or band
while true do
    local from = cur
    local count = math.max(1, math.min(CHUNK, max_bets - n))
    local res = call('HSCAN', KEYS[6 + scan_band], cur, 'COUNT', count)
    cur = res[1]
    local items = res[2]
    local cids, cusers, cstakes, m = {}, {}, {}, 0
    for i = 1, #items, 2 do
        local bet_id = items[i]
        local user, stake_s = match(items[i + 1], '^([1-9]%d*):([1-9]%d*)$')
        if not find(bet_id, '^[1-9]%d*$') then return bug('bad bet id ' .. bet_id) end
        if not stake_s or #stake_s > 15 then return bug('bad bets entry ' .. bet_id) end
        if not seen[bet_id] then -- HSCAN may return an entry twice
            seen[bet_id] = true
            m = m + 1
            cids[m], cusers[m], cstakes[m] = bet_id, user, stake_s
        end
    end
    -- The chunk's bets paid already (a repeated page, a chunk read again) are skipped.
    local paidv = m > 0 and sliced('HMGET', KEYS[3], cids, {}) or {}
    -- COUNT is a hint a hash table overshoots by a few entries (whole buckets): such a chunk
    -- is taken whole, as reading it again would cost more; a listpack's is cut at the size.
    -- The time is checked inside a chunk only where a chunk can take long: a listpack's, or
    -- stakes on the exact long multiplication (slow, set below).
    local long = m > 2 * count
    local cap = long and max_bets or math.huge
    local looked = m
    for j = 1, m do
        if not paidv[j] then
            if n >= cap or ((long or slow) and n > 0 and n % CHECK == 0
                            and elapsed_us() >= budget) then
                full, looked = true, j - 1
                break
            end
            local stake_s = cstakes[j]
            local amount = owed[stake_s]
            if not amount then
                local stake = tonumber(stake_s) -- < 10^15: exact
                amount = refund and stake or (stake * q0 + mulfloordiv(stake, r0, w))
                owed[stake_s], owed_s[stake_s] = amount, dec(amount)
                slow = slow or (not refund and stake * r0 >= EXACT)
            end
            n = n + 1
            ids[n], users[n], amounts[n], amount_s[n] = cids[j], cusers[j], amount, owed_s[stake_s]
        end
    end
    scanned = scanned + looked
    if full then
        cur = from
        break
    end
    if cur == '0' then
        if refund and scan_band + 1 < nbands then
            scan_band = scan_band + 1
        else
            done = true
        end
    end
    if done or n >= max_bets or elapsed_us() >= budget then break end
end

-- Credits: the page's bets, summed per player.
local credits, sums, order = {}, {}, {}
if n > 0 then
    local paidw = {}
    for i = 1, n do
        local user, amount = users[i], amounts[i]
        credits[#credits + 1] = i
        paidw[#paidw + 1] = ids[i]
        paidw[#paidw + 1] = amount_s[i]
        if not sums[user] then
            sums[user] = 0
            order[#order + 1] = user
        end
        sums[user] = sums[user] + amount
    end
    sliced('HSET', KEYS[3], paidw)
end

-- Players: balance, round total and net winnings, each key read once and written once.
local total = 0
local balance = {}
if #order > 0 then
    local balv = sliced('HMGET', KEYS[2], order, {})
    local payv = sliced('HMGET', KEYS[4], order, {})
    local netv = sliced('ZMSCORE', KEYS[6 + nbands], order, {})
    local balw, payw, netw = {}, {}, {}
    for j, user in ipairs(order) do
        local sum = sums[user]
        total = total + sum
        local b = uint(balv[j] or '0')
        if b and b + sum < EXACT then
            balance[user] = dec(b + sum)
            balw[#balw + 1] = user
            balw[#balw + 1] = balance[user]
        else -- beyond a double's exact range: Redis adds in 64 bits
            call('HINCRBY', KEYS[2], user, dec(sum))
            balance[user] = call('HGET', KEYS[2], user)
        end
        payw[#payw + 1] = user
        payw[#payw + 1] = dec(tonumber(payv[j] or '0') + sum)
        netw[#netw + 1] = dec(tonumber(netv[j] or '0') + sum)
        netw[#netw + 1] = user
    end
    if #balw > 0 then sliced('HSET', KEYS[2], balw) end
    sliced('HSET', KEYS[4], payw)
    sliced('ZADD', KEYS[6 + nbands], netw)
    local lines = {}
    for k, i in ipairs(credits) do
        lines[k] = ids[i] .. ',' .. users[i] .. ',' .. amount_s[i] .. ',' ..
            balance[users[i]]
    end
    call('XADD', KEYS[5], '*', 'type', 'credits', 'kind', refund and 'refund' or 'payout',
         'round_id', ARGV[1], 'ts', ARGV[3], 'credits', table.concat(lines, '\n'))
end

if done then
    call('HSET', KEYS[1], 'pos', format('%d', scan_band), 'cur', '0', 'done', '1')
else
    call('HSET', KEYS[1], 'pos', format('%d', scan_band), 'cur', cur, 'done', '0')
end
if total > 0 then call('HINCRBY', KEYS[1], 'paid', dec(total)) end
return {'ok', done and 1 or 0, #credits, scanned, elapsed_us()}
