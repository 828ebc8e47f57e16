"""Builders and references shared by several test modules (the one place for them: no test_*.py
module imports another). Imported as `import helpers` (tests/ is on sys.path, like fixtures_audio).

  Paths          REPO (the repository root), PYTHON (this interpreter, for subprocesses)
  Configs        repo_config(name, arg): configs/<name>'s get_config(arg);
                 TINY, tiny_config(data_dir, extra): the tiny in-process demo run (EnvNet width
                 0.25 on the synthetic dataset; one compiled step shared by test_train and
                 test_reliability);
                 custom_config(arg): configs/custom.py
  Workdirs       read_json, results(workdir), final_state(workdir): what a run left behind
  Report         section(text, heading): one table of report.md or of the printed report
                 (test_report, test_tables)
  Custom folder  CUSTOM_*, tone, write_class_folders, custom_folder_run: a tiny user dataset of
                 class folders (mixed formats) and one CLI run trained on it, made once per
                 session, shared by the pytest-xdist workers (test_custom_data, test_predict)
  Synthetic      synthetic_workdir: a checkpointed PiczakCNN workdir as train.py leaves it, without
                 training (test_adversarial, test_checkpoint_integrity)
  Checkpoints    trees_equal, checkpoint_data_files, xor_bytes, corrupt_silently: flipped bytes that
                 orbax restores without complaint (test_checkpoint_integrity, test_predict,
                 test_reliability)
  Audio refs     reference_gain, reference_phase_shift: independent float64 numpy/scipy references
                 of intermix_jax.audio (test_audio, test_mixing)
  Tiny model     TinyNet: _mp_common.TinyNet (the one tiny test model) with a convolution, 3
                 classes (test_steps, test_multirun)
"""
import fcntl
import json
import os
import re
import runpy
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import scipy.signal
import soundfile as sf

import _mp_common

# ------------------------------------------------------------------------------------------------
# Paths and configs
# ------------------------------------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def repo_config(name, arg=''):
  """configs/<name> (e.g. 'demo.py') of the repository, get_config(arg): a fresh ConfigDict."""
  return runpy.run_path(os.path.join(REPO, 'configs', name))['get_config'](arg)


# In-process training runs on the synthetic dataset (configs/demo.py, EnvNet): 2 steps per epoch
# of batch 8, 1 epoch (2 for a mixing strategy, which doubles the epochs), evaluated after the last
# epoch only, on 1 crop per clip (evaluation is most of a tiny run's time; several crops per clip:
# test_multirun, test_predict, test_reliability's command-line runs), a checkpoint after every
# epoch. Shared so that the compiled train step is shared too.
TINY = ('model.width=0.25,model.fc_units=32,batch_size=8,steps_per_epoch=2,num_epochs=1,'
        'num_eval_crops=1,eval_batch_size=20,eval_every_epochs=2,checkpoint_every_epochs=1,'
        'log_every_steps=1')


def tiny_config(data_dir, extra=''):
  """configs/demo.py with TINY, then `extra` (comma-separated overrides), data_dir set."""
  c = repo_config('demo.py', TINY + (',' + extra if extra else ''))
  c.data_dir = data_dir
  return c


def custom_config(arg=''):
  """configs/custom.py (a user's folder of audio) with the overrides `arg`."""
  return repo_config('custom.py', arg)


# ------------------------------------------------------------------------------------------------
# What a run leaves in its workdir
# ------------------------------------------------------------------------------------------------
def read_json(path):
  with open(path) as f:
    return json.load(f)


def results(workdir) -> dict:
  """<workdir>/results.json."""
  return read_json(os.path.join(workdir, 'results.json'))


def final_state(workdir):
  """(step, state) of the newest checkpoint in <workdir>/checkpoints, read raw by orbax (no
  target: a nested dict of numpy arrays)."""
  ckpt = os.path.join(workdir, 'checkpoints')
  step = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  return step, ocp.PyTreeCheckpointer().restore(os.path.join(ckpt, str(step), 'state'))


