"""Metrics: the counts, both adapters read back by their real libraries, the middlewares' counts.

Prometheus is read as a scraper reads it (``generate_latest`` parsed back); OpenTelemetry
through the SDK's ``InMemoryMetricReader``. Redis failures come from a real redis-server that
is stopped and started again.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket._stores.redis.late import LateClient
from tokenbucket.metrics import (
    STORE_SECONDS_BUCKETS,
    Metrics,
    instrument,
    store_name,
    watch,
)
from tokenbucket.metrics.otel import OtelMetrics
from tokenbucket.metrics.prometheus import PrometheusMetrics
from tokenbucket.redis import AsyncRedisStore, RedisStore

from ..conftest import AUTH, IP, TOKEN, Harness

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """The samples of a scrape, parsed back: ``(name, sorted labels) -> value``."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def prometheus() -> Tuple[PrometheusMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return PrometheusMetrics(registry), registry


# -- the counts and the Prometheus adapter --------------------------------------------------


def test_prometheus_counts_a_burst_exactly() -> None:
    """12 decisions at burst 10 (no refill): allowed 10, denied 2, tokens by outcome."""
    metrics, registry = prometheus()
    limits = instrument(BucketRegistry(Rule(10, 0.001), clock=ManualClock()), metrics)
    decisions = [limits.consume(IP).allowed for _ in range(11)] + [limits.try_consume(IP, 3)]
    assert decisions == [True] * 10 + [False, False]
    samples = scrape(registry)
    decided = "tokenbucket_decisions_total"
    assert value(samples, decided, policy="default", outcome="allowed") == 10
    assert value(samples, decided, policy="default", outcome="denied") == 2
    tokens = "tokenbucket_tokens_total"
    assert value(samples, tokens, policy="default", outcome="allowed") == 10
    assert value(samples, tokens, policy="default", outcome="denied") == 4  # 1 + 3
    assert value(samples, "tokenbucket_store_duration_seconds_count", store="memory") == 12
    inf = value(samples, "tokenbucket_store_duration_seconds_bucket", store="memory", le="+Inf")
    assert inf == 12
    assert 0 < value(samples, "tokenbucket_store_duration_seconds_sum", store="memory") < 12
    assert value(samples, "tokenbucket_tracked_keys", store="memory") == 1
    # peek and the rule methods are the registry's own, uncounted
    assert limits.peek(IP).allowed is False
    assert limits.rule_for(IP) == Rule(10, 0.001)
    assert value(scrape(registry), decided, policy="default", outcome="denied") == 2


