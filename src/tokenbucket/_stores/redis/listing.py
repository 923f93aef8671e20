"""The Redis stores' rules beyond one key's: listing overrides, imports, the shared document.

Each key is one hash, ``store prefix + key``; an override is its fields ``C`` and ``R``. A page
is one ``SCAN cursor MATCH prefix* COUNT count TYPE hash`` and one EVAL reading ``C`` and ``R``
of every hash it returned, one round trip (hashes without ``C`` are buckets without an
override, and are skipped). SCAN guarantees that a
key present from the first page to the last is returned at least once (rarely twice, while
Redis rehashes), and its ``COUNT`` is a hint, so a page may hold fewer entries than asked, or
none, before the end. On a Redis Cluster each master has its own keyspace and SCAN reaches one
node: listing raises ValueError there (a documented limitation).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, TypeVar

from ..._core.rule import Rule
from ..._core.validate import show
from ..store import StorePage
from .failure import _ERRORS
from .logic import _SCRIPT, _SHA, Logic, Plan, _encode, _rule

T = TypeVar("T")

_GLOB = re.compile(r"([\\*?\[\]])")
#: Reads the override fields of every key it is given (one page's), in one round trip.
_READ = (
    "local out = {} for i, key in ipairs(KEYS) do "
    "out[i] = redis.call('HMGET', key, 'C', 'R') end return out"
)


def list_rules(logic: Logic, prefix: str, cursor: Optional[str], count: int) -> Plan[StorePage]:
    """A page of the overrides of keys starting with ``prefix``; see the module docstring."""
    if logic.cluster:
        raise ValueError(
            "listing overrides is not supported on a Redis Cluster (SCAN reaches one node)"
        )
    start = 0
    if cursor is not None:
        # SCAN's cursors are unsigned 64-bit; Redis refuses others ("invalid cursor"), which
        # is the caller's mistake, not the store failing.
        if not (cursor.isascii() and cursor.isdigit()) or not 0 < int(cursor) < 2**64:
            raise ValueError(f"'cursor' is not one this store returned, got {show(cursor)}")
        start = int(cursor)
    pattern = _GLOB.sub(r"\\\1", logic.prefix + prefix) + "*"
    try:
        following, names = yield (
            "scan",
            (start, pattern.encode("utf-8", "surrogatepass"), count, "hash"),
        )
        page: List[Tuple[str, Rule]] = []
        fields = (yield ("eval", (_READ, len(names), *names))) if names else []
        for name, (capacity, refill_rate) in zip(names, fields):
            if capacity is not None:
                page.append((_key(logic, name), _rule(capacity, refill_rate)))
    except _ERRORS as error:
        raise logic._unavailable("list_rules", prefix, error) from error
    following = int(following)
    return (None if following == 0 else str(following)), page


def _key(logic: Logic, name: Any) -> str:
    text: str = name if isinstance(name, str) else name.decode("utf-8", "surrogatepass")
    return text[len(logic.prefix) :]


def shared_name(logic: Logic, name: str) -> bytes:
    """The Redis key of the shared document ``name``: ``prefix``, byte 0xff, ``rules:``, name.

    UTF-8 never holds the byte 0xff, so no bucket key (a hash named ``prefix + key`` in UTF-8)
    can name it, and it still starts with the prefix (``SCAN``, ACL key patterns).
    """
    prefix = logic.prefix.encode("utf-8", "surrogatepass")
    return prefix + b"\xffrules:" + name.encode("utf-8", "surrogatepass")


def get_shared(logic: Logic, name: str) -> Plan[Optional[str]]:
    """GET the shared document ``name``; raise RedisUnavailableError if Redis fails."""
    try:
        text = yield ("get", (shared_name(logic, name),))
    except UnicodeDecodeError as error:  # a client that decodes replies (decode_responses)
        text = bytes(error.object)
    except _ERRORS as error:
        raise logic._unavailable("get_shared", name, error) from error
    if text is None or isinstance(text, str):
        return text
    # Bytes that are not UTF-8 (written by something else) are an invalid document, which the
    # registry logs and ignores: kept as lone surrogates, never a UnicodeDecodeError here.
    return str(text.decode("utf-8", "surrogateescape"))


def set_shared(logic: Logic, name: str, text: str) -> Plan[None]:
    """SET the shared document ``name``; raise RedisUnavailableError if Redis fails."""
    try:
        yield ("set", (shared_name(logic, name), text.encode("utf-8")))
    except _ERRORS as error:
        raise logic._unavailable("set_shared", name, error) from error


#: Overrides an import sends per pipeline (one EVALSHA each).
BATCH = 1000


def update_batches(
    logic: Logic, entries: Sequence[Tuple[str, Rule, Rule]]
) -> List[List[Tuple[Any, ...]]]:
    """The EVALSHA arguments setting each ``(key, default, override)``, in batches."""
    calls = [
        (
            _SHA,
            1,
            logic._name(key),
            b"update",
            _encode(default.capacity),
            _encode(default.refill_rate),
            _encode(rule.capacity),
            _encode(rule.refill_rate),
        )
        for key, default, rule in entries
    ]
    return [calls[start : start + BATCH] for start in range(0, len(calls), BATCH)]


async def send_batches(
    client: Any, logic: Logic, entries: Sequence[Tuple[str, Rule, Rule]], awaits: bool
) -> None:
    """Set every override, a pipeline of `BATCH` EVALSHAs at a time (not on a Cluster).

    ``awaits``: whether the client is redis.asyncio's (a sync client's calls return at once,
    so this coroutine then finishes without suspending). Raises RedisUnavailableError if Redis
    fails; the batches sent before stay applied.
    """
    try:
        reply = client.script_load(_SCRIPT)
        if awaits:
            await reply
        for batch in update_batches(logic, entries):
            pipe = client.pipeline(transaction=False)
            for call in batch:
                pipe.evalsha(*call)
            reply = pipe.execute()
            if awaits:
                await reply
    except _ERRORS as error:
        raise logic._unavailable("update_rules", f"<{len(entries)} overrides>", error) from error


class SyncRules:
    """`RedisStore`'s rule methods beyond one key's (a mixin: the store's module stays small)."""

    __slots__ = ()

    _logic: Logic
    _client: Any

    if TYPE_CHECKING:

        def _run(self, plan: Plan[T]) -> T: ...

        def update_rule(
            self,
            key: str,
            default: Rule,
            capacity: Optional[float],
            refill_rate: Optional[float],
            /,
        ) -> Rule: ...

    def list_rules(self, prefix: str, cursor: Optional[str], count: int, /) -> StorePage:
        """A page of overrides (SCAN: see ``Store.list_rules``). Raises RedisUnavailableError."""
        return self._run(list_rules(self._logic, prefix, cursor, count))

    def update_rules(self, entries: Sequence[Tuple[str, Rule, Rule]], /) -> None:
        """Set each ``(key, default, override)`` as `update_rule` would, in pipelines of 1000.

        One EVALSHA per override (each atomic, not the whole); one at a time on a Cluster.
        Raises RedisUnavailableError (the batches sent before stay applied).
        """
        if self._logic.cluster:
            for key, default, rule in entries:
                self.update_rule(key, default, rule.capacity, rule.refill_rate)
            return
        with contextlib.suppress(StopIteration):  # it never suspends: see send_batches
            send_batches(self._client, self._logic, entries, False).send(None)

    def get_shared(self, name: str, /) -> Optional[str]:
        """The shared document ``name`` (one GET). Raises RedisUnavailableError."""
        return self._run(get_shared(self._logic, name))

    def set_shared(self, name: str, text: str, /) -> None:
        """Write the shared document ``name`` (one SET). Raises RedisUnavailableError."""
        self._run(set_shared(self._logic, name, text))


class AsyncRules:
    """`AsyncRedisStore`'s rule methods beyond one key's (see `SyncRules`)."""

    __slots__ = ()

    _logic: Logic
    _client: Any

    if TYPE_CHECKING:

        async def _drive(self, plan: Plan[T], batch: Any = None) -> T: ...

        async def update_rule(
            self,
            key: str,
            default: Rule,
            capacity: Optional[float],
            refill_rate: Optional[float],
            /,
        ) -> Rule: ...

    async def list_rules(self, prefix: str, cursor: Optional[str], count: int, /) -> StorePage:
        """Awaitable `RedisStore.list_rules`."""
        return await self._drive(list_rules(self._logic, prefix, cursor, count))

    async def update_rules(self, entries: Sequence[Tuple[str, Rule, Rule]], /) -> None:
        """Awaitable `RedisStore.update_rules`."""
        if self._logic.cluster:
            for key, default, rule in entries:
                await self.update_rule(key, default, rule.capacity, rule.refill_rate)
            return
        await send_batches(self._client, self._logic, entries, True)

    async def get_shared(self, name: str, /) -> Optional[str]:
        """Awaitable `RedisStore.get_shared`."""
        return await self._drive(get_shared(self._logic, name))

    async def set_shared(self, name: str, text: str, /) -> None:
        """Awaitable `RedisStore.set_shared`."""
        await self._drive(set_shared(self._logic, name, text))
