-- wrk script for the HTTP bet path: POST /api/v1/bets with a unique Idempotency-Key per request,
-- players round-robin over a tokens file ("user_id token" lines, as `loadgen users` writes).
--
--   build-release/bench/loadgen users -p 8080 -u 200 -t /tmp/tokens.txt
--   TOKENS=/tmp/tokens.txt ROUND=$(curl -s localhost:8080/api/v1/rounds/current | jq .open.id) \
--     wrk -t2 -c32 -d15s --latency -s bench/wrk/bet.lua http://127.0.0.1:8080
--
-- Environment: TOKENS (required), ROUND (required: an open round id), BANDS [5], STAKE [100].
-- wrk is closed loop (it measures coordinated-omission-prone latency); use bench/run or
-- build-*/bench/loadgen for open-loop latency, or wrk2 (-R) with this same script.

local tokens = {}
local round_id, bands, stake
local counter = 0
local thread_tag = ""
local statuses = {}

local threads = {}
local next_id = 0

function setup(thread)
    next_id = next_id + 1
    thread:set("tid", next_id)
    table.insert(threads, thread)
end

function init(args)
    local path = os.getenv("TOKENS") or error("set TOKENS to a file of 'user_id token' lines")
    for line in io.lines(path) do
        local tok = line:match("^%d+%s+(%S+)")
        if tok then table.insert(tokens, tok) end
    end
    if #tokens == 0 then error("no tokens in " .. path) end
    round_id = tonumber(os.getenv("ROUND") or error("set ROUND to the open round id"))
    bands = tonumber(os.getenv("BANDS") or "5")
    stake = tonumber(os.getenv("STAKE") or "100")
    math.randomseed(os.time() + (tid or 0))
    thread_tag = string.format("wrk%x-%d", math.random(0, 0x7fffffff), tid or 0)
    counter = tid or 0
end

function request()
    counter = counter + 1
    local tok = tokens[(counter % #tokens) + 1]
    local body = string.format('{"round_id":%d,"band":%d,"stake":%d}', round_id, counter % bands, stake)
    return wrk.format("POST", "/api/v1/bets", {
        ["Authorization"] = "Bearer " .. tok,
        ["Idempotency-Key"] = thread_tag .. "-" .. counter,
        ["Content-Type"] = "application/json",
    }, body)
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    if status ~= 201 and statuses[status] == 1 then
        io.stderr:write("first HTTP " .. status .. ": " .. body .. "\n")
    end
end

function done(summary, latency, requests)
    io.write(string.format("bets answered: %d, non-2xx/3xx: %d, socket errors: %d\n",
        summary.requests, summary.errors.status,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
    for _, p in ipairs({50, 99, 99.9}) do
        io.write(string.format("p%g: %.3f ms\n", p, latency:percentile(p) / 1000))
    end
end
