-- The current window of several rate-limit keys, for the admin and the command.
-- KEYS: the sliding-window logs (lists of start times in µs, newest first)
-- ARGV: per key, its times and window µs
-- Returns {now µs, rows}; a row is {starts in the window that ends now, the
-- times-th most recent start in µs or -1 when fewer starts are logged}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rows = {}
for i, log in ipairs(KEYS) do
  local times = tonumber(ARGV[i * 2 - 1])
  local since = now - tonumber(ARGV[i * 2])
  -- Binary search for the first start at or before the window's beginning.
  local lo, hi = 0, redis.call('LLEN', log)
  local len = hi
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(redis.call('LINDEX', log, mid)) > since then lo = mid + 1 else hi = mid end
  end
  local oldest = -1
  if len >= times then oldest = tonumber(redis.call('LINDEX', log, times - 1)) end
  rows[i] = {lo, string.format('%d', oldest)}
end
return {string.format('%d', now), rows}
