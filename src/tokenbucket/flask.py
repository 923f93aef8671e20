"""Flask: an extension with limits per view, per blueprint and by default.

    from flask import Flask
    from tokenbucket.flask import Limiter

    limiter = Limiter(default="100/minute")
    app = Flask(__name__)
    limiter.init_app(app)

    @app.post("/login")
    @limiter.limit("5/minute")
    def login(): ...

The check runs in a ``before_request`` hook, so a denial is a Flask error like any other: it
raises `RateLimitExceeded` (a werkzeug ``TooManyRequests``), which ``@app.errorhandler(429)``
handles, and the rate-limit fields (and ``Retry-After``) are added in ``after_request``, to
whatever response the app or its handler made, unless it set them itself.

This module only translates Flask's request to a `RequestView` and a decision to an exception
or header fields; the counting and the fields are ``tokenbucket._http``'s.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import TooManyRequests

from ._core.decision import Decision
from ._core.validate import show
from ._edges.wsgi_io import _view
from ._http.admin import DEFAULT_ADMIN_PATH, DEFAULT_MAX_BODY
from ._http.guard import Guard, GuardLimits, add_scope
from ._http.headers import TEXT, HeaderList, rate_limit_headers
from ._http.request import DEFAULT_IPV6_PREFIX, KeyFunc, RequestView
from ._http.rules import sub_paths
from ._registry.registry import BucketRegistry
from ._stores.store import Store
from .wsgi import RateLimitMiddleware as WsgiMiddleware

__all__ = ["Limiter", "RateLimitExceeded", "RequestView"]

T = TypeVar("T")
_LIMITS = "_tokenbucket_limits"
_EXEMPT = "_tokenbucket_exempt"
#: Where a request's fields wait for ``after_request``: its WSGI environ.
_FIELDS = "tokenbucket.fields"


class RateLimitExceeded(TooManyRequests):
    """The 429 a denied request raises; ``@app.errorhandler(429)`` (or this class) handles it.

    Attributes:
        decision: the denying [`Decision`][tokenbucket.Decision]; its ``policy`` is the name the
            header fields give the limit.
        retry_after: whole seconds until the request may pass (None: never), as in
            ``Retry-After``.
    """

    def __init__(self, decision: Decision, retry_after: Optional[int]) -> None:
        super().__init__(
            description=f"Rate limit exceeded ({decision.policy}).", retry_after=retry_after
        )
        self.decision = decision


class Limiter:
    """Rate limits for a Flask app: a default, and limits per view or blueprint.

    A view's limits (``@limiter.limit``) replace its blueprint's, which replace the default:
    the most specific wins, as in Flask-Limiter. Each view counts in buckets of its own, keyed
    by endpoint and client; ``shared=True`` on a limit makes every view it decorates share one.

    Args:
        app: the Flask app, or None to call `init_app` later (application factories).
        default: the limit of views without their own: a rate string (``"100/minute"``,
            ``"10/second;1000/day"``), a Rule, a mapping of names to rules, or a
            [`BucketRegistry`][tokenbucket.BucketRegistry]; None: views are limited only where
            decorated.
        key: ``key(request) -> str`` of a [`RequestView`][tokenbucket.wsgi.RequestView], as in
            the middlewares (a [`TrustedProxyKey`][tokenbucket.proxies.TrustedProxyKey] behind
            proxies); the client address (``REMOTE_ADDR``) by default.
        store: where the buckets of rule strings live, shared by every limit of this limiter
            (a ``RedisStore`` to share them between workers); in memory by default.
        headers: ``"draft"`` (default), ``"legacy"``, ``"both"`` or None.
        ipv6_prefix: the network size keying an IPv6 client (default 56).
    """

    def __init__(
        self,
        app: Optional[Flask] = None,
        *,
        default: Optional[GuardLimits] = None,
        key: Optional[KeyFunc] = None,
        store: Optional[Store] = None,
        headers: Optional[str] = "draft",
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        if store is None:
            from ._stores.memory.store import MemoryStore

            store = MemoryStore()
        self._store = store
        self._options: Dict[str, Any] = {
            "key": key,
            "headers": headers,
            "ipv6_prefix": ipv6_prefix,
        }
        self._default = None if default is None else self._guard(default, None, None, 1)
        self._blueprints: Dict[str, List[_Limit]] = {}
        self._exempt_blueprints: set[str] = set()
        self._resolved: Dict[int, Tuple[Any, List[Tuple[Guard, str]]]] = {}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check every request of ``app`` before its view, and add the fields after it."""
        app.extensions["tokenbucket"] = self
        app.before_request(self._check)
        app.after_request(self._add_fields)

    def limit(
        self,
        limits: GuardLimits,
        *,
        key: Optional[KeyFunc] = None,
        cost: Union[float, Callable[[RequestView], float]] = 1,
        name: Optional[str] = None,
        shared: bool = False,
    ) -> Callable[[T], T]:
        """Limit a view or a blueprint: ``@limiter.limit("5/minute")``.

        Stack several decorators, or write ``"5/minute;100/day"`` (all or nothing), for several
        limits. On a blueprint (``limiter.limit("50/minute")(bp)``) the limit applies to every
        view in it that has none of its own. ``key`` and ``cost`` override the limiter's;
        ``name`` names the policy in the fields; ``shared`` counts every view it limits in one
        bucket per client (shared limits of the same name share their buckets).
        """
        if not isinstance(shared, bool):
            raise TypeError(f"'shared' must be a bool, got {show(shared)}")
        limit = self._guard(limits, name, key, cost)
        scope = None if not shared else f"shared:{limit.policy.name}"

        def decorate(target: T) -> T:
            if isinstance(target, Blueprint):
                self._blueprints.setdefault(target.name, []).append(_Limit(limit, scope))
            elif callable(target):
                if not hasattr(target, _LIMITS):
                    setattr(target, _LIMITS, [])
                getattr(target, _LIMITS).append(_Limit(limit, scope))
            else:
                raise TypeError(f"limiter.limit decorates views or blueprints, got {show(target)}")
            return target

        return decorate

    def exempt(self, target: T) -> T:
        """Exempt a view or a blueprint (every view in it) from every limit: not even counted."""
        if isinstance(target, Blueprint):
            self._exempt_blueprints.add(target.name)
        elif callable(target):
            setattr(target, _EXEMPT, True)
        else:
            raise TypeError(f"limiter.exempt takes views or blueprints, got {show(target)}")
        return target

    def _guard(
        self, limits: GuardLimits, name: Optional[str], key: Optional[KeyFunc], cost: Any
    ) -> Guard:
        if isinstance(limits, (list, tuple)):
            raise TypeError(
                f"'limits' must be one limit; join rate strings with ';' ('5/minute;100/day') "
                f"or stack decorators, got {show(limits)}"
            )
        options = dict(self._options)
        if key is not None:
            options["key"] = key
        guard = Guard(limits, store=self._store, name=name, cost=cost, **options)
        if guard.registry.is_async:
            raise TypeError(
                f"'limits' uses an async store ({show(guard.registry.store)}), which Flask "
                "cannot await; use a synchronous store (RedisStore)"
            )
        return guard

    def _limits_for(self, endpoint: str, blueprints: List[str]) -> Optional[List[_Limit]]:
        """The limits of ``endpoint``: its own, its innermost blueprint's, or the default.

        ``blueprints``: the names of the endpoint's blueprints, innermost first.
        """
        view = current_app.view_functions.get(endpoint)
        if view is not None and getattr(view, _EXEMPT, False):
            return None
        if any(name in self._exempt_blueprints for name in blueprints):
            return None
        own = getattr(view, _LIMITS, None)
        if own:
            return own  # type: ignore[no-any-return]
        for name in blueprints:
            if name in self._blueprints:
                return self._blueprints[name]
        return None if self._default is None else [_Limit(self._default, None)]

    def _check(self) -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
        endpoint = req.endpoint
        if endpoint is None:  # no route matched: the 404 (or 405) costs nothing
            return
        rule = req.url_rule  # the app's own object for this endpoint: a key for its limits
        known = self._resolved.get(id(rule))
        if known is None or known[0] is not rule:  # once per view: its limits, their namespaces
            limits = self._limits_for(endpoint, req.blueprints) or []
            known = self._resolved[id(rule)] = (
                rule,
                [
                    (limit.guard, Guard.prefix(scope))
                    for limit, scope in zip(limits, _scopes(endpoint, limits))
                ],
            )
        resolved = known[1]
        if not resolved:
            return
        environ = req.environ
        view: Optional[RequestView] = None
        fields: HeaderList = []
        for guard, prefix in resolved:
            if guard.plain:
                decision = guard.decide_client(environ.get("REMOTE_ADDR"), prefix)
            else:
                view = view or _view(environ, req.path)
                decision = guard.decide(view, prefix)
            if not decision.allowed:
                fields.extend(guard.fields(decision))
                environ[_FIELDS] = fields
                wait = next((int(v) for n, v in fields if n == "Retry-After"), None)
                raise RateLimitExceeded(guard.named(decision), wait)
            fields.extend(rate_limit_headers(decision, guard.policy, guard.mode, TEXT))
        environ[_FIELDS] = fields

    def admin_blueprint(
        self,
        token: str,
        *,
        path: str = DEFAULT_ADMIN_PATH,
        name: str = "tokenbucket_admin",
        max_body: int = DEFAULT_MAX_BODY,
    ) -> Blueprint:
        """A blueprint serving the [admin API](../admin-api.md) for this limiter's buckets.

        ``app.register_blueprint(limiter.admin_blueprint(secret), url_prefix="/ratelimit")``
        serves ``{url_prefix}{path}`` and the endpoints under it, as the middlewares serve
        them: the same bearer token check (constant time), the same 4xx JSON errors, the same
        audit log (``tokenbucket.admin``). A request's ``"route"`` names a view's buckets by
        its endpoint (``"login"``, ``"api.items"``), or a shared limit's by
        ``"shared:<name>"``; stacked limits as ``"login"``, ``"login#2"``... (innermost
        decorator first). The blueprint's
        views are exempt from the limiter: a request without the token is counted against the
        caller's bucket of the default limit (of a ``60/minute`` one without a default), so
        the token cannot be guessed faster.

        Args:
            token: the bearer token (printable ASCII, e.g. ``secrets.token_urlsafe(32)``).
            path: where the API listens under the blueprint's prefix (default
                ``/admin/update-rule``).
            name: the blueprint's name.
            max_body: the largest request body, in bytes (default 4096).
        """
        registry = (
            BucketRegistry("60/minute", store=self._store)
            if self._default is None
            else self._default.registry
        )
        middleware = WsgiMiddleware(
            _not_found,
            registry=registry,
            key=self._options["key"],
            headers=self._options["headers"],
            admin_token=token,
            admin_path=path,
            max_body=max_body,
            ipv6_prefix=self._options["ipv6_prefix"],
        )
        blueprint = Blueprint(name, __name__)
        for number, each in enumerate((path, *sorted(sub_paths(path)))):
            view = partial(self._admin, middleware, each)
            blueprint.add_url_rule(each, f"admin{number}", view, methods=_ADMIN_METHODS)
        return self.exempt(blueprint)

    def _admin(self, middleware: WsgiMiddleware, path: str) -> Response:
        """One admin request, as the WSGI middleware answers it at ``path``."""
        options = middleware._options
        for endpoint in current_app.view_functions:
            blueprints = []
            outer = endpoint.rpartition(".")[0]
            while outer:
                blueprints.append(outer)
                outer = outer.rpartition(".")[0]
            limits = self._limits_for(endpoint, blueprints) or []
            for limit, scope in zip(limits, _scopes(endpoint, limits)):
                add_scope(options, scope, limit.guard.registry)
        answer: List[Tuple[str, List[Tuple[str, str]]]] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            answer.append((status, headers))

        # At the admin path the middleware's plan is the admin API's.
        environ = {**request.environ, "PATH_INFO": path}
        body = b"".join(middleware(environ, start_response))
        status, headers = answer[0]
        return Response(body, status=int(status.split()[0]), headers=headers)

    def _add_fields(self, response: Response) -> Response:
        # The request object, not the proxy: each attribute read through the proxy costs a
        # context lookup (~0.8 µs).
        fields = request._get_current_object().environ.pop(_FIELDS, None)  # type: ignore[attr-defined]
        if fields:
            headers = response.headers
            # The ones the app (or its handler) did not set; a name may repeat (stacked limits).
            # One pass over the response's (name, value) pairs (werkzeug's ``in`` raises a
            # KeyError to miss).
            present = {name.lower() for name, _ in headers}
            for name, value in fields:
                if name.lower() not in present:
                    headers.add(name, value)
        return response


def _scopes(endpoint: str, limits: List[_Limit]) -> List[str]:
    """The scope each of an endpoint's limits counts in: its shared scope, or the endpoint's.

    Stacked limits of their own each get a scope: ``endpoint``, then ``endpoint#2``, ... (one
    scope for all would count every request in one bucket key, once per limit).
    """
    scopes, own = [], 0
    for limit in limits:
        if limit.scope is not None:
            scopes.append(limit.scope)
        else:
            own += 1
            scopes.append(endpoint if own == 1 else f"{endpoint}#{own}")
    return scopes


def _not_found(environ: Any, start_response: Any) -> Any:
    raise AssertionError("the admin blueprint only serves its own paths")  # pragma: no cover


_ADMIN_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class _Limit:
    """A guard and its scope: None for the endpoint's own buckets, else a shared scope name."""

    __slots__ = ("guard", "scope")

    def __init__(self, guard: Guard, scope: Optional[str]) -> None:
        self.guard = guard
        self.scope = scope
