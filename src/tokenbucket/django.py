"""Django: a middleware for ``settings.MIDDLEWARE`` and a view decorator.

    # settings.py
    MIDDLEWARE = [..., "tokenbucket.django.RateLimitMiddleware"]
    TOKENBUCKET = {"DEFAULT": "10/second", "ROUTES": {"/login/": "5/minute"}}

    # views.py
    from tokenbucket.django import ratelimit

    @ratelimit("5/minute", key="ip")
    def login(request): ...

Both run inside Django, so ``django.test.Client`` and ``TestCase`` pass through them. A denial
is the response of a view the project can replace (``TOKENBUCKET["DENIED_VIEW"]``, a dotted
path to ``view(request, exception)``); the default, `denied`, renders the template
``429.html`` for browsers and RFC 9457 problem details (JSON) for API clients. Every response
gets the rate-limit fields, a denial ``Retry-After`` too, unless the view set them itself.

The ``TOKENBUCKET`` setting (every key optional):

* ``DEFAULT``: the limit of every request: a rate string, a Rule, a mapping of names to rules
  or a ``BucketRegistry``; None (default): only ``ROUTES`` are limited.
* ``ROUTES``: ``{path: limit}``, matched as the middlewares match them (``"/api/*"`` for a
  prefix; trailing slashes do not matter).
* ``EXEMPT``: paths never limited nor counted.
* ``KEY``: ``key(request) -> str`` of a `RequestView` (or its dotted path), e.g. a
  ``TrustedProxyKey``; the client address (``REMOTE_ADDR``) by default.
* ``STORE``: where the buckets of rate strings live (a store, or the dotted path of a callable
  returning one, e.g. a ``RedisStore``); in memory by default.
* ``HEADERS``: ``"draft"`` (default), ``"legacy"``, ``"both"`` or None.
* ``DENIED_VIEW``: the dotted path of ``view(request, exception) -> HttpResponse``.
* ``IPV6_PREFIX`` (default 56) and ``DRY_RUN`` (default False), as in the middlewares.
* ``ADMIN_TOKEN`` and ``ADMIN_PATH`` (default ``/admin/update-rule``): the
  [admin API](../admin-api.md), served by the middleware as the generic ones serve it, and
  by `admin_urls` wherever the URLconf includes them.

This module only translates, as the generic middlewares do: a Django request becomes a
`RequestView`, ``tokenbucket._http`` plans it (the options, the counting, the fields, the admin
API) and the middleware carries the plan out, with the project's view for a denial.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, Union

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.signals import setting_changed
from django.http import Http404, HttpRequest, HttpResponse
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.urls import URLPattern, path
from django.utils.module_loading import import_string

from ._core.decision import Decision
from ._core.validate import show
from ._edges.wsgi_io import _answer_admin, _view
from ._http.admin import DEFAULT_ADMIN_PATH, DEFAULT_MAX_BODY, admin_api
from ._http.denied import problem_details
from ._http.guard import Guard, GuardLimits
from ._http.headers import TEXT, HeaderList, Response, retry_after_seconds
from ._http.options import Options
from ._http.plan import Gate, Plan
from ._http.request import DEFAULT_IPV6_PREFIX, KeyFunc, RequestView
from ._registry.registry import BucketRegistry
from ._stores.memory.store import MemoryStore

__all__ = [
    "RateLimitMiddleware",
    "Ratelimited",
    "RequestView",
    "admin_urls",
    "admin_view",
    "denied",
    "ratelimit",
]

F = TypeVar("F", bound=Callable[..., Any])
_KNOWN = {"DEFAULT", "ROUTES", "EXEMPT", "KEY", "STORE", "HEADERS", "DENIED_VIEW"}
_KNOWN |= {"IPV6_PREFIX", "DRY_RUN", "ADMIN_TOKEN", "ADMIN_PATH"}


class Ratelimited(PermissionDenied):
    """What the denied view gets as ``exception``: the denial, with its decision.

    Attributes:
        decision: the denying [`Decision`][tokenbucket.Decision] (``policy`` names the limit as
            the header fields do).
        retry_after: whole seconds until the request may pass, as ``Retry-After`` (None: never).
    """

    def __init__(self, decision: Decision) -> None:
        super().__init__("Rate limit exceeded")
        self.decision = decision
        self.retry_after = retry_after_seconds(decision)


def denied(request: HttpRequest, exception: Ratelimited) -> HttpResponse:
    """The default denied view: the ``429.html`` template for browsers, problem details else.

    A request whose ``Accept`` prefers HTML gets ``429.html`` rendered with ``exception``,
    ``retry_after`` and ``decision`` in its context (a short built-in page if the project has
    no such template); any other gets ``application/problem+json`` (see
    [`problem_details`][tokenbucket.asgi.problem_details]).
    """
    if _prefers_html(request.META.get("HTTP_ACCEPT", "")):
        context: Dict[str, Any] = {"exception": exception, "decision": exception.decision}
        context["retry_after"] = exception.retry_after
        try:
            page = render_to_string("429.html", context, request)
        except TemplateDoesNotExist:
            wait = exception.retry_after
            later = "later" if wait is None else f"in {wait} second{'' if wait == 1 else 's'}"
            page = f"<!doctype html><title>Too many requests</title><p>Please retry {later}.</p>"
        return HttpResponse(page, status=429, content_type="text/html; charset=utf-8")
    answer = problem_details(_view(request.META, request.path), exception.decision)
    return HttpResponse(answer.body, status=429, content_type="application/problem+json")


def _prefers_html(accept: str) -> bool:
    """Whether ``text/html`` comes before any JSON type in ``Accept`` (as browsers send it)."""
    html, json_at = accept.find("text/html"), accept.find("json")
    return html >= 0 and (json_at < 0 or html < json_at)


class _Config:
    """The ``TOKENBUCKET`` setting, checked once (and again when a test overrides it)."""

    def __init__(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise TypeError(f"settings.TOKENBUCKET must be a dict, got {show(raw)}")
        unknown = set(raw) - _KNOWN
        if unknown:
            raise ValueError(f"settings.TOKENBUCKET has unknown keys {sorted(unknown)}")
        store = raw.get("STORE")
        if isinstance(store, str):
            store = import_string(store)()
        self.store = MemoryStore() if store is None else store
        key = raw.get("KEY")
        self.key: Optional[KeyFunc] = import_string(key) if isinstance(key, str) else key
        self.headers = raw.get("HEADERS", "draft")
        self.ipv6_prefix = raw.get("IPV6_PREFIX", DEFAULT_IPV6_PREFIX)
        view = raw.get("DENIED_VIEW", denied)
        self.denied: Callable[[HttpRequest, Ratelimited], HttpResponse] = (
            import_string(view) if isinstance(view, str) else view
        )
        default = raw.get("DEFAULT")
        self.routes_only = default is None
        registry = default if isinstance(default, BucketRegistry) else None
        if registry is None:  # the default rules, or none: routes only (a registry is needed)
            registry = BucketRegistry("1/second" if default is None else default, store=self.store)
        self.options = Options(
            registry=registry,
            key=self.key,
            cost=1,
            exempt=raw.get("EXEMPT"),
            routes=raw.get("ROUTES"),
            dry_run=raw.get("DRY_RUN", False),
            headers=self.headers,
            on_decision=None,
            admin_token=raw.get("ADMIN_TOKEN"),
            admin_path=raw.get("ADMIN_PATH", DEFAULT_ADMIN_PATH),
            max_body=DEFAULT_MAX_BODY,
            ipv6_prefix=self.ipv6_prefix,
        )
        self.admin = admin_api(self.options)
        #: Where every request gets its plan (without ``DEFAULT``, only routes are counted).
        self.gate = Gate(self.options, self.admin, TEXT, self.routes_only)


_config: Optional[_Config] = None


def _settings() -> _Config:
    global _config
    if _config is None:
        _config = _Config(getattr(settings, "TOKENBUCKET", {}))
    return _config


def _reset(setting: str, **kwargs: Any) -> None:
    global _config
    if setting == "TOKENBUCKET":
        _config = None


setting_changed.connect(_reset)


def _add(response: HttpResponse, fields: HeaderList) -> HttpResponse:
    """Add the ``fields`` the view did not set (by name, any case) to ``response``."""
    headers = response.headers  # case-insensitive
    for name, value in fields:
        if name not in headers:
            headers[name] = value
    return response


def _denial(request: HttpRequest, decision: Decision, fields: HeaderList) -> HttpResponse:
    wait = retry_after_seconds(decision)
    extra = ([("Retry-After", str(wait))] if wait is not None else []) + fields
    return _add(_settings().denied(request, Ratelimited(decision)), extra)


def _answer(request: HttpRequest, plan: Plan) -> Optional[HttpResponse]:
    """Carry out ``plan`` up to the view: the response to send instead of it, or None.

    A denial is the project's denied view, with ``Retry-After`` and the rate-limit fields of the
    plan's 429; any other answer (the admin API's, its refusal, a 503) is sent as it is.
    """
    if plan.admin is not None:
        # The request ends where its body does (ASGI) or its Content-Length says (WSGI); a
        # WSGI body without one is read as the WSGI middleware reads it (wsgi.input_terminated).
        meta = request.META
        if plan.admin.length is None and "wsgi.input" in meta:
            stream, ends = meta["wsgi.input"], bool(meta.get("wsgi.input_terminated"))
            return _django_response(_answer_admin(plan.admin, stream, ends))
        return _django_response(_answer_admin(plan.admin, request, True))
    policy = plan.policy
    if policy is not None:
        plan.decided(policy.registry.consume(plan.bucket, plan.cost))
    respond = plan.respond
    if respond is None:
        return None
    if plan.denied is None:
        return _django_response(respond)
    fields = [field for field in respond.headers if field[0] not in _REPRESENTATION]
    return _add(_settings().denied(request, Ratelimited(plan.denied)), fields)


#: The built-in 429's own fields, which the denied view's response replaces.
_REPRESENTATION = frozenset({"Content-Type", "Content-Length"})


def _django_response(answer: Response) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status)
    for name, value in answer.headers:
        response.headers[name] = value
    return response


class RateLimitMiddleware:
    """Rate-limit every request as ``settings.TOKENBUCKET`` says (see the module docstring).

    Add ``"tokenbucket.django.RateLimitMiddleware"`` to ``settings.MIDDLEWARE``, after
    ``SecurityMiddleware`` (and before anything costly). Synchronous: under ASGI Django runs
    it in a thread, so a Redis store is the blocking ``RedisStore``.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        _settings()  # a bad setting fails at startup, not on the first request

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Count ``request``; answer it with the denied view, or add the fields to its response."""
        view = _view(request.META, request.path)
        plan = _settings().gate.plan(view)
        answer = _answer(request, plan)
        if answer is not None:
            return answer
        return _add(self.get_response(request), plan.fields)


def admin_view(request: HttpRequest, endpoint: str = "") -> HttpResponse:
    """The admin API at a URL of the project's URLconf (see `admin_urls`)."""
    gate = _settings().gate
    admin = gate.admin
    path = "" if admin is None else admin.path + (endpoint and f"/{endpoint}")
    if admin is None or path not in gate.admin_paths:  # no ADMIN_TOKEN, or no such endpoint
        raise Http404("no such admin endpoint")
    view = _view(request.META, path)
    plan = gate.plan(view)
    answer = _answer(request, plan)
    assert answer is not None  # an admin path's plan is the admin API's, or its refusal
    return answer


