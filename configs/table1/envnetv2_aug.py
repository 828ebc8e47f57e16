"""Paper table 1, row EnvNet-v2 + strong augmentation: strategy x dataset cells (docs/method.md §6).

One cell, one fold (dataset esc50 | esc10 | urbansound8k; strategy standard | bc | speechmix |
intermix; fold 1..5, 1..10 on UrbanSound8K):

    python -m intermix_jax.main \
        --config=configs/table1/envnetv2_aug.py:dataset=esc10,strategy=intermix,fold=1,seed=0 \
        --workdir=runs/table1/esc10/envnetv2/intermix/seed0/fold1

Every cell of the table (all rows, strategies, datasets and folds; --run runs them here, --index=i
runs one of them in a job array), then the paper-format report:

    python launch/sweep.py --table=1 --root=runs/table1 [--run]
    python -m intermix_jax.report runs/table1

Data: `manual_dir=...` (ESC-50 / UrbanSound8K official layout) or the official download.

EnvNet-v2 (44.1 kHz, T = 66650). Schedule (docs/method.md §5): ESC-50 1000 epochs, LR 0.1, decay
x0.1 at [0.3, 0.6, 0.9], 10 warmup epochs at LR 0.01; ESC-10 600 epochs, LR 0.01, [0.5, 0.75], no
warmup; UrbanSound8K 600 epochs, LR 0.1, [0.3, 0.6, 0.9], warmup 10; mixing strategies train twice
as many epochs (warmup not doubled).
Strong augmentation (docs/method.md §5): random time scale in [0.8, 1.25] before the crop, random
gain +-6 dB per sound after it (`strong_augment=True`).

Expected result (paper, docs/method.md §6; cross-validated error %, last epoch; ESC-50/ESC-10/US8K):
  standard  21.2 / 10.9 / 24.9
  BC        15.1 / 8.6 / 21.7
  SpeechMix 13.1 / 7.1 / 20.8
  InterMix  12.9 / 7.2 / 20.5
"""
from intermix_jax import config_lib


def get_config(arg=None):
  """ESC-50 by default; `dataset=esc10` or `dataset=urbansound8k` after the colon."""
  return config_lib.experiment(arg, backbone='envnetv2', fields={'strong_augment': True})
