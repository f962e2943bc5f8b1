-- Helpers joined in front of every script at load time, so that the lock-taking
-- code exists once. Keys of one script share the "{prefix}" hash tag (one slot).

-- The Redis clock, in whole µs and ms since the epoch.
local function clock()
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return us, math.floor(us / 1000)
end

local function fmt(n)
  return string.format('%d', n)
end

-- Let `key` live at least until `until_ms`.
local function keep_until(key, until_ms, now_ms)
  if redis.call('PTTL', key) < until_ms - now_ms then
    redis.call('PEXPIREAT', key, until_ms)
  end
end

-- List `lock` in its task's index (zset: lease end ms -> lock key) until `until_ms`.
-- The index and the task registry (zset: lease end ms -> task name) expire with the
-- locks they list: their expiry is pushed to twice the lease ahead whenever it would
-- come before this lease ends, so on the hot path most calls touch the index alone.
-- Entries whose lease ended are pruned on every write: leases differ (countdowns,
-- per-call timeouts, waits), so a long one must not keep the short ones listed.
local function index_lock(index, tasks, lock, task, until_ms, now_ms)
  redis.call('ZADD', index, fmt(until_ms), lock)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', fmt(now_ms))
  if redis.call('PTTL', index) < until_ms - now_ms then
    local expiry = now_ms + 2 * (until_ms - now_ms)
    redis.call('PEXPIREAT', index, expiry)
    redis.call('ZADD', tasks, 'GT', fmt(expiry), task)
    redis.call('ZREMRANGEBYSCORE', tasks, '-inf', fmt(now_ms))
    keep_until(tasks, expiry, now_ms)
  end
end

-- Take the free lock `keys` = {lock, index, tasks, owner pointer} for `owner`.
-- `keep` = "1" keeps it after the task ends, until the lease runs out
-- (unique_until "expired"): the lock itself says so, whatever policy applies later
-- (the field is only written when set: the hot path writes no more than it needs).
local function take_lock(keys, owner, task, preview, lease, now_ms, keep)
  redis.call('HSET', keys[1], 'owner', owner, 'task', task, 'phase', 'queued',
    'since', fmt(now_ms), 'args', preview)
  if keep == '1' then
    redis.call('HSET', keys[1], 'keep', keep)
  end
  redis.call('PEXPIRE', keys[1], lease)
  redis.call('SET', keys[4], keys[1], 'PX', lease)
  index_lock(keys[2], keys[3], keys[1], task, now_ms + lease, now_ms)
end

-- Delete `lock` and its entry in its task's `index`, and the owner `pointer` if it
-- still names this lock (a replacement, Task.replace(), may have taken it over).
local function drop_lock(lock, index, pointer)
  redis.call('DEL', lock)
  redis.call('ZREM', index, lock)
  if redis.call('GET', pointer) == lock then
    redis.call('DEL', pointer)
  end
end

-- Extend the lease of a lock this owner holds to at least `lease` ms from now.
local function extend_lock(keys, task, lease, now_ms)
  if redis.call('PTTL', keys[1]) >= lease then
    return
  end
  redis.call('PEXPIRE', keys[1], lease)
  redis.call('PEXPIRE', keys[4], lease)
  index_lock(keys[2], keys[3], keys[1], task, now_ms + lease, now_ms)
end
