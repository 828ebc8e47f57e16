"""The papers' training protocol, declared once (docs/method.md §5): read by configs and report."""
from __future__ import annotations

# Datasets of the papers' tables, in the tables' column order.
PAPER_DATASETS = ('esc50', 'esc10', 'urbansound8k')

_ENVNET_ROW = dict(num_epochs=600, lr=0.01, schedule=(0.5, 0.75), warmup_epochs=0)
_ENVNETV2_LONG = dict(num_epochs=1000, lr=0.1, schedule=(0.3, 0.6, 0.9), warmup_epochs=10)
_ROWS = {
    'envnet': {'esc50': _ENVNET_ROW, 'esc10': _ENVNET_ROW,
               'urbansound8k': dict(_ENVNET_ROW, num_epochs=400)},
    'envnetv2': {'esc50': _ENVNETV2_LONG, 'esc10': _ENVNET_ROW,
                 'urbansound8k': dict(_ENVNETV2_LONG, num_epochs=600)},
}
_TAKES_ENVNET_ROW = ('m18', 'soundnet5', 'piczakcnn')

# Fields the protocol fixes for every row: config field -> value.
FIXED = {'batch_size': 64, 'model.width': 1.0, 'model.fc_units': None, 'num_eval_crops': 10,
         'steps_per_epoch': None}


# The one native rate (Hz) of every clip of a paper dataset's official release (UrbanSound8K's
# clips come at many rates).
OFFICIAL_SAMPLE_RATES = {'esc50': 44100, 'esc10': 44100}


def upsampled_rates(dataset: str, source_sample_rates, sample_rate) -> list[int]:
  """The source rates (Hz, ascending) of a run's clips that the papers' protocol never upsampled:
  below both `sample_rate` (Hz, the backbone's) and the official rate of `dataset`; [] when unknown.
  `source_sample_rates`: {native rate in Hz (int or its text): clips} of the prepared copy, or None.
  """
  official = OFFICIAL_SAMPLE_RATES.get(dataset)
  if official is None or not source_sample_rates or not sample_rate:
    return []
  return sorted(int(r) for r in source_sample_rates if int(r) < min(int(sample_rate), official))


def row_dataset(dataset: str) -> str:
  """The dataset whose row applies: `dataset` itself for the papers' datasets, else 'esc50'."""
  return dataset if dataset in PAPER_DATASETS else 'esc50'


def optimisation_row(backbone: str, dataset: str) -> dict | None:
  """{num_epochs, lr, schedule (tuple), warmup_epochs} for (backbone, dataset), or None when the
  backbone has no row (an unknown name: the config checks name it)."""
  rows = _ROWS.get('envnet' if backbone in _TAKES_ENVNET_ROW else backbone)
  return None if rows is None else dict(rows[row_dataset(dataset)])
