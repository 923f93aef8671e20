"""Regression tests for defects found from outside (issue 9, items 5, 7, 9 and 10)."""

from __future__ import annotations

from fractions import Fraction

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule


class TestEqualRules:
    def test_equal_rules_in_two_registries_keep_the_carry(self):
        """Registries sharing a store with equal, distinct default rules stay exact (1e-9)."""
        store = MemoryStore(clock=ManualClock(1000.0))
        first = BucketRegistry(Rule(200_000, 0), store=store)
        second = BucketRegistry(Rule(200_000, 0), store=store)
        for i in range(10_000):
            assert (first if i % 2 else second).try_consume("k", 10.1)
        exact = 200_000 - 10_000 * Fraction(10.1)
        assert abs(Fraction(first.tokens("k")) - exact) <= Fraction(1, 10**9)