def test_counts_are_exact_under_threads() -> None:
    """8 threads race for one bucket of 1,000: every decision is counted, none twice."""
    metrics, registry = prometheus()
    limits = instrument(BucketRegistry(Rule(1000, 1e-9)), metrics)
    results: list = []

    def work() -> None:
        results.append(sum(limits.try_consume("shared") for _ in range(2000)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 1000
    samples = scrape(registry)
    assert (
        value(samples, "tokenbucket_decisions_total", policy="default", outcome="allowed") == 1000
    )
    assert (
        value(samples, "tokenbucket_decisions_total", policy="default", outcome="denied") == 15000
    )
    assert value(samples, "tokenbucket_store_duration_seconds_count", store="memory") == 16000


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    metrics, registry = prometheus()
    for seconds in (0.000005, 0.00002, 0.3, 7.0):
        metrics.store_time("memory", seconds)
    samples = scrape(registry)

    def bucket(le: str) -> float:
        return value(samples, "tokenbucket_store_duration_seconds_bucket", store="memory", le=le)

    assert bucket("5e-06") == 1  # an observation on a bound is in that bound's bucket
    assert bucket("2.5e-05") == 2
    assert bucket("0.25") == 2
    assert bucket("0.5") == 3
    assert bucket("1.0") == 3
    assert bucket("+Inf") == 4
    assert value(
        samples, "tokenbucket_store_duration_seconds_sum", store="memory"
    ) == pytest.approx(7.300025)
    assert len(STORE_SECONDS_BUCKETS) + 1 == sum(
        1 for name, _ in samples if name == "tokenbucket_store_duration_seconds_bucket"
    )


def test_errors_degraded_admin_and_shadow() -> None:
    metrics, registry = prometheus()
    metrics.store_error("redis", "fallback")
    metrics.store_error("redis", "fallback")
    metrics.degraded("redis", True)
    metrics.admin("update", 200)
    metrics.admin("refused", 401)
    metrics.decision("/login", "shadow_denied", 2)
    with pytest.raises(ValueError, match="'outcome' must be one of"):
        metrics.decision("/login", "maybe", 1)
    samples = scrape(registry)
    errors = "tokenbucket_store_errors_total"
    assert value(samples, errors, store="redis", policy_applied="fallback") == 2
    assert value(samples, "tokenbucket_store_degraded", store="redis") == 1
    assert value(samples, "tokenbucket_admin_requests_total", action="update", status="200") == 1
    assert value(samples, "tokenbucket_admin_requests_total", action="refused", status="401") == 1
    shadow = value(samples, "tokenbucket_tokens_total", policy="/login", outcome="shadow_denied")
    assert shadow == 2
    metrics.degraded("redis", False)
    assert value(scrape(registry), "tokenbucket_store_degraded", store="redis") == 0


def test_one_prometheus_metrics_per_registry_and_bad_arguments() -> None:
    _, registry = prometheus()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusMetrics(registry)
    limits = BucketRegistry(Rule(1, 1.0))
    with pytest.raises(TypeError, match=r"'metrics' must be a tokenbucket\.metrics\.Metrics"):
        instrument(limits, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'policy' must be a str"):
        instrument(limits, Metrics(), policy=3)  # type: ignore[arg-type]


def test_store_names_are_per_class() -> None:
    assert store_name(BucketRegistry(Rule(1, 1.0)).store) == "memory"
    assert store_name(RedisStore.from_url("redis://127.0.0.1:1/0")) == "redis"
    assert store_name(AsyncRedisStore.from_url("redis://127.0.0.1:1/0")) == "redis"
    # the stand-in AsyncRedisStore.from_url uses on Python 3.9 outside a loop (built at once
    # by store.client on later versions)
    for connect, cluster, name in [
        (AsyncRedisStore._connect, False, "redis"),
        (AsyncRedisStore._connect_cluster, True, "redis-cluster"),
    ]:
        late = LateClient(connect, "redis://127.0.0.1:1/0", {}, cluster)
        assert store_name(AsyncRedisStore(late)) == name

    class Custom:
        metrics_name = "sqlite"

    assert store_name(Custom()) == "sqlite"


def test_async_decisions_are_counted() -> None:
    import asyncio

    metrics, registry = prometheus()
    limits = instrument(BucketRegistry(Rule(2, 0.001), clock=ManualClock()), metrics)

    async def run() -> list:
        return [await limits.aconsume("k"), await limits.atry_consume("k")]

    first, second = asyncio.run(run())
    assert first.allowed
    assert second
    assert asyncio.run(limits.atry_consume("k")) is False
    samples = scrape(registry)
    assert value(samples, "tokenbucket_decisions_total", policy="default", outcome="allowed") == 2
    assert value(samples, "tokenbucket_decisions_total", policy="default", outcome="denied") == 1


# -- the OpenTelemetry adapter ----------------------------------------------------------------


def otel_points(reader: InMemoryMetricReader) -> Dict[str, Dict[Tuple[Any, ...], Any]]:
    """``instrument name -> {sorted attributes: point}`` from one collection."""
    points: Dict[str, Dict[Tuple[Any, ...], Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = tuple(sorted(point.attributes.items()))
                    points.setdefault(metric.name, {})[key] = point
    return points


def test_otel_instruments_mirror_the_prometheus_names() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = OtelMetrics(provider.get_meter("test"))
    limits = instrument(BucketRegistry(Rule(10, 0.001), clock=ManualClock()), metrics)
    for _ in range(12):
        limits.consume(IP)
    metrics.admin("update", 200)
    metrics.store_error("redis", "deny")
    metrics.degraded("redis", True)
    points = otel_points(reader)
    allowed = (("outcome", "allowed"), ("policy", "default"))
    denied = (("outcome", "denied"), ("policy", "default"))
    assert points["tokenbucket.decisions"][allowed].value == 10
    assert points["tokenbucket.decisions"][denied].value == 2
    assert points["tokenbucket.tokens"][denied].value == 2
    duration = points["tokenbucket.store.duration"][(("store", "memory"),)]
    assert duration.count == 12
    # Issue 22 item 20: the Prometheus adapter's boundaries, not the SDK's defaults (which
    # start at 5 s and put every sample of a store call in the first bucket).
    assert tuple(duration.explicit_bounds) == STORE_SECONDS_BUCKETS
    # and one name: OpenTelemetry's Prometheus exporter writes tokenbucket.store.duration in
    # seconds as the Prometheus adapter's family (was tokenbucket_store_seconds there)
    prometheus = PrometheusMetrics(registry=CollectorRegistry())
    names = {family.name for family in prometheus.registry.collect()}
    assert "tokenbucket.store.duration".replace(".", "_") + "_seconds" in names
    assert sum(duration.bucket_counts[:-1]) == 12  # every in-memory decision under 1 s
    assert points["tokenbucket.tracked_keys"][(("store", "memory"),)].value == 1
    assert points["tokenbucket.admin.requests"][(("action", "update"), ("status", 200))].value == 1
    errors = points["tokenbucket.store.errors"]
    assert errors[(("policy_applied", "deny"), ("store", "redis"))].value == 1
    assert points["tokenbucket.store.degraded"][(("store", "redis"),)].value == 1
    provider.shutdown()


# -- the middlewares --------------------------------------------------------------------------


def test_middleware_counts_every_policy_exemptions_and_admin(make: Any) -> None:
    """Default and route policies by name, exempt paths uncounted, admin requests counted."""
    metrics, registry = prometheus()
    harness = make(
        metrics=metrics,
        routes={"/login": Rule(2, 0.001)},
        exempt=["/health"],
        admin_token=TOKEN,
    )
    statuses = [harness.request(path="/").status for _ in range(4)]
    statuses += [harness.request(path="/login/").status for _ in range(3)]
    statuses += [harness.request(path="/health").status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 200, 200, 429] + [200] * 5
    update = harness.request(
        "POST",
        "/admin/update-rule",
        headers={**AUTH, "Content-Type": "application/json"},
        body=b'{"client_id": "198.51.100.9", "capacity": 50}',
    )
    assert update.status == 200
    refused = harness.request(
        "GET", "/admin/update-rule", query="client_id=x", client="198.51.100.20"
    )
    assert refused.status == 401
    samples = scrape(registry)
    decided = "tokenbucket_decisions_total"
    # 3 + the refused admin request, counted in its caller's default bucket (like on_decision)
    assert value(samples, decided, policy="default", outcome="allowed") == 4
    assert value(samples, decided, policy="default", outcome="denied") == 1
    assert value(samples, decided, policy="/login", outcome="allowed") == 2
    assert value(samples, decided, policy="/login", outcome="denied") == 1
    assert sum(v for (name, _), v in samples.items() if name == decided) == 8
    admin = "tokenbucket_admin_requests_total"
    assert value(samples, admin, action="update", status="200") == 1
    assert value(samples, admin, action="refused", status="401") == 1
    assert value(samples, "tokenbucket_store_duration_seconds_count", store="memory") == 8


def test_middleware_dry_run_counts_shadow_denials_and_cost(make: Any) -> None:
    metrics, registry = prometheus()
    harness = make(metrics=metrics, dry_run=True, cost=2)
    statuses = [harness.request().status for _ in range(3)]
    assert statuses == [200, 200, 200]  # capacity 3, cost 2: the 2nd and 3rd would be denied
    samples = scrape(registry)
    tokens = "tokenbucket_tokens_total"
    assert value(samples, tokens, policy="default", outcome="allowed") == 2
    assert value(samples, tokens, policy="default", outcome="shadow_denied") == 4
    assert value(samples, "tokenbucket_decisions_total", policy="default", outcome="denied") == 0


def test_middleware_metrics_option_is_checked(make: Any) -> None:
    with pytest.raises(
        TypeError, match=r"'metrics' must be a tokenbucket\.metrics\.Metrics or None"
    ):
        make(metrics="prometheus")


def test_middleware_without_metrics_counts_nothing(make: Any) -> None:
    harness = make()
    assert harness.request().status == 200
    assert type(harness.middleware._options.default.registry) is BucketRegistry


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.ip_addresses(v=4).map(str),
            st.ip_addresses(v=6).map(str),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_no_label_value_is_ever_a_client(clients: list) -> None:
    """Whatever addresses clients come from, the scrape never names one of them."""
    metrics, registry = prometheus()
    harness = Harness("asgi", metrics=metrics, admin_token=TOKEN, routes={"/r": Rule(1, 1.0)})
    for client in clients:
        harness.request(path="/", client=client)
        harness.request(path="/r", client=client)
        harness.request("GET", "/admin/update-rule", query=f"client_id={client}", client=client)
    text = generate_latest(registry).decode()
    for client in clients:
        assert client not in text
    labels = {
        (name, key, label)
        for (name, pairs), _ in scrape(registry).items()
        for key, label in pairs
        if key != "le"
    }
    allowed = {"default", "/r", "allowed", "denied", "memory", "refused", "401", "429"}
    assert {label for _, _, label in labels} <= allowed


# -- the Redis store's failures ---------------------------------------------------------------


def test_redis_outage_counts_policy_decisions_and_degraded(own_redis: Any) -> None:
    """Redis down: each decision made by the failure policy is counted, degraded is 1; back
    up: degraded 0, and decisions go through Redis again, uncounted as errors."""
    metrics, registry = prometheus()
    store = RedisStore.from_url(own_redis.url, on_error="fallback", retry_interval=0)
    try:
        limits = instrument(BucketRegistry(Rule(5, 0.001), store=store), metrics)
        assert watch(store, metrics) == "redis"
        assert limits.try_consume(IP)
        samples = scrape(registry)
        assert value(samples, "tokenbucket_store_degraded", store="redis") == 0
        assert value(samples, "tokenbucket_tracked_keys", store="redis") == 0
        own_redis.stop()
        assert [limits.try_consume(IP) for _ in range(3)] == [True] * 3
        samples = scrape(registry)
        errors = "tokenbucket_store_errors_total"
        assert value(samples, errors, store="redis", policy_applied="fallback") == 3
        assert value(samples, "tokenbucket_store_degraded", store="redis") == 1
        assert value(samples, "tokenbucket_tracked_keys", store="redis") == 1  # the fallback's
        own_redis.start()
        assert limits.try_consume(IP)
        samples = scrape(registry)
        assert value(samples, "tokenbucket_store_degraded", store="redis") == 0
        assert value(samples, errors, store="redis", policy_applied="fallback") == 3
        assert (
            value(samples, "tokenbucket_decisions_total", policy="default", outcome="allowed") == 5
        )
        assert value(samples, "tokenbucket_store_duration_seconds_count", store="redis") == 5
    finally:
        store.close()
