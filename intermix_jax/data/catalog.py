"""From config fields to prepared TFDS builders: `config.dataset` -> builder class and config.

    builder = catalog.prepare(config, sample_rate=16000)  # download_and_prepare on first use
    info = catalog.dataset_info(config)                   # static: needs no preparation

Preparation is cached under `config.data_dir` (TFDS default `~/tensorflow_datasets` when None),
written as array_record so that reading never needs TensorFlow.
"""
import dataclasses
import os

import tensorflow_datasets as tfds

from intermix_jax.data import audio_builder
from intermix_jax.data import custom
from intermix_jax.data import esc50
from intermix_jax.data import layouts
from intermix_jax.data import synthetic
from intermix_jax.data import urbansound8k

FILE_FORMAT = 'array_record'


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset before reading it.

  Attributes:
    name: `config.dataset`.
    num_classes: number of classes C (labels are 0..C-1).
    class_names: C names, index = label.
    num_folds: folds 1..num_folds (config.fold picks the test fold).
  """
  name: str
  num_classes: int
  class_names: tuple[str, ...]
  num_folds: int


# config.dataset -> (builder class, config-name prefix, subset)
_DATASETS = {
    'esc50': (esc50.Esc50, 'esc50_', 'esc50'),
    'esc10': (esc50.Esc50, 'esc10_', 'esc10'),
    'urbansound8k': (urbansound8k.Urbansound8k, '', 'urbansound8k'),
    'synthetic': (synthetic.SyntheticSounds, '', 'synthetic'),
}
# 'custom' (data/custom.py): the user's own folder or csv, described by config fields.
DATASETS = tuple(_DATASETS) + (custom.DATASET,)


def _entry(dataset: str):
  if dataset == custom.DATASET:
    raise ValueError("dataset 'custom' is described by config fields (audio_dir, metadata_csv, "
                     'num_folds): use catalog.prepare(config, rate) or custom.get_builder(config, '
                     'rate)')
  if dataset not in _DATASETS:
    raise ValueError(f'config.dataset is {dataset!r}; the data pipeline knows {DATASETS}')
  return _DATASETS[dataset]


def get_builder(dataset: str, sample_rate: int, *, data_dir=None,
                skip_bad_files: bool = False) -> audio_builder.AudioClipBuilder:
  """The (maybe unprepared) builder of `dataset` at `sample_rate` Hz.

  The rates 8000, 16000, 22050, 44100 are registered configs; any other positive rate gets a
  config built on the fly (named e.g. `sr11025`).
  """
  cls, prefix, subset = _entry(dataset)
  if int(sample_rate) != sample_rate or sample_rate <= 0:
    raise ValueError(f'sample_rate must be a positive integer number of Hz, got {sample_rate!r}')
  name = audio_builder.config_name(sample_rate, prefix)
  # A registered config goes by name (a builder pickled to a grain worker re-finds it by name).
  config = name if name in {c.name for c in cls.BUILDER_CONFIGS} else (
      audio_builder.SampleRateConfig(name=name, sample_rate=int(sample_rate), subset=subset,
                                     description=f'{subset} at {int(sample_rate)} Hz'))
  return cls(data_dir=data_dir, config=config, file_format=FILE_FORMAT,
             skip_bad_files=skip_bad_files)


def prepare_builder(builder: audio_builder.AudioClipBuilder, *, manual_dir=None) -> None:
  """download_and_prepare unless already prepared. Another process finishing first is fine."""
  if builder.is_prepared():
    return
  if not builder.READS_SOURCE_FILES:
    manual_dir = None
  if manual_dir is not None and not os.path.isdir(manual_dir):
    raise FileNotFoundError(f'config.manual_dir is {manual_dir!r}, which is not a directory; '
                            f'it must hold a copy of the official layout of {builder.name}')
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  try:
    builder.download_and_prepare(download_config=download_config, file_format=FILE_FORMAT)
  except OSError:
    # Several processes preparing into one data_dir: the slower one's final rename fails.
    if not builder.data_path.exists():
      raise


def _field(config, name, default=None):
  return config.get(name, default) if hasattr(config, 'get') else getattr(config, name, default)


def prepare(config, sample_rate: int) -> audio_builder.AudioClipBuilder:
  """The prepared builder for `config.dataset` at `sample_rate` (prepared on first use).

  Reads config.dataset, config.data_dir, config.manual_dir, config.skip_bad_files (and for
  'custom' config.audio_dir, metadata_csv, num_folds).
  """
  if config.dataset == custom.DATASET:
    builder = custom.get_builder(config, sample_rate)
    prepare_builder(builder)
    return builder
  builder = get_builder(config.dataset, sample_rate, data_dir=_field(config, 'data_dir'),
                        skip_bad_files=bool(_field(config, 'skip_bad_files', False)))
  prepare_builder(builder, manual_dir=_field(config, 'manual_dir'))
  return builder


def dataset_info(config) -> DatasetInfo:
  """Static facts about `config.dataset` (no preparation, no audio decoded; 'custom' lists
  the user's folder or reads the csv)."""
  if config.dataset == custom.DATASET:
    layout = custom.scan_config(config)
    return DatasetInfo(name=config.dataset, num_classes=len(layout.class_names),
                       class_names=layout.class_names, num_folds=layout.num_folds)
  cls, _, subset = _entry(config.dataset)
  names = {
      'esc50': layouts.ESC50_CLASS_NAMES,
      'esc10': layouts.ESC10_CLASS_NAMES,
      'urbansound8k': layouts.URBANSOUND8K_CLASS_NAMES,
      'synthetic': synthetic.CLASS_NAMES,
  }[subset]
  folds = {esc50.Esc50: layouts.ESC_NUM_FOLDS,
           urbansound8k.Urbansound8k: layouts.URBANSOUND8K_NUM_FOLDS,
           synthetic.SyntheticSounds: synthetic.NUM_FOLDS}[cls]
  return DatasetInfo(name=config.dataset, num_classes=len(names), class_names=tuple(names),
                     num_folds=folds)
