#!/usr/bin/env bash
# Table 3 on the study of run.sh: one-step FGSM (eps 1e-2, 1e-3, 1e-4, 1e-5) on the last checkpoint of
# every finished fold of standard / BC / SpeechMix / InterMix, the 10-crop protocol, clean beside attacked.
# The JSON files go to results/esc10_study/adversarial/ (the study's workdirs are only read).
#   bash results/esc10_study/attack.sh [ROOT]      # ROOT: the study's root (default runs/esc10_study)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"   # the project venv (launch/env.sh creates it)
ROOT="${1:-runs/esc10_study}"
OUT=results/esc10_study/adversarial
for strategy in standard bc speechmix intermix; do
  for fold in 1 2 3 4 5; do
    wd="$ROOT/esc10/piczakcnn/$strategy/seed0/fold$fold"
    out="$OUT/$strategy/fold$fold/adversarial.json"
    if [ -f "$out" ]; then continue; fi
    if ! grep -qs '"status": "finished"' "$wd/results.json"; then echo "not finished: $wd" >&2; continue; fi
    "$PY" -m intermix_jax.adversarial --workdir="$wd" --out="$out"
  done
done
