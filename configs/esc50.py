"""ESC-50 (2000 clips, 50 classes, 5 folds): EnvNet-v2 + InterMix by default.

Run one fold (test fold 1, train on 2-5):

    python -m intermix_jax.main --config=configs/esc50.py:backbone=envnetv2,strategy=intermix,fold=1 \
        --workdir=runs/esc50/envnetv2/intermix/seed0/fold1

Full 5-fold cross-validation into workdir/fold_k: `...:fold=all`. Other strategies: standard, mixup,
bc, speechmix. Other backbones: envnet, m18, soundnet5, piczakcnn (the docs/method.md §5 row of the
backbone is applied when it is given here, after the colon).

Data: a local copy of the official layout (`manual_dir=/path/ESC-50-master` with audio/*.wav and
meta/esc50.csv) or the official download when online.

Expected result (paper, docs/method.md §6; 5-fold error %, last epoch): EnvNet-v2 standard 25.6, BC
18.2, SpeechMix 16.2, InterMix 15.8; with `strong_augment=True` 21.2 / 15.1 / 13.1 / 12.9. EnvNet:
29.2 / 24.1 / 22.5 / 22.5. Defaults (docs/method.md §5): EnvNet-v2 1000 epochs (2000 when mixing),
LR 0.1, decay x0.1 at [0.3, 0.6, 0.9] of the epochs, 10 warmup epochs at LR 0.01; Nesterov SGD 0.9,
coupled weight decay 5e-4, batch 64 (32 pairs).
"""
from intermix_jax import config_lib


def get_config(arg=None):
  return config_lib.experiment(arg, dataset='esc50')
