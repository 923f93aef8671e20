r"""`Guard`: one limit a framework integration puts on views, free of any framework.

The FastAPI dependency, the Flask extension and the Django decorator each hold guards: a policy
(a registry and the name its header fields give it), a key function of the `RequestView`, a
cost, and the header mode. A guard counts a request in a *scope* (a route, an endpoint, a view):
its buckets live under ``scope + "\0"`` (`Guard.prefix`) in the registry's store, apart from
the middleware's namespaces (whose route prefixes start with ``/``; scopes never do) and from
other scopes.

Knows: building the policy from a registry or rule strings, keying and counting a request (the
registry call, sync or awaited) and the fields of its answer, written by ``headers``. Must not
know: any framework, request object or response class.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

from .._core.decision import Decision
from .._core.keys import escape_key
from .._core.rule import Limits, Rule, as_limits
from .._core.validate import Number, show
from .._registry.registry import BucketRegistry
from .._stores.store import AsyncStore, Store
from .headers import HEADER_MODES, TEXT, HeaderList, rate_limit_headers, retry_after_seconds
from .options import Options, _check_cost
from .policy import Policy
from .request import (
    DEFAULT_IPV6_PREFIX,
    KeyFunc,
    RequestView,
    check_ipv6_prefix,
    client_key,
    default_bucket,
)

#: What an integration takes as a limit: a registry (shared as it is), or rules to build one.
GuardLimits = Union[BucketRegistry, Limits]


class Guard:
    """One limit on views: count a request in a scope, and say which fields its answer gets.

    Args:
        limits: a [`BucketRegistry`][tokenbucket.BucketRegistry] (its store, rules and
            overrides as they are), or a Rule, a mapping of names to Rules, or a rate string
            (``"5/minute;100/day"``), for a registry of its own on ``store``.
        store: where a guard built from rules keeps its buckets (a new MemoryStore if None).
        name: the policy's name in the header fields; by default the rate string's canonical
            name for one rate (``"5/minute"``), else ``"default"``.
        key: ``key(request) -> str`` of a `RequestView`; the client address by default.
        cost: tokens a request takes: a number > 0, or ``cost(request) -> number``.
        headers: ``"draft"``, ``"legacy"``, ``"both"`` or None, as in the middlewares.
        ipv6_prefix: the network size keying an IPv6 client by default, as in the middlewares.
    """

    __slots__ = (
        "blocking",
        "cost",
        "cost_func",
        "ipv6_prefix",
        "key_func",
        "mode",
        "plain",
        "policy",
        "registry",
    )

    def __init__(
        self,
        limits: GuardLimits,
        *,
        store: Union[Store, AsyncStore, None] = None,
        name: Optional[str] = None,
        key: Optional[KeyFunc] = None,
        cost: Union[float, Callable[[RequestView], float]] = 1,
        headers: Optional[str] = "draft",
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        if isinstance(limits, BucketRegistry):
            registry = limits
        else:
            rules = as_limits(limits)
            registry = BucketRegistry(rules, store=store)
            if name is None and isinstance(limits, str) and isinstance(rules, Rule):
                name = next(iter(Rule.parse_many(limits)))
        if name is None:
            name = "default"
        if not isinstance(name, str) or not name or not all(" " <= c <= "~" for c in name):
            raise ValueError(f"'name' must be a non-empty printable ASCII str, got {show(name)}")
        if key is not None and not callable(key):
            raise TypeError(f"'key' must be a callable taking a RequestView, got {show(key)}")
        if headers not in HEADER_MODES:
            raise ValueError(
                f"'headers' must be 'draft', 'legacy', 'both' or None, got {show(headers)}"
            )
        self.registry = registry
        self.policy = Policy(name, registry, "")
        self.key_func = key
        self.cost: Number = 1
        self.cost_func: Optional[Callable[[RequestView], float]] = None
        if callable(cost):
            self.cost_func = cost
        else:
            self.cost = _check_cost(cost)
        self.mode = HEADER_MODES[headers]
        self.ipv6_prefix = check_ipv6_prefix(ipv6_prefix)
        #: Whether a decision blocks on I/O (a synchronous Redis store): run it off the loop.
        self.blocking = bool(getattr(registry.store, "blocking", False))
        #: Whether the client address is all a decision needs (`decide_client`): no key or
        #: cost function, and a synchronous store.
        self.plain = key is None and self.cost_func is None and not registry.is_async

    @staticmethod
    def prefix(scope: str) -> str:
        r"""The namespace of ``scope``'s buckets: ``scope + "\0"`` (escaped), or ``""`` for none."""
        return escape_key(scope) + "\0" if scope else ""

    def bucket(
        self, view: RequestView, prefix: str, key: Optional[str] = None
    ) -> Tuple[str, Number]:
        """The request's store key under ``prefix`` (see `prefix`) and its cost.

        ``key``, if given, is the request's key, which the adapter found itself (a user).
        """
        key_func = self.key_func
        if key is None:
            key = client_key(view.client, self.ipv6_prefix) if key_func is None else key_func(view)
        if not isinstance(key, str):
            name = getattr(key_func, "__qualname__", None) or repr(key_func)
            raise TypeError(
                f"the key function {name!r} returned {show(key)} ({type(key).__name__}); "
                f"a key function must return a str, the bucket key"
            )
        cost_func = self.cost_func
        cost = self.cost if cost_func is None else cost_func(view)
        return prefix + escape_key(key), cost

    def decide(self, view: RequestView, prefix: str, key: Optional[str] = None) -> Decision:
        """Count the request under ``prefix`` (a synchronous store), under ``key`` if given."""
        bucket, cost = self.bucket(view, prefix, key)
        return self.registry.consume(bucket, cost)

    def decide_client(self, address: Optional[str], prefix: str) -> Decision:
        """`decide` for a `plain` guard: the client address is all it needs (no view)."""
        return self.registry.consume(prefix + default_bucket(address, self.ipv6_prefix), self.cost)

    async def adecide(self, view: RequestView, prefix: str) -> Decision:
        """Count the request under ``prefix``, awaited when the store is async."""
        bucket, cost = self.bucket(view, prefix)
        if self.registry.is_async:
            return await self.registry.aconsume(bucket, cost)
        return self.registry.consume(bucket, cost)

    def fields(self, decision: Decision) -> HeaderList:
        """The fields the response gets: the rate-limit fields, and ``Retry-After`` on a denial."""
        fields = rate_limit_headers(decision, self.policy, self.mode, TEXT)
        if not decision.allowed:
            wait = retry_after_seconds(decision)
            if wait is not None:
                fields.insert(0, ("Retry-After", str(wait)))
        return fields

    def named(self, decision: Decision) -> Decision:
        """``decision`` with ``policy`` the name the fields give it (one limit: the guard's)."""
        if self.policy.limits is None:
            return decision._replace(policy=self.policy.name)
        return decision


def add_scope(
    options: Options, name: str, registry: BucketRegistry, prefix: Optional[str] = None
) -> None:
    """Let the admin API of ``options`` address the buckets of a guard's scope ``name``.

    The admin request's ``"route"`` then names the scope (a FastAPI ``"GET /items/{id}"``, a
    Flask endpoint): its overrides are set on ``registry`` under ``prefix`` (by default
    `Guard.prefix` ``(name)``), the keys the guard counts that scope's requests in. The first
    guard to claim a name keeps it.
    """
    if name and name not in options.routes:
        options.routes[name] = Policy(
            name, registry, Guard.prefix(name) if prefix is None else prefix
        )
