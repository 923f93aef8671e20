"""One request's `Plan`: what its edge does with it, as `Gate.plan` decides from its view.

An edge (ASGI, WSGI, Django) turns its request into a `RequestView`, asks its `Gate` for the
request's plan and carries the plan out, in this order, without being called back:

1. ``admin``: an authorised request to the admin API: read its body as the `AdminRequest`
   says, make its operation's calls and send its answer. Nothing below applies.
2. ``slot``: the key of the in-flight slot the request holds until its response ends (None:
   no in-flight limit). When no slot is free, send `Plan.full` if it is a response (in a dry
   run it is None: go on, holding no slot).
3. ``policy``: when not None, take ``cost`` tokens of ``bucket`` from ``policy.registry``
   (awaited with an async store) and hand the decision to `Plan.decided`.
4. ``respond``: a `Response` to send instead of calling the app (a 429, the 503 of a request
   that cannot be decided, an unauthorised admin request's refusal); else call the app, add
   ``fields`` (in the edge's form) to its response, and settle ``settlement`` (None: nothing
   to settle) when the response starts, or with ``at_end`` after its last body message, and
   in any case once however the request ends. For a WebSocket handshake
   (``Gate.plan(view, True)``) ``respond`` refuses the handshake; an allowed one passes
   unchanged. An edge that shapes its own 429 (Django) finds the decision it denies in
   ``denied``.

Knows: the order of those steps and what each option changes in them. Must not know: ASGI or
WSGI, bodies, sockets; it makes no registry call (the edge does, awaited or not).
"""

from __future__ import annotations

from typing import Any, List, Literal, Optional

from .._core.decision import Decision
from .._core.keys import escape_key
from .admin import AdminAPI, AdminRequest
from .headers import Response, rate_limit_headers
from .options import Options
from .policy import Policy
from .request import RequestView, client_key
from .rules import sub_paths
from .settle import Settlement
from .unservable import Unservable


class Gate:
    """Where every request of one middleware gets its `Plan`: its options, admin API and form.

    ``form`` is the form of the rate-limit fields the edge adds (`TEXT` or `RAW`). With
    ``routes_only`` (Django without a ``DEFAULT``) a request that matches no route is exempt.
    """

    __slots__ = ("admin", "admin_paths", "form", "in_flight", "options", "plain", "routes_only")

    def __init__(
        self,
        options: Options,
        admin: Optional[AdminAPI],
        form: Literal[0, 1],
        routes_only: bool = False,
    ) -> None:
        self.options = options
        self.admin = admin
        self.form = form
        self.routes_only = routes_only
        #: Whether requests hold an in-flight slot.
        self.in_flight = options.in_flight is not None
        #: Whether a request needs nothing but its client address (see `Options.is_plain`).
        self.plain = options.is_plain and not routes_only
        #: The admin path and the endpoints under it; none without an admin API.
        self.admin_paths = (
            frozenset() if admin is None else frozenset({admin.path, *sub_paths(admin.path)})
        )

    def plan(self, view: RequestView, handshake: bool = False) -> Plan:
        """The plan of a request: the admin API's, or its count, in-flight slot and settling.

        A WebSocket ``handshake`` is counted as a request and its denial refused; an allowed
        one passes unchanged: no fields, no in-flight slot, nothing to settle.
        """
        plan = Plan(self, view, handshake)
        if self.admin is not None and not handshake and view.path in self.admin_paths:
            refusal = self.admin.authorize(view.header("authorization"))
            if not refusal:
                plan.admin = AdminRequest(self.admin, view)
                return plan
            # Counted against the caller's bucket, whatever dry_run or exempt say; no slot.
            plan.refusal = refusal
        elif self.plain:  # the default limit by client address alone: the common case
            options = self.options
            plan.key = key = client_key(view.client, options.ipv6_prefix)
            plan.bucket = bucket = escape_key(key)
            plan.policy, plan.cost = options.default, options.cost
            if self.in_flight and not handshake:
                plan.slot = bucket
            return plan
        elif self.options.is_exempt(view) or (
            self.routes_only and self.options.route_paths.get(view.path) is None
        ):
            return plan
        try:
            plan.policy, plan.key, plan.bucket, plan.cost = self.options.limit_for(view)
        except Unservable as refused:
            plan.respond = refused.response
            return plan
        if self.in_flight and not plan.refusal and not handshake:
            plan.slot = escape_key(plan.key)
        return plan


