"""Clocks: the zero-argument callables that tell a bucket what time it is.

The default is :func:`time.monotonic`. :class:`ManualClock` is a clock that only moves when told
to, so tests can state exact instants instead of sleeping.
"""

from __future__ import annotations

import math
import threading
from typing import Callable

from .validate import _number

#: A clock: a zero-argument callable returning seconds as a float. Only differences between its
#: readings matter, so any monotonic origin works.
Clock = Callable[[], float]


class ManualClock:
    """A clock for tests: it reads ``start`` until moved with `advance` or `set`.

    Pass it as ``clock=`` to a [`TokenBucket`][tokenbucket.TokenBucket] or
    [`BucketRegistry`][tokenbucket.BucketRegistry]:

        >>> clock = ManualClock()
        >>> bucket = TokenBucket(capacity=1, refill_rate=0.5, clock=clock)
        >>> bucket.try_consume(), bucket.try_consume()
        (True, False)
        >>> clock.advance(2.0)
        2.0
        >>> bucket.try_consume()
        True

    It is safe to read and move from several threads.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 0.0) -> None:
        self._now = _finite("start", start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Return the current reading."""
        return self._now

    @property
    def now(self) -> float:
        """The current reading."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0) and return the new reading."""
        step = _finite("seconds", seconds)
        if step < 0:
            raise ValueError(f"'seconds' must be >= 0 (use set() to go back), got {seconds!r}")
        with self._lock:
            self._now += step
            return self._now

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds``: a drop-in for :func:`time.sleep` that takes no time.

        Pass it as ``sleep=clock.sleep`` to [`rate_limit`][tokenbucket.rate_limit] so waiting
        calls move the manual clock instead of the real one.
        """
        self.advance(seconds)

    def set(self, now: float) -> None:
        """Jump to the reading ``now``, forwards or backwards."""
        value = _finite("now", now)
        with self._lock:
            self._now = value

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"


def _finite(name: str, value: object) -> float:
    number = float(_number(name, value))
    if not math.isfinite(number):
        raise ValueError(f"{name!r} must be a finite number, got {value!r}")
    return number
