-- Give back a holder's tickets of one semaphore (owner-checked) and its place in line.
-- KEYS[1] holders   KEYS[2] line   KEYS[3] details   KEYS[4] the holder's pointer
-- ARGV[1] holder id   ARGV[2] its token ("" for a holder id that is its own token)
-- ARGV[3] "1" to drop the holder's pointer too (an ad-hoc holder leaving for good;
-- an operator releasing one slot of a task leaves the task's pointer to its end)
-- Returns {status, now µs}: 62 = released, 63 = not held by this holder and token
-- (released before, expired, or another execution's): nothing changed.
local now, now_ms = clock()
local k = {KEYS[1], KEYS[2], KEYS[3]}
local token = ARGV[2] ~= '' and ARGV[2] or ARGV[1]
if ARGV[3] == '1' then
  sem_leave_line(k, ARGV[1])
  redis.call('DEL', KEYS[4])
end
if sem_release(k, ARGV[1], token, now_ms) then
  return {62, fmt(now)}
end
return {63, fmt(now)}
