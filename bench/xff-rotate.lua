-- wrk script: every request carries X-Forwarded-For with one of N distinct client addresses
-- (198.18.0.0/15, the benchmarking range), in rotation, so a filter keyed on the XFF client sees
-- N clients churning through its state. N comes from the XFF_CLIENTS environment variable
-- (default 10000), and the User-Agent of every benchmark request from BENCH_USER_AGENT (bench/lib.ts;
-- a header table given to wrk.format replaces wrk's -H headers). The requests are prebuilt in init() so
-- the client spends no time formatting.
local requests = {}
local count = 0
local i = 0

function init(args)
  count = tonumber(os.getenv("XFF_CLIENTS") or "10000")
  local ua = os.getenv("BENCH_USER_AGENT")
  for k = 0, count - 1 do
    local addr = string.format("198.18.%d.%d", math.floor(k / 256), k % 256)
    requests[k + 1] = wrk.format("GET", "/", { ["X-Forwarded-For"] = addr, ["User-Agent"] = ua })
  end
end

function request()
  i = i + 1
  if i > count then i = 1 end
  return requests[i]
end
