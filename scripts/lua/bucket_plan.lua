#!lua
--[[
bucket_plan.lua: record bucket N's settlement plan for a round, first writer wins. The plan
comes from the global round hash (recorded once by round_close/round_cancel), so every leader
would write the same one; keeping the first makes a resumed settlement use it unchanged.

KEYS[1] tp:{bN}:plan:<id>  (HASH)
ARGV[1] winning band  ARGV[2] pot  ARGV[3] winning stake W  ARGV[4] refund_all (0|1)
ARGV[5] number of bands
Plan fields: band, pot, w, refund, nbands, pos (band index being scanned), cur (an HSCAN cursor
of the band's hash, or "L<index>" of its list: settle_page.lua), done (0|1), paid (sum credited
so far), finished (0|1, set by settle_finish).
Returns {'ok', 1} (written) or {'ok', 0} (a plan exists; unchanged).
]]
if #KEYS ~= 1 or #ARGV ~= 5 then return redis.error_reply('ERR tp_bucket_plan: want 1 KEY, 5 ARGV') end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'ok', 0} end
if ARGV[4] ~= '1' and tonumber(ARGV[3]) <= 0 then
    return redis.error_reply('ERR tp_bucket_plan: W = 0 needs refund_all')
end
redis.call('HSET', KEYS[1], 'band', ARGV[1], 'pot', ARGV[2], 'w', ARGV[3], 'refund', ARGV[4],
           'nbands', ARGV[5], 'pos', '0', 'cur', '0', 'done', '0', 'paid', '0', 'finished', '0')
return {'ok', 1}
