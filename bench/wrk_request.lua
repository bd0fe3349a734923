-- wrk script for bench/_http.py:  wrk ... --script wrk_request.lua URL -- METHOD BODY_FILE KEY_PREFIX [PAUSE_MS]
-- BODY_FILE and KEY_PREFIX may be "-" (none). With a KEY_PREFIX every request carries its own
-- Idempotency-Key (prefix-thread-counter), as an agent's distinct writes do. With PAUSE_MS each
-- connection pauses that long between requests (a paced load instead of a closed loop). done()
-- prints one line of JSON for the harness.

local next_thread = 1
function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

local method, body, prefix, pause
local sent = 0

function init(args)
  method = args[1] or "GET"
  if args[2] and args[2] ~= "-" then
    local file = assert(io.open(args[2], "rb"))
    body = file:read("*a")
    file:close()
  end
  if args[3] and args[3] ~= "-" then
    prefix = args[3] .. "-" .. thread_id .. "-"
  end
  pause = tonumber(args[4])
end

function delay()
  return pause or 0
end

function request()
  if prefix then
    sent = sent + 1
    wrk.headers["Idempotency-Key"] = prefix .. sent
  end
  return wrk.format(method, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "status": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
