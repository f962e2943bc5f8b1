-- Take tickets of a named semaphore outside any task (semaphore(), mutex(), @locked).
-- KEYS[1] holders   KEYS[2] line   KEYS[3] details   KEYS[4] semaphore registry
-- KEYS[5] waiters' sequence   KEYS[6] the holder's pointer (places in line)
-- ARGV[1] semaphore name   ARGV[2] holder id (also its token)   ARGV[3] tickets
-- ARGV[4] capacity   ARGV[5] lease ms   ARGV[6] label (who holds it)
-- ARGV[7] "1" to queue FIFO when busy (a blocking caller that will come back)
-- Returns {status, wait ms, now µs}: 60 = taken (or already this holder's: renewed),
-- 61 = busy, tickets expected free in `wait` ms.
local now, now_ms = clock()
local reqs = {{k = {KEYS[1], KEYS[2], KEYS[3]}, name = ARGV[1], tickets = tonumber(ARGV[3]),
  capacity = tonumber(ARGV[4])}}
local state, _, wait = sems_check(reqs, ARGV[2], ARGV[2], now_ms)
if state == 'busy' then
  if ARGV[7] == '1' then
    sems_wait(reqs, KEYS[4], KEYS[5], KEYS[6], ARGV[2], ARGV[2], wait, now_ms)
  end
  return {61, wait, fmt(now)}
end
local lease = tonumber(ARGV[5])
if state == 'held' then
  sem_renew(reqs[1].k, KEYS[4], ARGV[1], ARGV[2], ARGV[2], lease, now_ms)
else
  sem_take(reqs[1].k, KEYS[4], ARGV[1], ARGV[2], ARGV[2], reqs[1].tickets, reqs[1].capacity,
    lease, ARGV[6], now_ms)
end
redis.call('DEL', KEYS[6])
return {60, 0, fmt(now)}
