"""Redis stores: one set of limits shared by every process and host that uses the same server.

[`RedisStore`][tokenbucket.redis.RedisStore] (redis-py's ``redis.Redis``) and
[`AsyncRedisStore`][tokenbucket.redis.AsyncRedisStore] (``redis.asyncio.Redis``) keep the
semantics of [`MemoryStore`][tokenbucket.MemoryStore]; only where the state lives differs. Each
decision is one round trip: an EVALSHA of one Lua script (``_lua/bucket.lua``, shipped with the
package) that reads the server's clock, refills, checks, consumes and writes atomically. The
script, its arguments, the parsing of its replies and the failure policy are shared by both
stores; only the call differs (``client.evalsha(...)`` or ``await client.evalsha(...)``).

Keys: each rate-limited key is one Redis hash, ``prefix + key``, holding the bucket state and
the key's rule override. Every call touches that one key, so Redis Cluster works. A hash without
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

Exceptions::

    ConnectionError (builtin)
     └── RedisUnavailableError   an admin call failed in Redis (no answer, or an error)

Importing this module imports redis-py; importing ``tokenbucket`` never does.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import threading
import time
from functools import lru_cache
from importlib import resources
from typing import Any, Dict, Optional, Tuple, Union

try:
    import redis
    import redis.asyncio
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

from ._memory import MemoryStore
from ._rule import EPSILON, Rule
from ._store import Outcome
from ._validate import Number, _number

__all__ = ["AsyncRedisStore", "RedisStore", "RedisUnavailableError"]

_log = logging.getLogger("tokenbucket.redis")

#: The one script every operation runs (see its header for the data layout and arguments).
_SCRIPT = resources.files("tokenbucket").joinpath("_lua").joinpath("bucket.lua").read_text("utf-8")
#: Its SHA1, the name EVALSHA calls it by (Redis computes the same from the text).
_SHA = hashlib.sha1(_SCRIPT.encode("utf-8")).hexdigest().encode("ascii")

# Arguments are sent as bytes, encoded once where possible (redis-py passes bytes through).
_ONE = b"1"
_TAKE = b"take"
_PEEK = b"peek"

#: What a decision survives: every redis-py error and socket errors that escape them.
_ERRORS = (redis.exceptions.RedisError, OSError)
#: The slow ones, which open the circuit breaker: no answer (or no answer yet) from Redis. Other
#: errors (a key of another type, a server out of memory) come back at once, so each decision
#: that meets one just follows the policy.
_OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

_POLICIES = ("fallback", "deny", "allow")

#: Overrides remembered for the fallback policy, at most; beyond it the memory is cleared.
_MAX_SEEN = 10_000

_SyncClient = Union["redis.Redis", "redis.cluster.RedisCluster"]
_AsyncClient = Union["redis.asyncio.Redis", "redis.asyncio.cluster.RedisCluster"]


#: The most buckets the per-process fallback store tracks during an outage (its ``max_keys``):
#: a flood of distinct keys while Redis is down cannot grow memory without bound.
FALLBACK_MAX_KEYS = 100_000


class RedisUnavailableError(ConnectionError):
    """An admin call (``update_rule``, ``remove_rule``, ``reset``, ``get_rule``) failed.

    Raised when Redis did not answer or answered with an error; redis-py's exception is the
    ``__cause__``. The change may
    or may not have been applied: retry it (every admin call is idempotent). Decisions never
    raise this; they follow the store's ``on_error`` policy.
    """


def _parse_number(text: Union[bytes, str]) -> Number:
    """Return the int or float a number the script sent back as text was written from."""
    try:
        return int(text)
    except ValueError:
        return float(text)


@lru_cache(maxsize=1024)
def _rule(capacity: Union[bytes, str], refill_rate: Union[bytes, str]) -> Rule:
    """Return the rule an override's two fields describe (cached: overrides are few)."""
    return Rule(_parse_number(capacity), _parse_number(refill_rate))


