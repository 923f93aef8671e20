"""Settling a request's cost from its response: the ``settle`` middleware option, once.

A request is admitted on its ``cost`` (an estimate when the real cost is known only from the
response: LLM tokens used, bytes, rows). ``settle(request, status, headers)`` reads the real
cost off the response (a header such as ``X-Usage-Tokens``), and the difference from what the
admission took is charged (which may leave the bucket in debt) or refunded (never above full).
Knows nothing of ASGI or WSGI: each middleware calls `Settlement.said` when the response starts
and `Settlement.due` where the response ends (its last body message, or however it ends), and
settles the request's `Reservation` at the cost `due` gives, awaited or not.
"""

from __future__ import annotations

import logging
from math import inf
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Tuple

from .._core.decision import Decision
from .._core.validate import show
from .._registry.admission import admitted
from .._registry.lifecycle import Reservation
from .._registry.limits import Keys
from .request import RequestView

if TYPE_CHECKING:
    from .._registry.registry import BucketRegistry

_log = logging.getLogger("tokenbucket")

#: ``settle(request, status, headers) -> cost or None``: ``headers`` maps lower-case names to
#: values (repeated fields joined with ``", "``); None keeps the cost taken at admission.
SettleFunc = Callable[[RequestView, int, Mapping[str, str]], Optional[float]]
#: When to settle: as the response starts, or where it ends (for a streamed response).
SETTLE_AT = ("start", "end")


def check_settle(settle: object, settle_at: object) -> Tuple[Optional[SettleFunc], bool]:
    """Validate the options; return the callable and whether it settles at the end."""
    if settle is not None and not callable(settle):
        raise TypeError(
            f"'settle' must be a callable (request, status, headers) or None, got {show(settle)}"
        )
    if settle_at not in SETTLE_AT:
        raise ValueError(f"'settle_at' must be 'start' or 'end', got {show(settle_at)}")
    return settle, settle_at == "end"


class Settlement:
    """One request's settlement: what its admission took, what its response said it cost.

    ``reservation`` holds the record of what the admission took (see ``_registry.admission``), so
    that settling charges or refunds the buckets it charged and no other: a limit in shadow that
    would have refused the request was not charged, and gets nothing back. A denial let through (a
    dry run) took nothing, and its real cost is charged to every limit in full.
    """

    __slots__ = ("_done", "_func", "_said", "reservation", "view")

    def __init__(
        self,
        func: SettleFunc,
        view: RequestView,
        registry: BucketRegistry,
        bucket: Keys,
        cost: float,
        decision: Decision,
    ) -> None:
        self._func = func
        self.view = view
        record = admitted(registry.limits, bucket, cost, decision, let_through=True)
        #: Settled with the cost the response said, by the edge (awaited or not).
        self.reservation = Reservation(registry, bucket, cost, decision, record)
        self._said: Optional[float] = None
        self._done = False

    def said(self, status: int, headers: Mapping[str, str]) -> None:
        """Ask ``settle`` what the response says the request cost, until it is settled.

        A WSGI app may start its response again (with ``exc_info``, PEP 3333) before any of
        it is sent: once settled, that changes nothing. A value that is no cost (not a number,
        negative, NaN, infinite) is logged and refused: the cost taken at admission stands,
        and the response is delivered.
        """
        if self._done:
            return
        cost = self._func(self.view, status, headers)
        if cost is None:
            return
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost < inf:
            _log.warning(
                "tokenbucket: the 'settle' function returned %s for %s %s; it must return a "
                "finite number >= 0 or None: the cost taken at admission stands",
                show(cost),
                self.view.method,
                show(self.view.path),
            )
            return
        self._said = cost

    def due(self) -> Optional[float]:
        """The cost to settle ``reservation`` at, once; None if there is none (yet)."""
        said, self._said = self._said, None
        if said is None:
            return None
        self._done = True
        return said
