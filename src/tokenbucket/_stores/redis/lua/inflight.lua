-- tokenbucket: in-flight slots of one key, atomically, in one script (see _stores/redis/inflight.py).
--
-- KEYS[1] is the key's sorted set: one member per slot held (a random id), scored by the
-- instant its lease ends, in milliseconds of the server's TIME. Expired members are dropped
-- first, so a slot whose holder died frees itself when its lease ends. The set itself expires
-- with its last lease, so a key with nothing in flight costs no memory.
--
-- ARGV[1] is the operation:
--   acquire  ARGV[2] the cap, ARGV[3] the lease in ms, ARGV[4] the new slot's id
--            -> 1 (taken, or already held: the same call sent again) or 0 (the key already
--            holds the cap)
--   count    -> the number of slots held
-- The arguments after these (ARGV[5...] for acquire, ARGV[2...] for count) are ids of slots
-- released while their ZREM could not reach Redis: they are removed first.
--
-- Releasing is a plain ZREM of the slot's id (idempotent: ids are never reused).

if not redis.REDIS_VERSION_NUM then
  redis.replicate_commands() -- Redis < 5 must be told to replicate a script that reads TIME
end

local key = KEYS[1]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local released = 2
if ARGV[1] == 'acquire' then
  released = 5
end
for i = released, #ARGV do
  redis.call('ZREM', key, ARGV[i])
end
local held = redis.call('ZCARD', key)

if ARGV[1] == 'acquire' then
  if redis.call('ZSCORE', key, ARGV[4]) then
    return 1 -- taken by this very call, whose reply was lost: the client sent it again
  end
  if held >= tonumber(ARGV[2]) then
    return 0
  end
  local ends = now + tonumber(ARGV[3])
  redis.call('ZADD', key, ends, ARGV[4])
  -- The set lives as long as its latest lease (leases may differ between limits on one key).
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', key, math.max(tonumber(last[2]), ends) - now)
  return 1
elseif ARGV[1] == 'count' then
  return held
end
return redis.error_reply('tokenbucket: unknown operation ' .. tostring(ARGV[1]))
