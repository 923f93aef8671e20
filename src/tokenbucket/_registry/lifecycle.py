"""A request's cost after the fact: reserve on an estimate, then settle; wait by reservation.

[`Reservation`][tokenbucket.Reservation] is what
[`BucketRegistry.reserve`][tokenbucket.BucketRegistry.reserve] returns: the tokens admitted on
an estimate, settled once the real cost is known (the difference charged or refunded).
`acquire` and `aacquire` are the registry's waiting calls: one store call that charges the
tokens into debt when the wait it implies fits, then one sleep until they are earned.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Tuple

from .._core import aio as _aio
from .._core.arith import wait
from .._core.decision import Decision, RateLimitExceeded, decide
from .._core.validate import MAX_AMOUNT, check_amount, show
from .._stores.store import Outcome, Outcomes
from .admission import Admission, admitted
from .limits import Keys, combine
from .shadow import decide_watched


class Reservation:
    """Tokens admitted on an estimate, to be settled when the real cost is known.

    Truthy exactly when the estimate was admitted (see ``decision``). Settle it once with the
    real cost: the difference is charged (which may leave debt) or refunded (at most the
    estimate, never above full). A reservation never settled keeps the estimate.

    Settling acts on ``admission``, the record of what the admission took: only the buckets it
    charged are charged or refunded (a limit in shadow that would have refused the estimate was
    not charged, and gets nothing back), whatever has changed since.

    Examples:
        >>> limits = BucketRegistry(Rule(1000, 10.0), clock=ManualClock())
        >>> spend = limits.reserve("alice", 300)  # admit on the estimate
        >>> bool(spend)
        True
        >>> spend.settle(1250).remaining  # the upstream said 1250: 950 more, into debt
        0.0
        >>> limits.consume("alice").retry_after  # 250 in debt: 25 s, then one more token
        25.1
    """

    __slots__ = ("_registry", "_settled", "admission", "decision", "estimate", "key")

    def __init__(
        self,
        registry: Waiting,
        key: Keys,
        estimate: float,
        decision: Decision,
        admission: Optional[Admission] = None,
    ) -> None:
        self._registry = registry
        self.key = key
        self.estimate = estimate
        #: The admission decision on the estimate.
        self.decision = decision
        #: What the admission took, from which buckets (see `Admission`).
        self.admission = (
            admitted(registry.limits, key, estimate, decision) if admission is None else admission
        )
        self._settled = not self.admission.charged  # nothing taken: nothing to settle

    def __bool__(self) -> bool:
        return self.decision.allowed

    def settle(self, actual: float) -> Decision:
        """Charge or refund the difference between ``actual`` (>= 0) and the estimate.

        Returns the decision after it (see [`charge`][tokenbucket.BucketRegistry.charge]).
        Settling twice raises RuntimeError; settling a denied reservation changes nothing.
        """
        if self._settling(actual):
            after = self._registry._settle(self.admission, actual)
            if after is not None:
                return after
        return self.decision

    async def asettle(self, actual: float) -> Decision:
        """Awaitable `settle`."""
        if self._settling(actual):
            after = await self._registry._asettle(self.admission, actual)
            if after is not None:
                return after
        return self.decision

    def cancel(self) -> Decision:
        """Give the estimate back (the work did not happen): `settle` at 0."""
        return self.settle(0)

    async def acancel(self) -> Decision:
        """Awaitable `cancel`."""
        return await self.asettle(0)

    def _settling(self, actual: float) -> bool:
        """Check ``actual``; whether there is something to settle (then it is settled)."""
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            raise TypeError(f"'actual' must be a number, got {show(actual)}")
        if not 0 <= actual < math.inf:
            raise ValueError(f"'actual' must be a finite number >= 0, got {show(actual)}")
        if not self.admission.charged:
            return False
        if self._settled:
            raise RuntimeError(f"reservation of {self.key!r} already settled")
        self._settled = True
        return True

    def __repr__(self) -> str:
        state = "settled" if self._settled else "open"
        return f"Reservation({self.key!r}, estimate={self.estimate!r}, {state}, {self.decision})"


def delay(outcome: Outcome, amount: float, name: str = "default") -> float:
    """The sleep a reservation's outcome implies; raise RateLimitExceeded if it was refused."""
    charged, level, rule = outcome
    if not charged:
        raise RateLimitExceeded(decide(False, level, amount, rule, name))
    return wait(-level, rule.refill_rate)


