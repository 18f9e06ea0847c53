-- wrk: POST an evaluate request with a different subject on every call (key from BENCH_KEY).
local key = os.getenv("BENCH_KEY") or ""
local flag = os.getenv("BENCH_FLAG") or "invoice-engine"
local ofrep = os.getenv("BENCH_FORMAT") == "ofrep"
local n = 0

request = function()
  n = n + 1
  local body
  if ofrep then
    body = string.format('{"context":{"targetingKey":"user-%d","tenant_id":"tenant-%d","country":"DE","plan":"pro"}}',
      n, n % 500)
  else
    body = string.format(
      '{"flag":"%s","context":{"key":"user-%d","attributes":{"tenant_id":"tenant-%d","country":"DE","plan":"pro"}}}',
      flag, n, n % 500)
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
end
