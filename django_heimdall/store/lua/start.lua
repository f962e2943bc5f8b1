-- Decide whether a task may start now: unique check, concurrency slots and resource
-- tickets, then every rate limit.
-- KEYS: when ARGV[1] == "1", first the lock hash, the per-task lock index, the task
--       registry and the owner pointer; then, when ARGV[9] > 0, the semaphore
--       registry, the waiters' sequence, the slots pointer (task id -> semaphores
--       held or waited for) and the holders, line and details of each semaphore;
--       then, when there are rate limits, the rate
--       registry (zset: window end ms -> identity), its details (hash: identity ->
--       "task\ttimes\twindow µs") and one sliding-window log per limit (a list of
--       start times in µs, newest first, capped at `times` entries).
-- ARGV[1] "1" if the task is unique   ARGV[2] task id   ARGV[3] lease ms
-- ARGV[4] "1" to renew the lease when the task starts   ARGV[5] task name
-- ARGV[6] argument preview   ARGV[7] execution token (host:pid:random)
-- ARGV[8] when the lock ends: "finished", "started" (given back once admitted, in
-- this script) or "expired" (kept after the task ends, until its lease runs out)
-- ARGV[9] number of semaphores   ARGV[10] "1" to queue FIFO when a semaphore is busy
-- (on_busy "defer")   then per semaphore: name, tickets, capacity; then per rate
-- limit: times, window µs, identity
-- Returns {status, holder, wait ms, now µs, taken}: status 20 = start (the lock is
-- ours, marked running under this token, and the start was counted in every
-- window), 21 = duplicate (another task holds the lock, wait = its lease left;
-- nothing changed), 22 = over a rate limit, retry after wait (the lock, if any, is
-- kept for this task and its lease covers the wait; nothing was counted), 23 = a
-- second delivery of a message whose execution still runs (nothing changed),
-- 25 = a semaphore is busy: holder = its name, wait = when its tickets should be
-- free (queued in its line when ARGV[10] is "1"; the lock's lease covers the wait),
-- 29 = this task was replaced while queued (holder = its replacement; nothing changed);
-- taken = 1 when this call took a free lock (the task came without one).
local now, now_ms = clock()
local unique = ARGV[1] == '1'
local owner = ARGV[2]
local lease = tonumber(ARGV[3])
local first = 0  -- KEYS[first + 1] is the rate registry
local taken = 0
local keep = ARGV[8] == 'expired' and '1' or '0'
if unique then
  first = 4
  local mine = redis.call('GET', KEYS[4])
  if mine and string.sub(mine, 1, 9) == 'replaced:' then
    return {29, string.sub(mine, 10), 0, fmt(now), 0}
  end
  local f = redis.call('HMGET', KEYS[1], 'owner', 'phase', 'token', 'token_until')
  local holder = f[1]
  if holder and holder ~= owner then
    return {21, holder, redis.call('PTTL', KEYS[1]), fmt(now), 0}
  end
  if holder and f[2] == 'running' and f[3] and f[3] ~= ARGV[7]
      and tonumber(f[4] or '0') > now_ms then
    return {23, holder, tonumber(f[4]) - now_ms, fmt(now), 0}
  end
  if not holder then
    -- Started without a lock (send_task, beat, an expired lease): take it now.
    taken = 1
    take_lock(KEYS, owner, ARGV[5], ARGV[6], lease, now_ms, keep)
  end
end

-- Concurrency slots and resource tickets: decided here, taken with the rate counts.
local sems = tonumber(ARGV[9])
local sem_first = first  -- KEYS[sem_first + 1 .. 3]: registry, sequence, slots pointer
local reqs = {}
for i = 1, sems do
  local key = sem_first + 3 * i
  local arg = 7 + 3 * i
  reqs[i] = {k = {KEYS[key + 1], KEYS[key + 2], KEYS[key + 3]}, name = ARGV[arg + 1],
    tickets = tonumber(ARGV[arg + 2]), capacity = tonumber(ARGV[arg + 3])}
end
if sems > 0 then
  first = first + 3 + 3 * sems
  local state, name, sem_wait_ms = sems_check(reqs, owner, ARGV[7], now_ms)
  if state == 'twin' then
    return {23, owner, 0, fmt(now), taken}
  end
  if state == 'busy' then
    if ARGV[10] == '1' then
      sems_wait(reqs, KEYS[sem_first + 1], KEYS[sem_first + 2], KEYS[sem_first + 3], owner,
        ARGV[7], sem_wait_ms, now_ms)
    end
    if unique then
      extend_lock(KEYS, ARGV[5], lease + sem_wait_ms, now_ms)
    end
    return {25, name, sem_wait_ms, fmt(now), taken}
  end
end

-- Limit i has its log at KEYS[first + 2 + i] and its values at ARGV[ra + 3i .. ra + 2 + 3i].
local ra = 8 + 3 * sems
local limits = (#ARGV - 10 - 3 * sems) / 3
local wait = 0
for i = 1, limits do
  local times = tonumber(ARGV[ra + 3 * i])
  -- The times-th most recent start must lie a whole window in the past.
  local oldest = redis.call('LINDEX', KEYS[first + 2 + i], times - 1)
  if oldest then
    wait = math.max(wait, tonumber(oldest) + tonumber(ARGV[ra + 1 + 3 * i]) - now)
  end
end
if wait > 0 then
  local wait_ms = math.ceil(wait / 1000)
  if unique then
    -- The lease covers the wait: no copy takes the key while this task is deferred.
    extend_lock(KEYS, ARGV[5], lease + wait_ms, now_ms)
  end
  return {22, owner, wait_ms, fmt(now), taken}
end
local registry_until = 0
for i = 1, limits do
  local log, times = KEYS[first + 2 + i], ARGV[ra + 3 * i]
  local window, identity = tonumber(ARGV[ra + 1 + 3 * i]), ARGV[ra + 2 + 3 * i]
  local until_ms = now_ms + math.ceil(window / 1000)
  registry_until = math.max(registry_until, until_ms)
  redis.call('LPUSH', log, fmt(now))
  redis.call('LTRIM', log, 0, tonumber(times) - 1)
  redis.call('PEXPIRE', log, math.ceil(window / 1000))
  redis.call('ZADD', KEYS[first + 1], fmt(until_ms), identity)
  redis.call('HSET', KEYS[first + 2], identity, ARGV[5] .. '\t' .. times .. '\t' .. fmt(window))
end
if limits > 0 then
  -- Forget registry entries whose window emptied (a few per start: bounded work),
  -- and let the registry expire with its last window.
  local gone = redis.call('ZRANGEBYSCORE', KEYS[first + 1], '-inf', fmt(now_ms), 'LIMIT', 0, 16)
  if #gone > 0 then
    redis.call('ZREM', KEYS[first + 1], unpack(gone))
    redis.call('HDEL', KEYS[first + 2], unpack(gone))
  end
  for _, key in ipairs({KEYS[first + 1], KEYS[first + 2]}) do
    if redis.call('PTTL', key) < registry_until - now_ms then
      redis.call('PEXPIREAT', key, registry_until)
    end
  end
end
if sems > 0 then
  sems_take(reqs, KEYS[sem_first + 1], KEYS[sem_first + 3], owner, ARGV[7], lease, ARGV[5], now_ms)
end
if unique and ARGV[8] == 'started' then
  -- unique_until "started": a copy may queue as soon as this one runs.
  redis.call('DEL', KEYS[1], KEYS[4])
  redis.call('ZREM', KEYS[2], KEYS[1])
elseif unique then
  redis.call('HSET', KEYS[1], 'phase', 'running', 'token', ARGV[7],
    'token_until', fmt(now_ms + lease))
  if ARGV[4] == '1' then
    extend_lock(KEYS, ARGV[5], lease, now_ms)
  end
end
return {20, owner, 0, fmt(now), taken}
