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
route's OpenAPI document.

This module only translates FastAPI's request to a `RequestView` and a decision to headers or
an exception; the counting and the fields are ``tokenbucket._http``'s.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's annotations at
# runtime, and cannot resolve them as strings on an instance's __call__.

from typing import Any, Callable, Dict, MutableMapping, Optional, Tuple, Union

from fastapi import HTTPException, Request
from fastapi import Response as FastAPIResponse
from starlette.concurrency import run_in_threadpool

from ._asgi_io import _view
from ._decision import Decision
from ._http.guard import Guard, GuardLimits
from ._http.headers import RAW, rate_limit_headers
from ._http.request import DEFAULT_IPV6_PREFIX, KeyFunc, RequestView
from ._store import AsyncStore, Store

__all__ = ["RateLimit", "RequestView"]


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
        path = getattr(route, "path_format", None) or getattr(route, "path", "")
        methods = ",".join(sorted(getattr(route, "methods", None) or ()))
        prefix = Guard.prefix(f"{methods} {path}")
        self._prefixes[id(route)] = (route, prefix)
        return prefix

    def __repr__(self) -> str:
        return f"RateLimit({self._guard.policy.name!r}, shared={self._shared})"


_FIELD = {"schema": {"type": "string"}}
_RESPONSE_429: Dict[str, Any] = {
    "description": "Too Many Requests: the rate limit is exceeded",
    "headers": {
        "Retry-After": {"description": "Seconds until the request may pass", **_FIELD},
        "RateLimit": {"description": "The binding policy's remaining quota", **_FIELD},
        "RateLimit-Policy": {"description": "The quota policies", **_FIELD},
    },
}
