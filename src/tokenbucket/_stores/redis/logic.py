"""The Redis stores' logic, without I/O: what to send, how to read the reply, what to do on failure.

Each operation is a *plan*: a generator that yields the calls to make, as ``(method, args)``
for the redis-py client (``client.evalsha(*args)``, ``client.hmget(*args)``, ...), receives
each reply through ``send`` or each exception through ``throw``, and returns the operation's
answer (``StopIteration.value``). The stores in ``tokenbucket.redis`` only make the calls,
[`RedisStore`][tokenbucket.redis.RedisStore] blocking and
[`AsyncRedisStore`][tokenbucket.redis.AsyncRedisStore] awaiting, so the arguments, the reading
of replies, the failure policy and the circuit breaker exist once. A new operation is one more
plan here and one line in each store. What a failure does (the breaker, the ``on_error``
policy, the errors) is in ``_stores.redis.failure``, the base of `Logic`. Every call that changes a
bucket carries a marker, so that it is applied once however often the client sends it
(``_stores.redis.once``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Dict, Generator, List, Optional, Tuple, TypeVar, Union

import redis.exceptions
from redis.crc import key_slot

from ..._core.rule import Rule
from ..._core.validate import Number
from ..memory.store import MemoryStore
from ..store import Groups, Mask, Outcome, Outcomes
from .failure import (
    _CHARGE,
    _ERRORS,
    _PEEK,
    _REFUND,
    _RESERVE,
    _TAKE,
    FALLBACK_MAX_KEYS,
    Breaker,
    Failing,
    _enforced,
)
from .groups import Buckets, flat
from .once import MARKED, UNDO, Markers

T = TypeVar("T")

#: A call for the client to make: a method name and its arguments.
Call = Tuple[str, Tuple[Any, ...]]
#: An operation: yields calls, is sent their replies (or thrown their errors), returns ``T``.
Plan = Generator[Call, Any, T]

#: The one script every operation runs (see its header for the data layout and arguments).
_SCRIPT = resources.files(__package__).joinpath("lua").joinpath("bucket.lua").read_text("utf-8")
#: Its SHA1, the name EVALSHA calls it by (Redis computes the same from the text).
_SHA = hashlib.sha1(_SCRIPT.encode("utf-8")).hexdigest().encode("ascii")

#: The amount most calls send, encoded once (the operations' names are in _redis_failure).
_ONE = b"1"
#: The call that runs the script (see `_script`).
_EVALSHA = "evalsha"
_TWO = b"2"

#: Overrides remembered for the fallback policy, at most; beyond it the memory is cleared.
_MAX_SEEN = 10_000


def _parse_number(text: Union[bytes, str]) -> Number:
    """Return the int or float a number the script sent back as text was written from."""
    try:
        return int(text)
    except ValueError:
        return float(text)


@lru_cache(maxsize=1024)
def _rule(capacity: Union[bytes, str], refill_rate: Union[bytes, str]) -> Rule:
    """Return the rule an override's two fields describe (cached: overrides are few)."""
    return Rule(_parse_number(capacity), _parse_number(refill_rate))


def _encode(number: float) -> bytes:
    """Write a number as the script reads it back exactly (``repr``, as redis-py does)."""
    return repr(number).encode("ascii")


