-- tokenbucket: every Redis-side operation on one bucket, atomically, in one script.
--
-- KEYS[1] is the key's hash. Its fields:
--   t, u, c, r   bucket state: at the instant t (integer microseconds of the server's TIME) the
--                bucket was u tokens short of full under the rule (capacity c, refill rate r).
--                Absent when the bucket is full: a full bucket and a missing one are the same
--                (but for a full state ahead of a clock that stepped back, kept until the clock
--                is back at t). A charge never leaves a bucket more than 2^53 tokens short
--                (MAX_DEBT).
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
--          With several keys (KEYS[2..n], all or nothing), ARGV[2i+1] and ARGV[2i+2] are the
--          default rule of KEYS[i] for i >= 2; every key is checked at one instant, all are
--          consumed only if each has the amount, and the reply has one such line per key,
--          joined by '\n' (allowed then means: this key alone had the amount).
--   charge ARGV[4] amount: take it whatever the level (into debt)  -> as take, allowed 1
--   reserve ARGV[4] amount, ARGV[2n+3] (after the n keys' rules) the longest wait in seconds:
--          charge only if the amount is within the capacity and the level after it is back at
--          0 within that wait; else nothing is taken              -> as take
--   refund ARGV[4] amount: give it back, never above full          -> as take, allowed 1
--          These three report the level on the refill line at now (_arith.behind) and take
--          several keys as take does (reserve: all or none).
--          For take and peek, ARGV[2n+3] (n keys), optional, is the shadow mask: one '0' or '1' per key; a '1'
--          key does not decide (it is watched) and is consumed only if it has the amount and
--          the others are consumed. For reserve the mask, optional, is ARGV[2n+4]: a '1' key
--          is charged only if its own wait fits and the others are charged.
--   update ARGV[4] new capacity, ARGV[5] new refill rate ('' keeps the current value)
--          -> {C, R} of the new override
--   remove -> {C, R} of the dropped override, or nil if there was none
--   reset  -> nil
--
-- Applied once: an operation written '+op' (take, charge, reserve, refund) carries one more
-- key, last, after the buckets: the call's marker, a name unique to the call (in the buckets'
-- hash slot). A call that changed something leaves its reply there for ONCE_MS; the same call
-- sent again (a client retrying a reply it did not get) finds it and gets that reply back,
-- changing nothing. '+undo' (a caller cancelled while its call was on the way) takes the call
-- back: it refunds the amount to the keys the call charged (those whose line in its reply
-- starts with 1) if the call was applied, and either way leaves '' in the marker, so that the
-- call, if it arrives after, changes nothing.
--
-- Numbers travel as strings both ways: Redis truncates Lua numbers in replies to integers and
-- tostring keeps only 14 significant digits, so the level is sent with '%.17g' (exact). Numbers
-- given to redis.call are written by Redis itself with 17 significant digits (exact too).
-- Time is the server's clock, so every client of the server agrees on it; it is kept in integer
-- microseconds, which a double holds exactly. A clock that went backwards earns nothing.
--
-- The arithmetic is that of tokenbucket/_core/arith.py; each function or step below names the
-- function it mirrors, and tests/test_store_conformance.py holds the two to the same answers.

if not redis.REDIS_VERSION_NUM then
  redis.replicate_commands() -- Redis < 5 must be told to replicate a script that reads TIME
end

local op = ARGV[1]

-- A call sent again is answered from its marker (see the header), before any other work.
local ONCE_MS = 60000
local marker = nil
local skip = nil -- undo: a '1' per key the call did not charge (a shadow key), else '0'
if op:byte(1) == 43 then -- '+'
  op = op:sub(2)
  marker = table.remove(KEYS)
  local seen = redis.call('GET', marker)
  if op == 'undo' then
    redis.call('SET', marker, '', 'PX', ONCE_MS)
    if not seen or seen == '' then
      return ''
    end
    op, marker, skip = 'refund', nil, ''
    for line in (seen .. '\n'):gmatch('([^\n]*)\n') do
      skip = skip .. (line:sub(1, 1) == '0' and '1' or '0')
    end
  elseif seen then
    return seen
  end
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- A key's hash fields, and its rule: its override, else the default given (c, r as strings).
local function read(key, c, r)
  local s = redis.call('HMGET', key, 't', 'u', 'c', 'r', 'C', 'R', 'l')
  if s[5] then
    return s, s[5], s[6]
  end
  return s, c, r
end

-- _arith.MAX_DEBT: the most tokens a bucket owes (2^53); a charge saturates there.
local MAX_DEBT = 9007199254740992

-- Whether x is a finite number (not nil, NaN or +-inf).
local function finite(x)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end

-- Whether a hash's state fields (as read returns them) hold a state this script writes: t, u
-- and l finite. An older version wrote '-nan' after a huge charge; such a state reads as an
-- empty bucket (from its instant t, or now), never as a full one. The in-memory store never
-- holds one.
local function sound(s)
  return finite(tonumber(s[1])) and finite(tonumber(s[2])) and finite(tonumber(s[7] or 0))
end

-- _arith.deficit: tokens missing from full at now for the state (base, used) at refill rate
-- per_s (per second; base and now in microseconds).
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

-- _arith.settled_at: the instant a state settled at now restarts from, never before base.
local function settled_at(base)
  if now > base then
    return now
  end
  return base
end

-- _arith.behind: the level on the refill line at now (less while the clock is behind base).
local function behind(level, base, per_s)
  if now < base then
    return level - (base - now) / 1000000 * per_s
  end
  return level
end

-- _arith.wait: seconds until missing tokens have refilled.
local function wait(missing, per_s)
  if missing <= 0 then
    return 0
  end
  if per_s > 0 then
    return missing / per_s
  end
  return math.huge
end

-- _arith.accumulate: used + carry + amount as (correctly rounded sum, what rounding left out),
-- Knuth's TwoSum, so that fractional request sizes never drift.
local function accumulate(used, carry, amount)
  local total = used + amount
  local back = total - used
  carry = carry + ((used - (total - back)) + (amount - back))
  local rounded = total + carry
  return rounded, carry - (rounded - total)
end

-- Write key's state (base, used, carry) under the rule (capacity c, refill rate r, per_s as a
-- number); only u and l if not whole (t, c and r unchanged). Then, without an override, expire the
-- key when the bucket is full again: at base + used / per_s, never before base (a full state
-- ahead of a clock that stepped back is kept until the clock is back at base, as the in-memory
-- sweep keeps it).
local function save(key, override, base, used, carry, c, r, per_s, whole)
  if whole then
    redis.call('HSET', key, 't', base, 'u', used, 'l', carry, 'c', c, 'r', r)
  else
    redis.call('HSET', key, 'u', used, 'l', carry)
  end
  if override then
    return
  end
  local ms = nil
  if used <= 0 then
    ms = math.ceil((base - now) / 1000)
  elseif per_s > 0 then
    ms = math.ceil(((base - now) / 1000000 + used / per_s) * 1000)
  end
  if ms and ms < 1e15 then -- else: full only after ~30,000 years, or never
    redis.call('PEXPIRE', key, ms + 1)
    return
  end
  redis.call('PERSIST', key)
