r"""Default rules every process shares: one document in the store, a cached copy per registry.

`BucketRegistry.share_rules` makes a registry follow a named document in its store holding the
default rule of each of its limits. A decision never reads it: the registry keeps its copy and
checks a monotonic deadline on each decision; once it has passed (every ``interval`` seconds,
1 by default), that one decision first reads the document (one GET in Redis) and adopts it if
it changed. So a change made through any process (``update_default`` writes the document)
applies in every other process from its first decision after at most ``interval`` plus one
round trip; the process that made the change applies it at once. The Lua script keeps taking
the default as arguments, so no decision touches a key beside its client's (Redis Cluster
keeps every call in one hash slot), and a decision costs nothing more between refreshes.

Writers: ``update_default`` reads the document, changes the fields and writes it back; two
changes made at the same instant in two processes are not merged (the last write wins). A
document that names other limits than the registry's, or is not valid, is ignored (logged),
and the registry keeps the rules it has. A read that fails (Redis down) keeps them too, until
the next refresh.

In Redis the document is the string key ``prefix``, the byte 0xff, ``rules:`` and the name
(``b"tokenbucket:\xffrules:default"``), which no client key can name (see
``_stores.redis.listing``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Optional

from .._core.rule import Rule
from .._core.validate import show


def _warn(message: str, *args: object) -> None:
    """Log a warning on the ``tokenbucket`` logger, for the caller (imports logging then)."""
    import logging

    logging.getLogger("tokenbucket").warning(message, *args, stacklevel=2)


def check_interval(interval: object) -> float:
    """Validate a refresh interval: a finite number of seconds > 0."""
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        raise TypeError(f"'interval' must be a number of seconds, got {show(interval)}")
    if not (interval > 0 and math.isfinite(interval)):
        raise ValueError(f"'interval' must be a finite number of seconds > 0, got {interval!r}")
    return float(interval)


def encode(limits: Dict[str, Rule]) -> str:
    """The shared document of ``limits`` (JSON, keys in order)."""
    import json  # here: json is loaded only by registries that share their rules

    return json.dumps(
        {
            "version": 1,
            "limits": {
                name: {"capacity": rule.capacity, "refill_rate": rule.refill_rate}
                for name, rule in limits.items()
            },
        },
        separators=(",", ":"),
    )


def decode(text: str, names: tuple[str, ...]) -> Dict[str, Rule]:
    """The limits of a shared document; ValueError if invalid or not naming exactly ``names``."""
    try:
        text.encode("utf-8")  # a store reads bytes that are not UTF-8 as lone surrogates
    except UnicodeEncodeError:
        raise ValueError("invalid shared rules document (not UTF-8)") from None
    import json

    try:
        document = json.loads(text)
        limits = document["limits"]
        rules = {
            name: Rule(fields["capacity"], fields["refill_rate"]) for name, fields in limits.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"invalid shared rules document ({error})") from None
    if tuple(rules) != names:
        raise ValueError(f"shared rules name limits {list(rules)!r}, this registry {list(names)!r}")
    return rules


class Sharing:
    """A registry's link to its shared document: name, interval, deadline, last text seen."""

    __slots__ = ("clock", "deadline", "interval", "name", "text")

    def __init__(
        self, name: str, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.interval = interval
        self.clock = clock
        self.deadline = -math.inf  # the first decision reads the document
        self.text: Optional[str] = None

    def due(self) -> bool:
        """Whether the document is to be read now; if so, the next read is in ``interval``."""
        now = self.clock()
        if now < self.deadline:
            return False
        self.deadline = now + self.interval  # set first: concurrent callers do not read too
        return True

    def adopt(self, text: Optional[str], names: tuple[str, ...]) -> Optional[Dict[str, Rule]]:
        """The limits to apply from a read of the document, or None to keep the current ones."""
        if text is None or text == self.text:
            return None
        self.text = text
        try:
            return decode(text, names)
        except ValueError as error:
            _warn("tokenbucket: ignoring shared rules %r: %s", self.name, error)
            return None

    def failed(self, error: BaseException) -> None:
        """A read failed: keep the rules, log it, try again at the next deadline."""
        _warn("tokenbucket: cannot read shared rules %r: %s", self.name, error)


def store_methods(store: Any) -> tuple[Any, Any]:
    """The store's ``get_shared`` and ``set_shared``, or TypeError if it has none."""
    getter = getattr(store, "get_shared", None)
    setter = getattr(store, "set_shared", None)
    if getter is None or setter is None:
        raise TypeError(f"{store!r} cannot share rules (it has no 'get_shared'/'set_shared')")
    return getter, setter
