"""FastAPI: rate limits as a dependency, per route, per router or for the whole app.

    from fastapi import Depends, FastAPI
    from tokenbucket.fastapi import RateLimit

    search_limit = RateLimit("5/second;100/day")
    app = FastAPI()

    @app.get("/search", dependencies=[Depends(search_limit)], responses=search_limit.responses)
    def search(q: str): ...

An allowed request's response carries ``RateLimit-Policy`` and ``RateLimit`` (or the legacy
fields); a denied one raises FastAPI's ``HTTPException(429)`` with ``Retry-After`` and the same
fields, so the app's own exception handlers shape it. ``responses`` lists the 429 in the
route's OpenAPI document; `document` lists it on every limited route. `admin_router` serves
the admin API for a limit's buckets.

This module only translates FastAPI's request to a `RequestView` and a decision to headers or
an exception; the counting and the fields are ``tokenbucket._http``'s.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's annotations at
# runtime, and cannot resolve them as strings on an instance's __call__.

import copy
from typing import Any, Callable, Dict, Iterator, MutableMapping, Optional, Tuple, Union

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi import Response as FastAPIResponse
from fastapi import routing as fastapi_routing
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from ._core.decision import Decision
from ._edges.asgi_io import _view
from ._http.admin import DEFAULT_ADMIN_PATH, DEFAULT_MAX_BODY
from ._http.guard import Guard, GuardLimits, add_scope
from ._http.headers import RAW, rate_limit_headers
from ._http.request import DEFAULT_IPV6_PREFIX, KeyFunc, RequestView
from ._http.rules import sub_paths
from ._stores.store import AsyncStore, Store
from .asgi import RateLimitMiddleware as AsgiMiddleware

__all__ = ["RateLimit", "RequestView", "admin_router", "document"]


class RateLimit:
    """A FastAPI dependency that rate-limits the requests of the routes it is declared on.

    Declare it on a route (``dependencies=[Depends(limit)]``), a router
    (``APIRouter(dependencies=[...])``) or the app (``FastAPI(dependencies=[...])``). By default
    each route counts in buckets of its own (keyed by its methods and path template, so
    ``/items/{id}`` is one route, and a ``HEAD`` counts with its ``GET``); ``shared=True``
    makes every route using this dependency share one bucket per client. The dependency
    returns the [`Decision`][tokenbucket.Decision]: ``decision: Decision = Depends(limit)``
    reads it in the endpoint.

    Args:
        limits: a rate string (``"5/second"``, ``"5/second;100/day"``: see
            [`Rule.parse`][tokenbucket.Rule.parse]), a [`Rule`][tokenbucket.Rule], a mapping of
            names to rules, or a [`BucketRegistry`][tokenbucket.BucketRegistry] (memory or
            Redis, sync or async; a blocking store is called in the thread pool).
        key: ``key(request) -> str`` of a [`RequestView`][tokenbucket.asgi.RequestView], as in
            the middlewares (e.g. a [`TrustedProxyKey`][tokenbucket.proxies.TrustedProxyKey]);
            the client address by default.
        cost: tokens a request takes: a number > 0 or ``cost(request) -> number``.
        store: where the buckets of rule strings live (a ``RedisStore`` or ``AsyncRedisStore``
            to share them between workers); a new in-memory store by default.
        name: the policy name in the header fields (default: the rate, ``"5/minute"``, or
            ``"default"``).
        shared: one bucket per client for every route using this dependency.
        headers: ``"draft"`` (default), ``"legacy"``, ``"both"`` or None.
        ipv6_prefix: the network size keying an IPv6 client (default 56).
        detail: the ``HTTPException`` detail of a denial (default ``"Rate limit exceeded"``).

    Attributes:
        responses: ``{429: {...}}`` for a route's (or router's) ``responses=``: the 429 and its
            header fields in the OpenAPI document.
    """

    def __init__(
        self,
        limits: GuardLimits,
        *,
        key: Optional[KeyFunc] = None,
        cost: Union[float, Callable[[RequestView], float]] = 1,
        store: Union[Store, AsyncStore, None] = None,
        name: Optional[str] = None,
        shared: bool = False,
        headers: Optional[str] = "draft",
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
        detail: Any = "Rate limit exceeded",
    ) -> None:
        self._guard = Guard(
            limits,
            store=store,
            name=name,
            key=key,
            cost=cost,
            headers=headers,
            ipv6_prefix=ipv6_prefix,
        )
        if not isinstance(shared, bool):
            raise TypeError(f"'shared' must be a bool, got {shared!r}")
        self._shared = shared
        self._detail = detail
        self._headers = headers
        self.responses: Dict[Union[int, str], Dict[str, Any]] = {429: _RESPONSE_429}
        # Each route's namespace, computed once (routes are few, and live as long as the app).
        self._prefixes: Dict[int, Tuple[Any, str]] = {}

    async def __call__(self, request: Request, response: FastAPIResponse) -> Decision:
        """Count the request; add the fields to the response, or raise the 429."""
        guard = self._guard
        scope = request.scope
        prefix = "" if self._shared else self._prefix(scope)
        if guard.blocking:
            decision = await run_in_threadpool(guard.decide, _view(scope), prefix)
        elif guard.plain:  # the client address is all it takes: no view to build
            client = scope.get("client")
            decision = guard.decide_client(client[0] if client else None, prefix)
        else:
            decision = await guard.adecide(_view(scope), prefix)
        if not decision.allowed:
            headers = dict(guard.fields(decision))
            raise HTTPException(status_code=429, detail=self._detail, headers=headers)
        response.headers.raw.extend(rate_limit_headers(decision, guard.policy, guard.mode, RAW))
        return decision

    def _prefix(self, scope: MutableMapping[str, Any]) -> str:
        """The route's namespace: its methods and path template (``"GET /items/{id}"``).

        The route's own methods, not the request's: a ``HEAD`` of a ``GET`` route counts in
        the ``GET`` bucket, so no method spelling gets a client a fresh bucket.
        """
        route = scope.get("route")
        if route is None:  # no route in the scope (a mounted app): the path alone
            return Guard.prefix(str(scope.get("path", "")))
        known = self._prefixes.get(id(route))  # routes are not hashable
        if known is not None and known[0] is route:
            return known[1]
        prefix = self._route_prefix(route)
        self._prefixes[id(route)] = (route, prefix)
        return prefix

    def _route_prefix(self, route: Any) -> str:
        """The namespace of ``route``'s buckets: its scope and this limit's policy name.

        With the name, two limits on one route keep buckets of their own in a shared store.
        """
        return Guard.prefix(f"{_scope_name(route)} {self._guard.policy.name}")

    def __repr__(self) -> str:
        return f"RateLimit({self._guard.policy.name!r}, shared={self._shared})"


def _scope_name(route: Any) -> str:
    """A route's scope: its methods and path template, ``"GET /items/{id}"``."""
    path = getattr(route, "path_format", None) or getattr(route, "path", "")
    methods = ",".join(sorted(getattr(route, "methods", None) or ()))
    return f"{methods} {path}"


