#!/usr/bin/env bash
# Runs the main job locally (creating the environment first if needed).
#   bash launch/local.sh                                   # offline demo: synthetic data, a few minutes on 2 cores
#   bash launch/local.sh --config=configs/esc50.py:backbone=envnetv2,strategy=intermix,fold=1 --workdir=runs/x
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$_root"
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--config=configs/demo.py --workdir=runs/demo)
exec "$PY" -m intermix_jax.main "${args[@]}"
