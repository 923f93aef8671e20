"""Shadow policies and the admin API's switch between shadow and enforcing.

Knows: which middleware policies run in shadow (``shadow_policies=``: ``"default"`` or route
patterns), the admin body that switches a policy or a named limit (``{"shadow": bool,
"route"?: ..., "limit"?: ...}``, no ``client_id``: the switch is registry-wide), and the one
audit record of a switch. A policy in shadow is decided and counted as usual, but its denials
let the request through (counted ``shadow_denied``) and it adds no rate-limit header fields: it
does not bind. A named limit in shadow is the registry's business (``set_shadow``).

Must not know: sockets, ASGI or WSGI messages, how the body is read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Mapping, Optional, Union

from .._core.validate import show
from .admin_op import AdminOp
from .audit import quote
from .headers import Response, error, json_response
from .policy import Policy

if TYPE_CHECKING:
    from .audit import AuditLog
    from .request import RequestView

#: The fields of a switch's body.
SWITCH_FIELDS = ("shadow", "route", "limit")


def check_shadow_policies(policies: Mapping[str, Policy], names: object) -> None:
    """Put the ``policies`` named (``"default"`` or route patterns) in shadow, or raise."""
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"'shadow_policies' must be a set of policy names, got {show(names)}")
    for name in names:
        policy = policies.get(name) if isinstance(name, str) else None
        if policy is None:
            routes = [each for each in policies if each != "default"]
            raise ValueError(
                f"'shadow_policies' must name 'default' or configured routes "
                f"{routes!r}, got {show(name)}"
            )
        policy.shadow = True


def set_policy_shadow(policy: Policy, shadow: bool, dry_run: bool) -> None:
    """Run ``policy`` in shadow or enforce it, from the next request; metrics follow.

    ``dry_run``: the middleware's; its denials are counted as shadow ones either way.
    """
    policy.shadow = shadow
    count_as_shadow = getattr(policy.registry, "count_as_shadow", None)
    if count_as_shadow is not None:  # an instrumented registry: count denials accordingly
        count_as_shadow(shadow or dry_run)


def parse_switch(
    data: Dict[str, Any], route: Callable[[object], Union[Response, Policy]]
) -> Union[Response, AdminOp]:
    """The operation of an admin body with ``"shadow"``, or the 400 refusing it."""
    unknown = [name for name in data if name not in SWITCH_FIELDS]
    if unknown:
        return error(
            400,
            f"unknown field {show(unknown[0])} in a shadow switch; expected 'shadow' and "
            f"optionally 'route' and 'limit' (a switch is for every client: no 'client_id')",
        )
    shadow = data["shadow"]
    if not isinstance(shadow, bool):
        return error(400, f"'shadow' must be true or false, got {show(shadow)}")
    policy = route(data.get("route"))
    if isinstance(policy, Response):
        return policy
    limit = data.get("limit")
    if limit is not None:
        names = policy.registry.limits
        if not isinstance(limit, str) or limit not in names:
            return error(400, f"'limit' must be one of {', '.join(names)}, got {show(limit)}")
        if getattr(policy.registry, "_watch", None) is None:
            return error(
                400,
                f"'limit' {show(limit)} cannot be put in shadow: the registry has one Rule "
                f"(switch the policy instead: omit 'limit')",
            )
    return AdminOp("shadow" if shadow else "enforce", "", policy, limit=limit)


def apply_switch(op: AdminOp, view: RequestView, audit: AuditLog, dry_run: bool) -> Response:
    """Carry out a switch (in-process, never fails), audit it as one record, answer 200.

    ``dry_run``: the middleware's (see `set_policy_shadow`).
    """
    policy, limit, shadow = op.policy, op.limit, op.action == "shadow"
    registry = policy.registry
    before = _state(policy, limit)
    if limit is None:
        set_policy_shadow(policy, shadow, dry_run)
    else:
        registry.set_shadow(limit, shadow)
    after = _state(policy, limit)
    where = "the default policy" if op.route is None else f"route {quote(op.route)}"
    what = where if limit is None else f"limit {quote(limit)} of {where}"
    fields: Dict[str, Any] = {"route": op.route, "limit": limit, "before": before, "after": after}
    audit.done(
        logging.INFO,
        f"admin {op.action} of {what} by {quote(view.client)}: "
        f"{_word(before['shadow'])} -> {_word(after['shadow'])}",
        op.action,
        200,
        view.client,
        fields,
    )
    return json_response(
        200,
        {
            "route": op.route,
            "limit": limit,
            "shadow": after["shadow"],
            "shadow_policy": policy.shadow,
            "shadow_limits": sorted(registry.shadow),
        },
    )


def _state(policy: Policy, limit: Optional[str]) -> Dict[str, bool]:
    return {"shadow": policy.shadow if limit is None else limit in policy.registry.shadow}


def _word(shadow: bool) -> str:
    return "shadow" if shadow else "enforcing"
