#!lua
--[[
settle_page.lua: pay (or refund) one page of bucket N's bets of a round, exactly once. A page is
bounded in bets credited (ARGV[2], the leader's estimate of what fits its time target) and in
Redis time (ARGV[4]: no further bet is taken once the script has run that long, checked after
each chunk, and every 16 bets inside a listpack's HSCAN chunk or on the exact slow arithmetic),
so Redis serves the bets queued behind it within about a page's time, however many entries one
HSCAN returns; the leader sizes the next page from the time this one reports.

KEYS[1] tp:{bN}:plan:<id>     KEYS[2] tp:{bN}:bal       KEYS[3] tp:{bN}:paid:<id>
KEYS[4] tp:{bN}:payout:<id>   KEYS[5] tp:{bN}:outbox
KEYS[6 .. 5+nbands] tp:{bN}:bets:<id>:<band> for band 0 .. nbands-1 (HASH, an older version's)
KEYS[6+nbands] tp:{bN}:net    ZSET user -> net winnings (bet_batch.lua subtracts stakes; we add credits)
KEYS[7+nbands .. 6+2*nbands] tp:{bN}:betl:<id>:<band> for band 0 .. nbands-1 (LIST, this one's)
ARGV[1] round id  ARGV[2] most bets to credit (>= 1)  ARGV[3] now_ms  ARGV[4] time budget in µs
Plan (bucket_plan.lua): win → scans only the winning band, each bet of stake s gets
floor(s * pot / W); refund → scans every band in turn, each bet gets its stake back.
A band's bets are in its list (bet_batch.lua appends "<bet_id>:<user_id>:<stake>") and, for a
round an older version took bets of, in its hash (bet_id -> "<user_id>:<stake>"): a band is
scanned hash first (HSCAN; an absent hash is one empty reply), then list (LRANGE by index). The
plan's cursor `cur` says which and where: an HSCAN cursor (decimal, what an older version
leaves in a plan it was paging), or "L<index>" of the list's next entry.
Each bet is credited at most once: `paid:<id>` (bet_id → amount) is read for each chunk's bets
before anything is written, so a repeated page (a leader died after the page ran but before it
saw the reply, HSCAN returned an entry twice, or a page stopped inside a chunk and the next reads
it again) credits nothing again; a list's index cursor moves with the credits in one script, so
there the check only guards against a bet id written twice. Writes are per page:
one HSET of `paid`; every player once with his sum (`bal`, `payout:<id>` his round total, `net`),
read and written with one command per key; and ONE outbox entry carrying every credit of the
page: type credits, kind payout|refund, round_id, ts, credits = one line per bet
"<bet_id>,<user_id>,<amount>,<balance>" (balance after this page's credit), `\n`-separated.
The cursor lives in the plan, so a new leader resumes.
Returns {'ok', done (0|1), bets credited by this call, bets scanned (credited, or found paid),
µs of Redis time this call took, the amount the bucket's pages have paid so far (the plan's
`paid`, this call's credits included: the leader paces pages by it), µs of those spent from the
players' writes on, and the players credited (the players' writes cost per player, which is a
fixed cost of a page holding most of the bucket's players and a cost per bet of one whose bets
are each a player's: the leader sizes pages on a fixed cost plus a cost per bet)}, or
{'err', 'no_plan'}. Malformed arguments or bets entries are script errors with
nothing written; so are a balance, round total or the plan's `paid` that is no number (or
that Redis's 64-bit HINCRBY could not add to) and an outbox that is no stream: every field the
page adds to is read and checked before its first write.
]]

local KEYS, ARGV = KEYS, ARGV
local call, format, tonumber, find = redis.call, string.format, tonumber, string.find

local function bug(what)
    return redis.error_reply('ERR tp_settle_page: ' .. what)
end

local function uint(s)
    -- A canonical non-negative decimal integer below 10^15 (exact in a Lua double), else nil.
    if type(s) ~= 'string' or #s > 15 then return nil end
    if find(s, '^[1-9]%d*$') then return s + 0 end -- `+ 0`: one strtod, tonumber() runs two
    if s == '0' then return 0 end
    return nil
end

-- The start's TIME parsed once, each later one's texts by `text - number` (one strtod each;
-- tonumber() runs two): a page reads the clock after each chunk and three or four times more.
local t0 = call('TIME')
local s0, us0 = t0[1] + 0, t0[2] + 0
local function elapsed_us()
    local t = call('TIME')
    return (t[1] - s0) * 1000000 + (t[2] - us0)
end

if #KEYS < 8 or #ARGV ~= 4 then return bug('bad KEYS/ARGV') end
local max_bets, budget = uint(ARGV[2]), uint(ARGV[4])
if not max_bets or max_bets < 1 or not budget or not uint(ARGV[1]) or not uint(ARGV[3]) then
    return bug('bad ARGV')
end
local p = call('HMGET', KEYS[1], 'band', 'pot', 'w', 'refund', 'nbands', 'pos', 'cur', 'done',
               'paid')
if not p[1] then return {'err', 'no_plan'} end
local paid = tonumber(p[9] or '0') or 0
if p[8] == '1' then return {'ok', 1, 0, 0, elapsed_us(), paid, 0, 0} end
local band, pot, w, refund = tonumber(p[1]), tonumber(p[2]), tonumber(p[3]), p[4] == '1'
local nbands, pos, cur = tonumber(p[5]), tonumber(p[6]), p[7]
if #KEYS ~= 6 + 2 * nbands then return bug('want 6 + 2 * nbands KEYS') end

-- Up to 8000 values fit Lua's stack at once: long argument lists go in slices. A read's
-- replies are returned as one list (the reply itself when there is one slice, the case of
-- pages up to 4,000 bets). Lists are filled by index, never by t[#t + 1]: `#` searches the
-- table each time (binary search, or doubling then halving through the hash part of a table
-- that outgrew its array), several times per bet and per player here before.
local SLICE = 4000
local function sliced(cmd, key, list, n)
    if n <= SLICE then return call(cmd, key, unpack(list, 1, n)) end
    local out, k = {}, 0
    for i = 1, n, SLICE do
        local r = call(cmd, key, unpack(list, i, math.min(i + SLICE - 1, n)))
        if type(r) == 'table' then
            for j = 1, #r do out[k + j] = r[j] end
            k = k + #r
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

-- Scan: chunks of the band's hash (HSCAN), then of its list (LRANGE); each bet not paid yet is
-- taken until the page holds max_bets bets or its time is spent. An HSCAN chunk can be far
-- longer than asked for (a hash small enough to be a listpack comes back whole, 512 entries by
-- Redis's default), so a page may stop inside one: it then leaves the cursor where that chunk
-- began, and the next page reads the chunk again and skips the bets this one paid. A list's
-- chunk is what was asked for, and a page that stops inside one leaves the index of its first
-- bet not taken.
local CHUNK, CHECK = 128, 16
local match, concat, sub = string.match, table.concat, string.sub
-- What a stake is owed, as a number and as text (stakes repeat: the same few amounts are most
-- bets).
local owed, owed_s = {}, {}
-- A bets entry's text "<user>:<stake>" read once per page: a player's bets of one stake are one
-- text, so most of a page's entries share a few, and each is parsed and checked once, then
-- looked up. rec = {user, stake text, amount, amount text, bets of this page, outbox tail};
-- the amount is worked out for a bet to credit only (a slow stake must not be worked out for a
-- whole chunk of bets found paid before the next time check).
local recs, used, nused = {}, {}, 0
local ids, brecs, seen, n = {}, {}, {}, 0
local scanned, done, full, slow = 0, false, false, false
local scan_band = refund and pos or band
local function entry(v)
    local rec = recs[v]
    if not rec then
        local user, stake_s = match(v, '^([1-9]%d*):([1-9]%d*)$')
        if not stake_s or #stake_s > 15 then return nil end
        rec = {user, stake_s, false, false, 0, false}
        recs[v] = rec
    end
    return rec
end
while true do
    local from = cur
    local count = math.max(1, math.min(CHUNK, max_bets - n))
    -- cids[j], crecs[j]: the chunk's j-th bet not seen before; cpos[j]: its place in the list.
    local cids, crecs, cpos, m = {}, {}, {}, 0
    local at, band_end = nil, false
    if sub(cur, 1, 1) == 'L' then
        at = uint(sub(cur, 2))
        if not at then return bug('bad cursor ' .. cur) end
        local items = call('LRANGE', KEYS[6 + nbands + 1 + scan_band], at, at + count - 1)
        for i = 1, #items do
            -- "<bet_id>:<user>:<stake>" parsed whole in one match: entry()'s second match of
            -- the text is the cost of a page whose bets are each a player's (one text a bet)
            local bet_id, v, user, stake_s =
                match(items[i], '^([1-9]%d*):(([1-9]%d*):([1-9]%d*))$')
            local rec = recs[v]
            if not rec and stake_s and #stake_s <= 15 then
                rec = {user, stake_s, false, false, 0, false}
                recs[v] = rec
            end
            if not rec then return bug('bad bets list entry ' .. items[i]) end
            if not seen[bet_id] then
                seen[bet_id] = true
                m = m + 1
                cids[m], crecs[m], cpos[m] = bet_id, rec, i
            end
        end
        band_end = #items < count
        cur = 'L' .. format('%d', at + #items)
    else
        local res = call('HSCAN', KEYS[6 + scan_band], cur, 'COUNT', count)
        local items = res[2]
        for i = 1, #items, 2 do
            local bet_id = items[i]
            if not find(bet_id, '^[1-9]%d*$') then return bug('bad bet id ' .. bet_id) end
            local rec = entry(items[i + 1])
            if not rec then return bug('bad bets entry ' .. bet_id) end
            if not seen[bet_id] then -- HSCAN may return an entry twice
                seen[bet_id] = true
                m = m + 1
                cids[m], crecs[m] = bet_id, rec
            end
        end
        cur = res[1] == '0' and 'L0' or res[1] -- the hash done: the list next
    end
    -- The chunk's bets paid already (a repeated page, a chunk read again) are skipped.
    local paidv = m > 0 and sliced('HMGET', KEYS[3], cids, m) or {}
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
            local rec = crecs[j]
            if rec[5] == 0 then -- its first bet in this page
                local stake_s = rec[2]
                local amount = owed[stake_s]
                if not amount then
                    local stake = tonumber(stake_s) -- < 10^15: exact
                    amount = refund and stake or (stake * q0 + mulfloordiv(stake, r0, w))
                    owed[stake_s], owed_s[stake_s] = amount, dec(amount)
                    slow = slow or (not refund and stake * r0 >= EXACT)
                end
                rec[3], rec[4] = amount, owed_s[stake_s]
                nused = nused + 1
                used[nused] = rec
            end
            rec[5] = rec[5] + 1
            n = n + 1
            ids[n], brecs[n] = cids[j], rec
        end
    end
    scanned = scanned + looked
    if full then
        -- the next page starts at the first bet not taken: a list's, or the HSCAN chunk's start
        cur = at and ('L' .. format('%d', at + cpos[looked + 1] - 1)) or from
        break
    end
    if band_end then
        if refund and scan_band + 1 < nbands then
            scan_band, cur = scan_band + 1, '0'
        else
            done = true
        end
    end
    -- Its time is checked once the page has looked at a bet: an empty chunk (the hash an
    -- absent one, or a band without bets) goes on, so every page that can make progress does.
    if done or n >= max_bets or (scanned > 0 and elapsed_us() >= budget) then break end
end

-- Credits: the page's bets, summed per player (a text's bets at once: its amount times their
-- number, which is exact where adding them one by one is).
local sums, order, np = {}, {}, 0
for k = 1, nused do
    local rec = used[k]
    local user = rec[1]
    local sum = sums[user]
    if not sum then
        np = np + 1
        order[np] = user
        sum = 0
    end
    sums[user] = sum + rec[3] * rec[5]
end
-- A balance or the plan's `paid` that Redis adds to (HINCRBY) must be its 64-bit integer text
-- (Redis's string2ll: an optional '-', no '+', no space, no leading zero, "-0" refused) and stay
-- one with `add`: checked before anything is written (HINCRBY would refuse it after). The
-- margin (2.3e16 below 2^63) keeps the double's rounding out of the check.
local function int64_plus(s, add)
    if #s > 20 or not (s == '0' or find(s, '^%-?[1-9]%d*$')) then return false end
    local x = s + 0
    return x > -9.2e18 and x + add < 9.2e18
end

-- The players' new values, worked out before anything is written: the balances the script adds
-- (balw, and balance[user] its text), those Redis adds in 64 bits (wide), the round totals (payw)
-- and the nets (netw). Returns the page's total, balw's length and wide's; or false and the
-- index of a balance Redis could not add to. A round total that is no number is the Lua error
-- of `text + 0` (the caller's pcall).
local function players_part(order, sums, np, balv, payv, netv, balance, balw, payw, netw, wide)
    local total, nb, nw = 0, 0, 0
    for j = 1, np do
        local user = order[j]
        local sum = sums[user]
        total = total + sum
        -- uint(balv[j] or '0') inlined, and dec() where b + sum is known exact (this loop runs
        -- once per player, and in pages of one bet a player that is once per bet).
        local s, b = balv[j], nil
        if not s or s == '0' then
            b = 0
        elseif #s <= 15 and find(s, '^[1-9]%d*$') then
            b = s + 0
        end
        if b and b + sum < EXACT then
            local bs = format('%d', b + sum)
            balance[user] = bs
            balw[nb + 1], balw[nb + 2] = user, bs
            nb = nb + 2
        elseif int64_plus(s or '0', sum) then -- beyond a double's exact range: Redis adds
            nw = nw + 1
            wide[nw] = user
        else
            return false, j
        end
        -- A text + a number is Lua's tonumber of the text, parsed once (tonumber() parses it
        -- twice: lua_isnumber, then lua_tonumber); an absent field (false) counts as 0.
        payw[2 * j - 1], payw[2 * j] = user, dec((payv[j] or 0) + sum)
        netw[2 * j - 1], netw[2 * j] = dec((netv[j] or 0) + sum), user
    end
    return total, nb, nw
end

-- Players: balance, round total and net winnings, each key read once and written once. Every
-- field the page adds to is read and checked before its first write: Redis keeps what a script
-- wrote before an error, so a `paid` written before a balance that is no number failed would
-- leave bets marked paid that were never credited. A page with such a field is refused whole.
local players_from = elapsed_us()
local total, nb, nwide = 0, 0, 0
local balance, balw, payw, netw, wide = {}, {}, {}, {}, {}
if np > 0 then
    local balv = sliced('HMGET', KEYS[2], order, np)
    local payv = sliced('HMGET', KEYS[4], order, np)
    local netv = sliced('ZMSCORE', KEYS[6 + nbands], order, np)
    -- In a pcall: a round total that is no number is the Lua error of `text + 0` inside, caught
    -- here before anything is written (a net is a ZSET score, always one).
    local ok, t, n2, n3 = pcall(players_part, order, sums, np, balv, payv, netv, balance, balw,
                                payw, netw, wide)
    if not ok then
        for j = 1, np do
            if payv[j] and not tonumber(payv[j]) then
                return bug(format('round total of player %s is no number: %s', order[j], payv[j]))
            end
        end
        error(t, 0)
    end
    if not t then
        return bug(format('balance of player %s is no 64-bit integer, or would pass one: %s',
                          order[n2], balv[n2]))
    end
    total, nb, nwide = t, n2, n3
    local outbox = call('TYPE', KEYS[5])['ok']
    if outbox ~= 'stream' and outbox ~= 'none' then return bug('the outbox is a ' .. outbox) end
end
if total > 0 and not int64_plus(p[9] or '0', total) then
    return bug('the plan\'s paid is no 64-bit integer (or would pass one): ' .. tostring(p[9]))
end

-- The writes: nothing can fail from here on.
if np > 0 then
    for k = 1, nwide do -- a balance beyond a double's exact range: Redis adds in 64 bits
        local user = wide[k]
        call('HINCRBY', KEYS[2], user, dec(sums[user]))
        balance[user] = call('HGET', KEYS[2], user)
    end
    if nb > 0 then sliced('HSET', KEYS[2], balw, nb) end
    sliced('HSET', KEYS[4], payw, 2 * np)
    sliced('ZADD', KEYS[6 + nbands], netw, 2 * np)
    -- Each bet's line is its id and its text's tail ",<user>,<amount>,<balance>", built once
    -- per text: the outbox entry is one concat of 3 pieces per bet (id, tail, '\n').
    for k = 1, nused do
        local rec = used[k]
        rec[6] = ',' .. rec[1] .. ',' .. rec[4] .. ',' .. balance[rec[1]]
    end
    local pieces = {}
    for i = 1, n do
        pieces[3 * i - 2], pieces[3 * i - 1], pieces[3 * i] = ids[i], brecs[i][6], '\n'
    end
    call('XADD', KEYS[5], '*', 'type', 'credits', 'kind', refund and 'refund' or 'payout',
         'round_id', ARGV[1], 'ts', ARGV[3], 'credits', concat(pieces, '', 1, 3 * n - 1))
end

if done then
    call('HSET', KEYS[1], 'pos', format('%d', scan_band), 'cur', '0', 'done', '1')
else
    call('HSET', KEYS[1], 'pos', format('%d', scan_band), 'cur', cur, 'done', '0')
end
if total > 0 then paid = call('HINCRBY', KEYS[1], 'paid', dec(total)) end
-- The page's `paid` last, outside the players' time (a cost per bet, not per player).
local players_us
if n > 0 then
    players_us = elapsed_us() - players_from
    local paidw = {}
    for i = 1, n do
        paidw[2 * i - 1], paidw[2 * i] = ids[i], brecs[i][4]
    end
    sliced('HSET', KEYS[3], paidw, 2 * n)
end
local us = elapsed_us()
return {'ok', done and 1 or 0, n, scanned, us, paid, players_us or us - players_from, np}
