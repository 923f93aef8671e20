"""What the Redis stores do when Redis fails: the errors, the circuit breaker, the policies.

What belongs here: which exceptions a call survives (``_ERRORS``) and which of them are outages
that open the breaker (``_OUTAGES``); the ``on_error`` policies; `RedisUnavailableError`, which
admin calls raise; the `Breaker`; and `Failing`, the base of ``_redis_logic.Logic`` with the
steps a failure takes: noting it (breaker, log line, metrics hook), closing the breaker on the
next answer, and deciding without Redis (the per-process fallback store, deny or allow). The
script's operation names are here too, since the policy tells them apart (``_stores.redis.logic``
sends them).

What it must not know: the script, its arguments or replies, key names, or any I/O: it is
handed the key, amount, rule and operation of the call that failed, and the overrides last
seen (``_seen``, which ``Logic`` keeps from replies).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Optional, Tuple

import redis.exceptions

from ..._core.keys import limit_key
from ..._core.rule import EPSILON, Rule
from ..memory.store import MemoryStore
from ..store import Groups, Mask, Outcome, Outcomes

_log = logging.getLogger("tokenbucket.redis")

# The script's operations, sent as bytes (redis-py passes bytes through); the policy below
# tells them apart, so they are named here.
_TAKE = b"take"
_PEEK = b"peek"
_CHARGE = b"charge"
_RESERVE = b"reserve"
_REFUND = b"refund"

#: What a decision survives: every redis-py error, the cluster client's own (no node reachable,
#: a slot no node serves: not RedisErrors) and socket errors that escape them.
_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)
#: The slow ones, which open the circuit breaker: no answer (or no answer yet) from Redis, or a
#: cluster that cannot serve the key until a failover ends (CLUSTERDOWN, a slot not covered,
#: no node reachable; redis-py pauses on each before it retries). Other errors (a key of
#: another type, a server out of memory) come back at once, so each decision that meets one
#: just follows the policy.
_OUTAGES = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
    OSError,
)

POLICIES = ("fallback", "deny", "allow")

#: The most buckets the per-process fallback store tracks during an outage (its ``max_keys``):
#: a flood of distinct keys while Redis is down cannot grow memory without bound.
FALLBACK_MAX_KEYS = 100_000


class RedisUnavailableError(ConnectionError):
    """An admin call (``update_rule``, ``remove_rule``, ``reset``, ``get_rule``) failed.

    Raised when Redis did not answer or answered with an error; redis-py's exception is the
    ``__cause__``. The change may
    or may not have been applied: retry it (every admin call is idempotent). Decisions never
    raise this; they follow the store's ``on_error`` policy.
    """


RedisUnavailableError.__module__ = "tokenbucket.redis"  # where users import it from


def _max_wait(op: bytes, extra: Tuple[bytes, ...]) -> Optional[float]:
    """A charge's ``max_wait`` from its script arguments: None for a plain charge."""
    return float(extra[0]) if op is _RESERVE else None


