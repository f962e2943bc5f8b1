-- Take tickets of a named semaphore outside any task (semaphore(), mutex(), @locked).
-- KEYS[1] holders   KEYS[2] line   KEYS[3] details   KEYS[4] semaphore registry
-- KEYS[5] waiters' sequence   KEYS[6] the holder's pointer (places in line)
-- ARGV[1] semaphore name   ARGV[2] holder id   ARGV[3] tickets   ARGV[4] capacity
-- ARGV[5] lease ms   ARGV[6] label (who holds it)   ARGV[7] "1" to queue FIFO when
-- busy (a blocking caller that will come back)   ARGV[8] the execution's token (""
-- for a holder id that is its own token)
-- Returns {status, wait ms, now µs}: 60 = taken (or already this execution's:
-- renewed), 61 = busy, tickets expected free in `wait` ms, 66 = held by another
-- execution of the same holder (a second delivery of a task's message): nothing
-- changed.
local now, now_ms = clock()
local holder = ARGV[2]
local token = ARGV[8] ~= '' and ARGV[8] or holder
local reqs = {{k = {KEYS[1], KEYS[2], KEYS[3]}, name = ARGV[1], tickets = tonumber(ARGV[3]),
  capacity = tonumber(ARGV[4])}}
local state, _, wait = sems_check(reqs, holder, token, now_ms)
if state == 'twin' then
  return {66, 0, fmt(now)}
end
if state == 'busy' then
  if ARGV[7] == '1' then
    sems_wait(reqs, KEYS[4], KEYS[5], KEYS[6], holder, token, wait, now_ms)
  end
  return {61, wait, fmt(now)}
end
local lease = tonumber(ARGV[5])
if reqs[1].held then
  sem_renew(reqs[1].k, KEYS[4], ARGV[1], holder, token, lease, now_ms)
else
  sem_take(reqs[1].k, KEYS[4], ARGV[1], holder, token, reqs[1].tickets, reqs[1].capacity,
    lease, ARGV[6], now_ms)
end
redis.call('DEL', KEYS[6])
return {60, 0, fmt(now)}
