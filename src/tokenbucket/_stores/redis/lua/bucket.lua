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
-- changing nothing. The marker is looked up once the reply is known (the buckets read, nothing
-- written yet), so a decision costs one GET, and one SET if it changes something. '+undo' (a caller cancelled while its call was on the way) takes the call
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
local tonumber = tonumber

-- A marked call (see the header): its marker is the last key. 'undo' acts on it at once; the
-- others look it up once they know their reply (see claim below), before writing anything.
local ONCE_MS = 60000
local marker = nil
local skip = nil -- undo: a '1' per key the call did not charge (a shadow key), else '0'
if op:byte(1) == 43 then -- '+'
  op = op:sub(2)
  marker = KEYS[#KEYS]
  KEYS[#KEYS] = nil
  if op == 'undo' then
    local seen = redis.call('GET', marker)
    redis.call('SET', marker, '', 'PX', ONCE_MS)
    if not seen or seen == '' then
      return ''
    end
    op, marker, skip = 'refund', nil, ''
    for line in (seen .. '\n'):gmatch('([^\n]*)\n') do
      skip = skip .. (line:sub(1, 1) == '0' and '1' or '0')
    end
  end
end
local time = redis.call('TIME')
local now = time[1] * 1000000 + time[2] -- (Lua turns the two strings into numbers)

-- _arith.MAX_DEBT: the most tokens a bucket owes (2^53); a charge saturates there.
local MAX_DEBT = 9007199254740992

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

-- Write key's state (base, used, carry) under the rule (capacity c, refill rate r, per_s as a
-- number); only u and l if not whole (t, c and r unchanged). Then, without an override, expire the
-- key when the bucket is full again: at base + used / per_s, never before base (a full state
-- ahead of a clock that stepped back is kept until the clock is back at base, as the in-memory
-- sweep keeps it).
local function save(key, override, base, used, carry, c, r, per_s, whole)
  if carry == 0 then
    carry = '0' -- (Redis writes a number it is given more slowly than Lua passes a string)
  end
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

-- _arith.forgotten_at: write key's bucket full at base: forgotten once now >= base (the hash
-- deleted, or only its state fields if it has an override), else kept (frozen until the clock
-- is back there; save expires it then).
local function full(key, override, base, c, r, per_s)
  if now < base then
    save(key, override, base, 0, 0, c, r, per_s, true)
  elseif override then
    redis.call('HDEL', key, 't', 'u', 'c', 'r', 'l')
  else
    redis.call('DEL', key)
  end
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

