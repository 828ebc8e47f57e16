"""Paper table 1, row EnvNet-v2: strategy x dataset cells (docs/method.md §6).

One cell, one fold (dataset esc50 | esc10 | urbansound8k; strategy standard | bc | speechmix |
intermix; fold 1..5, 1..10 on UrbanSound8K):

    python -m intermix_jax.main \
        --config=configs/table1/envnetv2.py:dataset=esc10,strategy=intermix,fold=1,seed=0 \
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

Expected result (paper, docs/method.md §6; cross-validated error %, last epoch; ESC-50/ESC-10/US8K):
  standard  25.6 / 14.2 / 30.9
  BC        18.2 / 10.6 / 23.4
  SpeechMix 16.2 / 8.5 / 21.6
  InterMix  15.8 / 8.2 / 21.4
"""
from intermix_jax import config_lib


def get_config(arg=None):
  """ESC-50 by default; `dataset=esc10` or `dataset=urbansound8k` after the colon."""
  return config_lib.experiment(arg, backbone='envnetv2')
