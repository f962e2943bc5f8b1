-- Take a unique lock at enqueue.
-- KEYS[1] lock hash   KEYS[2] per-task lock index   KEYS[3] task registry
-- KEYS[4] owner pointer (task id -> lock key)
-- ARGV[1] owner task id   ARGV[2] lease ms   ARGV[3] "1" to renew an owned lease
-- ARGV[4] task name   ARGV[5] argument preview   ARGV[6] "1" to keep the lock after the
-- task ends (until its lease runs out)   ARGV[7] "1" to replace a holder still queued
-- ARGV[8] owner-pointer key prefix ("{prefix}:owner:")   ARGV[9] "1" when the
-- running execution re-sends itself (a retry)
-- Returns {status, holder, lease left ms}: status 10 = taken now, 11 = already held
-- by this owner (a retry, or the same task id published again), 12 = held by
-- another task, 13 = taken from `holder`, which was still queued (its pointer now
-- says it was replaced).
local holder = redis.call('HGET', KEYS[1], 'owner')
if holder and holder ~= ARGV[1]
    and (ARGV[7] ~= '1' or redis.call('HGET', KEYS[1], 'phase') ~= 'queued') then
  return {12, holder, redis.call('PTTL', KEYS[1])}
end
local lease = tonumber(ARGV[2])
local _, now_ms = clock()
if holder and holder ~= ARGV[1] then
  do  -- replace the holder, which is still queued
    -- The old message, if it is still delivered, reads this and does not run: kept
    -- as long as its own lease (which covers its countdown), if that is longer.
    local marker = math.max(lease, redis.call('PTTL', KEYS[1]))
    redis.call('SET', ARGV[8] .. holder, 'replaced:' .. ARGV[1], 'PX', marker)
    redis.call('DEL', KEYS[1])  -- nothing of the old holder's lock carries over
    take_lock(KEYS, ARGV[1], ARGV[4], ARGV[5], lease, now_ms, ARGV[6])
    return {13, holder, lease}
  end
end
if not holder then
  take_lock(KEYS, ARGV[1], ARGV[4], ARGV[5], lease, now_ms, ARGV[6])
  return {10, ARGV[1], lease}
end
-- Re-published by its owner. A retry: queued again, no execution runs it now. The
-- same id published while it runs (a caller's own task id): the running execution
-- keeps the lock, and the copy's start finds it running.
if ARGV[9] == '1' or redis.call('HGET', KEYS[1], 'phase') ~= 'running' then
  redis.call('HSET', KEYS[1], 'phase', 'queued')
  redis.call('HDEL', KEYS[1], 'token', 'token_until')
end
if ARGV[3] == '1' then
  extend_lock(KEYS, ARGV[4], lease, now_ms)
end
return {11, holder, redis.call('PTTL', KEYS[1])}
