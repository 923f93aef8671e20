"""Metrics: what the limiter decided, counted in plain Python for an exporter to read.

    from tokenbucket.metrics.prometheus import PrometheusMetrics

    metrics = PrometheusMetrics()  # registers with prometheus_client's default registry
    app.add_middleware(RateLimitMiddleware, registry=limits, metrics=metrics)
    # or, without a middleware: limits = instrument(limits, metrics)

A [`Metrics`][tokenbucket.metrics.Metrics] holds counts, sums and histogram buckets, updated
under one lock by the code that makes decisions, and read at scrape time by an adapter:
[`PrometheusMetrics`][tokenbucket.metrics.prometheus.PrometheusMetrics] (extra ``prometheus``)
or [`OtelMetrics`][tokenbucket.metrics.otel.OtelMetrics] (extra ``otel``). This module imports
neither library; nothing is counted unless a ``Metrics`` is attached.

Labels come from small fixed sets: a policy name (``"default"`` or a route pattern), an outcome
(`OUTCOMES`), a store name (`store_name`: ``"memory"``, ``"redis"``, ``"redis-cluster"``), the
failure policy, an admin action and status. Never a client key: one label value per client
would grow the metrics server without bound.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from functools import partial
from time import perf_counter
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._core.decision import Decision
from .._stores.redis.late import LateClient

__all__ = [
    "OUTCOMES",
    "STORE_SECONDS_BUCKETS",
    "InstrumentedRegistry",
    "Metrics",
    "Recorder",
    "Snapshot",
    "instrument",
    "store_name",
    "watch",
]

#: The ``outcome`` label's values: allowed; denied (refused); denied in a dry run or by a policy
#: or limit in shadow (let through).
OUTCOMES = ("allowed", "denied", "shadow_denied")

#: Upper bounds (seconds) of the store-time histogram's buckets: an in-memory decision takes a
#: few microseconds, a Redis round trip a few hundred.
STORE_SECONDS_BUCKETS: Tuple[float, ...] = (
    0.000005,
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

#: ``record(allowed, tokens, seconds)``: count one decision of a policy and its store's time.
Recorder = Callable[[bool, float, float], None]


class Snapshot:
    """A consistent copy of every value a `Metrics` holds, taken at scrape time.

    Attributes:
        decisions: ``(policy, outcome) -> [count, tokens]``.
        store_seconds: ``store -> [count in each bucket of STORE_SECONDS_BUCKETS and +Inf
            (not cumulative)..., sum]``.
        store_errors: ``(store, policy_applied) -> count``.
        degraded: ``store -> whether its failure policy is in force``.
        tracked_keys: ``store -> keys held in memory``, read now.
        admin: ``(action, status) -> count``.
    """

    __slots__ = ("admin", "decisions", "degraded", "store_errors", "store_seconds", "tracked_keys")

    def __init__(self, metrics: Metrics) -> None:
        with metrics._lock:
            self.decisions = {label: list(cell) for label, cell in metrics._decisions.items()}
            self.store_seconds = {store: list(cell) for store, cell in metrics._times.items()}
            self.store_errors = dict(metrics._errors)
            self.degraded = dict(metrics._degraded)
            self.admin = dict(metrics._admin)
            counters = list(metrics._keys.items())
        self.tracked_keys = {store: count() for store, count in counters}


class Metrics:
    """The counts behind the metrics, with no dependency; adapters export them.

    Every method is safe to call from any thread. The hot path is a `recorder`, bound once per
    policy; the other methods are for events that are rare (errors, admin requests) or read at
    scrape time (`track_keys`). Use an adapter (which subclasses this) to export them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decisions: Dict[Tuple[str, str], List[float]] = {}
        self._times: Dict[str, List[float]] = {}
        self._errors: Dict[Tuple[str, str], int] = {}
        self._degraded: Dict[str, bool] = {}
        self._keys: Dict[str, Callable[[], int]] = {}
        self._admin: Dict[Tuple[str, int], int] = {}

    def _cell(self, policy: str, outcome: str) -> List[float]:
        with self._lock:
            return self._decisions.setdefault((policy, outcome), [0, 0])

    def _histogram(self, store: str) -> List[float]:
        with self._lock:
            return self._times.setdefault(store, [0] * (len(STORE_SECONDS_BUCKETS) + 2))

    def recorder(self, policy: str, store: str, shadow: bool = False) -> Recorder:
        """Return ``record(allowed, tokens, seconds)`` for decisions of ``policy`` on ``store``.

        A denial counts as ``shadow_denied`` when ``shadow`` (a dry run: the request went on).
        One call of ``record`` takes the lock once; the labels are resolved here, once.
        """
        allowed = self._cell(policy, "allowed")
        denied = self._cell(policy, "shadow_denied" if shadow else "denied")
        times = self._histogram(store)
        lock = self._lock
        bounds = STORE_SECONDS_BUCKETS

        acquire, release = lock.acquire, lock.release

        def record(ok: bool, tokens: float, seconds: float) -> None:
            cell = allowed if ok else denied
            # acquire and release, not `with`: a tenth of a microsecond less, and nothing
            # between them can raise.
            acquire()
            cell[0] += 1
            cell[1] += tokens
            times[bisect_left(bounds, seconds)] += 1
            times[-1] += seconds
            release()

        return record

    def decision(self, policy: str, outcome: str, tokens: float) -> None:
        """Count one decision of ``policy`` with ``outcome`` (one of `OUTCOMES`) for ``tokens``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"'outcome' must be one of {OUTCOMES!r}, got {outcome!r}")
        cell = self._cell(policy, outcome)
        with self._lock:
            cell[0] += 1
            cell[1] += tokens

    def store_time(self, store: str, seconds: float) -> None:
        """Add one observation of ``store``'s time for a decision to the histogram."""
        times = self._histogram(store)
        with self._lock:
            times[bisect_left(STORE_SECONDS_BUCKETS, seconds)] += 1
            times[-1] += seconds

    def store_error(self, store: str, policy_applied: str) -> None:
        """Count a decision ``store`` could not make, made by its failure policy instead."""
        with self._lock:
            label = (store, policy_applied)
            self._errors[label] = self._errors.get(label, 0) + 1

    def degraded(self, store: str, flag: bool) -> None:
        """Note whether ``store``'s failure policy is in force (its circuit breaker is open)."""
        with self._lock:
            self._degraded[store] = bool(flag)

    def admin(self, action: str, status: int) -> None:
        """Count one admin request: ``action`` (``"update"``, ``"refused"``, ...) and status."""
        with self._lock:
            label = (action, status)
            self._admin[label] = self._admin.get(label, 0) + 1

    def track_keys(self, store: str, count: Callable[[], int]) -> None:
        """Report ``count()`` as ``store``'s tracked buckets, called at scrape time only."""
        with self._lock:
            self._keys[store] = count

    def snapshot(self) -> Snapshot:
        """Return a consistent copy of every value (what an adapter exports)."""
        return Snapshot(self)


