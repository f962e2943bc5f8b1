-- Decide whether a task may start now: unique check, then every rate limit.
-- KEYS: when ARGV[1] == "1", first the lock hash, the per-task lock index, the set
--       of task names and the owner pointer; then, when there are rate limits,
--       the registry of rate keys (hash) and one sliding-window log per limit
--       (a list of start times in µs, newest first, capped at `times` entries).
-- ARGV[1] "1" if the task is unique   ARGV[2] task id   ARGV[3] lease ms
-- ARGV[4] "1" to renew the lease when the task starts   ARGV[5] task name
-- ARGV[6] argument preview   then per rate limit: times, window µs, identity
-- Returns {status, holder, wait µs, now µs, taken}: status 1 = start (the lock is ours
-- and the start was counted in every window), 0 = duplicate (another task holds
-- the lock, wait = its ms left; nothing changed), 2 = over a rate limit, retry
-- after wait µs (the lock, if any, is kept for this task; nothing was counted);
-- taken = 1 when this call took a free lock (the task came without one).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local unique = ARGV[1] == '1'
local owner = ARGV[2]
local lease = tonumber(ARGV[3])
local first = 1
local taken = 0
if unique then
  first = 5
  local holder = redis.call('HGET', KEYS[1], 'owner')
  if holder and holder ~= owner then
    return {0, holder, redis.call('PTTL', KEYS[1]), now, 0}
  end
  if not holder then
    taken = 1
    -- Started without a lock (send_task, beat, an expired lease): take it now.
    redis.call('HSET', KEYS[1], 'owner', owner, 'task', ARGV[5], 'phase', 'queued',
      'since', string.format('%d', now_ms), 'args', ARGV[6])
    redis.call('SADD', KEYS[3], ARGV[5])
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now_ms))
    redis.call('PEXPIRE', KEYS[1], lease)
    redis.call('SET', KEYS[4], KEYS[1], 'PX', lease)
    redis.call('ZADD', KEYS[2], string.format('%d', now_ms + lease), KEYS[1])
  end
end
local wait = 0
for i = first + 1, #KEYS do
  local arg = 7 + (i - first - 1) * 3
  local times = tonumber(ARGV[arg])
  local window = tonumber(ARGV[arg + 1])
  -- The times-th most recent start must lie a whole window in the past.
  local oldest = redis.call('LINDEX', KEYS[i], times - 1)
  if oldest then
    local w = tonumber(oldest) + window - now
    if w > wait then wait = w end
  end
end
if wait > 0 then
  return {2, owner, wait, now, taken}
end
local stamp = string.format('%d', now)
for i = first + 1, #KEYS do
  local arg = 7 + (i - first - 1) * 3
  redis.call('LPUSH', KEYS[i], stamp)
  redis.call('LTRIM', KEYS[i], 0, tonumber(ARGV[arg]) - 1)
  redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[arg + 1]) / 1000))
  redis.call('HSET', KEYS[first], ARGV[arg + 2],
    ARGV[5] .. '\t' .. ARGV[arg] .. '\t' .. ARGV[arg + 1])
end
if unique then
  redis.call('HSET', KEYS[1], 'phase', 'running')
  if ARGV[4] == '1' then
    redis.call('PEXPIRE', KEYS[1], lease)
    redis.call('PEXPIRE', KEYS[4], lease)
    redis.call('ZADD', KEYS[2], string.format('%d', now_ms + lease), KEYS[1])
  end
end
return {1, owner, 0, now, taken}
