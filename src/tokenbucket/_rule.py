"""The rule value object: how large a bucket is and how fast it refills.

A rule is immutable and validated before it exists; it knows nothing about time, keys or stores.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Tuple

from ._validate import Number, check_capacity, check_rate

#: Tolerance, in tokens, of every admission decision. Float arithmetic cannot place a boundary
#: exactly, so a request that falls short of it by less than this is allowed: a token that is due
#: at an instant is then available at that instant, and no request is admitted more than 1e-9
#: tokens early.
EPSILON = 1e-9

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_PARSE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/|per)\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*$")


class Rule:
    """A token bucket's shape: ``capacity`` tokens of burst, refilled at ``refill_rate`` per second.

    Rules are immutable, compare and hash by value, and are validated when created:

        >>> Rule(capacity=10, refill_rate=1.0)
        Rule(capacity=10, refill_rate=1.0)
        >>> Rule(0, 1)
        Traceback (most recent call last):
        ...
        ValueError: 'capacity' must be a finite number > 0, got 0

    ``capacity`` must be a finite number in (0, 1e12]; ``refill_rate`` a finite number in
    [0, 1e12], where 0 means the bucket never refills. Change a rule by making a new one with
    [`replace`][tokenbucket.Rule.replace].
    """

    __slots__ = ("_ceiling", "_shape", "capacity", "refill_rate")

    capacity: Number
    refill_rate: Number
    _ceiling: float
    #: ``(capacity, refill_rate, _ceiling)``: what the in-memory store keeps of a rule in each
    #: bucket's state. A tuple of numbers, so that states hold no object the cyclic garbage
    #: collector must visit (see ``_memory.py``); equal rules have equal shapes.
    _shape: Tuple[Number, Number, float]

    def __init__(self, capacity: float, refill_rate: float) -> None:
        checked_capacity = check_capacity(capacity)
        checked_rate = check_rate(refill_rate)
        object.__setattr__(self, "capacity", checked_capacity)
        object.__setattr__(self, "refill_rate", checked_rate)
        # The level a request may take the bucket down to, precomputed for the hot path.
        object.__setattr__(self, "_ceiling", checked_capacity + EPSILON)
        object.__setattr__(self, "_shape", (checked_capacity, checked_rate, self._ceiling))

    @classmethod
    def per(cls, amount: float, seconds: float, *, burst: Optional[float] = None) -> Rule:
        """Allow ``amount`` tokens every ``seconds`` seconds, with a burst of ``burst``.

        ``burst`` defaults to ``amount``: ``Rule.per(100, 60)`` is 100 requests per minute, all of
        which may arrive at once, refilled at 100/60 tokens per second.
        """
        checked_seconds = check_capacity(seconds, "seconds")
        checked_amount = check_capacity(amount, "amount")
        return cls(checked_amount if burst is None else burst, checked_amount / checked_seconds)

    @classmethod
    def parse(cls, text: str) -> Rule:
        """Parse a rate string such as ``"10/second"``, ``"100 per minute"`` or ``"5/2hours"``.

        The number before the slash is both the burst and the amount per period, as in the
        ``limits`` and ``slowapi`` notation.
        """
        if not isinstance(text, str):
            raise TypeError(f"'text' must be a str, got {text!r} ({type(text).__name__})")
        match = _PARSE.match(text.lower())
        unit = _UNITS.get(match.group(3)) if match else None
        if match is None or unit is None:
            raise ValueError(
                f"'text' must look like '10/second' or '100 per 5 minutes', got {text!r}"
            )
        amount = float(match.group(1))
        count = float(match.group(2) or 1)
        return cls.per(int(amount) if amount.is_integer() else amount, count * unit)

    def replace(
        self, *, capacity: Optional[float] = None, refill_rate: Optional[float] = None
    ) -> Rule:
        """Return a copy with the given fields changed; omitted fields keep their values."""
        return Rule(
            self.capacity if capacity is None else capacity,
            self.refill_rate if refill_rate is None else refill_rate,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Rule is immutable; use rule.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Rule is immutable")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Rule:
            return NotImplemented
        assert isinstance(other, Rule)
        return self.capacity == other.capacity and self.refill_rate == other.refill_rate

    def __hash__(self) -> int:
        return hash((self.capacity, self.refill_rate))

    def __repr__(self) -> str:
        return f"Rule(capacity={self.capacity!r}, refill_rate={self.refill_rate!r})"

    def __reduce__(self) -> Tuple[Any, ...]:
        return (Rule, (self.capacity, self.refill_rate))
