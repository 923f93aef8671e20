"""The registry: one token bucket per key, a default rule, per-key overrides, runtime updates.

It validates input, passes the current default to its store and turns store outcomes into
decisions. Bucket arithmetic and overrides live in the store, so the same registry runs on the
in-process store or a shared one (Redis). Every method has an awaitable counterpart (``a``
prefix); with a synchronous store those simply run the synchronous code, which never blocks.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any, Dict, Mapping, NoReturn, Optional, Tuple, Union

from ._clock import Clock
from ._decision import Decision, clamp, decide
from ._limits import Keys, check_limits, pick
from ._memory import MemoryStore
from ._registry_rules import RegistryRules
from ._rule import Rule
from ._shared import store_methods
from ._store import AsyncStore, Buckets, Outcome, Outcomes, Store
from ._validate import check_amount, check_key, check_rule_fields


class BucketRegistry(RegistryRules):
    """Token buckets by key (a client IP, a user, an API key), all under one default rule.

    Args:
        default: the [`Rule`][tokenbucket.Rule] for keys without an override (one limit,
            named ``"default"``), or a mapping of limit names to rules, in order: several
            limits, all or nothing (``{"burst": Rule(10, 1.0), "daily": Rule.per(1000,
            86400)}``): a request is admitted only if every limit admits it, and then charged
            to every limit. See [Several limits](../several-limits.md).
        store: where state and overrides live; a new [`MemoryStore`][tokenbucket.MemoryStore]
            by default. A store whose methods are coroutines (an
            [`AsyncStore`][tokenbucket.AsyncStore]) is used through the ``a``-prefixed methods.
        clock: for the default store only: zero-argument callable returning seconds.
        max_keys: for the default store only: hard cap on tracked buckets (see
            [`MemoryStore`][tokenbucket.MemoryStore]).

    Example::

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

    def __new__(cls, default: Union[Rule, Mapping[str, Rule]], **options: Any) -> BucketRegistry:
        if cls is BucketRegistry and isinstance(default, Mapping) and len(default) > 1:
            from ._several import SeveralLimits  # a registry of several limits

            cls = SeveralLimits
        return object.__new__(cls)

    def __init__(
        self,
        default: Union[Rule, Mapping[str, Rule]],
        *,
        store: Union[Store, AsyncStore, None] = None,
        clock: Optional[Clock] = None,
        max_keys: Optional[int] = None,
    ) -> None:
        limits = check_limits(default)
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
        if inspect.iscoroutinefunction(getattr(store, "take", None)):
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
        # into floats, so that the arithmetic cannot overflow).
        if type(amount) is not int or not 0 < amount <= 2**53 or type(key) is not str:
            key, amount = check_key(key), check_amount(amount)
            return self._sync.take(key, amount, self._default)[0]
        return self._fast._try_take(key, amount, self._default)

    def consume(self, key: Keys, amount: float = 1) -> Decision:
        """Like `try_consume`, but return the full [`Decision`][tokenbucket.Decision].

        A denial is a decision (``allowed`` False, with ``retry_after``), never an exception.
        """
        if self._sharing is not None:
            self._refresh()
        if type(amount) is not int or not 0 < amount <= 2**53 or type(key) is not str:
            key, amount = check_key(key), check_amount(amount)
        return _decision(self._sync.take(key, amount, self._default), amount, self._name)

    def peek(self, key: Keys, amount: float = 1) -> Decision:
        """Return the decision ``consume(key, amount)`` would make now, without taking tokens."""
        if self._sharing is not None:
            self._refresh()
        key, amount = check_key(key), check_amount(amount)
        return _decision(self._sync.peek(key, amount, self._default), amount, self._name)

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


class _Allowed:
    """``_try_take`` for any store: the protocol's ``take``, answering only whether."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def _try_take(self, key: str, amount: int, default: Rule, /) -> bool:
        return self._store.take(key, amount, default)[0]


class _Awaitable:
    """Presents a synchronous store as an async one (its methods never block)."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    async def take(self, key: str, amount: float, default: Rule, /) -> Outcome:
        return self._store.take(key, amount, default)

    async def peek(self, key: str, amount: float, default: Rule, /) -> Outcome:
        return self._store.peek(key, amount, default)

    async def level(self, key: str, default: Rule, /) -> float:
        return self._store.level(key, default)

    async def take_all(self, buckets: Buckets, amount: float, /) -> Tuple[bool, Outcomes]:
        return self._store.take_all(buckets, amount)

    async def peek_all(self, buckets: Buckets, amount: float, /) -> Tuple[bool, Outcomes]:
        return self._store.peek_all(buckets, amount)

    async def get_rule(self, key: str, /) -> Optional[Rule]:
        return self._store.get_rule(key)

    async def update_rule(
        self,
        key: str,
        default: Rule,
        capacity: Optional[float],
        refill_rate: Optional[float],
        /,
    ) -> Rule:
        return self._store.update_rule(key, default, capacity, refill_rate)

    async def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        return self._store.remove_rule(key, default)

    async def reset(self, key: str, /) -> None:
        self._store.reset(key)

    async def get_shared(self, name: str, /) -> Optional[str]:
        return store_methods(self._store)[0](name)  # type: ignore[no-any-return]

    async def set_shared(self, name: str, text: str, /) -> None:
        store_methods(self._store)[1](name, text)


class _RequiresAwait:
    """Stands in for the synchronous store when the store is async: every call explains."""

    __slots__ = ("_store",)

    def __init__(self, store: object) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        def refuse(*args: object) -> NoReturn:
            raise TypeError(
                f"{self._store!r} is an async store: use the awaitable registry methods "
                f"(for example 'await registry.aconsume(key)')"
            )

        return refuse
