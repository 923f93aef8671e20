"""The admin API's audit log (logger ``tokenbucket.admin``), each test run against ASGI and WSGI.

Records are read with ``caplog``; the refusal windows pass on a ManualClock given to the audit
log (``middleware._admin.audit.clock``), and its wall clock is pinned for exact ``time`` fields.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from typing import Any, Iterator, List

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket._http.audit import LOGGER_NAME, AuditLog, quote

IP = "203.0.113.7"
TOKEN = "s3cret-Token_123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATH = "/admin/update-rule"
WALL = 1_700_000_000.0  # 2023-11-14T22:13:20Z
WHEN = "2023-11-14T22:13:20.000Z"


def audited(h: Any, **audit: Any) -> Any:
    """Give ``h``'s audit log a ManualClock (``h.audit_clock``), a pinned wall clock and a hook
    recording its calls (``h.counted``)."""
    h.audit_clock = ManualClock()  # type: ignore[attr-defined]
    h.counted = []  # type: ignore[attr-defined]
    log = h.middleware._admin.audit
    if audit:
        log = h.middleware._admin.audit = AuditLog(**audit)
    log.clock = h.audit_clock  # type: ignore[attr-defined]
    log.wall = lambda: WALL
    log.on_admin = lambda action, status: h.counted.append((action, status))  # type: ignore[attr-defined]
    return h


@pytest.fixture
def admin(make):
    return lambda **options: audited(make(admin_token=TOKEN, **options))


@pytest.fixture
def records(caplog):
    """The ``tokenbucket.admin`` records, every level."""
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)

    def get(level: int = logging.DEBUG) -> List[logging.LogRecord]:
        return [r for r in caplog.records if r.name == LOGGER_NAME and r.levelno >= level]

    get.clear = caplog.clear  # type: ignore[attr-defined]
    return get


def post(h, payload, headers=AUTH, **kwargs):
    return h.request("POST", PATH, headers=headers, body=json.dumps(payload).encode(), **kwargs)


def strings(value: Any) -> Iterator[str]:
    """Every string in ``value``, however nested (a record's attributes)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from strings(item)
    elif value is not None and not isinstance(value, (int, float)):
        yield repr(value)


def record_text(record: logging.LogRecord) -> List[str]:
    """All a handler could write of ``record``: message, args, attributes, exception text."""
    formatted = logging.Formatter("%(message)s %(tokenbucket)s").format(record)
    return [record.getMessage(), formatted, *strings(vars(record))]


class TestChanges:
    def test_update_is_one_info_record_with_before_and_after(self, admin, records):
        """A POST is logged once at INFO: readable message, and the fields on the record."""
        h = admin()
        assert post(h, {"client_id": IP, "capacity": 50, "refill_rate": 10.0}).status == 200
        [record] = records()
        assert record.levelno == logging.INFO
        assert record.getMessage() == (
            "admin update of client '203.0.113.7' on the default limiter by '203.0.113.7': "
            "capacity=3 refill_rate=1.0 (default) -> capacity=50 refill_rate=10.0 (override)"
        )
        assert record.tokenbucket == {
            "action": "update",
            "status": 200,
            "client_id": IP,
            "route": None,
            "requested": {"capacity": 50, "refill_rate": 10.0},
            "before": {"capacity": 3, "refill_rate": 1.0, "override": False},
            "after": {"capacity": 50, "refill_rate": 10.0, "override": True},
            "caller": IP,
            "time": WHEN,
        }
        assert json.loads(json.dumps(record.tokenbucket)) == record.tokenbucket  # JSON-ready
        assert h.counted == [("update", 200)]

    def test_second_update_shows_the_override_as_before(self, admin, records):
        h = admin()
        post(h, {"client_id": "c", "capacity": 5})
        post(h, {"client_id": "c", "refill_rate": 2})
        second = records()[-1].tokenbucket
        assert second["before"] == {"capacity": 5, "refill_rate": 1.0, "override": True}
        assert second["after"] == {"capacity": 5, "refill_rate": 2, "override": True}
        assert second["requested"] == {"capacity": None, "refill_rate": 2}

    def test_route_update_names_the_route(self, admin, records):
        h = admin(routes={"/login": Rule(5, 0.1)})
        post(h, {"client_id": IP, "capacity": 9, "route": "/login"})
        [record] = records()
        assert record.tokenbucket["route"] == "/login"
        assert record.tokenbucket["before"] == {
            "capacity": 5,
            "refill_rate": 0.1,
            "override": False,
        }
        assert " on route '/login' by " in record.getMessage()

    def test_remove_logs_the_override_it_removed(self, admin, records):
        """DELETE is a change: INFO, with the override before and the default after; removing
        nothing is logged too, saying so."""
        h = admin()
        h.registry.update_rule(IP, capacity=10, refill_rate=2.0)
        assert h.request("DELETE", PATH, query=f"client_id={IP}", headers=AUTH).status == 200
        assert h.request("DELETE", PATH, query=f"client_id={IP}", headers=AUTH).status == 200
        first, again = records()
        assert (first.levelno, again.levelno) == (logging.INFO, logging.INFO)
        assert first.tokenbucket["before"] == {"capacity": 10, "refill_rate": 2.0, "override": True}
        assert first.tokenbucket["after"] == {"capacity": 3, "refill_rate": 1.0, "override": False}
        assert first.tokenbucket["removed"] is True
        assert again.tokenbucket["removed"] is False
        assert again.getMessage().endswith("(there was no override)")
        assert h.counted == [("remove", 200), ("remove", 200)]

    def test_read_is_debug_only(self, admin, records):
        """GET changes nothing: one DEBUG record, nothing at INFO and above."""
        h = admin()
        assert h.request("GET", PATH, query=f"client_id={IP}", headers=AUTH).status == 200
        [record] = records()
        assert record.levelno == logging.DEBUG
        assert record.tokenbucket["action"] == "read"
        assert record.tokenbucket["rule"] == {"capacity": 3, "refill_rate": 1.0, "override": False}
        assert records(logging.INFO) == []
        assert h.counted == [("read", 200)]

    @pytest.mark.parametrize(
        ("method", "query", "body", "status"),
        [
            ("POST", "", b"{", 400),
            ("POST", "", b'{"client_id": "a", "capacity": 0}', 400),
            ("GET", "", b"", 400),
            ("PUT", "", b"", 405),
            ("POST", "", b" " * 5000, 413),
        ],
    )
    def test_bad_input_is_debug_and_changes_nothing(
        self, admin, records, method, query, body, status
    ):
        h = admin()
        response = h.request(method, PATH, query=query, headers=AUTH, body=body)
        assert response.status == status
        [record] = records()
        assert record.levelno == logging.DEBUG
        assert record.tokenbucket["action"] == "invalid"
        assert record.tokenbucket["error"] == response.json()["error"]
        assert h.counted == [("invalid", status)]

    def test_logger_off_still_counts(self, admin, caplog):
        """With the logger above CRITICAL nothing is logged; the hook still counts."""
        caplog.set_level(logging.CRITICAL + 1, logger=LOGGER_NAME)
        h = admin()
        post(h, {"client_id": "a", "capacity": 2})
        post(h, {"client_id": "a", "capacity": 2}, headers={})
        assert [r for r in caplog.records if r.name == LOGGER_NAME] == []
        assert h.counted == [("update", 200), ("refused", 401)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dead_registry(kind: str) -> BucketRegistry:
    """A registry on a Redis URL nothing listens at: every call raises ConnectionError."""
    from tokenbucket.redis import AsyncRedisStore, RedisStore

    cls = AsyncRedisStore if kind == "asgi" else RedisStore
    store = cls.from_url(f"redis://127.0.0.1:{free_port()}/0")
    return BucketRegistry(Rule(3, 1.0), store=store)


def test_store_down_during_a_change_is_a_warning(make, kind, records):
    """A 503 during a change: WARNING, saying it may or may not have been applied; a read that
    failed changed nothing: DEBUG."""
    h = audited(make(registry=dead_registry(kind), admin_token=TOKEN))
    assert post(h, {"client_id": "a", "capacity": 2}).status == 503
    assert h.request("GET", PATH, query="client_id=a", headers=AUTH).status == 503
    change, read = records()
    assert change.levelno == logging.WARNING
    assert "the change may or may not have been applied" in change.getMessage()
    assert change.tokenbucket["status"] == 503
    assert change.tokenbucket["requested"] == {"capacity": 2, "refill_rate": None}
    assert change.tokenbucket["error"].startswith("RedisUnavailableError: ")
    assert read.levelno == logging.DEBUG
    assert h.counted == [("update", 503), ("read", 503)]


class TestRefusals:
    def test_refusal_is_a_warning_without_credentials(self, admin, records):
        h = admin()
        assert post(h, {"client_id": "a", "capacity": 9}, headers={"Authorization": "Bearer guess"})
        [record] = records()
        assert record.levelno == logging.WARNING
        assert record.getMessage() == (
            "refused admin request (403, invalid admin token): 'POST' '/admin/update-rule' "
            "from '203.0.113.7'"
        )
        assert record.tokenbucket == {
            "action": "refused",
            "status": 403,
            "reason": "invalid admin token",
            "method": "POST",
            "path": PATH,
            "caller": IP,
            "time": WHEN,
        }
        assert not any("guess" in text for text in record_text(record))

    def test_burst_from_one_address_is_one_warning_and_one_summary(self, admin, records):
        """100 refusals in a burst: 1 warning; after the window, at the next admin request, 1
        summary of the 99 others. Every refusal reaches the hook (401 until the caller's
        bucket of 3 is empty, 429 after)."""
        h = admin()
        for _ in range(100):
            assert post(h, {"client_id": "a", "capacity": 9}, headers={}).status in (401, 429)
            h.audit_clock.advance(0.5)  # 50 s in all: within the window
        assert len(records()) == 1
        assert records()[0].tokenbucket["status"] == 401
        h.audit_clock.advance(10)
        h.request("GET", PATH, query="client_id=a", headers=AUTH)  # any admin request
        warnings = records(logging.WARNING)
        assert len(warnings) == 2
        summary = warnings[1]
        assert summary.getMessage() == (
            "99 more refused admin requests from '203.0.113.7' in the 60 s after the one logged"
        )
        assert summary.tokenbucket["count"] == 99
        assert summary.tokenbucket["summary"] is True
        assert summary.tokenbucket["caller"] == IP
        assert h.counted[:100] == [("refused", 401)] * 3 + [("refused", 429)] * 97
        assert h.counted[100:] == [("read", 200)]

    def test_next_refusal_after_the_window_summarises_then_logs(self, admin, records):
        h = admin()
        for _ in range(5):
            post(h, {}, headers={})
        h.audit_clock.advance(60)
        post(h, {}, headers={})
        messages = [r.getMessage() for r in records()]
        assert len(messages) == 3
        assert messages[1].startswith("4 more refused admin requests from '203.0.113.7'")
        assert messages[2].startswith("refused admin request (")
        # Nothing more to report: the next window has one logged refusal and nothing else.
        h.audit_clock.advance(60)
        h.request("GET", PATH, query="client_id=a", headers=AUTH)
        assert len(records(logging.WARNING)) == 3

    def test_several_addresses_are_summarised_apart(self, admin, records):
        h = admin()
        addresses = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
        for _ in range(10):
            for address in addresses:
                post(h, {}, headers={}, client=address)
        first = records()
        assert [r.tokenbucket["caller"] for r in first] == addresses
        h.audit_clock.advance(61)
        post(h, {}, headers={}, client="198.51.100.1")
        summaries = [r for r in records() if r.tokenbucket.get("summary")]
        assert [(r.tokenbucket["caller"], r.tokenbucket["count"]) for r in summaries] == [
            (address, 9) for address in addresses
        ]
        assert len(records()) == 3 + 3 + 1

    def test_memory_is_bounded_and_the_dropped_address_is_summarised(self, make, records):
        """At most max_addresses are tracked; making room summarises the oldest at once."""
        h = audited(make(admin_token=TOKEN), max_addresses=2)
        for address in ("192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2"):
            post(h, {}, headers={}, client=address)
        h.audit_clock.advance(5)
        post(h, {}, headers={}, client="192.0.2.3")  # 192.0.2.1 is dropped
        log = h.middleware._admin.audit
        assert list(log._seen) == ["192.0.2.2", "192.0.2.3"]
        messages = [r.getMessage() for r in records()]
        assert (
            messages[2]
            == "2 more refused admin requests from '192.0.2.1' in the 5 s after the one logged"
        )
        assert len(messages) == 4
        post(h, {}, headers={}, client="192.0.2.1")  # a fresh window: logged again
        assert len(records()) == 5


_printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_latin1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    token=st.text(_printable, min_size=16, max_size=40),
    offered=st.text(_latin1, min_size=10, max_size=60),
    scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
    append=st.booleans(),
)
def test_no_record_ever_holds_a_credential(make, records, token, offered, scheme, append):
    """Whatever is offered (another token, the real one with more appended, any scheme), the
    records of refused requests are those of a plain wrong token (or of no token, for a 401):
    nothing in them, not even a hash, depends on what was offered. And neither the offered
    text nor the real token is anywhere in them (unless the fixed text itself holds it)."""
    value = scheme + (token + offered if append else offered)
    assume(offered.strip() != token)

    def refusals(authorization):
        records.clear()
        h = audited(make(admin_token=token))
        headers = {} if authorization is None else {"Authorization": authorization}
        statuses = [post(h, {"client_id": "a", "capacity": 5}, headers=headers).status]
        statuses += [post(h, {}, headers=headers).status for _ in range(2)]
        h.audit_clock.advance(61)
        post(h, {}, headers=headers)  # a summary, and a fresh refusal
        found = records()
        assert len(found) == 3
        shown = [(r.levelno, r.getMessage(), r.tokenbucket) for r in found]
        return statuses, shown, [text for r in found for text in record_text(r)]

    statuses, shown, texts = refusals(value)
    assert statuses[0] in (401, 403)
    baseline = refusals(None if statuses[0] == 401 else "Bearer !")
    assert (statuses, shown) == baseline[:2]
    for secret in (token, offered):
        if not any(secret in text for text in baseline[2]):  # else a fixed text holds it
            assert not any(secret in text for text in texts)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(client_id=st.text(min_size=1, max_size=300))
def test_client_id_cannot_forge_a_log_line(make, records, client_id):
    """Any client_id (line breaks, control characters, ANSI escapes, lone surrogates): the
    message is one printable line; the structured field keeps the raw value."""
    records.clear()
    h = audited(make(admin_token=TOKEN))
    assert post(h, {"client_id": client_id, "capacity": 5}).status == 200
    [record] = records()
    message = record.getMessage()
    assert message.isprintable()  # no line breaks, control or format characters
    assert record.tokenbucket["client_id"] == client_id
    assert quote(client_id)[:150] in message


def test_quote_escapes_and_shortens():
    assert quote("a\nINFO forged\x1b[31m") == "'a\\nINFO forged\\x1b[31m'"
    assert quote("\u202e\u2028") == "'\\u202e\\u2028'"
    assert quote(None) == "unknown"
    long = quote("x" * 1000)
    assert len(long) == 200
    assert re.fullmatch(r"'x+\.\.\.x+'", long)
