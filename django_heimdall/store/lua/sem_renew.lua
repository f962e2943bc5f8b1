-- Extend the lease of a holder's tickets of one semaphore (owner-checked).
-- KEYS[1] holders   KEYS[2] line   KEYS[3] details   KEYS[4] semaphore registry
-- ARGV[1] semaphore name   ARGV[2] holder id   ARGV[3] lease ms   ARGV[4] the
-- execution's token ("" for a holder id that is its own token)
-- Returns 64 if renewed, 65 if no longer held (its lease ran out or it was released).
local _, now_ms = clock()
local token = ARGV[4] ~= '' and ARGV[4] or ARGV[2]
if sem_renew({KEYS[1], KEYS[2], KEYS[3]}, KEYS[4], ARGV[1], ARGV[2], token,
    tonumber(ARGV[3]), now_ms) then
  return 64
end
return 65
