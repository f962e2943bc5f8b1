-- Rate-limit helpers, joined after lib.lua in front of the scripts that use them.

-- Rate limits. A key keeps a log of its admissions (zset: admission µs, also the
-- member; as many as its largest `times`) and a queue of reservations (zset: task
-- id -> slot µs). `limits` is a list of {times, window µs}. Admissions alone decide
-- whether a start may run (the bound); reservations only order and schedule the
-- waiters. An admission may lie a little in the future (see start.lua), so "newest"
-- is by value, never by insertion order.

-- The newest `n` admissions and reservations of a key, as numbers, newest first.
local function rate_entries(log, queue, n)
  local lists = {}
  for k, key in ipairs({log, queue}) do
    local flat = redis.call('ZREVRANGE', key, 0, n - 1, 'WITHSCORES')
    local values = {}
    for i = 2, #flat, 2 do
      values[#values + 1] = tonumber(flat[i])
    end
    lists[k] = values
  end
  return lists[1], lists[2]
end

-- Log an admission at `at` µs (nudged by 1 µs past another admission at the same
-- instant), keep the newest `most`, and let the log expire a window after its
-- newest entry. Returns the logged time.
local function log_admission(log, at, most, longest, now)
  while redis.call('ZSCORE', log, fmt(at)) do
    at = at + 1
  end
  redis.call('ZADD', log, fmt(at), fmt(at))
  redis.call('ZREMRANGEBYRANK', log, 0, -(most + 1))
  local newest = tonumber(redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIRE', log, math.ceil((newest - now + longest) / 1000))
  return at
end

-- The n-th newest entry of two newest-first lists taken together, or nil, and
-- whether it came from the second list.
local function nth_newest(a, b, n)
  local i, j, value, second = 1, 1, nil, false
  for _ = 1, n do
    local x, y = a[i], b[j]
    if x == nil and y == nil then
      return nil, false
    end
    if y == nil or (x ~= nil and x >= y) then
      value, second, i = x, false, i + 1
    else
      value, second, j = y, true, j + 1
    end
  end
  return value, second
end

-- The earliest time at or after `now` at which one more entry keeps every limit,
-- counting the admissions `a` and the reservations `b`. A slot that follows a
-- reservation by a window keeps a margin (2% of the window, at most 50 ms): the
-- reserved task may arrive a little late, and its successor then need not wait.
local function rate_free_at(limits, a, b, now)
  local at = now
  for _, limit in ipairs(limits) do
    local nth, reserved = nth_newest(a, b, limit[1])
    if nth then
      local margin = reserved and math.min(math.floor(limit[2] / 50), 50000) or 0
      at = math.max(at, nth + limit[2] + margin)
    end
  end
  return at
end

-- How long past its slot a reservation is kept for a task that arrives late, µs,
-- beyond the longest window of its limits.
local RESERVATION_GRACE_US = 300000000

