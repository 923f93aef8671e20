"""One request's `Plan`: what its edge does with it, as `Gate.plan` decides from its view.

An edge (ASGI, WSGI) turns its request into a `RequestView`, asks its `Gate` for the request's
plan and carries the plan out, in this order, without being called back:

1. ``admin``: an authorised request to the admin API (the `AdminAPI`): read its body, make
   its operation's calls and send its answer (see ``admin``). Nothing below applies.
2. ``slot``: the key of the in-flight slot the request holds until its response ends (None:
   no in-flight limit). When no slot is free, send `Plan.full` if it is a response (in a dry
   run it is None: go on, holding no slot).
3. ``policy``: when not None, take ``cost`` tokens of ``bucket`` from ``policy.registry``
   (awaited with an async store) and hand the decision to `Plan.decided`.
4. ``respond``: a `Response` to send instead of calling the app (a 429, the 503 of a request
   that cannot be decided, an unauthorised admin request's refusal); else call the app, add
   ``fields`` (in the edge's form) to its response, and settle ``settlement`` (None: nothing
   to settle) when the response starts, or with ``at_end`` after its last body message, and
   in any case once however the request ends. For a WebSocket handshake (`Gate.handshake`,
   ``handshake`` True) ``respond`` refuses the handshake; an allowed one passes unchanged.

Knows: the order of those steps and what each option changes in them. Must not know: ASGI or
WSGI, bodies, sockets; it makes no registry call (the edge does, awaited or not).
"""

from __future__ import annotations

from typing import Any, List, Literal, Optional

from .._core.decision import Decision
from .._core.keys import escape_key
from .admin import AdminAPI
from .headers import Response
from .options import Options
from .policy import Policy
from .request import RequestView, client_key
from .rules import sub_paths
from .settle import Settlement
from .unservable import Unservable


class Gate:
    """Where every request of one middleware gets its `Plan`: its options, admin API and form.

    ``form`` is the form of the rate-limit fields the edge adds (`TEXT` or `RAW`).
    """

    __slots__ = ("admin", "admin_paths", "form", "in_flight", "options", "plain")

    def __init__(self, options: Options, admin: Optional[AdminAPI], form: Literal[0, 1]) -> None:
        self.options = options
        self.admin = admin
        self.form = form
        #: Whether requests hold an in-flight slot.
        self.in_flight = options.in_flight is not None
        #: Whether a request needs nothing but its client address (see `Options.is_plain`).
        self.plain = options.is_plain
        #: The admin path and the endpoints under it; none without an admin API.
        self.admin_paths = (
            frozenset() if admin is None else frozenset({admin.path, *sub_paths(admin.path)})
        )

    def plan(self, view: RequestView) -> Plan:
        """The plan of an HTTP request: the admin API's, or its count, slot and settling."""
        admin = self.admin
        if admin is not None and view.path in self.admin_paths:
            refusal = admin.authorize(view.header("authorization"))
            if not refusal:
                plan = Plan(self, view)
                plan.admin = admin
                return plan
            # Counted against the caller's bucket, whatever dry_run or exempt say.
            return self._counted(view, refusal)
        if self.plain:  # the default limit by client address alone: the common case
            options = self.options
            key = client_key(view.client, options.ipv6_prefix)
            bucket = escape_key(key)
            plan = Plan(self, view, options.default, key, bucket, options.cost)
            if self.in_flight:
                plan.slot = bucket
            return plan
        if self.options.is_exempt(view):
            return Plan(self, view)
        return self._counted(view)

    def handshake(self, view: RequestView) -> Plan:
        """The plan of a WebSocket handshake: counted as a request, its denial refused.

        An allowed handshake passes unchanged: no fields, no in-flight slot, nothing to settle.
        """
        plan = Plan(self, view) if self.options.is_exempt(view) else self._counted(view, 0, True)
        plan.handshake = True
        return plan

    def _counted(self, view: RequestView, refusal: int = 0, handshake: bool = False) -> Plan:
        """The plan of a request counted as `Options.limit_for` says (its 503 if it cannot be).

        ``refusal``: the status of an unauthorised admin request; it holds no in-flight slot,
        and neither does a ``handshake``.
        """
        plan = Plan(self, view)
        try:
            plan.policy, plan.key, plan.bucket, plan.cost = self.options.limit_for(view)
        except Unservable as refused:
            plan.respond = refused.response
            return plan
        plan.refusal = refusal
        if self.in_flight and not refusal and not handshake:
            plan.slot = escape_key(plan.key)
        return plan


class Plan:
    """One request's plan (see the module docstring for the steps an edge takes)."""

    __slots__ = (
        "_gate",
        "admin",
        "bucket",
        "cost",
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

    def __init__(
        self,
        gate: Gate,
        view: RequestView,
        policy: Optional[Policy] = None,
        key: Any = None,
        bucket: Any = None,
        cost: float = 0,
    ) -> None:
        self._gate = gate
        self.view = view
        #: The limiter to count the request with (with ``key``, ``bucket``, ``cost``), or None.
        self.policy = policy
        self.key = key
        self.bucket = bucket
        self.cost = cost
        #: The admin API, for an authorised admin request; else None.
        self.admin: Optional[AdminAPI] = None
        #: The in-flight slot's key to hold, or None.
        self.slot: Optional[str] = None
        #: The response to send instead of calling the app, or None.
        self.respond: Optional[Response] = None
        #: The rate-limit fields to add to the app's response (in the gate's form).
        self.fields: List[Any] = _NONE
        #: What the request's response settles, or None.
        self.settlement: Optional[Settlement] = None
        #: Whether the request is a WebSocket handshake; the admin API's refusal status, or 0.
        self.handshake = False
        self.refusal = 0

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

        Calls ``on_decision`` first, if there is one.
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
        verdict = options.verdict(decision, policy, gate.form, view)
        if not isinstance(verdict, list):  # denied: the 429
            self.respond = verdict
        elif not self.handshake:
            self.fields = verdict
            settle = options.settle_func
            if settle is not None:
                self.settlement = Settlement(
                    settle, view, policy.registry, self.bucket, self.cost, decision
                )


#: No fields (shared: never changed).
_NONE: List[Any] = []
