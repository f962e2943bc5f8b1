-- Extend the lease of a lock the caller still owns (a running task's heartbeat).
-- KEYS[1] lock hash   KEYS[2] per-task lock index (zset)   KEYS[3] owner pointer
-- ARGV[1] owner task id   ARGV[2] lease ms
-- Returns 1 if renewed, 0 if absent or owned by another task.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%d', now_ms + tonumber(ARGV[2])), KEYS[1])
return 1
