"""Issue 18: what a user meets at the command line is one line, and a newcomer's first hour.

Subprocess tests run the real `python -m intermix_jax.main` (the behaviour is the process's: exit
status, what reaches the console); they share one JAX compilation cache. In-process tests cover
the pieces (the pairing bound, the OSError lines, the summary writer), launch/env.sh's Python check
(a fake python3), setup.cfg, the README snippet and the paths of benchmarks and tests.
"""
import configparser
import errno
import functools
import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import helpers
from intermix_jax import config_checks
from intermix_jax import io_errors
from intermix_jax import main as main_lib
from intermix_jax import summaries
from intermix_jax.data import pairing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny run of the demo config: the in-process runs' sizes (2 epochs of 2 steps for InterMix,
# evaluated after the last), so a command-line run reads their compiled programs from the cache.
TINY = helpers.TINY


def run_main(args, env, timeout=600):
  return subprocess.run([sys.executable, '-m', 'intermix_jax.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *needles, only_line=False):
  """Exit 1, no traceback, exactly one `error:` line holding every needle (returned)."""
  out = proc.stdout + proc.stderr
  assert proc.returncode == 1, f'exit {proc.returncode}:\n{out[-3000:]}'
  assert 'Traceback' not in out and 'FATAL' not in out, out[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1, out[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  if only_line:
    assert proc.stderr.strip() == lines[0], proc.stderr
  return lines[0]


@pytest.fixture
def read_only_dir(tmp_path):
  """An existing directory nobody can write: mode 0555, or for root (who ignores modes) a
  read-only bind mount of itself; skips where neither is possible."""
  d = tmp_path / 'read_only'
  d.mkdir()
  if os.geteuid() != 0:
    d.chmod(0o555)
    yield str(d)
    d.chmod(0o755)
    return
  r = subprocess.run(['mount', '--bind', '-o', 'ro', str(d), str(d)], capture_output=True)
  if r.returncode:
    pytest.skip(f'running as root without a read-only mount: {r.stderr.strip()}')
  try:
    try:
      open(d / 'probe', 'w').close()
      writable = True
    except OSError:
      writable = False
    if writable:
      pytest.skip('the bind mount is not read-only here')
    yield str(d)
  finally:
    subprocess.run(['umount', str(d)], capture_output=True)


# ------------------------------------------------------------------------------------------------
# The `configs/x.py:` override string and other flags: one line, exit 1
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('override,needles', [
    ('foo=1', ("unknown config field 'foo'", 'valid fields: backbone')),
    ('num_epochs=1.5', ("config field 'num_epochs' expects int, got '1.5'",)),
    ('manual_dir=/data/a,b', ("config override 'b' is not key=value",
                              'manual_dir="/data/a,b"', "--config='configs/x.py:")),
])
def test_override_errors_are_one_line(override, needles, env, tmp_path):
  proc = run_main([f'--config=configs/demo.py:{override}', f'--workdir={tmp_path / "w"}'], env)
  line = assert_one_line_error(proc, f'--config=configs/demo.py:{override}', *needles,
                               only_line=True)
  assert not os.path.exists(tmp_path / 'w'), line


@pytest.mark.parametrize('flag,field', [('--config.foo=1', 'foo'),
                                        ('--config.model.foo=1', 'model.foo'),
                                        ('--config.foo.bar=1', 'foo.bar')])
def test_unknown_field_given_as_a_flag_is_the_override_forms_one_line(flag, field, env, tmp_path):
  """`--config.foo=1` (ml_collections raised AttributeError / KeyError: a traceback, exit 1):
  the same one line as `configs/demo.py:foo=1`, naming the flag; nothing created. (The colon
  form's message is read in-process here; that main prints it as the one line:
  test_override_errors_are_one_line[foo=1].)"""
  proc = run_main(['--config=configs/demo.py', flag, f'--workdir={tmp_path / "w"}'], env)
  line = assert_one_line_error(proc, f'error: flag {flag}: ', only_line=True)
  import runpy  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError) as colon:
    runpy.run_path(os.path.join(ROOT, 'configs', 'demo.py'))['get_config'](f'{field}=1')
  assert line.split(f'{flag}: ', 1)[1] == str(colon.value), (line, str(colon.value))
  assert line.split(f'{flag}: ', 1)[1].startswith(f"unknown config field '{field}'; valid fields: ")
  assert not os.path.exists(tmp_path / 'w')


def test_missing_config_file_and_missing_flag_are_one_line(env, tmp_path):
  proc = run_main(['--config=configs/nope.py', f'--workdir={tmp_path / "w"}'], env)
  assert_one_line_error(proc, 'configs/nope.py', 'No such file', only_line=True)
  proc = run_main(['--config=configs/demo.py'], env)
  assert_one_line_error(proc, '--workdir', only_line=True)


def test_quoted_value_keeps_its_commas():
  import runpy  # pylint: disable=g-import-not-at-top
  demo = runpy.run_path(os.path.join(ROOT, 'configs', 'demo.py'))['get_config']
  c = demo('manual_dir="/data/a,b",fold=2,data_dir=\'/x,y\'')
  assert (c.manual_dir, c.fold, c.data_dir) == ('/data/a,b', 2, '/x,y')


# ------------------------------------------------------------------------------------------------
# Workdirs that cannot be written: one line naming the path
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('where', ['workdir', 'parent'])
def test_read_only_workdir_is_one_line_naming_the_path(where, read_only_dir, env):
  workdir = read_only_dir if where == 'workdir' else os.path.join(read_only_dir, 'run')
  proc = run_main([f'--config=configs/demo.py:{TINY}', f'--workdir={workdir}'], env)
  line = assert_one_line_error(proc, workdir)
  assert re.search(r'\((EROFS|EACCES|EPERM)\)', line), line


def test_os_error_lines_name_the_path_and_never_hide_bugs():
  line = io_errors.os_error_line(OSError(errno.ENOSPC, 'No space left on device', '/d/ckpt/7'))
  assert line.startswith('/d/ckpt/7: No space left on device (ENOSPC); the disk is full')
  assert 'read-only' in io_errors.os_error_line(OSError(errno.EROFS, 'Read-only', '/ro/x'))
  assert io_errors.os_error_line(PermissionError(errno.EACCES, 'Permission denied', '/p'))
  assert io_errors.os_error_line(OSError(errno.ENOSPC, 'No space left on device')) is None
  assert io_errors.os_error_line(OSError(errno.EBADF, 'Bad file descriptor', '/x')) is None
  assert io_errors.os_error_line(OSError('no errno')) is None

  class CheckpointWriteError(OSError):  # the project's own OSError types carry their message
    pass
  CheckpointWriteError.__module__ = 'intermix_jax.checkpoints'
  assert io_errors.os_error_line(CheckpointWriteError('cannot save step 7 in /w: disk full')) == (
      'cannot save step 7 in /w: disk full')


def test_summary_writer_fails_in_the_calling_thread_naming_the_file(read_only_dir, monkeypatch):
  thread_errors = []
  monkeypatch.setattr(threading, 'excepthook', thread_errors.append)
  with pytest.raises(OSError) as e:
    w = summaries.SummaryWriter(read_only_dir)  # an existing workdir, resumed read-only
    w.write_scalars(1, {'train/loss': 1.0})
    w.flush()
    w.close()
  assert e.value.filename and os.fsdecode(e.value.filename).startswith(read_only_dir), e.value
  time.sleep(0.2)
  assert not thread_errors  # no writer thread printing a second traceback


def test_summary_writer_writes_what_tensorboard_reads(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  w = summaries.SummaryWriter(str(tmp_path / 'logs'))
  w.write_texts(0, {'config': 'batch_size: 8'})
  w.write_scalars(3, {'train/loss': 1.5})
  w.close()
  acc = event_accumulator.EventAccumulator(str(tmp_path / 'logs'))
  acc.Reload()
  assert [(s.step, s.value) for s in acc.Scalars('train/loss')] == [(3, 1.5)]
  assert summaries.SummaryWriter(str(tmp_path / 'off'), enabled=False).path is None
  assert not os.path.exists(tmp_path / 'off')


# ------------------------------------------------------------------------------------------------
# Disk full while preparing the data: one line naming data_dir, exit 1
# ------------------------------------------------------------------------------------------------
# The array_record writer's own failure (observed on a full tmpfs) and a bare OSError without a
# file name (which main's OSError handler alone cannot name).
ARRAY_RECORD_FULL = ('RuntimeError(\'Failed to finalize writing of split "fold1": write() failed: No '
                     'space left on device; writing {path}; at byte 1044480\')')
BARE_ENOSPC = 'OSError(errno.ENOSPC, "No space left on device")'


def run_main_with_full_disk(raise_expr, args, env):
  """`python -m intermix_jax.main ARGS` whose TFDS example writer writes half a shard, then raises
  `raise_expr` (a Python expression; {path}: the shard's path)."""
  wrapper = (
      'import errno, os, runpy, sys\n'
      'from tensorflow_datasets.core import file_adapters\n'
      'def write_examples(cls, path, iterator):\n'
      '  with open(os.fspath(path), "wb") as f:\n'
      '    f.write(b"x" * 1000)\n'
      f'  raise {raise_expr.replace("{path}", "{os.fspath(path)}")}\n'
      'file_adapters.ArrayRecordFileAdapter.write_examples = classmethod(write_examples)\n'
      'sys.argv[0] = "main"\n'
      'runpy.run_module("intermix_jax.main", run_name="__main__", alter_sys=True)\n')
  wrapper = wrapper.replace('raise RuntimeError(\'', 'raise RuntimeError(f\'')
  return subprocess.run([sys.executable, '-c', wrapper, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('raise_expr', [ARRAY_RECORD_FULL, BARE_ENOSPC],
                         ids=['array_record', 'bare_oserror'])
def test_disk_full_while_preparing_the_data_is_one_line_naming_data_dir(raise_expr, env,
                                                                       tmp_path):
  data_dir, workdir = tmp_path / 'tfds', tmp_path / 'w'
  proc = run_main_with_full_disk(raise_expr, [f'--config=configs/demo.py:{TINY},data_dir={data_dir}',
                                              f'--workdir={workdir}'], env)
  line = assert_one_line_error(proc, f'cannot prepare synthetic_sounds/sr16000 in {data_dir} '
                               '(config.data_dir): no space left on device', 'rerun the same command')
  assert 'free some space there or set config.data_dir to another disk' in line
  # The half-written preparation is gone (its space freed), nothing else is written.
  assert not glob.glob(str(data_dir / 'synthetic_sounds' / '*' / 'incomplete*'))
  assert not glob.glob(str(data_dir / 'synthetic_sounds' / '*' / '1.0.0'))
  assert not os.path.exists(workdir / 'results.json')
  assert not os.path.exists(workdir / 'checkpoints')


def test_a_really_full_disk_while_preparing_the_data_is_one_line(env, tmp_path):
  """A 1 MiB tmpfs as data_dir (needs root): array_record fails in its own writer."""
  mnt = tmp_path / 'small_disk'
  mnt.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mnt)],
                    capture_output=True).returncode != 0:
    pytest.skip('cannot mount a small tmpfs (needs root)')
  try:
    proc = run_main([f'--config=configs/demo.py:{TINY},data_dir={mnt / "tfds"}',
                     f'--workdir={tmp_path / "w"}'], env)
    assert_one_line_error(proc, f'cannot prepare synthetic_sounds/sr16000 in {mnt / "tfds"} '
                          '(config.data_dir): no space left on device (')
    assert not glob.glob(str(mnt / 'tfds' / 'synthetic_sounds' / '*' / 'incomplete*'))
  finally:
    subprocess.run(['umount', '-l', str(mnt)], capture_output=True)


# ------------------------------------------------------------------------------------------------
# Dataset vs batch and pairing: one line before training
# ------------------------------------------------------------------------------------------------
def test_batch_size_larger_than_the_training_clips_is_one_line(env, synthetic_data_dir, tmp_path):
  workdir = tmp_path / 'w'
  proc = run_main([f'--config=configs/demo.py:{TINY},batch_size=400,data_dir={synthetic_data_dir}',
                   f'--workdir={workdir}'], env)
  assert_one_line_error(proc, 'config.batch_size=400', '240 training clips')
  assert not os.path.exists(workdir / 'results.json')


def test_pairing_bound_is_exactly_when_the_repair_succeeds():
  rng = np.random.default_rng(0)
  for _ in range(400):
    classes = int(rng.integers(2, 5))
    n = int(rng.integers(2, 40))
    labels = rng.integers(0, classes, n) if rng.random() < 0.5 else np.where(
        rng.random(n) < rng.uniform(0.4, 0.9), 0, rng.integers(1, classes, n))
    batch = int(rng.choice([2, 4, 6, 8]))
    used = n // batch * batch
    if not used:
      continue
    try:
      pairing.check_pairable(labels, used, [f'c{k}' for k in range(classes)], batch)
      refused = None
    except config_checks.ConfigError as e:
      refused = str(e)
    for seed in range(3):
      order = np.random.default_rng(seed).permutation(n)
      try:
        pairing.pair_different_classes(order, labels, used)
        assert refused is None, (labels.tolist(), used)
      except ValueError:
        assert refused is not None, (labels.tolist(), used)
  with pytest.raises(config_checks.ConfigError, match=r"class 'dog' holds 5 of the 8 training "
                     r'clips; with config.batch_size=8 x 1 steps = 8 clips used .* at most 4'):
    pairing.check_pairable(np.array([0, 0, 0, 0, 0, 1, 1, 1]), 8, ['dog', 'cat'], 8)
  pairing.check_pairable(np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]), 8, ['dog', 'cat'], 8)  # 5 <= 6


def test_unbalanced_classes_refused_before_training_naming_the_class(env, tmp_path):
  audio = tmp_path / 'sounds'
  for name, count, freq in (('dog', 15, 300.0), ('cat', 5, 1200.0)):
    os.makedirs(audio / name)
    t = np.arange(4800) / 16000
    for i in range(count):
      sf.write(str(audio / name / f'{i:02d}.wav'), (0.3 * np.sin(2 * np.pi * freq * t)).astype(
          np.float32), 16000)
  workdir = tmp_path / 'w'
  proc = run_main([f'--config=configs/custom.py:audio_dir={audio},data_dir={tmp_path / "tfds"},'
                   f'backbone=envnet,{TINY}', f'--workdir={workdir}'], env)
  # 5 folds, stratified: the 4 training folds hold 12 dog and 4 cat clips, 2 batches of 8.
  assert_one_line_error(proc, "class 'dog' holds 12 of the 16 training clips", 'at most 8',
                        'strategy=standard')
  assert not os.path.exists(workdir / 'results.json')


def test_csv_whose_names_resolve_nowhere_is_one_line_naming_the_folder(env, tmp_path):
  # Issue 27 item 6: the csv lies away from the audio and audio_dir is not set.
  audio, meta = tmp_path / 'audio', tmp_path / 'meta'
  os.makedirs(audio)
  os.makedirs(meta)
  with open(meta / 'labels.csv', 'w') as f:
    f.write('filename,label,fold\n')
    for i in range(4):
      sf.write(str(audio / f'{i}.wav'), np.zeros(800, np.float32), 8000)
      f.write(f'{i}.wav,{i % 2},{i // 2 + 1}\n')
  proc = run_main([f'--config=configs/custom.py:metadata_csv={meta / "labels.csv"},'
                   f'data_dir={tmp_path / "tfds"},backbone=envnet,{TINY}',
                   f'--workdir={tmp_path / "w"}'], env)
  line = assert_one_line_error(proc, 'none of the 4 files it lists exists',
                               f"the csv's own folder {meta}", f"'0.wav' -> {meta / '0.wav'}",
                               'set audio_dir')
  assert 'skip_bad_files' not in line


# ------------------------------------------------------------------------------------------------
# SIGTERM before the training loop
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_sigterm_during_data_preparation_exits_0_with_one_line(signum, env, tmp_path):
  """SIGTERM: one line, exit 0. Ctrl-C (SIGINT) the same line, then the process ends by SIGINT
  (before: KeyboardInterrupt's traceback)."""
  data_dir, workdir = tmp_path / 'tfds', tmp_path / 'w'
  p = subprocess.Popen([sys.executable, '-m', 'intermix_jax.main',
                        f'--config=configs/demo.py:{TINY},data_dir={data_dir}',
                        f'--workdir={workdir}'], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  t0 = time.time()
  while not glob.glob(str(data_dir / 'synthetic_sounds' / '*' / 'incomplete*')):
    assert p.poll() is None, p.communicate()
    assert time.time() - t0 < 300, 'preparation never started'
    time.sleep(0.01)
  p.send_signal(signum)
  out, err = p.communicate(timeout=120)
  assert p.returncode == (0 if signum == signal.SIGTERM else -signal.SIGINT), (p.returncode,
                                                                             err[-3000:])
  assert 'Traceback' not in out + err, err[-3000:]
  name = 'SIGTERM' if signum == signal.SIGTERM else 'SIGINT (Ctrl-C)'
  assert [line for line in err.splitlines() if 'SIG' in line] == [err.strip().splitlines()[-1]]
  assert err.strip().splitlines()[-1].startswith(f'stopped by {name} outside the training loop')
  assert 'rerun the same command' in err
  # Nothing half-prepared is served, nothing trained. (Where Python swallowed the handler's
  # exception, the preparation completed and the run stopped right after it: next test.)
  finished = glob.glob(str(data_dir / 'synthetic_sounds' / '*' / '1.0.0' / 'dataset_info.json'))
  assert not finished or not glob.glob(str(data_dir / 'synthetic_sounds' / '*' / 'incomplete*'))
  assert not os.path.exists(workdir / 'results.json')


def test_a_sigterm_whose_exception_python_swallowed_still_stops_the_run(
    synthetic_data_dir, tmp_path, monkeypatch):
  """The handler's Terminated raised inside a gc callback (observed: JAX's _xla_gc_callback during
  data preparation) is dropped by Python ("Exception ignored in", then training went on to the
  end). The handler's note survives: main's unraisable hook drops that exception quietly and the
  trainer stops at its next safe point, after its data is prepared, with nothing written."""
  import gc
  import helpers
  from intermix_jax import termination, train
  monkeypatch.setattr(termination, '_NOTED', threading.Event())
  others = []
  monkeypatch.setattr(sys, 'unraisablehook',
                      functools.partial(main_lib._quiet_about_terminated, previous=others.append))

  def callback(phase, info):
    del info
    if phase == 'start':
      gc.callbacks.remove(callback)
      main_lib._on_sigterm(signal.SIGTERM, None)  # pylint: disable=protected-access
  gc.callbacks.append(callback)
  gc.collect()
  assert termination.noted() and not others  # swallowed, noted, nothing printed
  workdir = tmp_path / 'w'
  with pytest.raises(termination.Terminated):
    train.train_and_evaluate(helpers.tiny_config(synthetic_data_dir, 'fold=1'), str(workdir))
  assert not os.path.exists(workdir / 'results.json')
  assert not glob.glob(str(workdir / 'checkpoints' / '*'))


# ------------------------------------------------------------------------------------------------
# The demo's console: the trainer's lines, without the libraries' INFO logs and progress bars
# ------------------------------------------------------------------------------------------------
NOISE = ('Generating splits', 'examples/s', "Unable to initialize backend 'tpu'", 'libtpu',
         'dataset_builder.py', 'dataset_info.py', 'writer.py', 'Downloading and preparing',
         'downloaded and prepared', 'has no dataset_info.json')


@pytest.mark.slow
def test_console_is_quiet_by_default_and_verbose_on_request(env, tmp_path):
  proc = run_main([f'--config=configs/demo.py:{TINY},data_dir={tmp_path / "tfds"}',
                   f'--workdir={tmp_path / "w"}'], env)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-3000:]
  for noise in NOISE[:-1]:
    assert noise not in out, noise
  assert re.search(r'step 4/4 \| loss .* steps/s \| ETA ', out), out
  assert re.search(r'epoch 2/2: test error [0-9.]+%', out), out
  assert len(out.splitlines()) < 15, out
  # --verbose: the same preparation shows TFDS's progress bars and INFO lines (a batch too big
  # stops the run right after preparing).
  proc = run_main([f'--config=configs/demo.py:{TINY},batch_size=400,data_dir={tmp_path / "v"}',
                   f'--workdir={tmp_path / "wv"}', '--verbose'], env)
  out = proc.stdout + proc.stderr
  assert 'Generating splits' in out and 'dataset_builder.py' in out, out[-3000:]
  assert_one_line_error(proc, 'config.batch_size=400')


def test_preparing_prints_nothing_unless_verbose(tmp_path, capfd):
  """Issue 27 item 7: TFDS prints 'Downloading and preparing dataset Unknown size ...' (with
  print, past the log filters) on every first preparation, even of local data; main hides it, as
  its progress bars, unless --verbose (data.quiet_preparation)."""
  from intermix_jax import data  # pylint: disable=g-import-not-at-top
  try:
    data.quiet_preparation()  # what main does without --verbose
    data.prepare_builder(data.get_builder('synthetic', 8000, data_dir=str(tmp_path / 'quiet')))
    quiet = capfd.readouterr()
  finally:
    data.quiet_preparation(False)
  for line in ('Downloading and preparing dataset', 'downloaded and prepared to', 'examples/s'):
    assert line not in quiet.out + quiet.err, quiet
  data.prepare_builder(data.get_builder('synthetic', 8000, data_dir=str(tmp_path / 'verbose')))
  shown = capfd.readouterr()
  assert 'Downloading and preparing dataset' in shown.out, shown  # --verbose: as TFDS prints it


# ------------------------------------------------------------------------------------------------
# A newcomer's first hour: Python version, dependencies, the README snippet, paths
# ------------------------------------------------------------------------------------------------
def test_env_sh_refuses_an_old_python_in_one_line_before_creating_anything(tmp_path):
  fake = tmp_path / 'bin'
  fake.mkdir()
  (fake / 'python3').write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\necho 3.10\n')
  (fake / 'python3').chmod(0o755)
  venv = tmp_path / 'venv'
  e = dict(os.environ, PATH=f'{fake}:{os.environ["PATH"]}', INTERMIX_VENV=str(venv))
  e.pop('INTERMIX_PYTHON', None)
  proc = subprocess.run(['bash', '-c', f'set -euo pipefail; source {ROOT}/launch/env.sh; echo $PY'],
                        env=e, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 1, proc
  assert proc.stdout == '' and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert 'Python >= 3.11' in proc.stderr and 'python3 is 3.10' in proc.stderr
  assert '-m venv' not in (fake / 'calls').read_text() and not venv.exists()


def test_setup_cfg_requires_python_3_11_and_only_used_dependencies():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, 'setup.cfg'))
  assert cfg['options']['python_requires'].strip() == '>=3.11'
  names = lambda text: {re.split(r'[<>=!\[ ]', line.strip())[0].lower()
                        for line in text.splitlines() if line.strip()}
  install = names(cfg['options']['install_requires'])
  test = names(cfg['options.extras_require']['test'])
  package = ''.join(open(f).read() for f in glob.glob(os.path.join(ROOT, 'intermix_jax', '**',
                                                                    '*.py'), recursive=True))
  for dep in ('clu', 'chex'):
    used = re.search(rf'^\s*(import|from) {dep}\b', package, re.M)
    assert (dep in install) == bool(used), dep
  assert 'chex' in test  # the tests use it
  assert 'Python >= 3.11' in open(os.path.join(ROOT, 'README.md')).read()


