"""Redis stores: one set of limits shared by every process and host that uses the same server.

[`RedisStore`][tokenbucket.redis.RedisStore] (redis-py's ``redis.Redis``) and
[`AsyncRedisStore`][tokenbucket.redis.AsyncRedisStore] (``redis.asyncio.Redis``) keep the
semantics of [`MemoryStore`][tokenbucket.MemoryStore]; only where the state lives differs. Each
decision is one round trip: an EVALSHA of one Lua script (``_stores/redis/lua/bucket.lua``,
shipped with the package) that reads the server's clock, refills, checks, consumes and writes
atomically. The script, its arguments, the parsing of its replies and the failure policy exist
once, as plans that make no I/O (``tokenbucket._stores.redis.logic``); the two stores only make
the calls a plan asks for, ``client.evalsha(...)`` or ``await client.evalsha(...)``. The async
store sends the decisions that concurrent tasks start while others are in flight as one
pipeline, still one EVALSHA each (``pipeline=False`` turns this off). What the two share besides
the plans (the constructor, ``from_url``, the properties, the loop that makes the calls) is
their base class, in ``tokenbucket._stores.redis.base``.

Keys: each rate-limited key is one Redis hash, ``prefix + key``, holding the bucket state and
the key's rule override; each limit of a registry of several is one such hash, under
``limit_key(key, name)``. Every call touches that one key (``take_all`` the hashes of the limits
it names, which on a Redis Cluster must share a hash slot), so Redis Cluster works. A hash without
an override expires when its bucket is full again (a full bucket and a missing one decide the
same), so memory follows the number of recently active clients; a hash with an override never
expires (the override must survive). Overrides live only in Redis, with no local cache, so an
``update_rule`` through any process applies to every process from its next decision on.

Failures: while Redis does not answer, decisions follow ``on_error`` and never raise (a circuit
breaker keeps an outage from costing a timeout per decision); a decision that Redis answers with
an error (a key of another type under the prefix, a server out of memory) follows ``on_error``
too, alone. Admin calls (``update_rule``, ``remove_rule``, ``reset``, ``get_rule``) raise
[`RedisUnavailableError`][tokenbucket.redis.RedisUnavailableError], a builtin
:class:`ConnectionError`, so adapters can map it to 503 without importing this module.

The exceptions it raises:

    ConnectionError (builtin)
     └── RedisUnavailableError   an admin call failed in Redis (no answer, or an error)

Importing this module imports redis-py; importing ``tokenbucket`` never does.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Tuple, TypeVar, cast

try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.retry
    import redis.backoff
    import redis.cluster
    import redis.exceptions
    import redis.retry
except ImportError as error:  # pragma: no cover - exercised in a subprocess without redis-py
    raise ImportError(
        f"tokenbucket.redis needs redis-py, which is not installed ({error}): "
        "pip install 'tokenbucket-ratelimit[redis]'"
    ) from error

from ._core.rule import Rule
from ._stores.redis.base import _AsyncClient, _Store, _SyncClient, drive_blocking
from ._stores.redis.failure import (
    FALLBACK_MAX_KEYS as FALLBACK_MAX_KEYS,  # public, as it always was
)
from ._stores.redis.failure import RedisUnavailableError
from ._stores.redis.groups import flat
from ._stores.redis.listing import AsyncRules, SyncRules
from ._stores.redis.logic import Plan
from ._stores.redis.once import new_call
from ._stores.redis.pipeline import PIPELINE_MAX as PIPELINE_MAX  # public: the batch size
from ._stores.redis.pipeline import Pipeliner
from ._stores.slots import Slot
from ._stores.store import Groups, Mask, Outcome, Outcomes

__all__ = ["AsyncRedisStore", "RedisStore", "RedisUnavailableError"]

T = TypeVar("T")


class RedisStore(SyncRules, _Store[_SyncClient]):
    """A [`Store`][tokenbucket.Store] in Redis, through a synchronous redis-py client.

    Args:
        client: a ``redis.Redis`` (or ``redis.cluster.RedisCluster``). Give it socket timeouts,
            or use [`from_url`][tokenbucket.redis.RedisStore.from_url], which does.
        prefix: prepended to each key to name its Redis hash.
        on_error: what decisions do while Redis is unavailable (a connection or timeout error,
            or any other redis-py error): ``"fallback"`` (the default) decides with a
            [`MemoryStore`][tokenbucket.MemoryStore] in this process, so every limit still holds
            per process (with N processes a client gets at most N times its limit) and the
            service stays up; ``"deny"`` refuses every request (fail closed: Redis down means
            the service is down); ``"allow"`` treats every bucket as full (fail open: no limit
            at all until Redis returns). Keys whose override this store has seen keep it.
        retry_interval: seconds decisions skip Redis after a failure, so an outage costs one
            timeout per interval rather than one per request; then one decision tries Redis
            again, and the first answer ends the outage. 0 tries Redis on every call.

    Examples:
        >>> from tokenbucket.redis import RedisStore
        >>> store = RedisStore.from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> limits = BucketRegistry(Rule(10, 1.0), store=store)  # doctest: +SKIP
        >>> limits.try_consume("203.0.113.7")  # doctest: +SKIP
        True

    Decisions never raise for Redis trouble: they log a warning (once per ``retry_interval``,
    at most once a second, on the ``tokenbucket.redis`` logger) and follow ``on_error``.

    Every call waits for Redis, so the store is ``blocking``: the ASGI middleware and async
    functions under [`rate_limit`][tokenbucket.rate_limit] refuse it (they would stall the
    event loop); use [`AsyncRedisStore`][tokenbucket.redis.AsyncRedisStore] there.
    """

    __slots__ = ()

    #: Each call waits on the network: not for an event loop (see the Store protocol).
    blocking: ClassVar[bool] = True
    _is_async = False
    _connect = redis.Redis.from_url
    _connect_cluster = redis.cluster.RedisCluster.from_url
    _retry = redis.retry.Retry

    def _run(self, plan: Plan[T]) -> T:
        """Run ``plan`` to its answer, blocking (see ``drive_blocking``)."""
        return drive_blocking(self._client, plan)

    def close(self) -> None:
        """Close the client if this store created it (``from_url``); otherwise do nothing."""
        if self._owned:
            self._client.close()

    def take(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.take`][tokenbucket.Store.take]. One EVALSHA; never raises for Redis."""
        return self._run(self._logic.take(key, amount, default))

    def peek(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.peek`][tokenbucket.Store.peek]. One EVALSHA; never raises for Redis."""
        return self._run(self._logic.peek(key, amount, default))

    def level(self, key: str, default: Rule, /) -> float:
        """See [`Store.level`][tokenbucket.Store.level]. One EVALSHA; never raises for Redis."""
        return self._run(self._logic.level(key, default))

    def take_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.take_all`][tokenbucket.Store.take_all]. One EVALSHA with every key.

        On a Redis Cluster the keys must share a hash slot (a common ``{hash tag}``), else
        ValueError; repeated keys raise ValueError too. Never raises for Redis trouble.
        """
        return self._run(self._logic.take_all(groups, amount, shadow))

    def peek_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.peek_all`][tokenbucket.Store.peek_all]; as `take_all`, changing nothing."""
        return self._run(self._logic.peek_all(groups, amount, shadow))

    def charge(
        self, key: str, amount: float, default: Rule, max_wait: Optional[float], /
    ) -> Outcome:
        """See [`Store.charge`][tokenbucket.Store.charge]. One EVALSHA; never raises for Redis."""
        return self._run(self._logic.charge(key, amount, default, max_wait))

    def refund(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.refund`][tokenbucket.Store.refund]. One EVALSHA; never raises for Redis."""
        return self._run(self._logic.refund(key, amount, default))

    def charge_all(
        self, groups: Groups, amount: float, max_wait: Optional[float], shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.charge_all`][tokenbucket.Store.charge_all]; keys as for `take_all`."""
        return self._run(self._logic.charge_all(groups, amount, max_wait, None, shadow))

    def refund_all(self, groups: Groups, amount: float, /) -> Tuple[bool, Outcomes]:
        """See [`Store.refund_all`][tokenbucket.Store.refund_all]; keys as for `take_all`."""
        return self._run(self._logic.refund_all(groups, amount))

    def get_rule(self, key: str, /) -> Optional[Rule]:
        """See [`Store.get_rule`][tokenbucket.Store.get_rule]. Raises RedisUnavailableError."""
        return self._run(self._logic.get_rule(key))

    def update_rule(
        self, key: str, default: Rule, capacity: Optional[float], refill_rate: Optional[float], /
    ) -> Rule:
        """See [`Store.update_rule`][tokenbucket.Store.update_rule]. Atomic; raises on outage."""
        return self._run(self._logic.update_rule(key, default, capacity, refill_rate))

    def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        """See [`Store.remove_rule`][tokenbucket.Store.remove_rule]. Atomic; raises on outage."""
        return self._run(self._logic.remove_rule(key, default))

    def reset(self, key: str, /) -> None:
        """See [`Store.reset`][tokenbucket.Store.reset]. Raises RedisUnavailableError."""
        self._run(self._logic.reset(key))

    def acquire_slot(self, key: str, limit: int, lease: float, /) -> Optional[Slot]:
        """An in-flight slot of ``key`` (see [`InFlightLimit`][tokenbucket.InFlightLimit]).

        One EVALSHA; never raises for Redis trouble (follows ``on_error``).
        """
        try:
            self._acquire_slot(key, limit, lease).send(None)
        except StopIteration as done:
            return cast(Optional[Slot], done.value)
        raise AssertionError("unreachable: a synchronous call was awaited")  # pragma: no cover

    def release_slot(self, slot: Slot, /) -> None:
        """Release an in-flight slot: one ZREM; a failure is logged (the lease frees it)."""
        self._run(self._slots.release(slot))

    def slots_held(self, key: str, /) -> int:
        """The in-flight slots ``key`` holds. Raises RedisUnavailableError."""
        return self._run(self._slots.count(key))


class AsyncRedisStore(AsyncRules, _Store[_AsyncClient]):
    """An [`AsyncStore`][tokenbucket.AsyncStore] in Redis, through ``redis.asyncio``.

    The same store as [`RedisStore`][tokenbucket.redis.RedisStore] (same script, keys, options,
    failure policy and ``from_url``), with coroutine methods: a registry using it is driven
    through its ``a``-prefixed methods, and the event loop never waits on the network.

    Args:
        client: a ``redis.asyncio.Redis`` (or ``redis.asyncio.cluster.RedisCluster``).
        prefix: see [`RedisStore`][tokenbucket.redis.RedisStore].
        on_error: see [`RedisStore`][tokenbucket.redis.RedisStore].
        retry_interval: see [`RedisStore`][tokenbucket.redis.RedisStore].
        pipeline: send the decisions that tasks start in one event-loop iteration, while
            others are in flight, as one pipeline (the default; up to ``PIPELINE_MAX`` = 256 a
            pipeline; a decision made while none is in flight goes alone at once). Each
            decision is still one EVALSHA, decided and failing on its own; only the round
            trips are shared, so many concurrent tasks make several times more decisions per
            second on one connection. ``False`` sends each decision alone. Admin and
            in-flight slot calls always go alone.

    Examples:
        >>> from tokenbucket.redis import AsyncRedisStore
        >>> store = AsyncRedisStore.from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> limits = BucketRegistry(Rule(10, 1.0), store=store)  # doctest: +SKIP
        >>> await limits.atry_consume("203.0.113.7")  # doctest: +SKIP
        True

    ``from_url`` makes no connection until the first call. The store must be used from one
    event loop (redis-py's asyncio connections belong to the loop that opened them). On Python
    3.9, ``from_url`` called while no loop runs builds the client at the first call, inside
    the loop that makes it (its locks would otherwise belong to the wrong loop); a client
    passed to the constructor must be built while its loop runs.
    [`aclose`][tokenbucket.redis.AsyncRedisStore.aclose] closes the client.
    """

    __slots__ = ("_batch",)

    _is_async = True
    _connect = redis.asyncio.Redis.from_url
    _connect_cluster = redis.asyncio.cluster.RedisCluster.from_url
    _retry = redis.asyncio.retry.Retry

    def __init__(
        self,
        client: _AsyncClient,
        *,
        prefix: str = "tokenbucket:",
        on_error: str = "fallback",
        retry_interval: float = 1.0,
        pipeline: bool = True,
    ) -> None:
        super().__init__(client, prefix=prefix, on_error=on_error, retry_interval=retry_interval)
        self._batch: Optional[Pipeliner] = None
        self._pipeline(pipeline)

    @classmethod
    def from_url(cls, url: str, *, pipeline: bool = True, **options: Any) -> AsyncRedisStore:
        """Connect as [`RedisStore.from_url`][tokenbucket.redis.RedisStore.from_url] does.

        ``pipeline`` is the constructor's; the other options are ``RedisStore.from_url``'s.
        """
        store = super().from_url(url, **options)
        store._pipeline(pipeline)
        return store

    def _pipeline(self, pipeline: bool) -> None:
        if not isinstance(pipeline, bool):
            raise TypeError(f"'pipeline' must be a bool, got {pipeline!r}")
        self._batch = Pipeliner(self._client) if pipeline else None

    @property
    def pipeline(self) -> bool:
        """Whether decisions started in one event-loop iteration share a pipeline."""
        return self._batch is not None

    async def aclose(self) -> None:
        """Close the client if this store created it (``from_url``); otherwise do nothing."""
        if self._owned:
            await self._client.aclose()

    async def take(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.take`][tokenbucket.Store.take]. One EVALSHA; never raises for Redis."""
        return await self._drive(self._logic.take(key, amount, default), self._batch)

    async def peek(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.peek`][tokenbucket.Store.peek]. One EVALSHA; never raises for Redis."""
        return await self._drive(self._logic.peek(key, amount, default), self._batch)

    async def level(self, key: str, default: Rule, /) -> float:
        """See [`Store.level`][tokenbucket.Store.level]. One EVALSHA; never raises for Redis."""
        return await self._drive(self._logic.level(key, default), self._batch)

    async def take_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`RedisStore.take_all`][tokenbucket.redis.RedisStore.take_all]."""
        return await self._drive(self._logic.take_all(groups, amount, shadow), self._batch)

    async def peek_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.peek_all`][tokenbucket.Store.peek_all]; as `take_all`, changing nothing."""
        return await self._drive(self._logic.peek_all(groups, amount, shadow), self._batch)

    async def charge(
        self, key: str, amount: float, default: Rule, max_wait: Optional[float], /
    ) -> Outcome:
        """See [`Store.charge`][tokenbucket.Store.charge]. One EVALSHA; never raises for Redis.

        Cancelled while its call is on the way, it takes the charge back (see `charge_all`).
        """
        call = new_call()
        logic = self._logic
        try:
            return await self._drive(logic.charge(key, amount, default, max_wait, call))
        except BaseException as error:
            if not isinstance(error, Exception):  # cancelled (its own errors: a bad call)
                await self._drive(logic.undo(((key, default),), amount, call))
            raise

    async def refund(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.refund`][tokenbucket.Store.refund]. One EVALSHA; never raises for Redis."""
        return await self._drive(self._logic.refund(key, amount, default))

    async def charge_all(
        self, groups: Groups, amount: float, max_wait: Optional[float], shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.charge_all`][tokenbucket.Store.charge_all]; keys as for `take_all`.

        Cancelled while its call is on the way (an ``aacquire`` cancelled during its
        reservation), it takes the charge back: one more call refunds the amount if Redis
        applied it, and makes the call change nothing if it arrives later.
        """
        call = new_call()
        logic = self._logic
        try:
            return await self._drive(logic.charge_all(groups, amount, max_wait, call, shadow))
        except BaseException as error:
            if not isinstance(error, Exception):  # cancelled (its own errors: a bad call)
                await self._drive(logic.undo(flat(groups), amount, call))
            raise

    async def refund_all(self, groups: Groups, amount: float, /) -> Tuple[bool, Outcomes]:
        """See [`Store.refund_all`][tokenbucket.Store.refund_all]; keys as for `take_all`."""
        return await self._drive(self._logic.refund_all(groups, amount))

    async def get_rule(self, key: str, /) -> Optional[Rule]:
        """See [`Store.get_rule`][tokenbucket.Store.get_rule]. Raises RedisUnavailableError."""
        return await self._drive(self._logic.get_rule(key))

    async def update_rule(
        self, key: str, default: Rule, capacity: Optional[float], refill_rate: Optional[float], /
    ) -> Rule:
        """See [`Store.update_rule`][tokenbucket.Store.update_rule]. Atomic; raises on outage."""
        return await self._drive(self._logic.update_rule(key, default, capacity, refill_rate))

    async def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        """See [`Store.remove_rule`][tokenbucket.Store.remove_rule]. Atomic; raises on outage."""
        return await self._drive(self._logic.remove_rule(key, default))

    async def reset(self, key: str, /) -> None:
        """See [`Store.reset`][tokenbucket.Store.reset]. Raises RedisUnavailableError."""
        await self._drive(self._logic.reset(key))

    async def acquire_slot(self, key: str, limit: int, lease: float, /) -> Optional[Slot]:
        """See [`RedisStore.acquire_slot`][tokenbucket.redis.RedisStore.acquire_slot]."""
        return await self._acquire_slot(key, limit, lease)

    async def release_slot(self, slot: Slot, /) -> None:
        """See [`RedisStore.release_slot`][tokenbucket.redis.RedisStore.release_slot]."""
        await self._drive(self._slots.release(slot))

    async def slots_held(self, key: str, /) -> int:
        """See [`RedisStore.slots_held`][tokenbucket.redis.RedisStore.slots_held]."""
        return await self._drive(self._slots.count(key))
