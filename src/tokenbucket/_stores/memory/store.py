"""The in-process store: bucket states, their locking and their admission (arithmetic: _arith).

State per key is one tuple ``(base, used, carry, shape)``: at the instant ``base`` the bucket
was ``used`` tokens short of full under the rule whose ``_shape`` is ``shape`` (its capacity,
refill rate and ceiling), and ``carry`` is what rounding left out of ``used`` (``used + carry``
is the exact sum of the request sizes). ``carry`` is the int ``EXACT`` exactly when ``used``
is an int, an exact sum of integer sizes; otherwise it is a float. The level at ``now`` is
``capacity - deficit(base, used, refill_rate, now)``: the arithmetic is in ``_core.arith``, once.

Why this shape: ``base`` is a clock reading and ``used`` the correctly rounded sum of request
sizes, so each decision rounds once, in ``(now - base) * refill_rate``; nothing is accumulated
across calls, so neither polling nor a million fractional requests can drift the level. When a
bucket is found full its state restarts at ``(now, 0)``, and a full bucket is indistinguishable
from a missing one, which is what lets the store forget it. The state holds only numbers (no
rule, no lock), so the cyclic garbage collector untracks it: a million buckets add nothing to
a full collection's work (with the Rule and the Lock inside, one took 150 ms).

States live in one dict per stripe (the key's hash picks both): a dict that grows doubles at
once, and one of a million keys took 29 ms to do it; one of 1/64 of them takes well under one.
Forgetting is incremental: see ``sweep``. The calls off the hot paths are in the bases of
`MemoryStore`: a key's several limits (one group state per key, ``layout``) in ``several``,
charges and refunds in ``adjust``, overrides and shared documents in ``overrides``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Literal, Optional, Tuple, Union, overload

from ..._core.arith import (
    EXACT,
    FORGOTTEN,
    accumulate,
    behind,
    carry_of,
    deficit,
    forgotten_at,
    settled_at,
)
from ..._core.clock import Clock
from ..._core.keys import split_limit_key
from ..._core.rule import Rule
from ..store import Outcome
from .adjust import Adjusting
from .layout import GroupState
from .overrides import Overriding
from .several import Several
from .sweep import Shape as _Shape
from .sweep import State as _State

#: A bucket as a decision sees it (see ``_view``): its stored state (None if untracked), the
#: rule that decides and the state ``(base, used, carry)`` settled under that rule.
_View = Tuple[Optional[_State], Rule, float, float, float]


def _same(shape: _Shape, current: Rule) -> bool:
    """Whether a state's rule ``shape`` is that of the key's ``current`` rule (by value)."""
    return shape is current._shape or shape == current._shape


class MemoryStore(Several, Adjusting, Overriding):
    """The default [`Store`][tokenbucket.Store]: bucket state in a dict, in this process.

    Args:
        clock: zero-argument callable returning seconds; defaults to :func:`time.monotonic`.
        max_keys: hard cap on tracked keys, or None for no cap (a key of several limits
            counts once, and comes in with all its limits). Buckets that have refilled to
            full are always forgotten lazily (they are indistinguishable from new ones), so
            memory follows the number of recently active keys. The cap bounds it under a flood
            of distinct keys: while ``max_keys`` keys are tracked, a key without a bucket is
            treated as an *empty* bucket and denied. An attacker therefore cannot get a fresh
            bucket by pushing others out, and legitimate new keys get in as soon as refilled
            buckets are reclaimed. A ``charge`` on such a key is recorded all the same (that
            empty bucket in debt, tracked past the cap) so that no debt is forgotten.
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
        "_grouped",
        "_mask",
        "_max_keys",
        "_overrides",
        "_shards",
        "_shared",
        "_stripes",
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
        self._shared: Dict[str, str] = {}
        self._stripes: List[threading.Lock] = [threading.Lock() for _ in range(stripes)]
        #: Per stripe: the states of its keys, and its lock.
        self._shards: List[Tuple[Dict[str, _State], threading.Lock]] = [
            ({}, lock) for lock in self._stripes
        ]
        #: Per stripe: the group states of its keys (their several limits, see
        #: ``layout``), under the same lock.
        self._grouped: List[Tuple[Dict[str, GroupState], threading.Lock]] = [
            ({}, lock) for lock in self._stripes
        ]
        self._mask = stripes - 1
        self._max_keys = max_keys
        self._admission = threading.Lock()
        self._start_sweeping()

    def __len__(self) -> int:
        """Return how many keys are tracked (full ones not yet forgotten included).

        A key of a registry of several limits counts once, with all its limits.
        """
        return sum(len(states) for states, _ in self._shards) + sum(
            len(groups) for groups, _ in self._grouped
        )

    def __contains__(self, key: object) -> bool:
        """Return whether the bucket ``key`` is tracked (a full one not yet forgotten included).

        ``key`` is a store key: a limit's is ``limit_key(key, name)`` (see ``_registry.limits``).
        """
        if not isinstance(key, str):
            return False
        limit = split_limit_key(key)
        if limit is None:
            return key in self._shards[hash(key) & self._mask][0]
        state = self._grouped[hash(limit[0]) & self._mask][0].get(limit[0])
        return state is not None and any(name == limit[1] for name, _ in state[0])

    @property
    def max_keys(self) -> Optional[int]:
        """The cap on tracked keys (a key of several limits counts once), or None."""
        return self._max_keys

    def take(self, key: str, amount: float, default: Rule, /, _commit: bool = True) -> Outcome:
        """See [`Store.take`][tokenbucket.Store.take].

        The general path: what `_try_take` does not decide (a fractional amount, the cap, a
        changed rule...) comes here. ``_commit=False`` is `peek` (private: one body).
        """
        states, lock = self._shards[hash(key) & self._mask]
        if key not in states:
            limit = split_limit_key(key)
            if limit is not None:  # a limit of a key: in its group state
                group = [(limit[0], ((limit[1], default),))]
                return self.take_all(group, amount, (), _commit=_commit)[1][0]
            if self._sweep_due():
                self._sweep()
        lock.acquire()
        try:
            now = self._clock()
            state = states.get(key)
            used: float
            carry: float
            debt: float
            if state is None:  # as _view, without the calls
                rule, base, used, carry, debt = self._overrides.get(key, default), now, 0, EXACT, 0
            else:
                if state[3] is default._shape:
                    base, used, carry, _ = state
                    rule = default
                else:
                    state, rule, base, used, carry = self._view(states, key, default, now, _commit)
                debt = deficit(base, used, rule.refill_rate, now)
            if debt + amount > rule._ceiling:  # not admits(...), as _try_take explains
                return False, behind(rule.capacity - debt, base, now, rule.refill_rate), rule
            if _commit:
                if debt and carry is EXACT and type(amount) is int:  # ints add exactly
                    states[key] = (base, used + amount, EXACT, rule._shape)
                    return True, rule.capacity - debt - amount, rule
                if state is not None:
                    states[key] = self._charged(base, used, carry, debt, amount, rule, now)
                elif not self._admit(states, key, (now, amount, carry_of(amount), rule._shape)):
                    return False, 0.0, rule  # at the cap an untracked key is an empty bucket
            elif state is None and self._max_keys is not None and self._count >= self._max_keys:
                return False, 0.0, rule  # a peek says what take would: an empty bucket
            return True, rule.capacity - debt - amount, rule
        finally:
            lock.release()

    def peek(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.peek`][tokenbucket.Store.peek]."""
        return self.take(key, amount, default, False)

    def level(self, key: str, default: Rule, /) -> float:
        """See [`Store.level`][tokenbucket.Store.level]."""
        return self.take(key, 0, default, False)[1]

    def _view(
        self,
        states: Dict[str, _State],
        key: str,
        default: Rule,
        now: float,
        commit: bool,
        rules: Optional[Dict[str, Rule]] = None,
    ) -> _View:
        """``key``'s state and rule: ``(state, rule, base, used, carry)``. Caller holds the lock.

        State written under another rule is settled under that one first (and, if ``commit``,
        written back so settled: that changes no level). An untracked key is ``(now, 0)``.
        ``rules``: the overrides by ``key`` (a group's limits by name), else the store's.
        """
        overrides = self._overrides if rules is None else rules
        state = states.get(key)
        if state is None:
            return None, overrides.get(key, default), now, 0, EXACT
        base, used, carry, shape = state
        rule = default
        if shape is not default._shape:
            rule = overrides.get(key, default)
            if not _same(shape, rule):
                # The rule changed since this state was written: settle it under the rule it
                # was written with, then carry the deficit over. Rules compare by value (as in
                # the Lua script): an equal rule is the same rule.
                used = deficit(base, used, shape[1], now)
                carry = carry_of(used)
                if commit:  # a full one is forgotten unless ahead of the clock (see _arith)
                    at = settled_at(base, now) if used else forgotten_at(base, now)
                    states[key] = (at, used, carry, rule._shape)
                base = settled_at(base, now)
        return state, rule, base, used, carry

    @staticmethod
    def _charged(
        base: float, used: float, carry: float, debt: float, amount: float, rule: Rule, now: float
    ) -> _State:
        """The state after taking ``amount`` from ``(base, used, carry)``, ``debt`` short now.

        A bucket full now (or new) restarts at ``(settled_at(base, now), amount)``.
        """
        if not debt:
            return (settled_at(base, now), amount, carry_of(amount), rule._shape)
        if carry is EXACT and type(amount) is int:
            return (base, used + amount, EXACT, rule._shape)
        used, carry = accumulate(used, carry, amount)
        return (base, used, carry, rule._shape)

    @overload
    def _try_take(
        self, key: str, amount: int, default: Rule, want: Literal[False] = ..., /
    ) -> bool: ...

    @overload
    def _try_take(
        self, key: str, amount: int, default: Rule, want: Literal[True], /
    ) -> Outcome: ...

    def _try_take(
        self, key: str, amount: int, default: Rule, want: bool = False, /
    ) -> Union[bool, Outcome]:
        """`take` for an int ``amount``: the fast path of the registry's try_consume and consume.

        Returns whether it took, or (``want``) take's whole outcome ``(allowed, level, rule)``.
        Private to this class: the registry binds it only when its store is exactly a
        MemoryStore. The common cases, a key with a bucket under its current rule and the first
        touch of a key (no cap, no sweep due), are decided here; anything else goes to `take`.
        The property tests (tests/property/test_model.py, test_fast_paths.py) hold both to the
        exact model and to each other.

        For speed (a call costs about 7% of this path) it has an inlined copy of the
        arithmetic: ``_arith.deficit`` and ``admits``, and the restart of a full bucket as
        `_charged` does it (as do the hot path of several limits, ``several._try_take_group``,
        and the sweep's reading of a state; `take`, the other hot path, inlines only the one
        comparison of ``admits``). A full bucket restarts in its own branch: there the sums
        stay ints and the comparisons floats (mixing them costs more than the arithmetic).
        Everything else calls ``_core.arith``; `take` decides the same
        requests through it, and the property tests check both paths against the model.
        """
        states, lock = self._shards[hash(key) & self._mask]
        lock.acquire()
        try:
            state = states.get(key)
            if state is not None:
                base, used, carry, shape = state
                rule = default
                if shape is default._shape or _same(shape, rule := self._overrides.get(key, rule)):
                    # The inlined deficit(), admits() and _charged()'s restart.
                    clock = self._clock  # (a slot read and a call: cheaper than a method call)
                    now = clock()
                    if now > base:
                        debt = used - (now - base) * shape[1]
                        if debt <= 0.0:  # full: restart at now
                            if amount > shape[2]:
                                return (False, rule.capacity, rule) if want else False
                            states[key] = (now, amount, EXACT, shape)
                            return (True, rule.capacity - amount, rule) if want else True
                    else:
                        debt = used  # a clock behind base earns nothing
                    if debt + amount > shape[2]:
                        if want:
                            level = behind(rule.capacity - debt, base, now, rule.refill_rate)
                            return False, level, rule
                        return False
                    if carry is EXACT:  # an int amount adds exactly
                        states[key] = (base, used + amount, EXACT, shape)
                    else:
                        used, carry = accumulate(used, carry, amount)
                        states[key] = (base, used, carry, shape)
                    return (True, rule.capacity - debt - amount, rule) if want else True
            elif (  # the first touch, as take admits it: a full bucket, no cap, no sweep due
                self._max_keys is None
                and self._until_sweep > 0
                and key[:1] != "{"  # perhaps a limit's store key: take finds its group
            ):
                overrides = self._overrides
                rule = overrides.get(key, default) if overrides else default
                if amount > rule._ceiling:
                    return (False, rule.capacity, rule) if want else False
                clock = self._clock
                self._enter(states, key, (clock(), amount, EXACT, rule._shape), 0)
                return (True, rule.capacity - amount, rule) if want else True
        finally:
            lock.release()
        outcome = self.take(key, amount, default)
        return outcome if want else outcome[0]

    def _admit(
        self, states: Dict[str, _State], key: str, state: _State, held: bool = False
    ) -> bool:
        """Track a new key unless at the cap (``held``: room reserved). Caller holds its lock."""
        if not held and not self._reserve(1):
            return False
        self._enter(states, key, state, 0)
        return True

    def _reserve(self, count: int, over: bool = False) -> bool:
        """Count ``count`` new keys (< 0: give them back) if the cap has room, or ``over`` it.

        A key counts once, however many limits it holds.
        """
        if self._max_keys is not None:
            with self._admission:
                if count > 0 and not over and self._count + count > self._max_keys:
                    self._until_sweep -= count
                    return False
                self._count += count
        return True

    def _enter(self, states: Dict[str, Any], key: str, state: Any, kind: int) -> None:
        """Track ``key`` (counted already): a single bucket (``kind`` 0) or a group (1)."""
        self._until_sweep -= 1  # without a cap, a race loses a count: a sweep a key later
        states[key] = state
        self._keys.append(key)
        self._kinds.append(kind)

    def reset(self, key: str, /) -> None:
        """See [`Store.reset`][tokenbucket.Store.reset]."""
        limit = split_limit_key(key)
        if limit is not None:
            self._reset_limit(*limit)
            return
        states, lock = self._shards[hash(key) & self._mask]
        with lock:
            state = states.get(key)
            if state is not None:
                # New from now on, whatever the clock does (it settles to the next reading, as
                # a missing state would: the Lua script deletes it); the sweep forgets it.
                states[key] = (FORGOTTEN, 0, EXACT, state[3])
