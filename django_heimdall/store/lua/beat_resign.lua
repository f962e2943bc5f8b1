-- Give the leader lease back (a beat shutting down), so a standby takes over at once.
-- KEYS[1] leader hash
-- ARGV[1] beat id
-- Returns 70 if the caller led and resigned, 71 if it did not lead.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 71
end
redis.call('DEL', KEYS[1])
return 70
