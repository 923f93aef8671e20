"""Input checks shared by every public entry point.

Each check either returns the value in the form the arithmetic uses or raises an error that names
the field, the constraint and the offending value: ``TypeError`` for a wrong type, ``ValueError``
for a value out of range. Nothing here knows about buckets, stores or HTTP.
"""

from __future__ import annotations

import math
import numbers
from typing import Union

#: Largest capacity or refill rate a rule accepts. Beyond it a float can no longer resolve the
#: 1e-9-token precision the arithmetic promises, so such values are refused rather than rounded.
MAX_VALUE = 1e12

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
    """Return ``value`` if it is a valid request size: a finite number > 0.

    An amount larger than any capacity is valid (it is simply never allowed); integers too large
    for a float become ``inf`` so that the arithmetic cannot overflow. ``name`` is the field the
    caller called it (``cost`` for the decorator).
    """
    number = _number(name, value)
    if not number > 0 or not _finite(number):
        raise ValueError(f"{name!r} must be a finite number > 0, got {show(value)}")
    if isinstance(number, int) and number > 2**53:
        # Integers this large exceed every capacity; as a float they decide the same and cannot
        # overflow the arithmetic.
        try:
            return float(number)
        except OverflowError:
            return math.inf
    return number


def check_key(value: object) -> str:
    """Return ``value`` if it is a valid bucket key: a ``str``."""
    if not isinstance(value, str):
        raise TypeError(f"'key' must be a str, got {show(value)} ({type(value).__name__})")
    return value