def readme_snippet():
  """The Python block of README.md's 'InterMix in your own Flax model'."""
  readme = open(os.path.join(ROOT, 'README.md')).read()
  snippet = readme.split('## InterMix in your own Flax model', 1)[1].split('```python', 1)[1]
  return snippet.split('```', 1)[0]


def test_readme_snippet_uses_one_key_per_random_use():
  snippet = readme_snippet()
  plan_key = re.search(r'strategy\.plan\((\w+),', snippet).group(1)
  dropout_key = re.search(r"rngs=\{'dropout': (\w+)\}", snippet).group(1)
  assert plan_key != dropout_key
  assert re.search(rf'{plan_key}, {dropout_key} = jax\.random\.split\(key\)', snippet), snippet
  compile(snippet, 'README.md', 'exec')


@pytest.mark.slow
def test_readme_snippet_runs_as_written():
  """Issue 27 item 7: the snippet defines what it uses (model, sample_rate via get_model) and
  computes a finite loss and gradients for every parameter (about 40 s on 2 busy cores)."""
  import jax  # pylint: disable=g-import-not-at-top
  scope = {}
  exec(compile(readme_snippet(), 'README.md', 'exec'), scope)  # pylint: disable=exec-used
  assert np.isfinite(float(scope['loss'])), scope['loss']
  assert jax.tree.structure(scope['grads']) == jax.tree.structure(
      scope['variables']['params'])
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(scope['grads']))
  assert set(scope['updates']) == {'batch_stats'}