def _limits_of(route: Any) -> Iterator[RateLimit]:
    """The `RateLimit` dependencies of ``route`` (its own, its router's, the app's; nested)."""
    dependant = getattr(route, "dependant", None)
    stack = list(dependant.dependencies) if dependant is not None else []
    while stack:
        each = stack.pop()
        if isinstance(each.call, RateLimit):
            yield each.call
        stack.extend(each.dependencies)


def _routes(routes: Any) -> Iterator[Any]:
    """Every route of ``routes``, those of included routers as the app serves them.

    FastAPI from 0.13x keeps an included router as one entry of ``app.routes`` and lists its
    routes, with their prefix and dependencies, through ``fastapi.routing.iter_route_contexts``;
    before, ``app.routes`` is flat.
    """
    contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    return iter(routes) if contexts is None else iter(contexts(routes))


def document(app: FastAPI) -> None:
    """List the 429 in the OpenAPI document of every route that a `RateLimit` limits.

    Call it once, after creating the app (routes added later are covered too): when the
    schema is built, each operation whose dependencies (the route's, its router's or the app's
    ``dependencies=``, or a ``Depends`` parameter, at any depth) include a `RateLimit` gets the
    429 of `RateLimit.responses`, unless it documents a 429 already. It wraps ``app.openapi``,
    FastAPI's documented hook for changing the schema.
    """
    if not isinstance(app, FastAPI):
        raise TypeError(f"document() takes a FastAPI app, got {app!r}")
    build = app.openapi

    def openapi() -> Dict[str, Any]:
        done = app.openapi_schema is not None
        schema = build()
        if done:
            return schema
        paths = schema.get("paths", {})
        for route in _routes(app.routes):
            operations = paths.get(getattr(route, "path_format", None))
            if operations is None or next(_limits_of(route), None) is None:
                continue
            for method in getattr(route, "methods", None) or ():
                responses = operations.get(method.lower(), {}).get("responses")
                if responses is not None and "429" not in responses:
                    responses["429"] = copy.deepcopy(_RESPONSE_429)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class _AdminEndpoint:
    """One admin endpoint: the ASGI middleware's admin request, at the path it expects."""

    def __init__(self, middleware: AsgiMiddleware, limit: RateLimit, path: str) -> None:
        self._middleware = middleware
        self._limit = limit
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        options = self._middleware._options
        registry = self._limit._guard.registry
        if not self._limit._shared:  # the app's routes this limit counts in scopes of their own
            for route in _routes(getattr(scope.get("app"), "routes", ())):
                if any(each is self._limit for each in _limits_of(route)):
                    add_scope(
                        options, _scope_name(route), registry, self._limit._route_prefix(route)
                    )
        inner = {**scope, "path": self._path, "root_path": ""}
        await self._middleware(inner, receive, send)  # the admin path: the admin API's plan


