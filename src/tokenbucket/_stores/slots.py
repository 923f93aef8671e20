"""In-flight slots: what a store hands out per request in progress (see ``_registry.inflight``).

A store that keeps in-flight counts has three methods: ``acquire_slot(key, limit, lease) ->
Optional[Slot]``, ``release_slot(slot)`` and ``slots_held(key) -> int``, plain or coroutines.
The in-memory count is ``memory.slots.MemorySlots``; the Redis stores keep a sorted set of slot
ids per key, each with a lease.
"""

from __future__ import annotations

from typing import Any

#: The default lease, in seconds: how long a Redis slot outlives a process that died holding it.
DEFAULT_LEASE = 60.0


class Slot:
    """One place among a key's in-flight requests, held until it is released.

    Made by a store; the holder only passes it back to
    [`InFlightLimit.release`][tokenbucket.InFlightLimit.release]. ``key`` is the key it counts
    against, ``id`` the store's name for it (a Redis sorted-set member; None in memory), and
    ``held`` whether it has not been released yet.
    """

    __slots__ = ("held", "id", "key", "owner")

    def __init__(self, key: str, id: Any = None, owner: Any = None) -> None:
        self.key = key
        self.id = id
        #: Who releases it: the store that made it (a Redis store's fallback, for example).
        self.owner = owner
        self.held = True

    def __repr__(self) -> str:
        return f"Slot({self.key!r}, held={self.held})"


def _released(key: str) -> Slot:
    """A slot that holds nothing (for a request let through over the limit by a dry run)."""
    slot = Slot(key)
    slot.held = False
    return slot
