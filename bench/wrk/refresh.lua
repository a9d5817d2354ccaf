-- Refresh-token grant, one distinct never-used refresh token per request.
-- Reuses the peer's wrk script (../shared/peer/load/wrk/request.lua, path in
-- WRK_COMMON) for the headers (WRK_AUTH, form content type) and the JSON
-- summary (WRK_JSON). WRK_POOL is a file of refresh tokens, one a line.
--
-- Requests take tokens from the pool first. Each 200 answer carries the
-- rotated successor, which is queued behind the pool, so if the pool runs out
-- the run goes on with successors (each still used exactly once) instead of
-- reusing a spent token. WRK_JSON.tokens gets how many came from each source.
-- If nothing is left (cannot happen while the pool holds more tokens than
-- there are connections) a bogus token is sent: a non-2xx, run invalid.
-- WRK_LEFTOVER, if set, gets the tokens still unused at the end (one a line),
-- so that a warm-up's unused successors can seed the measured run.
dofile(os.getenv("WRK_COMMON"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

-- globals, so that done() can read them with thread:get
queue, head, tail = {}, 1, 0
pool_size, from_pool, from_successor, empty = 0, 0, 0, 0

function init(args)
  for line in io.lines(os.getenv("WRK_POOL")) do
    if line ~= "" then tail = tail + 1; queue[tail] = line end
  end
  pool_size = tail
end

function request()
  local token = "exhausted"
  if head <= tail then
    token = queue[head]; queue[head] = nil
    if head <= pool_size then from_pool = from_pool + 1 else from_successor = from_successor + 1 end
    head = head + 1
  else
    empty = empty + 1
  end
  return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local rt = body and body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if rt then tail = tail + 1; queue[tail] = rt end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

local summary_done = done
function done(summary, latency, requests)
  summary_done(summary, latency, requests)
  local left = os.getenv("WRK_LEFTOVER")
  if left and left ~= "" then
    local f = assert(io.open(left, "w"))
    for _, t in ipairs(threads) do
      local q, h, n = t:get("queue"), t:get("head"), t:get("tail")
      for i = h, n do f:write(q[i], "\n") end
    end
    f:close()
  end
  local path = os.getenv("WRK_JSON")
  if not path or path == "" then return end
  local p, s, e, n = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    p = p + t:get("from_pool"); s = s + t:get("from_successor")
    e = e + t:get("empty"); n = n + t:get("pool_size")
  end
  local f = assert(io.open(path .. ".tokens", "w"))
  f:write(string.format('{"pool_size":%d,"from_pool":%d,"from_successor":%d,"exhausted":%d}\n', n, p, s, e))
  f:close()
end