def admin_router(
    limit: RateLimit,
    *,
    token: str,
    path: str = DEFAULT_ADMIN_PATH,
    max_body: int = DEFAULT_MAX_BODY,
) -> APIRouter:
    """An `APIRouter` serving the [admin API](../admin-api.md) for the buckets of ``limit``.

    ``app.include_router(admin_router(limit, token=secret), prefix="/ratelimit")`` serves
    ``{prefix}{path}`` and the endpoints under it, as the middlewares serve them: the same
    bearer token check (constant time), the same 4xx JSON errors, the same audit log
    (``tokenbucket.admin``); a request without the token is counted against the caller's
    bucket of ``limit``. A request's ``"route"`` names a route ``limit`` counts in buckets of
    its own (``"GET /items/{id}"``, as its scope is written); without one, it addresses the
    buckets ``shared=True`` counts in.

    Args:
        limit: the `RateLimit` whose buckets the API reads and changes.
        token: the bearer token (printable ASCII, e.g. ``secrets.token_urlsafe(32)``).
        path: where the API listens under the router's prefix (default
            ``/admin/update-rule``).
        max_body: the largest request body, in bytes (default 4096).
    """
    if not isinstance(limit, RateLimit):
        raise TypeError(f"'limit' must be a RateLimit, got {limit!r}")
    guard = limit._guard
    middleware = AsgiMiddleware(
        _not_found,
        registry=guard.registry,
        key=guard.key_func,
        headers=limit._headers,
        admin_token=token,
        admin_path=path,
        max_body=max_body,
        ipv6_prefix=guard.ipv6_prefix,
    )
    router = APIRouter()
    for each in (path, *sorted(sub_paths(path))):
        # Starlette serves an endpoint that is not a function as the ASGI app it is.
        endpoint = _AdminEndpoint(middleware, limit, each)
        router.add_route(each, endpoint, include_in_schema=False)  # type: ignore[arg-type]
    return router


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the admin router only serves its own paths")  # pragma: no cover


_FIELD = {"schema": {"type": "string"}}
_RESPONSE_429: Dict[str, Any] = {
    "description": "Too Many Requests: the rate limit is exceeded",
    "headers": {
        "Retry-After": {"description": "Seconds until the request may pass", **_FIELD},
        "RateLimit": {"description": "The binding policy's remaining quota", **_FIELD},
        "RateLimit-Policy": {"description": "The quota policies", **_FIELD},
    },
}
