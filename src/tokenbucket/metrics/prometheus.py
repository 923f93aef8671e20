"""Export tokenbucket's metrics to Prometheus (extra ``prometheus``: ``prometheus-client``).

    pip install 'tokenbucket-ratelimit[prometheus]'

    from tokenbucket.metrics.prometheus import PrometheusMetrics

    metrics = PrometheusMetrics()  # or PrometheusMetrics(registry=CollectorRegistry())
    app.add_middleware(RateLimitMiddleware, registry=limits, metrics=metrics)

Serve the registry as usual (``prometheus_client.start_http_server``, ``make_asgi_app``,
``generate_latest``). The families, read from the counts at each scrape:

* ``tokenbucket_decisions_total{policy, outcome}``: decisions; outcome ``allowed``,
  ``denied`` or ``shadow_denied`` (denied in a dry run, let through);
* ``tokenbucket_tokens_total{policy, outcome}``: tokens requested, by the same outcomes;
* ``tokenbucket_store_duration_seconds{store}``: histogram of the store's time per decision
  (OpenTelemetry's ``tokenbucket.store.duration``, in seconds, as its exporter names it);
* ``tokenbucket_store_errors_total{store, policy_applied}``: decisions the store could not
  make, made by its failure policy (``fallback``, ``deny``, ``allow``);
* ``tokenbucket_store_degraded{store}``: 1 while the failure policy is in force;
* ``tokenbucket_tracked_keys{store}``: keys held in this process's memory (a key of several
  limits once);
* ``tokenbucket_admin_requests_total{action, status}``: admin API requests.
"""

from __future__ import annotations

from typing import Iterable, Optional

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
except ModuleNotFoundError as error:  # exercised in a subprocess without prometheus_client
    raise ModuleNotFoundError(
        f"tokenbucket.metrics.prometheus needs prometheus_client, which is not installed "
        f"({error}): pip install 'tokenbucket-ratelimit[prometheus]'",
        name=error.name,
    ) from error

from . import STORE_SECONDS_BUCKETS, Metrics

__all__ = ["PrometheusMetrics"]

_BOUNDS = [repr(bound) for bound in STORE_SECONDS_BUCKETS] + ["+Inf"]


class PrometheusMetrics(Metrics):
    """[`Metrics`][tokenbucket.metrics.Metrics] registered as a collector with Prometheus.

    Args:
        registry: the ``prometheus_client`` registry to register with; its default
            ``REGISTRY`` unless given. One ``PrometheusMetrics`` per registry: a second one
            raises ``ValueError`` (duplicated time series), as for any metric.

    Counting costs no ``prometheus_client`` call: decisions are counted in plain Python
    (see [`Metrics`][tokenbucket.metrics.Metrics]) and turned into metric families at scrape
    time, so a decision costs well under a microsecond more (see the benchmarks).
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        super().__init__()
        #: The registry the metrics are registered with.
        self.registry = REGISTRY if registry is None else registry
        self.registry.register(_Collector(self))


class _Collector(Collector):
    """Reads a `Metrics` snapshot into metric families at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        """The families, so that a registry refuses a second collector of the same names."""
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        """The families, read from a snapshot of the counts."""
        snap = self._metrics.snapshot()
        decisions = CounterMetricFamily(
            "tokenbucket_decisions",
            "Rate-limit decisions, by policy and outcome.",
            labels=("policy", "outcome"),
        )
        tokens = CounterMetricFamily(
            "tokenbucket_tokens",
            "Tokens requested by rate-limit decisions, by policy and outcome.",
            labels=("policy", "outcome"),
        )
        for (policy, outcome), (count, amount) in sorted(snap.decisions.items()):
            decisions.add_metric((policy, outcome), count)
            tokens.add_metric((policy, outcome), amount)
        seconds = HistogramMetricFamily(
            "tokenbucket_store_duration",
            "Time the store took per decision, in seconds.",
            labels=("store",),
            unit="seconds",
        )
        for store, cell in sorted(snap.store_seconds.items()):
            cumulative, total = [], 0.0
            for bound, count in zip(_BOUNDS, cell[:-1]):
                total += count
                cumulative.append((bound, total))
            seconds.add_metric((store,), cumulative, sum_value=cell[-1])
        errors = CounterMetricFamily(
            "tokenbucket_store_errors",
            "Decisions the store could not make, made by its failure policy instead.",
            labels=("store", "policy_applied"),
        )
        for (store, policy), count in sorted(snap.store_errors.items()):
            errors.add_metric((store, policy), count)
        degraded = GaugeMetricFamily(
            "tokenbucket_store_degraded",
            "1 while the store's failure policy is in force (its circuit breaker is open).",
            labels=("store",),
        )
        for store, flag in sorted(snap.degraded.items()):
            degraded.add_metric((store,), 1 if flag else 0)
        tracked = GaugeMetricFamily(
            "tokenbucket_tracked_keys",
            "Keys held in this process's memory (a key of several limits once).",
            labels=("store",),
        )
        for store, count in sorted(snap.tracked_keys.items()):
            tracked.add_metric((store,), count)
        admin = CounterMetricFamily(
            "tokenbucket_admin_requests",
            "Admin API requests, by action and HTTP status.",
            labels=("action", "status"),
        )
        for (action, status), count in sorted(snap.admin.items()):
            admin.add_metric((action, str(status)), count)
        return [decisions, tokens, seconds, errors, degraded, tracked, admin]
