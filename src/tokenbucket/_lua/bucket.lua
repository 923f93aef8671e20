-- tokenbucket: every Redis-side operation on one bucket, atomically, in one script.
--
-- KEYS[1] is the key's hash. Its fields:
--   t, u, c, r   bucket state: at the instant t (integer microseconds of the server's TIME) the
--                bucket was u tokens short of full under the rule (capacity c, refill rate r).
--                Absent when the bucket is full: a full bucket and a missing one are the same.
--   C, R         the key's rule override, if any.
-- A hash with an override never expires; one without expires when its bucket is full again.
--
-- ARGV[1] is the operation, ARGV[2] and ARGV[3] the default rule's capacity and refill rate:
--   take   ARGV[4] amount, ARGV[5] '1' to consume or '0' to only look
--          -> {allowed (1/0), level} and, when the key has an override, its C and R after them
--   update ARGV[4] new capacity, ARGV[5] new refill rate ('' keeps the current value)
--          -> {C, R} of the new override
--   remove -> {C, R} of the dropped override, or nil if there was none
--   reset  -> nil
--
-- Numbers travel as strings both ways: Redis truncates Lua numbers in replies to integers, and
-- tostring keeps only 14 significant digits, so floats are written with '%.17g' (exact).
-- Time is the server's clock, so every client of the server agrees on it; it is kept in integer
-- microseconds, which a double holds exactly. A clock that went backwards earns nothing.

if redis.replicate_commands then
  redis.replicate_commands() -- scripts that read TIME must replicate effects (Redis < 5)
end

local EPSILON = 1e-9 -- tokenbucket.EPSILON: the admission tolerance, in tokens

local key = KEYS[1]
local op = ARGV[1]

local function fmt(x)
  return string.format('%.17g', x)
end

local function now_us()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- Tokens missing from full at now for the state (base, used) under refill rate rate.
local function deficit(base, used, rate, now)
  if now > base then
    local missing = used - (now - base) / 1000000 * rate
    if missing > 0 then
      return missing
    end
    return 0
  end
  return used -- the clock went backwards: nothing earned
end

-- Expire a key without an override when its bucket is full again: at base + used / rate.
local function expire(base, used, rate, now)
  if rate > 0 then
    local ms = math.ceil(((base - now) / 1000000 + used / rate) * 1000)
    if ms < 1e15 then -- else: full only after ~30,000 years, or never
      redis.call('PEXPIRE', key, string.format('%d', ms + 1))
      return
    end
  end
  redis.call('PERSIST', key)
end

-- Write the state (base, used) under the rule (cap, rate).
local function save(base, used, cap, rate, now, override)
  redis.call('HSET', key, 't', fmt(base), 'u', fmt(used), 'c', cap, 'r', rate)
  if not override then
    expire(base, used, tonumber(rate), now)
  end
end

-- Forget the bucket state: the bucket is full. An override stays.
local function forget(override)
  if override then
    redis.call('HDEL', key, 't', 'u', 'c', 'r')
  else
    redis.call('DEL', key)
  end
end

-- Settle the state s (an HMGET reply) under its recorded rule at now, then move it to the rule
-- (cap, rate): the deficit carries over, unclamped.
local function rebase(s, now, cap, rate, override)
  if not s[1] then
    return -- full, and full under any rule
  end
  local missing = deficit(tonumber(s[1]), tonumber(s[2]), tonumber(s[4]), now)
  if missing > 0 then
    save(now, missing, cap, rate, now, override)
  else
    forget(override)
  end
end

local s = redis.call('HMGET', key, 't', 'u', 'c', 'r', 'C', 'R')
local override = s[5]
local cap, rate = ARGV[2], ARGV[3]
if override then
  cap, rate = s[5], s[6]
end

if op == 'take' then
  local amount = tonumber(ARGV[4])
  local commit = ARGV[5] == '1'
  local capacity, refill = tonumber(cap), tonumber(rate)
  local now = now_us()
  local base, used, debt
  local settled = false
  if not s[1] then
    base, used, debt = now, 0, 0
  else
    base, used = tonumber(s[1]), tonumber(s[2])
    if tonumber(s[3]) ~= capacity or tonumber(s[4]) ~= refill then
      -- The rule changed since this state was written (a new default): settle the state under
      -- the rule it was written with, then carry the deficit over.
      used = deficit(base, used, tonumber(s[4]), now)
      base = now
      settled = true
    end
    if now > base then
      debt = used - (now - base) / 1000000 * refill
      if debt <= 0 then
        base, used, debt = now, 0, 0
      end
    else
      debt = used
    end
  end
  local allowed = 0
  local level = capacity - debt
  if debt + amount <= capacity + EPSILON then
    allowed = 1
    level = level - amount
    if commit then
      save(base, used + amount, cap, rate, now, override)
    end
  elseif commit and settled then
    if used > 0 then
      save(base, used, cap, rate, now, override)
    else
      forget(override)
    end
  end
  if override then
    return {allowed, fmt(level), s[5], s[6]}
  end
  return {allowed, fmt(level)}
elseif op == 'update' then
  local new_cap, new_rate = ARGV[4], ARGV[5]
  if new_cap == '' then
    new_cap = cap
  end
  if new_rate == '' then
    new_rate = rate
  end
  rebase(s, now_us(), new_cap, new_rate, true)
  redis.call('HSET', key, 'C', new_cap, 'R', new_rate)
  redis.call('PERSIST', key)
  return {new_cap, new_rate}
elseif op == 'remove' then
  if not override then
    return nil
  end
  if s[1] then
    local now = now_us()
    local missing = deficit(tonumber(s[1]), tonumber(s[2]), tonumber(s[4]), now)
    if missing > 0 then
      redis.call('HDEL', key, 'C', 'R')
      save(now, missing, ARGV[2], ARGV[3], now, false)
      return {s[5], s[6]}
    end
  end
  redis.call('DEL', key)
  return {s[5], s[6]}
elseif op == 'reset' then
  forget(override)
  return nil
end
return redis.error_reply('tokenbucket: unknown operation ' .. tostring(op))
