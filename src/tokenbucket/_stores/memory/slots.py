"""In-flight counts in one process: a dict of counts under a lock."""

from __future__ import annotations

import threading
from typing import Dict, Optional

from ..slots import Slot


class MemorySlots:
    """In-flight counts in this process: a dict of counts under a lock.

    A key's entry is dropped when its count returns to 0, so memory follows the number of keys
    with a request in progress, never the number seen. There is no lease: a slot lives until it
    is released, so release every slot you acquire (`InFlightLimit.hold` does).
    """

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: Dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire_slot(self, key: str, limit: int, lease: float, /) -> Optional[Slot]:
        """Take a slot of ``key`` if it holds fewer than ``limit``; else None."""
        counts = self._counts
        with self._lock:
            held = counts.get(key, 0)
            if held >= limit:
                return None
            counts[key] = held + 1
        return Slot(key, None, self)

    def release_slot(self, slot: Slot, /) -> None:
        """Give ``slot`` back, once: a released slot is left alone."""
        counts = self._counts
        with self._lock:
            if not slot.held:
                return
            slot.held = False
            key = slot.key
            held = counts[key] - 1
            if held:
                counts[key] = held
            else:
                del counts[key]

    def slots_held(self, key: str, /) -> int:
        """How many slots ``key`` holds now."""
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        """How many keys hold a slot (the entries in memory)."""
        return len(self._counts)
