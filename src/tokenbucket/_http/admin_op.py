"""An admin operation: the plan of registry calls a valid request asks for, and its answer.

What belongs here: `AdminOp` (the calls, in order, that carry a request out and read the rule
back), the 200 JSON built from their results, a rule as the audit log's fields, and the 503 for
a store that did not answer. It must not know HTTP requests, the token, parsing, or make a
registry call (the edge makes them; `admin.AdminAPI.outcome` audits the result).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .._core.keys import bucket_key
from .._core.rule import Rule
from .._core.validate import Number, show
from .headers import Response, error, json_response

if TYPE_CHECKING:
    from .._registry.registry import BucketRegistry
    from .policy import Policy


#: One registry call of an admin operation: the `BucketRegistry` method's name and its keyword
#: arguments after the key. Its awaitable twin is the same name with an ``a`` in front
#: (``update_rule``, ``aupdate_rule``): the middleware calls one or awaits the other.
RegistryCall = Tuple[str, Dict[str, Any]]


class AdminOp(NamedTuple):
    """A validated, authorised admin request: a plan of registry calls and how to answer them.

    The middleware makes the calls of `calls` on ``policy.registry`` with `key`, in order
    (synchronously, or awaiting the ``a``-named methods), and sends `AdminAPI.outcome` of
    their results, or of the ``ConnectionError`` one raised (a 503).
    """

    action: str  # "read", "update", "remove"; "shadow" or "enforce" (see _http.shadow)
    client_id: str
    policy: Policy
    capacity: Optional[Number] = None
    refill_rate: Optional[Number] = None
    #: The named limit addressed; None for the only one, or (a read) for every limit.
    limit: Optional[str] = None

    @property
    def every_limit(self) -> Tuple[str, ...]:
        """The limits a read without ``limit`` reports, when the policy has several; else ()."""
        names: Tuple[str, ...] = self.policy.registry.limits
        return names if self.limit is None and len(names) > 1 else ()

    @property
    def key(self) -> str:
        """The bucket key of ``client_id`` in its policy's namespace (escaped: see `bucket_key`)."""
        return bucket_key(self.policy.prefix, self.client_id)

    @property
    def route(self) -> Optional[str]:
        """The route the operation addresses, None for the default limiter (as JSON shows it)."""
        return None if self.policy.prefix == "" else self.policy.name

    def calls(self) -> List[RegistryCall]:
        """The registry calls that carry the operation out, then two reads: rule and level.

        A change (update, remove) is preceded by a read of the rule before it, for the audit
        log (another change between the two calls would not show in its ``before``).
        """
        every = self.every_limit
        if self.action in ("shadow", "enforce"):  # no registry call: see AdminAPI.outcome
            return []
        if every:  # a read of every limit: rule and level of each, in order
            return [(call, {"limit": name}) for name in every for call in ("rule_for", "tokens")]
        which: Dict[str, Any] = {} if self.limit is None else {"limit": self.limit}
        reads: List[RegistryCall] = [("rule_for", which), ("tokens", which)]
        if self.action == "update":
            change = {"capacity": self.capacity, "refill_rate": self.refill_rate, **which}
            return [("rule_for", which), ("update_rule", change), *reads]
        if self.action == "remove":
            return [("rule_for", which), ("remove_rule", which), *reads]
        return reads

    def steps(self) -> List[Tuple[Any, str, Tuple[Any, ...], Dict[str, Any]]]:
        """`calls` as the middleware makes them: ``(registry, method, args, kwargs)``."""
        registry = self.policy.registry
        return [(registry, name, (self.key,), kwargs) for name, kwargs in self.calls()]

    def answer(self, results: Sequence[Any]) -> Response:
        """The 200 response, from the results of `calls` in their order."""
        registry = self.policy.registry
        every = self.every_limit
        if every:
            limits = {
                name: {
                    "capacity": rule.capacity,
                    "refill_rate": rule.refill_rate,
                    "tokens": tokens,
                    "override": _is_override(rule, registry, name),
                }
                for name, rule, tokens in zip(every, results[::2], results[1::2])
            }
            return json_response(
                200, {"client_id": self.client_id, "route": self.route, "limits": limits}
            )
        rule, tokens = results[-2:]
        payload: Dict[str, Any] = {
            "client_id": self.client_id,
            "route": self.route,
            "capacity": rule.capacity,
            "refill_rate": rule.refill_rate,
            "tokens": tokens,
            "override": _is_override(rule, registry, self.limit),
        }
        if self.limit is not None:
            payload["limit"] = self.limit
        if self.action == "remove":
            payload["removed"] = results[1] is not None
        return json_response(200, payload)


def _is_override(rule: Rule, registry: BucketRegistry, limit: Optional[str] = None) -> bool:
    # rule_for returns the limit's default object itself when there is no override.
    return rule is not registry.defaults[registry.limits[0] if limit is None else limit]


def _rule_fields(
    rule: Rule, registry: BucketRegistry, limit: Optional[str] = None
) -> Dict[str, Any]:
    """A rule as the audit log's fields: its numbers and whether it is an override."""
    return {
        "capacity": rule.capacity,
        "refill_rate": rule.refill_rate,
        "override": _is_override(rule, registry, limit),
    }


def _describe(fields: Dict[str, Any]) -> str:
    kind = "override" if fields["override"] else "default"
    return f"capacity={fields['capacity']!r} refill_rate={fields['refill_rate']!r} ({kind})"


def unavailable(failure: ConnectionError) -> Response:
    """A shared store (Redis) did not answer an admin call: 503, and nothing is claimed done.

    An update may or may not have reached the store before the connection failed; the client
    retries (updates are idempotent) or reads the rule back with GET.
    """
    return error(
        503, f"the rate-limit store is unavailable: {show(str(failure))}", [("Retry-After", "1")]
    )
