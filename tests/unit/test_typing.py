"""The public API type-checks for users: mypy sees through the decorator's ParamSpec."""

import textwrap

from mypy import api


def test_rate_limit_preserves_signatures(tmp_path):
    """Decorated functions keep their parameter and return types; misuse is an error."""
    source = tmp_path / "user_code.py"
    source.write_text(
        textwrap.dedent(
            """
            from tokenbucket import BucketRegistry, Decision, Rule, rate_limit

            @rate_limit(Rule(1, 1))
            def fetch(page: int, *, lang: str = "en") -> bytes:
                return b""

            @rate_limit(BucketRegistry(Rule(5, 1.0)), key=lambda user: user)
            async def notify(user: str) -> int:
                return 1

            reveal_type(fetch)
            reveal_type(notify)
            fetch("1")
            decision: Decision = BucketRegistry(Rule(1, 1)).consume("k")
            allowed: bool = decision.allowed
            """
        )
    )
    out, _, status = api.run(["--strict", "--no-incremental", "--cache-dir=/dev/null", str(source)])
    out = out.replace("builtins.", "")  # mypy 1.x (the last for Python 3.9) qualifies builtins
    lines = out.splitlines()
    assert 'Revealed type is "def (page: int, *, lang: str =) -> bytes"' in out, out
    assert 'Revealed type is "def (user: str) -> typing.Coroutine[Any, Any, int]"' in out, out
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1, out
    assert 'Argument 1 to "fetch" has incompatible type "str"; expected "int"' in errors[0]
    assert status == 1
