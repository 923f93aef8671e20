"""In-flight limits: at most N requests of one key in progress at once (a concurrency cap).

A token bucket limits how often a key may start requests; it says nothing about how many of
them run at the same time, and slow requests are the ones that exhaust a server. An
`InFlightLimit` counts the requests a key has in progress: `acquire` takes a `Slot` (or None
when the key already holds ``max_in_flight``), `release` gives it back. Releasing is
idempotent: a slot released twice is released once, and never frees another request's slot.

Where the count lives is the store's business: this module's `MemorySlots` (a dict of counts
under a lock, one process) or a Redis store (``tokenbucket.redis``: a sorted set of slot ids per
key, each with a lease, shared by every process). A store has three methods:
``acquire_slot(key, limit, lease) -> Optional[Slot]``, ``release_slot(slot)`` and
``slots_held(key) -> int``, plain or coroutines (then the limit is used through its
``a``-prefixed methods, as a `BucketRegistry` is).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, AsyncIterator, Iterator, Optional

from .._core import aio as _aio
from .._core.validate import show
from .._stores.memory.slots import MemorySlots
from .._stores.slots import DEFAULT_LEASE, Slot

__all__ = ["InFlightLimit", "InFlightLimitExceeded", "MemorySlots", "Slot"]


class InFlightLimitExceeded(Exception):
    """A request was refused: its key already has ``limit`` requests in flight.

    Raised by [`InFlightLimit.hold`][tokenbucket.InFlightLimit.hold] and by functions under
    [`rate_limit`][tokenbucket.rate_limit] with ``in_flight=``.
    """

    def __init__(self, key: str, limit: int) -> None:
        super().__init__(f"{limit} requests of {key!r} already in flight")
        self.key = key
        self.limit = limit

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.key, self.limit))


class InFlightLimit:
    """At most ``max_in_flight`` requests per key in progress at once.

    Args:
        max_in_flight: the cap per key, an int >= 1 (Stripe's concurrency limiter is the model:
            say 4 per API key next to a rate limit).
        store: where the counts live: this process by default (`MemorySlots`), or a
            [`RedisStore`][tokenbucket.redis.RedisStore] /
            [`AsyncRedisStore`][tokenbucket.redis.AsyncRedisStore] to cap a key across every
            process that shares the server (the same store object a registry uses may be
            passed; its ``on_error`` policy applies to slots too).
        lease: seconds a Redis slot lives if it is never released (its holder died): after it,
            the slot frees itself. Make it longer than your longest request (the server's or
            proxy's request timeout): a request that outlives its lease no longer counts, and
            one more may start. Default 60 (nginx's ``proxy_read_timeout``). Unused in memory,
            where a slot dies with its process.

    Examples:
        >>> limit = InFlightLimit(2)
        >>> first, second = limit.acquire("key-1"), limit.acquire("key-1")
        >>> limit.acquire("key-1") is None
        True
        >>> limit.release(first); limit.release(first)  # twice: released once
        >>> limit.in_flight("key-1")
        1
        >>> with limit.hold("key-1"):
        ...     limit.in_flight("key-1")
        2

    With an async store, use the ``a``-prefixed methods (``aacquire``, ``arelease``,
    ``ahold``, ``ain_flight``); they also work in memory.
    """

    __slots__ = ("_acquire", "_is_async", "_lease", "_max", "_release", "_store")

    def __init__(self, max_in_flight: int, *, store: Any = None, lease: float = DEFAULT_LEASE):
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise TypeError(f"'max_in_flight' must be an int >= 1, got {show(max_in_flight)}")
        if max_in_flight < 1:
            raise ValueError(f"'max_in_flight' must be an int >= 1, got {show(max_in_flight)}")
        if isinstance(lease, bool) or not isinstance(lease, (int, float)):
            raise TypeError(f"'lease' must be a number of seconds > 0, got {show(lease)}")
        if not 0.001 <= lease < 1e9 or not math.isfinite(lease):
            raise ValueError(f"'lease' must be from 0.001 to 1e9 seconds, got {show(lease)}")
        if store is None:
            store = MemorySlots()
        elif not all(
            callable(getattr(store, name, None))
            for name in ("acquire_slot", "release_slot", "slots_held")
        ):
            raise TypeError(
                "'store' must be None (in memory), a tokenbucket.redis store or an object with "
                f"acquire_slot, release_slot and slots_held, got {show(store)}"
            )
        self._max = max_in_flight
        self._lease = float(lease)
        self._store = store
        self._is_async = _aio.iscoroutinefunction(store.acquire_slot)
        self._acquire = store.acquire_slot
        self._release = store.release_slot

    @property
    def max_in_flight(self) -> int:
        """The cap per key."""
        return self._max

    @property
    def lease(self) -> float:
        """Seconds a Redis slot lives unreleased (see the class docstring)."""
        return self._lease

    @property
    def store(self) -> Any:
        """Where the counts live."""
        return self._store

    @property
    def is_async(self) -> bool:
        """Whether the store's methods are coroutines (use the ``a``-prefixed methods)."""
        return self._is_async

    @property
    def blocking(self) -> bool:
        """Whether each call waits on the network (a sync Redis store): not for an event loop."""
        return bool(getattr(self._store, "blocking", False))

    def acquire(self, key: str) -> Optional[Slot]:
        """Take a slot for a request of ``key``; None if it already has ``max_in_flight``."""
        if self._is_async:
            self._refuse("acquire")
        return self._acquire(key, self._max, self._lease)  # type: ignore[no-any-return]

    def release(self, slot: Slot) -> None:
        """Give ``slot`` back when its request ends. Idempotent; never raises for the store."""
        if self._is_async:
            self._refuse("release")
        if slot.held:
            slot.owner.release_slot(slot)

    def in_flight(self, key: str) -> int:
        """How many requests of ``key`` hold a slot now."""
        if self._is_async:
            self._refuse("in_flight")
        return int(self._store.slots_held(key))

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[Slot]:
        """Hold a slot of ``key`` for the ``with`` block; release it however the block ends.

        Raises:
            InFlightLimitExceeded: ``key`` already has ``max_in_flight`` requests in flight.
        """
        slot = self.acquire(key)
        if slot is None:
            raise InFlightLimitExceeded(key, self._max)
        try:
            yield slot
        finally:
            self.release(slot)

    async def aacquire(self, key: str) -> Optional[Slot]:
        """`acquire`, awaited when the store is async."""
        slot = self._acquire(key, self._max, self._lease)
        return (await slot) if self._is_async else slot  # type: ignore[no-any-return]

    async def arelease(self, slot: Slot) -> None:
        """`release`, awaited when the store is async."""
        if slot.held:
            done = slot.owner.release_slot(slot)
            if _aio.isawaitable(done):
                await done

    async def ain_flight(self, key: str) -> int:
        """`in_flight`, awaited when the store is async."""
        held = self._store.slots_held(key)
        return int(await held) if self._is_async else int(held)

    @contextlib.asynccontextmanager
    async def ahold(self, key: str) -> AsyncIterator[Slot]:
        """`hold` for ``async with``: the slot is released however the block ends."""
        slot = await self.aacquire(key)
        if slot is None:
            raise InFlightLimitExceeded(key, self._max)
        try:
            yield slot
        finally:
            await self.arelease(slot)

    def _refuse(self, name: str) -> None:
        raise TypeError(
            f"this InFlightLimit's store ({type(self._store).__name__}) is async: "
            f"await limit.a{name}(...) instead of limit.{name}(...)"
        )

    def __repr__(self) -> str:
        return (
            f"InFlightLimit({self._max}, store={type(self._store).__name__}, lease={self._lease!r})"
        )
