"""Settling a request's cost from its response: the ``settle`` middleware option, once.

A request is admitted on its ``cost`` (an estimate when the real cost is known only from the
response: LLM tokens used, bytes, rows). ``settle(request, status, headers)`` reads the real
cost off the response (a header such as ``X-Usage-Tokens``), and the difference from what the
admission took is charged (which may leave the bucket in debt) or refunded (never above full).
Knows nothing of ASGI or WSGI: each middleware calls `Settlement.said` when the response starts
and `Settlement.due` where the response ends (its last body message, or however it ends), and
makes the registry call `due` names, awaited or not.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Tuple

from .._decision import Decision
from .._validate import show
from .request import RequestView

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
    """One request's settlement: what its admission took, what its response said it cost."""

    __slots__ = ("_func", "_said", "_taken", "view")

    def __init__(self, func: SettleFunc, view: RequestView, cost: float, decision: Decision):
        self._func = func
        self.view = view
        #: What the admission took: nothing if it was denied (a dry run lets it through).
        self._taken = cost if decision.allowed else 0
        self._said: Optional[float] = None

    def said(self, status: int, headers: Mapping[str, str]) -> None:
        """Ask ``settle`` what the response says the request cost (once, at its start)."""
        cost = self._func(self.view, status, headers)
        if cost is None:
            return
        if isinstance(cost, bool) or not isinstance(cost, (int, float)):
            raise TypeError(f"the 'settle' function returned {show(cost)}; it must return a number")
        if not 0 <= cost < math.inf:
            raise ValueError(f"the 'settle' function returned {show(cost)}; it must be >= 0")
        self._said = cost

    def due(self) -> Optional[Tuple[str, float]]:
        """The call that settles it, once: ``("charge" | "refund", tokens)``, or None."""
        said, self._said = self._said, None
        if said is None or said == self._taken:
            return None
        if said > self._taken:
            return "charge", said - self._taken
        return "refund", self._taken - said
