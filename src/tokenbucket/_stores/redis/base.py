"""What the two Redis stores share besides the logic: construction, properties and ``_drive``.

What belongs here: ``_Store``, the base of [`RedisStore`][tokenbucket.redis.RedisStore] and
[`AsyncRedisStore`][tokenbucket.redis.AsyncRedisStore]: checking the client and the options,
``from_url`` (bounded timeouts, one retry), the public properties, ``_drive`` (the one loop that
makes the calls a plan asks for, awaited or not), taking an in-flight slot, and the ``repr``. What
it must not know: what any operation sends or how a reply reads (the plans in
``_stores.redis.logic``, ``_stores.redis.inflight`` and ``_stores.redis.listing``), nor anything one
of the two stores does alone (``RedisStore._run``, the async store's pipelining): those stay in
``tokenbucket.redis``, the public module, which is imported first and checks that redis-py is
installed.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar, Dict, Generic, Optional, Type, TypeVar, Union, cast
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.backoff
import redis.cluster
import redis.exceptions

from ..._core.validate import _number
from ..slots import Slot
from .failure import POLICIES
from .inflight import SlotLogic
from .late import LateClient, needs_late_client
from .logic import Logic, Plan
from .pipeline import Pipeliner

T = TypeVar("T")
C = TypeVar("C")
S = TypeVar("S", bound="_Store[Any]")

_SyncClient = Union["redis.Redis", "redis.cluster.RedisCluster"]
_AsyncClient = Union["redis.asyncio.Redis", "redis.asyncio.cluster.RedisCluster"]


class _Store(Generic[C]):
    """What the two stores share besides the logic: options, properties, ``from_url``."""

    __slots__ = ("_client", "_logic", "_owned", "_slots")

    #: Whether the store's client is redis.asyncio's (checked, so a mix-up fails at once).
    _is_async: ClassVar[bool]
    #: The client classes' ``from_url`` (one server, a cluster) and the retry class it uses.
    _connect: ClassVar[Any]
    _connect_cluster: ClassVar[Any]
    _retry: ClassVar[Any]

    def __init__(
        self,
        client: C,
        *,
        prefix: str = "tokenbucket:",
        on_error: str = "fallback",
        retry_interval: float = 1.0,
    ) -> None:
        if not callable(getattr(client, "evalsha", None)):
            raise TypeError(f"'client' must be a redis-py client, got {client!r}")
        if inspect.iscoroutinefunction(getattr(client, "execute_command", None)) != self._is_async:
            wanted, other = ("an async", "Redis") if self._is_async else ("a sync", "AsyncRedis")
            raise TypeError(
                f"'client' must be {wanted} redis-py client (use {other}Store for this one), "
                f"got {client!r}"
            )
        if not isinstance(prefix, str):
            raise TypeError(f"'prefix' must be a str, got {prefix!r} ({type(prefix).__name__})")
        if on_error not in POLICIES:
            raise ValueError(f"'on_error' must be one of {POLICIES!r}, got {on_error!r}")
        interval = _number("retry_interval", retry_interval)
        if not interval >= 0 or not math.isfinite(interval):
            raise ValueError(
                f"'retry_interval' must be a finite number >= 0, got {retry_interval!r}"
            )
        self._client = client
        self._owned = False
        if isinstance(client, LateClient):
            cluster = client.is_cluster
        else:
            cluster = getattr(client, "nodes_manager", None) is not None
        self._logic = Logic(prefix, on_error, float(interval), cluster)
        self._slots = SlotLogic(self._logic)

    @classmethod
    def from_url(
        cls: Type[S],
        url: str,
        *,
        socket_timeout: float = 0.5,
        socket_connect_timeout: Optional[float] = None,
        prefix: str = "tokenbucket:",
        on_error: str = "fallback",
        retry_interval: float = 1.0,
        cluster: bool = False,
        **client_options: Any,
    ) -> S:
        """Connect to ``url`` (``redis://``, ``rediss://``, ``unix://``) with bounded timeouts.

        The client waits at most ``socket_timeout`` seconds for a reply and
        ``socket_connect_timeout`` (default: ``socket_timeout``) to connect, and retries a
        broken connection once, at once, never a timeout; redis-py's own defaults (in 8.x: 5 s
        timeouts and 10 retries with backoff) could hold a request for most of a minute.
        A call sent again after its reply was lost is applied once, with this client or any
        other (see ``tokenbucket._stores.redis.once``). ``client_options`` go to
        ``redis.Redis.from_url`` (``redis.asyncio.Redis.from_url``) and override these.
        ``close`` (``aclose``) closes the client.

        With ``cluster=True`` the client is redis-py's Redis Cluster client
        (``redis.cluster.RedisCluster``, ``redis.asyncio.cluster.RedisCluster``) and ``url``
        names any one node: the client finds the others, follows the slots as they move and,
        after a connection error, reads the cluster's layout again and retries once. The sync
        client connects to the cluster as it is built (redis-py's behaviour), so it raises
        ``redis.exceptions.RedisClusterException`` if no node answers; the async one connects
        at its first call.
        """
        options: Dict[str, Any] = {
            **_client_options(socket_timeout, socket_connect_timeout),
            "retry": cls._retry(redis.backoff.NoBackoff(), 1, (redis.exceptions.ConnectionError,)),
            **client_options,
        }
        connect = cls._connect_cluster if cluster else cls._connect
        store = cls(
            LateClient(connect, url, options, cluster)  # Python 3.9, see _redis_late
            if cls._is_async and needs_late_client()
            else connect(url, **options),
            prefix=prefix,
            on_error=on_error,
            retry_interval=retry_interval,
        )
        store._owned = True
        return store

    @property
    def client(self) -> C:
        """The redis-py client the store talks through."""
        client = self._client
        if isinstance(client, LateClient) and not needs_late_client():
            return cast(C, client.built())
        return client  # on Python 3.9 outside a loop, the stand-in (see _redis_late)

    @property
    def prefix(self) -> str:
        """Prepended to every key to name its Redis hash."""
        return self._logic.prefix

    @property
    def on_error(self) -> str:
        """What decisions do while Redis is unavailable: 'fallback', 'deny' or 'allow'."""
        return self._logic.policy

    @property
    def retry_interval(self) -> float:
        """Seconds decisions skip Redis after a failure before one of them tries it again."""
        return self._logic.breaker.retry_interval

    @property
    def available(self) -> bool:
        """Whether the last call reached Redis (False while the breaker is open)."""
        return not self._logic.breaker.down

    async def _drive(self, plan: Plan[T], batch: Optional[Pipeliner] = None) -> T:
        """Make each call ``plan`` asks for, feed it the reply or the error, return its answer.

        The one place where the stores differ: an async store awaits each call's reply; a sync
        store has it at once, so this coroutine finishes without suspending (see
        ``RedisStore._run``). With ``batch`` (an async store's decisions), each EVALSHA goes
        through it, to share a pipeline with the calls of other tasks (see ``Pipeliner``).
        """
        client, awaits = self._client, self._is_async
        try:
            call = next(plan)
            while True:
                try:
                    if batch is not None and call[0] == "evalsha":
                        reply = await batch.call(call[1])
                    else:
                        reply = getattr(client, call[0])(*call[1])
                        if awaits:
                            reply = await reply
                except Exception as error:  # the plan decides what it survives
                    call = plan.throw(error)
                else:
                    call = plan.send(reply)
        except StopIteration as done:
            return cast(T, done.value)

    async def _acquire_slot(self, key: str, limit: int, lease: float) -> Optional[Slot]:
        """Take an in-flight slot; if interrupted on the way, take it out of Redis again.

        An ASGI request cancelled while its EVALSHA is in flight may have its slot in Redis
        without knowing it: its id is known beforehand, so it is ZREM'd at once rather than
        left to its lease. (Under trio, whose cancellation also cancels this cleanup, and in the
        rare case the cancelled call reaches Redis after the ZREM, the lease frees it.)
        """
        slots = self._slots
        slot = slots.new(key, self)
        try:
            return await self._drive(slots.acquire(slot, limit, lease))
        except BaseException:
            await self._drive(slots.release(slot))
            raise

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({_describe(self._client)}, prefix={self.prefix!r}, "
            f"on_error={self.on_error!r}, retry_interval={self.retry_interval!r})"
        )


def drive_blocking(client: Any, plan: Plan[T]) -> T:
    """Run ``plan`` to its answer with a blocking client: `_drive`'s loop, without a coroutine.

    A sync decision's own cost is mostly this loop (the rest is redis-py's and the network's),
    so it is written out here: each call the plan asks for is made at once and its reply (or
    error) fed back. An EVALSHA goes straight to ``execute_command``, which is what
    ``client.evalsha`` calls.
    """
    try:
        name, args = next(plan)
        while True:
            try:
                if name == "evalsha":
                    reply = client.execute_command("EVALSHA", *args)
                else:
                    reply = getattr(client, name)(*args)
            except Exception as error:  # the plan decides what it survives
                name, args = plan.throw(error)
            else:
                name, args = plan.send(reply)
    except StopIteration as done:
        return cast(T, done.value)


def _describe(client: Any) -> str:
    """Name a client by where it connects, not by redis-py's long repr."""
    if isinstance(client, LateClient):  # not built yet: say so rather than build it
        url = urlsplit(client.url)  # without a password the URL may hold
        where = f"{url.hostname}:{url.port}{url.path}" if url.hostname else url.path
        return f"<{'RedisCluster' if client.is_cluster else 'Redis'} {where}, not built yet>"
    manager = getattr(client, "nodes_manager", None)  # a cluster client: a node it knows
    if manager is not None:
        nodes = sorted(manager.startup_nodes)
        more = f" +{len(nodes) - 1} nodes" if len(nodes) > 1 else ""
        return f"<{type(client).__name__} {nodes[0] if nodes else '?'}{more}>"
    pool = getattr(client, "connection_pool", None)
    options = getattr(pool, "connection_kwargs", {})
    if "path" in options:
        where = f"unix://{options['path']}"
    else:
        where = f"{options.get('host', '?')}:{options.get('port', '?')}/{options.get('db', 0)}"
    return f"<{type(client).__name__} {where}>"


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
