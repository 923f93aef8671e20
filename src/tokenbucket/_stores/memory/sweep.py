"""Forgetting full buckets: the incremental sweep that MemoryStore inherits.

A full bucket decides exactly as a missing one, so forgetting it changes no decision: this is
only about memory. See [`MemoryStore`][tokenbucket.MemoryStore] for the policy; the attributes
used here are MemoryStore's (declared below for the type checker, stored in its slots).

Every key has one entry in ``_core.keys`` (in order of admission), which sweeps walk a slice at a
time, compacting it in place; no sweep holds more than one lock at a time, or any lock for
longer than one deletion. ``_kinds`` says, entry for entry, whether it is a single bucket (0)
or a key's group of several limits (1, see ``layout``): a group is forgotten when all
its limits are full, and it counts as one key.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Dict, List, Optional, Tuple

from ..._core.arith import wait
from ..._core.clock import Clock
from ..._core.validate import Number

#: A rule's numbers as a state records them: capacity, refill rate, ceiling (``Rule._shape``).
Shape = Tuple[Number, Number, float]
#: One key's state in a MemoryStore: ``(base, used, carry, shape)`` (see ``_stores.memory.store``).
State = Tuple[float, float, float, Shape]

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


class Sweeping:
    """The sweep's state and steps, the base of [`MemoryStore`][tokenbucket.MemoryStore]."""

    __slots__ = (
        "_count",
        "_freed",
        "_idle_since",
        "_keys",
        "_kinds",
        "_next_full",
        "_pass_began",
        "_pass_end",
        "_read",
        "_reclaim_at",
        "_sweeping",
        "_until_sweep",
        "_write",
    )

    # MemoryStore's, read here.
    _admission: threading.Lock
    _clock: Clock
    _mask: int
    _max_keys: Optional[int]
    _shards: List[Tuple[Dict[str, State], threading.Lock]]
    _grouped: List[Tuple[Dict[str, Any], threading.Lock]]

    def _start_sweeping(self) -> None:
        """Set the sweep's initial state (from ``MemoryStore.__init__``)."""
        # Sweeping: every tracked key is in _keys exactly once. A pass walks it from _read,
        # writing the keys it keeps back at _write; keys admitted meanwhile are appended.
        self._sweeping = threading.Lock()
        self._count = 0  # tracked keys, kept (under _admission) only if there is a cap
        self._keys: List[str] = []
        self._kinds = bytearray()  # entry for entry of _keys: 0 a single bucket, 1 a group
        self._read = 0
        self._write = 0
        self._pass_end = 0  # the pass visits the keys tracked when it began: _keys[:_pass_end]
        self._until_sweep = _MIN_SWEEP_INTERVAL
        self._idle_since = math.inf  # full buckets not restarted after this go (first pass: all)
        self._pass_began = -math.inf
        self._next_full = math.inf  # when the next bucket visited in this pass is due to be full
        self._freed = False  # whether this pass forgot any bucket
        self._reclaim_at = -math.inf  # when, at the cap, a step may run again

    def _sweep_due(self) -> bool:
        """Whether a request that tracks a new key sweeps first: by count, or at the cap by time."""
        return self._until_sweep <= 0 or (self._max_keys is not None and self._reclaim_due())

    def _reclaim_due(self) -> bool:
        """At the cap: whether a step may run by time (see MemoryStore's docstring)."""
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
            keys, kinds, mask = self._keys, self._kinds, self._mask
            both = (self._shards, self._grouped)
            read, write = self._read, self._write
            if read == 0:
                self._pass_began = now
                # (an entry is appended to _keys, then to _kinds)
                self._pass_end = min(len(keys), len(kinds))
            last = self._pass_end
            idle_since = math.inf if at_cap else self._idle_since
            next_full = self._next_full
            freed = self._freed
            end = min(last, read + _SWEEP_SLICE)
            visited = end - read
            dropped = 0
            capped = self._max_keys is not None  # only then is next_full needed (at the cap)
            moving = read != write  # keys move down over the entries dropped in this pass
            for key, kind in zip(keys[read:end], kinds[read:end]):
                states, lock = both[kind][hash(key) & mask]
                state = states.get(key)
                if state is None:
                    moving = True
                    continue  # gone already (never, while each key has one entry)
                if kind:  # a group: full when all its limits are, at its latest base
                    full, base, due = group_fullness(state, now, capped)
                else:  # the inlined _arith.deficit (a call is a good part of a visit)
                    base, missing, _, shape = state
                    if now > base:
                        missing -= (now - base) * shape[1]
                    full = missing <= 0.0
                    due = now + wait(missing, shape[1]) if capped and not full else now
                if full:
                    # Not while the clock is behind base: a bucket made anew at now would
                    # refill from there, earlier than this one may (see _arith).
                    if base <= idle_since and base <= now:
                        lock.acquire()
                        unchanged = states.get(key) is state  # else it was just used: keep it
                        if unchanged:
                            del states[key]
                        lock.release()
                        if unchanged:
                            dropped += 1
                            moving = True
                            continue
                elif due < next_full:
                    next_full = due
                if moving:
                    keys[write] = key
                    kinds[write] = kind
                write += 1
            read = end
            if dropped:
                freed = True
                if self._max_keys is not None:
                    with self._admission:
                        self._count -= dropped
            pass_done = read >= last
            if pass_done:
                del keys[write:last]  # keys admitted since are moved down, not lost
                del kinds[write:last]
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


def group_fullness(state: Tuple[Any, ...], now: float, due: bool) -> Tuple[bool, float, float]:
    """Whether every limit of a group state is full, its latest base, and when all will be.

    A group state holds a key's several limits (see ``layout``). The last is ``now`` when
    every limit is full (or ``due`` is False: not asked), else when the last of them is due to
    be. (Each limit's deficit is ``_arith.deficit``, inlined: the sweep visits every key.)
    """
    full, latest, last = True, -math.inf, now
    index = 1
    for _, shape in state[0]:
        base, used = state[index], state[index + 1]
        index += 2
        if used.__class__ is tuple:  # (used, carry)
            used = used[0]
        if base > latest:
            latest = base
        if now > base:
            used -= (now - base) * shape[1]
            if used <= 0:
                continue
        elif not used:
            continue
        full = False
        if due:
            at = now + wait(used, shape[1])
            if at > last:
                last = at
    return full, latest, last
