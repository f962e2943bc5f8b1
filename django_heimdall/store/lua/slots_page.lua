-- One page of semaphores in use (concurrency slots, resources, ad-hoc semaphores),
-- listed from their registry, never by walking the keyspace.
-- KEYS[1] semaphore registry (zset: name -> latest lease or due time ms)
-- ARGV[1] key tag ("{prefix}:")   ARGV[2] offset   ARGV[3] page size
-- ARGV[4] a semaphore name to show only that one (if listed), or ""
-- Returns {now ms, total, rows}; a row is {name, capacity, tickets used, waiters in
-- line, mean hold ms, holders}, a holder {id, tickets, since ms, token, label,
-- lease left ms}. The semaphores' keys share the registry's hash tag.
local _, now_ms = clock()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now_ms))
local total = redis.call('ZCARD', KEYS[1])
local offset = tonumber(ARGV[2])
local names
if ARGV[4] ~= '' then
  names = redis.call('ZSCORE', KEYS[1], ARGV[4]) and {ARGV[4]} or {}
else
  names = redis.call('ZRANGE', KEYS[1], offset, offset + tonumber(ARGV[3]) - 1)
end
table.sort(names)
local rows = {}
for _, name in ipairs(names) do
  local k = sem_keys(ARGV[1], name)
  sem_prune(k, now_ms)
  local d = redis.call('HMGET', k[3], 'cap', 'used', 'avg')
  local holders = {}
  local members = redis.call('ZRANGE', k[1], 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local info = redis.call('HGET', k[3], 'h:' .. members[i])
    if info then
      local f = split(info)
      holders[#holders + 1] = {members[i], tonumber(f[1]), f[2], f[3], f[4] or '',
        tonumber(members[i + 1]) - now_ms}
    end
  end
  -- Waiters not back by their due time leave the line when a start next looks.
  local line = redis.call('ZCARD', k[2])
  rows[#rows + 1] = {name, tonumber(d[1] or '0'), tonumber(d[2] or '0'), line, d[3] or '',
    holders}
end
return {fmt(now_ms), total, rows}
