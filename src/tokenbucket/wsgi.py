"""WSGI middleware: rate limiting for any WSGI app (Flask, Django, Falcon, Bottle, ...).

    from tokenbucket import BucketRegistry, Rule
    from tokenbucket.wsgi import RateLimitMiddleware

    limits = BucketRegistry(Rule(capacity=10, refill_rate=1.0))
    app.wsgi_app = RateLimitMiddleware(app.wsgi_app, registry=limits)  # Flask

The options, the rate-limit header fields, the 429 response and the runtime rule API at
``/admin/update-rule`` are those of ``tokenbucket.asgi`` (see its docstring). This module only
translates WSGI (PEP 3333) to and from ``tokenbucket._http``, where the decisions live (its
environ, response and admin-body helpers are in ``tokenbucket._edges.wsgi_io``); it imports no
framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ._core.validate import show
from ._edges.wsgi_io import (
    _answer_admin,
    _Closing,
    _hold,
    _respond,
    _settling,
    _view,
    _with_fields,
)
from ._http.denied import problem_details
from ._http.headers import TEXT, Response
from ._http.middleware import Middleware
from ._http.request import RequestView
from ._registry.inflight import InFlightLimit
from ._registry.registry import BucketRegistry

if TYPE_CHECKING:
    from _typeshed.wsgi import (  # noqa: F401 (WSGIApplication: the base class argument)
        StartResponse,
        WSGIApplication,
        WSGIEnvironment,
    )

__all__ = ["RateLimitMiddleware", "RequestView", "Response", "problem_details"]


class RateLimitMiddleware(Middleware["WSGIApplication"]):
    """Rate-limit a WSGI app: one token bucket per client, 429 when it is empty.

    The options and behaviour are those of the ASGI
    [`RateLimitMiddleware`][tokenbucket.asgi.RateLimitMiddleware]: the same request view reaches
    ``key``, ``cost`` and ``exempt``, the same header fields, 429 response and admin API. The
    client address is ``REMOTE_ADDR``; when it is missing or empty the default key is
    ``"unknown"`` (one shared bucket). The middleware is PEP 3333 compliant (it passes
    ``wsgiref.validate``).

    The registry must be synchronous: a WSGI server has no event loop to await an async store
    on, so an async-store registry is refused with ``TypeError``.

    Args:
        app: the WSGI app to protect.
        registry: the [`BucketRegistry`][tokenbucket.BucketRegistry] holding the buckets.
        key: ``key(request) -> str`` of a [`RequestView`][tokenbucket.wsgi.RequestView]; the
            client IP by default.
        cost: tokens a request takes: a number > 0 (default 1), or ``cost(request) -> number``.
        exempt: requests never limited nor counted: paths (``"/static/*"`` for a prefix) or a
            predicate. Trailing slashes do not matter: ``"/health"`` also exempts ``/health/``.
        routes: per-route rules, e.g. ``{"/login": Rule(5, 0.1)}``, matched as ``exempt`` is:
            ``/login/`` counts in the ``/login`` bucket. A route's rule may be several limits
            (``{"/login": {"burst": Rule(5, 1), "daily": Rule.per(50, 86400)}}``).
        dry_run: compute and report, never refuse (the admin path stays protected).
        headers: ``"draft"`` (default), ``"legacy"``, ``"both"`` or None.
        on_decision: ``on_decision(request, key, decision)`` after each counted request.
        admin_token: enables the runtime rule API at ``admin_path``.
        admin_path: default ``/admin/update-rule``.
        max_body: largest admin request body in bytes (default 4096).
        ipv6_prefix: the default key of an IPv6 client is its network of this many bits
            (default 56); 128 keys each address alone. See the ASGI middleware.
        in_flight: an [`InFlightLimit`][tokenbucket.InFlightLimit] (with a synchronous store):
            at most that many requests per key in progress at once; see the ASGI middleware.
            A slot is released when the server closes the response iterable (PEP 3333 servers
            always do, also after an error or a client that went away), or when the app raises.
        settle: for a cost known only from the response (LLM tokens used, bytes sent):
            ``settle(request, status, headers) -> tokens`` (``headers`` by lower-case name, e.g.
            ``int(headers["x-usage-tokens"])``), or None to keep ``cost``. The request is
            admitted on ``cost`` (an estimate); the difference is then charged (which may leave
            the bucket in debt: the client's next requests get 429 with an exact
            ``Retry-After`` until refills repay it) or refunded (never above full). A request
            that was not charged at admission (a ``dry_run`` denial) is charged in full.
        settle_at: ``"start"`` (default): settle when the response starts; ``"end"``: after
            its last body message (a streamed response). Either way a response the app never
            finishes (a client that went away, an exception) settles what it said, once.
            See [the request lifecycle](../lifecycle.md).
        metrics: a [`Metrics`][tokenbucket.metrics.Metrics] counting decisions and admin
            requests (see the ASGI middleware); None by default.
        shadow_policies: policies to run in shadow, never refusing (see the ASGI middleware).
        denied: ``denied(request, decision) -> Response`` shapes the 429, e.g.
            [`problem_details`][tokenbucket.asgi.problem_details] (see the ASGI middleware).

    Raises:
        TypeError: an option has the wrong type, or the registry's store is async.
        ValueError: an option has a bad value.
    """

    __slots__ = ()
    _app_kind = "a WSGI app"
    _form = TEXT

    def _check_registry(self, registry: BucketRegistry) -> None:
        """Refuse an async store: a WSGI server has no event loop to await it on."""
        if isinstance(registry, BucketRegistry) and registry.is_async:
            raise TypeError(
                f"'registry' uses an async store ({show(registry.store)}), which WSGI cannot "
                "await; use a synchronous store, or the ASGI middleware"
            )

    def _check_in_flight(self, in_flight: InFlightLimit) -> None:
        """Refuse an async in-flight store, for the same reason."""
        if in_flight.is_async:
            raise TypeError(
                f"'in_flight' uses an async store ({show(in_flight.store)}), which WSGI cannot "
                "await; use a synchronous store (RedisStore)"
            )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Handle one WSGI request: its plan (``tokenbucket._http.plan``), carried out."""
        view = _view(environ)
        plan = self._gate.plan(view)
        if plan.admin is not None:
            stream = environ.get("wsgi.input")  # (read only for a body: see _read_body)
            terminated = bool(environ.get("wsgi.input_terminated"))
            return _respond(start_response, _answer_admin(plan.admin, stream, terminated))
        release = None
        if plan.slot is not None:
            assert self._in_flight is not None
            release = _hold(self._in_flight, plan.slot)
            full = None if release is not None else plan.full()
            if full is not None:
                return _respond(start_response, full)
        finish = release
        try:
            policy = plan.policy
            if policy is not None:
                plan.decided(policy.registry.consume(plan.bucket, plan.cost))
            if plan.respond is not None:
                if release is not None:
                    release()  # refused: the request no longer counts
                return _respond(start_response, plan.respond)
            start = start_response
            if plan.fields:
                start = _with_fields(start, plan.fields)
            if plan.settlement is not None:
                start, finish = _settling(start, plan.settlement, plan.at_end, release)
            result = self.app(environ, start)
        except BaseException:
            if finish is not None:
                finish()
            raise
        return result if finish is None else _Closing(result, finish)
