"""The middleware options, checked once: the one place both middlewares validate them.

Knows: every option and its check, the policies (the default limiter and one per route), and
how a request is counted (`Options.limit_for`: exemption, route, key, cost) and reported
(``on_decision``). Must not know: ASGI or WSGI, the body or the socket; nor call a registry:
it names the registry and key to consume from, and the middleware makes the call (awaited or
not, as its protocol allows).
"""

from __future__ import annotations

import math
from typing import (
    Callable,
    Dict,
    Iterable,
    Mapping,
    Optional,
    Union,
)

from .._core.decision import Decision
from .._core.keys import bucket_key
from .._core.rule import RATE_GRAMMAR, Limits, Rule, as_limits
from .._core.validate import Number, show
from .._registry.inflight import InFlightLimit
from .._registry.registry import BucketRegistry
from ..metrics import Metrics, instrument, optional_metrics
from .admin_options import (
    DEFAULT_MAX_IMPORT_BODY,
    check_admin_path,
    check_admin_token,
    check_max_body,
)
from .denied import Denied, shaped_denial
from .headers import (
    HEADER_MODES,
    TEXT,
    HeaderList,
    Response,
    denial,
    in_flight_refusal,
    rate_limit_headers,
)
from .paths import Paths, check_pattern, path_set
from .policy import Limit, Policy
from .request import (
    DEFAULT_IPV6_PREFIX,
    DecisionHook,
    KeyFunc,
    RequestView,
    check_ipv6_prefix,
    client_key,
)
from .settle import SettleFunc, check_settle
from .shadow import check_shadow_policies
from .unservable import Unservable, spans_slots

__all__ = ["Limit", "Options", "Policy"]  # Limit and Policy: as older imports name them


