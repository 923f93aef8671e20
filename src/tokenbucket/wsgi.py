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

from typing import TYPE_CHECKING, Callable, Iterable, Optional

from ._core.decision import Decision
from ._core.keys import escape_key
from ._core.validate import show
from ._edges.wsgi_io import (
    _admin_op,
    _Closing,
    _fields,
    _nothing,
    _path,
    _respond,
    _run,
    _status_code,
    _view,
    _with_fields,
)
from ._http.denied import problem_details
from ._http.headers import (
    TEXT,
    HeaderList,
    Response,
)
from ._http.middleware import Middleware
from ._http.options import Limit, Policy
from ._http.request import RequestView, default_bucket
from ._http.settle import Settlement
from ._http.unservable import Unservable
from ._registry.inflight import InFlightLimit
from ._registry.registry import BucketRegistry
from ._stores.slots import _released

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
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
        """Handle one WSGI request."""
        options = self._options
        path: Optional[str] = None
        if self._admin_path is not None:
            path = _path(environ)
            if path == self._admin_path or path in self._admin_paths:
                return self._admin_request(environ, path, start_response)
        if self._in_flight is not None:
            return self._call_in_flight(environ, start_response, path, self._in_flight)
        consume = self._consume
        if consume is not None:
            # No exemptions, routes, key or cost function, or hook: the common case, which does
            # not even need the path.
            policy = options.default
            address = environ.get("REMOTE_ADDR")
            decision = consume(default_bucket(address, self._ipv6_prefix), self._cost)
        else:
            view = _view(environ, _path(environ) if path is None else path)
            if options.is_exempt(view):
                return self.app(environ, start_response)
            try:
                limit = options.limit_for(view)
            except Unservable as refused:
                return _respond(start_response, refused.response)
            policy, decision = limit[0], self._decide(view, limit)
        fields = options.verdict(decision, policy, TEXT, None if consume is not None else view)
        if not isinstance(fields, list):  # denied: the 429
            return _respond(start_response, fields)
        start = start_response if not fields else _with_fields(start_response, fields)
        if options.settle_func is None:
            return self.app(environ, start)
        start, settle = self._settling(start, view, limit, decision)
        try:
            return _Closing(self.app(environ, start), settle)
        except BaseException:
            settle()
            raise

    def _call_in_flight(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        path: Optional[str],
        in_flight: InFlightLimit,
    ) -> Iterable[bytes]:
        """`__call__` with an in-flight limit: hold a slot of the key until the response closes.

        As in the ASGI middleware, the slot is taken before the token. It is released when the
        server closes the response iterable (PEP 3333 servers always do: after the last chunk,
        on an error while iterating, on a client that went away), or at once if the app raises.
        """
        options = self._options
        consume = self._consume
        if consume is not None:  # the fast path's key (see __call__)
            bucket = slot_key = default_bucket(environ.get("REMOTE_ADDR"), self._ipv6_prefix)
        else:
            view = _view(environ, _path(environ) if path is None else path)
            if options.is_exempt(view):
                return self.app(environ, start_response)
            try:
                limit = options.limit_for(view)
            except Unservable as refused:
                return _respond(start_response, refused.response)
            slot_key = escape_key(limit[1])
        slot = in_flight.acquire(slot_key)
        if slot is None:
            if not options.dry_run:
                assert options.in_flight_refusal is not None
                return _respond(start_response, options.in_flight_refusal)
            slot = _released(slot_key)  # dry run over the limit: let it through, holding none
        settle: Callable[[], None] = _nothing
        try:
            if consume is not None:
                policy = options.default
                decision = consume(bucket, self._cost)
            else:
                policy = limit[0]
                decision = self._decide(view, limit)
            fields = options.verdict(decision, policy, TEXT, None if consume is not None else view)
            if not isinstance(fields, list):  # denied: the 429
                in_flight.release(slot)
                return _respond(start_response, fields)
            start = start_response if not fields else _with_fields(start_response, fields)
            if options.settle_func is not None:
                start, settle = self._settling(start, view, limit, decision)

            def finish() -> None:
                try:
                    settle()
                finally:
                    in_flight.release(slot)

            return _Closing(self.app(environ, start), finish)
        except BaseException:
            try:
                settle()
            finally:
                in_flight.release(slot)
            raise

    def _settling(
        self, start_response: StartResponse, view: RequestView, limit: Limit, decision: Decision
    ) -> tuple[StartResponse, Callable[[], None]]:
        """``start_response``, settling the request's cost from the response; the settling call.

        As in the ASGI middleware: read (``settle``) when the app starts its response, settled
        then or (``settle_at="end"``) when the server closes the response iterable, and in any
        case once, however the request ends (an app that starts its response again with
        ``exc_info`` does not settle it again).
        """
        options = self._options
        assert options.settle_func is not None
        policy, _, bucket, cost = limit
        settlement = Settlement(options.settle_func, view, policy.registry, bucket, cost, decision)

        def settle() -> None:
            actual = settlement.due()
            if actual is not None:
                settlement.reservation.settle(actual)

        def start_settling(
            status: str, headers: HeaderList, exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            settlement.said(_status_code(status), _fields(headers))
            if not options.settle_at_end:
                settle()
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        return start_settling, settle

    def _count(self, view: RequestView) -> tuple[Policy, Decision]:
        """Count the request as `Options.limit_for` says; return its policy and the decision."""
        limit = self._options.limit_for(view)
        return limit[0], self._decide(view, limit)

    def _decide(self, view: RequestView, limit: Limit) -> Decision:
        """Take the request's tokens and report the decision."""
        policy, key, bucket, cost = limit
        decision = policy.registry.consume(bucket, cost)
        self._options.report(view, key, decision)
        return decision

    def _admin_request(
        self, environ: WSGIEnvironment, path: str, start_response: StartResponse
    ) -> Iterable[bytes]:
        admin = self._admin
        assert admin is not None
        view = _view(environ, path)
        status = admin.authorize(view.header("authorization"))
        if status:
            # Counted against the caller's bucket, whatever dry_run or exempt say.
            try:
                policy, decision = self._count(view)
            except Unservable as refused:
                return _respond(start_response, refused.response)
            return _respond(start_response, admin.refusal(status, policy, decision, view))
        op = _admin_op(admin, view, environ)
        if isinstance(op, Response):
            return _respond(start_response, admin.rejected(op, view))
        return _respond(start_response, admin.outcome(op, _run(op), view))
