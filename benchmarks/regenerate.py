"""Rebuild every measured number of the documentation from a run of the current code.

One command runs the benchmarks (the peers at the versions pinned in pyproject.toml's ``bench``
dependency group), writes ``docs/data/*.json`` (each stamped with the git commit, the date,
Python and the machine it was measured on), redraws ``docs/img/*.png`` (``docs/figures.py``) and
rewrites the generated blocks of README.md and docs/*.md from docs/data (``docs/tables.py``):

    .venv/bin/pip install -e '.[redis,demo]' --group bench --group docs
    .venv/bin/python benchmarks/regenerate.py              # everything, about 12 minutes
    .venv/bin/python benchmarks/regenerate.py --only core redis   # some steps; the others
                                                            # keep their data
    .venv/bin/python benchmarks/regenerate.py --quick --out /tmp/quick   # about 5 minutes:
                                                            # checks the pipeline only
    .venv/bin/python benchmarks/regenerate.py --tables      # no benchmark: tables and figures

A ``--quick`` run is stamped as such, may not write docs/data, and its data is refused there
by the docs tests: its numbers are too few to publish. Steps run one after the other (never
two at once: they would share the cores they measure).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
DATA = ROOT / "docs" / "data"


class Step(NamedTuple):
    """One benchmark: its script, its arguments (full run, quick run), the data file it makes.

    ``{out}`` in the arguments is the path the script writes its JSON to.
    """

    script: str
    full: List[str]
    quick: List[str]
    data: str


QUICK_OUTBOUND = "tokenbucket-loose,aiolimiter-loose"

STEPS: Dict[str, Step] = {
    "core": Step(
        "core.py",
        ["--rounds", "5", "--calls", "50000", "--json", "{out}"],
        ["--rounds", "1", "--calls", "2000", "--json", "{out}"],
        "benchmark-core.json",
    ),
    "middleware": Step(
        "middleware.py",
        ["--rounds", "15", "--requests", "1000", "--json", "{out}"],
        ["--rounds", "2", "--requests", "50", "--json", "{out}"],
        "benchmark-middleware.json",
    ),
    "instructions": Step(
        "hot_instructions.py",
        ["--peers", "--calls", "2000", "--json", "{out}"],
        ["--peers", "--calls", "100", "--json", "{out}"],
        "instructions-hot.json",
    ),
    "frameworks": Step(
        "framework_instructions.py",
        ["--requests", "300", "--json", "{out}"],
        ["--requests", "20", "--json", "{out}"],
        "instructions-frameworks.json",
    ),
    "redis": Step(
        "redis_bench.py",
        ["--rounds", "3", "--seconds", "0.5", "--json", "{out}"],
        ["--rounds", "1", "--seconds", "0.05", "--json", "{out}"],
        "benchmark-redis.json",
    ),
    "several-limits": Step(
        "several_limits.py",
        ["--rounds", "5", "--calls", "30000", "--json", "{out}"],
        ["--rounds", "1", "--calls", "2000", "--json", "{out}"],
        "benchmark-several-limits.json",
    ),
    "waiters": Step(
        "waiters.py",
        ["--waiters", "100", "1000", "--json", "{out}"],
        ["--waiters", "20", "--json", "{out}"],
        "waiters.json",
    ),
    "flood-cpu": Step(
        "flood.py",
        ["--clock", "cpu", "--json", "{out}"],
        ["--clock", "cpu", "--keys", "20000", "--decisions", "30000", "--json", "{out}"],
        "flood-cpu.json",
    ),
    "flood-wall": Step(
        "flood.py",
        ["--clock", "wall", "--json", "{out}"],
        ["--clock", "wall", "--keys", "20000", "--decisions", "30000", "--json", "{out}"],
        "flood-wall.json",
    ),
    "restore-overrides": Step(
        "restore_overrides.py",
        ["--overrides", "10000", "--rounds", "3", "--json", "{out}"],
        ["--overrides", "200", "--rounds", "1", "--json", "{out}"],
        "restore-overrides.json",
    ),
    "delivery-cost": Step(
        "delivery_cost.py",
        ["--chunks", "20", "--size", "250", "--json", "{out}"],
        ["--chunks", "2", "--size", "20", "--json", "{out}"],
        "delivery-cost.json",
    ),
    "demo-latency": Step(
        "demo_latency.py",
        ["--workers", "1", "4", "--requests", "300", "--json", "{out}"],
        ["--workers", "1", "2", "--requests", "20", "--json", "{out}"],
        "demo-latency.json",
    ),
    "shared-rules": Step(
        "shared_rules.py",
        ["--workers", "4", "--interval", "0.5", "--trials", "10", "--json", "{out}"],
        ["--workers", "2", "--interval", "0.2", "--trials", "2", "--json", "{out}"],
        "shared-rules.json",
    ),
    "metrics-burst": Step("metrics_burst.py", ["{out}"], ["{out}"], "metrics-burst.json"),
    "outbound": Step(
        "outbound.py",
        ["--json", "{out}"],
        ["--requests", "40", "--scenarios", QUICK_OUTBOUND, "--json", "{out}"],
        "outbound.json",
    ),
}

#: The peers whose versions a run records (and checks against the bench group's pins).
PEERS = [
    "limits",
    "pyrate-limiter",
    "throttled-py",
    "token-bucket",
    "slowapi",
    "flask-limiter",
    "aiolimiter",
    "redis",
    "starlette",
    "fastapi",
    "flask",
    "django",
]


def pins() -> Dict[str, str]:
    """``name -> version`` for each ``name==version`` of pyproject.toml's bench group."""
    text = (ROOT / "pyproject.toml").read_text()
    group = re.search(r"^bench = \[(.*?)^\]", text, re.M | re.S)
    if group is None:
        raise SystemExit("pyproject.toml has no bench dependency group")
    return {
        _normal(name): version
        for name, version in re.findall(r'"([A-Za-z0-9_.-]+)==([^";]+)"', group.group(1))
    }


