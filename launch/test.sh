#!/usr/bin/env bash
# Runs the whole test suite (creating the environment first if needed).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$_root"
exec "$PY" -m pytest -q "$@"
