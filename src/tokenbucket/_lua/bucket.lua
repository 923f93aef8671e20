-- tokenbucket: every Redis-side operation on one bucket, atomically, in one script.
--
-- KEYS[1] is the key's hash. Its fields:
--   t, u, c, r   bucket state: at the instant t (integer microseconds of the server's TIME) the
--                bucket was u tokens short of full under the rule (capacity c, refill rate r).
--                Absent when the bucket is full: a full bucket and a missing one are the same.
--   l            what rounding left out of u (u + l is the exact sum of the request sizes);
--                absent means 0.
--   C, R         the key's rule override, if any.
-- A hash with an override never expires; one without expires when its bucket is full again.
--
-- ARGV[1] is the operation, ARGV[2] and ARGV[3] the default rule's capacity and refill rate:
--   take   ARGV[4] amount: refill, check, consume  -> '<allowed><level>[ <C> <R>]'
--   peek   ARGV[4] amount: refill and check only   -> '<allowed><level>[ <C> <R>]'
--          allowed is 1 or 0; C and R follow when the key has an override (the rule that
--          decided), for example '12.5' (allowed, 2.5 left) or '0-3 5 0.5' (denied, in debt)
--   update ARGV[4] new capacity, ARGV[5] new refill rate ('' keeps the current value)
--          -> {C, R} of the new override
--   remove -> {C, R} of the dropped override, or nil if there was none
--   reset  -> nil
--
-- Numbers travel as strings both ways: Redis truncates Lua numbers in replies to integers and
-- tostring keeps only 14 significant digits, so the level is sent with '%.17g' (exact). Numbers
-- given to redis.call are written by Redis itself with 17 significant digits (exact too).
-- Time is the server's clock, so every client of the server agrees on it; it is kept in integer
-- microseconds, which a double holds exactly. A clock that went backwards earns nothing.
--
-- Everything below mirrors tokenbucket/_memory.py (MemoryStore); keep the two in step.

if not redis.REDIS_VERSION_NUM then
  redis.replicate_commands() -- Redis < 5 must be told to replicate a script that reads TIME
end

local key = KEYS[1]
local op = ARGV[1]

local s = redis.call('HMGET', key, 't', 'u', 'c', 'r', 'C', 'R', 'l')
local override = s[5]
local cap, rate = ARGV[2], ARGV[3]
if override then
  cap, rate = s[5], s[6]
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- Tokens missing from full at now for the state (base, used) under refill rate per_s.
local function deficit(base, used, per_s)
  if now > base then
    local missing = used - (now - base) / 1000000 * per_s
    if missing > 0 then
      return missing
    end
    return 0
  end
  return used -- the clock went backwards: nothing earned
end

-- used + carry + amount as (correctly rounded sum, what rounding left out): Knuth's TwoSum, so
-- that fractional request sizes never drift (as _accumulate in _memory.py).
local function accumulate(used, carry, amount)
  local total = used + amount
  local back = total - used
  carry = carry + ((used - (total - back)) + (amount - back))
  local rounded = total + carry
  return rounded, carry - (rounded - total)
end

-- Write the state (base, used, carry) under the rule (capacity c, refill rate r, per_s as a
-- number); only u and l if not whole (t, c and r unchanged). Then, without an override, expire the
-- key when the bucket is full again: at base + used / per_s.
local function save(base, used, carry, c, r, per_s, whole)
  if whole then
    redis.call('HSET', key, 't', base, 'u', used, 'l', carry, 'c', c, 'r', r)
  else
    redis.call('HSET', key, 'u', used, 'l', carry)
  end
  if override then
    return
  end
  if per_s > 0 then
    local ms = math.ceil(((base - now) / 1000000 + used / per_s) * 1000)
    if ms < 1e15 then -- else: full only after ~30,000 years, or never
      redis.call('PEXPIRE', key, ms + 1)
      return
    end
  end
  redis.call('PERSIST', key)
end

-- Forget the bucket state: it is full. An override stays.
local function forget()
  if override then
    redis.call('HDEL', key, 't', 'u', 'c', 'r', 'l')
  else
    redis.call('DEL', key)
  end
end

if op == 'take' or op == 'peek' then
  local amount = tonumber(ARGV[4])
  local capacity, refill = tonumber(cap), tonumber(rate)
  local base, used, debt, carry = now, 0, 0, 0
  local fresh = true -- whether t, c and r must be written (else only u and l change)
  if s[1] then
    base, used, carry = tonumber(s[1]), tonumber(s[2]), tonumber(s[7]) or 0
    fresh = false
    if tonumber(s[3]) ~= capacity or tonumber(s[4]) ~= refill then
      -- The rule changed since this state was written (a new default): settle the state under
      -- the rule it was written with, then carry the deficit over.
      used, carry = deficit(base, used, tonumber(s[4])), 0
      if now > base then -- else the clock went backwards: keep the later instant
        base = now
      end
      fresh = true
      if op == 'take' and used + amount > capacity + 1e-9 then
        -- Denied, but the settled state is written all the same.
        if used > 0 then
          save(base, used, 0, cap, rate, refill, true)
        else
          forget()
        end
      end
    end
    if now > base then
      debt = used - (now - base) / 1000000 * refill
      if debt <= 0 then
        base, used, debt, carry, fresh = now, 0, 0, 0, true
      end
    else
      debt = used
    end
  end
  local level = capacity - debt
  local allowed = 0
  if debt + amount <= capacity + 1e-9 then -- 1e-9: tokenbucket.EPSILON
    allowed = 1
    level = level - amount
    if op == 'take' then
      used, carry = accumulate(used, carry, amount)
      save(base, used, carry, cap, rate, refill, fresh)
    end
  elseif now < base then
    -- Denied while the clock is behind the bucket's instant: nothing refills until it is back
    -- at base, so report the level the refill line has at now (as _behind in _memory.py); the
    -- client's retry_after then includes the wait for the clock to catch up.
    level = level - (base - now) / 1000000 * refill
  end
  -- One string (cheaper to send and parse than an array): the flag, then the level.
  if override then
    return string.format('%d%.17g %s %s', allowed, level, s[5], s[6])
  end
  return string.format('%d%.17g', allowed, level)
end

-- Settle the state under its recorded rule now, then move it to the rule (c, r): the deficit
-- carries over, unclamped.
local function rebase(c, r)
  if not s[1] then
    return -- full, and full under any rule
  end
  local base = tonumber(s[1])
  local missing = deficit(base, tonumber(s[2]), tonumber(s[4]))
  if missing > 0 then
    save(math.max(now, base), missing, 0, c, r, tonumber(r), true)
  else
    forget()
  end
end

if op == 'update' then
  local new_cap, new_rate = ARGV[4], ARGV[5]
  if new_cap == '' then
    new_cap = cap
  end
  if new_rate == '' then
    new_rate = rate
  end
  override = true -- from now on: no expiry
  rebase(new_cap, new_rate)
  redis.call('HSET', key, 'C', new_cap, 'R', new_rate)
  redis.call('PERSIST', key)
  return {new_cap, new_rate}
elseif op == 'remove' then
  if not override then
    return nil
  end
  redis.call('HDEL', key, 'C', 'R')
  override = false
  rebase(ARGV[2], ARGV[3]) -- a hash left empty is deleted by Redis
  return {s[5], s[6]}
elseif op == 'reset' then
  forget()
  return nil
end
return redis.error_reply('tokenbucket: unknown operation ' .. tostring(op))
