"""ESC-10 (the 400 ESC-50 clips with esc10 == True, 10 classes, 5 folds): EnvNet-v2 + InterMix.

Run one fold / all folds:

    python -m intermix_jax.main --config=configs/esc10.py:backbone=envnetv2,strategy=intermix,fold=1 \
        --workdir=runs/esc10/envnetv2/intermix/seed0/fold1
    python -m intermix_jax.main --config=configs/esc10.py:fold=all --workdir=runs/esc10_cv

Data: `manual_dir=/path/to/ESC-50-master` (official ESC-50 layout; on this project's machines a copy
of the ESC-10 clips sits beside the repository: `manual_dir=../shared/data/esc10`).

Expected result (paper, docs/method.md §6; 5-fold error %, last epoch): EnvNet-v2 standard 14.2, BC
10.6, SpeechMix 8.5, InterMix 8.2; with `strong_augment=True` 10.9 / 8.6 / 7.1 / 7.2. EnvNet: 12.8 /
11.3 / 9.3 / 9.1. Defaults (docs/method.md §5): EnvNet-v2 600 epochs (1200 when mixing), LR 0.01,
decay x0.1 at [0.5, 0.75], no warmup; EnvNet 600 epochs, LR 0.01, [0.5, 0.75].
"""
from intermix_jax import config_lib


def get_config(arg=None):
  return config_lib.experiment(arg, dataset='esc10')
