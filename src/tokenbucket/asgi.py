"""ASGI middleware: rate limiting for any ASGI app (FastAPI, Starlette, Litestar, Quart, ...).

    from tokenbucket import BucketRegistry, Rule
    from tokenbucket.asgi import RateLimitMiddleware

    limits = BucketRegistry(Rule(capacity=10, refill_rate=1.0))
    app = RateLimitMiddleware(app, registry=limits)
    # or, in FastAPI and Starlette: app.add_middleware(RateLimitMiddleware, registry=limits)

The runtime rule API (both middlewares) is on when ``admin_token=`` is given; its contract is
in the ``AdminAPI`` docstring in ``tokenbucket._http.admin`` and in docs/admin-api.md.

This module only translates ASGI to and from ``tokenbucket._http``, where the decisions live
(its scope, message and admin-body helpers are in ``tokenbucket._edges.asgi_io``); it imports
no framework.
"""

from __future__ import annotations

from ._edges.asgi_io import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    _answer_admin,
    _hold,
    _refuse_handshake,
    _releasing,
    _send_response,
    _settling,
    _view,
    _with_fields,
)
from ._http.denied import problem_details
from ._http.headers import RAW, Response
from ._http.middleware import Middleware
from ._http.request import RequestView
from ._registry.inflight import InFlightLimit
from ._registry.registry import BucketRegistry

__all__ = ["RateLimitMiddleware", "RequestView", "Response", "problem_details"]


