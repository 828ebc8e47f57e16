#!/usr/bin/env bash
# Runs the whole test suite (creating the environment first if needed), in INTERMIX_TEST_WORKERS
# pytest-xdist processes (default 2; 0 runs in this process), each test file whole in one of them
# (--dist loadfile: a file's module fixtures are built once), the heaviest files first
# (tests/conftest.py HEAVY_FIRST).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$_root"
workers="${INTERMIX_TEST_WORKERS:-2}"
if [[ "$workers" == 0 ]]; then exec "$PY" -m pytest -q "$@"; fi
exec "$PY" -m pytest -q -n "$workers" --dist loadfile "$@"
