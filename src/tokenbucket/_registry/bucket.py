"""A single token bucket: the registry's arithmetic for one unnamed key."""

from __future__ import annotations

import threading
from typing import Optional

from .._core.clock import Clock
from .._core.decision import Decision, clamp, decide
from .._core.rule import Rule
from .._core.validate import check_amount, check_rule_fields
from .._stores.memory.store import MemoryStore

_KEY = ""


class TokenBucket:
    """A thread-safe token bucket holding up to ``capacity`` tokens, refilled at ``refill_rate``/s.

    It starts full and refills lazily when used (no threads or timers). Each request takes
    ``amount`` tokens if the bucket has them; a denied request takes nothing.

    Args:
        capacity: the burst size, a finite number in (0, 1e12].
        refill_rate: tokens added per second, a finite number in [0, 1e12]; 0 never refills.
        clock: zero-argument callable returning seconds; defaults to :func:`time.monotonic`.
            Pass a [`ManualClock`][tokenbucket.ManualClock] in tests.

    Examples:
        >>> clock = ManualClock()
        >>> bucket = TokenBucket(capacity=10, refill_rate=1.0, clock=clock)
        >>> bucket.try_consume(10), bucket.try_consume()
        (True, False)
        >>> decision = bucket.consume()
        >>> decision.allowed, decision.retry_after
        (False, 1.0)
        >>> clock.advance(1.0)
        1.0
        >>> bucket.tokens
        1.0
    """

    __slots__ = ("_lock", "_rule", "_store")

    def __init__(self, capacity: float, refill_rate: float, *, clock: Optional[Clock] = None):
        self._rule = Rule(capacity, refill_rate)
        self._store = MemoryStore(clock=clock, stripes=1)
        self._lock = threading.Lock()

    @property
    def capacity(self) -> float:
        """The most tokens the bucket holds."""
        return self._rule.capacity

    @property
    def refill_rate(self) -> float:
        """Tokens added per second."""
        return self._rule.refill_rate

    @property
    def rule(self) -> Rule:
        """The bucket's current [`Rule`][tokenbucket.Rule]."""
        return self._rule

    @property
    def tokens(self) -> float:
        """The token level now, after refilling."""
        return clamp(self._store.level(_KEY, self._rule))

    def try_consume(self, amount: float = 1) -> bool:
        """Take ``amount`` tokens (default 1) if available; return whether they were taken."""
        # Fast path: a small positive int needs no checks (check_amount turns larger ints
        # into floats, so that the arithmetic cannot overflow).
        if type(amount) is not int or not 0 < amount <= 2**53:
            return self._store.take(_KEY, check_amount(amount), self._rule)[0]
        return self._store._try_take(_KEY, amount, self._rule)

    def consume(self, amount: float = 1) -> Decision:
        """Like `try_consume`, but return the full [`Decision`][tokenbucket.Decision]."""
        if type(amount) is not int or not 0 < amount <= 2**53:
            amount = check_amount(amount)
            allowed, level, rule = self._store.take(_KEY, amount, self._rule)
        else:  # as in try_consume
            allowed, level, rule = self._store._try_take(_KEY, amount, self._rule, True)
        return decide(allowed, level, amount, rule)

    def peek(self, amount: float = 1) -> Decision:
        """Return the decision `consume` would make now, without taking tokens."""
        amount = check_amount(amount)
        allowed, level, rule = self._store.peek(_KEY, amount, self._rule)
        return decide(allowed, level, amount, rule)

    def update(
        self, *, capacity: Optional[float] = None, refill_rate: Optional[float] = None
    ) -> Rule:
        """Change the capacity and/or refill rate now; return the new rule.

        The tokens earned at the old rate are settled first. Then the bucket keeps its deficit
        (tokens missing from full): a full bucket stays full, and a bucket 3 tokens short of 10
        is 3 tokens short of 50 after raising the capacity to 50. Tokens used stay used, so
        lowering the capacity to 2 leaves that bucket 1 token in debt: it admits nothing until
        it has refilled past 0. Invalid values raise before anything changes.
        """
        capacity, refill_rate = check_rule_fields(capacity, refill_rate)
        with self._lock:  # so that the rule reported is the one the store applies
            rule = self._store.update_rule(_KEY, self._rule, capacity, refill_rate)
            self._rule = rule
        return rule

    def reset(self) -> None:
        """Refill the bucket to full."""
        self._store.reset(_KEY)

    def __repr__(self) -> str:
        return (
            f"TokenBucket(capacity={self.capacity!r}, refill_rate={self.refill_rate!r}, "
            f"tokens={self.tokens!r})"
        )