# ------------------------------------------------------------------------------------------------
# The report's markdown
# ------------------------------------------------------------------------------------------------
def section(text: str, heading: str) -> str:
  """The text under the first line `heading` of a report, up to the next heading of any level
  (e.g. '### Last epoch (the headline)': that table alone)."""
  assert heading + '\n' in text, heading
  return re.split(r'\n#{1,3} ', text.split(heading + '\n', 1)[1], maxsplit=1)[0]


# ------------------------------------------------------------------------------------------------
# A tiny user dataset (class folders of mixed formats) and one workdir trained on it by the real
# command line (made once per pytest session, whichever test asks first)
# ------------------------------------------------------------------------------------------------
# Class name -> tone frequency (Hz). Names: any string, here with a space and mixed case.
CUSTOM_CLASSES = {'Low hum': 220.0, 'beep': 1000.0, 'whistle': 2600.0}
CUSTOM_FILES_PER_CLASS = 10
# (native rate in Hz, channels, extension) cycled over the files of a class.
CUSTOM_FORMATS = ((8000, 1, 'wav'), (22050, 2, 'flac'), (44100, 1, 'ogg'), (48000, 2, 'wav'),
                  (16000, 1, 'flac'))
CUSTOM_SECONDS = 0.4  # length of every clip
# The run's overrides of configs/custom.py: EnvNet width 0.25, one step of batch 8 per epoch,
# InterMix (2 epochs), 3 eval crops.
CUSTOM_TINY = ('backbone=envnet,strategy=intermix,model.width=0.25,model.fc_units=16,batch_size=8,'
               'steps_per_epoch=1,num_epochs=1,num_eval_crops=3,eval_batch_size=4,'
               'eval_every_epochs=1')

_CUSTOM_RUNS = {}


