"""Shadow limits on a registry (issue 15 item 4): exact values, the runtime switch, bad input."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from tokenbucket import BucketRegistry, Decision, ManualClock, Rule


def watched():
    return BucketRegistry(
        {"burst": Rule(10, 0), "tight": Rule(5, 0)}, shadow={"tight"}, clock=ManualClock()
    )


def test_a_tighter_shadow_limit_is_watched_not_enforced():
    """Enforced 10, shadow 5, 12 requests: 10 admitted, 2 denied; the shadow limit would have
    refused requests 6 to 10, and was charged for the first 5 only."""
    limits = watched()
    decisions = [limits.consume("k") for _ in range(12)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
    assert [d.shadow_denied for d in decisions] == [()] * 5 + [("tight",)] * 5 + [()] * 2
    assert decisions[5] == Decision(True, 4.0, 0.0, math.inf, 10, "burst", ("tight",))
    assert decisions[10] == Decision(False, 0.0, math.inf, math.inf, 10, "burst")
    assert limits.tokens("k", limit="tight") == 0.0
    assert limits.tokens("k", limit="burst") == 0.0


def test_switching_to_enforcing_takes_effect_on_the_next_request():
    limits = watched()
    for _ in range(5):
        assert limits.consume("k")
    assert limits.consume("k").shadow_denied == ("tight",)
    assert limits.set_shadow("tight", False) == frozenset()
    denied = limits.consume("k")
    assert denied == Decision(False, 0.0, math.inf, math.inf, 5, "tight")
    assert limits.tokens("k", limit="burst") == 4.0  # the denial charged nothing
    assert limits.set_shadow("burst", True) == {"burst"}
    assert limits.shadow == {"burst"}
    assert not limits.try_consume("k")  # tight, enforced, is spent


def test_a_shadow_denial_of_a_refused_request_is_not_reported():
    limits = BucketRegistry({"a": Rule(1, 0), "b": Rule(1, 0)}, shadow={"b"}, clock=ManualClock())
    assert limits.consume("k") == Decision(True, 0.0, 0.0, math.inf, 1, "a")
    assert limits.consume("k").shadow_denied == ()


def test_every_limit_in_shadow_admits_everything():
    limits = BucketRegistry({"a": Rule(1, 0)}, shadow={"a"}, clock=ManualClock())
    decisions = [limits.consume("k") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True] * 3
    assert [d.shadow_denied for d in decisions] == [(), ("a",), ("a",)]
    assert limits.peek("k").shadow_denied == ("a",)
    assert limits.set_shadow("a", False) == frozenset()
    assert not limits.consume("k")


def test_peek_and_the_awaitable_forms_see_the_shadow():
    limits = watched()
    for _ in range(5):
        limits.consume("k")
    assert limits.peek("k").shadow_denied == ("tight",)
    assert asyncio.run(limits.aconsume("k")).shadow_denied == ("tight",)
    assert asyncio.run(limits.apeek("k")).shadow_denied == ("tight",)
    assert asyncio.run(limits.atry_consume("k"))
    assert limits.tokens("k", limit="burst") == 3.0


def test_without_shadow_the_decision_has_none():
    limits = BucketRegistry({"a": Rule(1, 0), "b": Rule(2, 0)}, clock=ManualClock())
    assert limits.shadow == frozenset()
    assert limits.consume("k").shadow_denied == ()
    one = BucketRegistry(Rule(1, 0))
    assert one.shadow == frozenset()
    assert one.consume("k").shadow_denied == ()


@pytest.mark.parametrize(
    ("shadow", "error", "match"),
    [
        ({"nope"}, ValueError, "unknown limit 'nope' in 'shadow'"),
        ("burst", TypeError, "'shadow' must be a set of limit names, got 'burst'"),
        (3, TypeError, "'shadow' must be a set of limit names, got 3"),
    ],
)
def test_bad_shadow_names_raise(shadow, error, match):
    with pytest.raises(error, match=match):
        BucketRegistry({"burst": Rule(10, 0), "tight": Rule(5, 0)}, shadow=shadow)


def test_bad_switches_raise_and_change_nothing():
    limits = watched()
    with pytest.raises(ValueError, match="unknown limit 'x'"):
        limits.set_shadow("x", True)
    with pytest.raises(TypeError, match="'shadow' must be a bool, got 1"):
        limits.set_shadow("burst", 1)
    assert limits.shadow == {"tight"}


def test_a_registry_of_one_rule_has_no_shadow_limit():
    with pytest.raises(ValueError, match="a registry of one Rule has none to watch"):
        BucketRegistry(Rule(1, 0), shadow={"default"})
    with pytest.raises(ValueError, match="no limit to put in shadow"):
        BucketRegistry(Rule(1, 0)).set_shadow("default", True)
    named = BucketRegistry({"only": Rule(1, 0)}, shadow=())  # switchable later
    assert named.set_shadow("only", True) == {"only"}


def test_repr_names_the_shadow():
    assert repr(watched()).endswith(", shadow={'tight'})")


def test_switching_from_threads_never_breaks_a_decision():
    """Decisions racing the switch are each decided under one state: admitted <= 10."""
    limits = watched()
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            limits.set_shadow("tight", True)
            limits.set_shadow("tight", False)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        admitted = sum(limits.try_consume("k") for _ in range(200))
    finally:
        stop.set()
        flipper.join()
    assert 5 <= admitted <= 10
    assert limits.tokens("k", limit="burst") == 10 - admitted
