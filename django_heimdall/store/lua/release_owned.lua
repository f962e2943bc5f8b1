-- Give back the lock a task holds, found through its owner pointer, so that the
-- release follows the owner whatever key the policy would compute today.
-- KEYS[1] owner pointer (task id -> lock key)
-- ARGV[1] owner task id   ARGV[2] execution token, or "" to release whatever
-- execution holds it (revoked or lost tasks)   ARGV[3] index key prefix ("{prefix}:locks:")
-- ARGV[4] "requeue" to keep the lock for the same message coming back (queued again)
-- The lock hash and its task's index are read by the names the pointer and the lock
-- hold; they share the pointer's hash tag.
-- Returns 30 if released, 31 if not this owner's (or another execution's), 32 if kept
-- until its lease ends (unique_until "expired"), 33 if kept for the requeued message.
local lock = redis.call('GET', KEYS[1])
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
redis.call('DEL', lock, KEYS[1])
redis.call('ZREM', ARGV[3] .. f[4], lock)
return 30
