"""The outcome of one admission check, and the exception that carries a denial.

Everything a caller needs to act on a decision (admit, report headers, wait) is a field here, so
adapters never reach back into the bucket.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

from .arith import wait
from .rule import Rule


class Decision(NamedTuple):
    """What a bucket answered to one request. Truthy exactly when the request was allowed.

    Attributes:
        allowed: whether the tokens were taken. A denial takes nothing.
        remaining: the token level after this decision (a float, never below 0).
        retry_after: seconds until this request would be allowed: ``0.0`` when allowed,
            ``math.inf`` when it never can be (more than the capacity, or a bucket that does not
            refill). After a ``charge`` or ``refund`` (always allowed): seconds until one token
            is there again, so a charge that left debt says when the debt is repaid.
        reset_after: seconds until the bucket is full again: ``0.0`` when full, ``math.inf`` when
            it is not full and never refills.
        limit: the capacity of the rule that decided.
        policy: the name of the limit that decided: ``"default"`` for a registry of one
            [`Rule`][tokenbucket.Rule]; with several limits, the binding one (for a denial the
            the first declared). ``remaining``, ``reset_after`` and ``limit`` are its own,
            except that ``remaining`` is the least of all limits' levels. Limits in shadow
            never bind: the other fields are those of the enforced limits alone.
        shadow_denied: the names of the limits in shadow (see [Shadow
            limits](../several-limits.md#shadow-limits)) that would have refused this
            request, which the enforced limits admitted; ``()`` otherwise (always on a
            denial, and without shadow limits).
    """

    allowed: bool
    remaining: float
    retry_after: float
    reset_after: float
    limit: float
    policy: str = "default"
    shadow_denied: Tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed


#: Builds a Decision from its fields without NamedTuple's keyword handling.
_new = tuple.__new__


def clamp(level: float) -> float:
    """Return a store's raw level as reported: a float, never below 0.

    A request admitted within EPSILON of the boundary can leave the raw level a hair below 0.
    """
    return float(level) if level > 0.0 else 0.0


def decide(
    allowed: bool, level: float, amount: float, rule: Rule, policy: str = "default"
) -> Decision:
    """Build the decision a store's outcome ``(allowed, level, rule)`` means for ``amount``.

    ``policy`` is the name of the limit the outcome is of.
    """
    capacity, rate = rule.capacity, rule.refill_rate
    if allowed:
        retry_after = 0.0
    elif amount > capacity:
        retry_after = math.inf
    else:  # a level behind the refill line (a clock stepped back) includes the catch-up wait
        retry_after = wait(amount - level, rate)
    # Every consume builds its decision here: wait(capacity - level, rate) and clamp(level)
    # are written out, as each call costs more than its arithmetic.
    missing = capacity - level
    reset_after = 0.0 if missing <= 0.0 else missing / rate if rate else math.inf
    return _new(
        Decision,
        (
            allowed,
            float(level) if level > 0.0 else 0.0,
            retry_after,
            reset_after,
            capacity,
            policy,
            (),
        ),
    )


def after(level: float, rule: Rule, policy: str = "default") -> Decision:
    """The decision a charge or refund leaves, ``level`` being the raw level after it.

    ``allowed`` is True (they always happen); ``retry_after`` is the time until one token is
    there again (``min(1, capacity)``): 0 unless the charge left less, and after a debt exactly
    when refills have repaid it.
    """
    capacity, rate = rule.capacity, rule.refill_rate
    unit = 1 if capacity >= 1 else capacity
    if level >= capacity:  # full: the common case of a refund, without the calls
        return tuple.__new__(Decision, (True, float(level), 0.0, 0.0, capacity, policy, ()))
    retry_after = 0.0 if level >= unit else wait(unit - level, rate)
    reset_after = wait(capacity - level, rate)
    return tuple.__new__(
        Decision, (True, clamp(level), retry_after, reset_after, capacity, policy, ())
    )


class RateLimitExceeded(Exception):
    """Raised by [`rate_limit`][tokenbucket.rate_limit] when a call is denied.

    Attributes:
        decision: the denying [`Decision`][tokenbucket.Decision].
        retry_after: shortcut for ``decision.retry_after`` (seconds; ``inf`` if never).
    """

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.retry_after = decision.retry_after
        if math.isinf(decision.retry_after):
            when = "the request can never be allowed"
        else:
            when = f"retry after {decision.retry_after:.3f} s"
        which = "" if decision.policy == "default" else f" ({decision.policy!r})"
        super().__init__(f"rate limit exceeded{which}: {when}")

    def __reduce__(self) -> tuple[object, ...]:
        return (RateLimitExceeded, (self.decision,))
