"""Several buckets at once in a MemoryStore: take_all, peek_all, charge_all and refund_all.

What belongs here: the calls that decide or adjust several buckets at one clock reading, all
or none, holding the stripe locks of all their keys (each once, in index order), and
``_admit_all``, which tracks their new keys all or none under the ``max_keys`` cap. What it
must not know: how one state is looked up, settled or charged (MemoryStore's ``_view``,
``_charged`` and ``_admit``, and ``_memory_adjust._adjusted``, declared or imported below); and
it is not the fast path of several limits, ``MemoryStore._try_take_all``, which stays with the
other hot paths in ``_memory`` and falls back to `take_all` here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Tuple

from ..._core.arith import admits, behind, deficit
from ..._core.rule import Rule
from ..store import Mask, Outcomes
from .adjust import _adjusted, _charged_empty
from .sweep import State, Sweeping


class Several(Sweeping):
    """Decisions on several buckets, a base of [`MemoryStore`][tokenbucket.MemoryStore]."""

    __slots__ = ()

    if TYPE_CHECKING:  # MemoryStore's, called here

        def _view(
            self, states: Dict[str, State], key: str, default: Rule, now: float, commit: bool
        ) -> Tuple[Optional[State], Rule, float, float, float]: ...

        def _admit(
            self, states: Dict[str, State], key: str, state: State, held: bool = False
        ) -> bool: ...

        def _track_over(self, states: Dict[str, State], key: str, state: State) -> None: ...

        @staticmethod
        def _charged(
            base: float,
            used: float,
            carry: float,
            debt: float,
            amount: float,
            rule: Rule,
            now: float,
        ) -> State: ...

    def take_all(
        self,
        buckets: Sequence[Tuple[str, Rule]],
        amount: float,
        shadow: Mask = (),
        /,
        _commit: bool = True,
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.take_all`][tokenbucket.Store.take_all].

        Locks the stripes of every key, each once, in index order (so two calls never wait on
        each other in a cycle), decides every bucket at one clock reading, then writes all or
        none (of those that admit, with ``shadow``). ``_commit=False`` is `peek_all`.
        """
        shards, mask = self._shards, self._mask
        stripes = self._lock_all(buckets)
        try:
            now = self._clock()
            views = []
            for key, default in buckets:
                states = shards[hash(key) & mask][0]
                state, rule, base, used, carry = self._view(states, key, default, now, _commit)
                debt = deficit(base, used, rule.refill_rate, now)
                views.append((states, key, (state, rule, base, used, carry, debt)))
            passes = [admits(view[5], amount, view[1]._ceiling) for _, _, view in views]
            # Shadow buckets do not decide; each is charged only if it admits (as are all the
            # others when the request is allowed, since they all admit then).
            allowed = all(passes)
            if shadow:
                allowed = all(ok for ok, watched in zip(passes, shadow) if not watched)
            # New buckets to track: the enforced ones all or none (none: a denial), then each
            # watched one if there is still room (else it is an empty bucket, and only it).
            capped: Set[int] = set()
            fresh = [
                index
                for index, ((_, _, view), passed) in enumerate(zip(views, passes))
                if view[0] is None and passed
            ]
            if allowed and fresh:
                enforced = [index for index in fresh if not (shadow and shadow[index])]
                if enforced and not self._room(views, enforced, amount, now, _commit, 0):
                    allowed = False
                    capped = {index for index, view in enumerate(views) if view[2][0] is None}
                else:
                    tracked = len(enforced)  # counted by now (a peek: would be)
                    for index in fresh:
                        if index in enforced:
                            continue
                        if self._room(views, [index], amount, now, _commit, tracked):
                            tracked += 1
                        else:
                            capped.add(index)
            outcomes = []
            for index, ((states, key, view), passed) in enumerate(zip(views, passes)):
                state, rule, base, used, carry, debt = view
                if index in capped:
                    outcomes.append((False, 0.0, rule))  # at the cap: an empty bucket
                elif allowed and passed:
                    if _commit and state is not None:
                        states[key] = self._charged(base, used, carry, debt, amount, rule, now)
                    outcomes.append((True, rule.capacity - debt - amount, rule))
                else:
                    outcomes.append(
                        (passed, behind(rule.capacity - debt, base, now, rule.refill_rate), rule)
                    )
            return allowed, tuple(outcomes)
        finally:
            for index in stripes:
                shards[index][1].release()

    def _room(
        self,
        views: List[Tuple[Dict[str, State], str, Tuple[Any, ...]]],
        indices: List[int],
        amount: float,
        now: float,
        commit: bool,
        pending: int,
    ) -> bool:
        """Track the new buckets ``indices`` of a `take_all`, charged, all or none; if it could.

        ``commit`` False (a peek): whether it could, tracking nothing, after the ``pending``
        new buckets the peek has already counted.
        """
        if not commit:
            limit = self._max_keys
            return limit is None or self._count + pending + len(indices) <= limit
        entries = []
        for index in indices:
            states, key, (_, rule, base, used, carry, debt) = views[index]
            entries.append((states, key, self._charged(base, used, carry, debt, amount, rule, now)))
        return self._admit_all(entries)

    def peek_all(
        self, buckets: Sequence[Tuple[str, Rule]], amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.peek_all`][tokenbucket.Store.peek_all]."""
        return self.take_all(buckets, amount, shadow, _commit=False)

    def charge_all(
        self,
        buckets: Sequence[Tuple[str, Rule]],
        amount: float,
        max_wait: Optional[float],
        shadow: Mask = (),
        /,
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.charge_all`][tokenbucket.Store.charge_all]."""
        return self._adjust_all(buckets, amount, max_wait, shadow)

    def refund_all(
        self, buckets: Sequence[Tuple[str, Rule]], amount: float, /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.refund_all`][tokenbucket.Store.refund_all]."""
        return self._adjust_all(buckets, -amount, None)

    def _adjust_all(
        self,
        buckets: Sequence[Tuple[str, Rule]],
        amount: float,
        max_wait: Optional[float],
        shadow: Mask = (),
    ) -> Tuple[bool, Outcomes]:
        """`charge` (or refund) on several buckets at one instant, all or none (as `take_all`).

        ``shadow`` (a reservation's mask): a flagged bucket does not decide, and is charged
        only if its own reservation fits and the others are charged.
        """
        shards, mask = self._shards, self._mask
        stripes = self._lock_all(buckets)
        try:
            now = self._clock()
            views = []
            for key, default in buckets:
                states = shards[hash(key) & mask][0]
                state, rule, base, used, carry = self._view(states, key, default, now, True)
                done, before, after, new = _adjusted(base, used, carry, amount, rule, now, max_wait)
                views.append((states, key, state, rule, done, before, after, new))
            watched = shadow or (False,) * len(views)
            allowed = all(view[4] for view, flag in zip(views, watched) if not flag)
            capped: Set[int] = set()  # new buckets a reservation has no room for: not charged
            empty: List[int] = []  # new buckets a charge found at the cap: empty, charged
            if allowed and amount > 0:
                fresh = [i for i, view in enumerate(views) if view[2] is None and view[4]]
                if max_wait is None:  # a charge is recorded, at the cap too (see `charge`)
                    if self._track_all([views[i] for i in fresh], amount, now):
                        empty = fresh
                else:  # a reservation: the enforced all or none, then each watched if room
                    enforced = [i for i in fresh if not watched[i]]
                    if enforced and not self._admit_all([self._entry(views[i]) for i in enforced]):
                        allowed = False
                        capped = set(enforced)
                    else:
                        capped = {
                            i
                            for i in fresh
                            if watched[i] and not self._admit_all([self._entry(views[i])])
                        }
            outcomes = []
            for index, (states, key, state, rule, done, before, after, new) in enumerate(views):
                if index in capped:  # at the cap: an empty bucket
                    outcomes.append((False, 0.0, rule))
                elif index in empty:
                    outcomes.append((True, -amount, rule))
                elif allowed and done:
                    if state is not None:
                        states[key] = new
                    outcomes.append((True, after, rule))
                else:
                    outcomes.append((done, before, rule))
            return allowed, tuple(outcomes)
        finally:
            for index in stripes:
                shards[index][1].release()

    @staticmethod
    def _entry(view: Tuple[Any, ...]) -> Tuple[Dict[str, State], str, State]:
        """The ``(states, key, new state)`` of an `_adjust_all` view, to track it."""
        return view[0], view[1], view[7]

    def _track_all(self, views: List[Tuple[Any, ...]], amount: float, now: float) -> bool:
        """Track the new buckets of a charge (``_adjust_all`` views), all of them.

        Under the ``max_keys`` cap as any new buckets; at the cap (returns True) each is what
        the cap says an untracked key is, an empty bucket, charged, tracked past the cap.
        """
        if not views or self._admit_all([self._entry(view) for view in views]):
            return False
        for states, key, _, rule, *_ in views:
            self._track_over(states, key, _charged_empty(amount, rule, now))
        return True

    def _lock_all(self, buckets: Sequence[Tuple[str, Rule]]) -> List[int]:
        """Check the keys are distinct, sweep if due, then lock their stripes; return them.

        Each stripe is locked once, in index order, so that two calls never wait on each other
        in a cycle. The caller releases the returned stripes.
        """
        keys = [key for key, _ in buckets]
        if len(set(keys)) != len(keys):
            raise ValueError(f"'buckets' must name distinct keys, got {keys!r}")
        shards, mask = self._shards, self._mask
        if any(key not in shards[hash(key) & mask][0] for key in keys) and (
            self._until_sweep <= 0 or (self._max_keys is not None and self._reclaim_due())
        ):
            self._sweep()
        stripes = sorted({hash(key) & mask for key in keys})
        for index in stripes:
            shards[index][1].acquire()
        return stripes

    def _admit_all(self, entries: List[Tuple[Dict[str, State], str, State]]) -> bool:
        """Track new keys, all or none (none if the cap would be passed). Caller holds the locks."""
        if self._max_keys is not None:
            with self._admission:
                if self._count + len(entries) > self._max_keys:
                    self._until_sweep -= len(entries)
                    return False
                self._count += len(entries)
        for entry in entries:
            self._admit(*entry, True)
        return True
