-- True at most once per interval per key: the first call after the interval ended.
-- KEYS[1] the key's marker (expires with the interval)
-- ARGV[1] interval ms   ARGV[2] who asked (task id or ""; shown when inspecting)
-- Returns 1 if the interval had ended (a new one starts now), 0 otherwise.
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then
  return 1
end
return 0
