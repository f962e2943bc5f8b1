-- One page of live locks across several tasks, without walking the keyspace.
-- KEYS: the per-task lock indexes (zsets: lease end ms -> lock key), in display order
-- ARGV[1] offset   ARGV[2] page size
-- Returns {now ms, total live locks, rows}; a row is
-- {lock key, owner, task, phase, since ms, argument preview, lease left ms}.
-- The lock hashes are read by the names the indexes hold; they share the indexes'
-- hash tag, so this stays within one slot.
local _, now_ms = clock()
local now = fmt(now_ms)
local counts, total = {}, 0
for i, index in ipairs(KEYS) do
  counts[i] = redis.call('ZCOUNT', index, '(' .. now, '+inf')
  total = total + counts[i]
end
local skip, need, rows = tonumber(ARGV[1]), tonumber(ARGV[2]), {}
for i, index in ipairs(KEYS) do
  if need <= 0 then break end
  if skip >= counts[i] then
    skip = skip - counts[i]
  else
    -- Live locks (lease end > now) are the last counts[i] ranks of the index:
    -- jump to the page by rank instead of stepping over the skipped entries.
    local first = redis.call('ZCARD', index) - counts[i] + skip
    local take = math.min(need, counts[i] - skip)
    local members = redis.call('ZRANGE', index, first, first + take - 1)
    skip = 0
    for _, lock in ipairs(members) do
      local f = redis.call('HMGET', lock, 'owner', 'task', 'phase', 'since', 'args')
      if f[1] then
        rows[#rows + 1] = {lock, f[1], f[2], f[3], f[4], f[5], redis.call('PTTL', lock)}
      end
      need = need - 1
    end
  end
end
return {now, total, rows}
