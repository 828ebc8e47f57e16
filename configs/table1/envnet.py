"""Paper table 1, row EnvNet: strategy x dataset cells (docs/method.md §6).

One cell, one fold (dataset esc50 | esc10 | urbansound8k; strategy standard | bc | speechmix |
intermix; fold 1..5, 1..10 on UrbanSound8K):

    python -m intermix_jax.main \
        --config=configs/table1/envnet.py:dataset=esc10,strategy=intermix,fold=1,seed=0 \
        --workdir=runs/table1/esc10/envnet/intermix/seed0/fold1

Every cell of the table (all rows, strategies, datasets and folds; --run runs them here, --index=i
runs one of them in a job array), then the paper-format report:

    python launch/sweep.py --table=1 --root=runs/table1 [--run]
    python -m intermix_jax.report runs/table1

Data: `manual_dir=...` (ESC-50 / UrbanSound8K official layout) or the official download.

EnvNet (16 kHz, T = 24014). Schedule (docs/method.md §5): 600 epochs (400 on UrbanSound8K), LR 0.01,
decay x0.1 at [0.5, 0.75], no warmup; mixing strategies train twice as many epochs.

Expected result (paper, docs/method.md §6; cross-validated error %, last epoch; ESC-50/ESC-10/US8K):
  standard  29.2 / 12.8 / 33.7
  BC        24.1 / 11.3 / 28.9
  SpeechMix 22.5 / 9.3 / 26.5
  InterMix  22.5 / 9.1 / 26.8
"""
from intermix_jax import config_lib


def get_config(arg=None):
  """ESC-50 by default; `dataset=esc10` or `dataset=urbansound8k` after the colon."""
  return config_lib.experiment(arg, backbone='envnet')