def installed(name: str) -> Optional[str]:
    """The installed version of distribution ``name``, or None."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_pins() -> None:
    """Refuse to measure peers at other versions than the pinned ones."""
    wrong = {
        name: (version, installed(name))
        for name, version in pins().items()
        if installed(name) != version
    }
    if wrong:
        listed = ", ".join(
            f"{n} {have or 'missing'} (pinned {want})" for n, (want, have) in wrong.items()
        )
        raise SystemExit(
            f"peers not at their pinned versions: {listed}\n"
            "install them: .venv/bin/pip install -e '.[redis,demo]' --group bench --group docs"
        )


def git(*args: str) -> str:
    """Output of ``git args`` in the repository (empty when git is missing)."""
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def stamp(command: List[str], quick: bool, seconds: float) -> Dict[str, Any]:
    """Where and when a data file was measured."""
    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    # Code changed since the commit makes the numbers those of no commit: say so.
    if git("status", "--porcelain", "--", "src", "benchmarks"):
        commit += " + uncommitted changes"
    return {
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": f"{cpu_model()}, {os.cpu_count() or 1} cores",
        "peers": {name: installed(name) for name in PEERS if installed(name)},
        "redis_server": redis_server_version(),
        "command": "python benchmarks/" + " ".join(command),
        "seconds": round(seconds, 1),
        "quick": quick,
    }


def cpu_model() -> str:
    """The CPU's model name, shortened (``AMD EPYC``, ``Intel(R) Xeon(R) Processor``)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def redis_server_version() -> Optional[str]:
    """``redis-server --version``'s number, or None."""
    executable = shutil.which("redis-server")
    if executable is None:
        return None
    done = subprocess.run([executable, "--version"], capture_output=True, text=True)
    found = re.search(r"v=(\S+)", done.stdout)
    return found.group(1) if found else None


def run_step(name: str, quick: bool, out: Path) -> float:
    """Run benchmark ``name``, stamp its JSON into ``out``; return its seconds."""
    step = STEPS[name]
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / step.data
        arguments = [a.replace("{out}", str(raw)) for a in (step.quick if quick else step.full)]
        shown = [step.script, *(a.replace(str(raw), f"docs/data/{step.data}") for a in arguments)]
        print(f"== {name}: python benchmarks/{' '.join(shown)}", flush=True)
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(BENCH / step.script), *arguments],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        seconds = time.monotonic() - began
        if done.returncode:
            print(done.stdout)
            raise SystemExit(f"{name} failed (exit {done.returncode}); docs/data left as it was")
        document = json.loads(raw.read_text())
    document["measured"] = stamp(shown, quick, seconds)
    target = out / step.data
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"   {seconds:.0f} s, wrote {target}", flush=True)
    return seconds


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps")
    parser.add_argument("--quick", action="store_true", help="tiny runs: a check, not data")
    parser.add_argument("--out", type=Path, default=DATA, help="where the JSON goes (docs/data)")
    parser.add_argument(
        "--tables", action="store_true", help="run no benchmark: redraw figures, rewrite tables"
    )
    args = parser.parse_args(argv)
    if args.quick and args.out.resolve() == DATA.resolve():
        raise SystemExit("--quick data is not for docs/data: give --out DIR")
    began = time.monotonic()
    if not args.tables:
        check_pins()
        args.out.mkdir(parents=True, exist_ok=True)
        for name in args.only or list(STEPS):
            run_step(name, args.quick, args.out)
    if args.out.resolve() == DATA.resolve():
        subprocess.run([sys.executable, str(ROOT / "docs" / "figures.py")], cwd=ROOT, check=True)
        subprocess.run([sys.executable, str(ROOT / "docs" / "tables.py")], cwd=ROOT, check=True)
    else:
        subprocess.run(
            [sys.executable, str(ROOT / "docs" / "tables.py"), "--data", str(args.out), "--render"],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"rendered every generated block from {args.out} (docs left unchanged)")
    print(f"done in {time.monotonic() - began:.0f} s")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":
    main()
