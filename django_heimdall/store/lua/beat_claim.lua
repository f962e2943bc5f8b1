-- Claim one occurrence (entry, scheduled fire time) before beat sends it: only the
-- leader claims, and only an occurrence later than the entry's last claimed one, so
-- two beats that both believe they lead still send each occurrence at most once.
-- KEYS[1] leader hash   KEYS[2] claims hash (entry name -> "<occurrence ms> <claimed
-- at ms>" of its last claim)   KEYS[3] history list (latest first)   KEYS[4] claims'
-- ends (zset: entry name -> ms its claim may be forgotten)   then, when ARGV[8] == "1",
-- the unique lock of the entry's call; then the holders, line and details of each
-- semaphore the task would need (its concurrency slot and resource tickets, with
-- on_busy "skip")
-- ARGV[1] beat id   ARGV[2] entry name   ARGV[3] occurrence ms   ARGV[4] task name
-- ARGV[5] ms this claim (and the history) is kept   ARGV[6] history length
-- ARGV[7] ms an occurrence may be ahead of the Redis clock   ARGV[8] "1" with a lock
-- ARGV[9] ms that must pass, on the Redis clock, since the entry's last claim (a fixed
-- interval, less a tolerance: each beat fires on its own phase of the interval, so
-- two beats may label one run with neighbouring occurrences)   ARGV[10] number of
-- semaphores, then per semaphore: name, tickets, capacity
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
local last = redis.call('HGET', KEYS[2], ARGV[2])
if last then
  local fired, at = string.match(last, '^(%d+) (%d+)$')
  if occurrence <= tonumber(fired) or now_ms - tonumber(at) < tonumber(ARGV[9]) then
    return {54, ''}
  end
end
local keep = tonumber(ARGV[5])
redis.call('HSET', KEYS[2], ARGV[2], fmt(occurrence) .. ' ' .. fmt(now_ms))
redis.call('ZADD', KEYS[4], fmt(now_ms + keep), ARGV[2])
-- An entry not claimed again within its keep time (deleted, or a one-off that fired)
-- is forgotten, a batch per call: one claim per live entry.
local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', fmt(now_ms), 'LIMIT', 0, 100)
if #gone > 0 then
  redis.call('HDEL', KEYS[2], unpack(gone))
  redis.call('ZREM', KEYS[4], unpack(gone))
end
keep_until(KEYS[2], now_ms + keep, now_ms)
keep_until(KEYS[4], now_ms + keep, now_ms)
local holder, busy = '', ''
local first = 4
if ARGV[8] == '1' then
  first = 5
  holder = redis.call('HGET', KEYS[5], 'owner') or ''
end
local reqs = {}
for i = 1, tonumber(ARGV[10]) do
  local key, arg = first + 3 * (i - 1), 10 + 3 * (i - 1)
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
keep_until(KEYS[3], now_ms + keep, now_ms)
if holder ~= '' then
  return {55, holder}
end
if busy ~= '' then
  return {58, busy}
end
return {53, ''}
