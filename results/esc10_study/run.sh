#!/usr/bin/env bash
# The real-data study of results/esc10_study/README.md: PiczakCNN on real ESC-10 (../shared/data/esc10),
# standard / BC / SpeechMix / InterMix, the same budget for every strategy (30 epochs of 5 steps of 64 sounds,
# mixing epochs NOT doubled), 5-fold cross-validation, seed 0. About 45-60 min on 2 CPU cores.
#   bash results/esc10_study/run.sh [ROOT]          # ROOT defaults to runs/esc10_study
#   python -m intermix_jax.report ROOT --out results/esc10_study
set -euo pipefail
cd "$(dirname "$0")/../.."
source launch/env.sh
ROOT="${1:-runs/esc10_study}"
ESC10="${ESC10:-$(cd .. && pwd)/shared/data/esc10}"
COMMON="num_epochs=30,double_epochs_for_mixing=False,opt.lr=0.01,opt.schedule=(0.5,0.75),opt.warmup_epochs=0"
COMMON="$COMMON,eval_every_epochs=10,checkpoint_every_epochs=10,manual_dir=$ESC10,data_dir=$ROOT/tfds"
for fold in 1 2 3 4 5; do
  for strategy in standard bc speechmix intermix; do
    wd="$ROOT/esc10/piczakcnn/$strategy/seed0/fold$fold"
    if [ -f "$wd/results.json" ] && grep -q '"status": "finished"' "$wd/results.json"; then continue; fi
    "$PY" -m intermix_jax.main \
      "--config=configs/esc10.py:backbone=piczakcnn,strategy=$strategy,fold=$fold,seed=0,$COMMON" \
      "--workdir=$wd"
  done
done
