"""The ``rate_limit`` decorator: a registry in front of plain sync and async functions.

The wrapper is chosen once, at decoration time; both share the decision logic and differ only
in how they wait (``time.sleep`` or ``await asyncio.sleep``).
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any, Awaitable, Callable, Mapping, Optional, TypeVar, Union, cast

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover
    from typing_extensions import ParamSpec

from .._core import aio as _aio
from .._core.decision import Decision, RateLimitExceeded
from .._core.keys import escape_key
from .._core.rule import RATE_GRAMMAR, Rule
from .._core.validate import check_amount
from .._registry.inflight import InFlightLimit
from .._registry.lifecycle import Reservation
from .._registry.limits import Keys
from .._registry.registry import BucketRegistry

P = ParamSpec("P")
R = TypeVar("R")


def rate_limit(
    limiter: Union[BucketRegistry, Rule, Mapping[str, Rule], str],
    *,
    key: Optional[Callable[..., Keys]] = None,
    cost: float = 1,
    wait: bool = False,
    max_wait: float = math.inf,
    sleep: Optional[Callable[[float], Any]] = None,
    in_flight: Optional[InFlightLimit] = None,
    settle: Optional[Callable[[Any], float]] = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Limit how often the decorated function runs; works on sync and async functions.

    Args:
        limiter: a [`BucketRegistry`][tokenbucket.BucketRegistry] (share it to share limits),
            or a [`Rule`][tokenbucket.Rule] or a rate string (``"5/second"``,
            ``"5/minute;100/day"``: see [`Rule.parse`][tokenbucket.Rule.parse]) for a private
            registry, or a mapping of limit names
            to rules for a private registry of several limits (``{"burst": Rule(5, 1.0),
            "daily": Rule.per(100, 86400)}``: a call must pass all of them).
        key: called with the call's arguments, returns the bucket key (e.g. ``lambda user,
            **kw: user.id``); with several limits it may return a key per limit
            (``lambda user: {"user": user.id, "org": user.org_id}``). Default: one bucket for
            the function, named by its module and qualified name (``"app.views.search"``),
            shared by every process on a shared store.
            A lambda has no name to tell it from another (two are both ``<lambda>``), so its
            default key adds the function object's ``id`` (``"app.<lambda>#1407..."``): one
            bucket per lambda, but per process too; pass ``key`` to share one across processes.
        cost: tokens each call takes (default 1).
        wait: if True, a call without its tokens waits for them instead of raising, as long
            as the wait fits in ``max_wait`` seconds (it raises at once if not, and always when
            the call can never pass: ``retry_after`` is ``inf``). Waiting is a reservation
            ([`BucketRegistry.acquire`][tokenbucket.BucketRegistry.acquire]): the tokens are
            taken at once, into debt behind the earlier waiters, and the call sleeps once,
            exactly until they are earned, so waiters run first come, first served. A waiter
            interrupted in its sleep (cancelled, KeyboardInterrupt) gives its tokens back.
        max_wait: the longest a call waits, in seconds (default: no limit).
        sleep: how to wait, for tests: a function of seconds, e.g.
            [`ManualClock.sleep`][tokenbucket.ManualClock.sleep]; for async functions it may
            return an awaitable. Default ``time.sleep`` / ``asyncio.sleep``.
        in_flight: an [`InFlightLimit`][tokenbucket.InFlightLimit]: at most that many calls per
            key running at once. A call takes its slot before its tokens (a call refused for
            concurrency takes none) and holds it until it returns or raises, including while
            it waits for tokens (``wait=True``). Calls over it are refused at once, never
            waited for.
        settle: for a cost known only from the result: ``settle(result) -> tokens``, e.g.
            ``lambda reply: reply.usage.total_tokens``. The call is admitted on ``cost`` (an
            estimate), and once it returns the difference is charged (which may leave the
            bucket in debt: later calls wait or are refused until it is repaid) or refunded
            (never above full). A call that raises keeps ``cost``. See
            [`Reservation`][tokenbucket.Reservation].

    Raises:
        RateLimitExceeded: from the decorated function when a call is denied (and not waited
            for); it carries the [`Decision`][tokenbucket.Decision], so ``retry_after`` is there.
        InFlightLimitExceeded: from the decorated function when its key already has
            ``in_flight.max_in_flight`` calls running.

    Examples:
        >>> clock = ManualClock()
        >>> @rate_limit(BucketRegistry(Rule(2, 1.0), clock=clock))
        ... def fetch(page):
        ...     return f"page {page}"
        >>> fetch(1), fetch(2)
        ('page 1', 'page 2')
        >>> fetch(3)
        Traceback (most recent call last):
        ...
        tokenbucket._core.decision.RateLimitExceeded: rate limit exceeded: retry after 1.000 s
    """
    registry = _registry(limiter)
    amount = check_amount(cost, "cost")
    if not isinstance(wait, bool):
        raise TypeError(f"'wait' must be a bool, got {wait!r}")
    if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)):
        raise TypeError(f"'max_wait' must be a number, got {max_wait!r}")
    if not max_wait >= 0:
        raise ValueError(f"'max_wait' must be >= 0, got {max_wait!r}")
    if key is not None and not callable(key):
        raise TypeError(f"'key' must be a callable, got {key!r}")
    if sleep is not None and not callable(sleep):
        raise TypeError(f"'sleep' must be a callable, got {sleep!r}")
    if in_flight is not None and not isinstance(in_flight, InFlightLimit):
        raise TypeError(f"'in_flight' must be an InFlightLimit or None, got {in_flight!r}")
    if settle is not None and not callable(settle):
        raise TypeError(f"'settle' must be a callable or None, got {settle!r}")

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if not callable(func):
            raise TypeError(f"rate_limit decorates callables, got {func!r}")
        default_key = escape_key(_default_key(func))

        def key_of(args: Any, kwargs: Any) -> Keys:
            # Escaped like every key (see _keys.py): on a registry whose store the middleware
            # shares, no key can reach one of its route namespaces.
            if key is None:
                return default_key
            given = key(*args, **kwargs)
            if isinstance(given, Mapping):  # a key per limit: the registry checks the names
                return {name: escape_key(value) for name, value in given.items()}
            return escape_key(given)

        if _aio.iscoroutinefunction(func):
            store = registry.store
            for what, user in (("registry's", store), ("in_flight", in_flight)):
                if getattr(user, "blocking", False):
                    used = getattr(user, "store", user)
                    raise TypeError(
                        f"{func!r} is async but the {what} store, {type(used).__name__}, blocks "
                        "the event loop on every call; use tokenbucket.redis.AsyncRedisStore"
                    )

            async def async_call(name: Keys, args: Any, kwargs: Any) -> Any:
                if wait:
                    await registry.aacquire(name, amount, max_wait=max_wait, sleep=sleep)
                    decision = _TAKEN
                else:
                    decision = await registry.aconsume(name, amount)
                    if not decision.allowed:
                        raise RateLimitExceeded(decision)
                result = await cast(Callable[P, Awaitable[Any]], func)(*args, **kwargs)
                if settle is not None:
                    await Reservation(registry, name, amount, decision).asettle(settle(result))
                return result

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                name = key_of(args, kwargs)
                if in_flight is None:
                    return await async_call(name, args, kwargs)
                async with in_flight.ahold(_slot_key(name)):
                    return await async_call(name, args, kwargs)

            return cast(Callable[P, R], async_wrapper)

        for what, is_async in (
            ("registry's", registry.is_async),
            ("in_flight", in_flight is not None and in_flight.is_async),
        ):
            if is_async:
                raise TypeError(
                    f"{func!r} is synchronous but the {what} store is async; "
                    "decorate an async function or use a synchronous store"
                )

        def call(name: Keys, args: Any, kwargs: Any) -> R:
            if wait:
                registry.acquire(name, amount, max_wait=max_wait, sleep=sleep)
                decision = _TAKEN
            else:
                decision = registry.consume(name, amount)
                if not decision.allowed:
                    raise RateLimitExceeded(decision)
            result = func(*args, **kwargs)
            if settle is not None:
                Reservation(registry, name, amount, decision).settle(settle(result))
            return result

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            name = key_of(args, kwargs)
            if in_flight is None:
                return call(name, args, kwargs)
            with in_flight.hold(_slot_key(name)):
                return call(name, args, kwargs)

        return wrapper

    return decorate


