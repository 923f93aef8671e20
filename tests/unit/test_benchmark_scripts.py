"""The benchmark scripts, without the packages they compare against, say what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("missing", ["limits", "prometheus_client"])
def test_core_without_its_group_prints_the_install_line(missing):
    """benchmarks/core.py without a contender's package: one line naming it and the bench
    group, exit 1 (it ended in a ModuleNotFoundError traceback). None in sys.modules makes the
    import fail as it does where the package is not installed."""
    runner = (
        f"import sys; sys.modules[{missing!r}] = None; "
        "sys.argv = ['benchmarks/core.py', '--rounds', '1', '--calls', '10']; "
        "exec(compile(open('benchmarks/core.py').read(), 'benchmarks/core.py', 'exec'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", runner], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout == ""
    assert result.stderr.endswith(
        f"needs {missing}, which is not installed: .venv/bin/pip install -e . --group bench\n"
    ), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
