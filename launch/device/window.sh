#!/usr/bin/env bash
# The one command of an accelerator window (launch/device/window.py; plan and costs:
# launch/device/README.md). On the device machine, from the repository root, in ONE call with
# timeout_s 600 and .wheels and .esc10_ogg carried:
#
#     bash launch/device/window.sh "$OUT"
#     BUDGET_S=300 bash launch/device/window.sh "$OUT"     # a shorter call (a second one, warm)
#     bash launch/device/window.sh --cpu OUT                # HERE: the dry run, tiny sizes
#
# then here: python -m launch.device.window collect FILES_AT
#
# It installs the wheels the machine lacks (accelerator_check's deps stage, 90 s box), then runs
# `python -m launch.device.window run`: the next unfinished items of the plan that fit in what is
# left of BUDGET_S (default 560 s, counted from this script's start; the call's limit is 600 s),
# each finished item packed into OUT/<item>.tgz, OUT/window.json rewritten after every item.
# Environment: PYTHON, SCRATCH (default /tmp/intermix_window: the decoded clips, the prepared
# dataset, the workdirs), BUDGET_S, ITEMS (only these plan items, comma-separated), PACKED (the
# Ogg pack; default .esc10_ogg).
set -uo pipefail
t0=$SECONDS
cmdline="bash launch/device/window.sh $*"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mode=()
if [[ "${1:-}" == "--cpu" ]]; then mode=(--cpu); shift; fi
out="${1:-${OUT:-}}"
if [[ -z "$out" ]]; then echo "usage: bash launch/device/window.sh [--cpu] OUT" >&2; exit 2; fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
scratch="${SCRATCH:-/tmp/intermix_window}"
mkdir -p "$scratch"
budget="${BUDGET_S:-560}"
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"
else py=python3; fi
for v in BUDGET_S ITEMS SCRATCH PACKED; do   # the environment that changed what ran, recorded
  if [[ -n "${!v:-}" ]]; then cmdline="$v=${!v} $cmdline"; fi
done
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # as the rates were measured (accelerator_check.sh)
export PYTHONUNBUFFERED=1
deps=()
if [[ ${#mode[@]} -eq 0 ]]; then
  timeout --signal=INT --kill-after=10 90 "$py" -m launch.device.accelerator_check deps \
    --out "$scratch/deps" --wheels "$root/.wheels" --target "$scratch/pydeps" \
    || echo "window: the deps stage failed (exit $?); trying anyway"
  deps=(--deps "$scratch/deps/deps.json")
fi
if [[ -d "$scratch/pydeps" ]]; then
  export PYTHONPATH="$scratch/pydeps:$root${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi
extra=()
if [[ -n "${ITEMS:-}" ]]; then extra+=(--items "$ITEMS"); fi
if [[ -n "${PACKED:-}" ]]; then extra+=(--packed "$PACKED"); fi
exec "$py" -m launch.device.window run "${mode[@]}" --out "$out" --scratch "$scratch" \
  --budget_s $((budget - (SECONDS - t0))) --command "$cmdline" "${deps[@]}" "${extra[@]}"
