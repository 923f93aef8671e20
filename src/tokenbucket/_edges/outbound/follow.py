"""The client's side of a server's limit: pace by a registry, learn from the server's fields.

Knows: the transport options (`Follower`), how a response's `ServerLimit` changes a key's
budget (a tighter limit adopted as the key's rule, a pause charged as debt), the first
request per key that goes alone to learn the server's limit (`Gate`, `AsyncGate`). Must not
know: any HTTP client library; the shells (``tokenbucket.httpx``, ``tokenbucket.requests``)
hand it a key, a method, a status and header pairs.

Everything that changes a key's budget goes through the registry (the same reservation as
`acquire`, overrides, charges), so a registry on a shared Redis store gives several processes
one budget, one learned limit and one pause.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Callable, Dict, FrozenSet, Iterable, NamedTuple, Optional, Tuple, Union

from ..._core.decision import Decision
from ..._core.rule import Rule
from ..._registry.registry import BucketRegistry
from .fields import Headers, ServerLimit, pause_for, read_fields, retry_wait

#: The methods retried after a 429 or 503 by default: those RFC 9110 calls idempotent.
IDEMPOTENT: FrozenSet[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: How many keys' learned state is kept before it is dropped and learned again.
MAX_TRACKED_KEYS = 10_000

LocalLimit = Union[Rule, str, BucketRegistry]


def as_registry(limit: LocalLimit) -> BucketRegistry:
    """The registry a ``limit`` option means: a Rule or rate string gets a new one."""
    if isinstance(limit, BucketRegistry):
        return limit
    if isinstance(limit, str):
        return BucketRegistry(Rule.parse(limit))
    if isinstance(limit, Rule):
        return BucketRegistry(limit)
    raise TypeError(f"'limit' must be a Rule, a rate string or a BucketRegistry, got {limit!r}")


class Plan(NamedTuple):
    """What one response changes for its key.

    ``rule``: the key's rule (None: the default); ``pause``: seconds before the next request;
    ``remaining``: the most the key may hold now (the server's ``r``; None if not said);
    ``retry``: the wait before retrying this request (None: not to be retried).
    """

    rule: Optional[Rule]
    pause: float
    remaining: Optional[float]
    retry: Optional[float]


class Follower:
    """The options and learned state shared by every transport; see `tokenbucket.httpx`."""

    def __init__(
        self,
        limit: LocalLimit,
        *,
        follow_server: bool = True,
        max_retries: int = 2,
        max_wait: float = 60.0,
        retry_methods: Iterable[str] = IDEMPOTENT,
        headroom: float = 0.25,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.registry = as_registry(limit)
        if follow_server and len(self.registry.limits) != 1:
            raise ValueError(
                "'follow_server' needs a registry of one limit, got limits "
                f"{list(self.registry.limits)!r}; pass follow_server=False"
            )
        for rule in self.registry.defaults.values():
            if rule.capacity < 1:
                raise ValueError(f"'limit' must let one request pass: capacity >= 1, got {rule!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"'max_retries' must be an int >= 0, got {max_retries!r}")
        for name, value in (("max_wait", max_wait), ("headroom", headroom)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name!r} must be a number, got {value!r}")
            if not 0 <= value < math.inf:
                raise ValueError(f"{name!r} must be a finite number >= 0, got {value!r}")
        self.follow_server = follow_server
        self.max_retries = max_retries
        self.max_wait = float(max_wait)
        self.retry_methods = frozenset(method.upper() for method in retry_methods)
        self.headroom = float(headroom)
        self.wall = wall
        #: Per key, the rule adopted from the server (absent: the registry's default).
        self.adopted: Dict[str, Rule] = {}

    def retries(self, method: str) -> int:
        """How many times a request with ``method`` may be retried."""
        return self.max_retries if method.upper() in self.retry_methods else 0

    def plan(self, key: str, status: int, headers: Headers, elapsed: float) -> Plan:
        """What a response means for ``key``: its rule, the pause, and the retry wait.

        ``elapsed`` is the time since the request was sent: a pause for ``remaining`` 0 counts
        from the server's decision, which came no earlier than the send (the headroom absorbs
        the rest); a ``Retry-After`` counts from now.
        """
        server = read_fields(headers, self.wall()) if self.follow_server else ServerLimit()
        retry = retry_wait(status, server)
        if not self.follow_server:
            return Plan(self.adopted.get(key), 0.0, None, retry)
        rule = self.learned(server, key, status)
        pause = max(pause_for(server) - elapsed, 0.0)
        if retry is not None:
            pause = max(pause, retry)
        return Plan(rule, pause, server.remaining, retry)

    def learned(self, server: ServerLimit, key: str, status: int) -> Optional[Rule]:
        """The key's rule after ``server``: the local one, tightened by what the server says."""
        if server.limit is None:
            # a server error may come from a proxy that sets no fields: keep what was learned
            return self.adopted.get(key) if status >= 500 else None
        local = self.registry.default
        rate = server.rate
        refill = local.refill_rate if rate is None else min(rate, local.refill_rate)
        quota = max(server.limit, 1.0)
        spare = min(refill * self.headroom, quota / 2)  # absorbs the network's jitter
        capacity = min(local.capacity, max(quota - spare, 1.0))  # a request takes one token
        if capacity >= local.capacity and refill >= local.refill_rate:
            return None
        return Rule(capacity, refill) if refill > 0 else Rule(capacity, local.refill_rate)

    def adopt(self, key: str, rule: Optional[Rule]) -> Optional[Rule]:
        """Record ``rule`` for ``key``; return the override to set (or the old one to drop)."""
        current = self.adopted.get(key)
        if rule == current:
            return None
        if len(self.adopted) >= MAX_TRACKED_KEYS:
            self.adopted.clear()
        if rule is None:
            self.adopted.pop(key, None)
        else:
            self.adopted[key] = rule
        return rule or current

    def current(self, key: str) -> Rule:
        """The rule the key is paced by now."""
        return self.adopted.get(key) or self.registry.default

    def _change(self, key: str, plan: Plan) -> Tuple[Optional[Rule], bool]:
        """The override to set or drop, and whether the budget must be read (`owed`)."""
        change = self.adopt(key, plan.rule)
        rule = self.current(key)
        below = plan.remaining is not None and plan.remaining < rule.capacity
        return change, plan.pause > 0 or below

    def apply(self, key: str, plan: Plan) -> None:
        """Change ``key``'s budget in the registry as ``plan`` says."""
        registry = self.registry
        change, read = self._change(key, plan)
        if change is not None:
            if plan.rule is None:
                registry.remove_rule(key)
            else:
                registry.update_rule(key, capacity=change.capacity, refill_rate=change.refill_rate)
        if read:
            debt = owed(registry.peek(key), self.current(key).refill_rate, plan)
            if debt > 0:
                registry.charge(key, debt)

    async def aapply(self, key: str, plan: Plan) -> None:
        """Awaitable `apply`."""
        registry = self.registry
        change, read = self._change(key, plan)
        if change is not None:
            if plan.rule is None:
                await registry.aremove_rule(key)
            else:
                await registry.aupdate_rule(
                    key, capacity=change.capacity, refill_rate=change.refill_rate
                )
        if read:
            debt = owed(await registry.apeek(key), self.current(key).refill_rate, plan)
            if debt > 0:
                await registry.acharge(key, debt)