class Plan:
    """One request's plan (see the module docstring for the steps an edge takes)."""

    __slots__ = (
        "_gate",
        "admin",
        "bucket",
        "cost",
        "denied",
        "fields",
        "handshake",
        "key",
        "policy",
        "refusal",
        "respond",
        "settlement",
        "slot",
        "view",
    )

    def __init__(self, gate: Gate, view: RequestView, handshake: bool = False) -> None:
        self._gate = gate
        self.view = view
        #: Whether the request is a WebSocket handshake.
        self.handshake = handshake
        #: The limiter to count the request with (with ``key``, ``bucket``, ``cost``), or None.
        self.policy: Optional[Policy] = None
        self.key: Any = None
        self.bucket: Any = None
        self.cost: float = 0
        #: The admin API's request, for an authorised admin request; else None.
        self.admin: Optional[AdminRequest] = None
        #: The in-flight slot's key to hold, or None.
        self.slot: Optional[str] = None
        #: The response to send instead of calling the app, or None.
        self.respond: Optional[Response] = None
        #: The rate-limit fields to add to the app's response (in the gate's form).
        self.fields: List[Any] = _NONE
        #: What the request's response settles, or None.
        self.settlement: Optional[Settlement] = None
        #: The admin API's refusal status of an unauthorised request (401, 403), or 0.
        self.refusal = 0
        #: The decision that ``respond`` (a 429) denies, its ``policy`` named as the fields name
        #: it: for an edge that shapes its own denial (Django's ``DENIED_VIEW``); else None.
        self.denied: Optional[Decision] = None

    @property
    def at_end(self) -> bool:
        """Whether ``settlement`` is settled after the last body message, not at the start."""
        return self._gate.options.settle_at_end

    def full(self) -> Optional[Response]:
        """The response to a request whose key has no in-flight slot free; None in a dry run."""
        options = self._gate.options
        return None if options.dry_run else options.in_flight_refusal

    def decided(self, decision: Decision) -> None:
        """Take the decision of the request's count: ``respond``, or ``fields`` and ``settlement``.

        Calls ``on_decision`` first, if there is one. A denied request gets the 429 (the
        ``denied`` option's, if any) unless ``dry_run`` is on; any other gets the rate-limit
        fields in the gate's form (none with ``headers=None``). A policy in shadow never
        refuses and adds no fields.
        """
        gate, policy, view = self._gate, self.policy, self.view
        assert policy is not None
        options = gate.options
        if options.on_decision is not None:
            options.report(view, self.key, decision)
        if self.refusal:
            assert gate.admin is not None
            self.respond = gate.admin.refusal(self.refusal, policy, decision, view)
            return
        shadow = policy.shadow  # the policy does not bind: never refuses, advertises nothing
        if not decision[0] and not options.dry_run and not shadow:  # denied: the 429
            self.respond = options.denial(decision, policy, view)
            self.denied = (
                decision if policy.limits is not None else decision._replace(policy=policy.name)
            )
        elif not self.handshake:
            if not shadow:
                self.fields = rate_limit_headers(decision, policy, options.header_mode, gate.form)
            settle = options.settle_func
            if settle is not None:
                self.settlement = Settlement(
                    settle, view, policy.registry, self.bucket, self.cost, decision
                )


#: No fields (shared: never changed).
_NONE: List[Any] = []
