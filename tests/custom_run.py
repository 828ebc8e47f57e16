"""A tiny user dataset (class folders of mixed formats) and one tiny workdir trained on it by the
real command line; shared by tests/test_custom_data.py and tests/test_predict.py (made once per
pytest session, whichever test asks first).
"""
import json
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
# Class name -> tone frequency (Hz). Names: any string, here with a space and mixed case.
CLASSES = {'Low hum': 220.0, 'beep': 1000.0, 'whistle': 2600.0}
FILES_PER_CLASS = 10
# (native rate, channels, extension) cycled over the files of a class.
FORMATS = ((8000, 1, 'wav'), (22050, 2, 'flac'), (44100, 1, 'ogg'), (48000, 2, 'wav'),
           (16000, 1, 'flac'))
SECONDS = 0.4
TINY = ('backbone=envnet,strategy=intermix,model.width=0.25,model.fc_units=16,batch_size=8,'
        'steps_per_epoch=1,num_epochs=1,num_eval_crops=3,eval_batch_size=4,eval_every_epochs=1')

_CACHE = {}


def tone(freq, seconds, rate, channels, seed):
  rng = np.random.default_rng(seed)
  t = np.arange(int(round(seconds * rate))) / rate
  x = 0.4 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.28)) + 0.01 * rng.standard_normal(t.size)
  return np.stack([x * (0.5 + 0.5 * c) for c in range(channels)], 1).astype(np.float32)


def write_class_folders(root) -> dict:
  """Writes root/<class>/<file>; returns {relative filename: class name}."""
  written = {}
  for c, (name, freq) in enumerate(CLASSES.items()):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(FILES_PER_CLASS):
      rate, channels, ext = FORMATS[i % len(FORMATS)]
      rel = f'{name}/clip{i:02d}.{ext}'
      sf.write(os.path.join(root, rel), tone(freq, SECONDS, rate, channels, 100 * c + i), rate)
      written[rel] = name
  return written


def tiny_run(tmp_path_factory) -> dict:
  """{'audio_dir', 'data_dir', 'workdir', 'command', 'returncode', 'stderr'} of one CLI run:
  `python -m intermix_jax.main --config=configs/custom.py:audio_dir=...,<TINY> --workdir=...`."""
  base = str(tmp_path_factory.getbasetemp())
  if base in _CACHE:
    return _CACHE[base]
  top = tmp_path_factory.mktemp('custom_run')
  audio_dir, data_dir, workdir = (str(top / d) for d in ('my sounds', 'tfds', 'workdir'))
  write_class_folders(audio_dir)
  command = [PYTHON, '-m', 'intermix_jax.main',
             f'--config=configs/custom.py:audio_dir={audio_dir},{TINY},data_dir={data_dir}',
             f'--workdir={workdir}']
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  run = dict(audio_dir=audio_dir, data_dir=data_dir, workdir=workdir, command=command,
             returncode=proc.returncode, stderr=proc.stderr[-4000:])
  _CACHE[base] = run
  return run


def results(run) -> dict:
  with open(os.path.join(run['workdir'], 'results.json')) as f:
    return json.load(f)
