"""Paper table 1, row SoundNet5: strategy x dataset cells (docs/method.md §6).

One cell, one fold (dataset esc50 | esc10 | urbansound8k; strategy standard | bc | speechmix |
intermix; fold 1..5, 1..10 on UrbanSound8K):

    python -m intermix_jax.main \
        --config=configs/table1/soundnet5.py:dataset=esc10,strategy=intermix,fold=1,seed=0 \
        --workdir=runs/table1/esc10/soundnet5/intermix/seed0/fold1

Every cell of the table (all rows, strategies, datasets and folds; --run runs them here, --index=i
runs one of them in a job array), then the paper-format report:

    python launch/sweep.py --table=1 --root=runs/table1 [--run]
    python -m intermix_jax.report runs/table1

Data: `manual_dir=...` (ESC-50 / UrbanSound8K official layout) or the official download.

SoundNet5 (22.05 kHz, 5 s input = SoundNet's ESC-50 setting, docs/method.md §4 leaves it to us;
head: global average pool + dense). Schedule: the paper leaves it open (docs/method.md §5);
intermix_jax/protocol.py gives it the EnvNet row: 600 epochs (400 on UrbanSound8K), LR 0.01,
decay x0.1 at [0.5, 0.75], no warmup; doubled for mixing.

Expected result (paper, docs/method.md §6; cross-validated error %, last epoch; ESC-50/ESC-10/US8K):
  standard  33.8 / 16.4 / 33.3
  BC        27.4 / 13.9 / 30.2
  SpeechMix 25.6 / 11.6 / 27.4
  InterMix  25.1 / 10.6 / 26.5
"""
from intermix_jax import config_lib


def get_config(arg=None):
  """ESC-50 by default; `dataset=esc10` or `dataset=urbansound8k` after the colon."""
  return config_lib.experiment(arg, backbone='soundnet5')