class Options:
    """Every middleware option, validated once; both middlewares hold one of these.

    Invalid options raise ``TypeError`` (wrong type) or ``ValueError`` (bad value), naming the
    option and the value. See the middlewares' docstrings for what each option means.
    """

    __slots__ = (
        "admin_path",
        "admin_token",
        "cost",
        "cost_func",
        "default",
        "denied_func",
        "dry_run",
        "exempt_func",
        "exempt_paths",
        "header_mode",
        "in_flight",
        "in_flight_refusal",
        "ipv6_prefix",
        "is_async",
        "key_func",
        "max_body",
        "max_import_body",
        "metrics",
        "on_decision",
        "route_paths",
        "routes",
        "settle_at_end",
        "settle_func",
    )

    def __init__(
        self,
        *,
        registry: BucketRegistry,
        key: Optional[KeyFunc],
        cost: Union[float, Callable[[RequestView], float]],
        exempt: Union[Iterable[str], Callable[[RequestView], bool], None],
        routes: Optional[Mapping[str, Limits]],
        dry_run: bool,
        headers: Optional[str],
        on_decision: Optional[DecisionHook],
        admin_token: Optional[str],
        admin_path: str,
        max_body: int,
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
        max_import_body: int = DEFAULT_MAX_IMPORT_BODY,
        in_flight: Optional[InFlightLimit] = None,
        metrics: Optional[Metrics] = None,
        settle: Optional[SettleFunc] = None,
        settle_at: str = "start",
        shadow_policies: Iterable[str] = (),
        denied: Optional[Denied] = None,
    ) -> None:
        if not isinstance(registry, BucketRegistry):
            raise TypeError(f"'registry' must be a BucketRegistry, got {show(registry)}")
        if key is not None and not callable(key):
            raise TypeError(f"'key' must be a callable taking a RequestView, got {show(key)}")
        self.key_func = key
        self.ipv6_prefix = check_ipv6_prefix(ipv6_prefix)
        self.cost: Number = 1
        self.cost_func: Optional[Callable[[RequestView], float]] = None
        if callable(cost):
            self.cost_func = cost
        else:
            self.cost = _check_cost(cost)
        self.exempt_func: Optional[Callable[[RequestView], bool]] = None
        self.exempt_paths: Optional[Paths[bool]] = None
        if callable(exempt):
            self.exempt_func = exempt
        elif exempt is not None:
            try:
                self.exempt_paths = path_set("exempt", exempt)
            except TypeError as exc:
                if not isinstance(exempt, Iterable):
                    raise TypeError(
                        f"'exempt' must be a list of paths or a callable, got {show(exempt)}"
                    ) from None
                raise exc
        if not isinstance(dry_run, bool):
            raise TypeError(f"'dry_run' must be a bool, got {show(dry_run)}")
        self.dry_run = dry_run
        if headers not in HEADER_MODES:
            raise ValueError(
                f"'headers' must be 'draft', 'legacy', 'both' or None, got {show(headers)}"
            )
        self.header_mode = HEADER_MODES[headers]
        if in_flight is not None and not isinstance(in_flight, InFlightLimit):
            raise TypeError(f"'in_flight' must be an InFlightLimit or None, got {show(in_flight)}")
        self.in_flight = in_flight
        #: The 429 for a request over the in-flight limit (the same for every such request).
        self.in_flight_refusal: Optional[Response] = None
        if in_flight is not None:
            self.in_flight_refusal = in_flight_refusal(in_flight.max_in_flight, self.header_mode)
        if on_decision is not None and not callable(on_decision):
            raise TypeError(f"'on_decision' must be a callable or None, got {show(on_decision)}")
        self.settle_func, self.settle_at_end = check_settle(settle, settle_at)
        self.on_decision = on_decision
        if denied is not None and not callable(denied):
            raise TypeError(
                f"'denied' must be a callable denied(request, decision) -> Response or None, "
                f"got {show(denied)}"
            )
        #: The user's ``denied(request, decision) -> Response``, or None for the built-in 429.
        self.denied_func = denied
        self.is_async = registry.is_async
        self.default = Policy("default", registry, "")
        self.routes: Dict[str, Policy] = {}
        self.route_paths: Paths[Policy] = Paths("routes", ())
        if routes is not None:
            self._set_routes(registry, routes)
        check_shadow_policies({"default": self.default, **self.routes}, shadow_policies)
        #: The admin API's token (None: no admin API), path and body limits (see ``admin``).
        self.admin_token = None if admin_token is None else check_admin_token(admin_token)
        self.admin_path = check_admin_path(admin_path)
        self.max_body = check_max_body(max_body)
        self.max_import_body = check_max_body(max_import_body, "max_import_body")
        self.metrics = optional_metrics(metrics)
        if self.metrics is not None:
            self._attach(self.metrics)

    def _attach(self, metrics: Metrics) -> None:
        """Count every policy's decisions (dry-run denials as shadow)."""
        for policy in (self.default, *self.routes.values()):
            # The counted registry has the registry's methods (see InstrumentedRegistry).
            policy.registry = instrument(  # type: ignore[assignment]
                policy.registry, metrics, policy=policy.name, shadow=self.dry_run or policy.shadow
            )

    def _set_routes(self, registry: BucketRegistry, routes: Mapping[str, Limits]) -> None:
        if not isinstance(routes, Mapping):
            raise TypeError(f"'routes' must be a mapping of path to Rule, got {show(routes)}")
        for pattern, given in routes.items():
            check_pattern("routes", pattern)
            if not all(" " <= char <= "~" for char in pattern):
                raise ValueError(f"'routes' paths must be printable ASCII, got {show(pattern)}")
            rule = as_limits(given)
            if not isinstance(rule, (Rule, Mapping)):
                raise TypeError(
                    f"'routes' values must be Rule objects (or mappings of limit names to "
                    f"Rules) or {RATE_GRAMMAR}; got {show(given)} for {show(pattern)}"
                )
            route_registry = BucketRegistry(rule, store=registry.store)
            route_registry.shared_like(registry, pattern)  # shared rules: the route's too
            policy = Policy(pattern, route_registry, pattern + "\0")
            self.routes[pattern] = policy
        self.route_paths = Paths("routes", self.routes.items())

    @property
    def is_plain(self) -> bool:
        """Whether requests need nothing but the default key, cost and registry (a fast path).

        Then no request is exempt and `limit_for` is always the default policy, the key
        ``client_key(client)`` and the fixed cost, with no hook to call: a request's plan may
        count it with those directly.
        """
        return (
            self.exempt_paths is None
            and self.exempt_func is None
            and not self.routes
            and self.key_func is None
            and self.cost_func is None
            and self.on_decision is None
            and self.settle_func is None
            and self.denied_func is None
            and not self.is_async
        )

    def policy_for(self, path: str) -> Policy:
        """Return the policy for ``path``: an exact route, else the longest prefix, else default.

        Trailing slashes do not matter (see `Paths`).
        """
        policy = self.route_paths.get(path)
        return self.default if policy is None else policy

    def is_exempt(self, view: RequestView) -> bool:
        """Whether the request is exempt (neither limited nor counted): by path or predicate."""
        paths = self.exempt_paths
        if paths is not None and view.path in paths:
            return True
        predicate = self.exempt_func
        return predicate is not None and bool(predicate(view))

    def limit_for(self, view: RequestView) -> Limit:
        """Return how the request is counted: ``(policy, key, bucket, cost)`` (see `Limit`).

        The caller takes ``cost`` tokens from ``bucket`` in ``policy.registry`` (synchronously
        or awaited, as its protocol allows), then passes ``key`` and the decision to `report`.
        """
        policy = self.policy_for(view.path) if self.routes else self.default
        key_func = self.key_func
        key = client_key(view.client, self.ipv6_prefix) if key_func is None else key_func(view)
        cost_func = self.cost_func
        cost = self.cost if cost_func is None else cost_func(view)
        try:
            return policy, key, bucket_key(policy.prefix, key), cost
        except TypeError:  # only a key function's answer can fail here; checked on failure only
            if isinstance(key, Mapping) and all(isinstance(each, str) for each in key.values()):
                buckets = {name: bucket_key(policy.prefix, each) for name, each in key.items()}
                if policy.cluster and spans_slots(policy.registry.store, buckets):
                    refused = Unservable(self.key_func, key, not policy.refused)
                    policy.refused = True
                    raise refused from None
                return policy, key, buckets, cost
            name = getattr(key_func, "__qualname__", None) or repr(key_func)
            raise TypeError(
                f"the key function {name!r} returned {show(key)} ({type(key).__name__}); "
                f"a key function must return a str, the bucket key"
            ) from None

    def report(self, view: RequestView, key: str, decision: Decision) -> None:
        """Call ``on_decision(view, key, decision)`` for a counted request, if there is a hook."""
        hook = self.on_decision
        if hook is not None:
            hook(view, key, decision)

    def headers_for(self, decision: Decision, policy: Policy) -> HeaderList:
        """Return the rate-limit header fields to add to a response, in the configured mode."""
        return rate_limit_headers(decision, policy, self.header_mode, TEXT)

    def denial(
        self, decision: Decision, policy: Policy, view: Optional[RequestView] = None
    ) -> Response:
        """Return the 429 response to a denied request, with the configured header fields.

        With a ``denied`` option (and the request's ``view``), the user's response, keeping
        ``Retry-After`` and the fields; its decision names the policy as the fields do.
        """
        fields = self.headers_for(decision, policy)
        denied = self.denied_func
        if denied is not None and view is not None:
            if policy.limits is None:  # one limit: named as the fields name it (a route...)
                decision = decision._replace(policy=policy.name)
            return shaped_denial(denied, view, decision, fields)
        return denial(decision, fields, policy.limits is not None)


def _check_cost(cost: object) -> Number:
    if isinstance(cost, bool) or not isinstance(cost, (int, float)):
        raise TypeError(f"'cost' must be a number > 0 or a callable, got {show(cost)}")
    if not cost > 0 or not math.isfinite(cost):
        raise ValueError(f"'cost' must be a finite number > 0, got {show(cost)}")
    return cost