def store_name(store: object) -> str:
    """The ``store`` label of a store: ``"memory"``, ``"redis"``, ``"redis-cluster"``.

    A store of another class is named by its ``metrics_name`` class attribute if it has one,
    else by its class name in lower case: a name per class, never per address or key.
    """
    kind = type(store).__name__
    if kind == "MemoryStore":
        return "memory"
    if kind in ("RedisStore", "AsyncRedisStore"):
        client = getattr(store, "client", None)
        if isinstance(client, LateClient):  # Python 3.9, not built yet: see _redis_late
            return "redis-cluster" if client.is_cluster else "redis"
        return "redis-cluster" if "Cluster" in type(client).__name__ else "redis"
    return str(getattr(type(store), "metrics_name", kind.lower()))


def watch(store: object, metrics: Metrics) -> str:
    """Report ``store``'s tracked buckets, errors and degraded state to ``metrics``.

    A store with ``len()`` (the in-memory one) reports its buckets. A Redis store reports the
    buckets of its in-process fallback (0 while Redis answers), each decision its failure policy
    made (``store_error``) and whether that policy is in force (``degraded``). A store watched
    again by another ``Metrics`` reports to that one. Returns the store's `store_name`.
    """
    name = store_name(store)
    if hasattr(store, "__len__"):
        metrics.track_keys(name, partial(len, store))
    logic: Any = getattr(store, "_logic", None)
    if logic is not None and hasattr(logic, "on_policy"):
        metrics.track_keys(name, lambda: len(logic.fallback))
        logic.on_policy = partial(metrics.store_error, name)
        logic.on_degraded = partial(metrics.degraded, name)
        metrics.degraded(name, logic.breaker.down)
    return name


