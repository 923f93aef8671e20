"""An exact reference model of one token bucket, in rational arithmetic.

It is written from the textbook definition (level and last instant, refill clamped at capacity),
not from the library's representation, so comparing the two checks the library's arithmetic.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Optional, Union

Real = Union[int, float, Fraction]


class ExactBucket:
    """A token bucket computed with :class:`fractions.Fraction`: no rounding anywhere.

    Every float given to it is taken at its exact binary value, so it answers what the library
    would answer with infinite precision. It follows the library's documented semantics: it
    starts full; ``level(t) = min(capacity, level(s) + (t - s) * refill_rate)``; a clock reading
    earlier than the last one earns nothing; a rule change keeps the deficit (tokens missing from
    full), so under a lowered capacity the level can be negative (a debt that refills first).

    Example::

        >>> model = ExactBucket(capacity=1, refill_rate=0.1)
        >>> model.consume(0.0, 1), model.consume(9.0, 1), model.consume(10.0, 1)
        (True, False, True)
    """

    __slots__ = ("capacity", "last", "level", "refill_rate")

    def __init__(self, capacity: Real, refill_rate: Real, start: Real = 0) -> None:
        self.capacity = Fraction(capacity)
        self.refill_rate = Fraction(refill_rate)
        self.level = self.capacity
        self.last = Fraction(start)

    def advance(self, now: Real) -> Fraction:
        """Refill up to ``now`` (no-op if ``now`` is not later than the last instant)."""
        t = Fraction(now)
        if t > self.last:
            self.level = min(self.capacity, self.level + (t - self.last) * self.refill_rate)
            self.last = t
        return self.level

    def allows(self, now: Real, amount: Real) -> bool:
        """Whether ``amount`` tokens are available at ``now`` (exactly; no tolerance)."""
        return Fraction(amount) <= self.advance(now)

    def consume(self, now: Real, amount: Real = 1, *, force: Optional[bool] = None) -> bool:
        """Take ``amount`` at ``now`` if available; return whether it did.

        ``force`` makes the model follow a decision made elsewhere (taking the tokens, or not,
        regardless), which keeps it in step with an implementation whose float arithmetic
        decided a request within rounding distance of the boundary.
        """
        allowed = self.allows(now, amount) if force is None else force
        if allowed:
            self.level -= Fraction(amount)
        return allowed

    def retry_after(self, now: Real, amount: Real) -> Fraction:
        """Seconds from ``now`` until ``amount`` is available (0 if it is; -1 if never)."""
        missing = Fraction(amount) - self.advance(now)
        if missing <= 0:
            return Fraction(0)
        if Fraction(amount) > self.capacity or not self.refill_rate:
            return Fraction(-1)
        return missing / self.refill_rate

    def update(
        self, now: Real, capacity: Optional[Real] = None, refill_rate: Optional[Real] = None
    ) -> None:
        """Settle at the old rule up to ``now``, then switch, keeping the deficit."""
        self.advance(now)
        deficit = self.capacity - self.level
        if capacity is not None:
            self.capacity = Fraction(capacity)
        if refill_rate is not None:
            self.refill_rate = Fraction(refill_rate)
        self.level = self.capacity - deficit

    def __repr__(self) -> str:
        return (
            f"ExactBucket(capacity={self.capacity}, refill_rate={self.refill_rate}, "
            f"level={self.level}, last={self.last})"
        )
