-- Claim one occurrence (entry, scheduled fire time) before beat sends it: only the
-- leader claims, and only an occurrence later than the entry's last claimed one, so
-- two beats that both believe they lead still send each occurrence at most once.
-- KEYS[1] leader hash   KEYS[2] claims zset (entry name -> last claimed occurrence ms)
-- KEYS[3] history list (latest first)   then, when ARGV[8] == "1", the unique lock of
-- the entry's call; then the holders, line and details of each semaphore the task
-- would need (its concurrency slot and resource tickets, with on_busy "skip")
-- ARGV[1] beat id   ARGV[2] entry name   ARGV[3] occurrence ms   ARGV[4] task name
-- ARGV[5] ms a claim and the history are kept   ARGV[6] history length
-- ARGV[7] ms an occurrence may be ahead of the Redis clock   ARGV[8] "1" with a lock
-- ARGV[9] number of semaphores, then per semaphore: name, tickets, capacity
-- Returns {status, lock holder, busy semaphore, or ''}: 53 = claimed, send it;
-- 54 = this occurrence or a later one was claimed already; 55 = claimed, but the lock
-- is held by the returned task: not sent; 56 = the caller does not lead; 57 = the
-- occurrence is ahead of the Redis clock (the beat host's clock is wrong); 58 =
-- claimed, but the returned semaphore has no free ticket: not sent.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return {56, ''}
end
local _, now_ms = clock()
local occurrence = tonumber(ARGV[3])
if occurrence > now_ms + tonumber(ARGV[7]) then
  return {57, ''}
end
local last = redis.call('ZSCORE', KEYS[2], ARGV[2])
if last and occurrence <= tonumber(last) then
  return {54, ''}
end
local keep = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], fmt(occurrence), ARGV[2])
-- Entries that fired for the last time long ago are forgotten: one member per live entry.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now_ms - keep))
redis.call('PEXPIRE', KEYS[2], keep)
local holder, busy = '', ''
local first = 3
if ARGV[8] == '1' then
  first = 4
  holder = redis.call('HGET', KEYS[4], 'owner') or ''
end
local reqs = {}
for i = 1, tonumber(ARGV[9]) do
  local key, arg = first + 3 * (i - 1), 9 + 3 * (i - 1)
  reqs[i] = {k = {KEYS[key + 1], KEYS[key + 2], KEYS[key + 3]}, name = ARGV[arg + 1],
    tickets = tonumber(ARGV[arg + 2]), capacity = tonumber(ARGV[arg + 3])}
end
if holder == '' and #reqs > 0 then
  local state, name = sems_check(reqs, 'beat:' .. ARGV[1], '', now_ms)
  if state == 'busy' then
    busy = name
  end
end
redis.call('LPUSH', KEYS[3], cjson.encode({
  entry = ARGV[2], task = ARGV[4], scheduled = occurrence, at = now_ms, by = ARGV[1],
  outcome = (holder == '' and busy == '') and 'sent' or 'skipped',
  holder = holder ~= '' and holder or busy,
}))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
redis.call('PEXPIRE', KEYS[3], keep)
if holder ~= '' then
  return {55, holder}
end
if busy ~= '' then
  return {58, busy}
end
return {53, ''}
