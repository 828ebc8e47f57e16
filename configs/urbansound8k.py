"""UrbanSound8K (8732 clips <= 4 s, 10 classes, 10 predefined folds): EnvNet-v2 + InterMix.

Run one fold / all ten folds:

    python -m intermix_jax.main --config=configs/urbansound8k.py:backbone=envnetv2,strategy=intermix,fold=1 \
        --workdir=runs/urbansound8k/envnetv2/intermix/seed0/fold1
    python -m intermix_jax.main --config=configs/urbansound8k.py:fold=all --workdir=runs/us8k_cv

Data: `manual_dir=/path/UrbanSound8K` (audio/foldN/*.wav + metadata/UrbanSound8K.csv) or the official
download (Zenodo) when online.

Expected result (paper, docs/method.md §6; 10-fold error %, last epoch): EnvNet-v2 standard 30.9, BC
23.4, SpeechMix 21.6, InterMix 21.4; with `strong_augment=True` 24.9 / 21.7 / 20.8 / 20.5. EnvNet:
33.7 / 28.9 / 26.5 / 26.8. Defaults (docs/method.md §5): EnvNet-v2 600 epochs (1200 when mixing), LR
0.1, decay at [0.3, 0.6, 0.9], 10 warmup epochs; EnvNet 400 epochs, LR 0.01, [0.5, 0.75].
"""
from intermix_jax import config_lib


def get_config(arg=None):
  return config_lib.experiment(arg, dataset='urbansound8k')