def tone(freq, seconds, rate, channels, seed):
  """A sine of `freq` Hz (amplitude 0.4, random phase) plus noise (std 0.01), float32 of shape
  (round(seconds * rate), channels); channel c is scaled by 0.5 + 0.5 c."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(round(seconds * rate))) / rate
  x = 0.4 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.28)) + 0.01 * rng.standard_normal(t.size)
  return np.stack([x * (0.5 + 0.5 * c) for c in range(channels)], 1).astype(np.float32)


def write_class_folders(root) -> dict:
  """Writes root/<class>/clipNN.<ext> (CUSTOM_FILES_PER_CLASS per class of CUSTOM_CLASSES, formats
  cycled from CUSTOM_FORMATS); returns {relative filename: class name}."""
  written = {}
  for c, (name, freq) in enumerate(CUSTOM_CLASSES.items()):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(CUSTOM_FILES_PER_CLASS):
      rate, channels, ext = CUSTOM_FORMATS[i % len(CUSTOM_FORMATS)]
      rel = f'{name}/clip{i:02d}.{ext}'
      sf.write(os.path.join(root, rel), tone(freq, CUSTOM_SECONDS, rate, channels, 100 * c + i),
               rate)
      written[rel] = name
  return written


def custom_folder_run(tmp_path_factory) -> dict:
  """{'audio_dir', 'data_dir', 'workdir', 'command', 'returncode', 'stderr'} of one CLI run:
  `python -m intermix_jax.main --config=configs/custom.py:audio_dir=...,<CUSTOM_TINY>
  --workdir=...`, once per pytest session: under pytest-xdist the workers share it (made by the
  first that asks, under a file lock in the session's common temporary directory; the others wait
  and read its record), so test_custom_data, test_predict and test_dataset_identity never train it
  twice."""
  base = str(tmp_path_factory.getbasetemp())
  if base in _CUSTOM_RUNS:
    return _CUSTOM_RUNS[base]
  # xdist: getbasetemp() is <session root>/popen-gwN; the session root is common to the workers.
  shared = os.path.dirname(base) if os.environ.get('PYTEST_XDIST_WORKER') else base
  top = os.path.join(shared, 'custom_run_shared')
  os.makedirs(top, exist_ok=True)
  record = os.path.join(top, 'run.json')
  with open(os.path.join(top, 'lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if os.path.exists(record):
        run = read_json(record)
      else:
        audio_dir, data_dir, workdir = (os.path.join(top, d) for d in ('my sounds', 'tfds',
                                                                        'workdir'))
        write_class_folders(audio_dir)
        command = [PYTHON, '-m', 'intermix_jax.main',
                   f'--config=configs/custom.py:audio_dir={audio_dir},{CUSTOM_TINY},'
                   f'data_dir={data_dir}', f'--workdir={workdir}']
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        run = dict(audio_dir=audio_dir, data_dir=data_dir, workdir=workdir, command=command,
                   returncode=proc.returncode, stderr=proc.stderr[-4000:])
        with open(record, 'w') as f:
          json.dump(run, f)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  _CUSTOM_RUNS[base] = run
  return run


# ------------------------------------------------------------------------------------------------
# A checkpointed workdir on the synthetic dataset, without training
# ------------------------------------------------------------------------------------------------
def synthetic_workdir(root, synthetic_data_dir, base_config, status='finished'):
  """A workdir as train.py leaves it, at <root>/wd: config.json (PiczakCNN width 0.05, fc 8,
  InterMix, synthetic fold 2, 3 eval crops), the freshly initialised state checkpointed as step 3
  (epoch 1), and results.json (`status`, total_steps 3, the checkpoint's 3-crop test error in %).
  Mutates `base_config`. Returns (workdir, final_error)."""
  # pylint: disable=g-import-not-at-top
  from intermix_jax import checkpoints, data, mixing, models, parallel, steps
  from intermix_jax import workdir as workdir_lib
  from intermix_jax.models import cpu_ops
  # pylint: enable=g-import-not-at-top
  mesh = parallel.make_mesh(1)
  c = base_config
  c.dataset, c.data_dir, c.fold, c.strategy, c.backbone = ('synthetic', synthetic_data_dir, 2,
                                                           'intermix', 'piczakcnn')
  c.model.width, c.model.fc_units, c.eval_batch_size, c.num_eval_crops = 0.05, 8, 32, 3
  wd = os.path.join(root, 'wd')
  workdir_lib.check_or_store_config(wd, c)
  info = data.dataset_info(c)
  model = models.get_model(c.backbone, info.num_classes, **c.model)
  opt = steps.OptimizerSpec.from_config(c.opt, num_epochs=1, steps_per_epoch=3)
  with cpu_ops.force('plain'):  # lax.conv as written, as in test_adversarial (plain_convolutions)
    state = steps.state_initializer(model, opt, mesh)(jax.random.key(4))
    store = checkpoints.CheckpointStore(os.path.join(wd, 'checkpoints'), 3)
    state = state.replace(step=jnp.asarray(3, jnp.int32))
    store.save(3, state, dict(epoch=1))
    store.close()
    loader = data.make_eval_loader(c, model.sample_rate, model.input_length)
    evaluate = steps.mesh_eval_step(model, mesh)
    correct = sum(int(evaluate(state, {k: b[k] for k in ('x', 'y', 'mask')})['num_correct'])
                  for b in loader.batches())
  final = 100.0 * (1 - correct / loader.num_examples)
  with open(os.path.join(wd, 'results.json'), 'w') as f:
    json.dump(dict(status=status, total_steps=3, final_error=final,
                   method=mixing.method_label(c)), f)
  return wd, final


# ------------------------------------------------------------------------------------------------
# Silently corrupted checkpoints
# ------------------------------------------------------------------------------------------------
def trees_equal(a, b):
  """Whether two pytrees have bitwise equal leaves (compared in order of jax.tree.leaves)."""
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_trees_close(got, want, rtol):
  """Each leaf within `rtol` in L2 norm, relative to the leaf's norm plus the whole tree's RMS per
  element times sqrt(its size) (leaves whose gradient is ~0 hold rounding noise only). For what
  different fusions compute in float32 (train-mode BN with a small batch amplifies their
  rounding): elementwise comparisons are too brittle there."""
  want_leaves = [np.asarray(b, np.float64) for b in jax.tree.leaves(want)]
  rms = np.sqrt(sum(np.sum(b ** 2) for b in want_leaves) / sum(b.size for b in want_leaves))
  got_leaves = jax.tree_util.tree_leaves_with_path(got)
  assert len(got_leaves) == len(want_leaves)
  for (path, a), b in zip(got_leaves, want_leaves):
    a = np.asarray(a, np.float64)
    err = np.linalg.norm(a - b)
    assert err <= rtol * (np.linalg.norm(b) + rms * np.sqrt(b.size)), \
        (jax.tree_util.keystr(path), err, np.linalg.norm(b))


def checkpoint_data_files(step_dir):
  """The array data files of a checkpoint's state item (OCDBT `d/` files), largest first."""
  out = []
  for root, _, files in os.walk(os.path.join(step_dir, 'state')):
    if os.path.basename(root) == 'd':
      out += [os.path.join(root, f) for f in files]
  return sorted(out, key=os.path.getsize, reverse=True)


def xor_bytes(path, offsets):
  """XORs the byte at each offset of the file with 0x5A, in place (twice = undone)."""
  with open(path, 'r+b') as f:
    for o in offsets:
      f.seek(o)
      b = f.read(1)
      f.seek(o)
      f.write(bytes([b[0] ^ 0x5A]))


def corrupt_silently(step_dir, saved):
  """XORs 3 bytes of the largest data file of checkpoint `step_dir` so that orbax still restores
  it, but with values other than `saved` (its state as written); returns the file's path. Fails
  the test if it cannot."""
  path = checkpoint_data_files(step_dir)[0]
  size = os.path.getsize(path)
  for frac in (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8):
    offsets = [int(size * frac) + k for k in (0, 7, 19)]
    xor_bytes(path, offsets)
    try:
      raw = ocp.PyTreeCheckpointer().restore(os.path.join(step_dir, 'state'))
      if not trees_equal(raw, saved):
        return path
    except Exception:  # pylint: disable=broad-except
      pass
    xor_bytes(path, offsets)  # undo: this place breaks the read (not silent) or changes nothing
  pytest.fail(f'could not corrupt {path} silently')


# ------------------------------------------------------------------------------------------------
# Independent float64 references of intermix_jax.audio (BC learning's numpy code, rewritten)
# ------------------------------------------------------------------------------------------------
def reference_gain(sound, fs, n_fft):
  """A-weighted gain in dB, float64, one frame at a time (mirrors mil-tokyo/bc_learning_sound).

  sound: 1-D waveform (zero-padded to n_fft if shorter); fs: sample rate (Hz); frames of n_fft
  samples, hop n_fft // 2, Hann window. Returns the max over frames of 10 log10(A-weighted power).
  """
  sound = np.asarray(sound, np.float64)
  if len(sound) < n_fft:
    sound = np.concatenate([sound, np.zeros(n_fft - len(sound))])
  freq = np.linspace(0, fs / 2, n_fft // 2 + 1)
  freq_sq = freq ** 2
  freq_sq[0] = 1.0
  a_db = 2.0 + 20.0 * (2 * np.log10(12194) + 2 * np.log10(freq_sq)
                       - np.log10(freq_sq + 12194 ** 2) - np.log10(freq_sq + 20.6 ** 2)
                       - 0.5 * np.log10(freq_sq + 107.7 ** 2) - 0.5 * np.log10(freq_sq + 737.9 ** 2))
  a_db = np.maximum(a_db, -80.0)
  window = np.hanning(n_fft + 1)[:-1]
  gains = []
  for i in range(0, len(sound) - n_fft + 1, n_fft // 2):
    spec = np.fft.rfft(window * sound[i:i + n_fft])
    gains.append(np.sum(np.abs(spec) ** 2 * 10 ** (a_db / 10)))
  return np.max(10 * np.log10(np.maximum(np.array(gains), 1e-8)))


def reference_phase_shift(x, phi):
  """cos(phi) x - sin(phi) Hilbert(x), with scipy's analytic signal (float64); x: 1-D waveform,
  phi: radians."""
  x = np.asarray(x, np.float64)
  return np.cos(phi) * x - np.sin(phi) * np.imag(scipy.signal.hilbert(x))


class TinyNet(_mp_common.TinyNet):
  """_mp_common.TinyNet (the one tiny test model) with a convolution: (N, T=64) float32 -> (N, 3)
  logits; mix points 0 (the input) and 1 (after conv + BN + ReLU + pool); dropout before the last
  dense layer. For step-level tests (test_steps, test_multirun)."""
  num_classes: int = 3
  conv: int = 4
