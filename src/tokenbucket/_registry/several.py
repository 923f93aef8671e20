"""A registry of several named limits: one ``take_all`` of the store per decision.

`BucketRegistry` becomes a `SeveralLimits` when its default maps two or more names to rules,
so that the registry of one rule keeps its hot path as it is. The store keys, the key forms a
request may be charged to and the combined decision are in ``_registry.limits``.
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple, Union

from .._core.decision import Decision, clamp
from .._core.rule import Rule
from .._core.validate import check_amount, check_key
from .._stores.memory.layout import Layout, Steps, layout_of, steps_of
from .._stores.memory.store import MemoryStore
from .._stores.store import AsyncStore, Groups, Limits, Outcomes, Store
from .admission import Admission
from .lifecycle import delay_all
from .limits import (
    Keys,
    after_all,
    check_limits,
    combine,
    groups_of,
    limit_key,
    mask_of,
    pick,
    reorder,
)
from .registry import _ONE, BucketRegistry, _check_update
from .shadow import check_shadow, decide_watched, switched


class SeveralLimits(BucketRegistry):
    """A [`BucketRegistry`][tokenbucket.BucketRegistry] whose default names several limits.

    Built by ``BucketRegistry({"burst": Rule(10, 1.0), "daily": Rule.per(1000, 86400)})``.
    Every decision is one atomic ``take_all`` over the request's buckets (one per limit): all
    are charged, or (a denial) none. A request is charged to one key (``"alice"``: every limit
    counts that key) or to a key per limit (``{"user": "alice", "org": "acme"}``).

    ``shadow`` names limits that are watched, not enforced (see [Shadow
    limits](../several-limits.md#shadow-limits)); `set_shadow` switches one at runtime.
    """

    __slots__ = ("_group", "_limits", "_memory", "_names", "_take_all", "_watch")

    def __init__(
        self,
        default: Union[Rule, Mapping[str, Rule]],
        *,
        store: Union[Store, AsyncStore, None] = None,
        clock: Any = None,
        max_keys: Optional[int] = None,
        shadow: Iterable[str] = (),
    ) -> None:
        super().__init__(default, store=store, clock=clock, max_keys=max_keys)
        #: The limits by name, replaced as a whole (never changed in place) by update_default.
        self._limits: Dict[str, Rule] = check_limits(default)
        self._names = tuple(self._limits)
        #: The store's group of one key's limits, its in-memory layout and the layout's steps
        #: (one attribute, so that a decision reads the three of one default; see `_apply`).
        self._group: Tuple[Limits, Layout, Steps] = _group_of(self._limits)
        #: The limits in shadow, replaced as a whole by set_shadow.
        self._watch = check_shadow(self._names, shadow)
        # The in-memory store's fast path when the store is exactly a MemoryStore (and no
        # limit is in shadow: then decisions go through the store's take_all with a mask).
        self._memory = self._store if type(self._store) is MemoryStore else None
        self._take_all = None if self._watch.mask else self._memory

    @property
    def shadow(self) -> FrozenSet[str]:
        """The names of the limits in shadow: evaluated and reported, never refusing."""
        return self._watch.names

    def set_shadow(self, limit: str, shadow: bool) -> FrozenSet[str]:
        """Put ``limit`` in shadow (``shadow=True``) or enforce it; return the limits in shadow.

        Takes effect from the next decision. The bucket keeps its level either way (a limit
        in shadow was charged for every admitted request it would have admitted).
        """
        with self._lock:
            self._watch = watch = switched(self._names, self._watch, limit, shadow)
            self._take_all = None if watch.mask else self._memory
            return watch.names

    @property
    def default(self) -> Rule:
        """Not one rule with several limits: raises ValueError (see `defaults`)."""
        raise ValueError(
            f"this registry has several limits {list(self._limits)!r}: read 'defaults'"
        )

    @property
    def defaults(self) -> Dict[str, Rule]:
        """Every limit's default rule by name, in order."""
        return dict(self._limits)

    @property
    def limits(self) -> Tuple[str, ...]:
        """The names of the limits, in order."""
        return tuple(self._limits)

    def try_consume(self, key: Keys, amount: float = 1) -> bool:
        """Take ``amount`` from every limit's bucket if all have it; return whether it did."""
        if self._sharing is not None:
            self._refresh()
        fast = self._take_all
        if (
            fast is not None
            and type(key) is str
            and (amount is _ONE or (type(amount) is int and 0 < amount <= 2**53))
        ):
            taken = fast._try_take_group(key, self._group, amount)  # type: ignore[arg-type]
            if taken is not None:
                return taken  # type: ignore[no-any-return]
        return self._take(key, amount)[0]

    def consume(self, key: Keys, amount: float = 1) -> Decision:
        """Like `try_consume`, but return the combined [`Decision`][tokenbucket.Decision]."""
        if self._sharing is not None:
            self._refresh()
        fast = self._take_all
        if (
            fast is not None
            and type(key) is str
            and (amount is _ONE or (type(amount) is int and 0 < amount <= 2**53))
        ):
            taken = fast._try_take_group(key, self._group, amount, True)  # type: ignore[arg-type]
            if taken is not None:
                return combine(self._names, taken[0], taken[1], amount)
        amount = check_amount(amount)
        mask = self._watch.mask
        allowed, outcomes = self._take(key, amount)
        if mask:
            return decide_watched(self._names, mask, allowed, outcomes, amount)
        return combine(self._names, allowed, outcomes, amount)

    def _groups(self, key: Keys) -> Tuple[Groups, Optional[List[int]]]:
        """The store's groups for a request charged to ``key`` (see `groups_of`)."""
        return groups_of(key, self._limits, self._group[0])

    def _take(self, key: Keys, amount: float) -> Tuple[bool, Outcomes]:
        """One ``take_all`` over the request's limits (``amount`` checked), in their order."""
        groups, order = self._groups(key)
        mask = self._watch.mask
        if mask:
            taken = self._sync.take_all(groups, check_amount(amount), mask_of(mask, order))
        else:
            taken = self._sync.take_all(groups, check_amount(amount))
        return taken[0], reorder(taken[1], order)

    def peek(self, key: Keys, amount: float = 1) -> Decision:
        """Return the decision ``consume(key, amount)`` would make now, taking nothing."""
        if self._sharing is not None:
            self._refresh()
        amount = check_amount(amount)
        groups, order = self._groups(key)
        mask = self._watch.mask
        if mask:
            allowed, outcomes = self._sync.peek_all(groups, amount, mask_of(mask, order))
            return decide_watched(self._names, mask, allowed, reorder(outcomes, order), amount)
        allowed, outcomes = self._sync.peek_all(groups, amount)
        return combine(self._names, allowed, reorder(outcomes, order), amount)

    def charge(self, key: Keys, amount: float) -> Decision:
        """`BucketRegistry.charge` on every limit at once (each may go into debt)."""
        if self._sharing is not None:
            self._refresh()
        groups, order = self._groups(key)
        taken = self._sync.charge_all(groups, check_amount(amount), None)
        return after_all(self._names, reorder(taken[1], order))

    def refund(self, key: Keys, amount: float) -> Decision:
        """`BucketRegistry.refund` on every limit at once (each never above full)."""
        if self._sharing is not None:
            self._refresh()
        groups, order = self._groups(key)
        taken = self._sync.refund_all(groups, check_amount(amount))
        return after_all(self._names, reorder(taken[1], order))

    def _reserved(self, key: Keys, amount: float, max_wait: float) -> Tuple[float, Admission]:
        """Reserve ``amount`` in every limit at once if every wait fits; the longest wait.

        A limit in shadow neither refuses nor lengthens the wait: it is charged only if its own
        wait fits too (see `delay_all`), and the `Admission` says which limits were charged.
        """
        if self._sharing is not None:
            self._refresh()
        groups, order = self._groups(key)
        mask = self._watch.mask
        if mask:
            taken = self._sync.charge_all(groups, amount, max_wait, mask_of(mask, order))
        else:
            taken = self._sync.charge_all(groups, amount, max_wait)
        return delay_all(self._names, (taken[0], reorder(taken[1], order)), amount, key, mask)

    def _adjust(self, admission: Admission, difference: float) -> Decision:
        """Charge (``difference`` > 0) or refund the buckets ``admission`` charged, only those."""
        if self._sharing is not None:
            self._refresh()
        names, groups, order = self._charged(admission)
        if difference > 0:
            taken = self._sync.charge_all(groups, check_amount(difference), None)
        else:
            taken = self._sync.refund_all(groups, check_amount(-difference))
        return after_all(names, reorder(taken[1], order))

    async def _aadjust(self, admission: Admission, difference: float) -> Decision:
        """Awaitable `_adjust`."""
        if self._sharing is not None:
            await self._arefresh()
        names, groups, order = self._charged(admission)
        if difference > 0:
            taken = await self._async.charge_all(groups, check_amount(difference), None)
        else:
            taken = await self._async.refund_all(groups, check_amount(-difference))
        return after_all(names, reorder(taken[1], order))

    def _charged(self, admission: Admission) -> Tuple[List[str], Groups, Optional[List[int]]]:
        """The names of the limits ``admission`` charged, and their groups (`groups_of`)."""
        charged = admission.charged
        names = [name for name in self._names if name in charged]
        limits = {name: self._limits[name] for name in names}
        key = admission.key
        if type(key) is not str:
            key = {name: key[name] for name in names}  # type: ignore[index]
        return names, *groups_of(key, limits, tuple(limits.items()))

    def _one(self, key: str, limit: Optional[str]) -> Tuple[str, Rule]:
        """The store key and default rule of one named limit of ``key``."""
        name = pick(tuple(self._limits), limit)
        return limit_key(check_key(key), name), self._limits[name]

    def tokens(self, key: str, limit: Optional[str] = None) -> float:
        """Return the level of ``key``'s bucket of ``limit`` now."""
        if self._sharing is not None:
            self._refresh()
        return clamp(self._sync.level(*self._one(key, limit)))

    def rule_for(self, key: str, limit: Optional[str] = None) -> Rule:
        """Return the rule of ``limit`` for ``key``: its override, else the limit's default."""
        if self._sharing is not None:
            self._refresh()
        bucket, default = self._one(key, limit)
        override = self._sync.get_rule(bucket)
        return default if override is None else override

    def update_rule(
        self,
        key: str,
        *,
        capacity: Optional[float] = None,
        refill_rate: Optional[float] = None,
        limit: Optional[str] = None,
    ) -> Rule:
        """Give ``key`` its own rule for ``limit`` (settling that bucket first); return it."""
        key, capacity, refill_rate = _check_update(key, capacity, refill_rate)
        bucket, default = self._one(key, limit)
        return self._sync.update_rule(bucket, default, capacity, refill_rate)

    def remove_rule(self, key: str, limit: Optional[str] = None) -> Optional[Rule]:
        """Drop ``key``'s override of ``limit`` (settling that bucket first); return it."""
        return self._sync.remove_rule(*self._one(key, limit))

    def reset(self, key: str, limit: Optional[str] = None) -> None:
        """Refill ``key``'s bucket of ``limit`` (of every limit if omitted) to full."""
        names = self._limits if limit is None else (pick(tuple(self._limits), limit),)
        for name in names:
            self._sync.reset(limit_key(check_key(key), name))

    def _apply(self, limits: Dict[str, Rule]) -> None:
        """Make ``limits`` the defaults (replaced as a whole, never changed in place)."""
        self._limits, self._group = limits, _group_of(limits)

    async def atry_consume(self, key: Keys, amount: float = 1) -> bool:
        """Awaitable `try_consume`."""
        if self._sharing is not None:
            await self._arefresh()
        amount = check_amount(amount)
        groups, order = self._groups(key)
        mask = self._watch.mask
        if mask:
            return (await self._async.take_all(groups, amount, mask_of(mask, order)))[0]
        return (await self._async.take_all(groups, amount))[0]

    async def aconsume(self, key: Keys, amount: float = 1) -> Decision:
        """Awaitable `consume`."""
        return await self._adecide(key, amount, take=True)

    async def apeek(self, key: Keys, amount: float = 1) -> Decision:
        """Awaitable `peek`."""
        return await self._adecide(key, amount, take=False)

    async def _adecide(self, key: Keys, amount: float, *, take: bool) -> Decision:
        """One awaited ``take_all`` (or ``peek_all``) over the request's buckets, decided."""
        if self._sharing is not None:
            await self._arefresh()
        amount = check_amount(amount)
        groups, order = self._groups(key)
        call = self._async.take_all if take else self._async.peek_all
        mask = self._watch.mask
        if mask:
            allowed, outcomes = await call(groups, amount, mask_of(mask, order))
            return decide_watched(self._names, mask, allowed, reorder(outcomes, order), amount)
        allowed, outcomes = await call(groups, amount)
        return combine(self._names, allowed, reorder(outcomes, order), amount)

    async def acharge(self, key: Keys, amount: float) -> Decision:
        """Awaitable `charge`."""
        if self._sharing is not None:
            await self._arefresh()
        groups, order = self._groups(key)
        taken = await self._async.charge_all(groups, check_amount(amount), None)
        return after_all(self._names, reorder(taken[1], order))

    async def arefund(self, key: Keys, amount: float) -> Decision:
        """Awaitable `refund`."""
        if self._sharing is not None:
            await self._arefresh()
        groups, order = self._groups(key)
        taken = await self._async.refund_all(groups, check_amount(amount))
        return after_all(self._names, reorder(taken[1], order))

    async def _areserved(
        self, key: Keys, amount: float, max_wait: float
    ) -> Tuple[float, Admission]:
        """Awaitable `_reserved`."""
        if self._sharing is not None:
            await self._arefresh()
        groups, order = self._groups(key)
        mask = self._watch.mask
        if mask:
            taken = await self._async.charge_all(groups, amount, max_wait, mask_of(mask, order))
        else:
            taken = await self._async.charge_all(groups, amount, max_wait)
        return delay_all(self._names, (taken[0], reorder(taken[1], order)), amount, key, mask)

    async def atokens(self, key: str, limit: Optional[str] = None) -> float:
        """Awaitable `tokens`."""
        if self._sharing is not None:
            await self._arefresh()
        return clamp(await self._async.level(*self._one(key, limit)))

    async def arule_for(self, key: str, limit: Optional[str] = None) -> Rule:
        """Awaitable `rule_for`."""
        if self._sharing is not None:
            await self._arefresh()
        bucket, default = self._one(key, limit)
        override = await self._async.get_rule(bucket)
        return default if override is None else override

    async def aupdate_rule(
        self,
        key: str,
        *,
        capacity: Optional[float] = None,
        refill_rate: Optional[float] = None,
        limit: Optional[str] = None,
    ) -> Rule:
        """Awaitable `update_rule`."""
        key, capacity, refill_rate = _check_update(key, capacity, refill_rate)
        bucket, default = self._one(key, limit)
        return await self._async.update_rule(bucket, default, capacity, refill_rate)

    async def aremove_rule(self, key: str, limit: Optional[str] = None) -> Optional[Rule]:
        """Awaitable `remove_rule`."""
        return await self._async.remove_rule(*self._one(key, limit))

    async def areset(self, key: str, limit: Optional[str] = None) -> None:
        """Awaitable `reset`."""
        names = self._limits if limit is None else (pick(tuple(self._limits), limit),)
        for name in names:
            await self._async.reset(limit_key(check_key(key), name))

    def __repr__(self) -> str:
        shadow = f", shadow={set(self._watch.names)!r}" if self._watch.names else ""
        return f"BucketRegistry({self._limits!r}, store={self._store!r}{shadow})"


def _group_of(limits: Dict[str, Rule]) -> Tuple[Limits, Layout, Steps]:
    """The store's group of ``limits`` (``(name, rule)`` pairs), its in-memory layout and steps."""
    group = tuple(limits.items())
    layout = layout_of(group)
    return group, layout, steps_of(layout)
