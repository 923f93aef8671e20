#!/usr/bin/env bash
# Install everything the tests need into .venv and run the full check: lint, format, types, tests
# with coverage, the docs build; then the tests again, without coverage, on the oldest and the
# newest Python the package supports (3.9 in .venv39, 3.13 in .venv313: pyenv's, or python3.9 and
# python3.13 on PATH; the script stops at once, saying so, if one is missing).
# Usage: ./scripts/test.sh [pytest arguments]  (with arguments: only those tests, in .venv only,
# no coverage)
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
apt_install() {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The Redis store's tests run against a real redis-server, and the Redis Cluster tests create
# their cluster with redis-cli (Debian's redis-tools); they fail, not skip, without them.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server redis-tools ||
        echo "could not install redis-server and redis-tools: the Redis tests will fail" >&2
fi

# The other Pythons the suite runs on, found before the long main run so that a machine without
# them fails at once.
find_python() {
    local candidate
    for candidate in "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/$1".*/bin/python3; do
        if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
    done
    command -v "python$1" || {
        echo "Python $1 not found (pyenv install $1, or put python$1 on PATH): the suite also" \
            "runs on $1" >&2
        return 1
    }
}
if [ "$#" -eq 0 ]; then
    python39=$(find_python 3.9)
    python313=$(find_python 3.13)
fi

# Create a venv (and upgrade its pip) once; later runs reuse it. Debian and Ubuntu ship venv's pip
# bootstrap separately, in python3-venv. The test and docs requirements are dependency groups
# (PEP 735, pyproject.toml), which pip installs from 25.1 on.
install() {  # venv directory, interpreter
    if ! "$1/bin/python" -m pip --version >/dev/null 2>&1; then
        if ! "$2" -m venv --clear "$1"; then
            command -v apt-get >/dev/null && apt_install python3-venv && "$2" -m venv --clear "$1" || {
                echo "$2 -m venv failed: on Debian/Ubuntu, install python3-venv" >&2
                exit 1
            }
        fi
        "$1/bin/python" -m pip install --quiet --upgrade pip
    fi
    "$1/bin/python" -m pip install --quiet 'pip>=25.1'
    "$1/bin/python" -m pip install --quiet -e '.[redis]' --group test --group docs
}
install .venv python3

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
if [ "$#" -eq 0 ]; then
    # The whole suite: with branch coverage of src/, its report, and the floor in pyproject.toml.
    .venv/bin/pytest --cov --cov-report=term
else
    .venv/bin/pytest "$@"
fi
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"

if [ "$#" -eq 0 ]; then
    for pair in ".venv39 $python39" ".venv313 $python313"; do
        read -r venv python <<<"$pair"
        echo "== the tests on $("$python" --version) ($venv), without coverage"
        install "$venv" "$python"
        "$venv/bin/pytest"
    done
fi
