-- One page of rate-limit keys with a start in their current window or a waiter.
-- KEYS[1] rate registry (zset: window or last reservation end ms -> identity)
-- KEYS[2] its details (hash: identity -> "task\ttimes\twindow µs[\ttimes\twindow µs...]")
-- ARGV[1] offset   ARGV[2] page size   ARGV[3] admissions key prefix ("{prefix}:admitted:")
-- ARGV[4] reservation key prefix ("{prefix}:rateq:")
-- Returns {now µs, total, rows}; a row is {identity, details, {starts in the window
-- of each limit that ends now}, waiters holding a reservation, the slot (µs) a
-- start arriving now would get}.
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
  local log, queue = ARGV[3] .. identity, ARGV[4] .. identity
  local limits = {}
  for times, window in string.gmatch(details, '\t(%d+)\t(%d+)') do
    limits[#limits + 1] = {tonumber(times), tonumber(window)}
  end
  local starts = {}
  for i, limit in ipairs(limits) do
    starts[i] = redis.call('ZCOUNT', log, '(' .. fmt(now - limit[2]), fmt(now))
  end
  local slot = math.max(last_reservation(queue) or now, rate_free_at(limits, log, queue, now))
  local waiting = redis.call('ZCARD', queue)
  rows[#rows + 1] = {identity, details, starts, waiting, fmt(slot)}
end
return {fmt(now), total, rows}
