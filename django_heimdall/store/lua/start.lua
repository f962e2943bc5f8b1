-- Decide whether a task may start now: unique check, concurrency slots and resource
-- tickets, then every rate limit.
-- KEYS: when ARGV[1] == "1", first the lock hash, the per-task lock index, the task
--       registry and the owner pointer; then, when ARGV[9] > 0, the semaphore
--       registry, the waiters' sequence, the slots pointer (task id -> semaphores
--       held or waited for) and the holders, line and details of each semaphore;
--       then, when there are rate limits, the rate registry (zset: window or last
--       reservation end ms -> identity), its details (hash: identity ->
--       "task\ttimes\twindow µs[\ttimes\twindow µs...]"), the key's admissions log,
--       its reservations (zset: task id -> slot µs) and this task's reservation
--       pointer (-> that zset, so that a release takes a revoked waiter out of it).
-- ARGV[1] "1" if the task is unique   ARGV[2] task id   ARGV[3] lease ms
-- ARGV[4] "1" to renew the lease when the task starts   ARGV[5] task name
-- ARGV[6] argument preview   ARGV[7] execution token (host:pid:random)
-- ARGV[8] when the lock ends: "finished", "started" (given back once admitted, in
-- this script) or "expired" (kept after the task ends, until its lease runs out)
-- ARGV[9] number of semaphores   ARGV[10] "1" to queue FIFO when a semaphore is busy
-- (on_busy "defer")   ARGV[11] rate-limit identity ("" without limits)
-- ARGV[12] "1" to reserve a slot when over a limit   ARGV[13] the slot (µs) the
-- message carries, or ""   ARGV[14] µs: a slot at most this far ahead is admitted at
-- once (the caller waits for it in the process)
-- then per semaphore: name, tickets, capacity; then per rate limit: times, window µs
-- Returns {status, holder, wait ms, µs, taken}: status 20 = start (the lock is ours,
-- marked running under this token, the semaphores are taken, and the start was
-- logged as an admission at the returned µs, `wait` ms from now: the caller starts
-- the body no earlier), 21 = duplicate (another task holds the lock, wait = its
-- lease left; nothing changed), 22 = over a rate limit, come back after wait (the
-- task holds a reservation for that slot unless ARGV[12] is "0"; the lock, if any, is
-- kept for this task and its lease covers the wait), 23 = a second delivery of a
-- message whose execution still runs (nothing changed), 25 = a semaphore is busy:
-- holder = its name, wait = when its tickets should be free (queued in its line when
-- ARGV[10] is "1"; the lock's lease covers the wait), 29 = this task was replaced
-- while queued (holder = its replacement; nothing changed); taken = 1 when this
-- call took a free lock (the task came without one).
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
  local arg = 11 + 3 * i
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

-- Rate limits: one admissions log and one reservation queue per key, every limit
-- checked against both in this one call.
local limits, most, longest = {}, 0, 0
local admitted_at = now
for i = 15 + 3 * sems, #ARGV, 2 do
  local times, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  limits[#limits + 1] = {times, window}
  most, longest = math.max(most, times), math.max(longest, window)
end
if #limits > 0 then
  local registry, details = KEYS[first + 1], KEYS[first + 2]
  local log, queue, reserved = KEYS[first + 3], KEYS[first + 4], KEYS[first + 5]
  -- A reservation whose slot is long past was abandoned (revoked, lost): forgotten
  -- here; until then it holds its slot, so it can waste one but never add one.
  local grace = longest + RESERVATION_GRACE_US
  redis.call('ZREMRANGEBYSCORE', queue, '-inf', fmt(now - grace))
  local mine = tonumber(redis.call('ZSCORE', queue, owner) or ARGV[13])
  local slot
  if mine then
    -- A reserved task: later slots were given out counting its own, so it runs at
    -- its slot, or as soon after as the admissions allow (it arrived late).
    slot = math.max(mine, rate_free_at(limits, log, nil, now))
  else
    -- FIFO: after every waiter, where admissions and reservations leave room.
    slot = math.max(last_reservation(queue) or now, rate_free_at(limits, log, queue, now))
  end
  local slot_ms = math.ceil(slot / 1000)
  redis.call('ZADD', registry, 'GT', fmt(slot_ms + math.ceil(longest / 1000)), ARGV[11])
  local spec = ARGV[5]
  for _, limit in ipairs(limits) do
    spec = spec .. '\t' .. fmt(limit[1]) .. '\t' .. fmt(limit[2])
  end
  redis.call('HSET', details, ARGV[11], spec)
  -- Forget registry entries whose window emptied (a few per start: bounded work),
  -- and let the registry expire with its last window.
  local gone = redis.call('ZRANGEBYSCORE', registry, '-inf', fmt(now_ms), 'LIMIT', 0, 16)
  if #gone > 0 then
    redis.call('ZREM', registry, unpack(gone))
    redis.call('HDEL', details, unpack(gone))
  end
  local last = tonumber(redis.call('ZRANGE', registry, -1, -1, 'WITHSCORES')[2])
  keep_until(registry, last, now_ms)
  keep_until(details, last, now_ms)
  if slot > now + tonumber(ARGV[14]) then
    local wait_ms = math.ceil((slot - now) / 1000)
    if ARGV[12] == '1' then
      redis.call('ZADD', queue, fmt(slot), owner)
      keep_until(queue, math.ceil((slot + grace) / 1000), now_ms)
      redis.call('SET', reserved, queue, 'PXAT', math.ceil((slot + grace) / 1000))
    end
    if unique then
      -- The lease covers the wait: no copy takes the key while this task waits.
      extend_lock(KEYS, ARGV[5], lease + wait_ms, now_ms)
    end
    return {22, owner, wait_ms, fmt(now), taken}
  end
  -- Admitted: at once, or at its slot a moment from now (logged at that instant,
  -- so the bound holds for the time the body starts, not the time of this call).
  if redis.call('ZREM', queue, owner) == 1 then
    redis.call('DEL', reserved)
  end
  admitted_at = log_admission(log, slot, most, longest, now)
end
if sems > 0 then
  sems_take(reqs, KEYS[sem_first + 1], KEYS[sem_first + 3], owner, ARGV[7], lease, ARGV[5], now_ms)
end
if unique and ARGV[8] == 'started' then
  -- unique_until "started": a copy may queue as soon as this one runs.
  drop_lock(KEYS[1], KEYS[2], KEYS[4])
elseif unique then
  redis.call('HSET', KEYS[1], 'phase', 'running', 'token', ARGV[7],
    'token_until', fmt(now_ms + lease))
  if ARGV[4] == '1' then
    extend_lock(KEYS, ARGV[5], lease, now_ms)
  end
end
return {20, owner, math.ceil((admitted_at - now) / 1000), fmt(admitted_at), taken}
