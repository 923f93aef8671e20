"""Tools for testing code that uses tokenbucket, without sleeping and without flaky timing.

* [`ManualClock`][tokenbucket.ManualClock]: a clock that moves only when told to.
* [`manual_registry`][tokenbucket.testing.manual_registry]: a registry bound to a new manual
  clock, in one call.
* [`ExactBucket`][tokenbucket.testing.ExactBucket] and
  [`ExactRegistry`][tokenbucket.testing.ExactRegistry]: exact (Fraction) reference models to
  compare a limiter against.
* ``tokenbucket.testing.strategies`` and ``tokenbucket.testing.stateful``: hypothesis strategies
  and a ready state machine (they import hypothesis; this module does not).
* The pytest plugin (installed with the ``testing`` extra): fixtures ``tokenbucket_clock`` and
  ``tokenbucket_registry``.

This module imports nothing beyond the standard library and tokenbucket itself.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .._core.clock import ManualClock
from .._core.rule import Rule
from .._registry.registry import BucketRegistry
from ._model import SLACK, ExactBucket, ExactRegistry

__all__ = ["SLACK", "ExactBucket", "ExactRegistry", "ManualClock", "manual_registry"]


def manual_registry(
    rule: Optional[Rule] = None, *, start: float = 0.0, **options: Any
) -> Tuple[BucketRegistry, ManualClock]:
    """Return a registry (default rule ``rule``, default 10 tokens at 1/s) and its manual clock.

    ``options`` go to [`BucketRegistry`][tokenbucket.BucketRegistry] (e.g. ``max_keys``):

        >>> registry, clock = manual_registry(Rule(capacity=5, refill_rate=1.0))
        >>> sum(registry.try_consume("login:alice") for _ in range(10))
        5
        >>> clock.advance(3)
        3.0
        >>> registry.tokens("login:alice")
        3.0
    """
    clock = ManualClock(start)
    return BucketRegistry(rule or Rule(10, 1.0), clock=clock, **options), clock
