-- Lead beat: take the leader lease when it is free, renew it when the caller holds it.
-- KEYS[1] leader hash (owner, host, pid, since)
-- ARGV[1] beat id   ARGV[2] lease ms   ARGV[3] host   ARGV[4] pid
-- Returns {status, leader's beat id, lease left ms}: 50 = taken now, 51 = renewed,
-- 52 = another beat leads (the caller stands by).
local leader = redis.call('HGET', KEYS[1], 'owner')
if leader and leader ~= ARGV[1] then
  return {52, leader, redis.call('PTTL', KEYS[1])}
end
local lease = tonumber(ARGV[2])
if leader then
  redis.call('PEXPIRE', KEYS[1], lease)
  return {51, leader, lease}
end
local _, now_ms = clock()
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'host', ARGV[3], 'pid', ARGV[4],
  'since', fmt(now_ms))
redis.call('PEXPIRE', KEYS[1], lease)
return {50, ARGV[1], lease}
