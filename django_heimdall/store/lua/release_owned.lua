-- Give back what a task holds: its unique lock, found through its owner pointer (so
-- that the release follows the owner whatever key the policy would compute today),
-- and its concurrency slots and resource tickets, found through its slots pointer.
-- KEYS[1] owner pointer (task id -> lock key)
-- KEYS[2] slots pointer (task id -> semaphores held or waited for)
-- KEYS[3] reservation pointer (task id -> the rate-limit reservations holding its slot)
-- ARGV[1] owner task id   ARGV[2] execution token, or "" to release whatever
-- execution holds it (revoked or lost tasks)   ARGV[3] index key prefix ("{prefix}:locks:")
-- ARGV[4] "requeue" to keep the lock for the same message coming back (queued again),
-- "slots" to leave the lock alone (a retry keeps it)   ARGV[5] key tag ("{prefix}:")
-- ARGV[6] the lock the execution took, or "" to follow the owner pointer (which a
-- replacement published under the same task id, Task.replace(), points elsewhere)
-- The lock hash, its task's index and the semaphores are read by the names the
-- pointers hold; they share the pointers' hash tag.
-- Returns {lock status, semaphores released}: lock status 30 if released, 31 if not
-- this owner's (or another execution's, or left alone), 32 if kept until its lease
-- ends (unique_until "expired"), 33 if kept for the requeued message.
local function release_lock()
  local lock = ARGV[6]
  if lock == '' then
    lock = redis.call('GET', KEYS[1])
  end
  if not lock then
    return 31
  end
  local f = redis.call('HMGET', lock, 'owner', 'token', 'keep', 'task')
  if f[1] ~= ARGV[1] or (ARGV[2] ~= '' and f[2] and f[2] ~= ARGV[2]) then
    return 31
  end
  if ARGV[4] == 'requeue' then
    redis.call('HSET', lock, 'phase', 'queued')
    redis.call('HDEL', lock, 'token', 'token_until')
    return 33
  end
  if f[3] == '1' then
    redis.call('HSET', lock, 'phase', 'done')
    redis.call('HDEL', lock, 'token', 'token_until')
    return 32
  end
  drop_lock(lock, ARGV[3] .. f[4], KEYS[1])
  return 30
end

local status = 31
if ARGV[4] ~= 'slots' then
  status = release_lock()
end
-- A waiter that will not come back (revoked, expired, failed at its start) gives up
-- its rate-limit slot, whichever execution asks: later arrivals need not wait behind it.
local reserved = redis.call('GET', KEYS[3])
if reserved and ARGV[4] ~= 'requeue' then
  redis.call('ZREM', reserved, ARGV[1])
  redis.call('DEL', KEYS[3])
end
local _, now_ms = clock()
return {status, sems_release_owned(KEYS[2], ARGV[5], ARGV[1], ARGV[2], now_ms)}
