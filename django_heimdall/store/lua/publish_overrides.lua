-- Replace the published admin overrides, unless a newer revision is already there.
-- KEYS[1] overrides (hash: task name -> options JSON)   KEYS[2] revision number
-- ARGV[1] revision of this snapshot   then pairs of task name, options JSON
-- Returns 1 if published, 0 if a newer revision was published first.
local current = tonumber(redis.call('GET', KEYS[2]) or '-1')
if current >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[2], ARGV[1])
return 1
