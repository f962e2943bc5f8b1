-- Release a batch of one task's locks that were taken at or before a cutoff, so
-- that a lock re-taken after the operator confirmed is left alone.
-- KEYS[1] per-task lock index (zset: lease end ms -> lock key)
-- ARGV[1] cutoff ms   ARGV[2] rank to start at   ARGV[3] batch size
-- ARGV[4] owner-pointer key prefix ("{prefix}:owner:")   ARGV[5] the task's name
-- Returns {released, kept, seen}: kept locks stay in the index, so the next batch
-- starts at rank + kept; a batch that saw fewer than its size reached the end.
local members = redis.call('ZRANGE', KEYS[1], ARGV[2], tonumber(ARGV[2]) + tonumber(ARGV[3]) - 1)
local released, kept = 0, 0
for _, lock in ipairs(members) do
  local f = redis.call('HMGET', lock, 'owner', 'since', 'task')
  if not f[1] or f[3] ~= ARGV[5] then
    -- Gone, or its lease ended and another task took the key (a shared `key`): the
    -- entry is stale, the lock is not this task's.
    redis.call('ZREM', KEYS[1], lock)
  elseif tonumber(f[2]) <= tonumber(ARGV[1]) then
    drop_lock(lock, KEYS[1], ARGV[4] .. f[1])
    released = released + 1
  else
    kept = kept + 1
  end
end
return {released, kept, #members}
