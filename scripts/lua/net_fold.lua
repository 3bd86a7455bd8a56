#!lua
--[[
net_fold.lua: fold bucket N's stakes log into its leaderboard, then (with a limit) read the
leaderboard's top. The one reader and folder of `netlog`; bet_batch.lua is its one writer.

KEYS[1] tp:{bN}:net      ZSET user_id -> net winnings (settle_page.lua adds credits here)
KEYS[2] tp:{bN}:netlog   LIST, one entry per bet_batch.lua call that accepted a bet: the call's
                         players with an accepted bet, each with the sum of its accepted stakes
                         in the call, as "<user_id> <sum>" pairs joined by single spaces
                         (decimals without sign or leading zero)
ARGV[1] limit: 0 to fold only, else how many players to read (GET /api/v1/leaderboard's)
A player's net winnings are its score in `net` minus its sums in `netlog` (a player with sums and
no score has net 0 before them): the fold moves every entry's sums into `net` (one ZMSCORE and
one ZADD of the entries' players, then DEL of the log), so after it `net` alone holds every net,
exactly as when bet_batch.lua wrote each call's stakes there (bench/README.md "Session 31").
Returns, limit 0: the number of entries folded; else ZREVRANGE 0 limit-1 WITHSCORES of `net`
after the fold (GET /api/v1/leaderboard's read, src/api/players.c).
An entry that is not such pairs (written by hand) raises "ERR tp_net_fold: ..." before any write:
nothing is folded and nothing read.
]]
if #KEYS ~= 2 or #ARGV ~= 1 then
    return redis.error_reply('ERR tp_net_fold: want 2 KEYS and 1 ARGV')
end
local limit = tonumber(ARGV[1])
if not limit or limit < 0 or limit % 1 ~= 0 then
    return redis.error_reply('ERR tp_net_fold: bad limit')
end
local call = redis.call
local log = call('LRANGE', KEYS[2], 0, -1)
if #log > 0 then
    -- sums: a player's stakes over the entries, by user id; who: the players in first order.
    local sums, who, nw = {}, {}, 0
    for j = 1, #log do
        local e, len = log[j], 0
        -- Canonical decimals (a user id and a sum are positive: no leading zero) in the pattern
        -- itself: a byte test per pair cost ~650 instructions a bet at the HTTP ceiling's shape.
        for a, u, s, b in e:gmatch('()([1-9]%d*) ([1-9]%d*) ?()') do
            -- The matches are disjoint: they cover the whole entry only when every byte of it is
            -- one of its pairs' or a separator.
            len = len + b - a
            if #u > 15 or #s > 15 then len = -1; break end
            local t = sums[u]
            if not t then nw = nw + 1; who[nw] = u; t = 0 end
            sums[u] = t + s
        end
        if len ~= #e or len == 0 or e:byte(-1) == 32 then
            return redis.error_reply('ERR tp_net_fold: corrupt netlog entry')
        end
    end
    -- In slices of SLICE players: unpack's results go on Lua's C stack (at most ~8,000).
    local SLICE, zadd, format = 1000, {}, string.format
    for i = 1, nw, SLICE do
        local m = math.min(i + SLICE - 1, nw)
        local nets = call('ZMSCORE', KEYS[1], unpack(who, i, m))
        for j = i, m do
            zadd[2 * (j - i) + 1] = format('%d', (nets[j - i + 1] or 0) - sums[who[j]])
            zadd[2 * (j - i) + 2] = who[j]
        end
        call('ZADD', KEYS[1], unpack(zadd, 1, 2 * (m - i + 1)))
    end
    call('DEL', KEYS[2])
end
if limit == 0 then return #log end
return call('ZREVRANGE', KEYS[1], 0, limit - 1, 'WITHSCORES')
