#!/usr/bin/env python3
"""Mutation testing of the core: one small change at a time, each run against fast tests.

Each mutant is one change to one target file: a comparison moved or negated (``<`` to ``<=``,
``==`` to ``!=``, ``is`` to ``is not``), ``+`` for ``-``, ``*`` for ``/``, a number moved (an int
``c`` to ``c + 1``, ``0.0`` to ``1.0``, a float of 1e6 or more to ``1e3``, any other to ``c +
1``), a ``not`` or a unary minus dropped, ``and`` for ``or``, ``True`` for ``False``. Python
files are mutated through their syntax tree (``ast``); the Lua script token by token, outside
comments and strings. Indices (``s[5]``, ``state[3]``) and strings are left alone.

Every mutant runs on a copy of ``src/`` in a temporary directory (first on ``PYTHONPATH``, so
the tests import it, Lua script included); the working tree is never written. A mutant is
*killed* when its tests fail, *timeout* when they run past the limit (counted as killed), and
*survived* when they pass. Mutants named in ``mutate_equivalent.txt`` (beside this script)
change no behaviour; they are run all the same and counted apart.

Python mutants run the core's unit tests and the property tests (hypothesis derandomized, 25
examples a property, ``--examples``), the Lua script's the Redis store tests; each run stops at
the first failure, and runs past three times a clean run (``--timeout`` sets it and skips the
clean run) are stopped. All 542 mutants take about 25 minutes with ``--jobs 2``.

Usage (from the repository root, with the project's venv):

    nice -n 19 .venv/bin/python scripts/mutate.py --jobs 2   # every target
    .venv/bin/python scripts/mutate.py --list                # the mutants, not run
    .venv/bin/python scripts/mutate.py --only src/tokenbucket/_core/arith.py:47
    .venv/bin/python scripts/mutate.py --files src/tokenbucket/_core/decision.py --jobs 2

Exit status: 0 when no mutant outside the equivalent list survived, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "src/tokenbucket/"
TARGETS = [
    PACKAGE + name
    for name in (
        "_core/arith.py",
        "_stores/memory/store.py",
        "_stores/memory/adjust.py",
        "_stores/memory/several.py",
        "_stores/memory/layout.py",
        "_stores/memory/sweep.py",
        "_core/decision.py",
        "_registry/limits.py",
        "_stores/redis/lua/bucket.lua",
    )
]
#: The tests a Python target's mutants run (the fast, exact ones first: -x stops at the first
#: failure), and those of the Lua script (Redis only; the cluster variants add nothing).
PYTHON_TESTS = [
    "tests/unit/test_mutants_core.py",
    "tests/unit/test_group_state.py",
    "tests/unit/test_bucket.py",
    "tests/unit/test_limits.py",
    "tests/unit/test_limits_lifecycle.py",
    "tests/unit/test_lifecycle.py",
    "tests/unit/test_core_hardening.py",
    "tests/unit/test_registry.py",
    "tests/unit/test_shadow.py",
    "tests/property/test_model.py",
    "tests/property/test_shadow_model.py",
    "-k",
    "not a_million",  # 2 s of drift; the exact-value tests pin accumulate faster
]
LUA_TESTS = [
    "tests/stores/test_mutants_lua.py",
    "tests/stores/test_store_conformance.py",
    "tests/stores/test_redis_store.py",
    "tests/stores/test_shadow_store.py",
    "tests/unit/test_core_hardening.py::TestClockBehindRedis",
    "-k",
    "not cluster and not processes and not async",
]
PYTEST = ["-x", "-q", "-p", "no:cacheprovider", "-p", "_mutation_profile", "-W", "ignore"]
#: Hypothesis in every run: the same examples every time (derandomized, no example database),
#: and fewer of them than the suite's default profile, so that a mutant takes seconds.
PROFILE = """
from hypothesis import HealthCheck, settings
settings.register_profile(
    "mutation", max_examples={examples}, stateful_step_count=40, deadline=None,
    derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow],
)
"""
EQUIVALENT_FILE = Path(__file__).with_name("mutate_equivalent.txt")


class Mutant(NamedTuple):
    """One change: where, what it reads as, and the file's whole mutated text."""

    path: str  # relative to the repository root
    line: int
    text: str  # "`before` -> `after`", with " #n" when the same change occurs twice on a line
    source: str  # the line as written, stripped (what the equivalent list matches)
    mutated: str


# --- Python --------------------------------------------------------------------------------

_SWAP: Dict[type, Any] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.And: ast.Or,
    ast.Or: ast.And,
}


def moved(value: float) -> float:
    """The value a number constant is moved to."""
    if isinstance(value, float):
        if value == 0.0:
            return 1.0
        if abs(value) >= 1e6:
            return 1e3
    return value + 1


