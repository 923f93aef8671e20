"""The admin API's audit log: one structured record per admin request, refusals summarised.

Knows: the logger ``tokenbucket.admin``, the record's fields and levels, how text from outside
is quoted in a message, and the per-address summary of refused requests. Must not know: HTTP,
requests, registries; never sees a credential (nothing that could carry one is passed in).

Every admin request ends in exactly one call of `AuditLog.done` (through `AuditLog.refused` for
a refusal), which also calls the ``on_admin(action, status)`` hook if one is set: the single
place a metrics counter of admin requests can hook into.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

#: The logger every admin record goes to.
LOGGER_NAME = "tokenbucket.admin"
#: The name of the `logging.LogRecord` attribute holding a record's fields (a dict).
FIELD = "tokenbucket"
#: Refusals from one address within this many seconds of the one logged are only counted.
DEFAULT_WINDOW = 60.0
#: How many addresses the refusal summary tracks at most (the oldest is dropped first).
DEFAULT_MAX_ADDRESSES = 1000
_LONGEST = 200  # characters of a quoted value in a message; the fields keep all of it

_log = logging.getLogger(LOGGER_NAME)

#: ``on_admin(action, status)``: called once per admin request, after its record is logged.
AdminHook = Callable[[str, int], None]


def quote(text: Optional[str]) -> str:
    """``text`` for a log message: ``repr``-quoted, so it cannot forge a line or a colour.

    ``repr`` escapes every character that is not printable (line breaks, control characters,
    ANSI escapes, bidirectional overrides, lone surrogates). Past 200 characters the middle is
    cut. None (no address) is ``unknown``.
    """
    if text is None:
        return "unknown"
    quoted = repr(text)
    return quoted if len(quoted) <= _LONGEST else f"{quoted[: _LONGEST - 20]}...{quoted[-17:]}"


def utc(seconds: float) -> str:
    """Unix time as ISO 8601 in UTC, to the millisecond: ``2026-11-28T00:45:00.123Z``."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Writes the admin API's records to the ``tokenbucket.admin`` logger.

    Refusals (401, 403, and the 429 of a caller guessing too fast) are summarised per address:
    the first one from an address is logged at WARNING; later ones within ``window`` seconds
    are only counted, and one summary record gives their number once the window is over. It is
    written at the next admin request after that (there is no timer), or when the address is
    dropped to make room: at most ``max_addresses`` are tracked, the oldest dropped first.

    Attributes:
        on_admin: None, or ``on_admin(action, status)`` called once per admin request (see
            `done`); its exceptions propagate.
        clock: the monotonic clock of the refusal windows (tests set a ``ManualClock``).
        wall: the clock of the records' ``time`` field, Unix seconds.
    """

    __slots__ = ("_lock", "_seen", "clock", "max_addresses", "on_admin", "wall", "window")

    def __init__(
        self,
        *,
        window: float = DEFAULT_WINDOW,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_admin: Optional[AdminHook] = None,
    ) -> None:
        self.window = window
        self.max_addresses = max_addresses
        self.clock = clock
        self.wall = wall
        self.on_admin = on_admin
        # address -> [start of its window on `clock`, refusals counted since]; oldest first.
        self._seen: OrderedDict[Optional[str], List[float]] = OrderedDict()
        self._lock = threading.Lock()

    def done(
        self,
        level: int,
        message: str,
        action: str,
        status: int,
        caller: Optional[str],
        fields: Dict[str, Any],
    ) -> None:
        """Log one admin request's record and call ``on_admin(action, status)``.

        ``message`` is the readable line (outside text in it quoted with `quote`); ``fields`` go
        on the record as ``record.tokenbucket`` with ``action``, ``status``, ``caller`` and
        ``time`` added. Windows of refusals that are over are summarised first.
        """
        self._summarise(self._expired(self.clock()))
        self._emit(level, message, {"action": action, "status": status, **fields}, caller)
        self._count(action, status)

    def refused(
        self, status: int, reason: str, method: str, path: str, caller: Optional[str]
    ) -> None:
        """Log a refused admin request at WARNING, once per address and window; count it.

        ``reason`` says what was wrong (``"missing bearer token"``, ``"invalid admin token"``),
        never what was offered. The hook is called for every refusal, logged or not.
        """
        now = self.clock()
        over = self._expired(now)
        with self._lock:
            seen = self._seen
            entry = seen.get(caller)
            if entry is not None:
                entry[1] += 1
            else:
                if len(seen) >= self.max_addresses:
                    address, (start, count) = seen.popitem(last=False)
                    if count:
                        over.append((address, start, now, int(count)))
                seen[caller] = [now, 0]
        self._summarise(over)
        if entry is None:
            self._emit(
                logging.WARNING,
                f"refused admin request ({status}, {reason}): {quote(method)} {quote(path)} "
                f"from {quote(caller)}",
                {
                    "action": "refused",
                    "status": status,
                    "reason": reason,
                    "method": method,
                    "path": path,
                },
                caller,
            )
        self._count("refused", status)

    def _count(self, action: str, status: int) -> None:
        hook = self.on_admin
        if hook is not None:
            hook(action, status)

    def _emit(
        self, level: int, message: str, fields: Dict[str, Any], caller: Optional[str]
    ) -> None:
        if _log.isEnabledFor(level):
            record = {**fields, "caller": caller, "time": utc(self.wall())}
            _log.log(level, message, extra={FIELD: record})

    def _expired(self, now: float) -> List[Tuple[Optional[str], float, float, int]]:
        """Drop the addresses whose window is over; return those with refusals to report."""
        over: List[Tuple[Optional[str], float, float, int]] = []
        seen = self._seen
        if not seen:
            return over
        with self._lock:
            while seen:
                address, (start, count) = next(iter(seen.items()))
                if now - start < self.window:
                    break
                del seen[address]
                if count:
                    over.append((address, start, now, int(count)))
        return over

    def _summarise(self, over: List[Tuple[Optional[str], float, float, int]]) -> None:
        for address, start, now, count in over:
            seconds = min(now - start, self.window)
            noun = "request" if count == 1 else "requests"
            self._emit(
                logging.WARNING,
                f"{count} more refused admin {noun} from {quote(address)} "
                f"in the {seconds:g} s after the one logged",
                {
                    "action": "refused",
                    "summary": True,
                    "count": count,
                    "seconds": seconds,
                    "first": utc(self.wall() - (now - start)),
                },
                address,
            )