end

-- Forget key's bucket state: it is new again. An override stays.
local function forget(key, override)
  if override then
    redis.call('HDEL', key, 't', 'u', 'c', 'r', 'l')
  else
    redis.call('DEL', key)
  end
end

-- _arith.forgotten_at: write key's bucket full at base: forgotten once now >= base, else kept
-- (frozen until the clock is back there; save expires it then).
local function full(key, override, base, c, r, per_s)
  if now >= base then
    forget(key, override)
  else
    save(key, override, base, 0, 0, c, r, per_s, true)
  end
end

local adjusts = op == 'charge' or op == 'reserve' or op == 'refund'
if op == 'take' or op == 'peek' or adjusts then
  local amount = tonumber(ARGV[4])
  local max_wait, mask = nil, nil
  if op == 'reserve' then
    max_wait = tonumber(ARGV[2 * #KEYS + 3])
    mask = ARGV[2 * #KEYS + 4]
  elseif not adjusts then
    mask = ARGV[2 * #KEYS + 3]
  elseif skip then
    mask = skip
  end
  local buckets = {}
  local all = true
  -- First every key at the one instant now: its rule, its state settled, whether it admits.
  for i, key in ipairs(KEYS) do
    local c, r = ARGV[2], ARGV[3]
    if i > 1 then
      c, r = ARGV[2 * i + 1], ARGV[2 * i + 2]
    end
    local s, cap, rate = read(key, c, r)
    local b = {key = key, s = s, cap = cap, rate = rate, override = s[5]}
    b.capacity, b.refill = tonumber(cap), tonumber(rate)
    b.base, b.used, b.debt, b.carry = now, 0, 0, 0
    b.fresh = true -- whether t, c and r must be written (else only u and l change)
    if s[1] then
      b.base, b.used, b.carry = tonumber(s[1]), tonumber(s[2]), tonumber(s[7]) or 0
      b.fresh = false
      if not sound(s) then -- an empty bucket under the current rule, written even if denied
        b.base, b.used, b.carry, b.fresh, b.settled = now, b.capacity, 0, true, true
        if finite(tonumber(s[1])) then
          b.base = settled_at(tonumber(s[1]))
        end
      elseif tonumber(s[3]) ~= b.capacity or tonumber(s[4]) ~= b.refill then
        -- The rule changed since this state was written (a new default): settle the state
        -- under the rule it was written with, then carry the deficit over.
        b.used, b.carry = deficit(b.base, b.used, tonumber(s[4])), 0
        b.base = settled_at(b.base)
        b.fresh = true
        b.settled = true
      end
      b.debt = deficit(b.base, b.used, b.refill)
      if b.debt == 0 then -- full: restart (as MemoryStore._view)
        b.base, b.used, b.carry, b.fresh = settled_at(b.base), 0, 0, true
      end
    end
    if adjusts then -- MemoryStore's _adjusted, step by step
      b.before = behind(b.capacity - b.debt, b.base, b.refill)
      b.admits = not max_wait or (amount <= b.capacity + 1e-9
        and wait(amount - b.before, b.refill) <= math.min(max_wait, 1e300))
      if skip and skip:sub(i, i) == '1' then
        b.admits = false -- the undone call did not charge it: nothing to give back
      end
      all = all and (b.admits or (mask ~= nil and mask:sub(i, i) == '1'))
    else
      b.admits = b.debt + amount <= b.capacity + 1e-9 -- _arith.admits; 1e-9: tokenbucket.EPSILON
      all = all and (b.admits or (mask ~= nil and mask:sub(i, i) == '1'))
    end
    buckets[i] = b
  end
  -- Then all or nothing.
  local lines = {}
  for i, b in ipairs(buckets) do
    local level = b.capacity - b.debt
    if all and op == 'refund' and b.admits then
      if b.debt - amount <= 0 then -- refunded to full (as _adjusted)
        full(b.key, b.override, b.base, b.cap, b.rate, b.refill)
        level = behind(b.capacity, settled_at(b.base), b.refill)
      else -- less used since base: the debt less the amount
        local used, carry = accumulate(b.used, b.carry, -amount)
        save(b.key, b.override, b.base, used, carry, b.cap, b.rate, b.refill, b.fresh)
        level = b.before + amount
      end
    elseif all and adjusts and b.admits then
      level = b.before - amount
      if amount > MAX_DEBT - b.debt then -- saturated: MAX_DEBT short, no further (_arith)
        local base = settled_at(b.base)
        save(b.key, b.override, base, MAX_DEBT, 0, b.cap, b.rate, b.refill, true)
        level = behind(b.capacity - MAX_DEBT, base, b.refill)
      else
        local used, carry = accumulate(b.used, b.carry, amount)
        save(b.key, b.override, b.base, used, carry, b.cap, b.rate, b.refill, b.fresh)
      end
    elseif all and b.admits then -- (a shadow key that lacks the amount is not consumed)
      level = level - amount
      if op == 'take' then
        local used, carry = accumulate(b.used, b.carry, amount)
        save(b.key, b.override, b.base, used, carry, b.cap, b.rate, b.refill, b.fresh)
      end
    else
      if op ~= 'peek' and b.settled then
        -- Denied, but the settled state is written all the same (it changes no level).
        if b.used > 0 then
          save(b.key, b.override, b.base, b.used, 0, b.cap, b.rate, b.refill, true)
        else
          full(b.key, b.override, b.base, b.cap, b.rate, b.refill)
        end
      end
      if adjusts then
        level = b.before
      elseif now < b.base then
        -- _arith.behind: denied while the clock is behind the bucket's instant, nothing refills
        -- until it is back at base, so report the level the refill line has at now; the
        -- client's retry_after then includes the wait for the clock to catch up.
        level = level - (b.base - now) / 1000000 * b.refill
      end
    end
    -- One string (cheaper to send and parse than an array): the flag, then the level.
    local flag = 0
    if b.admits then
      flag = 1
    end
    if b.override then
      lines[i] = string.format('%d%.17g %s %s', flag, level, b.s[5], b.s[6])
    else
      lines[i] = string.format('%d%.17g', flag, level)
    end
  end
  local reply = table.concat(lines, '\n')
  if marker and all then -- it changed something: a call sent again gets this reply back
    redis.call('SET', marker, reply, 'PX', ONCE_MS)
  end
  return reply
end

-- The admin operations act on KEYS[1] alone.
local key = KEYS[1]
local s, cap, rate = read(key, ARGV[2], ARGV[3])
local override = s[5]

-- Settle the state under its recorded rule now, then move it to the rule (c, r): the deficit
-- carries over, unclamped.
local function rebase(c, r)
  if not s[1] then
    return -- full, and full under any rule
  end
  local base = tonumber(s[1])
  local missing = tonumber(s[3]) -- an unsound state is an empty bucket (see sound)
  if sound(s) then
    missing = deficit(base, tonumber(s[2]), tonumber(s[4]))
  elseif not finite(base) then
    base = now
  end
  if missing > 0 then
    save(key, override, settled_at(base), missing, 0, c, r, tonumber(r), true)
  else
    full(key, override, settled_at(base), c, r, tonumber(r))
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
  forget(key, override)
  return nil
end
return redis.error_reply('tokenbucket: unknown operation ' .. tostring(op))
