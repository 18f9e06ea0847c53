-- wrk script for bench/ingest/run.py: POSTs one metrics batch (read from BENCH_BODY_FILE) again and again.
--   BENCH_PATH   /bare/post (the baseline project's POST view) or /api/v1/sdk/metrics
-- Result: one BENCH_JSON line (requests/s, latency, 2xx and other statuses).
local key = os.getenv("TURNOUT_SDK_KEY") or ""
local target = os.getenv("BENCH_PATH") or "/bare/post"
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
local body = file:read("*a")
file:close()

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  c2xx, cother = 0, 0
  req = wrk.format("POST", target, {["Authorization"] = "Bearer " .. key,
                                    ["Content-Type"] = "application/json"}, body)
end

function request()
  return req
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    c2xx = c2xx + 1
  else
    cother = cother + 1
  end
end

function done(summary, latency, requests)
  local s2xx, sother = 0, 0
  for _, t in ipairs(threads) do
    s2xx = s2xx + t:get("c2xx")
    sother = sother + t:get("cother")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.2f,"p99_ms":%.2f,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"status_2xx":%d,"status_other":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect, e.read, e.write, e.timeout, s2xx, sother))
end
