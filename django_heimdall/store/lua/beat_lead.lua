-- Lead beat: take the leader lease when it is free, renew it when the caller holds it.
-- KEYS[1] leader hash (owner, host, pid, since)
-- ARGV[1] beat id   ARGV[2] lease ms   ARGV[3] host   ARGV[4] pid
-- ARGV[5] the caller's clock, ms since the epoch   ARGV[6] ms it may be ahead of Redis's
-- Returns {status, leader's beat id, lease left ms}: 50 = taken now, 51 = renewed,
-- 52 = another beat leads (the caller stands by), 72 = the caller's clock is ahead of
-- the Redis clock: it does not lead (a lease it held is given back), since every
-- occurrence it claimed would be refused as ahead.
local leader = redis.call('HGET', KEYS[1], 'owner')
if leader and leader ~= ARGV[1] then
  return {52, leader, redis.call('PTTL', KEYS[1])}
end
local _, now_ms = clock()
if tonumber(ARGV[5]) > now_ms + tonumber(ARGV[6]) then
  if leader then
    redis.call('DEL', KEYS[1])
  end
  return {72, '', tonumber(ARGV[5]) - now_ms}
end
local lease = tonumber(ARGV[2])
if leader then
  redis.call('PEXPIRE', KEYS[1], lease)
  return {51, leader, lease}
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'host', ARGV[3], 'pid', ARGV[4],
  'since', fmt(now_ms))
redis.call('PEXPIRE', KEYS[1], lease)
return {50, ARGV[1], lease}
