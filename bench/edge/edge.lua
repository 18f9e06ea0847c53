-- wrk script for bench/edge/run.py: one scenario per run (BENCH_MODE), result as one BENCH_JSON line.
--   bare_get | bare_post          the baseline project's JSON views
--   etag                          GET /api/v1/sdk/ruleset with If-None-Match (TURNOUT_ETAG): 304
--   full | full_gzip              GET /api/v1/sdk/ruleset (200), without / with Accept-Encoding: gzip
--   evaluate                      POST /api/v1/sdk/evaluate, one flag, a different subject each time
--   ofrep_flag                    POST /ofrep/v1/evaluate/flags/{key}, one flag
local key = os.getenv("TURNOUT_SDK_KEY") or ""
local mode = os.getenv("BENCH_MODE") or "bare_get"
local etag = os.getenv("TURNOUT_ETAG") or ""
local flags = {}
for f in string.gmatch(os.getenv("BENCH_FLAGS") or "flag-0000", "[^,]+") do
  table.insert(flags, f)
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  c2xx, c304, cother, counter = 0, 0, 0, 0
end

function request()
  counter = counter + 1
  local headers = {["Authorization"] = "Bearer " .. key}
  local subject = "user-" .. string.format("%07d", (counter * 7919) % 400000)
  local tenant = "t-" .. (counter % 5000)
  local flag = flags[(counter % #flags) + 1]
  if mode == "bare_get" then
    return wrk.format("GET", "/bare/get", headers)
  elseif mode == "etag" then
    headers["If-None-Match"] = etag
    return wrk.format("GET", "/api/v1/sdk/ruleset", headers)
  elseif mode == "full" then
    return wrk.format("GET", "/api/v1/sdk/ruleset", headers)
  elseif mode == "full_gzip" then
    headers["Accept-Encoding"] = "gzip"
    return wrk.format("GET", "/api/v1/sdk/ruleset", headers)
  end
  headers["Content-Type"] = "application/json"
  if mode == "bare_post" or mode == "evaluate" then
    local body = string.format(
      '{"flag":"%s","context":{"key":"%s","attributes":{"tenant_id":"%s","country":"US"}}}', flag, subject, tenant)
    local target = mode == "bare_post" and "/bare/post" or "/api/v1/sdk/evaluate"
    return wrk.format("POST", target, headers, body)
  end
  local body = string.format('{"context":{"targetingKey":"%s","tenant_id":"%s","country":"US"}}', subject, tenant)
  return wrk.format("POST", "/ofrep/v1/evaluate/flags/" .. flag, headers, body)
end

function response(status, headers, body)
  if status == 304 then
    c304 = c304 + 1
  elseif status >= 200 and status < 300 then
    c2xx = c2xx + 1
  else
    cother = cother + 1
  end
end

function done(summary, latency, requests)
  local s2xx, s304, sother = 0, 0, 0
  for _, t in ipairs(threads) do
    s2xx = s2xx + t:get("c2xx")
    s304 = s304 + t:get("c304")
    sother = sother + t:get("cother")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"bytes":%d,"p50_ms":%.2f,"p90_ms":%.2f,' ..
    '"p99_ms":%.2f,"max_ms":%.2f,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,' ..
    '"status_2xx":%d,"status_304":%d,"status_other":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6), summary.bytes,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.timeout, s2xx, s304, sother))
end
