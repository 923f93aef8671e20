"""A key's several limits in a MemoryStore: take_all, peek_all, charge_all and refund_all.

What belongs here: the calls on groups ``(key, ((name, default), ...))`` (see ``_stores.store``),
which decide or adjust every limit of every group at one clock reading, all or none, holding the
stripe locks of the groups' keys (each once, in index order); the hot path of one group
(`_try_take_group`, a registry's ``try_consume`` and ``consume``); and the one-limit calls on a
limit's store key (``limit_key(key, name)``), which come here as a group of one limit. A group's
limits live in one state under its key (``layout``); ``max_keys`` counts keys, so a key is tracked
with all its limits or not at all. What it must not know: how one bucket's state is settled or
charged (MemoryStore's ``_view`` and ``_charged``, and ``adjust._adjusted``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AbstractSet, Any, Dict, FrozenSet, List, Optional, Set, Tuple

from ..._core.arith import admits, behind, deficit
from ..._core.keys import tag
from ..._core.rule import Rule
from ..store import Groups, Limits, Mask, Outcomes
from .adjust import _adjusted, _charged_empty
from .layout import GroupState, Layout, Steps, pack, unpack
from .sweep import State, Sweeping

#: How `_admit_groups` treats new keys at the cap (see there).
_TAKE, _RESERVE, _CHARGE = "take", "reserve", "charge"

#: One group of a call as it is decided: its dict of groups, key, whether it is tracked, its
#: limits' states by name, the call's names, and the layout it had (None if untracked).
_Entry = Tuple[Dict[str, GroupState], str, bool, Dict[str, State], List[str], Optional[Layout]]
_NONE: FrozenSet[int] = frozenset()  #: No index: what most calls have of capped limits, new keys.
_NO_RULES: Dict[str, Rule] = {}  #: The overrides of a group's limits when the store has none.


class Several(Sweeping):
    """Decisions on a key's several limits, a base of [`MemoryStore`][tokenbucket.MemoryStore]."""

    __slots__ = ()

    # MemoryStore's, read here.
    _grouped: List[Tuple[Dict[str, GroupState], Any]]
    _overrides: Dict[str, Rule]

    if TYPE_CHECKING:  # MemoryStore's, called here

        def _view(
            self,
            states: Dict[str, State],
            key: str,
            default: Rule,
            now: float,
            commit: bool,
            rules: Optional[Dict[str, Rule]] = None,
        ) -> Tuple[Optional[State], Rule, float, float, float]: ...

        def _reserve(self, count: int, over: bool = False) -> bool: ...

        def _enter(self, states: Dict[str, Any], key: str, state: Any, kind: int) -> None: ...

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

    def _try_take_group(
        self, key: str, group: Tuple[Limits, Layout, Steps], amount: int, want: bool = False
    ) -> Any:
        """`take_all` of one group for an int ``amount``, or None: the hot path of several limits.

        Private to this class: the registry calls it only when its store is exactly a
        MemoryStore, with ``group`` its limits (``(name, default)`` pairs), their interned
        `layout_of` and their `steps_of` (what the loop reads of each limit, computed once per
        rule set). It decides a key whose state was written under exactly these defaults,
        and the first touch of a key (no override in the store, no sweep due, room under the
        cap); anything else answers None before changing anything, and the caller goes to
        `take_all`. Returns whether it took (``want`` False), or ``take_all``'s ``(allowed,
        outcomes)`` (``want`` True, outcomes a list; a denial then answers None). Like
        ``MemoryStore._try_take`` it inlines ``_arith.deficit`` and ``admits`` (a call costs
        more than the arithmetic); the property tests hold both paths to the exact model.
        """
        groups, lock = self._grouped[hash(key) & self._mask]
        limits, layout, steps = group
        lock.acquire()
        try:
            state = groups.get(key)
            if state is None:  # the first touch: every limit full, under its default
                if (
                    self._overrides
                    or self._until_sweep <= 0
                    or (self._max_keys is not None and not self._reserve(1))
                ):
                    return None
                for _, _, _, ceiling in steps:
                    if amount > ceiling:
                        self._reserve(-1)
                        return None
                now = self._clock()
                self._enter(groups, key, (layout,) + (now, amount) * len(layout), 1)
                if want:  # (a loop, not a comprehension: that would make amount a cell)
                    outcomes = []
                    for _, rule in limits:
                        outcomes.append((True, rule.capacity - amount, rule))
                    return True, outcomes
                return True
            if state[0] is not layout:
                return None
            clock = self._clock  # (a slot read and a call: cheaper than a method call)
            now = clock()
            new = [layout]
            if want:  # the debts consume reports
                debts: List[float] = []
            size = 1.0 if amount == 1 else float(amount)  # compared with floats (sums stay ints)
            for index, after, rate, ceiling in steps:  # inlined deficit(), admits(): as _try_take
                base, used = state[index], state[after]  # used an int (see layout)
                if now > base:
                    debt = used - (now - base) * rate
                    if debt <= 0.0:  # full: restart at now
                        if size > ceiling:
                            return None if want else False
                        new.append(now)
                        new.append(amount)
                        if want:
                            debts.append(0)
                        continue
                else:
                    debt = used  # a clock behind base earns nothing
                if debt + size > ceiling:
                    return None if want else False
                new.append(base)
                new.append(used + amount)  # an int amount adds exactly
                if want:
                    debts.append(debt)
            groups[key] = tuple(new)
            if want:
                outcomes = []
                for (_, rule), debt in zip(limits, debts):
                    outcomes.append((True, rule.capacity - debt - amount, rule))
                return True, outcomes
            return True
        finally:
            lock.release()

    def take_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /, _commit: bool = True
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.take_all`][tokenbucket.Store.take_all].

        Locks the stripes of every key, each once, in index order (so two calls never wait on
        each other in a cycle), decides every limit at one clock reading, then writes all or
        none (of those that admit, with ``shadow``). ``_commit=False`` is `peek_all`.
        """
        stripes = self._lock_groups(groups)
        try:
            now = self._clock()
            entries, views = self._open(groups, now, _commit)
            debts = [deficit(view[4], view[5], view[3].refill_rate, now) for view in views]
            passes = [admits(debt, amount, view[3]._ceiling) for debt, view in zip(debts, views)]
            # Shadow limits do not decide; each is charged only if it admits (as are all the
            # others when the request is allowed, since they all admit then).
            allowed = all(passes)
            if shadow:
                allowed = all(ok for ok, watched in zip(passes, shadow) if not watched)
            capped: AbstractSet[int] = _NONE
            admitted: AbstractSet[int] = _NONE
            if allowed and False in [entry[2] for entry in entries]:  # new keys to track
                allowed, capped, admitted = self._admit_groups(
                    entries, views, passes, shadow, _commit, _TAKE
                )
            outcomes = []
            for index, (view, passed, debt) in enumerate(zip(views, passes, debts)):
                group, key, _, rule, base, used, carry = view
                if index in capped:
                    outcomes.append((False, 0.0, rule))  # at the cap: an empty bucket
                elif allowed and passed:
                    if _commit:
                        charged = self._charged(base, used, carry, debt, amount, rule, now)
                        entries[group][3][key] = charged
                    outcomes.append((True, rule.capacity - debt - amount, rule))
                else:
                    level = behind(rule.capacity - debt, base, now, rule.refill_rate)
                    outcomes.append((passed, level, rule))
            if _commit:
                self._put_groups(entries, admitted, _NONE)
            return allowed, tuple(outcomes)
        finally:
            self._unlock(stripes)

    def peek_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.peek_all`][tokenbucket.Store.peek_all]."""
        return self.take_all(groups, amount, shadow, _commit=False)

    def charge_all(
        self, groups: Groups, amount: float, max_wait: Optional[float], shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.charge_all`][tokenbucket.Store.charge_all]."""
        return self._adjust_all(groups, amount, max_wait, shadow)

    def refund_all(self, groups: Groups, amount: float, /) -> Tuple[bool, Outcomes]:
        """See [`Store.refund_all`][tokenbucket.Store.refund_all]."""
        return self._adjust_all(groups, -amount, None)

    def _adjust_all(
        self, groups: Groups, amount: float, max_wait: Optional[float], shadow: Mask = ()
    ) -> Tuple[bool, Outcomes]:
        """`charge` (or refund) on several limits at one instant, all or none (as `take_all`).

        ``shadow`` (a reservation's mask): a flagged limit does not decide, and is charged
        only if its own reservation fits and the others are charged.
        """
        stripes = self._lock_groups(groups)
        try:
            now = self._clock()
            entries, views = self._open(groups, now, True)
            steps = [
                _adjusted(view[4], view[5], view[6], amount, view[3], now, max_wait)
                for view in views
            ]
            passes = [step[0] for step in steps]
            allowed = all(passes)
            if shadow:
                allowed = all(ok for ok, watched in zip(passes, shadow) if not watched)
            capped: AbstractSet[int] = _NONE  # limits of new keys at the cap: empty
            admitted: AbstractSet[int] = _NONE
            over: AbstractSet[int] = _NONE  # new keys a charge found at the cap: tracked past it
            if allowed and amount > 0 and False in [entry[2] for entry in entries]:
                how = _CHARGE if max_wait is None else _RESERVE
                allowed, capped, admitted = self._admit_groups(
                    entries, views, passes, shadow, True, how
                )
                if how is _CHARGE:
                    over = {views[index][0] for index in capped}
            outcomes = []
            for index, (view, (done, before, after, new)) in enumerate(zip(views, steps)):
                group, key, state, rule = view[:4]
                if group in over:  # a charge at the cap: the empty bucket, charged
                    entries[group][3][key] = _charged_empty(amount, rule, now)
                    outcomes.append((True, -amount, rule))
                elif index in capped:  # a reservation at the cap: an empty bucket
                    outcomes.append((False, 0.0, rule))
                elif allowed and done:
                    if state is not None or amount > 0:
                        entries[group][3][key] = new
                    outcomes.append((True, after, rule))
                else:
                    outcomes.append((done, before, rule))
            self._put_groups(entries, admitted, over)
            return allowed, tuple(outcomes)
        finally:
            self._unlock(stripes)

    def _open(
        self, groups: Groups, now: float, commit: bool
    ) -> Tuple[List[_Entry], List[Tuple[Any, ...]]]:
        """Every group's entry, and every limit's view, in order.

        A view is ``(group, name, state, rule, base, used, carry)``: the limit settled under its
        current rule (``_view``; a limit's override is under its store key, ``limit_key``).
        """
        grouped, mask, overrides = self._grouped, self._mask, self._overrides
        entries: List[_Entry] = []
        views = []
        for key, limits in groups:
            states = grouped[hash(key) & mask][0]
            found = states.get(key)
            limited = unpack(found)
            group = len(entries)
            names = [name for name, _ in limits]
            entries.append(
                (
                    states,
                    key,
                    found is not None,
                    limited,
                    names,
                    None if found is None else found[0],
                )
            )
            rules = _NO_RULES  # (an override of these limits needs the lock we hold)
            if overrides:
                prefix = "{" + tag(key) + "}\0"
                rules = {
                    name: overrides[prefix + name] for name in names if prefix + name in overrides
                }
            for name, default in limits:
                view = self._view(limited, name, default, now, commit, rules)
                views.append((group, name, *view))
        return entries, views

    def _admit_groups(
        self,
        entries: List[_Entry],
        views: List[Tuple[Any, ...]],
        passes: List[bool],
        shadow: Mask,
        commit: bool,
        how: str,
    ) -> Tuple[bool, Set[int], Set[int]]:
        """Track the new keys an allowed call charges: ``(allowed, capped, admitted)``.

        ``capped`` holds the limits (indices of ``views``) found empty at the cap, ``admitted``
        the new keys (indices of ``entries``) counted. The keys with an enforced limit charged
        are admitted all or none; if none, a take (``how`` ``_TAKE``) is denied and every
        limit of a new key is capped, a reservation (``_RESERVE``) is denied and those limits
        are capped, and a charge (``_CHARGE``) is allowed and those limits are capped, for the
        caller to record as charged empty buckets. Then each key charged only in shadow
        limits is admitted if there is still room, else its charged limits are capped.
        ``commit`` False (a peek): whether there would be room, tracking nothing.
        """
        enforced: Dict[int, List[int]] = {}
        watched: Dict[int, List[int]] = {}
        for index, (view, passed) in enumerate(zip(views, passes)):
            group = view[0]
            if passed and not entries[group][2]:
                kind = watched if shadow and shadow[index] else enforced
                kind.setdefault(group, []).append(index)
        for group in enforced:  # a key with an enforced limit charged comes in with it
            enforced[group] += watched.pop(group, [])
        if enforced and not self._room(len(enforced), commit):
            if how is _TAKE:
                new = {index for index, view in enumerate(views) if not entries[view[0]][2]}
                return False, new, set()
            charged = {index for indices in enforced.values() for index in indices}
            return how is _CHARGE, charged, set()
        admitted, capped = set(enforced), set()
        for group in sorted(watched):
            if self._room(1, commit, len(admitted)):
                admitted.add(group)
            else:
                capped.update(watched[group])
        return True, capped, admitted

    def _room(self, count: int, commit: bool, pending: int = 0) -> bool:
        """Count ``count`` new keys if the cap has room (a peek: whether it would)."""
        if commit:
            return self._reserve(count)
        limit = self._max_keys
        return limit is None or self._count + pending + count <= limit

    def _put_groups(
        self, entries: List[_Entry], admitted: AbstractSet[int], over: AbstractSet[int]
    ) -> None:
        """Write back every tracked group and the new ones. Caller holds the locks.

        The new ones are those ``admitted``, and those ``over`` the cap (a charge's: counted
        past it).
        """
        for index, (states, key, tracked, limited, names, layout) in enumerate(entries):
            if not limited or not (tracked or index in admitted or index in over):
                continue
            state = pack(limited, names, layout)
            if tracked:
                states[key] = state
            else:
                if index in over:
                    self._reserve(1, True)
                self._enter(states, key, state, 1)

    def _lock_groups(self, groups: Groups) -> List[int]:
        """Lock the stripes of the groups' keys; return them (the caller unlocks them).

        Checks that the keys (and each group's names) are distinct, sweeps if due, then locks
        each stripe once, in index order.
        """
        for key, limits in groups:
            if len(limits) > 1 and len({name for name, _ in limits}) != len(limits):
                names = [name for name, _ in limits]
                raise ValueError(f"the limits of key {key!r} must have distinct names: {names!r}")
        grouped, mask = self._grouped, self._mask
        if len(groups) == 1:  # the common case: one key (no set to build, one stripe)
            key = groups[0][0]
            index = hash(key) & mask
            if key not in grouped[index][0] and self._sweep_due():
                self._sweep()
            grouped[index][1].acquire()
            return [index]
        keys = [key for key, _ in groups]
        if len(set(keys)) != len(keys):
            raise ValueError(f"'groups' must name distinct keys, got {keys!r}")
        if any(key not in grouped[hash(key) & mask][0] for key in keys) and self._sweep_due():
            self._sweep()
        stripes = sorted({hash(key) & mask for key in keys})
        for index in stripes:
            grouped[index][1].acquire()
        return stripes

    def _unlock(self, stripes: List[int]) -> None:
        for index in stripes:
            self._grouped[index][1].release()
