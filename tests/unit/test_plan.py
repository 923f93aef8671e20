"""A request's plan (``tokenbucket._http.plan``): what an edge is told to do, step by step.

The gate of a real WSGI middleware plans requests from hand-made views; the test makes the
registry call the plan names, as an edge does, on a manual clock, and checks each step.
"""

from __future__ import annotations

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, InFlightLimit, ManualClock, Rule
from tokenbucket._http.plan import Gate, Plan
from tokenbucket._http.request import RequestView
from tokenbucket.wsgi import RateLimitMiddleware

TOKEN = "t" * 16
IP = "203.0.113.7"


def gate(**options: object) -> Gate:
    options.setdefault("registry", BucketRegistry(Rule(2, 1), clock=ManualClock()))
    middleware = RateLimitMiddleware(lambda environ, start: [], **options)  # type: ignore[arg-type]
    return middleware._gate


def view(path: str = "/", headers: object = None, scheme: str = "http") -> RequestView:
    return RequestView("GET", scheme, path, "", IP, headers or {}, dict)


def counted(plan: Plan) -> Plan:
    """Make the plan's registry call, as an edge does, and hand it the decision."""
    assert plan.policy is not None
    plan.decided(plan.policy.registry.consume(plan.bucket, plan.cost))
    return plan


def test_a_plain_request_is_counted_then_passes_with_its_fields():
    g = gate()
    plan = g.plan(view())
    assert (plan.admin, plan.slot, plan.respond, plan.fields) == (None, None, None, [])
    assert (plan.policy is g.options.default, plan.key, plan.bucket, plan.cost) == (True, IP, IP, 1)
    counted(plan)
    assert plan.respond is None
    assert plan.settlement is None
    assert plan.fields == [
        ("RateLimit-Policy", '"default";q=2;w=2'),
        ("RateLimit", '"default";r=1;t=1'),
    ]


def test_a_denied_request_gets_the_429_instead_of_the_app():
    g = gate()
    counted(g.plan(view()))
    counted(g.plan(view()))
    plan = counted(g.plan(view()))
    assert plan.respond is not None
    assert plan.respond.status == 429
    assert plan.fields == []


def test_an_exempt_request_is_neither_counted_nor_changed():
    plan = gate(exempt=["/health"], in_flight=InFlightLimit(1)).plan(view("/health"))
    assert (plan.policy, plan.slot, plan.respond, plan.fields) == (None, None, None, [])


def test_an_in_flight_limit_names_the_slot_and_the_answer_when_none_is_free():
    g = gate(in_flight=InFlightLimit(1), key=lambda request: "user\0a")
    plan = g.plan(view())
    assert plan.slot == "user\1\2a"  # the key as the store writes it
    full = plan.full()
    assert full is not None
    assert full.status == 429
    assert json.loads(full.body) == {"error": "Too many requests in flight", "limit": 1}
    assert gate(in_flight=InFlightLimit(1), dry_run=True).plan(view()).full() is None


def test_an_unauthorised_admin_request_is_counted_then_refused_without_a_slot():
    g = gate(admin_token=TOKEN, in_flight=InFlightLimit(1))
    plan = g.plan(view("/admin/update-rule"))
    assert (plan.admin, plan.slot, plan.refusal) == (None, None, 401)
    counted(plan)
    assert plan.respond is not None
    assert plan.respond.status == 401
    assert ("RateLimit", '"default";r=1;t=1') in plan.respond.headers


def test_an_authorised_admin_request_goes_to_the_admin_api_uncounted():
    g = gate(admin_token=TOKEN)
    for path in ("/admin/update-rule", "/admin/update-rule/rules"):
        request = view(path, {"authorization": f"Bearer {TOKEN}"})
        plan = g.plan(request)
        assert plan.admin is not None
        assert (plan.admin.view, plan.admin.limit) == (request, 0)  # a GET: no body to read
        assert plan.policy is None
        assert plan.respond is None
    assert g.plan(view("/admin/update-rule/other")).admin is None  # an ordinary path


