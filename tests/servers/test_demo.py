"""The demo's start-up: what it prints, its memory cap, and its message without the extra.

Serving is tested in test_servers.py (real uvicorn processes); these run its parts in process,
or a short subprocess that exits at once.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from tokenbucket import Rule
from tokenbucket._edges.demo_cli import port_problem
from tokenbucket.demo import (
    DEFAULT_MAX_KEYS,
    MAX_KEYS_VARIABLE,
    app_factory,
    banner,
    build_parser,
    main,
)

ROOT = Path(__file__).resolve().parents[2]
SECRET = "chosen-by-the-operator-3f9a"


def test_banner_never_prints_a_token_from_the_environment() -> None:
    """A token from TOKENBUCKET_ADMIN_TOKEN is a chosen secret: the banner names its source,
    and the curl lines read the shell variable."""
    text = banner("127.0.0.1", 8000, Rule(10, 1.0), SECRET, generated=False)
    assert SECRET not in text
    assert "admin token: from TOKENBUCKET_ADMIN_TOKEN (not shown)" in text
    assert '-H "Authorization: Bearer $TOKENBUCKET_ADMIN_TOKEN"' in text


def test_banner_prints_a_generated_token() -> None:
    text = banner("127.0.0.1", 8000, Rule(10, 1.0), "generated-xyz", generated=True)
    line = "admin token (generated; set TOKENBUCKET_ADMIN_TOKEN to choose it): generated-xyz"
    assert line in text
    assert "-H 'Authorization: Bearer generated-xyz'" in text
    assert f"up to {DEFAULT_MAX_KEYS:,} buckets" in text


def test_max_keys_defaults_and_is_validated(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The in-memory store of the demo (a public endpoint) is capped: 100,000 buckets unless
    --max-keys or TOKENBUCKET_DEMO_MAX_KEYS says otherwise; bad values are usage errors."""
    monkeypatch.setenv("TOKENBUCKET_DEMO_RULE", f"10,1.0,{DEFAULT_MAX_KEYS}")
    monkeypatch.setenv("TOKENBUCKET_ADMIN_TOKEN", SECRET)
    monkeypatch.delenv("TOKENBUCKET_REDIS_URL", raising=False)
    app = app_factory()
    middleware = next(m for m in app.user_middleware if m.kwargs.get("registry") is not None)
    assert middleware.kwargs["registry"].store.max_keys == DEFAULT_MAX_KEYS
    assert build_parser().parse_args(["--max-keys", "500"]).max_keys == 500
    for bad in ("0", "-3", "many", "1.5"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["--max-keys", bad])
        assert exited.value.code == 2
        assert f"--max-keys: must be an int >= 1, got {bad!r}" in capsys.readouterr().err
    monkeypatch.setenv(MAX_KEYS_VARIABLE, "none")
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "TOKENBUCKET_DEMO_MAX_KEYS must be an int >= 1, got 'none'" in capsys.readouterr().err


def test_without_the_demo_extra_it_says_what_to_install() -> None:
    """No fastapi: one line naming the extra, exit code 1, no traceback."""
    blocker = textwrap.dedent(
        """
        import runpy, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("fastapi", "uvicorn"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        sys.argv = ["python -m tokenbucket.demo"]
        runpy.run_module("tokenbucket.demo", run_name="__main__", alter_sys=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "fastapi is not installed" in done.stderr
    assert "pip install 'tokenbucket-ratelimit[demo]'" in done.stderr
    assert "pip install -e '.[demo]'" in done.stderr


def _blocked(modules, code):
    """Run ``code`` in a fresh interpreter where ``modules`` cannot be imported."""
    blocker = textwrap.dedent(
        f"""
        import runpy, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {modules!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_without_prometheus_client_the_demo_says_what_to_install() -> None:
    """Issue 22 item 21: with fastapi and uvicorn but no prometheus_client the demo ended in
    a ModuleNotFoundError traceback instead of its one-line install hint."""
    done = _blocked(
        ("prometheus_client",),
        """
        sys.argv = ["python -m tokenbucket.demo"]
        runpy.run_module("tokenbucket.demo", run_name="__main__", alter_sys=True)
        """,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "prometheus_client is not installed" in done.stderr
    assert "pip install 'tokenbucket-ratelimit[demo]'" in done.stderr


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [("prometheus", "prometheus_client", "prometheus"), ("otel", "opentelemetry", "otel")],
)
def test_the_metrics_adapters_name_their_extra(module, missing, extra) -> None:
    """As tokenbucket.redis does: the ImportError says which extra to install."""
    done = _blocked(
        (missing,),
        f"""
        try:
            import tokenbucket.metrics.{module}
        except ImportError as error:
            print(type(error).__name__, error)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ModuleNotFoundError tokenbucket.metrics." + module)
    assert f"pip install 'tokenbucket-ratelimit[{extra}]'" in done.stdout


def _rules_document(default_capacity, overrides):
    return {
        "version": 1,
        "default": {"capacity": default_capacity, "refill_rate": 0},
        "overrides": overrides,
    }


def test_a_bad_rules_file_exits_2_naming_the_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOKENBUCKET_ADMIN_TOKEN", SECRET)
    bad = tmp_path / "rules.json"
    bad.write_text(
        json.dumps(
            _rules_document(
                5,
                [
                    {"client_id": "a", "capacity": 1, "refill_rate": 0},
                    {"client_id": "b", "capacity": "lots", "refill_rate": 0},
                ],
            )
        )
    )
    for path, expected in (
        (bad, "overrides[1].capacity"),
        (tmp_path / "missing.json", "No such file"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(["--rules", str(path)])
        assert exited.value.code == 2
        assert expected in capsys.readouterr().err
    (tmp_path / "garbage.json").write_text("{nope")
    with pytest.raises(SystemExit):
        main(["--rules", str(tmp_path / "garbage.json")])
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_busy_port_is_one_line_and_no_banner(host: str) -> None:
    """A port another process listens on: one line naming it and --port, exit 1, before the
    banner (which used to be printed in full, followed by uvicorn's error and exit 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tokenbucket.demo", "--host", host, "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"python -m tokenbucket.demo: cannot listen on {host}:{port} (Address already in use); "
        "choose another port with --port\n"
    )


def test_a_free_port_passes_the_check() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_problem("127.0.0.1", port) is None
    assert port_problem("no-such-host.invalid", 8000) is not None  # an unknown name, said so


def test_help_shows_each_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    for shown in [
        "address to listen on (default: 127.0.0.1)",
        "port to listen on (default: 8000)",
        "bucket size: the burst (default: 10)",
        "tokens added per second (default: 1.0)",
        "uvicorn worker processes (default: 1)",
        "(default: $TOKENBUCKET_REDIS_URL)",
        "no limit (allow) (default: fallback)",
        f"(default: ${MAX_KEYS_VARIABLE} or {DEFAULT_MAX_KEYS:,})",
    ]:
        assert shown in text, shown
    assert "(default: None)" not in text
