import math
import pickle
from fractions import Fraction

import pytest

from tokenbucket import Rule


class TestRule:
    def test_fields_and_value_equality(self):
        """A rule exposes its fields and compares and hashes by value."""
        rule = Rule(capacity=10, refill_rate=1.0)
        assert (rule.capacity, rule.refill_rate) == (10, 1.0)
        assert rule == Rule(10, 1.0)
        assert hash(rule) == hash(Rule(10, 1.0))
        assert rule != Rule(10, 2.0)
        assert rule != (10, 1.0)
        assert len({Rule(10, 1), Rule(10, 1.0), Rule(11, 1)}) == 2

    def test_repr_is_valid_python(self):
        """repr(rule) evaluates back to an equal rule."""
        rule = Rule(2.5, 0.25)
        assert repr(rule) == "Rule(capacity=2.5, refill_rate=0.25)"
        assert eval(repr(rule)) == rule

    def test_immutable(self):
        """Assigning or deleting a field raises and leaves the rule unchanged."""
        rule = Rule(10, 1.0)
        with pytest.raises(AttributeError, match=r"rule.replace\(capacity=...\)"):
            rule.capacity = 5  # type: ignore[misc]
        with pytest.raises(AttributeError):
            del rule.refill_rate  # type: ignore[misc]
        assert rule == Rule(10, 1.0)

    def test_replace_changes_only_given_fields(self):
        """replace() copies the rule with the named fields changed."""
        rule = Rule(10, 1.0)
        assert rule.replace(capacity=50) == Rule(50, 1.0)
        assert rule.replace(refill_rate=0) == Rule(10, 0)
        assert rule.replace() == rule

    def test_pickle_round_trip(self):
        """A rule survives pickling."""
        assert pickle.loads(pickle.dumps(Rule(3, 0.5))) == Rule(3, 0.5)

    def test_zero_refill_rate_is_valid(self):
        """refill_rate=0 is a bucket that never refills."""
        assert Rule(1, 0).refill_rate == 0

    def test_other_real_numbers_become_floats(self):
        """Any numbers.Real is accepted; non-ints are stored as floats."""
        rule = Rule(Fraction(5, 2), Fraction(1, 4))
        assert rule == Rule(2.5, 0.25)
        assert type(rule.capacity) is float

    @pytest.mark.parametrize(
        ("capacity", "message"),
        [
            (0, "'capacity' must be a finite number > 0, got 0"),
            (-1, "'capacity' must be a finite number > 0, got -1"),
            (math.nan, "'capacity' must be a finite number > 0, got nan"),
            (math.inf, "'capacity' must be a finite number > 0, got inf"),
            (-math.inf, "'capacity' must be a finite number > 0, got -inf"),
            (10**13, "'capacity' must be at most 1e+12, got 10000000000000"),
        ],
    )
    def test_bad_capacity_value(self, capacity, message):
        """Out-of-range capacities raise ValueError naming the field and value."""
        with pytest.raises(ValueError, match="^" + _escape(message) + "$"):
            Rule(capacity, 1.0)

    @pytest.mark.parametrize(
        ("rate", "message"),
        [
            (-0.5, "'refill_rate' must be a finite number >= 0, got -0.5"),
            (math.nan, "'refill_rate' must be a finite number >= 0, got nan"),
            (math.inf, "'refill_rate' must be a finite number >= 0, got inf"),
            (2e12, "'refill_rate' must be at most 1e+12, got 2000000000000.0"),
        ],
    )
    def test_bad_rate_value(self, rate, message):
        """Out-of-range refill rates raise ValueError naming the field and value."""
        with pytest.raises(ValueError, match="^" + _escape(message) + "$"):
            Rule(10, rate)

    @pytest.mark.parametrize("bad", [True, False, "10", None, b"1", [1], 1j])
    def test_bad_types(self, bad):
        """Non-numbers (and bools) raise TypeError naming the field, value and type."""
        with pytest.raises(TypeError, match=r"^'capacity' must be a number, got .* \(\w+\)$"):
            Rule(bad, 1.0)
        with pytest.raises(TypeError, match=r"^'refill_rate' must be a number, got "):
            Rule(1, bad)


class TestRuleConstructors:
    def test_per(self):
        """Rule.per(n, seconds) is a burst of n refilled at n/seconds."""
        assert Rule.per(100, 60) == Rule(100, 100 / 60)
        assert Rule.per(10, 1, burst=20) == Rule(20, 10.0)

    @pytest.mark.parametrize(
        ("text", "rule"),
        [
            ("10/second", Rule(10, 10.0)),
            ("10/seconds", Rule(10, 10.0)),
            ("100 per minute", Rule(100, 100 / 60)),
            ("5/2hours", Rule(5, 5 / 7200)),
            ("1 per day", Rule(1, 1 / 86400)),
            ("  3 / MINUTE ", Rule(3, 3 / 60)),
            ("2.5/second", Rule(2.5, 2.5)),
        ],
    )
    def test_parse(self, text, rule):
        """Rule.parse reads the limits/slowapi notation."""
        assert Rule.parse(text) == rule

    @pytest.mark.parametrize(
        "text", ["", "ten/second", "10/fortnight", "10", "/second", "0/second"]
    )
    def test_parse_rejects(self, text):
        """Unparseable or zero rates raise ValueError quoting the text."""
        with pytest.raises(ValueError, match="got"):
            Rule.parse(text)

    def test_parse_type(self):
        """Rule.parse needs a str."""
        with pytest.raises(TypeError, match="'text' must be a str, got 10 \\(int\\)"):
            Rule.parse(10)  # type: ignore[arg-type]


def _escape(text: str) -> str:
    import re

    return re.escape(text)


class TestHostileValues:
    @pytest.mark.parametrize("value", [10**400, 2**1024, 10**20])
    def test_huge_integers_are_too_large_not_an_overflow(self, value):
        """Integers beyond 1e12 raise ValueError naming the field, never OverflowError."""
        for field, build in (
            ("capacity", lambda v: Rule(v, 1)),
            ("refill_rate", lambda v: Rule(1, v)),
        ):
            with pytest.raises(ValueError, match=f"^'{field}' must be at most 1e\\+12, got "):
                build(value)

    def test_long_values_are_shortened_in_messages(self):
        """A hostile, huge value is quoted in part, not in full."""
        with pytest.raises(ValueError, match="'capacity' must be a finite number") as info:
            Rule(-(10**400), 1)
        assert len(str(info.value)) < 120
        assert "..." in str(info.value)
