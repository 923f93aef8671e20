"""`Policy`: one limiter a middleware applies, and `Limit`: how one request is counted by it.

Knows: a policy's registry, key namespace and header name, whether it runs in shadow, the
limits its ``RateLimit-Policy`` field advertises (`enforced`: not those in shadow), and whether
it is on a Redis Cluster. Every part of the HTTP layer that names a policy (the options, the
request plans, the admin API, the framework guards) takes it from here. Must not know: the
options, requests, protocols, the admin API.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from .._core.rule import Rule
from .._core.validate import Number
from .._registry.registry import BucketRegistry
from .headers import PolicyFields
from .unservable import is_cluster


class Policy(PolicyFields):
    """One limiter the middleware applies: a registry, a key namespace and a header name.

    The default policy uses the middleware's registry as it is. A route's policy is a
    registry of its own sharing that registry's store, with keys namespaced by the route
    pattern, so route buckets and overrides never mix with the default ones.
    """

    __slots__ = ("cluster", "prefix", "refused", "registry", "shadow")

    def __init__(self, name: str, registry: BucketRegistry, prefix: str) -> None:
        several = len(registry.limits) > 1
        super().__init__(
            name,
            (lambda: enforced(self.registry)) if several else None,
            None if several else (lambda: self.registry.default),
        )
        self.registry = registry
        self.prefix = prefix
        #: Whether the policy runs in shadow: decided and counted, never refusing (no fields).
        self.shadow = False
        #: Whether it has several limits in a Redis Cluster; whether it refused a request for
        #: keys spanning its hash slots yet (see `Unservable`).
        self.cluster, self.refused = several and is_cluster(registry.store), False


def enforced(registry: BucketRegistry) -> Dict[str, Rule]:
    """The limits ``RateLimit-Policy`` advertises: not those in shadow (they do not bind).

    Empty if all are in shadow: then no rate-limit field is sent.
    """
    shadow, defaults = registry.shadow, registry.defaults  # a copy: the caller's to keep
    if not shadow:  # the common case, on every request: no comprehension to run
        return defaults
    return {name: rule for name, rule in defaults.items() if name not in shadow}


#: How one request is counted, as `Options.limit_for` decides it: ``(policy, key, bucket, cost)``.
#: ``policy`` is the limiter (the default one or the request's route); ``key`` the key function's
#: answer (by default the client address), which ``on_decision`` gets; ``bucket`` that key in the
#: policy's namespace, the key to consume from ``policy.registry``; ``cost`` the tokens the
#: request takes. A plain tuple: it is built for every request, and a NamedTuple costs 10 times
#: as much to build. With several limits, a key function may return a key per limit (a
#: mapping of limit names to keys): then ``key`` and ``bucket`` are such mappings.
Limit = Tuple[Policy, Any, Any, Number]