class _Base:
    """Everything the two stores share: options, key names, replies, the failure policy.

    No I/O happens here. The circuit breaker: after a failed call, decisions skip Redis for
    ``retry_interval`` seconds; then one caller probes Redis while the others keep skipping,
    and the first answer closes the breaker.
    """

    __slots__ = (
        "_client",
        "_down",
        "_encoded",
        "_fallback",
        "_lock",
        "_log_after",
        "_owned",
        "_policy",
        "_prefix",
        "_retry_at",
        "_retry_interval",
        "_seen",
    )

    def __init__(
        self,
        client: Any,
        prefix: str,
        on_error: str,
        retry_interval: float,
        is_async: bool,
    ) -> None:
        if not callable(getattr(client, "evalsha", None)):
            raise TypeError(f"'client' must be a redis-py client, got {client!r}")
        if inspect.iscoroutinefunction(getattr(client, "execute_command", None)) != is_async:
            wanted, other = ("an async", "Redis") if is_async else ("a sync", "AsyncRedis")
            raise TypeError(
                f"'client' must be {wanted} redis-py client (use {other}Store for this one), "
                f"got {client!r}"
            )
        if not isinstance(prefix, str):
            raise TypeError(f"'prefix' must be a str, got {prefix!r} ({type(prefix).__name__})")
        if on_error not in _POLICIES:
            raise ValueError(f"'on_error' must be one of {_POLICIES!r}, got {on_error!r}")
        interval = _number("retry_interval", retry_interval)
        if not interval >= 0 or not math.isfinite(interval):
            raise ValueError(
                f"'retry_interval' must be a finite number >= 0, got {retry_interval!r}"
            )
        self._client = client
        self._prefix = prefix
        self._policy = on_error
        self._retry_interval = float(interval)
        self._owned = False
        self._lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0
        self._log_after = 0.0
        self._fallback = MemoryStore(max_keys=FALLBACK_MAX_KEYS)
        self._seen: Dict[str, Rule] = {}
        self._encoded: Tuple[Optional[Rule], bytes, bytes] = (None, b"", b"")

    @property
    def client(self) -> Any:
        """The redis-py client the store talks through."""
        return self._client

    @property
    def prefix(self) -> str:
        """Prepended to every key to name its Redis hash."""
        return self._prefix

    @property
    def on_error(self) -> str:
        """What decisions do while Redis is unavailable: 'fallback', 'deny' or 'allow'."""
        return self._policy

    @property
    def retry_interval(self) -> float:
        """Seconds decisions skip Redis after a failure before one of them tries it again."""
        return self._retry_interval

    @property
    def available(self) -> bool:
        """Whether the last call reached Redis (False while the breaker is open)."""
        return not self._down

    def _name(self, key: str) -> bytes:
        # surrogatepass: every str is a valid key, and distinct keys stay distinct.
        return (self._prefix + key).encode("utf-8", "surrogatepass")

    def _take_args(self, key: str, amount: float, default: Rule, commit: bool) -> Tuple[bytes, ...]:
        """Return the script's key and arguments for a decision, as bytes."""
        encoded = self._encoded
        if encoded[0] is not default:  # the default rule's numbers, encoded once per rule
            encoded = (default, _encode(default.capacity), _encode(default.refill_rate))
            self._encoded = encoded
        return (
            self._name(key),
            _TAKE if commit else _PEEK,
            encoded[1],
            encoded[2],
            _ONE if amount == 1 else _encode(amount),
        )

    def _outcome(self, key: str, reply: Any, default: Rule) -> Outcome:
        """Turn a ``take`` reply, ``'<allowed><level>[ <C> <R>]'``, into an outcome."""
        text: str = reply if reply.__class__ is str else reply.decode()
        if " " not in text:
            if self._seen:
                self._seen.pop(key, None)
            return text[0] == "1", float(text[1:]), default
        level, capacity, refill_rate = text[1:].split(" ")
        rule = _rule(capacity, refill_rate)
        self._remember(key, rule)
        return text[0] == "1", float(level), rule

    def _remember(self, key: str, rule: Optional[Rule]) -> None:
        """Keep the override last seen for ``key``, for decisions while Redis is down."""
        seen = self._seen
        if rule is None:
            seen.pop(key, None)
            return
        if len(seen) >= _MAX_SEEN and key not in seen:
            seen.clear()
        seen[key] = rule

    def _skip(self) -> bool:
        """With the breaker open: whether to decide without Redis (False: this caller probes)."""
        now = time.monotonic()
        with self._lock:
            if now < self._retry_at:
                return True
            self._retry_at = now + self._retry_interval  # the others skip while we probe
            return False

    def _failed(self, error: BaseException) -> None:
        """Open the breaker if Redis did not answer; log once per window (at most once a second)."""
        now = time.monotonic()
        outage = isinstance(error, _OUTAGES)
        with self._lock:
            if outage:
                self._down = True
                self._retry_at = now + self._retry_interval
            if now < self._log_after:
                return
            self._log_after = now + max(self._retry_interval, 1.0)
        if outage:
            _log.warning(
                "Redis unavailable (%s: %s); deciding with on_error=%r, retrying in %g s",
                type(error).__name__,
                error,
                self._policy,
                self._retry_interval,
            )
        else:
            _log.warning(
                "Redis refused a call (%s: %s); that decision followed on_error=%r",
                type(error).__name__,
                error,
                self._policy,
            )

    def _recovered(self) -> None:
        """Close the breaker after a successful call."""
        with self._lock:
            if not self._down:
                return
            self._down = False
            self._retry_at = self._log_after = 0.0
            self._fallback = MemoryStore(max_keys=FALLBACK_MAX_KEYS)  # next outage: full buckets
        _log.warning("Redis available again; decisions go through Redis")

    def _degraded(self, key: str, amount: float, default: Rule, commit: bool) -> Outcome:
        """Decide without Redis, following the ``on_error`` policy."""
        rule = self._seen.get(key, default)
        if self._policy == "fallback":
            return self._fallback.take(key, amount, rule, commit)
        if self._policy == "deny":
            return False, 0.0, rule
        # allow: as if every bucket were full, so only a request beyond the capacity is denied.
        if amount > rule.capacity + EPSILON:
            return False, float(rule.capacity), rule
        return True, float(rule.capacity - amount), rule

    def _unavailable(self, call: str, key: str, error: BaseException) -> RedisUnavailableError:
        self._failed(error)
        return RedisUnavailableError(
            f"{call}({key!r}) failed in Redis ({type(error).__name__}: {error}); "
            f"it may not have been applied"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({_describe(self._client)}, prefix={self._prefix!r}, "
            f"on_error={self._policy!r}, retry_interval={self._retry_interval!r})"
        )


def _encode(number: float) -> bytes:
    """Write a number as the script reads it back exactly (``repr``, as redis-py does)."""
    return repr(number).encode("ascii")


def _describe(client: Any) -> str:
    """Name a client by where it connects, not by redis-py's long repr."""
    pool = getattr(client, "connection_pool", None)
    options = getattr(pool, "connection_kwargs", {})
    if "path" in options:
        where = f"unix://{options['path']}"
    else:
        where = f"{options.get('host', '?')}:{options.get('port', '?')}/{options.get('db', 0)}"
    return f"<{type(client).__name__} {where}>"


def _update_args(
    default: Rule, capacity: Optional[float], refill_rate: Optional[float]
) -> Tuple[Any, ...]:
    return (
        "update",
        default.capacity,
        default.refill_rate,
        "" if capacity is None else capacity,
        "" if refill_rate is None else refill_rate,
    )


def _client_options(
    socket_timeout: float, socket_connect_timeout: Optional[float]
) -> Dict[str, float]:
    timeout = float(_number("socket_timeout", socket_timeout))
    if not timeout > 0 or not math.isfinite(timeout):
        raise ValueError(f"'socket_timeout' must be a finite number > 0, got {socket_timeout!r}")
    if socket_connect_timeout is None:
        return {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    connect = float(_number("socket_connect_timeout", socket_connect_timeout))
    if not connect > 0 or not math.isfinite(connect):
        raise ValueError(
            f"'socket_connect_timeout' must be a finite number > 0, got {socket_connect_timeout!r}"
        )
    return {"socket_timeout": timeout, "socket_connect_timeout": connect}


class RedisStore(_Base):
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

    Example::

        >>> from tokenbucket.redis import RedisStore
        >>> store = RedisStore.from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> limits = BucketRegistry(Rule(10, 1.0), store=store)  # doctest: +SKIP
        >>> limits.try_consume("203.0.113.7")  # doctest: +SKIP
        True

    Decisions never raise for Redis trouble: they log a warning (once per ``retry_interval``,
    at most once a second, on the ``tokenbucket.redis`` logger) and follow ``on_error``.
    """

    __slots__ = ()

    def __init__(
        self,
        client: _SyncClient,
        *,
        prefix: str = "tokenbucket:",
        on_error: str = "fallback",
        retry_interval: float = 1.0,
    ) -> None:
        super().__init__(client, prefix, on_error, retry_interval, is_async=False)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = 0.5,
        socket_connect_timeout: Optional[float] = None,
        prefix: str = "tokenbucket:",
        on_error: str = "fallback",
        retry_interval: float = 1.0,
        **client_options: Any,
    ) -> RedisStore:
        """Connect to ``url`` (``redis://``, ``rediss://``, ``unix://``) with bounded timeouts.

        The client waits at most ``socket_timeout`` seconds for a reply and
        ``socket_connect_timeout`` (default: ``socket_timeout``) to connect, and retries a
        broken connection once, at once, never a timeout; redis-py's own defaults (in 8.x: 5 s
        timeouts and 10 retries with backoff) could hold a request for most of a minute.
        ``client_options`` go to ``redis.Redis.from_url`` and override these.
        [`close`][tokenbucket.redis.RedisStore.close] closes the client.
        """
        options: Dict[str, Any] = {
            **_client_options(socket_timeout, socket_connect_timeout),
            "retry": redis.retry.Retry(
                redis.backoff.NoBackoff(), 1, (redis.exceptions.ConnectionError,)
            ),
            **client_options,
        }
        store = cls(
            redis.Redis.from_url(url, **options),
            prefix=prefix,
            on_error=on_error,
            retry_interval=retry_interval,
        )
        store._owned = True
        return store

    def close(self) -> None:
        """Close the client if this store created it (``from_url``); otherwise do nothing."""
        if self._owned:
            self._client.close()

    def try_take(self, key: str, amount: int, default: Rule, /) -> bool:
        """See [`Store.try_take`][tokenbucket.Store.try_take]: `take`'s answer, nothing more."""
        return self.take(key, amount, default, True)[0]

    def take(self, key: str, amount: float, default: Rule, commit: bool, /) -> Outcome:
        """See [`Store.take`][tokenbucket.Store.take]. One EVALSHA; never raises for Redis."""
        if self._down and self._skip():
            return self._degraded(key, amount, default, commit)
        args = self._take_args(key, amount, default, commit)
        try:
            try:
                reply = self._client.evalsha(_SHA, _ONE, *args)
            except redis.exceptions.NoScriptError:  # a new or flushed server: load it once
                self._client.script_load(_SCRIPT)
                reply = self._client.evalsha(_SHA, _ONE, *args)
        except _ERRORS as error:
            self._failed(error)
            return self._degraded(key, amount, default, commit)
        if self._down:
            self._recovered()
        return self._outcome(key, reply, default)

    def _run(self, call: str, key: str, *args: Any) -> Any:
        """Run the script for an admin call; raise RedisUnavailableError if Redis fails."""
        name = self._name(key)
        try:
            try:
                reply = self._client.evalsha(_SHA, _ONE, name, *args)
            except redis.exceptions.NoScriptError:
                self._client.script_load(_SCRIPT)
                reply = self._client.evalsha(_SHA, _ONE, name, *args)
        except _ERRORS as error:
            raise self._unavailable(call, key, error) from error
        if self._down:
            self._recovered()
        return reply

    def get_rule(self, key: str, /) -> Optional[Rule]:
        """See [`Store.get_rule`][tokenbucket.Store.get_rule]. Raises RedisUnavailableError."""
        try:
            capacity, refill_rate = self._client.hmget(self._name(key), "C", "R")
        except _ERRORS as error:
            raise self._unavailable("get_rule", key, error) from error
        if self._down:
            self._recovered()
        rule = None if capacity is None else _rule(capacity, refill_rate)
        self._remember(key, rule)
        return rule

    def update_rule(
        self,
        key: str,
        default: Rule,
        capacity: Optional[float],
        refill_rate: Optional[float],
        /,
    ) -> Rule:
        """See [`Store.update_rule`][tokenbucket.Store.update_rule]. Atomic; raises on outage."""
        reply = self._run("update_rule", key, *_update_args(default, capacity, refill_rate))
        rule = _rule(reply[0], reply[1])
        self._remember(key, rule)
        return rule

    def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        """See [`Store.remove_rule`][tokenbucket.Store.remove_rule]. Atomic; raises on outage."""
        reply = self._run("remove_rule", key, "remove", default.capacity, default.refill_rate)
        self._remember(key, None)
        return None if reply is None else _rule(reply[0], reply[1])

    def reset(self, key: str, /) -> None:
        """See [`Store.reset`][tokenbucket.Store.reset]. Raises RedisUnavailableError."""
        self._run("reset", key, "reset", "", "")


class AsyncRedisStore(_Base):
    """An [`AsyncStore`][tokenbucket.AsyncStore] in Redis, through ``redis.asyncio``.

    The same store as [`RedisStore`][tokenbucket.redis.RedisStore] (same script, keys, options
    and failure policy), with coroutine methods: a registry using it is driven through its
    ``a``-prefixed methods, and the event loop never waits on the network.

    Args:
        client: a ``redis.asyncio.Redis`` (or ``redis.asyncio.cluster.RedisCluster``).
        prefix: see [`RedisStore`][tokenbucket.redis.RedisStore].
        on_error: see [`RedisStore`][tokenbucket.redis.RedisStore].
        retry_interval: see [`RedisStore`][tokenbucket.redis.RedisStore].

    Example::

        >>> from tokenbucket.redis import AsyncRedisStore
        >>> store = AsyncRedisStore.from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> limits = BucketRegistry(Rule(10, 1.0), store=store)  # doctest: +SKIP
        >>> await limits.atry_consume("203.0.113.7")  # doctest: +SKIP
        True
    """

    __slots__ = ()

    def __init__(
        self,
        client: _AsyncClient,
        *,
        prefix: str = "tokenbucket:",
        on_error: str = "fallback",
        retry_interval: float = 1.0,
    ) -> None:
        super().__init__(client, prefix, on_error, retry_interval, is_async=True)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = 0.5,
        socket_connect_timeout: Optional[float] = None,
        prefix: str = "tokenbucket:",
        on_error: str = "fallback",
        retry_interval: float = 1.0,
        **client_options: Any,
    ) -> AsyncRedisStore:
        """Connect to ``url`` with bounded timeouts; see [`RedisStore.from_url`][tokenbucket.redis.RedisStore.from_url].

        No connection is made until the first call. The store must be used from one event loop
        (redis-py's asyncio connections belong to the loop that opened them); on Python 3.9 also
        create it while that loop runs (for example in an ASGI lifespan startup).
        [`aclose`][tokenbucket.redis.AsyncRedisStore.aclose] closes the client.
        """  # noqa: E501 - a cross-reference cannot be wrapped
        options: Dict[str, Any] = {
            **_client_options(socket_timeout, socket_connect_timeout),
            "retry": redis.asyncio.retry.Retry(
                redis.backoff.NoBackoff(), 1, (redis.exceptions.ConnectionError,)
            ),
            **client_options,
        }
        store = cls(
            redis.asyncio.Redis.from_url(url, **options),
            prefix=prefix,
            on_error=on_error,
            retry_interval=retry_interval,
        )
        store._owned = True
        return store

    async def aclose(self) -> None:
        """Close the client if this store created it (``from_url``); otherwise do nothing."""
        if self._owned:
            await self._client.aclose()

    async def try_take(self, key: str, amount: int, default: Rule, /) -> bool:
        """See [`Store.try_take`][tokenbucket.Store.try_take]: `take`'s answer, nothing more."""
        return (await self.take(key, amount, default, True))[0]

    async def take(self, key: str, amount: float, default: Rule, commit: bool, /) -> Outcome:
        """See [`Store.take`][tokenbucket.Store.take]. One EVALSHA; never raises for Redis."""
        if self._down and self._skip():
            return self._degraded(key, amount, default, commit)
        args = self._take_args(key, amount, default, commit)
        try:
            try:
                reply = await self._client.evalsha(_SHA, _ONE, *args)
            except redis.exceptions.NoScriptError:  # a new or flushed server: load it once
                await self._client.script_load(_SCRIPT)
                reply = await self._client.evalsha(_SHA, _ONE, *args)
        except _ERRORS as error:
            self._failed(error)
            return self._degraded(key, amount, default, commit)
        if self._down:
            self._recovered()
        return self._outcome(key, reply, default)

    async def _run(self, call: str, key: str, *args: Any) -> Any:
        """Run the script for an admin call; raise RedisUnavailableError if Redis fails."""
        name = self._name(key)
        try:
            try:
                reply = await self._client.evalsha(_SHA, _ONE, name, *args)
            except redis.exceptions.NoScriptError:
                await self._client.script_load(_SCRIPT)
                reply = await self._client.evalsha(_SHA, _ONE, name, *args)
        except _ERRORS as error:
            raise self._unavailable(call, key, error) from error
        if self._down:
            self._recovered()
        return reply

    async def get_rule(self, key: str, /) -> Optional[Rule]:
        """See [`Store.get_rule`][tokenbucket.Store.get_rule]. Raises RedisUnavailableError."""
        try:
            capacity, refill_rate = await self._client.hmget(self._name(key), "C", "R")
        except _ERRORS as error:
            raise self._unavailable("get_rule", key, error) from error
        if self._down:
            self._recovered()
        rule = None if capacity is None else _rule(capacity, refill_rate)
        self._remember(key, rule)
        return rule

    async def update_rule(
        self,
        key: str,
        default: Rule,
        capacity: Optional[float],
        refill_rate: Optional[float],
        /,
    ) -> Rule:
        """See [`Store.update_rule`][tokenbucket.Store.update_rule]. Atomic; raises on outage."""
        reply = await self._run("update_rule", key, *_update_args(default, capacity, refill_rate))
        rule = _rule(reply[0], reply[1])
        self._remember(key, rule)
        return rule

    async def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        """See [`Store.remove_rule`][tokenbucket.Store.remove_rule]. Atomic; raises on outage."""
        args = ("remove", default.capacity, default.refill_rate)
        reply = await self._run("remove_rule", key, *args)
        self._remember(key, None)
        return None if reply is None else _rule(reply[0], reply[1])

    async def reset(self, key: str, /) -> None:
        """See [`Store.reset`][tokenbucket.Store.reset]. Raises RedisUnavailableError."""
        await self._run("reset", key, "reset", "", "")
