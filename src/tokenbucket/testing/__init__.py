"""Tools for testing code that uses tokenbucket: a manual clock and an exact reference model.

Nothing here imports beyond the standard library; the hypothesis strategies live in
``tokenbucket.testing.strategies`` and import hypothesis only when that module is imported.
"""

from .._clock import ManualClock
from ._model import ExactBucket

__all__ = ["ExactBucket", "ManualClock"]
