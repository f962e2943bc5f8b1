-- One page of rate-limit keys with a start in their current window.
-- KEYS[1] rate registry (zset: window end ms -> identity)
-- KEYS[2] its details (hash: identity -> "task\ttimes\twindow µs")
-- ARGV[1] offset   ARGV[2] page size   ARGV[3] log key prefix ("{prefix}:rate:")
-- Returns {now µs, total, rows}; a row is {identity, details, starts in the window
-- that ends now, the times-th most recent start in µs or -1 when fewer are logged}.
local now, now_ms = clock()
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(now_ms))
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
local total = redis.call('ZCARD', KEYS[1])
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1)
local rows = {}
for _, identity in ipairs(ids) do
  local details = redis.call('HGET', KEYS[2], identity) or ''
  local times, window = string.match(details, '\t(%d+)\t(%d+)$')
  local log = ARGV[3] .. identity
  local starts, oldest = 0, -1
  if times then
    local since = now - tonumber(window)
    -- Binary search for the first start at or before the window's beginning
    -- (the log is newest first), which is the count of starts inside it.
    local lo, hi = 0, redis.call('LLEN', log)
    local len = hi
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if tonumber(redis.call('LINDEX', log, mid)) > since then lo = mid + 1 else hi = mid end
    end
    starts = lo
    if len >= tonumber(times) then oldest = tonumber(redis.call('LINDEX', log, times - 1)) end
  end
  rows[#rows + 1] = {identity, details, starts, fmt(oldest)}
end
return {fmt(now), total, rows}