local adjusts = op == 'charge' or op == 'reserve' or op == 'refund'
if op == 'take' or op == 'peek' or adjusts then
  local n = #KEYS
  local amount = tonumber(ARGV[4])
  local max_wait, mask = nil, nil
  if op == 'reserve' then
    max_wait = tonumber(ARGV[2 * n + 3])
    if max_wait then
      max_wait = math.min(max_wait, 1e300) -- a wait that never ends never fits
    end
    mask = ARGV[2 * n + 4]
  elseif not adjusts then
    mask = ARGV[2 * n + 3]
  elseif skip then
    mask = skip
  end
  local buckets = {}
  local all = true
  -- First every key at the one instant now: its rule, its state settled, whether it admits.
  -- Nothing is written yet.
  for i = 1, n do
    local key = KEYS[i]
    local cap, rate = ARGV[2], ARGV[3]
    if i > 1 then
      cap, rate = ARGV[2 * i + 1], ARGV[2 * i + 2]
    end
    local s = redis.call('HMGET', key, 't', 'u', 'c', 'r', 'C', 'R', 'l')
    local override = s[5]
    if override then -- the key's own rule decides
      cap, rate = override, s[6]
    end
    local capacity, refill = tonumber(cap), tonumber(rate)
    local base, used, carry, debt = now, 0, 0, 0
    local fresh, settled = true, false -- fresh: t, c and r must be written (else u and l only)
    if s[1] then
      base, used, carry, fresh = tonumber(s[1]), tonumber(s[2]), 0, false
      if s[7] then
        carry = tonumber(s[7])
      end
      -- x - x == 0 holds for a finite number only (not nil, NaN or +-inf). An older version
      -- wrote '-nan' after a huge charge: a state with t, u or l not finite reads as an empty
      -- bucket under the current rule (from its instant t, or now), never as a full one, and
      -- is written even if denied. The in-memory store never holds one.
      if not (base and base - base == 0 and used and used - used == 0 and carry
        and carry - carry == 0) then
        if base and base - base == 0 then
          base = settled_at(base)
        else
          base = now
        end
        used, carry, fresh, settled = capacity, 0, true, true
      elseif (s[3] ~= cap and tonumber(s[3]) ~= capacity)
        or (s[4] ~= rate and tonumber(s[4]) ~= refill) then
        -- The rule changed since this state was written (a new default): settle the state
        -- under the rule it was written with, then carry the deficit over. (The same text
        -- is the same number: only a rule written otherwise is read.)
        used, carry = deficit(base, used, tonumber(s[4])), 0
        base, fresh, settled = settled_at(base), true, true
      end
      debt = deficit(base, used, refill)
      if debt == 0 then -- full: restart (as MemoryStore._view)
        base, used, carry, fresh = settled_at(base), 0, 0, true
      end
    end
    local admits, before = nil, nil
    if adjusts then -- MemoryStore's _adjusted, step by step
      before = behind(capacity - debt, base, refill)
      admits = true
      if max_wait then -- _arith.wait: the seconds until amount - before has refilled
        local missing, wait = amount - before, math.huge
        if missing <= 0 then
          wait = 0
        elseif refill > 0 then
          wait = missing / refill
        end
        admits = amount <= capacity + 1e-9 and wait <= max_wait
      end
      if skip and skip:sub(i, i) == '1' then
        admits = false -- the undone call did not charge it: nothing to give back
      end
    else
      admits = debt + amount <= capacity + 1e-9 -- _arith.admits; 1e-9: tokenbucket.EPSILON
    end
    all = all and (admits or (mask ~= nil and mask:sub(i, i) == '1'))
    buckets[i] = {
      key = key, override = override, cap = cap, rate = rate, capacity = capacity,
      refill = refill, base = base, used = used, carry = carry, debt = debt, fresh = fresh,
      settled = settled, admits = admits, before = before, write = false,
    }
  end
  -- Then all or nothing: each key's level, and the state to write (in place, kept for later).
  local reply = ''
  for i = 1, n do
    local b = buckets[i]
    local level = b.capacity - b.debt
    if all and b.admits and op ~= 'peek' then
      b.write = save
      if op == 'refund' then
        if b.debt - amount <= 0 then -- refunded to full (as _adjusted)
          b.write = full
          level = behind(b.capacity, settled_at(b.base), b.refill)
        else -- less used since base: the debt less the amount
          b.used, b.carry = accumulate(b.used, b.carry, -amount)
          level = b.before + amount
        end
      elseif op == 'take' then -- (a shadow key that lacks the amount is not consumed)
        b.used, b.carry = accumulate(b.used, b.carry, amount)
        level = level - amount
      elseif amount > MAX_DEBT - b.debt then -- saturated: MAX_DEBT short, no further (_arith)
        b.base, b.used, b.carry, b.fresh = settled_at(b.base), MAX_DEBT, 0, true
        level = behind(b.capacity - MAX_DEBT, b.base, b.refill)
      else
        b.used, b.carry = accumulate(b.used, b.carry, amount)
        level = b.before - amount
      end
    elseif all and b.admits then -- a peek that admits
      level = level - amount
    else
      if op ~= 'peek' and b.settled then
        -- Denied, but the settled state is written all the same (it changes no level).
        if b.used > 0 then
          b.write, b.carry, b.fresh = save, 0, true
        else
          b.write = full
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
    local line
    local flag = b.admits and 1 or 0
    if b.override then
      line = string.format('%d%.17g %s %s', flag, level, b.cap, b.rate)
    else
      line = string.format('%d%.17g', flag, level)
    end
    if i > 1 then
      reply = reply .. '\n' .. line
    else
      reply = line
    end
  end
  -- A marked call sent before gets its first reply back and changes nothing. Else, if it
  -- changes something (all), its reply is kept under the marker for ONCE_MS.
  if marker then
    local seen = redis.call('GET', marker)
    if seen then
      return seen
    elseif all then
      redis.call('SET', marker, reply, 'PX', ONCE_MS)
    end
  end
  for i = 1, n do
    local b = buckets[i]
    if b.write == save then
      save(b.key, b.override, b.base, b.used, b.carry, b.cap, b.rate, b.refill, b.fresh)
    elseif b.write then
      full(b.key, b.override, b.base, b.cap, b.rate, b.refill)
    end
  end
  return reply
end

-- The admin operations act on KEYS[1] alone: its hash's fields, and its rule (its override,
-- else the default given).
local key = KEYS[1]
local s = redis.call('HMGET', key, 't', 'u', 'c', 'r', 'C', 'R', 'l')
local override = s[5]
local cap, rate = ARGV[2], ARGV[3]
if override then
  cap, rate = override, s[6]
end

-- Whether x is a finite number (not nil, NaN or +-inf).
local function finite(x)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end

-- Whether the state fields hold a state this script writes: t, u and l finite (an unsound
-- state is an empty bucket, as the decisions above read it).
local function sound()
  return finite(tonumber(s[1])) and finite(tonumber(s[2])) and finite(tonumber(s[7] or 0))
end

-- Settle the state under its recorded rule now, then move it to the rule (c, r): the deficit
-- carries over, unclamped.
local function rebase(c, r)
  if not s[1] then
    return -- full, and full under any rule
  end
  local base = tonumber(s[1])
  local missing = tonumber(s[3]) -- an unsound state is an empty bucket (see sound)
  if sound() then
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
elseif op == 'reset' then -- the bucket is new again; an override stays
  if override then
    redis.call('HDEL', key, 't', 'u', 'c', 'r', 'l')
  else
    redis.call('DEL', key)
  end
  return nil
end
return redis.error_reply('tokenbucket: unknown operation ' .. tostring(op))
