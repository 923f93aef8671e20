"""Input checks shared by every public entry point.

Each check either returns the value in the form the arithmetic uses or raises an error that names
the field, the constraint and the offending value: ``TypeError`` for a wrong type, ``ValueError``
for a value out of range. Nothing here knows about buckets, stores or HTTP.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

#: Largest capacity or refill rate a rule accepts: a trillion tokens (or tokens per second) is
#: beyond any real limit, and the bound keeps absurd values (1e300) out of the arithmetic.
#: Precision is a separate matter: the 1e-9-token bound holds for levels below about 4e6
#: tokens; above that it is relative (2**-52 of the level).
MAX_VALUE = 1e12

#: Largest request size the arithmetic sees, and the largest debt a bucket can owe: 2**53
#: tokens (about 9e15), beyond every capacity (at most ``MAX_VALUE``). A larger amount, of any
#: size (``1.7e308``, ``10**400``), decides exactly as this one: a consume or peek of it is never
#: allowed, a refund of it refills any bucket to full, and a charge of it saturates the debt at
#: this bound. So sums of amounts and debts stay far from float overflow (no ``inf``, no NaN),
#: and integers up to it add exactly.
MAX_AMOUNT = 2**53

Number = Union[int, float]


def show(value: object) -> str:
    """``repr(value)``, shortened if long: error messages quote input, which may be hostile."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]}"


def _number(name: str, value: object) -> Number:
    # bool is an int subclass, but True tokens is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name!r} must be a number, got {show(value)} ({type(value).__name__})")
    if isinstance(value, int):
        return int(value)
    return float(value)


def _finite(number: Number) -> bool:
    # Integers are always finite (and too large ones overflow math.isfinite).
    return isinstance(number, int) or math.isfinite(number)


def check_capacity(value: object, name: str = "capacity") -> Number:
    """Return ``value`` if it is a valid bucket capacity: a finite number in (0, 1e12]."""
    number = _number(name, value)
    if not number > 0 or not _finite(number):
        raise ValueError(f"{name!r} must be a finite number > 0, got {show(value)}")
    if number > MAX_VALUE:
        raise ValueError(f"{name!r} must be at most {MAX_VALUE:g}, got {show(value)}")
    return number


def check_rate(value: object, name: str = "refill_rate") -> Number:
    """Return ``value`` if it is a valid refill rate: a finite number in [0, 1e12]."""
    number = _number(name, value)
    if not number >= 0 or not _finite(number):
        raise ValueError(f"{name!r} must be a finite number >= 0, got {show(value)}")
    if number > MAX_VALUE:
        raise ValueError(f"{name!r} must be at most {MAX_VALUE:g}, got {show(value)}")
    return number


def check_amount(value: object, name: str = "amount") -> Number:
    """Return ``value`` as the arithmetic takes it if it is a valid request size.

    A valid size is a finite number > 0 (an int of any size included); ``inf``, NaN, zero,
    negatives and non-numbers raise. An amount above ``MAX_AMOUNT`` (2**53 tokens) is returned
    as ``float(MAX_AMOUNT)``: it exceeds every capacity, so it decides exactly as any larger
    amount would (never allowed; a refund to full; a charge that saturates the debt), and the
    arithmetic never overflows. ``name`` is the field the caller called it (``cost`` for the
    decorator).
    """
    number = _number(name, value)
    if not number > 0 or not _finite(number):
        raise ValueError(f"{name!r} must be a finite number > 0, got {show(value)}")
    if number > MAX_AMOUNT:
        return float(MAX_AMOUNT)  # a float, as larger sizes were: int fast paths stay <= 2**53
    return number


def check_rule_fields(
    capacity: object, refill_rate: object
) -> tuple[Optional[Number], Optional[Number]]:
    """Validate a partial rule change: each given field, and that at least one is given."""
    if capacity is None and refill_rate is None:
        raise ValueError("at least one of 'capacity' or 'refill_rate' is required")
    return (
        None if capacity is None else check_capacity(capacity),
        None if refill_rate is None else check_rate(refill_rate),
    )


def check_key(value: object) -> str:
    """Return ``value`` if it is a valid bucket key: a ``str``."""
    if not isinstance(value, str):
        raise TypeError(f"'key' must be a str, got {show(value)} ({type(value).__name__})")
    return value