class InstrumentedRegistry:
    """A registry whose decisions are counted: `instrument` returns one.

    ``consume``, ``try_consume`` and their awaitable forms count each decision (policy,
    outcome, tokens) and the time of the registry call; every other attribute is the
    registry's own, uncounted (``peek``, ``tokens``, the rule methods).

    A limit in shadow that would have refused an admitted request (``Decision.shadow_denied``)
    counts one ``shadow_denied`` under its own name as ``policy`` (``"/route:name"`` for a
    route's limit), besides the request's ``allowed``. With limits that can be in shadow,
    ``try_consume`` decides through ``consume``, so that their verdicts are counted.
    """

    __slots__ = ("_metrics", "_policy", "_record", "_recorders", "_store", "_watched", "registry")

    def __init__(
        self, registry: Any, metrics: Metrics, policy: str = "default", shadow: bool = False
    ) -> None:
        #: The registry making the decisions.
        self.registry = registry
        self._metrics = metrics
        self._policy = policy
        #: Whether the registry has limits that can be in shadow (named limits).
        self._watched = getattr(registry, "_watch", None) is not None
        self._store = watch(registry.store, metrics)
        # The recorder of each way of counting denials, made when first used (a recorder
        # creates its cells, and an exporter shows every cell, zero or not).
        self._recorders: Dict[bool, Recorder] = {}
        self._record = self._recorder(shadow)

    def _recorder(self, shadow: bool) -> Recorder:
        record = self._recorders.get(shadow)
        if record is None:
            record = self._metrics.recorder(self._policy, self._store, shadow)
            self._recorders[shadow] = record
        return record

    def count_as_shadow(self, shadow: bool) -> None:
        """Count this policy's denials as ``shadow_denied`` (True) or ``denied`` from now on."""
        self._record = self._recorder(shadow)

    def _count_shadow(self, names: Tuple[str, ...], amount: float) -> None:
        for name in names:
            label = name if self._policy == "default" else f"{self._policy}:{name}"
            self._metrics.decision(label, "shadow_denied", amount)

    def consume(self, key: str, amount: float = 1) -> Decision:
        """The registry's ``consume``, counted."""
        start = perf_counter()
        decision = self.registry.consume(key, amount)
        self._record(decision[0], amount, perf_counter() - start)
        if decision[6]:
            self._count_shadow(decision[6], amount)
        return decision  # type: ignore[no-any-return]

    def try_consume(self, key: str, amount: float = 1) -> bool:
        """The registry's ``try_consume``, counted."""
        if self._watched:
            return self.consume(key, amount)[0]
        start = perf_counter()
        allowed = self.registry.try_consume(key, amount)
        self._record(allowed, amount, perf_counter() - start)
        return allowed  # type: ignore[no-any-return]

    async def aconsume(self, key: str, amount: float = 1) -> Decision:
        """The registry's ``aconsume``, counted."""
        start = perf_counter()
        decision = await self.registry.aconsume(key, amount)
        self._record(decision[0], amount, perf_counter() - start)
        if decision[6]:
            self._count_shadow(decision[6], amount)
        return decision  # type: ignore[no-any-return]

    async def atry_consume(self, key: str, amount: float = 1) -> bool:
        """The registry's ``atry_consume``, counted."""
        if self._watched:
            return (await self.aconsume(key, amount))[0]
        start = perf_counter()
        allowed = await self.registry.atry_consume(key, amount)
        self._record(allowed, amount, perf_counter() - start)
        return allowed  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)

    def __repr__(self) -> str:
        return f"instrument({self.registry!r})"


def instrument(
    registry: Any, metrics: Metrics, *, policy: str = "default", shadow: bool = False
) -> InstrumentedRegistry:
    """Return ``registry`` with its decisions counted in ``metrics``, under ``policy``.

    The one line that attaches metrics to a [`BucketRegistry`][tokenbucket.BucketRegistry]
    used directly (the middlewares take ``metrics=`` instead). Use the returned object in
    place of the registry: it has the same methods. ``shadow``: count denials as
    ``shadow_denied`` (for a limit that is only observed).
    """
    if not isinstance(metrics, Metrics):
        raise TypeError(f"'metrics' must be a tokenbucket.metrics.Metrics, got {metrics!r}")
    if not isinstance(policy, str):
        raise TypeError(f"'policy' must be a str, got {policy!r}")
    return InstrumentedRegistry(registry, metrics, policy, shadow)


def optional_metrics(metrics: object) -> Optional[Metrics]:
    """Check a ``metrics=`` option: None or a `Metrics`."""
    if metrics is not None and not isinstance(metrics, Metrics):
        raise TypeError(f"'metrics' must be a tokenbucket.metrics.Metrics or None, got {metrics!r}")
    return metrics