#: What a call admitted by waiting settles against: its tokens were taken.
_TAKEN = Decision(True, 0.0, 0.0, 0.0, 0.0)


def _registry(limiter: object) -> BucketRegistry:
    if isinstance(limiter, BucketRegistry):
        return limiter
    if isinstance(limiter, (Rule, Mapping, str)):
        return BucketRegistry(limiter)
    raise TypeError(
        f"'limiter' must be a BucketRegistry, a Rule (or a mapping of names to Rules) or "
        f"{RATE_GRAMMAR}; got {limiter!r}"
    )


def _slot_key(name: Keys) -> str:
    """The in-flight key of a call: its key, or its keys per limit joined by NUL (escaped)."""
    return name if isinstance(name, str) else "\0".join(name.values())


def _default_key(func: Callable[..., Any]) -> str:
    """``module.qualname``, unique per function object for lambdas (``#`` and its ``id``)."""
    qualname = getattr(func, "__qualname__", None)
    name = f"{getattr(func, '__module__', '')}.{func if qualname is None else qualname}"
    if qualname is not None and "<lambda>" in qualname:
        # Every lambda of a module (or of one enclosing function) has the same qualified name:
        # they would share one bucket. Named functions keep the name alone, so that the ones a
        # factory makes anew (``create_app.<locals>.search``) share their bucket, as before.
        return f"{name}#{id(func)}"
    return name
