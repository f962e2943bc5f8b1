-- Extend the lease of a lock the caller still owns (a running task's heartbeat).
-- KEYS[1] lock hash   KEYS[2] per-task lock index   KEYS[3] task registry
-- KEYS[4] owner pointer
-- ARGV[1] owner task id   ARGV[2] lease ms   ARGV[3] task name
-- Returns 40 if renewed, 41 if absent or owned by another task.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 41
end
local _, now_ms = clock()
extend_lock(KEYS, ARGV[3], tonumber(ARGV[2]), now_ms)
if redis.call('HGET', KEYS[1], 'phase') == 'running' then
  redis.call('HSET', KEYS[1], 'token_until', fmt(now_ms + tonumber(ARGV[2])))
end
return 40
