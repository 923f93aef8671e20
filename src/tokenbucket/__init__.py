"""Token bucket rate limiting: exact, thread-safe, fast, and framework-agnostic.

The core (this package's top level) is pure Python with no I/O:

    >>> from tokenbucket import BucketRegistry, Rule
    >>> limits = BucketRegistry(Rule(capacity=10, refill_rate=1.0))
    >>> limits.try_consume("203.0.113.7")
    True

Adapters live in submodules and import their frameworks only when imported themselves.
"""

from ._core.clock import Clock, ManualClock
from ._core.decision import Decision, RateLimitExceeded
from ._core.rule import EPSILON, Rule
from ._edges.decorator import rate_limit
from ._registry.bucket import TokenBucket
from ._registry.inflight import InFlightLimit, InFlightLimitExceeded, MemorySlots, Slot
from ._registry.lifecycle import Reservation
from ._registry.registry import BucketRegistry
from ._stores.memory.store import MemoryStore
from ._stores.store import AsyncStore, Outcome, Store

__all__ = [
    "EPSILON",
    "AsyncStore",
    "BucketRegistry",
    "Clock",
    "Decision",
    "InFlightLimit",
    "InFlightLimitExceeded",
    "ManualClock",
    "MemorySlots",
    "MemoryStore",
    "Outcome",
    "RateLimitExceeded",
    "Reservation",
    "Rule",
    "Slot",
    "Store",
    "TokenBucket",
    "rate_limit",
]

# The one place the version is set: hatch reads it for the wheel and the sdist. Between
# releases it is the next release with a ".dev0" suffix.
__version__ = "0.2.0.dev0"
