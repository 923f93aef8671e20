r"""In-flight slots in Redis, without I/O: the plans the Redis stores drive (see ``logic``).

Each key's slots are one sorted set, ``prefix + b"\xffin-flight:" + key`` (prefix and key in
UTF-8): a member per slot held (a random id), scored by the end of its lease in server
milliseconds (Stripe's concurrency limiter has the same shape). Acquiring is one EVALSHA of
``lua/inflight.lua`` (drop expired members, count, add); releasing is one ZREM of the slot's id.
Every call touches one key, so Redis Cluster needs no hash tag.

The byte ``0xff`` keeps the sets apart from every bucket hash, whatever the keys and prefixes: a
bucket hash is named ``(prefix + key).encode("utf-8", "surrogatepass")``, and UTF-8 never
contains ``0xff``, so no bucket key of any store can name a set (before, a raw registry key
``"in-flight\0k"`` named ``k``'s set and hit WRONGTYPE). Two sets cannot share a name either:
the prefix ends at the first ``0xff``. The sets still start with the prefix, so key patterns on
it (``SCAN MATCH``, ACL ``~tokenbucket:*``) cover them.

Failures follow the store's ``on_error`` policy and circuit breaker, as decisions do: while
Redis is unavailable ``fallback`` counts slots in this process (`MemorySlots`: the cap holds
per process), ``deny`` refuses every slot, ``allow`` grants an untracked one. A release that
cannot reach Redis (it fails, or the breaker is open) is kept: the next call on that key that
reaches Redis (an acquire, a release, a count) removes it first, in the same round trip, so a
short outage does not shut the key out until the lease ends. Such releases are kept for at most
`PENDING_MAX` slots (beyond, the lease frees them).

Applied once: acquiring twice with one slot id (a client sending the call again after losing
its reply) takes the slot once and answers 1 both times; releasing is a ZREM, idempotent.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from importlib import resources
from typing import Any, Dict, List, Optional, Tuple

import redis.exceptions

from ..memory.slots import MemorySlots
from ..slots import Slot
from .failure import _ERRORS
from .logic import Logic, Plan

_LUA = resources.files(__package__).joinpath("lua")
_SCRIPT = _LUA.joinpath("inflight.lua").read_text("utf-8")
_SHA = hashlib.sha1(_SCRIPT.encode("utf-8")).hexdigest().encode("ascii")
_ACQUIRE = b"acquire"
_COUNT = b"count"
#: Between the store's prefix and the key: ``0xff``, a byte no UTF-8 text (so no bucket hash)
#: holds, then a readable word.
_INFIX = b"\xffin-flight:"
#: Releases kept while Redis cannot be reached, at most (the lease frees the others).
PENDING_MAX = 10_000


class _Untracked:
    """The owner of a slot granted without Redis under ``on_error="allow"``: nothing to free."""

    __slots__ = ()

    def release_slot(self, slot: Slot, /) -> None:
        slot.held = False


_UNTRACKED = _Untracked()


class SlotLogic:
    """The in-flight plans of one Redis store, sharing its `Logic` (prefix, policy, breaker)."""

    __slots__ = ("_lock", "_pending", "_pending_count", "fallback", "logic")

    def __init__(self, logic: Logic) -> None:
        self.logic = logic
        #: Slots taken while Redis is down (``on_error="fallback"``); released here too.
        self.fallback = MemorySlots()
        #: Ids of slots released while Redis could not be reached, by key.
        self._pending: Dict[str, List[bytes]] = {}
        self._pending_count = 0
        self._lock = threading.Lock()

    def name(self, key: str) -> bytes:
        """The sorted set of ``key``'s slots."""
        prefix = self.logic.prefix.encode("utf-8", "surrogatepass")
        return prefix + _INFIX + key.encode("utf-8", "surrogatepass")

    def new(self, key: str, owner: Any) -> Slot:
        """A slot with a fresh random id, not yet taken (see `acquire`)."""
        return Slot(key, os.urandom(9).hex().encode("ascii"), owner)

    def acquire(self, slot: Slot, limit: int, lease: float) -> Plan[Optional[Slot]]:
        """Take ``slot`` if its key holds fewer than ``limit``: return it, or None.

        While Redis is unavailable, return what the ``on_error`` policy gives instead (a slot
        of the fallback, an untracked one, or None). Never raises for Redis trouble.
        """
        logic = self.logic
        if logic.breaker.down and logic.breaker.skip():
            return self._degraded(slot.key, limit)
        released = self._take_pending(slot.key)
        args = (_ACQUIRE, b"%d" % limit, b"%d" % math.ceil(lease * 1000), slot.id, *released)
        try:
            taken = yield from self._script(slot.key, args)
        except _ERRORS as error:
            logic._failed(error)
            self._keep(slot.key, released)
            return self._degraded(slot.key, limit)
        if logic.breaker.down:
            logic._recovered()
        return slot if taken else None

    def release(self, slot: Slot) -> Plan[None]:
        """ZREM the slot's id; if Redis cannot be reached, keep it for the key's next call."""
        logic = self.logic
        if logic.breaker.down and logic.breaker.skip():
            self._keep(slot.key, [slot.id])
            slot.held = False
            return
        released = [slot.id, *self._take_pending(slot.key)]
        try:
            yield ("zrem", (self.name(slot.key), *released))
        except _ERRORS as error:
            logic._failed(error)
            self._keep(slot.key, released)
            slot.held = False
            return
        # Only now: a release cancelled on its way (an ASGI task cancelled) is tried again.
        slot.held = False
        if logic.breaker.down:
            logic._recovered()

    def count(self, key: str) -> Plan[int]:
        """The slots ``key`` holds; raises RedisUnavailableError if Redis fails."""
        released = self._take_pending(key)
        try:
            held = yield from self._script(key, (_COUNT, *released))
        except _ERRORS as error:
            self._keep(key, released)
            raise self.logic._unavailable("slots_held", key, error) from error
        return int(held)

    def _take_pending(self, key: str) -> List[bytes]:
        """The ids of ``key``'s slots released while Redis could not be reached (now sent)."""
        if not self._pending:
            return []
        with self._lock:
            released = self._pending.pop(key, [])
            self._pending_count -= len(released)
        return released

    def _keep(self, key: str, released: List[bytes]) -> None:
        """Keep releases that did not reach Redis for ``key``'s next call (at most PENDING_MAX)."""
        with self._lock:
            if not released or self._pending_count + len(released) > PENDING_MAX:
                return  # the lease frees them
            self._pending.setdefault(key, []).extend(released)
            self._pending_count += len(released)

    def _script(self, key: str, args: Tuple[bytes, ...]) -> Plan[Any]:
        call = (_SHA, b"1", self.name(key), *args)
        try:
            return (yield ("evalsha", call))
        except redis.exceptions.NoScriptError:  # a new or flushed server: load it once
            yield ("script_load", (_SCRIPT,))
            return (yield ("evalsha", call))

    def _degraded(self, key: str, limit: int) -> Optional[Slot]:
        """A slot without Redis, following the ``on_error`` policy."""
        policy = self.logic.policy
        if policy == "fallback":
            return self.fallback.acquire_slot(key, limit, 0.0)
        if policy == "deny":
            return None
        return Slot(key, None, _UNTRACKED)
