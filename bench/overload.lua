-- wrk script for bench/overload.py: one fixed POST, answers counted by status.
--
-- Environment: BENCH_BODY_FILE (the request body, JSON). Each wrk thread counts its
-- answers in its own Lua state (response() runs there); done() runs in the main state
-- and adds the threads' counters up through the thread objects setup() kept. The
-- summary line starts with "OVERLOAD_JSON " so that the bench can find it in wrk's
-- output. Latencies are wrk's, in microseconds, over every answer whatever its status.

wrk.method = "POST"
local f = assert(io.open(assert(os.getenv("BENCH_BODY_FILE")), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

ok, refused, other = 0, 0, 0

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 503 then
    refused = refused + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local counts = { ok = 0, refused = 0, other = 0 }
  for _, thread in ipairs(threads) do
    for name in pairs(counts) do
      counts[name] = counts[name] + (thread:get(name) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'OVERLOAD_JSON {"requests": %d, "duration_us": %d, "ok": %d, "refused": %d, '
      .. '"other_status": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, counts.ok, counts.refused, counts.other,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout))
end
