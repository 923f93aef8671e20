#!/usr/bin/env bash
# Install everything the tests need into .venv and run the full check: lint, format, types, tests.
# Usage: ./scripts/test.sh [pytest arguments]  (with arguments: only those tests, no coverage)
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

# Create the venv (and upgrade its pip) once; later runs reuse it as it is. Debian and Ubuntu
# ship venv's pip bootstrap separately, in python3-venv.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    if ! python3 -m venv --clear .venv; then
        command -v apt-get >/dev/null && apt_install python3-venv && python3 -m venv --clear .venv || {
            echo "python3 -m venv failed: on Debian/Ubuntu, install python3-venv" >&2
            exit 1
        }
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
.venv/bin/python -m pip install --quiet -e '.[test,redis,docs]'

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
