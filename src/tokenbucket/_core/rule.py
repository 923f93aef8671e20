"""The rule value object: how large a bucket is and how fast it refills.

A rule is immutable and validated before it exists; it knows nothing about time, keys or stores.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .validate import Number, check_capacity, check_rate, show

#: Tolerance, in tokens, of every admission decision. Float arithmetic cannot place a boundary
#: exactly, so a request that falls short of it by less than this is allowed: a token that is due
#: at an instant is then available at that instant, and no request is admitted more than 1e-9
#: tokens early.
EPSILON = 1e-9

#: Seconds per unit of a rate string, by every spelling accepted. A month is 30 days and a year
#: 360 (12 such months), as in the ``limits`` package, so that a rate means the same in both.
_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("mo", "month", "months"), 30 * 86400),
    **dict.fromkeys(("y", "yr", "yrs", "year", "years"), 360 * 86400),
}
#: Each spelling's unit, as limit names write it.
_UNIT_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day", 2592000: "month"}
_NUMBER = r"(\d+(?:\.\d+)?)"
_PARSE = re.compile(
    rf"^\s*{_NUMBER}\s*(?:/|per)\s*{_NUMBER}?\s*"
    rf"({'|'.join(sorted(_SECONDS, key=len, reverse=True))})\s*$"
)
#: What separates the limits of a rate string with several (as ``limits.parse_many`` splits).
_SEPARATORS = re.compile(r"[;,|]")

#: The grammar of rate strings, quoted by every error about one.
RATE_GRAMMAR = (
    "a rate string like '10/second', '10/s', '5 per minute', '10 per 2 minutes', "
    "'1000/month' or '5/minute;100/day' (grammar: Rule.parse)"
)

#: What every entry point taking a rule accepts: a Rule, a mapping of limit names to Rules (or
#: to rate strings), or a rate string.
Limits = Union["Rule", Mapping[str, Union["Rule", str]], str]


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
    #: collector must visit (see ``_stores/memory/store.py``); equal rules have equal shapes.
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
        """Parse a rate string such as ``"10/second"``, ``"10/s"`` or ``"10 per 2 minutes"``.

        The number before the slash (or ``per``) is both the burst and the amount refilled per
        period, as in the ``limits``, slowapi and Flask-Limiter notation: ``"100/minute"`` is
        ``Rule.per(100, 60)``, a burst of 100 refilled at 100/60 tokens per second. A period
        may count several units (``"5/2hours"``, ``"10 per 2 minutes"``, django-ratelimit's
        ``"10/5m"``). Units: ``s``/``sec``/``second``, ``m``/``min``/``minute``,
        ``h``/``hr``/``hour``, ``d``/``day``, ``mo``/``month`` (30 days), ``y``/``yr``/``year``
        (360 days, as in ``limits``), in any case, plural or not. For several limits in one
        string (``"5/minute;100/day"``) see `parse_many`.

        A token bucket refills continuously where a fixed window resets: ``"100/day"`` allows
        100 at once, then one more every 864 seconds, never 200 across a window's boundary.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: ``text`` is not one rate (the message shows the grammar).
        """
        if not isinstance(text, str):
            raise TypeError(f"'text' must be a str, got {text!r} ({type(text).__name__})")
        return cls._parse_one(text, text)[1]

    @classmethod
    def parse_many(cls, text: str) -> Dict[str, Rule]:
        """Parse one or several rates joined by ``;`` (or ``,`` or ``|``) into named limits.

        Each limit is named by its rate in a canonical spelling: the amount, ``/``, the count
        if it is not 1, and the unit's full name, plural after a count:

            >>> limits = Rule.parse_many("5/min; 100 per day")
            >>> list(limits), limits["100/day"] == Rule.per(100, 86400)
            (['5/minute', '100/day'], True)
            >>> list(Rule.parse_many("10 per 2 minutes|1000/mo"))
            ['10/2minutes', '1000/month']

        The names are what the ``RateLimit-Policy`` field and the 429 name. Two rates with the
        same canonical name (``"5/min;5/minute"``) are a ValueError.
        """
        if not isinstance(text, str):
            raise TypeError(f"'text' must be a str, got {text!r} ({type(text).__name__})")
        limits: Dict[str, Rule] = {}
        for part in _SEPARATORS.split(text):
            if not part.strip():  # a trailing or doubled separator, as limits.parse_many allows
                continue
            name, rule = cls._parse_one(part, text)
            if name in limits:
                raise ValueError(f"{show(text)} names the limit {name!r} twice")
            limits[name] = rule
        if not limits:
            raise ValueError(f"'text' must be {RATE_GRAMMAR}; got {show(text)}")
        return limits

    @classmethod
    def _parse_one(cls, part: str, text: str) -> Tuple[str, Rule]:
        """One rate of ``text``: its canonical name and its rule."""
        match = _PARSE.match(part.lower())
        if match is None:
            raise ValueError(f"'text' must be {RATE_GRAMMAR}; got {show(text)}")
        amount, count, unit = float(match.group(1)), float(match.group(2) or 1), match.group(3)
        seconds = _SECONDS[unit]
        number = int(amount) if amount.is_integer() else amount
        times = int(count) if count.is_integer() else count
        try:
            rule = cls.per(number, times * seconds)
        except ValueError as exc:  # a zero amount or period: say which rate string
            raise ValueError(f"{exc}, in the rate string {show(text)}") from None
        unit_name = _UNIT_NAMES.get(seconds, "year")
        name = f"{number}/{unit_name}" if times == 1 else f"{number}/{times}{unit_name}s"
        return name, rule

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


def as_limits(value: Any) -> Any:
    """``value`` with rate strings read: a str as a `Rule` (one rate) or named limits (several).

    A mapping's str values are read with `Rule.parse`. Anything else is returned as it is, for
    the caller to check (and to refuse with a message quoting `RATE_GRAMMAR`).
    """
    if isinstance(value, str):
        limits = Rule.parse_many(value)
        return next(iter(limits.values())) if len(limits) == 1 else limits
    if isinstance(value, Mapping) and any(isinstance(rule, str) for rule in value.values()):
        return {
            name: Rule.parse(rule) if isinstance(rule, str) else rule
            for name, rule in value.items()
        }
    return value