# What ``csrf_exempt`` sets (as an attribute, the function keeps its types): a bearer-token API
# sends no cookie, so there is nothing for CSRF to protect.
admin_view.csrf_exempt = True  # type: ignore[attr-defined]


def admin_urls() -> List[URLPattern]:
    """The admin API's URL patterns: ``path("ratelimit/", include(admin_urls()))``.

    Serves ``update-rule`` (and the endpoints under it) under the include's prefix, with
    ``ADMIN_TOKEN`` and the options of ``settings.TOKENBUCKET``, exactly as the middleware
    serves ``ADMIN_PATH``. Add the prefix to ``EXEMPT`` if the middleware is installed too:
    the API counts a request without the token itself.
    """
    return [
        path("update-rule", admin_view, name="tokenbucket-admin"),
        path("update-rule/<str:endpoint>", admin_view, name="tokenbucket-admin-endpoint"),
    ]


def ratelimit(
    limits: GuardLimits,
    *,
    key: Union[str, KeyFunc] = "ip",
    cost: Union[float, Callable[[RequestView], float]] = 1,
    name: Optional[str] = None,
    method: Union[str, Iterable[str], None] = None,
) -> Callable[[F], F]:
    """Limit a view: ``@ratelimit("5/minute", key="ip")``, on functions and class-based views.

    Each decorated view counts in buckets of its own (named by its module and qualified name),
    in ``settings.TOKENBUCKET["STORE"]``. A denial is the denied view's response (see the
    module docstring), with ``Retry-After`` and the fields; an allowed response gets the fields.

    Args:
        limits: a rate string (``"5/minute"``, ``"5/minute;100/day"``), a Rule, a mapping of
            names to rules, or a [`BucketRegistry`][tokenbucket.BucketRegistry].
        key: ``"ip"`` (the project's ``KEY``, by default the client address), ``"user"`` (the
            authenticated user's primary key, else the ``"ip"`` key), ``"header:<name>"`` (a
            request header field; only for headers your own proxy sets), or
            ``key(request) -> str`` of a `RequestView`.
        cost: tokens a request takes: a number > 0 or ``cost(request) -> number``.
        name: the policy's name in the fields (default: the rate, ``"5/minute"``).
        method: count only these methods (``"POST"``, ``["POST", "PUT"]``); all by default.
    """
    methods = None if method is None else [method] if isinstance(method, str) else list(method)
    if methods is not None:
        if not all(isinstance(each, str) for each in methods):
            raise TypeError(f"'method' must be a str or a list of str, got {show(method)}")
        methods = [each.upper() for each in methods]  # Django's request.method is upper case
    _check_key(key)
    guards: Dict[
        str, Tuple[_Config, Guard]
    ] = {}  # built on first use: the settings may not be loaded yet

    def decorate(target: F) -> F:
        if inspect.isclass(target):  # a class-based view: limit its dispatch
            target.dispatch = decorate(target.dispatch)  # type: ignore[attr-defined]
            return target
        # Stacked decorators each count in a scope of their own (the innermost: the view's).
        stacked = getattr(target, "_tokenbucket_stacked", 0) + 1
        scope = f"view:{target.__module__}.{target.__qualname__}"
        prefix = Guard.prefix(scope if stacked == 1 else f"{scope}#{stacked}")

        @functools.wraps(target)
        def limited(*args: Any, **kwargs: Any) -> Any:
            request = next(arg for arg in args if isinstance(arg, HttpRequest))
            if methods is not None and request.method not in methods:
                return target(*args, **kwargs)
            config = _settings()
            built = guards.get("guard")
            if built is None or built[0] is not config:  # first call, or settings changed
                guard = Guard(
                    limits,
                    store=config.store,
                    name=name,
                    key=key if callable(key) else config.key,
                    cost=cost,
                    headers=config.headers,
                    ipv6_prefix=config.ipv6_prefix,
                )
                guards["guard"] = (config, guard)
            else:
                guard = built[1]
            view = _view(request.META, request.path)
            decision = guard.decide(view, prefix, _request_key(key, request, view))
            if not decision.allowed:
                fields = guard.fields(decision)[1:]  # Retry-After is _denial's
                return _denial(request, guard.named(decision), fields)
            return _add(target(*args, **kwargs), guard.fields(decision))

        limited._tokenbucket_stacked = stacked  # type: ignore[attr-defined]
        return limited  # type: ignore[return-value]

    return decorate


def _request_key(key: Any, request: HttpRequest, view: RequestView) -> Optional[str]:
    """The key ``"user"`` or ``"header:<name>"`` give; None: the guard's key function's."""
    if key == "user":
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
    elif isinstance(key, str) and key.startswith("header:"):
        value = view.header(key[len("header:") :].strip())
        if value:
            return f"header:{value}"
    return None


def _check_key(key: Any) -> None:
    if callable(key) or key in ("ip", "user"):
        return
    if isinstance(key, str) and key.startswith("header:") and key[len("header:") :].strip():
        return
    raise ValueError(
        f"'key' must be 'ip', 'user', 'header:<name>' or a callable taking a RequestView, "
        f"got {show(key)}"
    )
