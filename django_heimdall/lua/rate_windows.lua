-- The current window of several rate-limit keys, for the admin and the command.
-- KEYS[1] the registry of rate keys (hash: identity -> "task\ttimes\twindow µs"),
--         then the sliding-window logs (lists of start times in µs, newest first)
-- ARGV: per log, its identity, times and window µs
-- A log that expired (nothing counted for a whole window) leaves the registry.
-- Returns {now µs, rows}; a row is {starts in the window that ends now, the
-- times-th most recent start in µs or -1 when fewer starts are logged}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rows = {}
for i = 2, #KEYS do
  local log = KEYS[i]
  local times = tonumber(ARGV[i * 3 - 4])
  local since = now - tonumber(ARGV[i * 3 - 3])
  -- Binary search for the first start at or before the window's beginning.
  local lo, hi = 0, redis.call('LLEN', log)
  local len = hi
  if len == 0 then redis.call('HDEL', KEYS[1], ARGV[i * 3 - 5]) end
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(redis.call('LINDEX', log, mid)) > since then lo = mid + 1 else hi = mid end
  end
  local oldest = -1
  if len >= times then oldest = tonumber(redis.call('LINDEX', log, times - 1)) end
  rows[i - 1] = {lo, string.format('%d', oldest)}
end
return {string.format('%d', now), rows}
