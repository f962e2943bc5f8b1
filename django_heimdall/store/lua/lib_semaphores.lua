-- Semaphore helpers, joined after lib.lua in front of the scripts that use them.

-- Semaphores: named pools of tickets held under leases (concurrency slots, shared
-- resources, ad-hoc semaphores). Semaphore `name` has three keys, passed as
-- k = {holders, line, details}:
--   holders (zset: holder id -> lease end ms), line (zset: waiter id -> arrival
--   number, taken from one sequence per prefix so that every semaphore orders any
--   two waiters alike and no two waiters can block each other in a cycle), and
--   details (hash): 'cap', 'used' (tickets of live holders), 'avg' (running mean of
--   hold times, ms), 'h:<holder>' -> "tickets\tsince ms\ttoken\tlabel" and
--   'w:<waiter>' -> "leaves the line at ms\ttickets\texpected back by ms" (its turn
--   is kept for it until it is expected back; its place in line until it leaves).

local function split(s)
  local out, i = {}, 1
  while true do
    local j = string.find(s, '\t', i, true)
    if not j then
      out[#out + 1] = string.sub(s, i)
      return out
    end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end

local function sem_keys(tag, name)
  return {tag .. 'semh:' .. name, tag .. 'semw:' .. name, tag .. 'semd:' .. name}
end

-- Keep every key of a semaphore (and its registry entry) until at least `until_ms`.
local function sem_expire(k, registry, name, until_ms, now_ms)
  for _, key in ipairs(k) do
    keep_until(key, until_ms, now_ms)
  end
  redis.call('ZADD', registry, 'GT', fmt(until_ms), name)
  redis.call('ZREMRANGEBYSCORE', registry, '-inf', fmt(now_ms))
  keep_until(registry, until_ms, now_ms)
end

-- Drop holders whose lease ran out (their process died without releasing).
local function sem_prune(k, now_ms)
  local gone = redis.call('ZRANGEBYSCORE', k[1], '-inf', fmt(now_ms), 'LIMIT', 0, 64)
  for _, holder in ipairs(gone) do
    local info = redis.call('HGET', k[3], 'h:' .. holder)
    if info then
      redis.call('HINCRBY', k[3], 'used', -tonumber(split(info)[1]))
      redis.call('HDEL', k[3], 'h:' .. holder)
    end
    redis.call('ZREM', k[1], holder)
  end
  -- Only an existing hash (it has its expiry) is reset: a semaphore that is only
  -- checked, never taken, must leave nothing behind.
  if redis.call('ZCARD', k[1]) == 0 and redis.call('EXISTS', k[3]) == 1 then
    redis.call('HSET', k[3], 'used', 0)
  end
end

local function sem_leave_line(k, waiter)
  redis.call('ZREM', k[2], waiter)
  redis.call('HDEL', k[3], 'w:' .. waiter)
end

-- Tickets wanted by waiters ahead of arrival number `seq` (all waiters when nil)
-- that are expected back now, counted until they exceed `limit` (enough to decide).
-- A waiter not back by its due time is dropped from the line on the way (it queues
-- again if it returns).
local function sem_ahead(k, seq, limit, now_ms)
  local before = seq and ('(' .. fmt(seq)) or '+inf'
  local members = redis.call('ZRANGEBYSCORE', k[2], '-inf', before, 'LIMIT', 0, 64)
  local ahead = 0
  for _, waiter in ipairs(members) do
    local info = redis.call('HGET', k[3], 'w:' .. waiter)
    local f = info and split(info)
    if not f or tonumber(f[1]) <= now_ms then
      sem_leave_line(k, waiter)
    elseif not f[3] or tonumber(f[3]) >= now_ms then
      -- Expected back about now: its turn is kept for it. One later than that keeps
      -- its place in line but does not hold a free ticket idle meanwhile.
      ahead = ahead + tonumber(f[2])
      if ahead > limit then
        return ahead
      end
    end
  end
  if #members == 64 then
    return limit + 1  -- undecided within one batch: busy for now, decided next time
  end
  return ahead
end

-- Can `holder` (execution `token`) take `tickets` of a semaphore of `capacity` now?
-- 'held': it already holds them under this token; 'twin': another execution of the
-- same holder does; 'busy': not enough free, or waiters ahead in line want them.
local function sem_check(k, holder, token, tickets, capacity, seq, now_ms)
  sem_prune(k, now_ms)
  local mine = redis.call('HGET', k[3], 'h:' .. holder)
  if mine then
    return split(mine)[3] == token and 'held' or 'twin'
  end
  local free = capacity - tonumber(redis.call('HGET', k[3], 'used') or '0')
  if tickets > free or sem_ahead(k, seq, free - tickets, now_ms) > free - tickets then
    return 'busy'
  end
  return 'ok'
end

-- Milliseconds until `tickets` should be free for a waiter behind `seq` (or at the
-- end of the line), so that it comes back when its turn should have come and the
-- line is not re-sent over and over. The semaphore is modelled as `capacity`
-- servers: a free ticket is free now, a held one frees at its holder's start plus
-- the mean hold time, and each then serves the line in turn. Hand-overs are left
-- out on purpose: a waiter back a little early waits for its turn in the worker
-- (execution.BUSY_WAIT_IN_PLACE), while one back late would leave tickets idle.
local function sem_estimate(k, capacity, tickets, seq, now_ms)
  local ahead = seq and redis.call('ZCOUNT', k[2], '-inf', '(' .. fmt(seq))
    or redis.call('ZCARD', k[2])
  local holders = redis.call('ZRANGE', k[1], 0, -1)
  local fields = {}
  for i, holder in ipairs(holders) do
    fields[i] = 'h:' .. holder
  end
  local infos = #fields > 0 and redis.call('HMGET', k[3], unpack(fields)) or {}
  local rows, used, oldest = {}, 0, now_ms
  for i = 1, #holders do
    local f = split(infos[i] or ('1\t' .. fmt(now_ms)))
    rows[i] = {tonumber(f[2]), tonumber(f[1])}
    used = used + rows[i][2]
    oldest = math.min(oldest, rows[i][1])
  end
  -- Without history, the oldest holder's age is the best guess of a hold time.
  local avg = tonumber(redis.call('HGET', k[3], 'avg') or '') or math.max(100, now_ms - oldest)
  for _, row in ipairs(rows) do
    -- A holder past the mean is expected to end soon, but not this instant.
    row[1] = math.max(row[1] + avg, now_ms + avg / 3)
  end
  if capacity > used then
    rows[#rows + 1] = {now_ms, capacity - used}
  end
  table.sort(rows, function(a, b) return a[1] < b[1] end)
  local needed = ahead + tickets
  local rounds = math.floor((needed - 1) / capacity)
  local rest, freed, at = needed - rounds * capacity, 0, rows[#rows][1]
  for _, row in ipairs(rows) do
    freed = freed + row[2]
    if freed >= rest then
      at = row[1]
      break
    end
  end
  return math.max(20, math.ceil(at + rounds * avg - now_ms))
end

local function sem_take(k, registry, name, holder, token, tickets, capacity, lease, label, now_ms)
  redis.call('ZADD', k[1], fmt(now_ms + lease), holder)
  redis.call('HSET', k[3], 'h:' .. holder,
    tickets .. '\t' .. fmt(now_ms) .. '\t' .. token .. '\t' .. label, 'cap', capacity)
  redis.call('HINCRBY', k[3], 'used', tickets)
  sem_leave_line(k, holder)
  sem_expire(k, registry, name, now_ms + lease, now_ms)
end

-- Extend a held lease to `lease` ms from now; false if `holder`/`token` lost it.
local function sem_renew(k, registry, name, holder, token, lease, now_ms)
  local info = redis.call('HGET', k[3], 'h:' .. holder)
  local until_ms = tonumber(redis.call('ZSCORE', k[1], holder) or '0')
  -- A lease that ran out is lost, even before somebody prunes it.
  if not info or (token ~= '' and split(info)[3] ~= token) or until_ms <= now_ms then
    return false
  end
  redis.call('ZADD', k[1], fmt(now_ms + lease), holder)
  sem_expire(k, registry, name, now_ms + lease, now_ms)
  return true
end

-- Give back `holder`'s tickets, if `token` (unless '') is the execution holding
-- them, and fold its hold time into the mean the waiters' estimates use.
local function sem_release(k, holder, token, now_ms)
  local info = redis.call('HGET', k[3], 'h:' .. holder)
  if not info then
    return false
  end
  local f = split(info)
  if token ~= '' and f[3] ~= token then
    return false
  end
  redis.call('ZREM', k[1], holder)
  redis.call('HDEL', k[3], 'h:' .. holder)
  if redis.call('HINCRBY', k[3], 'used', -tonumber(f[1])) < 0
      or redis.call('ZCARD', k[1]) == 0 then
    redis.call('HSET', k[3], 'used', 0)
  end
  local took = now_ms - tonumber(f[2])
  local avg = tonumber(redis.call('HGET', k[3], 'avg') or '')
  redis.call('HSET', k[3], 'avg', fmt(avg and (avg * 3 + took) / 4 or took))
  return true
end

-- Decide a request for several semaphores at once, all or nothing. `reqs` entries
-- are {k = keys, name, tickets, capacity}. Returns 'ok', 'twin' or 'busy'; when
-- busy also the name of the semaphore expected to free last, and its wait in ms.
local function sems_check(reqs, holder, token, now_ms)
  local seq
  for _, r in ipairs(reqs) do
    seq = seq or tonumber(redis.call('ZSCORE', r.k[2], holder) or '')
  end
  local busy, wait = nil, 0
  for _, r in ipairs(reqs) do
    local state = sem_check(r.k, holder, token, r.tickets, r.capacity, seq, now_ms)
    if state == 'twin' then
      return 'twin', r.name, 0
    end
    r.held = state == 'held'
    r.busy = state == 'busy'
    if r.busy then
      local estimate = sem_estimate(r.k, r.capacity, r.tickets, seq, now_ms)
      if estimate > wait then
        busy, wait = r.name, estimate
      end
    end
  end
  if busy then
    return 'busy', busy, wait
  end
  return 'ok', nil, 0
end

-- Queue `holder` FIFO in the line of every busy semaphore of `reqs` (keeping its
-- place where it has one), due back after `wait` ms. `pointer` (hash) records the
-- lines, so that a revoked waiter leaves them.
local function sems_wait(reqs, registry, sequence, pointer, holder, token, wait, now_ms)
  local seq
  for _, r in ipairs(reqs) do
    seq = seq or tonumber(redis.call('ZSCORE', r.k[2], holder) or '')
  end
  seq = seq or redis.call('INCR', sequence)
  local due = now_ms + wait + math.max(1000, wait)
  redis.call('HSET', pointer, 'token', token)
  for _, r in ipairs(reqs) do
    if r.busy or redis.call('ZSCORE', r.k[2], holder) then
      redis.call('ZADD', r.k[2], 'NX', seq, holder)
      local back_by = fmt(now_ms + wait + math.max(200, wait / 4))
      redis.call('HSET', r.k[3], 'w:' .. holder, fmt(due) .. '\t' .. r.tickets .. '\t' .. back_by)
      redis.call('HSET', pointer, 'w:' .. r.name, r.tickets)
      sem_expire(r.k, registry, r.name, due, now_ms)
    end
  end
  if redis.call('PTTL', pointer) < due - now_ms then
    redis.call('PEXPIREAT', pointer, due)
  end
end

-- Take every semaphore of an admitted request; `pointer` records them for the release.
local function sems_take(reqs, registry, pointer, holder, token, lease, label, now_ms)
  redis.call('DEL', pointer)
  redis.call('HSET', pointer, 'token', token)
  for _, r in ipairs(reqs) do
    if r.held then
      sem_renew(r.k, registry, r.name, holder, token, lease, now_ms)
    else
      sem_take(r.k, registry, r.name, holder, token, r.tickets, r.capacity, lease, label, now_ms)
    end
    redis.call('HSET', pointer, r.name, r.tickets)
  end
  redis.call('PEXPIRE', pointer, lease)
end

-- Give back what `pointer` records for `holder` (tickets held, places in line), if
-- `token` (unless '') is its execution. Returns the number of semaphores released.
local function sems_release_owned(pointer, tag, holder, token, now_ms)
  local f = redis.call('HGETALL', pointer)
  if #f == 0 then
    return 0
  end
  local fields = {}
  for i = 1, #f, 2 do
    fields[f[i]] = f[i + 1]
  end
  if token ~= '' and fields['token'] ~= token then
    return 0
  end
  local released = 0
  for field, _ in pairs(fields) do
    if string.sub(field, 1, 2) == 'w:' then
      sem_leave_line(sem_keys(tag, string.sub(field, 3)), holder)
    elseif field ~= 'token' and sem_release(sem_keys(tag, field), holder, token, now_ms) then
      released = released + 1
    end
  end
  redis.call('DEL', pointer)
  return released
end
