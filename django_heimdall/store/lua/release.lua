-- Give a unique lock back, only if the caller still owns it (compare-and-delete).
-- KEYS[1] lock hash   KEYS[2] per-task lock index   KEYS[3] owner pointer
-- ARGV[1] owner task id
-- Returns 30 if released, 31 if absent or owned by another task.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  drop_lock(KEYS[1], KEYS[2], KEYS[3])
  return 30
end
return 31
