#!/usr/bin/env bash
# Install everything the tests need into .venv and run the full check: lint, format, types, tests.
# Usage: ./scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# The Redis store's tests run against a real redis-server; they fail, not skip, without one.
if ! command -v redis-server >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null ||
        echo "could not install redis-server: the Redis tests will fail" >&2
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,redis]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
