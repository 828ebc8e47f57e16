"""Your own sounds (dataset='custom'): a folder of class sub-folders, or a csv.

    python -m intermix_jax.main \
        --config=configs/custom.py:audio_dir=/path/my_sounds,backbone=envnet,strategy=intermix \
        --workdir=runs/my_sounds/envnet/intermix/fold1
    python -m intermix_jax.main \
        --config=configs/custom.py:metadata_csv=/path/labels.csv,fold=all --workdir=runs/my_cv

Fields of this config besides those of configs/base.py (see docs/own_data_and_models.md):
  audio_dir     the folder of YOUR audio: <audio_dir>/<class>/<files> (.wav .flac .ogg .oga .opus
                .mp3 .aif .aiff; any rate, mono or stereo), or, with metadata_csv, the folder the
                csv's file names are relative to (default: the csv's folder).
  metadata_csv  a csv with columns filename,label[,fold]; labels may be any strings.
  num_folds     folds assigned (stratified, deterministic) when there is no fold column (default 5).
`data_dir` keeps its meaning from base.py: where the prepared TFDS copy is written (default
~/tensorflow_datasets), NOT the folder of your audio. (The issue text wrote `data_dir=DIR` for the
audio folder; that name was already taken, so the audio folder is `audio_dir`.)

Defaults are base.py's (EnvNet-v2, InterMix, the docs/method.md §5 ESC-50 row of the backbone: e.g.
EnvNet 600 epochs, doubled for mixing). For a first try on a CPU, shrink them, e.g.
`:audio_dir=...,backbone=envnet,model.width=0.25,model.fc_units=128,num_epochs=10,batch_size=16`.
"""
import os
import runpy

import ml_collections

from intermix_jax import config_overrides

_base = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'base.py'))


def custom_fields() -> ml_collections.ConfigDict:
  """The fields dataset='custom' adds to the base config (read by intermix_jax/data/custom.py)."""
  return ml_collections.ConfigDict(dict(
      audio_dir=ml_collections.FieldReference(None, field_type=str),
      metadata_csv=ml_collections.FieldReference(None, field_type=str),
      num_folds=5,
  ))


def get_config(arg=None):
  fields = custom_fields()
  own, rest = [], []
  for item in config_overrides.split_top_level(arg or ''):
    key = item.split('=', 1)[0].strip()
    (own if key in fields else rest).append(item)
  try:
    c = _base['get_dataset_config']('custom', ','.join(rest))
  except ValueError as e:
    if 'unknown config field' in str(e):
      raise ValueError(f'{e}; configs/custom.py also has: {", ".join(fields.keys())}') from None
    raise
  config_overrides.apply_overrides(fields, ','.join(own))
  for name in fields.keys():  # typed and nullable like base.py's fields (--config.audio_dir=...)
    ftype = fields.get_ref(name).get_type()
    c[name] = ml_collections.FieldReference(fields[name], field_type=ftype)
  return c
