-- Take a unique lock at enqueue.
-- KEYS[1] lock hash   KEYS[2] per-task lock index (zset: lease end ms -> lock key)
-- KEYS[3] set of task names   KEYS[4] owner pointer (task id -> lock key)
-- ARGV[1] owner task id   ARGV[2] lease ms   ARGV[3] "1" to renew an owned lease
-- ARGV[4] task name   ARGV[5] argument preview
-- Returns {status, holder, ms left}: status 1 = taken now, 2 = already held by
-- this owner (a retry re-sending itself), 0 = held by another task.
local holder = redis.call('HGET', KEYS[1], 'owner')
if holder and holder ~= ARGV[1] then
  return {0, holder, redis.call('PTTL', KEYS[1])}
end
local lease = tonumber(ARGV[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if holder then
  redis.call('HSET', KEYS[1], 'phase', 'queued')
  if ARGV[3] ~= '1' then
    return {2, holder, redis.call('PTTL', KEYS[1])}
  end
else
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'task', ARGV[4], 'phase', 'queued',
    'since', string.format('%d', now_ms), 'args', ARGV[5])
  redis.call('SADD', KEYS[3], ARGV[4])
  -- Forget index entries of locks whose lease ran out (crashed holders).
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now_ms))
end
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('SET', KEYS[4], KEYS[1], 'PX', lease)
redis.call('ZADD', KEYS[2], string.format('%d', now_ms + lease), KEYS[1])
return {holder and 2 or 1, ARGV[1], lease}