class RateLimitMiddleware(Middleware[ASGIApp]):
    """Rate-limit an ASGI app: one token bucket per client, 429 when it is empty.

    Each ``http`` request takes ``cost`` tokens from the bucket of ``key(request)`` (the client
    IP by default). An allowed request goes on to the app, and its response gets the rate-limit
    header fields; a denied one gets ``429 Too Many Requests`` with ``Retry-After`` and a JSON
    body, and never reaches the app. ``lifespan`` and other non-HTTP scopes pass through
    untouched.

    WebSocket connections are limited at the handshake, by the same key, cost, exemptions and
    routes: a denied handshake is refused before it is accepted, with the 429 response when the
    server supports the ``websocket.http.response`` extension, else with ``websocket.close``
    (which servers turn into ``403``). Messages on an accepted connection are not limited, and
    an allowed handshake passes through unchanged (without rate-limit header fields).

    When ``scope["client"]`` is None or its host empty (a Unix socket, some test servers) the
    default key is ``"unknown"``: all such requests share one bucket. Behind a proxy, pass a key
    function such as [`TrustedProxyKey`][tokenbucket.proxies.TrustedProxyKey].

    Args:
        app: the ASGI app to protect.
        registry: the [`BucketRegistry`][tokenbucket.BucketRegistry] holding the buckets. An
            async store (Redis) is used through the awaitable methods; a blocking one (a sync
            ``RedisStore``) is refused, as it would stall the event loop.
        key: ``key(request) -> str``, the bucket key of a
            [`RequestView`][tokenbucket.asgi.RequestView]; the client IP by default. With a
            registry of several limits it may return a key per limit (``{"key": api_key,
            "org": org_of(api_key)}``), charged all or nothing.
        cost: tokens a request takes: a number > 0 (default 1), or ``cost(request) -> number``.
        exempt: requests that are never limited nor counted: a list of paths (``"/health"``;
            ``"/static/*"`` for a prefix), or a predicate ``exempt(request) -> bool``. Paths are
            compared as decoded, case-sensitively, and trailing slashes do not matter:
            ``"/health"`` also exempts ``/health/``, and ``"/static/*"`` covers ``/static``.
        routes: per-route rules, e.g. ``{"/login": Rule(5, 0.1)}``, with the same path syntax
            and matching as ``exempt``: ``/login/`` and ``/login//`` count in the ``/login``
            bucket, so a trailing slash cannot escape the rule (two patterns that differ only in
            trailing slashes are refused with ``ValueError``). A request matching a route (the
            exact path first, then the longest prefix) is counted in that route's bucket for its
            key instead of the default one. Route buckets share the registry's store. A route's
            rule may be several limits: ``{"/login": {"burst": Rule(5, 1), "daily":
            Rule.per(50, 86400)}}``.
        dry_run: compute, report (header fields, ``on_decision``) but never refuse a request.
            Useful to roll a limit out. The admin path stays protected.
        headers: which rate-limit header fields to send: ``"draft"`` (default; ``RateLimit``
            and ``RateLimit-Policy`` from the IETF draft), ``"legacy"``
            (``X-RateLimit-Limit``, ``-Remaining``, ``-Reset``: seconds until full),
            ``"both"`` or None. The draft is the default because it is the one written
            specification (the legacy fields have none, and services disagree on what
            ``Reset`` means); choose ``"both"`` for clients that only read the legacy ones.
            Fields the app sets itself are left as the app set them.
        on_decision: called as ``on_decision(request, key, decision)`` after every counted
            request, e.g. to count denials. Its exceptions propagate.
        admin_token: enables the runtime rule API at ``admin_path`` when a non-empty str; see
            the module docstring. Without it that path is an ordinary one.
        admin_path: where the admin API listens (default ``/admin/update-rule``).
        max_body: largest admin request body accepted, in bytes (default 4096); larger is 413.
        ipv6_prefix: the default key of an IPv6 client is its network of this many bits
            (default 56: ``2001:db8:0:100::/56``), since one subscriber holds many addresses;
            128 keys each address alone. IPv4 addresses are keyed as they are, IPv4-mapped
            ones (``::ffff:1.2.3.4``) as IPv4. An int from 0 to 128.
        in_flight: an [`InFlightLimit`][tokenbucket.InFlightLimit]: at most that many requests
            per key (the same key as the rate limit) in progress at once. A request over it gets
            ``429`` with ``{"error": "Too many requests in flight", "limit": n}``, no
            ``Retry-After``, and takes no token; one the rate limit refuses gives its slot back.
            A slot is released when the last body message is sent, when the app reads
            ``http.disconnect``, or when the app returns, raises or is cancelled. Exempt
            requests, WebSocket connections and the admin path take no slot; ``dry_run`` lets
            requests over it through. See [the request lifecycle](../lifecycle.md).
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
        metrics: a [`Metrics`][tokenbucket.metrics.Metrics] (e.g. ``PrometheusMetrics()``) to
            count decisions (by policy: ``"default"`` or the route pattern, and outcome; a
            ``dry_run`` denial is ``shadow_denied``), the store's time, and admin requests.
            None (default): nothing is counted. See docs/observability.md.
        shadow_policies: policies to run in shadow (``"default"``, route patterns): decided
            and counted (``shadow_denied``) but never refusing, with no rate-limit fields; the
            admin API switches them at runtime. See [Shadow limits](../several-limits.md).
        denied: ``denied(request, decision) -> Response`` shapes the 429 (a
            [`Response`][tokenbucket.asgi.Response]: status, str header pairs, bytes body);
            ``Retry-After`` and the rate-limit fields are added unless it sets them.
            [`problem_details`][tokenbucket.asgi.problem_details] is the draft's RFC 9457
            ``application/problem+json`` body. None (default): the JSON 429 above.

    Raises:
        TypeError: an option has the wrong type (the message names the option and value), or
            the registry's store is blocking (use ``AsyncRedisStore``, not ``RedisStore``).
        ValueError: an option has a bad value.
    """

    __slots__ = ()
    _app_kind = "an ASGI app"
    _form = RAW

    def _check_registry(self, registry: BucketRegistry) -> None:
        """Refuse a blocking store: it would stall the event loop on every decision."""
        if isinstance(registry, BucketRegistry) and getattr(registry.store, "blocking", False):
            raise TypeError(
                "RateLimitMiddleware (ASGI) needs a non-blocking store: "
                f"{type(registry.store).__name__} blocks the event loop on every decision; "
                "use tokenbucket.redis.AsyncRedisStore"
            )

    def _check_in_flight(self, in_flight: InFlightLimit) -> None:
        """Refuse a blocking in-flight store, for the same reason."""
        if in_flight.blocking:
            raise TypeError(
                "RateLimitMiddleware (ASGI) needs a non-blocking 'in_flight' store: "
                f"{type(in_flight.store).__name__} blocks the event loop on every request; "
                "use tokenbucket.redis.AsyncRedisStore"
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection: its plan (``tokenbucket._http.plan``), carried out."""
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        view = _view(scope)
        plan = self._gate.plan(view, kind == "websocket")
        is_async = self._options.is_async
        if plan.admin is not None:
            await _send_response(send, await _answer_admin(plan.admin, receive, is_async))
            return
        release = settle = None
        if plan.slot is not None:
            assert self._in_flight is not None
            release = await _hold(self._in_flight, plan.slot)
            full = None if release is not None else plan.full()
            if full is not None:
                await _send_response(send, full)
                return
        try:
            policy = plan.policy
            if policy is not None:
                if is_async:
                    plan.decided(await policy.registry.aconsume(plan.bucket, plan.cost))
                else:
                    plan.decided(policy.registry.consume(plan.bucket, plan.cost))
            if plan.respond is not None:
                if plan.handshake:
                    await _refuse_handshake(scope, receive, send, plan.respond)
                else:
                    await _send_response(send, plan.respond)
                return
            if plan.settlement is not None:
                send, settle = _settling(send, plan.settlement, plan.at_end, is_async)
            if plan.fields:
                send = _with_fields(send, plan.fields)
            if release is not None:
                send, receive = _releasing(send, receive, release)
            await self.app(scope, receive, send)
        finally:
            if settle is not None:
                await settle()
            if release is not None:
                await release()
