#!/usr/bin/env bash
# The ESC-10 x PiczakCNN protocol study (issue 14): start it, or continue it after a stop, on this
# machine or a new one. Everything heavy lives under STUDY (default /work/study, outside the checkout):
#   STUDY/code   a git worktree of the PINNED commit below (the code every run of the study uses)
#   STUDY/venv   the interpreter with the dependencies (intermix_jax itself is imported from STUDY/code)
#   STUDY/tfds   the prepared dataset; STUDY/runs the workdirs (checkpoints), STUDY/runs/study.log
# Finished runs are copied to results/esc10_protocol/piczakcnn/<strategy>/seed<S>/fold<F>/results.json
# and committed one by one; a rerun skips them, resumes runs whose workdir is still there, and starts
# the others afresh.
#
#   bash results/esc10_protocol/run.sh                    # seed 0: 4 strategies x 5 folds
#   SEEDS=1,2 STRATEGIES=standard,intermix bash results/esc10_protocol/run.sh   # the next block
#   RESULTS=results/esc10_reference_intermix RUNS=/work/study/runs_reference STRATEGIES=intermix \
#     FOLDS=1 EXTRA=mixing.normalize=False,mixing.stop_gradient_interference=True \
#     bash results/esc10_protocol/run.sh     # the reference code's InterMix choices, fold 1, apart
#   PINNED=<commit> CODE=/work/study/code_<name> VARIANT=<name> EXTRA=<overrides> STRATEGIES=<s> \
#     bash results/esc10_protocol/run.sh   # a variant: its own pinned code, folder <strategy>-<name>/
#   kill -TERM <driver pid>                               # stop: each run checkpoints and exits
set -euo pipefail
PINNED="${PINNED:-672d8003b4367ffc1e2c5899834ad74e5c03e437}"   # the study's code (README: Pinned code)
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
STUDY="${STUDY:-/work/study}"
DATA="${ESC10_DIR:-$REPO/../shared/data/esc10}"
SEEDS="${SEEDS:-0}"
STRATEGIES="${STRATEGIES:-standard,intermix,bc,speechmix}"
JOBS="${JOBS:-2}"
FIRST_CPU="${FIRST_CPU:-0}"   # with two drivers side by side: FIRST_CPU=1 JOBS=1 for the second
FOLDS="${FOLDS:-1-5}"
RESULTS="${RESULTS:-results/esc10_protocol}"   # a check with other options: a folder of its own
RUNS="${RUNS:-$STUDY/runs}"
EXTRA="${EXTRA:+,$EXTRA}"                       # more overrides for every run of this invocation
DATA="$(cd "$DATA" && pwd)"   # absolute, as the runs record it
mkdir -p "$STUDY"
CODE="${CODE:-$STUDY/code}"   # one worktree per pinned commit
VARIANT="${VARIANT:-}"
if [ ! -d "$CODE" ]; then
  git -C "$REPO" worktree add --detach "$CODE" "$PINNED"
fi
test "$(git -C "$CODE" rev-parse HEAD)" = "$(git -C "$REPO" rev-parse "$PINNED")" || {
  echo "error: $CODE is not at the pinned commit $PINNED" >&2; exit 1; }
if [ ! -x "$STUDY/venv/bin/python" ]; then
  python3 -m venv "$STUDY/venv"
  "$STUDY/venv/bin/pip" install -q --upgrade pip
  "$STUDY/venv/bin/pip" install -q "$CODE"             # the dependencies of the pinned setup.cfg
  "$STUDY/venv/bin/pip" uninstall -y -q intermix_jax    # ...but the code itself comes from STUDY/code
fi
source "$REPO/launch/env.sh"   # the driver imports intermix_jax (launch/sweep.py): the project's venv
cd "$REPO"
exec "$PY" launch/study.py --code="$CODE" --python="$STUDY/venv/bin/python" --variant="$VARIANT" \
  --dataset=esc10 --backbone=piczakcnn --strategies="$STRATEGIES" --folds="$FOLDS" --seeds="$SEEDS" \
  --root="$RUNS" --results="$RESULTS" \
  --extra="manual_dir=$DATA,data_dir=$STUDY/tfds$EXTRA" --jobs="$JOBS" --first_cpu="$FIRST_CPU" --pin --nice=5 --commit
