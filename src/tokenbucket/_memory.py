"""The in-process store: every bucket's arithmetic, its locking and its forgetting.

State per key is one tuple ``(base, used, carry, shape)``: at the instant ``base`` the bucket
was ``used`` tokens short of full under the rule whose ``_shape`` is ``shape`` (its capacity,
refill rate and ceiling), and ``carry`` is what rounding left out of ``used`` (``used + carry``
is the exact sum of the request sizes). ``carry`` is the int ``_EXACT`` exactly when ``used``
is an int, an exact sum of integer sizes; otherwise it is a float. The level at ``now`` is
``capacity - max(0, used - (now - base) * refill_rate)``.

Why this shape: ``base`` is a clock reading and ``used`` the correctly rounded sum of request
sizes, so each decision rounds once, in ``(now - base) * refill_rate``; nothing is accumulated
across calls, so neither polling nor a million fractional requests can drift the level. When a
bucket is found full its state restarts at ``(now, 0)``, and a full bucket is indistinguishable
from a missing one, which is what lets the store forget it. The state holds only numbers (no
rule, no lock), so the cyclic garbage collector untracks it: a million buckets add nothing to
a full collection's work (with the Rule and the Lock inside, one took 150 ms).

States live in one dict per stripe (the key's hash picks both): a dict that grows doubles at
once, and one of a million keys took 29 ms to do it; one of 1/64 of them takes well under one.
Forgetting is incremental: every key has one entry in ``_keys`` (in order of admission), which
sweeps walk a slice at a time, compacting it in place; no sweep holds more than one lock at a
time, or any lock for longer than one deletion.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Dict, List, Optional, Tuple

from ._clock import Clock
from ._rule import Rule
from ._store import Outcome
from ._validate import Number

_Shape = Tuple[Number, Number, float]
_State = Tuple[float, float, float, _Shape]

#: A sweep step runs after this many new keys and visits at most ``_SWEEP_SLICE`` tracked keys
#: (a fraction of a millisecond). A pass visits the keys tracked when it began, so it takes
#: half as many new keys as there are keys: memory follows the keys recently active.
_MIN_SWEEP_INTERVAL = 256
_SWEEP_SLICE = 512
#: At the max_keys cap, new keys also trigger a step by time: after a step, not before 5 µs per
#: key it visited (a few percent of a core at most); after a whole pass that freed nothing, not
#: before a visited bucket is due to be full, nor within 0.1 s.
_MIN_RECLAIM_SECONDS = 0.1
_RECLAIM_SECONDS_PER_KEY = 5e-6


#: The carry of a state whose ``used`` is an int (so integer sizes add exactly, with no work).
_EXACT = 0


def _carry_of(used: float) -> float:
    """The carry of a freshly computed ``used``: exact if it is an int."""
    return _EXACT if type(used) is int else 0.0


def _accumulate(used: float, carry: float, amount: float) -> Tuple[float, float]:
    """Return ``used + carry + amount`` as (correctly rounded sum, what rounding left out).

    Knuth's TwoSum makes the addition error-free, so fractional request sizes never drift;
    integer sizes never get here (their sums are exact).
    """
    total = used + amount
    back = total - used
    carry += (used - (total - back)) + (amount - back)
    rounded = total + carry
    return rounded, carry - (rounded - total)


def _deficit(base: float, used: float, refill_rate: float, now: float) -> float:
    """Tokens missing from full at ``now`` for state ``(base, used)`` at ``refill_rate``."""
    if now > base:
        missing = used - (now - base) * refill_rate
        return missing if missing > 0 else 0
    return used  # a clock that went backwards earns nothing


def _behind(level: float, base: float, now: float, rule: Rule) -> float:
    """A denial's level while the clock reads ``now``, behind the bucket's instant ``base``.

    Nothing refills until the clock is back at ``base``, so the level reported is the one the
    refill line would have at ``now``: ``level - (base - now) * refill_rate``. Then
    ``retry_after`` (``(amount - level) / refill_rate``) includes the wait for the clock to catch
    up, and waiting exactly that long admits the request.
    """
    return level - (base - now) * rule.refill_rate


def _same(shape: _Shape, current: Rule) -> bool:
    """Whether a state's rule ``shape`` is that of the key's ``current`` rule (by value)."""
    return shape is current._shape or shape == current._shape


def _settled_at(base: float, now: float) -> float:
    """The instant a state settled at ``now`` starts from: never earlier than ``base``.

    A clock that went backwards earned nothing since ``base``, and must not earn that gap later.
    """
    return now if now > base else base


class MemoryStore:
    """The default [`Store`][tokenbucket.Store]: bucket state in a dict, in this process.

    Args:
        clock: zero-argument callable returning seconds; defaults to :func:`time.monotonic`.
        max_keys: hard cap on tracked buckets, or None for no cap. Buckets that have refilled to
            full are always forgotten lazily (they are indistinguishable from new ones), so
            memory follows the number of recently active keys. The cap bounds it under a flood
            of distinct keys: while ``max_keys`` buckets are tracked, a key without a bucket is
            treated as an *empty* bucket and denied. An attacker therefore cannot get a fresh
            bucket by pushing others out, and legitimate new keys get in as soon as refilled
            buckets are reclaimed.
        stripes: number of locks shared by the keys (a power of two), each with the dict of its
            keys' states. Each decision holds its key's stripe lock from reading the clock to
            writing the state; unrelated keys share a lock only when their hashes collide.

    Forgetting is amortised O(1), incremental and needs no thread: every 256 new keys, the next
    new key sweeps the next 512 tracked keys (in order of arrival), dropping buckets that are
    full and have not been used since the previous pass over all keys began. At the cap, a new
    key also triggers such a step by time, so that refilled buckets are reclaimed even when few
    new keys arrive: at most every 5 µs per key a step visits, and after a whole pass that freed
    nothing, not before a visited bucket is due to be full (nor within 0.1 s). A step holds one
    stripe lock at a time, and only to delete a bucket, so no decision waits for a sweep.
    """

    __slots__ = (
        "_admission",
        "_clock",
        "_count",
        "_freed",
        "_idle_since",
        "_keys",
        "_mask",
        "_max_keys",
        "_next_full",
        "_overrides",
        "_pass_began",
        "_pass_end",
        "_read",
        "_reclaim_at",
        "_shards",
        "_stripes",
        "_sweeping",
        "_until_sweep",
        "_write",
    )

    def __init__(
        self,
        *,
        clock: Optional[Clock] = None,
        max_keys: Optional[int] = None,
        stripes: int = 64,
    ) -> None:
        if clock is not None and not callable(clock):
            raise TypeError(f"'clock' must be a zero-argument callable, got {clock!r}")
        if max_keys is not None:
            if isinstance(max_keys, bool) or not isinstance(max_keys, int):
                raise TypeError(f"'max_keys' must be an int or None, got {max_keys!r}")
            if max_keys < 1:
                raise ValueError(f"'max_keys' must be >= 1, got {max_keys!r}")
        if isinstance(stripes, bool) or not isinstance(stripes, int):
            raise TypeError(f"'stripes' must be an int, got {stripes!r}")
        if stripes < 1 or stripes & (stripes - 1):
            raise ValueError(f"'stripes' must be a power of two >= 1, got {stripes!r}")
        self._clock: Clock = time.monotonic if clock is None else clock
        self._overrides: Dict[str, Rule] = {}
        self._stripes: List[threading.Lock] = [threading.Lock() for _ in range(stripes)]
        #: Per stripe: the states of its keys, and its lock.
        self._shards: List[Tuple[Dict[str, _State], threading.Lock]] = [
            ({}, lock) for lock in self._stripes
        ]
        self._mask = stripes - 1
        self._max_keys = max_keys
        self._admission = threading.Lock()
        self._count = 0  # tracked keys, kept (under _admission) only if there is a cap
        # Sweeping: every tracked key is in _keys exactly once. A pass walks it from _read,
        # writing the keys it keeps back at _write; keys admitted meanwhile are appended.
        self._sweeping = threading.Lock()
        self._keys: List[str] = []
        self._read = 0
        self._write = 0
        self._pass_end = 0  # the pass visits the keys tracked when it began: _keys[:_pass_end]
        self._until_sweep = _MIN_SWEEP_INTERVAL
        self._idle_since = (
            math.inf
        )  # full buckets not restarted after this go (the first pass: all)
        self._pass_began = -math.inf
        self._next_full = math.inf  # when the next bucket visited in this pass is due to be full
        self._freed = False  # whether this pass forgot any bucket
        self._reclaim_at = -math.inf  # when, at the cap, a step may run again

    def __len__(self) -> int:
        """Return how many buckets are tracked (full ones not yet forgotten included)."""
        return sum(len(states) for states, _ in self._shards)

    def __contains__(self, key: object) -> bool:
        """Return whether ``key`` has a bucket tracked (a full one not yet forgotten included)."""
        return isinstance(key, str) and key in self._shards[hash(key) & self._mask][0]

    @property
    def max_keys(self) -> Optional[int]:
        """The cap on tracked buckets, or None."""
        return self._max_keys

    def take(self, key: str, amount: float, default: Rule, commit: bool, /) -> Outcome:
        """See [`Store.take`][tokenbucket.Store.take]. This is the hot path."""
        states, lock = self._shards[hash(key) & self._mask]
        if key not in states and (
            self._until_sweep <= 0 or (self._max_keys is not None and self._reclaim_due())
        ):
            self._sweep()
        lock.acquire()
        try:
            now = self._clock()
            state = states.get(key)
            used: float
            debt: float
            carry: float = _EXACT
            rule = default
            if state is None:
                rule = self._overrides.get(key, default)
                base = now
                used = debt = 0
            else:
                base, used, carry, shape = state
                if shape is not default._shape:
                    rule = self._overrides.get(key, default)
                    if shape is not rule._shape and shape != rule._shape:
                        # The rule changed since this state was written: settle it under the
                        # rule it was written with, then carry the deficit over. Rules compare
                        # by value (as in the Lua script): an equal rule is the same rule.
                        used = _deficit(base, used, shape[1], now)
                        carry = _carry_of(used)
                        base = _settled_at(base, now)
                        if commit:
                            states[key] = (base, used, carry, rule._shape)
                if now > base:
                    debt = used - (now - base) * rule.refill_rate
                    if debt <= 0:
                        base = now
                        used = debt = 0
                        carry = _EXACT
                else:
                    debt = used
            if debt + amount > rule._ceiling:
                if now < base:
                    return False, _behind(rule.capacity - debt, base, now, rule), rule
                return False, rule.capacity - debt, rule
            if commit:
                if state is None:
                    carry = _EXACT if type(amount) is int else 0.0
                    if not self._admit(states, key, (base, amount, carry, rule._shape)):
                        # At the cap an untracked key counts as an empty bucket.
                        return False, 0.0, rule
                elif carry is _EXACT and type(amount) is int:
                    states[key] = (base, used + amount, _EXACT, rule._shape)
                else:
                    used, carry = _accumulate(used, carry, amount)
                    states[key] = (base, used, carry, rule._shape)
            elif state is None and self._max_keys is not None and self._count >= self._max_keys:
                return False, 0.0, rule  # a peek says what consume would: an empty bucket
            return True, rule.capacity - debt - amount, rule
        finally:
            lock.release()

    def try_take(self, key: str, amount: int, default: Rule, /) -> bool:
        """See [`Store.try_take`][tokenbucket.Store.try_take]: `take`, answering only whether.

        The common case, an integer amount on a key that has a bucket under its current rule,
        is decided here with `take`'s arithmetic and without building an outcome; anything else
        (a new key, a rule that changed) goes to `take`. The property tests hold both to the
        exact model.
        """
        states, lock = self._shards[hash(key) & self._mask]
        lock.acquire()
        try:
            state = states.get(key)
            if state is not None:
                now = self._clock()
                base, used, carry, shape = state
                if shape is default._shape or _same(shape, self._overrides.get(key, default)):
                    # As in take(), for an existing bucket under its current rule.
                    if now > base:
                        debt = used - (now - base) * shape[1]
                        if debt <= 0:
                            base = now
                            used = debt = 0
                            carry = _EXACT
                    else:
                        debt = used
                    if debt + amount > shape[2]:
                        return False
                    if carry is _EXACT:  # an int amount (see Store.try_take) adds exactly
                        states[key] = (base, used + amount, _EXACT, shape)
                    else:
                        used, carry = _accumulate(used, carry, amount)
                        states[key] = (base, used, carry, shape)
                    return True
        finally:
            lock.release()
        return self.take(key, amount, default, True)[0]

    def _admit(self, states: Dict[str, _State], key: str, state: _State) -> bool:
        """Track a new key unless the cap is reached. Caller holds the key's stripe lock."""
        if self._max_keys is None:
            # No cap to hold: the dict insert is atomic, and a count lost to a race between
            # two stripes only delays the next sweep step by one key.
            self._until_sweep -= 1
            states[key] = state
            self._keys.append(key)
            return True
        self._admission.acquire()
        try:
            self._until_sweep -= 1
            if self._count >= self._max_keys:
                return False
            self._count += 1
            states[key] = state
            self._keys.append(key)
            return True
        finally:
            self._admission.release()

    def _reclaim_due(self) -> bool:
        """At the cap: whether a step may run by time (see the class docstring)."""
        return (
            self._max_keys is not None
            and self._count >= self._max_keys
            and self._clock() >= self._reclaim_at
        )

    def _sweep(self) -> None:
        """One sweep step: visit the next keys of the pass, forget full buckets nobody has used.

        A full bucket restarted (used) since the current pass began is kept until the next pass,
        so that keys in steady use are not forgotten and re-created on every visit; at the cap
        every full bucket visited goes. Forgetting a full bucket never changes a decision, so
        this is only about memory and speed. One thread sweeps at a time; the others go on.
        """
        if not self._sweeping.acquire(False):
            return
        try:
            at_cap = self._reclaim_due()
            if self._until_sweep > 0 and not at_cap:
                return  # another thread stepped while we looked
            self._until_sweep = _MIN_SWEEP_INTERVAL
            now = self._clock()
            keys, shards, mask = self._keys, self._shards, self._mask
            read, write = self._read, self._write
            if read == 0:
                self._pass_began = now
                self._pass_end = len(keys)
            last = self._pass_end
            idle_since = math.inf if at_cap else self._idle_since
            next_full = self._next_full
            freed = self._freed
            end = min(last, read + _SWEEP_SLICE)
            visited = end - read
            dropped = 0
            while read < end:
                key = keys[read]
                read += 1
                states, lock = shards[hash(key) & mask]
                state = states.get(key)
                if state is None:
                    continue  # gone already (never, while each key has one entry)
                base, used, _, shape = state
                # _deficit(), inlined: this loop visits every tracked key.
                deficit = used - (now - base) * shape[1] if now > base else used
                if deficit <= 0:
                    if base <= idle_since:
                        lock.acquire()
                        unchanged = states.get(key) is state  # else it was just used: keep it
                        if unchanged:
                            del states[key]
                        lock.release()
                        if unchanged:
                            dropped += 1
                            continue
                elif shape[1]:
                    due = now + deficit / shape[1]
                    if due < next_full:
                        next_full = due
                keys[write] = key
                write += 1
            if dropped:
                freed = True
                if self._max_keys is not None:
                    with self._admission:
                        self._count -= dropped
            pass_done = read >= last
            if pass_done:
                del keys[write:last]  # keys admitted since are moved down, not lost
                self._read = self._write = 0
                self._idle_since = self._pass_began
                self._next_full, self._freed = math.inf, False
            else:
                self._read, self._write = read, write
                self._next_full, self._freed = next_full, freed
            if at_cap:
                pause = _RECLAIM_SECONDS_PER_KEY * visited
                if pass_done and not freed:
                    pause = max(pause, _MIN_RECLAIM_SECONDS, next_full - now)
                self._reclaim_at = now + pause
        finally:
            self._sweeping.release()

    def get_rule(self, key: str, /) -> Optional[Rule]:
        """See [`Store.get_rule`][tokenbucket.Store.get_rule]."""
        return self._overrides.get(key)

    def update_rule(
        self,
        key: str,
        default: Rule,
        capacity: Optional[float],
        refill_rate: Optional[float],
        /,
    ) -> Rule:
        """See [`Store.update_rule`][tokenbucket.Store.update_rule]."""
        with self._stripes[hash(key) & self._mask]:
            rule = self._overrides.get(key, default).replace(
                capacity=capacity, refill_rate=refill_rate
            )
            self._rebase(key, rule)
            self._overrides[key] = rule
            return rule

    def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        """See [`Store.remove_rule`][tokenbucket.Store.remove_rule]."""
        with self._stripes[hash(key) & self._mask]:
            if key not in self._overrides:
                return None
            self._rebase(key, default)
            return self._overrides.pop(key)

    def reset(self, key: str, /) -> None:
        """See [`Store.reset`][tokenbucket.Store.reset]."""
        states, lock = self._shards[hash(key) & self._mask]
        with lock:
            state = states.get(key)
            if state is not None:  # full from now on; the sweep forgets it (and its entry)
                states[key] = (state[0], 0, _EXACT, state[3])

    def _rebase(self, key: str, rule: Rule) -> None:
        """Settle ``key``'s bucket now and move it to ``rule``. Caller holds the key's lock."""
        states = self._shards[hash(key) & self._mask][0]
        state = states.get(key)
        if state is None:
            return  # full, and full under any rule
        base, used, _, shape = state
        now = self._clock()
        deficit = _deficit(base, used, shape[1], now)
        base = _settled_at(base, now)
        if deficit > 0:
            states[key] = (base, deficit, _carry_of(deficit), rule._shape)
        else:  # full: kept as such (not deleted) so that the key keeps its one entry in _keys
            states[key] = (base, 0, _EXACT, rule._shape)
