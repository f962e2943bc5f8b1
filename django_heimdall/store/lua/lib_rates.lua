-- Rate-limit helpers, joined after lib.lua in front of the scripts that use them.

-- Rate limits. A key keeps a log of its admissions (zset: admission µs, also the
-- member; as many as its largest `times`, within its longest window) and a queue
-- of reservations (zset: task id -> slot µs). `limits` is a list of {times,
-- window µs}. Admissions alone decide whether a start may run (the bound);
-- reservations only order and schedule the waiters. An admission may lie a little
-- in the future (see start.lua), so "newest" is by value, never by insertion order.

-- A slot that follows a reservation by a window keeps this margin, µs: the
-- reserved task may arrive a little late, and its successor then need not wait.
local function rate_margin(window)
  return math.min(math.floor(window / 50), 50000)
end

-- Log an admission at `at` µs (nudged by 1 µs past another admission at the same
-- instant), keep the newest `most` of those younger than the longest window and
-- its margin (older ones cannot hold a start back), and let the log expire a
-- window after its newest entry. Returns the logged time.
local function log_admission(log, at, most, longest, now)
  while redis.call('ZSCORE', log, fmt(at)) do
    at = at + 1
  end
  redis.call('ZADD', log, fmt(at), fmt(at))
  redis.call('ZREMRANGEBYRANK', log, 0, -(most + 1))
  redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. fmt(now - longest - rate_margin(longest)))
  local last = tonumber(redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIRE', log, math.ceil((last - now + longest) / 1000))
  return at
end

-- Scores of the newest `n` entries of zset `key`, newest first.
local function newest(key, n)
  local flat = redis.call('ZREVRANGE', key, 0, n - 1, 'WITHSCORES')
  local values = {}
  for i = 2, #flat, 2 do
    values[#values + 1] = tonumber(flat[i])
  end
  return values
end

-- The n-th newest entry of the admissions `log` and the reservations `queue` (nil:
-- admissions only) taken together, and whether it is a reservation; nil when fewer
-- than n entries are newer than `horizon` (an older n-th newest cannot hold a start
-- back). A limit far from binding costs two ZCOUNTs, a binding one with entries on
-- one side only one ZREVRANGE by rank: the work does not grow with the log.
local function nth_newest(log, queue, n, horizon)
  local since = '(' .. fmt(horizon)
  local in_log = redis.call('ZCOUNT', log, since, '+inf')
  local in_queue = queue and redis.call('ZCOUNT', queue, since, '+inf') or 0
  if in_log + in_queue < n then
    return nil, false
  end
  if in_queue == 0 or in_log == 0 then
    -- The n newest of that side are all newer than the horizon: the n-th by rank.
    local key = in_queue == 0 and log or queue
    return tonumber(redis.call('ZREVRANGE', key, n - 1, n - 1, 'WITHSCORES')[2]), in_log == 0
  end
  local a, b = newest(log, math.min(n, in_log)), newest(queue, math.min(n, in_queue))
  local i, j, value, second = 1, 1, nil, false
  for _ = 1, n do
    local x, y = a[i], b[j]
    if y == nil or (x ~= nil and x >= y) then
      value, second, i = x, false, i + 1
    else
      value, second, j = y, true, j + 1
    end
  end
  return value, second
end

-- The earliest time at or after `now` at which one more entry keeps every limit
-- (a list of {times, window µs}), counting the admissions `log` and the
-- reservations `queue` (nil: admissions only).
local function rate_free_at(limits, log, queue, now)
  local at = now
  for _, limit in ipairs(limits) do
    local window = limit[2]
    local nth, reserved = nth_newest(log, queue, limit[1], now - window - rate_margin(window))
    if nth then
      at = math.max(at, nth + window + (reserved and rate_margin(window) or 0))
    end
  end
  return at
end

-- The slot of the newest reservation of `queue`, or nil.
local function last_reservation(queue)
  return tonumber(redis.call('ZREVRANGE', queue, 0, 0, 'WITHSCORES')[2])
end

-- How long past its slot a reservation is kept for a task that arrives late, µs,
-- beyond the longest window of its limits.
local RESERVATION_GRACE_US = 300000000