def _skipped(tree: ast.Module) -> Set[int]:
    """Nodes not to mutate: indices, annotations, __slots__, TYPE_CHECKING blocks."""
    skip: Set[int] = set()

    def under(node: Optional[ast.AST]) -> None:
        if node is not None:
            skip.update(id(sub) for sub in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            under(node.slice)
        elif isinstance(node, (ast.AnnAssign, ast.arg)):
            under(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            under(node.returns)
        elif (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING") or (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)
        ):
            under(node)
    return skip


def _variants(node: ast.AST) -> Iterator[ast.AST]:
    """Every one-change variant of ``node`` itself (not of its children)."""
    if isinstance(node, ast.Compare):
        for index, op in enumerate(node.ops):
            if type(op) in _SWAP:
                ops = list(node.ops)
                ops[index] = _SWAP[type(op)]()
                yield ast.Compare(node.left, ops, node.comparators)
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _SWAP:
        if any(
            isinstance(side, ast.Constant) and isinstance(side.value, str)
            for side in (
                getattr(node, "left", None),
                getattr(node, "right", None),
                node.value if isinstance(node, ast.AugAssign) else None,
            )
        ):
            return  # "a" - "b" is no mutant, a TypeError
        if isinstance(node, ast.BinOp):
            yield ast.BinOp(node.left, _SWAP[type(node.op)](), node.right)
        else:
            yield ast.AugAssign(node.target, _SWAP[type(node.op)](), node.value)
    elif isinstance(node, ast.BoolOp):
        yield ast.BoolOp(_SWAP[type(node.op)](), node.values)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        if not isinstance(node.operand, ast.Constant):  # -1.0 is a number: moved, not negated
            yield node.operand
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        yield ast.Constant(not node.value)
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        number: Any = node.value
        yield ast.Constant(moved(number))


def python_mutants(path: str, text: str) -> Iterator[Tuple[int, str, str]]:
    """``(line, description, mutated text)`` of every mutant of a Python file."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line.encode()))
    data = text.encode()
    tree = ast.parse(text, path)
    skip = _skipped(tree)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for found in ast.walk(tree):
        node: Any = found  # an expression or a statement: it has a position
        if id(node) in skip or id(node) in docstrings or not hasattr(node, "end_col_offset"):
            continue
        begin = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset
        before = data[begin:end].decode()
        for variant in _variants(node):
            after = ast.unparse(variant)
            if isinstance(variant, ast.expr) and not isinstance(variant, (ast.Constant, ast.Name)):
                after = "(" + after + ")"
            mutated = (data[:begin] + after.encode() + data[end:]).decode()
            short = " ".join(before.split())
            yield node.lineno, f"`{short}` -> `{after}`", mutated


# --- Lua -----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"(?P<space>\s+)|(?P<comment>--[^\n]*)|(?P<string>'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\")"
    r"|(?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op><=|>=|==|~=|\.\.|[-+*/<>=#%^(){}\[\],;:.])"
)
_LUA_SWAP = {
    "<": "<=",
    "<=": "<",
    ">": ">=",
    ">=": ">",
    "==": "~=",
    "~=": "==",
    "+": "-",
    "-": "+",
    "*": "/",
    "/": "*",
    "and": "or",
    "or": "and",
    "true": "false",
    "false": "true",
}
#: After these tokens a ``-`` is unary (negation), not a subtraction.
_BEFORE_UNARY = {"(", ",", "=", "{", "[", "return", "and", "or", "not", "then", "do", "else"}


def lua_mutants(text: str) -> Iterator[Tuple[int, str, str]]:
    """``(line, description, mutated text)`` of every mutant of the Lua script."""
    tokens: List[Tuple[str, str, int]] = []  # kind, text, offset
    offset = 0
    while offset < len(text):
        match = _TOKEN.match(text, offset)
        if match is None:
            raise SystemExit(f"cannot tokenize the Lua script at offset {offset}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group(), offset))
        offset = match.end()
    for index, (kind, token, at) in enumerate(tokens):
        previous = tokens[index - 1][1] if index else ""
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if kind == "number":
            if previous == "[" and following == "]":
                continue  # an index
            value = float(token) if any(c in token for c in ".eE") else int(token)
            new = repr(moved(value))
        elif token == "not" or (token == "-" and previous in _BEFORE_UNARY):
            new = ""
        elif token in _LUA_SWAP and kind in ("op", "name"):
            new = _LUA_SWAP[token]
        else:
            continue
        line = text.count("\n", 0, at) + 1
        mutated = text[:at] + new + text[at + len(token) :]
        before = " ".join(t for _, t, _ in tokens[max(index - 1, 0) : index + 2])
        after = " ".join(t for t in (previous, new, following) if t)
        yield line, f"`{before}` -> `{after}`", mutated


# --- Mutants, equivalents, runs ------------------------------------------------------------


def mutants_of(path: str) -> List[Mutant]:
    """Every mutant of the target ``path`` (relative to the root), in line order."""
    text = (ROOT / path).read_text("utf-8")
    found = lua_mutants(text) if path.endswith(".lua") else python_mutants(path, text)
    # A line's text names it; the second and later lines of the same text get " [n]".
    source: List[str] = []
    times: Dict[str, int] = {}
    for written in text.splitlines():
        times[written.strip()] = times.get(written.strip(), 0) + 1
        count = times[written.strip()]
        source.append(written.strip() + (f" [{count}]" if count > 1 else ""))
    seen: Dict[Tuple[int, str], int] = {}
    result = []
    for line, description, mutated in sorted(found, key=lambda m: m[0]):
        count = seen[line, description] = seen.get((line, description), 0) + 1
        if count > 1:
            description += f" #{count}"
        result.append(Mutant(path, line, description, source[line - 1], mutated))
    return result


def equivalents() -> Dict[Tuple[str, str, str], str]:
    """The named equivalent mutants: ``(path, source line, mutation) -> why``.

    Entries are blocks of four lines (path, the source line stripped, the mutation as this
    script prints it, why it is equivalent), separated by blank lines; ``#`` lines are comments.
    Matching the source line, not its number, keeps entries valid when code moves.
    """
    named: Dict[Tuple[str, str, str], str] = {}
    if not EQUIVALENT_FILE.exists():
        return named
    lines = EQUIVALENT_FILE.read_text("utf-8").splitlines()
    block: List[str] = []
    for line in [*lines, ""]:
        if line.startswith("#"):
            continue
        if line.strip():
            block.append(line.strip())
            continue
        if block:
            if len(block) != 4:
                raise SystemExit(f"{EQUIVALENT_FILE.name}: an entry is not 4 lines: {block}")
            named[block[0], block[1], block[2]] = block[3]
            block = []
    return named


class Runner:
    """Runs tests on mutated copies of ``src/``: one copy per job, reused mutant after mutant."""

    def __init__(self, tests: Optional[List[str]], examples: int) -> None:
        self.tests = tests
        self.base = Path(tempfile.mkdtemp(prefix="tokenbucket-mutants-"))
        (self.base / "plugin").mkdir()
        profile = PROFILE.format(examples=examples)
        (self.base / "plugin" / "_mutation_profile.py").write_text(profile, "utf-8")
        self.free: List[Path] = []
        self.live: Dict[int, subprocess.Popen[bytes]] = {}  # running pytest, by pid
        self.lock = threading.Lock()

    def copy(self) -> Path:
        """A fresh copy of src/ (and a directory to run in), for one job."""
        where = Path(tempfile.mkdtemp(dir=self.base))
        shutil.copytree(ROOT / "src", where / "src", ignore=shutil.ignore_patterns("__pycache__"))
        (where / "run").mkdir()
        return where

    def tests_for(self, path: str) -> List[str]:
        """The pytest arguments the mutants of ``path`` run (absolute test paths)."""
        chosen = self.tests or (LUA_TESTS if path.endswith(".lua") else PYTHON_TESTS)
        return [
            str(ROOT / arg) if arg.startswith("tests/") else arg
            for arg in chosen
            if not arg.startswith("tests/") or (ROOT / arg.split("::")[0]).exists()
        ]

    def run(self, path: str, text: Optional[str], limit: Optional[float]) -> Tuple[str, float]:
        """Run the tests of ``path`` with its text replaced by ``text`` (None: unchanged)."""
        with self.lock:
            where = self.free.pop() if self.free else self.copy()
        target = where / path
        original = target.read_text("utf-8")
        try:
            if text is not None:
                target.write_text(text, "utf-8")
            path_ = os.pathsep.join([str(where / "src"), str(self.base / "plugin")])
            env = dict(os.environ, PYTHONPATH=path_, PYTHONDONTWRITEBYTECODE="1")
            env["HYPOTHESIS_PROFILE"] = "mutation"  # registered by the plugin, loaded by conftest
            command = [sys.executable, "-m", "pytest", *PYTEST, *self.tests_for(path)]
            began = time.monotonic()
            process = subprocess.Popen(
                command,
                cwd=where / "run",
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.live[process.pid] = process
            try:
                code = process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # pytest and the redis-server it started
                process.wait()
                return "timeout", time.monotonic() - began
            finally:
                self.live.pop(process.pid, None)
            return ("survived" if code == 0 else "killed"), time.monotonic() - began
        finally:
            target.write_text(original, "utf-8")
            with self.lock:
                self.free.append(where)

    def close(self) -> None:
        """Stop the runs still going (interrupted), and remove every copy."""
        for pid in list(self.live):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the options, list or run the mutants, print the table and the score."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="+", default=TARGETS, help="target files (from root)")
    parser.add_argument("--tests", nargs="+", help="pytest arguments instead of the defaults")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--only", action="append", default=[], help="FILE:LINE (repeatable)")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds per mutant (default: 3 times a clean run; given, no clean run)",
    )
    parser.add_argument(
        "--examples", type=int, default=25, help="hypothesis examples per property (default 25)"
    )
    options = parser.parse_args(argv)

    files = [
        str(Path(f).resolve().relative_to(ROOT)) if Path(f).is_absolute() else f
        for f in options.files
    ]
    mutants = [m for path in files for m in mutants_of(path)]
    if options.only:
        wanted = {(f, int(n)) for f, _, n in (o.rpartition(":") for o in options.only)}
        mutants = [m for m in mutants if (m.path, m.line) in wanted]
    named = equivalents()
    known = {(m.path, m.source, m.text) for m in mutants_of_all(files)}
    stale = [key for key in named if key[0] in files and key not in known]
    if options.list:
        for m in mutants:
            mark = "  (equivalent)" if (m.path, m.source, m.text) in named else ""
            print(f"{m.path}:{m.line}: {m.text}{mark}")
        print(f"{len(mutants)} mutants")
        return 0

    runner = Runner(options.tests, options.examples)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))  # clean up as for Ctrl-C
    try:
        limits: Dict[str, float] = {}
        clean: Dict[Tuple[str, ...], float] = {}  # one clean run per test selection
        for path in sorted({m.path for m in mutants}):
            tests = tuple(runner.tests_for(path))
            if tests not in clean and options.timeout is None:
                status, took = runner.run(path, None, None)
                if status != "survived":
                    print(f"the tests of {path} fail without any mutant: fix them first")
                    return 2
                clean[tests] = took
                print(f"clean run of the tests of {path}: {took:.1f} s", flush=True)
            limits[path] = options.timeout or max(30.0, 3 * clean[tests])  # no clean run then
        results: List[Tuple[Mutant, str, float]] = []

        def one(m: Mutant) -> Tuple[Mutant, str, float]:
            status, took = runner.run(m.path, m.mutated, limits[m.path])
            print(f"  {m.path}:{m.line}: {m.text}: {status} ({took:.1f} s)", flush=True)
            return m, status, took

        began = time.monotonic()
        pool = ThreadPoolExecutor(max(1, options.jobs))
        try:
            results = list(pool.map(one, mutants))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        elapsed = time.monotonic() - began
    finally:
        runner.close()
    return report(results, named, stale, elapsed)


def mutants_of_all(files: Sequence[str]) -> List[Mutant]:
    """Every mutant of ``files`` (to find equivalent entries that match nothing any more)."""
    return [m for path in files for m in mutants_of(path)]


def report(
    results: List[Tuple[Mutant, str, float]],
    named: Dict[Tuple[str, str, str], str],
    stale: List[Tuple[str, str, str]],
    elapsed: float,
) -> int:
    """Print the table and the score; return the exit status."""
    print(f"\n{'file:line':34} {'status':10} mutation")
    counts = {"killed": 0, "timeout": 0, "survived": 0, "equivalent": 0}
    unexpected = []
    for m, status, _ in results:
        equivalent = (m.path, m.source, m.text) in named
        if equivalent and status == "survived":
            shown = "equivalent"
        elif equivalent:
            shown = status + " (listed as equivalent!)"
            unexpected.append(m)
        else:
            shown = status
        counts["equivalent" if shown == "equivalent" else status] += 1
        print(f"{m.path.replace(PACKAGE, '') + ':' + str(m.line):34} {shown:10} {m.text}")
    total = len(results)
    dead = counts["killed"] + counts["timeout"]
    scored = total - counts["equivalent"]
    print(
        f"\n{total} mutants: {counts['killed']} killed, {counts['timeout']} timed out, "
        f"{counts['equivalent']} equivalent (named), {counts['survived']} survived; "
        f"score {dead}/{scored} = {100 * dead / scored if scored else 100:.1f}% "
        f"of the non-equivalent ({elapsed / 60:.1f} min)"
    )
    for m in unexpected:
        print(f"listed as equivalent but killed: {m.path}:{m.line} {m.text}")
    for path, source, text in stale:
        print(f"listed as equivalent but no such mutant any more: {path}: {source!r} {text}")
    return 0 if counts["survived"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
