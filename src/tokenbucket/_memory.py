"""The in-process store: every bucket's arithmetic, its locking and its forgetting.

State per key is one tuple ``(base, used, rule, lock, carry)``: at the instant ``base`` the
bucket was ``used`` tokens short of full under ``rule``; ``lock`` is the stripe lock that guards
the key, and ``carry`` what rounding left out of ``used`` (``used + carry`` is the exact sum of
the request sizes). ``carry`` is the int ``_EXACT`` exactly when ``used`` is an int, an exact sum
of integer sizes; otherwise it is a float. The level at ``now`` is
``capacity - max(0, used - (now - base) * refill_rate)``.

Why this shape: ``base`` is a clock reading and ``used`` the correctly rounded sum of request
sizes, so each decision rounds once, in ``(now - base) * refill_rate``; nothing is accumulated
across calls, so neither polling nor a million fractional requests can drift the level. When a
bucket is found full its state restarts at ``(now, 0)``, and a full bucket is indistinguishable
from a missing one, which is what lets the store forget it.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Dict, List, Optional, Tuple

from ._clock import Clock
from ._rule import Rule
from ._store import Outcome

_State = Tuple[float, float, Rule, "threading.Lock", float]

#: Sweeps run after this many new keys at the least, so that a store whose buckets are all full
#: again by their next request (and so are forgotten and re-created every time) does not pay a
#: sweep, which takes every stripe lock, every few requests.
_MIN_SWEEP_INTERVAL = 1024
#: At the max_keys cap, refilled buckets are also reclaimed by time: at most every
#: max(0.1 s, 5 µs per tracked key), which bounds the sweeping to a few percent of a core.
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


def _deficit(base: float, used: float, rule: Rule, now: float) -> float:
    """Tokens missing from full at ``now`` for state ``(base, used)`` under ``rule``."""
    if now > base:
        missing = used - (now - base) * rule.refill_rate
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


def _same(rule: Rule, current: Rule) -> bool:
    """Whether a state's ``rule`` is the key's ``current`` rule: the same object or equal."""
    return rule is current or rule == current


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
        stripes: number of locks shared by the keys (a power of two). Each decision holds its
            key's stripe lock from reading the clock to writing the state; unrelated keys share a
            lock only when their hashes collide.

    Forgetting is amortised O(1) and needs no thread: after every ``max(1024, n // 2)`` new keys
    (``n`` = keys tracked after the last sweep), the next new key sweeps the whole dict once,
    dropping buckets that are full and have not been used since the previous sweep. At the
    cap, a new key also triggers a sweep once a tracked bucket is due to be full (at most every
    ``max(0.1 s, 5 µs * max_keys)``), so refilled buckets are reclaimed by time even when few
    new keys arrive.
    """

    __slots__ = (
        "_admission",
        "_clock",
        "_mask",
        "_max_keys",
        "_overrides",
        "_reclaim_at",
        "_states",
        "_stripes",
        "_swept_at",
        "_until_sweep",
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
        self._states: Dict[str, _State] = {}
        self._overrides: Dict[str, Rule] = {}
        self._stripes: List[threading.Lock] = [threading.Lock() for _ in range(stripes)]
        self._mask = stripes - 1
        self._max_keys = max_keys
        self._admission = threading.Lock()
        self._until_sweep = _MIN_SWEEP_INTERVAL
        self._reclaim_at = -math.inf  # when, at the cap, a sweep may run again
        self._swept_at = math.inf  # when the last sweep ran (the first forgets every full one)

    def __len__(self) -> int:
        """Return how many buckets are tracked (full ones not yet forgotten included)."""
        return len(self._states)

    @property
    def max_keys(self) -> Optional[int]:
        """The cap on tracked buckets, or None."""
        return self._max_keys

    def take(self, key: str, amount: float, default: Rule, commit: bool, /) -> Outcome:
        """See [`Store.take`][tokenbucket.Store.take]. This is the hot path."""
        states = self._states
        state = states.get(key)
        if state is None:
            if self._until_sweep <= 0 or (self._max_keys is not None and self._reclaim_due()):
                self._sweep()
            lock = self._stripes[hash(key) & self._mask]
        else:
            # Every state of a key carries the same stripe lock, so this is the key's lock
            # even if the state changes before we hold it; we read the state again below.
            lock = state[3]
        lock.acquire()
        try:
            now = self._clock()
            state = states.get(key)
            used: float
            debt: float
            carry: float = _EXACT
            if state is None:
                rule = self._overrides.get(key, default)
                base = now
                used = debt = 0
            else:
                base, used, rule, _, carry = state
                if rule is not default:
                    current = self._overrides.get(key, default)
                    if current is not rule and current != rule:
                        # The rule changed since this state was written: settle it under the
                        # rule it was written with, then carry the deficit over. Rules compare
                        # by value (as in the Lua script): an equal rule is the same rule.
                        used, rule = _deficit(base, used, rule, now), current
                        carry = _carry_of(used)
                        base = _settled_at(base, now)
                        if commit:
                            states[key] = (base, used, rule, lock, carry)
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
                    if not self._admit(key, (base, amount, rule, lock, carry)):
                        # At the cap an untracked key counts as an empty bucket.
                        return False, 0.0, rule
                elif carry is _EXACT and type(amount) is int:
                    states[key] = (base, used + amount, rule, lock, _EXACT)
                else:
                    used, carry = _accumulate(used, carry, amount)
                    states[key] = (base, used, rule, lock, carry)
            elif state is None and self._max_keys is not None and len(states) >= self._max_keys:
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
        state = self._states.get(key)
        if state is None:
            return self.take(key, amount, default, True)[0]
        lock = state[3]
        lock.acquire()
        try:
            now = self._clock()
            states = self._states
            state = states.get(key)
            if state is not None:
                base, used, rule, _, carry = state
                if rule is default or _same(rule, self._overrides.get(key, default)):
                    # As in take(), for an existing bucket under its current rule.
                    if now > base:
                        debt = used - (now - base) * rule.refill_rate
                        if debt <= 0:
                            base = now
                            used = debt = 0
                            carry = _EXACT
                    else:
                        debt = used
                    if debt + amount > rule._ceiling:
                        return False
                    if carry is _EXACT:  # an int amount (see Store.try_take) adds exactly
                        states[key] = (base, used + amount, rule, lock, _EXACT)
                    else:
                        used, carry = _accumulate(used, carry, amount)
                        states[key] = (base, used, rule, lock, carry)
                    return True
        finally:
            lock.release()
        return self.take(key, amount, default, True)[0]

    def _admit(self, key: str, state: _State) -> bool:
        """Track a new key unless the cap is reached. Caller holds the key's stripe lock."""
        if self._max_keys is None:
            # No cap to hold: the dict insert is atomic, and a count lost to a race between
            # two stripes only delays the next sweep by one key.
            self._until_sweep -= 1
            self._states[key] = state
            return True
        self._admission.acquire()
        try:
            self._until_sweep -= 1
            if len(self._states) >= self._max_keys:
                return False
            self._states[key] = state
            return True
        finally:
            self._admission.release()

    def _reclaim_due(self) -> bool:
        """At the cap: whether a bucket has refilled since the last sweep (a time trigger)."""
        return (
            self._max_keys is not None
            and len(self._states) >= self._max_keys
            and self._clock() >= self._reclaim_at
        )

    def _sweep(self) -> None:
        """Forget the full buckets nobody has used since the last sweep. Takes every stripe lock.

        It runs after a number of new keys (amortised O(1) per key) and, while the store is at
        its cap, also once a tracked bucket is due to be full, so that new keys get in when the
        buckets of a flood have refilled, even if few new keys arrive. A full bucket used since
        the last sweep (its state was restarted then) is kept until the next one, so that keys
        in steady use are not forgotten and re-created on every visit; at the cap every full
        bucket goes. Forgetting a full bucket never changes a decision, so this is only about
        memory and speed.
        """
        for lock in self._stripes:
            lock.acquire()
        try:
            at_cap = self._reclaim_due()
            if self._until_sweep > 0 and not at_cap:
                return  # another thread swept while we waited
            now = self._clock()
            idle_since = math.inf if at_cap else self._swept_at
            states = self._states
            full = []
            soonest = math.inf  # when the next tracked bucket will be full
            for key, (base, used, rule, _, _) in states.items():
                # _deficit(), inlined: this loop visits every tracked key.
                deficit = used - (now - base) * rule.refill_rate if now > base else used
                if deficit <= 0:
                    if base <= idle_since:
                        full.append(key)
                elif rule.refill_rate:
                    soonest = min(soonest, deficit / rule.refill_rate)
            for key in full:
                del states[key]
            self._swept_at = now
            self._until_sweep = max(_MIN_SWEEP_INTERVAL, len(states) // 2)
            pause = max(_MIN_RECLAIM_SECONDS, _RECLAIM_SECONDS_PER_KEY * len(states))
            self._reclaim_at = now + max(soonest, pause)
        finally:
            for lock in reversed(self._stripes):
                lock.release()

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
        with self._stripes[hash(key) & self._mask]:
            self._states.pop(key, None)

    def _rebase(self, key: str, rule: Rule) -> None:
        """Settle ``key``'s bucket now and move it to ``rule``. Caller holds the key's lock."""
        state = self._states.get(key)
        if state is None:
            return  # full, and full under any rule
        base, used, old, lock, _ = state
        now = self._clock()
        deficit = _deficit(base, used, old, now)
        if deficit > 0:
            self._states[key] = (_settled_at(base, now), deficit, rule, lock, _carry_of(deficit))
        else:
            del self._states[key]