def delay_all(
    names: Sequence[str],
    taken: Tuple[bool, Outcomes],
    amount: float,
    key: Keys,
    mask: Sequence[bool] = (),
) -> Tuple[float, Admission]:
    """`delay` over several limits: the longest sleep, and what the reservation took.

    With a shadow ``mask`` only the enforced limits refuse or set the sleep (and a refusal
    names one of them); a watched limit was charged exactly when its own wait fit, and the
    `Admission` names the limits charged. A refusal names the binding limit.
    """
    charged, outcomes = taken
    if not mask:
        if not charged:
            raise RateLimitExceeded(combine(names, False, outcomes, amount))
        seconds = max(wait(-level, rule.refill_rate) for _, level, rule in outcomes)
        return seconds, Admission(key, amount, tuple(names))
    if not charged:
        raise RateLimitExceeded(decide_watched(names, mask, False, outcomes, amount))
    seconds = max(
        (
            wait(-level, rule.refill_rate)
            for (_, level, rule), watched in zip(outcomes, mask)
            if not watched
        ),
        default=0.0,
    )
    taken_from = tuple(name for name, outcome in zip(names, outcomes) if outcome[0])
    return seconds, Admission(key, amount, taken_from)


class Waiting:
    """The registry's calls that reserve: `reserve` (then settle) and `acquire` (then sleep).

    A mixin of [`BucketRegistry`][tokenbucket.BucketRegistry]: it uses the registry's
    ``consume``, ``charge``, ``refund`` and the hooks ``_reserved``/``_areserved`` (one store
    call that charges into debt when the wait fits; the seconds to sleep) and
    ``_adjust``/``_aadjust`` (charge or refund the limits an `Admission` charged, when not all
    of them: only a registry of several limits has those), so that one limit and several
    limits share these calls. `_settle` is where a `Reservation` is settled.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # provided by BucketRegistry

        def consume(self, key: Keys, amount: float = 1) -> Decision: ...
        async def aconsume(self, key: Keys, amount: float = 1) -> Decision: ...
        def refund(self, key: Keys, amount: float) -> Decision: ...
        async def arefund(self, key: Keys, amount: float) -> Decision: ...
        def charge(self, key: Keys, amount: float) -> Decision: ...
        async def acharge(self, key: Keys, amount: float) -> Decision: ...
        @property
        def limits(self) -> Tuple[str, ...]: ...
        def _reserved(
            self, key: Keys, amount: float, max_wait: float
        ) -> Tuple[float, Admission]: ...
        async def _areserved(
            self, key: Keys, amount: float, max_wait: float
        ) -> Tuple[float, Admission]: ...
        def _adjust(self, admission: Admission, difference: float) -> Decision: ...
        async def _aadjust(self, admission: Admission, difference: float) -> Decision: ...

    def _settle(self, admission: Admission, actual: float) -> Optional[Decision]:
        """Settle ``admission`` at the real cost ``actual``: the decision after, or None.

        The difference from what it took is charged or refunded on the buckets it charged,
        and only on those (a refund is at most what was taken); None if there is nothing to do.
        """
        # An int too large for a float would overflow here; beyond MAX_AMOUNT a charge only
        # saturates the debt (see check_amount).
        difference = min(actual, MAX_AMOUNT) - admission.taken
        if not difference or not admission.charged:
            return None
        if admission.charged != self.limits:  # some limits were not charged: a subset
            return self._adjust(admission, difference)
        if difference > 0:
            return self.charge(admission.key, difference)
        return self.refund(admission.key, -difference)

    async def _asettle(self, admission: Admission, actual: float) -> Optional[Decision]:
        """Awaitable `_settle`."""
        # An int too large for a float would overflow here; beyond MAX_AMOUNT a charge only
        # saturates the debt (see check_amount).
        difference = min(actual, MAX_AMOUNT) - admission.taken
        if not difference or not admission.charged:
            return None
        if admission.charged != self.limits:
            return await self._aadjust(admission, difference)
        if difference > 0:
            return await self.acharge(admission.key, difference)
        return await self.arefund(admission.key, -difference)

    def reserve(self, key: Keys, estimate: float) -> Reservation:
        """Admit on an ``estimate`` of the cost; settle the real cost later.

        Takes ``estimate`` tokens as `consume` does (a denial takes nothing) and returns a
        [`Reservation`][tokenbucket.Reservation], truthy if admitted. Call its ``settle(actual)``
        once the real cost is known: the difference is charged (possibly into debt) or refunded.
        """
        estimate = check_amount(estimate, "estimate")
        return Reservation(self, key, estimate, self.consume(key, estimate))

    async def areserve(self, key: Keys, estimate: float) -> Reservation:
        """Awaitable `reserve` (settle with ``await reservation.asettle(actual)``)."""
        estimate = check_amount(estimate, "estimate")
        decision = await self.aconsume(key, estimate)
        return Reservation(self, key, estimate, decision)

    def acquire(
        self,
        key: Keys,
        amount: float = 1,
        *,
        max_wait: float = math.inf,
        sleep: Optional[Callable[[float], Any]] = None,
    ) -> float:
        """Wait until ``amount`` tokens are available, taking them; return the seconds waited.

        One store call reserves the tokens (into debt, behind the waiters before it, so that
        waiters are served first come, first served), then one sleep lasts until they are
        earned. If that wait would exceed ``max_wait`` seconds, or the call can never pass
        (more than the capacity, no refill), it raises
        [`RateLimitExceeded`][tokenbucket.RateLimitExceeded] at once, taking nothing. A wait
        interrupted (KeyboardInterrupt, or any exception from ``sleep``) gives the tokens back.
        ``sleep`` defaults to :func:`time.sleep`. With several limits, every limit is reserved
        at once and the sleep is the longest wait; a limit in shadow never refuses or
        lengthens it (it is charged only if its own wait fits ``max_wait`` too).
        """
        amount = check_amount(amount)
        seconds, admission = self._reserved(key, amount, check_wait(max_wait, sleep))
        if seconds > 0:
            try:
                nap(seconds, sleep)
            except BaseException:
                self._settle(admission, 0)  # gives back what the reservation took, only that
                raise
        return seconds

    async def aacquire(
        self,
        key: Keys,
        amount: float = 1,
        *,
        max_wait: float = math.inf,
        sleep: Optional[Callable[[float], Any]] = None,
    ) -> float:
        """Awaitable `acquire` (``sleep`` defaults to :func:`asyncio.sleep`).

        A waiter cancelled while asleep (``asyncio.CancelledError``) gives its tokens back.
        """
        amount = check_amount(amount)
        seconds, admission = await self._areserved(key, amount, check_wait(max_wait, sleep))
        if seconds > 0:
            try:
                await anap(seconds, sleep)
            except BaseException:
                await self._asettle(admission, 0)  # what the reservation took, only that
                raise
        return seconds


def check_wait(max_wait: float, sleep: Optional[Callable[[float], Any]]) -> float:
    """Validate ``acquire``'s options; return ``max_wait`` as a float."""
    if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)):
        raise TypeError(f"'max_wait' must be a number, got {max_wait!r}")
    if not max_wait >= 0:
        raise ValueError(f"'max_wait' must be >= 0, got {max_wait!r}")
    if sleep is not None and not callable(sleep):
        raise TypeError(f"'sleep' must be a callable, got {sleep!r}")
    return float(max_wait)


def nap(seconds: float, sleep: Optional[Callable[[float], Any]]) -> None:
    """Sleep ``seconds`` with ``sleep`` (default :func:`time.sleep`)."""
    (sleep or time.sleep)(seconds)


async def anap(seconds: float, sleep: Optional[Callable[[float], Any]]) -> None:
    """Sleep ``seconds`` with ``sleep`` (default :func:`asyncio.sleep`; may return an awaitable)."""
    result = (sleep or _aio.sleep)(seconds)
    if _aio.isawaitable(result):
        await result
