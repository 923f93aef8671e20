"""The registry: one token bucket per key, a default rule, per-key overrides, runtime updates.

It validates input, passes the current default to its store and turns store outcomes into
decisions. Bucket arithmetic and overrides live in the store, so the same registry runs on the
in-process store or a shared one (Redis). Every method has an awaitable counterpart (``a``
prefix); with a synchronous store those simply run the synchronous code, which never blocks.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Dict, FrozenSet, Iterable, Mapping, Optional, Tuple, Union

from .._core import aio as _aio
from .._core.clock import Clock
from .._core.decision import Decision, after, clamp, decide
from .._core.rule import Limits, Rule, as_limits
from .._core.validate import check_amount, check_key, check_rule_fields, show
from .._stores.memory.store import MemoryStore
from .._stores.store import AsyncStore, Outcome, Store
from .admission import Admission
from .defaults import RegistryRules
from .lifecycle import Waiting, delay
from .limits import Keys, check_limits, pick
from .wrappers import _Allowed, _Awaitable, _RequiresAwait

#: The default amount: ``amount is _ONE`` holds for the int 1 only (not True), checked at once.
_ONE = 1


class BucketRegistry(Waiting, RegistryRules):
    """Token buckets by key (a client IP, a user, an API key), all under one default rule.

    Args:
        default: the [`Rule`][tokenbucket.Rule] for keys without an override (one limit,
            named ``"default"``), or a mapping of limit names to rules, in order: several
            limits, all or nothing (``{"burst": Rule(10, 1.0), "daily": Rule.per(1000,
            86400)}``): a request is admitted only if every limit admits it, and then charged
            to every limit. See [Several limits](../several-limits.md). A rate string is read
            by [`Rule.parse_many`][tokenbucket.Rule.parse_many]: ``"10/minute"`` is one Rule,
            ``"5/minute;100/day"`` two named limits.
        shadow: names of limits (of a named default) that are watched, never refusing: see
            [Shadow limits](../several-limits.md#shadow-limits) and `set_shadow`.
        store: where state and overrides live; a new [`MemoryStore`][tokenbucket.MemoryStore]
            by default. A store whose methods are coroutines (an
            [`AsyncStore`][tokenbucket.AsyncStore]) is used through the ``a``-prefixed methods.
        clock: for the default store only: zero-argument callable returning seconds.
        max_keys: for the default store only: hard cap on tracked buckets (see
            [`MemoryStore`][tokenbucket.MemoryStore]).

    Examples:
        >>> registry = BucketRegistry(Rule(capacity=2, refill_rate=1.0), clock=ManualClock())
        >>> [registry.try_consume("203.0.113.7") for _ in range(3)]
        [True, True, False]
        >>> registry.update_rule("203.0.113.7", capacity=50)
        Rule(capacity=50, refill_rate=1.0)
        >>> registry.consume("203.0.113.7").remaining
        47.0

    Rule changes take effect at once and never lose track of what a key has used: the bucket is
    settled at the old rule up to the change, and its deficit (tokens missing from full) carries
    over, so a full bucket stays full and a lowered capacity can leave a bucket in debt. A key
    without a bucket is full under its new rule. Changing the default settles each bucket the
    first time it is read afterwards.

    Methods that address one limit (`tokens`, `rule_for`, `update_rule`, `remove_rule`,
    `update_default`) take ``limit=``, the limit's name: optional with one limit, required with
    several (ValueError naming them).
    """

    __slots__ = ("_async", "_default", "_fast", "_lock", "_name", "_store", "_sync")

    #: The class of a registry of several limits (``several.SeveralLimits``, a subclass), which
    #: ``BucketRegistry(...)`` builds when its default names several: set where both are
    #: imported, the package's ``__init__``, so that this module imports nothing above it.
    _several: ClassVar[type[BucketRegistry]]

    def __new__(cls, default: Limits, **options: Any) -> BucketRegistry:
        default = as_limits(default)  # a rate string: one Rule, or several named limits
        several = isinstance(default, Mapping) and (len(default) > 1 or "shadow" in options)
        if cls is BucketRegistry and several:
            cls = cls._several  # a registry of several limits
        return object.__new__(cls)

    def __init__(
        self,
        default: Limits,
        *,
        store: Union[Store, AsyncStore, None] = None,
        clock: Optional[Clock] = None,
        max_keys: Optional[int] = None,
        shadow: Iterable[str] = (),
    ) -> None:
        limits = check_limits(default)
        if shadow and type(self) is BucketRegistry:
            raise ValueError(
                f"'shadow' names limits of a registry of several: a registry of one Rule has "
                f"none to watch beside it (name it, {{'name': rule}}), got {show(shadow)}"
            )
        if store is None:
            store = MemoryStore(clock=clock, max_keys=max_keys)
        elif clock is not None or max_keys is not None:
            raise TypeError("'clock' and 'max_keys' configure the default store; pass them to it")
        (self._name, self._default), *_ = limits.items()  # SeveralLimits keeps them all
        self._lock = threading.Lock()  # for read-modify-write of _default
        #: The shared rules this registry follows (`share_rules`), or None.
        self._sharing = None
        self._store: Union[Store, AsyncStore] = store
        self._sync: Store
        self._async: AsyncStore
        if _aio.iscoroutinefunction(getattr(store, "take", None)):
            self._sync = _RequiresAwait(store)
            self._async = store  # type: ignore[assignment]
        else:
            self._sync = store  # type: ignore[assignment]
            self._async = _Awaitable(self._sync)
        # try_consume's fast path: the in-memory store's private one when the store is exactly
        # a MemoryStore (a subclass may change take), else the protocol's take.
        self._fast: Union[MemoryStore, _Allowed] = (
            store if type(store) is MemoryStore else _Allowed(self._sync)
        )

    @property
    def default(self) -> Rule:
        """The rule of keys without an override (with several limits: see `defaults`)."""
        return self._default

    @property
    def defaults(self) -> Dict[str, Rule]:
        """Every limit's default rule by name, in order (``{"default": rule}`` for one Rule)."""
        return {self._name: self._default}

    @property
    def limits(self) -> Tuple[str, ...]:
        """The names of the limits, in order: ``("default",)`` for a registry of one Rule."""
        return (self._name,)

    @property
    def shadow(self) -> FrozenSet[str]:
        """The names of the limits in shadow (never refusing): see `set_shadow`."""
        return frozenset()

    def set_shadow(self, limit: str, shadow: bool) -> FrozenSet[str]:
        """Put the named ``limit`` in shadow or enforce it: for registries built with names.

        A registry of one Rule raises ValueError; see [Shadow
        limits](../several-limits.md#shadow-limits).
        """
        raise ValueError(
            "a registry of one Rule has no limit to put in shadow: build it with named limits "
            "(BucketRegistry({'name': rule}, shadow=())) or use the middleware's dry_run"
        )

    @property
    def is_async(self) -> bool:
        """Whether the store is async, so that only the ``a``-prefixed methods work."""
        return isinstance(self._sync, _RequiresAwait)

    @property
    def store(self) -> Union[Store, AsyncStore]:
        """The store holding bucket state and overrides."""
        return self._store

    def try_consume(self, key: Keys, amount: float = 1) -> bool:
        """Take ``amount`` tokens from ``key``'s bucket if it has them; return whether it did.

        ``key`` is a str. With several limits it may also be a mapping naming each limit's
        key (``{"user": "alice", "org": "acme"}``), all charged or none.
        """
        if self._sharing is not None:
            self._refresh()
        # Fast path: a small positive int needs no checks (check_amount turns larger ints
        # into floats, so that the arithmetic cannot overflow); the default 1 is one `is`.
        if type(key) is not str or (
            amount is not _ONE and not (type(amount) is int and 0 < amount <= 2**53)
        ):
            key, amount = check_key(key), check_amount(amount)
            return self._sync.take(key, amount, self._default)[0]
        # (amount is an int here: mypy does not narrow by ``is _ONE``)
        return self._fast._try_take(key, amount, self._default, False)  # type: ignore[call-overload,no-any-return]

    def consume(self, key: Keys, amount: float = 1) -> Decision:
        """Like `try_consume`, but return the full [`Decision`][tokenbucket.Decision].

        A denial is a decision (``allowed`` False, with ``retry_after``), never an exception.
        """
        if self._sharing is not None:
            self._refresh()
        if type(key) is not str or (
            amount is not _ONE and not (type(amount) is int and 0 < amount <= 2**53)
        ):
            key, amount = check_key(key), check_amount(amount)  # as in try_consume
            allowed, level, rule = self._sync.take(key, amount, self._default)
        else:
            allowed, level, rule = self._fast._try_take(key, amount, self._default, True)  # type: ignore[call-overload]
        return decide(allowed, level, amount, rule, self._name)

    def peek(self, key: Keys, amount: float = 1) -> Decision:
        """Return the decision ``consume(key, amount)`` would make now, without taking tokens."""
        if self._sharing is not None:
            self._refresh()
        key, amount = check_key(key), check_amount(amount)
        return _decision(self._sync.peek(key, amount, self._default), amount, self._name)

    def charge(self, key: Keys, amount: float) -> Decision:
        """Take ``amount`` tokens from ``key``'s bucket whatever its level: it may go into debt.

        For a cost known only afterwards (LLM tokens used, bytes sent). It always happens and
        returns the decision after it: ``allowed`` True, ``remaining`` 0 while in debt and
        ``retry_after`` the time until one token is there again. A bucket in debt admits
        nothing until refills have covered the debt. The debt saturates at ``2**53`` tokens
        (``amount`` beyond that counts as ``2**53``), so no charge overflows.
        """
        if type(amount) is not int or not 0 < amount <= 2**53 or type(key) is not str:
            key, amount = check_key(key), check_amount(amount)  # as in consume
        if self._sharing is not None:
            self._refresh()
        outcome = self._sync.charge(key, amount, self._default, None)
        return after(outcome[1], outcome[2], self._name)

    def refund(self, key: Keys, amount: float) -> Decision:
        """Give ``amount`` tokens back to ``key``'s bucket, never above full.

        A bucket ``d`` tokens short of full gets ``min(amount, d)`` back, so a refund never
        creates tokens beyond the capacity. Returns the decision after it, as `charge`.
        """
        if type(amount) is not int or not 0 < amount <= 2**53 or type(key) is not str:
            key, amount = check_key(key), check_amount(amount)  # as in consume
        if self._sharing is not None:
            self._refresh()
        outcome = self._sync.refund(key, amount, self._default)
        return after(outcome[1], outcome[2], self._name)

    def _reserved(self, key: Keys, amount: float, max_wait: float) -> Tuple[float, Admission]:
        """One store call reserving ``amount`` if the wait fits ``max_wait``.

        Returns the seconds to wait and the `Admission` (what it took).
        """
        if self._sharing is not None:
            self._refresh()
        outcome = self._sync.charge(check_key(key), amount, self._default, max_wait)
        return delay(outcome, amount, self._name), Admission(key, amount, (self._name,))

    async def _areserved(
        self, key: Keys, amount: float, max_wait: float
    ) -> Tuple[float, Admission]:
        """Awaitable `_reserved`."""
        if self._sharing is not None:
            await self._arefresh()
        outcome = await self._async.charge(check_key(key), amount, self._default, max_wait)
        return delay(outcome, amount, self._name), Admission(key, amount, (self._name,))

    def tokens(self, key: str, limit: Optional[str] = None) -> float:
        """Return ``key``'s token level now.

        A key without a bucket is at its capacity, except in a store at its ``max_keys`` cap,
        where it counts as empty (as `consume` treats it).
        """
        if self._sharing is not None:
            self._refresh()
        pick(self.limits, limit)
        return clamp(self._sync.level(check_key(key), self._default))

    def rule_for(self, key: str, limit: Optional[str] = None) -> Rule:
        """Return the rule that applies to ``key``: its override, else the default."""
        if self._sharing is not None:
            self._refresh()
        pick(self.limits, limit)
        override = self._sync.get_rule(check_key(key))
        return self._default if override is None else override

    def rules_for(self, key: str) -> Dict[str, Rule]:
        """Return the rule of every limit for ``key`` by name, in order."""
        return {name: self.rule_for(key, name) for name in self.limits}

    def update_rule(
        self,
        key: str,
        *,
        capacity: Optional[float] = None,
        refill_rate: Optional[float] = None,
        limit: Optional[str] = None,
    ) -> Rule:
        """Give ``key`` its own rule, changing the given fields of its current one; return it.

        Omitted fields keep the value of the key's current rule. The key's bucket is settled at
        the old rule first; see the class docstring. Invalid values raise before anything
        changes.
        """
        key, capacity, refill_rate = _check_update(key, capacity, refill_rate)
        pick(self.limits, limit)
        return self._sync.update_rule(key, self._default, capacity, refill_rate)

    def remove_rule(self, key: str, limit: Optional[str] = None) -> Optional[Rule]:
        """Drop ``key``'s override (settling its bucket first); return it, or None if none."""
        pick(self.limits, limit)
        return self._sync.remove_rule(check_key(key), self._default)

    def reset(self, key: str, limit: Optional[str] = None) -> None:
        """Refill ``key``'s bucket (every limit's, or ``limit``'s) to full. Overrides stay."""
        if limit is not None:
            pick(self.limits, limit)
        self._sync.reset(check_key(key))

    async def atry_consume(self, key: Keys, amount: float = 1) -> bool:
        """Awaitable `try_consume`."""
        if self._sharing is not None:
            await self._arefresh()
        key, amount = check_key(key), check_amount(amount)
        return (await self._async.take(key, amount, self._default))[0]

    async def aconsume(self, key: Keys, amount: float = 1) -> Decision:
        """Awaitable `consume`."""
        if self._sharing is not None:
            await self._arefresh()
        key, amount = check_key(key), check_amount(amount)
        return _decision(await self._async.take(key, amount, self._default), amount, self._name)

    async def apeek(self, key: Keys, amount: float = 1) -> Decision:
        """Awaitable `peek`."""
        if self._sharing is not None:
            await self._arefresh()
        key, amount = check_key(key), check_amount(amount)
        return _decision(await self._async.peek(key, amount, self._default), amount, self._name)

    async def acharge(self, key: Keys, amount: float) -> Decision:
        """Awaitable `charge`."""
        if self._sharing is not None:
            await self._arefresh()
        key, amount = check_key(key), check_amount(amount)
        outcome = await self._async.charge(key, amount, self._default, None)
        return after(outcome[1], outcome[2], self._name)

    async def arefund(self, key: Keys, amount: float) -> Decision:
        """Awaitable `refund`."""
        if self._sharing is not None:
            await self._arefresh()
        key, amount = check_key(key), check_amount(amount)
        outcome = await self._async.refund(key, amount, self._default)
        return after(outcome[1], outcome[2], self._name)

    async def atokens(self, key: str, limit: Optional[str] = None) -> float:
        """Awaitable `tokens`."""
        if self._sharing is not None:
            await self._arefresh()
        pick(self.limits, limit)
        return clamp(await self._async.level(check_key(key), self._default))

    async def arule_for(self, key: str, limit: Optional[str] = None) -> Rule:
        """Awaitable `rule_for`."""
        if self._sharing is not None:
            await self._arefresh()
        pick(self.limits, limit)
        override = await self._async.get_rule(check_key(key))
        return self._default if override is None else override

    async def arules_for(self, key: str) -> Dict[str, Rule]:
        """Awaitable `rules_for`."""
        return {name: await self.arule_for(key, name) for name in self.limits}

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
        pick(self.limits, limit)
        return await self._async.update_rule(key, self._default, capacity, refill_rate)

    async def aremove_rule(self, key: str, limit: Optional[str] = None) -> Optional[Rule]:
        """Awaitable `remove_rule`."""
        pick(self.limits, limit)
        return await self._async.remove_rule(check_key(key), self._default)

    async def areset(self, key: str, limit: Optional[str] = None) -> None:
        """Awaitable `reset`."""
        if limit is not None:
            pick(self.limits, limit)
        await self._async.reset(check_key(key))

    def __repr__(self) -> str:
        default = self._default if self._name == "default" else self.defaults
        return f"BucketRegistry({default!r}, store={self._store!r})"


def _decision(outcome: Outcome, amount: float, name: str) -> Decision:
    allowed, level, rule = outcome
    return decide(allowed, level, amount, rule, name)


def _check_update(
    key: object, capacity: Optional[float], refill_rate: Optional[float]
) -> tuple[str, Optional[float], Optional[float]]:
    """Validate an override change completely before anything is changed."""
    return (check_key(key), *check_rule_fields(capacity, refill_rate))