def test_no_machine_specific_paths():
  """Benchmarks, tests, configs, launch scripts and docs find ../shared beside the repository (or
  $INTERMIX_SHARED), never this machine's absolute /work/ paths."""
  git = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True)
  tracked = git.stdout if git.returncode == 0 else '\n'.join(  # not a git checkout: every file
      os.path.relpath(os.path.join(d, f), ROOT) for d, dirs, names in os.walk(ROOT)
      if not any(part.startswith('.') for part in os.path.relpath(d, ROOT).split(os.sep)[:1])
      for f in names)
  skip = ('launch/study.py',  # the record of how the study on this project's machines ran
          'tests/test_cli_errors.py')
  files = [f for f in tracked.split() if f.endswith(('.py', '.sh', '.md', '.cfg'))
           and not f.startswith('results/') and f not in skip]
  found = [f'{f}:{i + 1}' for f in files if os.path.exists(os.path.join(ROOT, f))
           for i, line in enumerate(open(os.path.join(ROOT, f), errors='replace'))
           if '/work/' in line]
  assert not found, found


def test_results_json_write_failure_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
  """Disk full while results.json is rewritten: the previous file stays whole, no temporary file
  is left behind, and the OSError names results.json (so main prints one line)."""
  from intermix_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'results.json')
  workdir_lib.write_json_atomic(path, {'status': 'running', 'step': 3})
  real_fsync = os.fsync

  def full_disk(fd):
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(os, 'fsync', full_disk)
  with pytest.raises(OSError) as e:
    workdir_lib.write_json_atomic(path, {'status': 'finished', 'step': 9})
  monkeypatch.setattr(os, 'fsync', real_fsync)
  assert e.value.filename == path and e.value.errno == errno.ENOSPC
  assert io_errors.os_error_line(e.value).startswith(f'{path}: No space left on device')
  with open(path) as f:
    assert json.load(f) == {'status': 'running', 'step': 3}
  assert os.listdir(tmp_path) == ['results.json']