def owed(now: Decision, rate: float, plan: Plan) -> float:
    """Tokens to charge: the key holds at most ``plan.remaining``, and waits ``plan.pause``.

    The server's ``remaining`` was true when it decided; it has refilled since, and the key's
    requests still in flight are already charged here, so holding no more is on the safe side.
    ``now`` is a peek at one token: if it is there, ``now.remaining`` is what would be left
    after it, else the token is ``retry_after`` seconds away (a queue's debt). Nothing is owed
    when the budget is already that low (a queue, an earlier pause), so pauses never add up.
    """
    wait = now.retry_after
    if wait == math.inf:
        return 0.0
    level = now.remaining + 1 if wait == 0 else 1 - rate * wait
    debt = 0.0
    if plan.remaining is not None:
        debt = level - plan.remaining
    if plan.pause > 0 and rate > 0:
        debt = max(debt, level - 1 + rate * plan.pause)
    return min(max(debt, 0.0), 2.0**52)


class Gate:
    """The first request of each key goes alone; the others wait for its answer (threads).

    Until a server has answered once, its limit is unknown: a burst sent at a looser local
    limit would meet a wall of 429s. The first caller for a key learns; the rest wait at most
    ``timeout`` seconds for it.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: set[str] = set()
        self._probes: Dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def enter(self, key: str) -> bool:
        """Return True if the caller is the key's first request (it must call `leave`)."""
        while True:
            with self._lock:
                if key in self._seen:
                    return False
                event = self._probes.get(key)
                if event is None:
                    self._probes[key] = threading.Event()
                    return True
            if not event.wait(self.timeout):
                return False

    def leave(self, key: str, learned: bool) -> None:
        """The first request is over: ``learned`` if a response came back."""
        with self._lock:
            if learned:
                if len(self._seen) >= MAX_TRACKED_KEYS:
                    self._seen.clear()
                self._seen.add(key)
            event = self._probes.pop(key, None)
        if event is not None:
            event.set()


class AsyncGate:
    """`Gate` for one event loop's tasks."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: set[str] = set()
        self._probes: Dict[str, asyncio.Event] = {}

    async def enter(self, key: str) -> bool:
        """Return True if the caller is the key's first request (it must call `leave`)."""
        while key not in self._seen:
            event = self._probes.get(key)
            if event is None:
                self._probes[key] = asyncio.Event()
                return True
            try:
                await asyncio.wait_for(event.wait(), self.timeout)
            except asyncio.TimeoutError:
                return False
        return False

    def leave(self, key: str, learned: bool) -> None:
        """The first request is over: ``learned`` if a response came back."""
        if learned:
            if len(self._seen) >= MAX_TRACKED_KEYS:
                self._seen.clear()
            self._seen.add(key)
        event = self._probes.pop(key, None)
        if event is not None:
            event.set()