class Breaker:
    """The circuit breaker: after an outage, decisions skip Redis for ``retry_interval`` s.

    Then one caller probes Redis while the others keep skipping, and the first answer closes
    the breaker. ``clock`` (default :func:`time.monotonic`) is the breaker's only notion of
    time; tests replace it (``store._logic.breaker.clock = ManualClock()``) to move past a
    window without sleeping.
    """

    __slots__ = ("_lock", "_log_after", "_retry_at", "clock", "down", "retry_interval")

    def __init__(self, retry_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_interval = retry_interval
        self.clock = clock
        self.down = False
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._log_after = 0.0

    def skip(self) -> bool:
        """With the breaker open: whether to decide without Redis (False: this caller probes)."""
        now = self.clock()
        with self._lock:
            if now < self._retry_at:
                return True
            self._retry_at = now + self.retry_interval  # the others skip while we probe
            return False

    def failed(self, outage: bool) -> bool:
        """Note a failed call (opening the breaker on an outage); return whether to log it.

        At most one log line per window, and at most one a second.
        """
        now = self.clock()
        with self._lock:
            if outage:
                self.down = True
                self._retry_at = now + self.retry_interval
            if now < self._log_after:
                return False
            self._log_after = now + max(self.retry_interval, 1.0)
            return True

    def closed(self) -> bool:
        """Close the breaker after an answer; return whether it was open."""
        with self._lock:
            if not self.down:
                return False
            self.down = False
            self._retry_at = self._log_after = 0.0
            return True


class Failing:
    """The failure steps of ``_redis_logic.Logic``, its base class (which sets these slots)."""

    __slots__ = ("_seen", "breaker", "fallback", "on_degraded", "on_policy", "policy")

    # Set by Logic.__init__.
    _seen: Dict[str, Rule]
    breaker: Breaker
    fallback: MemoryStore
    on_degraded: Optional[Callable[[bool], None]]
    on_policy: Optional[Callable[[str], None]]
    policy: str

    def _failed(self, error: BaseException) -> None:
        """Note a failure in the breaker and log it (once per window, at most once a second)."""
        outage = isinstance(error, _OUTAGES)
        if outage and self.on_degraded is not None:
            self.on_degraded(True)
        if not self.breaker.failed(outage):
            return
        name = type(error).__name__
        if outage:
            _log.warning(
                "Redis unavailable (%s: %s); deciding with on_error=%r, retrying in %g s",
                name,
                error,
                self.policy,
                self.breaker.retry_interval,
            )
        else:
            _log.warning(
                "Redis refused a call (%s: %s); that decision followed on_error=%r",
                name,
                error,
                self.policy,
            )

    def _recovered(self) -> None:
        """Close the breaker after a successful call; the next outage starts with full buckets."""
        if self.breaker.closed():
            self.fallback = MemoryStore(max_keys=FALLBACK_MAX_KEYS)
            if self.on_degraded is not None:
                self.on_degraded(False)
            _log.warning("Redis available again; decisions go through Redis")

    def _degraded(
        self, key: str, amount: float, default: Rule, op: bytes, extra: Tuple[bytes, ...] = ()
    ) -> Outcome:
        """Decide without Redis, following the ``on_error`` policy."""
        if self.on_policy is not None:
            self.on_policy(self.policy)
        return self._by_policy(key, amount, default, op, extra)

    def _by_policy(
        self, key: str, amount: float, default: Rule, op: bytes, extra: Tuple[bytes, ...] = ()
    ) -> Outcome:
        """One bucket's outcome under the ``on_error`` policy (no metrics hook)."""
        rule = self._seen.get(key, default)
        if self.policy == "fallback":
            if op is _TAKE:
                return self.fallback.take(key, amount, rule)
            if op is _CHARGE or op is _RESERVE:  # a reservation: extra is its max_wait
                return self.fallback.charge(key, amount, rule, _max_wait(op, extra))
            if op is _REFUND:
                return self.fallback.refund(key, amount, rule)
            return self.fallback.peek(key, amount, rule)
        if op is _CHARGE or op is _REFUND:  # done, but lost: reported as full (allow) or empty
            return True, float(rule.capacity if self.policy == "allow" else 0.0), rule
        if self.policy == "deny":
            return False, 0.0, rule
        # allow: as if every bucket were full, so only a request beyond the capacity is denied.
        if amount > rule.capacity + EPSILON:
            return False, float(rule.capacity), rule
        return True, float(rule.capacity - amount), rule

    def _degraded_all(
        self,
        groups: Groups,
        amount: float,
        op: bytes,
        extra: Tuple[bytes, ...] = (),
        shadow: Mask = (),
    ) -> Tuple[bool, Outcomes]:
        """Several buckets without Redis, following the ``on_error`` policy."""
        if self.on_policy is not None:
            self.on_policy(self.policy)
        if self.policy == "fallback":  # the overrides last seen, by their hash's key
            seen = [
                (
                    key,
                    tuple(
                        (name, self._seen.get(limit_key(key, name), rule)) for name, rule in limits
                    ),
                )
                for key, limits in groups
            ]
            if op is _TAKE:
                return self.fallback.take_all(seen, amount, shadow)
            if op is _CHARGE or op is _RESERVE:
                return self.fallback.charge_all(seen, amount, _max_wait(op, extra), shadow)
            if op is _REFUND:
                return self.fallback.refund_all(seen, amount)
            return self.fallback.peek_all(seen, amount, shadow)
        outcomes = tuple(
            self._by_policy(limit_key(key, name), amount, default, op)
            for key, limits in groups
            for name, default in limits
        )
        allowed = _enforced(outcomes, shadow)
        if not allowed:  # allow: every bucket is full, so a denial left all of them full
            outcomes = tuple(
                (ok, level + amount if ok else level, rule) for ok, level, rule in outcomes
            )
        return allowed, outcomes

    def _unavailable(self, call: str, key: str, error: BaseException) -> RedisUnavailableError:
        self._failed(error)
        return RedisUnavailableError(
            f"{call}({key!r}) failed in Redis ({type(error).__name__}: {error}); "
            f"it may not have been applied"
        )


def _enforced(outcomes: Outcomes, shadow: Mask) -> bool:
    """Whether every bucket not in the ``shadow`` mask admits (the decision of a take_all)."""
    if not shadow:
        return all(outcome[0] for outcome in outcomes)
    return all(outcome[0] for outcome, watched in zip(outcomes, shadow) if not watched)
