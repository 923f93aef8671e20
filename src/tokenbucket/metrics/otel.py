"""Export tokenbucket's metrics to OpenTelemetry (extra ``otel``: ``opentelemetry-api`` 1.30+).

    pip install 'tokenbucket-ratelimit[otel]'

    from opentelemetry import metrics as otel
    from tokenbucket.metrics.otel import OtelMetrics

    metrics = OtelMetrics(otel.get_meter("my-service"))
    app.add_middleware(RateLimitMiddleware, registry=limits, metrics=metrics)

The instruments mirror the Prometheus families (``tokenbucket.metrics.prometheus``), with the
same attributes and, through OpenTelemetry's Prometheus exporter, the same names; the SDK and
exporter you configure decide where they go:

=================================  =======================================================
``tokenbucket.decisions``          observable counter ``{policy, outcome}``
``tokenbucket.tokens``             observable counter ``{policy, outcome}``
``tokenbucket.store.duration``     histogram ``{store}``, seconds, with the Prometheus
                                   adapter's bucket boundaries (an advisory: a View wins)
``tokenbucket.store.errors``       observable counter ``{store, policy_applied}``
``tokenbucket.store.degraded``     observable gauge ``{store}``, 1 or 0
``tokenbucket.tracked_keys``       observable gauge ``{store}``
``tokenbucket.admin.requests``     observable counter ``{action, status}`` (status an int)
=================================  =======================================================
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

try:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation, get_meter
except ModuleNotFoundError as error:  # exercised in a subprocess without opentelemetry-api
    raise ModuleNotFoundError(
        f"tokenbucket.metrics.otel needs opentelemetry-api, which is not installed "
        f"({error}): pip install 'tokenbucket-ratelimit[otel]'",
        name=error.name,
    ) from error

from . import STORE_SECONDS_BUCKETS, Metrics, Recorder, Snapshot

__all__ = ["OtelMetrics"]


class OtelMetrics(Metrics):
    """[`Metrics`][tokenbucket.metrics.Metrics] exported as OpenTelemetry instruments.

    Args:
        meter: the meter to create the instruments with; by default the global meter
            provider's ``tokenbucket`` meter (``opentelemetry.metrics.get_meter``).

    The counters and gauges are observable: read from the counts when the SDK collects. The
    store time is an OpenTelemetry histogram, recorded with each decision.
    """

    def __init__(self, meter: Optional[Meter] = None) -> None:
        super().__init__()
        if meter is None:
            from importlib.metadata import version

            meter = get_meter("tokenbucket", version("tokenbucket-ratelimit"))
        #: The meter the instruments were created with.
        self.meter = meter
        self._duration = meter.create_histogram(
            "tokenbucket.store.duration",
            unit="s",
            description="Time the store took per decision.",
            # The Prometheus adapter's: the SDK's default bounds start at 5 s.
            explicit_bucket_boundaries_advisory=list(STORE_SECONDS_BUCKETS),
        )
        counters = (
            ("tokenbucket.decisions", "{decision}", "Rate-limit decisions.", _decisions(0)),
            ("tokenbucket.tokens", "{token}", "Tokens requested by decisions.", _decisions(1)),
            (
                "tokenbucket.store.errors",
                "{decision}",
                "Decisions made by the failure policy.",
                _errors,
            ),
            ("tokenbucket.admin.requests", "{request}", "Admin API requests.", _admin),
        )
        for name, unit, description, read in counters:
            meter.create_observable_counter(
                name, callbacks=[self._callback(read)], unit=unit, description=description
            )
        meter.create_observable_gauge(
            "tokenbucket.store.degraded",
            callbacks=[self._callback(_degraded)],
            description="1 while the store's failure policy is in force.",
        )
        meter.create_observable_gauge(
            "tokenbucket.tracked_keys",
            callbacks=[self._callback(_tracked)],
            unit="{bucket}",
            description="Keys held in this process's memory (a key of several limits once).",
        )

    def _callback(
        self, read: Callable[[Snapshot], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return list(read(self.snapshot()))

        return callback

    def recorder(self, policy: str, store: str, shadow: bool = False) -> Recorder:
        """`Metrics.recorder`, also recording the store's time in the OpenTelemetry histogram."""
        count = super().recorder(policy, store, shadow)
        record_time = self._duration.record
        attributes = {"store": store}

        def record(ok: bool, tokens: float, seconds: float) -> None:
            count(ok, tokens, seconds)
            record_time(seconds, attributes)

        return record

    def store_time(self, store: str, seconds: float) -> None:
        """See [`Metrics.store_time`][tokenbucket.metrics.Metrics.store_time]."""
        super().store_time(store, seconds)
        self._duration.record(seconds, {"store": store})


def _decisions(index: int) -> Callable[[Snapshot], Iterable[Observation]]:
    def read(snap: Snapshot) -> Iterable[Observation]:
        for (policy, outcome), cell in snap.decisions.items():
            yield Observation(cell[index], {"policy": policy, "outcome": outcome})

    return read


def _errors(snap: Snapshot) -> Iterable[Observation]:
    for (store, policy), count in snap.store_errors.items():
        yield Observation(count, {"store": store, "policy_applied": policy})


def _admin(snap: Snapshot) -> Iterable[Observation]:
    for (action, status), count in snap.admin.items():
        yield Observation(count, {"action": action, "status": status})


def _degraded(snap: Snapshot) -> Iterable[Observation]:
    for store, flag in snap.degraded.items():
        yield Observation(1 if flag else 0, {"store": store})


def _tracked(snap: Snapshot) -> Iterable[Observation]:
    for store, count in snap.tracked_keys.items():
        yield Observation(count, {"store": store})