class Logic(Failing):
    """Everything the two stores share: key names, script arguments, replies, failure policy.

    No I/O happens here: each public method returns a plan (see the module docstring).
    """

    __slots__ = ("_encoded", "_markers", "cluster", "prefix")  # the rest are Failing's

    def __init__(
        self, prefix: str, on_error: str, retry_interval: float, cluster: bool = False
    ) -> None:
        self.prefix = prefix
        #: Whether the client is a Redis Cluster's: then keys taken together share a slot.
        self.cluster = cluster
        self._markers = Markers(prefix, cluster)
        self.policy = on_error
        self.breaker = Breaker(retry_interval)
        self.fallback = MemoryStore(max_keys=FALLBACK_MAX_KEYS)
        self._seen: Dict[str, Rule] = {}
        self._encoded: Tuple[Optional[Rule], bytes, bytes] = (None, b"", b"")
        # Metrics hooks (tokenbucket.metrics.watch): on_policy(policy) for each decision the
        # failure policy makes; on_degraded(flag) as the breaker opens (True) and closes.
        self.on_policy: Optional[Callable[[str], None]] = None
        self.on_degraded: Optional[Callable[[bool], None]] = None

    # -- operations (plans) ----------------------------------------------------------------

    def take(self, key: str, amount: float, default: Rule) -> Plan[Outcome]:
        """Decide and take; never raises for Redis trouble (follows the ``on_error`` policy)."""
        return self._decide(key, amount, default, _TAKE)

    def peek(self, key: str, amount: float, default: Rule) -> Plan[Outcome]:
        """What `take` would answer, changing nothing; never raises for Redis trouble."""
        return self._decide(key, amount, default, _PEEK)

    def level(self, key: str, default: Rule) -> Plan[float]:
        """The token level now (a peek at 0 tokens); never raises for Redis trouble."""
        return (yield from self._decide(key, 0, default, _PEEK))[1]

    def take_all(
        self, groups: Groups, amount: float, shadow: Mask = ()
    ) -> Plan[Tuple[bool, Outcomes]]:
        """Take from every limit or none, in one script call; never raises for Redis trouble.

        Each limit is its own hash, ``limit_key(key, name)`` (see ``groups``). Raises
        ValueError (before any call) for repeated keys, or, on a Redis Cluster, for keys in
        more than one hash slot (give them a common ``{hash tag}``).
        """
        return self._decide_all(groups, amount, _TAKE, (), shadow)

    def peek_all(
        self, groups: Groups, amount: float, shadow: Mask = ()
    ) -> Plan[Tuple[bool, Outcomes]]:
        """What `take_all` would answer, changing nothing."""
        return self._decide_all(groups, amount, _PEEK, (), shadow)

    def charge(
        self,
        key: str,
        amount: float,
        default: Rule,
        max_wait: Optional[float],
        call: Optional[bytes] = None,
    ) -> Plan[Outcome]:
        """Charge into debt (a reservation if ``max_wait`` is given); never raises for Redis.

        ``call``: the call id (`new_call`), for an `undo` if the caller is cancelled.
        """
        if max_wait is None:
            return self._decide(key, amount, default, _CHARGE, (), call)
        return self._decide(key, amount, default, _RESERVE, (_encode(float(max_wait)),), call)

    def refund(self, key: str, amount: float, default: Rule) -> Plan[Outcome]:
        """Give back, never above full; never raises for Redis trouble."""
        return self._decide(key, amount, default, _REFUND)

    def charge_all(
        self,
        groups: Groups,
        amount: float,
        max_wait: Optional[float],
        call: Optional[bytes] = None,
        shadow: Mask = (),
    ) -> Plan[Tuple[bool, Outcomes]]:
        """`charge` on several buckets in one script call, as `take_all`.

        ``shadow``: its mask, for a reservation (a plain charge charges every bucket).
        """
        if max_wait is None:
            return self._decide_all(groups, amount, _CHARGE, (), (), call)
        extra = (_encode(float(max_wait)),)
        return self._decide_all(groups, amount, _RESERVE, extra, shadow, call)

    def undo(self, buckets: Buckets, amount: float, call: bytes) -> Plan[None]:
        """Take back the charge ``call`` of ``amount`` on ``buckets`` if Redis applied it.

        ``buckets``: ``(hash key, default rule)`` pairs (see `buckets`).

        For a caller cancelled while its call was on the way: the amount is refunded (to the
        buckets the call charged, as its stored reply says) if the call was applied, and the
        call changes nothing if it arrives after. A failure is logged
        and dropped (the charge, if applied, stays).
        """
        args = self._all_args(buckets, amount, UNDO, (), (), call)
        try:
            yield from self._script(args)
        except _ERRORS as error:
            self._failed(error)

    def refund_all(self, groups: Groups, amount: float) -> Plan[Tuple[bool, Outcomes]]:
        """`refund` on several buckets in one script call, as `take_all`."""
        return self._decide_all(groups, amount, _REFUND)

    def get_rule(self, key: str) -> Plan[Optional[Rule]]:
        """Read ``key``'s override (HMGET); raise RedisUnavailableError if Redis fails."""
        try:
            capacity, refill_rate = yield ("hmget", (self._name(key), "C", "R"))
        except _ERRORS as error:
            raise self._unavailable("get_rule", key, error) from error
        if self.breaker.down:
            self._recovered()
        rule = None if capacity is None else _rule(capacity, refill_rate)
        self._remember(key, rule)
        return rule

    def update_rule(
        self, key: str, default: Rule, capacity: Optional[float], refill_rate: Optional[float]
    ) -> Plan[Rule]:
        """Settle the bucket and set the override atomically; raise RedisUnavailableError."""
        args = (
            b"update",
            default.capacity,
            default.refill_rate,
            "" if capacity is None else capacity,
            "" if refill_rate is None else refill_rate,
        )
        reply = yield from self._admin("update_rule", key, args)
        rule = _rule(reply[0], reply[1])
        self._remember(key, rule)
        return rule

    def remove_rule(self, key: str, default: Rule) -> Plan[Optional[Rule]]:
        """Settle the bucket and drop the override atomically; raise RedisUnavailableError."""
        args = (b"remove", default.capacity, default.refill_rate)
        reply = yield from self._admin("remove_rule", key, args)
        self._remember(key, None)
        return None if reply is None else _rule(reply[0], reply[1])

    def reset(self, key: str) -> Plan[None]:
        """Forget the bucket's state; raise RedisUnavailableError."""
        yield from self._admin("reset", key, (b"reset", "", ""))

    # -- the steps they share --------------------------------------------------------------

    def _decide(
        self,
        key: str,
        amount: float,
        default: Rule,
        op: bytes,
        extra: Tuple[bytes, ...] = (),
        call: Optional[bytes] = None,
    ) -> Plan[Outcome]:
        """One bucket: the script's ``op``, or the ``on_error`` policy (``extra``: more args)."""
        if self.breaker.down and self.breaker.skip():
            return self._degraded(key, amount, default, op, extra)
        args = self._take_args(key, amount, default, op, call)
        if extra:
            args += extra
        try:
            try:  # (as _script does, without a generator of its own: this is the hot path)
                reply = yield _EVALSHA, args
            except redis.exceptions.NoScriptError:
                reply = yield from self._reload(args)
        except _ERRORS as error:
            self._failed(error)
            return self._degraded(key, amount, default, op, extra)
        if self.breaker.down:
            self._recovered()
        return self._outcome(key, reply, default)

    def _decide_all(
        self,
        groups: Groups,
        amount: float,
        op: bytes,
        extra: Tuple[bytes, ...] = (),
        shadow: Mask = (),
        call: Optional[bytes] = None,
    ) -> Plan[Tuple[bool, Outcomes]]:
        """Several buckets, all or nothing: one script call with every key, or the policy."""
        buckets = flat(groups)
        names = [self._name(key) for key, _ in buckets]
        if len(set(names)) != len(names):
            raise ValueError(f"'buckets' must name distinct keys, got {[k for k, _ in buckets]!r}")
        if self.cluster and len({key_slot(name) for name in names}) > 1:
            raise ValueError(
                "'buckets' must be keys of one Redis Cluster hash slot (give them a common "
                f"{{hash tag}}), got {[k for k, _ in buckets]!r}"
            )
        if not buckets:
            return True, ()
        if self.breaker.down and self.breaker.skip():
            return self._degraded_all(groups, amount, op, extra, shadow)
        try:
            reply = yield from self._script(
                self._all_args(buckets, amount, op, extra, shadow, call, names)
            )
        except _ERRORS as error:
            self._failed(error)
            return self._degraded_all(groups, amount, op, extra, shadow)
        if self.breaker.down:
            self._recovered()
        if reply.__class__ is not bytes:  # a client that decodes replies
            reply = reply.encode()
        outcomes = tuple(
            self._outcome(key, line, default)
            for (key, default), line in zip(buckets, reply.split(b"\n"))
        )
        return _enforced(outcomes, shadow), outcomes

    def _all_args(
        self,
        buckets: Buckets,
        amount: float,
        op: bytes,
        extra: Tuple[bytes, ...],
        shadow: Mask,
        call: Optional[bytes],
        names: Optional[List[bytes]] = None,
    ) -> Tuple[Any, ...]:
        """EVALSHA's arguments for ``op`` on several buckets (with the call's marker)."""
        if names is None:
            names = [self._name(key) for key, _ in buckets]
        if op is _PEEK:
            args: List[Any] = [_SHA, len(names), *names, op]
        else:
            marker = self._markers.of(names[0], call)
            args = [_SHA, len(names) + 1, *names, marker, MARKED.get(op, op)]
        first = buckets[0][1]
        args += [_encode(first.capacity), _encode(first.refill_rate), _encode(amount)]
        for _, default in buckets[1:]:
            args += [_encode(default.capacity), _encode(default.refill_rate)]
        args += extra
        if shadow:
            args.append("".join("1" if watched else "0" for watched in shadow).encode())
        return tuple(args)

    def _script(self, full: Tuple[Any, ...]) -> Plan[Any]:
        """Run the script: EVALSHA ``full``, loading the script once if the server lacks it."""
        try:
            return (yield _EVALSHA, full)
        except redis.exceptions.NoScriptError:
            return (yield from self._reload(full))

    def _reload(self, full: Tuple[Any, ...]) -> Plan[Any]:
        """After NOSCRIPT (a new or flushed server): load the script once, EVALSHA ``full``."""
        yield ("script_load", (_SCRIPT,))
        return (yield _EVALSHA, full)

    def _admin(self, call: str, key: str, args: Tuple[Any, ...]) -> Plan[Any]:
        """Run the script for an admin call; raise RedisUnavailableError if Redis fails."""
        try:
            reply = yield from self._script((_SHA, _ONE, self._name(key), *args))
        except _ERRORS as error:
            raise self._unavailable(call, key, error) from error
        if self.breaker.down:
            self._recovered()
        return reply

    def _name(self, key: str) -> bytes:
        # surrogatepass: every str is a valid key, and distinct keys stay distinct.
        return (self.prefix + key).encode("utf-8", "surrogatepass")

    def _take_args(
        self, key: str, amount: float, default: Rule, op: bytes, call: Optional[bytes]
    ) -> Tuple[bytes, ...]:
        """Return EVALSHA's arguments for a decision on one key (with its marker), as bytes."""
        encoded = self._encoded
        if encoded[0] is not default:  # the default rule's numbers, encoded once per rule
            encoded = (default, _encode(default.capacity), _encode(default.refill_rate))
            self._encoded = encoded
        name = self._name(key)
        size = _ONE if amount == 1 else _encode(amount)
        if op is _PEEK:
            return (_SHA, _ONE, name, op, encoded[1], encoded[2], size)
        marker = self._markers.of(name, call)
        return (_SHA, _TWO, name, marker, MARKED[op], encoded[1], encoded[2], size)

    def _outcome(self, key: str, reply: Any, default: Rule) -> Outcome:
        """Turn a ``take`` reply, ``'<allowed><level>[ <C> <R>]'``, into an outcome."""
        if reply.__class__ is not bytes:  # a client that decodes replies
            reply = reply.encode()
        if b" " not in reply:
            if self._seen:
                self._seen.pop(key, None)
            return reply[0] == 49, float(reply[1:]), default  # 49: b"1"
        level, capacity, refill_rate = reply[1:].split(b" ")
        rule = _rule(capacity, refill_rate)
        self._remember(key, rule)
        return reply[0] == 49, float(level), rule

    def _remember(self, key: str, rule: Optional[Rule]) -> None:
        """Keep the override last seen for ``key``, for decisions while Redis is down."""
        seen = self._seen
        if rule is None:
            seen.pop(key, None)
            return
        if len(seen) >= _MAX_SEEN and key not in seen:
            seen.clear()
        seen[key] = rule