def test_a_handshake_passes_unchanged_or_is_refused():
    g = gate(in_flight=InFlightLimit(1), settle=lambda request, status, headers: 1)
    plan = counted(g.plan(view(scheme="ws"), True))
    assert (plan.slot, plan.fields, plan.settlement, plan.respond) == (None, [], None, None)
    counted(g.plan(view(scheme="ws"), True))
    plan = counted(g.plan(view(scheme="ws"), True))
    assert plan.respond is not None
    assert plan.respond.status == 429


def test_a_settled_request_carries_its_settlement():
    g = gate(settle=lambda request, status, headers: 2, settle_at="end")
    plan = counted(g.plan(view()))
    assert plan.settlement is not None
    assert plan.at_end
    plan.settlement.said(200, {})
    assert plan.settlement.due() == 2


def test_a_handshake_holds_no_slot_on_the_plain_path_either():
    g = gate(in_flight=InFlightLimit(1))
    assert g.plain  # the default key and cost: the plain path
    assert g.plan(view()).slot == IP
    plan = g.plan(view(scheme="ws"), True)
    assert (plan.slot, plan.handshake, plan.bucket) == (None, True, IP)


def test_a_denial_carries_its_decision_named_as_the_fields_name_it():
    g = gate(routes={"/login": Rule(1, 1)})
    counted(g.plan(view("/login")))
    plan = counted(g.plan(view("/login")))
    assert plan.respond is not None
    assert plan.denied is not None
    assert plan.denied.policy == "/login"
    assert not plan.denied.allowed
    assert counted(g.plan(view())).denied is None  # allowed: nothing denied


def test_an_admin_post_says_how_much_body_to_read():
    g = gate(admin_token=TOKEN, max_body=100)
    auth = {"authorization": f"Bearer {TOKEN}"}

    def post(headers: object) -> RequestView:
        return RequestView("POST", "http", "/admin/update-rule", "", IP, headers, dict)

    request = g.plan(post(auth)).admin
    assert request is not None
    assert (request.limit, request.length) == (100, None)
    declared = {**auth, "content-length": " 12 "}
    request = g.plan(post(declared)).admin
    assert request is not None
    assert (request.limit, request.length) == (100, 12)
    assert request.operation(b"{}").status == 400  # shorter than declared: cut short
    too_long = {**auth, "content-length": "101"}
    request = g.plan(post(too_long)).admin
    assert request is not None
    assert request.limit == 0  # nothing to read: refused as it is
    assert request.operation(b"").status == 413


_LENGTHS = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789 \t", max_size=6000),  # padded, huge, spaced
    st.integers(min_value=0, max_value=10**30).map(str),
    st.builds(lambda zeros, n: "0" * zeros + str(n), st.integers(0, 5000), st.integers(0, 200)),
)


@settings(max_examples=300, deadline=None)
@given(declared=_LENGTHS)
@example(declared="9" * 5000)
@example(declared="0" * 5000 + "12")
@example(declared="\u0663")  # a digit, not ASCII
def test_a_hostile_content_length_is_its_value_or_a_4xx(declared):
    """Whatever a client writes as Content-Length, the admin plan reads it as its decimal value
    (at most the limit: read exactly that much), or refuses it (400 not a number, 413 over the
    limit); it never raises (int() of over 4,300 digits would) and never reads a different size.
    """
    g = gate(admin_token=TOKEN, max_body=100)
    headers = {"authorization": f"Bearer {TOKEN}", "content-length": declared}
    request = g.plan(RequestView("POST", "http", "/admin/update-rule", "", IP, headers, dict)).admin
    assert request is not None
    text = declared.strip()
    digits = text.lstrip("0") or "0"
    if not (text.isascii() and text.isdigit()):
        assert request.limit == 0
        assert request.operation(b"").status == 400
    elif len(digits) > 3 or int(digits) > 100:
        assert request.limit == 0
        assert request.operation(b"").status == 413
    else:
        assert (request.limit, request.length) == (100, int(digits))
