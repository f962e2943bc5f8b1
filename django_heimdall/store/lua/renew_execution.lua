-- Extend the leases of everything one running execution holds (its heartbeat): the
-- unique lock, found through the owner pointer, and the semaphores its slots
-- pointer records, each only while this task and execution still hold it.
-- KEYS[1] owner pointer   KEYS[2] slots pointer   KEYS[3] task registry
-- KEYS[4] semaphore registry
-- ARGV[1] owner task id   ARGV[2] execution token ("": whichever runs)   ARGV[3] lease ms
-- ARGV[4] index key prefix ("{prefix}:locks:")   ARGV[5] key tag ("{prefix}:")
-- Returns 40 if everything it held is renewed, 41 if some of it was lost (a lease
-- ran out and another task took the lock, or an operator released a slot), 42 if it
-- holds nothing.
local _, now_ms = clock()
local lease = tonumber(ARGV[3])
local held, lost = 0, 0
local lock = redis.call('GET', KEYS[1])
if lock then
  local f = redis.call('HMGET', lock, 'owner', 'phase', 'token', 'task')
  if f[1] == ARGV[1] and not (ARGV[2] ~= '' and f[2] == 'running' and f[3] and f[3] ~= ARGV[2]) then
    held = held + 1
    extend_lock({lock, ARGV[4] .. f[4], KEYS[3], KEYS[1]}, f[4], lease, now_ms)
    if f[2] == 'running' then
      redis.call('HSET', lock, 'token_until', fmt(now_ms + lease))
    end
  else
    lost = lost + 1
  end
end
local slots = redis.call('HGETALL', KEYS[2])
local fields = {}
for i = 1, #slots, 2 do
  fields[slots[i]] = slots[i + 1]
end
if #slots > 0 and ARGV[2] ~= '' and fields['token'] ~= ARGV[2] then
  lost = lost + 1
elseif #slots > 0 then
  for name, _ in pairs(fields) do
    if name ~= 'token' and string.sub(name, 1, 2) ~= 'w:' then
      if sem_renew(sem_keys(ARGV[5], name), KEYS[4], name, ARGV[1], ARGV[2], lease, now_ms) then
        held = held + 1
      else
        lost = lost + 1
      end
    end
  end
  if redis.call('PTTL', KEYS[2]) < lease then
    redis.call('PEXPIRE', KEYS[2], lease)
  end
end
if lost > 0 then
  return 41
end
return held > 0 and 40 or 42
