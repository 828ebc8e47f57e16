"""Reliability (issue 6): faults against the real trainer, and what must come out of them.

Tried here (real code paths, tiny EnvNet on the synthetic dataset):
  - kill -9 of `python -m intermix_jax.main` at a random step, then the same command: same final
    parameters (bitwise) and results as an uninterrupted run;
  - SIGTERM: checkpoint saved, exit 0 within seconds, results say 'preempted'; the rerun resumes
    and ends bitwise equal;
  - kill -9 while a checkpoint is being written: the previous checkpoint stays the latest, the
    partial one is ignored and cleaned up, the rerun ends bitwise equal;
  - NaN / Inf in the loss and gradients: stop with a message naming the step and the last good
    (verified) checkpoint (kept); with nan_policy=skip the step is skipped and counted, but a state
    whose every step is non-finite stops the run (before good checkpoints are rotated away);
  - a checkpoint whose data file has flipped bytes (orbax restores it silently) is caught by its
    digest, set aside, and the run resumes from the one before;
  - disk full while checkpointing: one line naming the checkpoint, nothing written before is lost,
    the rerun (after freeing space) resumes;
  - bad config values and a workdir of another config: one-line errors before any heavy work.
The uninterrupted reference and the faulty runs are separate processes sharing a JAX persistent
compilation cache (so only the first one compiles), with identical environments.
"""
import errno
import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import soundfile as sf

import helpers
from intermix_jax import checkpoints, data, train, workdir as workdir_lib

# 4 epochs (2 doubled for mixing) x 3 steps = 12 steps; a checkpoint after every epoch, one
# evaluation (after the last).
SUB = ('model.width=0.25,model.fc_units=32,batch_size=8,steps_per_epoch=3,num_epochs=2,'
       'num_eval_crops=2,eval_batch_size=20,eval_every_epochs=4,checkpoint_every_epochs=1,'
       'log_every_steps=1,strategy=intermix')
TOTAL_STEPS = 12


def command(workdir, data_dir, extra=''):
  arg = SUB + f',data_dir={data_dir}' + (',' + extra if extra else '')
  return [sys.executable, '-m', 'intermix_jax.main', f'--config=configs/demo.py:{arg}',
          f'--workdir={workdir}']


def start(workdir, data_dir, env, log):
  os.makedirs(os.path.dirname(log), exist_ok=True)
  f = open(log, 'a')
  return subprocess.Popen(command(workdir, data_dir), cwd=helpers.REPO, env=env, stdout=f,
                          stderr=subprocess.STDOUT), f


def run_to_end(workdir, data_dir, env, log, timeout=600):
  p, f = start(workdir, data_dir, env, log)
  try:
    rc = p.wait(timeout=timeout)
  finally:
    f.close()
  assert rc == 0, f'exit {rc}; log {log}:\n' + open(log).read()[-3000:]


def steps_logged(log):
  """Highest 'step k/TOTAL' progress line in the log so far."""
  best = 0
  with open(log) as f:
    for line in f:
      if f'/{TOTAL_STEPS} |' in line and ' step ' in line:
        best = max(best, int(line.split(' step ')[1].split('/')[0]))
  return best


def wait_for(cond, timeout, what, p=None, log=None, poll=0.02):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if cond():
      return
    if p is not None and p.poll() is not None:
      raise AssertionError(f'process ended (exit {p.returncode}) before {what}; log:\n' +
                           (open(log).read()[-3000:] if log else ''))
    time.sleep(poll)
  raise AssertionError(f'timed out waiting for {what}')


def comparable(r):
  return {k: v for k, v in r.items() if k not in ('wall_time_s', 'versions', 'workdir', 'message')}


def assert_same_as_reference(workdir, reference):
  ref_step, ref_state = helpers.final_state(reference)
  step, state = helpers.final_state(workdir)
  assert step == ref_step == TOTAL_STEPS
  la, ta = jax.tree.flatten(state)
  lb, tb = jax.tree.flatten(ref_state)
  assert ta == tb
  for a, b in zip(la, lb):
    assert np.array_equal(np.asarray(a), np.asarray(b)), 'parameters differ from the reference'
  assert comparable(helpers.results(workdir)) == comparable(helpers.results(reference))


@pytest.fixture(scope='module')
def reference(tmp_path_factory, synthetic_data_dir, env):
  """The uninterrupted run (a subprocess, which also fills the compilation cache)."""
  d = str(tmp_path_factory.mktemp('reference') / 'run')
  run_to_end(d, synthetic_data_dir, env, d + '.log')
  r = helpers.results(d)
  assert r['status'] == 'finished' and r['step'] == TOTAL_STEPS
  return d


@pytest.mark.slow
def test_kill9_at_a_random_step_then_rerun_matches_uninterrupted(reference, synthetic_data_dir, env,
                                                                  tmp_path):
  """kill -9 at a random step: the killed holder leaves no stale lock (the kernel drops the flock
  with the process) and the rerun resumes, without 'in use by', to the reference's end bitwise."""
  d, log = str(tmp_path / 'run'), str(tmp_path / 'run.log')
  lock = os.path.join(d, workdir_lib.LOCK_FILE)
  kill_at = random.Random().randint(2, TOTAL_STEPS - 1)
  p, f = start(d, synthetic_data_dir, env, log)
  wait_for(lambda: steps_logged(log) >= kill_at, 300, f'step {kill_at}', p, log)
  assert helpers.read_json(lock)['pid'] == p.pid and not lock_is_free(lock)
  p.kill()  # SIGKILL: no handler runs
  assert p.wait(timeout=30) == -signal.SIGKILL
  f.close()
  assert lock_is_free(lock)
  killed_at = steps_logged(log)
  assert helpers.results(d)['status'] == 'running', f'killed at step {killed_at}'
  rerun_log = str(tmp_path / 'rerun.log')
  run_to_end(d, synthetic_data_dir, env, rerun_log)
  text = open(rerun_log).read()
  assert 'in use by' not in text, text[-3000:]
  # The epoch-1 checkpoint is written (synchronously) after the step-3 log line and before step 4
  # starts: a kill seen at step 3 may land before it exists; from step 4 on the rerun must resume.
  assert 'resuming' in text or killed_at < 4, f'rerun did not resume (killed at {killed_at})'
  assert_same_as_reference(d, reference)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_0_within_seconds(reference, synthetic_data_dir, env,
                                                              tmp_path):
  d, log = str(tmp_path / 'run'), str(tmp_path / 'run.log')
  p, f = start(d, synthetic_data_dir, env, log)
  wait_for(lambda: steps_logged(log) >= 7, 300, 'step 7', p, log)  # mid-epoch 3
  t0 = time.time()
  p.send_signal(signal.SIGTERM)
  rc = p.wait(timeout=60)
  elapsed = time.time() - t0
  f.close()
  assert rc == 0, open(log).read()[-3000:]
  assert elapsed < 10, f'took {elapsed:.1f} s to save and exit'
  r = helpers.results(d)
  assert r['status'] == 'preempted' and 'SIGTERM' in r['message']
  step, _ = helpers.final_state(d)
  assert step == r['step'] >= 7
  run_to_end(d, synthetic_data_dir, env, log)
  assert_same_as_reference(d, reference)


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_keeps_the_last_good_one(reference, synthetic_data_dir, env,
                                                               tmp_path):
  d, log = str(tmp_path / 'run'), str(tmp_path / 'run.log')
  ckpt = os.path.join(d, 'checkpoints')

  def partial_checkpoints():
    try:
      return [n for n in os.listdir(ckpt) if 'tmp' in n]
    except FileNotFoundError:
      return []

  caught = None
  for attempt in range(4):  # the write of a tiny checkpoint is short: try a few saves
    p, f = start(d, synthetic_data_dir, env, log)
    good_before = [n for n in os.listdir(ckpt) if n.isdigit()] if os.path.isdir(ckpt) else []
    try:
      wait_for(lambda: bool(partial_checkpoints()) and len(
          [n for n in os.listdir(ckpt) if n.isdigit()]) >= 1, 300, 'a checkpoint write', p, log,
               poll=0.003)
    except AssertionError:
      if p.poll() == 0:  # finished without being caught: start over
        f.close()
        break
      raise
    p.kill()
    p.wait(timeout=30)
    f.close()
    caught = partial_checkpoints()
    if caught:
      break
  assert caught, 'never caught a checkpoint mid-write'
  good = sorted(int(n) for n in os.listdir(ckpt) if n.isdigit())
  assert good, 'no complete checkpoint before the interrupted write'
  # The newest complete checkpoint is readable; the partial one is not taken for a checkpoint.
  step, state = helpers.final_state(d)
  assert step == good[-1] and jax.tree.leaves(state)
  partial_steps = {int(n.split('.')[0]) for n in caught}
  assert step not in partial_steps or step < max(partial_steps)
  run_to_end(d, synthetic_data_dir, env, log)
  assert not partial_checkpoints(), 'partial checkpoint left behind'
  assert_same_as_reference(d, reference)


# ------------------------------------------------------------------------------------------------
# Ctrl-C (SIGINT)
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_ends_by_sigint_and_the_rerun_resumes_bitwise(
    reference, synthetic_data_dir, env, tmp_path):
  """The first Ctrl-C does what SIGTERM does (checkpoint, 'preempted', the rerun resumes bitwise);
  the process then ends by SIGINT, as a shell expects of Ctrl-C (before: KeyboardInterrupt's
  traceback, no checkpoint)."""
  d, log = str(tmp_path / 'run'), str(tmp_path / 'run.log')
  p, f = start(d, synthetic_data_dir, env, log)
  wait_for(lambda: steps_logged(log) >= 7, 300, 'step 7', p, log)  # mid-epoch 3
  t0 = time.time()
  p.send_signal(signal.SIGINT)
  rc = p.wait(timeout=60)
  elapsed = time.time() - t0
  f.close()
  text = open(log).read()
  assert rc == -signal.SIGINT, text[-3000:]
  assert elapsed < 10, f'took {elapsed:.1f} s to save and exit'
  assert 'Traceback' not in text and 'KeyboardInterrupt' not in text, text[-3000:]
  assert 'press Ctrl-C again to stop at once' in text
  r = helpers.results(d)
  assert r['status'] == 'preempted', r['message']
  assert r['message'].startswith(f"SIGINT (Ctrl-C) at step {r['step']}: saved checkpoint "
                                 f"{d}/checkpoints/{r['step']}; rerun the same command"), r['message']
  step, _ = helpers.final_state(d)
  assert step == r['step'] >= 7
  run_to_end(d, synthetic_data_dir, env, log)
  assert_same_as_reference(d, reference)


# The trainer's command line with a checkpoint save that takes 2 minutes once a Ctrl-C came.
SLOW_SAVE_AFTER_CTRL_C = """
import runpy, signal, sys, time
from intermix_jax import records, termination, train
real_save = records.RunRecord.save
def save(self, partial):
  if termination.stop_signal() == signal.SIGINT:
    print('SLOW SAVE', flush=True)
    time.sleep(120)
  return real_save(self, partial)
records.RunRecord.save = save
sys.argv[0] = 'main'
runpy.run_module('intermix_jax.main', run_name='__main__', alter_sys=True)
"""


@pytest.mark.slow
def test_a_second_ctrl_c_ends_the_process_at_once_and_loses_nothing(reference, synthetic_data_dir,
                                                                     env, tmp_path):
  """A second Ctrl-C during the first one's (slow) save ends the process at once, by SIGINT; the
  previous checkpoint and results.json stay valid, and the rerun resumes bitwise."""
  d, log = str(tmp_path / 'run'), str(tmp_path / 'run.log')
  with open(log, 'w') as f:
    p = subprocess.Popen([sys.executable, '-c', SLOW_SAVE_AFTER_CTRL_C] + command(
        d, synthetic_data_dir)[3:], cwd=helpers.REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    wait_for(lambda: steps_logged(log) >= 5, 300, 'step 5', p, log)  # after epoch 1's checkpoint
    p.send_signal(signal.SIGINT)
    wait_for(lambda: 'SLOW SAVE' in open(log).read(), 60, 'the save after Ctrl-C', p, log)
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=60)
  elapsed = time.time() - t0
  assert rc == -signal.SIGINT and elapsed < 3, (rc, elapsed, open(log).read()[-3000:])
  r = helpers.results(d)  # as written after the last epoch (valid JSON)
  assert r['status'] == 'running' and r['step'] == helpers.final_state(d)[0] >= 3
  run_to_end(d, synthetic_data_dir, env, log)
  assert_same_as_reference(d, reference)


# ------------------------------------------------------------------------------------------------
# One training per workdir (workdir.lock)
# ------------------------------------------------------------------------------------------------
# The trainer's command line, waiting after epoch 1 (its checkpoint and results.json written) until
# the file $GATE exists.
GATED_AFTER_EPOCH_1 = """
import os, runpy, sys, time
from intermix_jax import train
real_end_epoch = train._Loop._end_epoch
def end_epoch(self, epoch, term):
  real_end_epoch(self, epoch, term)
  if epoch == 0:
    print('GATED', flush=True)
    while not os.path.exists(os.environ['GATE']):
      time.sleep(0.05)
train._Loop._end_epoch = end_epoch
sys.argv[0] = 'main'
runpy.run_module('intermix_jax.main', run_name='__main__', alter_sys=True)
"""


def start_gated(workdir, data_dir, env, log, gate):
  f = open(log, 'a')
  p = subprocess.Popen([sys.executable, '-c', GATED_AFTER_EPOCH_1] + command(workdir, data_dir)[3:],
                       cwd=helpers.REPO, env=dict(env, GATE=gate), stdout=f,
                       stderr=subprocess.STDOUT)
  wait_for(lambda: 'GATED' in open(log).read(), 300, 'the end of epoch 1', p, log)
  return p, f


def files_of(workdir):
  """{path: (size, mtime)} of every file below `workdir`."""
  out = {}
  for root, _, names in os.walk(workdir):
    for n in names:
      st = os.stat(os.path.join(root, n))
      out[os.path.join(root, n)] = (st.st_size, st.st_mtime_ns)
  return out


def lock_is_free(path):
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False
  finally:
    os.close(fd)


@pytest.mark.slow
def test_a_second_training_in_the_same_workdir_is_refused_naming_the_holder(
    reference, synthetic_data_dir, env, tmp_path):
  """A training holds its workdir: a second one is refused in one line naming the holder (pid,
  host, since when), exit 1, nothing touched; predict reads the workdir meanwhile; the first one
  then finishes bitwise as if alone."""
  d, log, gate = str(tmp_path / 'run'), str(tmp_path / 'run.log'), str(tmp_path / 'gate')
  lock = os.path.join(d, workdir_lib.LOCK_FILE)
  a, f = start_gated(d, synthetic_data_dir, env, log, gate)
  try:
    holder = helpers.read_json(lock)
    assert holder['pid'] == a.pid and holder['host'] == socket.gethostname(), holder
    before = files_of(d)
    b = subprocess.run(command(d, synthetic_data_dir), cwd=helpers.REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    errors = [l for l in b.stderr.splitlines() if l.startswith('error: ')]
    assert b.returncode == 1 and len(errors) == 1 and 'Traceback' not in b.stderr, b.stderr[-3000:]
    assert errors[0].startswith(
        f"error: workdir {d} is in use by another training: pid {a.pid} on host "
        f"{socket.gethostname()} since {holder['since']} (lock {lock}); "), errors[0]
    assert files_of(d) == before  # nothing touched
    wav = str(tmp_path / 'clip.wav')
    sf.write(wav, helpers.tone(440.0, 1.0, 16000, 1, 0), 16000)
    p = subprocess.run([sys.executable, '-m', 'intermix_jax.predict', f'--workdir={d}', wav,
                        '--json'], cwd=helpers.REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out['checkpoint_step'] == 3 and len(out['predictions']) == 1, out
    assert files_of(d) == before
  finally:
    open(gate, 'w').close()
  rc = a.wait(timeout=300)
  f.close()
  assert rc == 0, open(log).read()[-3000:]
  assert_same_as_reference(d, reference)
  assert lock_is_free(lock) and os.path.getsize(lock) == 0  # released, the details cleared


HOLD_LOCK = """
import sys, time
from intermix_jax import workdir
with workdir.lock([sys.argv[1]]):
  print('held', flush=True)
  time.sleep(600)
"""


@pytest.mark.parametrize('arg,held', [('fold=1,seeds=(0,1)', '.'),
                                      ('fold=1,seeds=(0,1)', 'seed_1'),
                                      ('fold=all', 'fold_3'),
                                      ('fold=all,seeds=(0,1)', 'seed_1'),
                                      ('fold=2', '.')])
def test_a_workdir_held_by_another_process_is_refused_before_anything_is_written(
    arg, held, synthetic_data_dir, tmp_path):
  """Another process holds the workdir, or one of the runs' workdirs below it (fold=all, seeds,
  runs in one program): refused naming that workdir and its holder; nothing written but lock
  files."""
  workdir = str(tmp_path / 'run')
  target = os.path.normpath(os.path.join(workdir, held))
  holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, target], cwd=helpers.REPO,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    config = tiny_config(synthetic_data_dir, arg)
    config.stack_runs = 'seeds' in arg
    with pytest.raises(workdir_lib.WorkdirBusyError) as e:
      train.train_and_evaluate(config, workdir)
    msg = str(e.value)
    assert msg.startswith(f'workdir {target} is in use by another training: pid {holder.pid} on '
                          f'host {socket.gethostname()} since '), msg
    assert '\n' not in msg
    written = [os.path.relpath(p, workdir) for p in files_of(workdir)]
    assert all(os.path.basename(p) == workdir_lib.LOCK_FILE for p in written), written
  finally:
    holder.kill()
    holder.wait()


def test_runs_in_one_program_hold_every_workdir_while_training_and_release_them(
    synthetic_data_dir, tmp_path, monkeypatch):
  """seeds=(0,1) in one program: the parent's and both runs' workdirs are held from before the
  first write to the end (re-entrant within the process: no run locks itself out), then free."""
  workdir = str(tmp_path / 'run')
  locks = [os.path.join(workdir, *p, workdir_lib.LOCK_FILE) for p in ((), ('seed_0',), ('seed_1',))]
  seen = []
  real_end_epoch = train._Loop._end_epoch  # pylint: disable=protected-access

  def end_epoch(self, epoch, term):
    seen.append([lock_is_free(p) for p in locks])
    real_end_epoch(self, epoch, term)
  monkeypatch.setattr(train._Loop, '_end_epoch', end_epoch)  # pylint: disable=protected-access
  config = tiny_config(synthetic_data_dir, 'fold=1,seeds=(0,1),strategy=standard')  # 1 epoch
  config.stack_runs, config.stack_method = True, 'unroll'
  assert train.train_and_evaluate(config, workdir)['status'] == 'finished'
  assert seen and all(s == [False, False, False] for s in seen), seen
  assert all(lock_is_free(p) and os.path.getsize(p) == 0 for p in locks)


# ------------------------------------------------------------------------------------------------
# In-process: non-finite steps, bad configs, a workdir of another config
# ------------------------------------------------------------------------------------------------
def tiny_config(data_dir, extra=''):
  """In-process runs: helpers.tiny_config (the settings of tests/test_train.py, so the compiled
  step is shared) with InterMix (2 epochs x 2 steps)."""
  return helpers.tiny_config(data_dir, 'strategy=intermix' + (',' + extra if extra else ''))


def poison_loader(monkeypatch, value, at=(1, 1)):
  """Train loader whose batch (epoch, step) = `at` holds `value` in one sample."""
  real = data.make_train_loader

  def make(*args, **kwargs):
    loader = real(*args, **kwargs)
    batches = loader.batches

    def poisoned(epoch, start_step=0):
      for i, b in enumerate(batches(epoch, start_step), start_step):
        if (epoch, i) == at:
          b = dict(b, x=b['x'].copy())
          b['x'][0, 100] = value
        yield b
    loader.batches = poisoned
    return loader
  monkeypatch.setattr(data, 'make_train_loader', make)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_nonfinite_stops_naming_step_and_checkpoint_then_skip_counts(value, synthetic_data_dir,
                                                                    tmp_path, monkeypatch):
  poison_loader(monkeypatch, value)
  d = str(tmp_path / 'run')
  config = tiny_config(synthetic_data_dir)
  with pytest.raises(train.NonFiniteError) as e:
    train.train_and_evaluate(config, d)
  msg = str(e.value)
  last_good = os.path.join(d, 'checkpoints', '2')
  assert 'step 4 of 4 (epoch 2, batch 2 of 2)' in msg, msg
  assert f'Last good checkpoint: {last_good} (step 2, verified), kept' in msg, msg
  assert 'If such steps are rare, --config.nan_policy=skip' in msg and '\n' not in msg
  assert sorted(os.listdir(os.path.join(d, 'checkpoints'))) == ['2']  # named by step
  r = helpers.results(d)
  assert r['status'] == 'stopped_nonfinite' and r['message'] == msg and r['final_error'] is None
  # The same workdir with nan_policy=skip: resumes from step 2, skips the bad step, counts it.
  config.nan_policy = 'skip'
  r = train.train_and_evaluate(config, d)
  assert r['status'] == 'finished' and r['nonfinite_steps'] == 1
  assert [h['nonfinite_steps'] for h in r['history']] == [0, 1]
  assert np.isfinite(r['final_error']) and np.isfinite(r['history'][-1]['train_loss']) is not None
  _, state = helpers.final_state(d)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state['params']))
  assert int(state['nonfinite_count']) == 1 and int(state['first_nonfinite_step']) == 3


@pytest.mark.parametrize('override,field,valid', [
    ('backbone=resnet', 'backbone', 'envnet, envnetv2'),
    ('strategy=cutmix', 'strategy', 'standard, mixup, bc, speechmix, intermix'),
    ('dataset=audioset', 'dataset', 'esc50, esc10, urbansound8k, synthetic'),
    ('fold=9', 'fold', '1..5'),
    ('mixing.eligible_layers=(2,4)', 'mixing.eligible_layers', '0..3'),
    ('batch_size=9', 'batch_size', 'even'),
    ('opt.lr=0', 'opt.lr', '> 0'),
    ('model.width=0.1', 'model', 'round(40 * width) >= 10'),
])
def test_bad_config_value_is_one_line_naming_field_before_heavy_work(override, field, valid,
                                                                     synthetic_data_dir, tmp_path,
                                                                     monkeypatch):
  def no_heavy_work(*a, **k):
    raise AssertionError('data loading started before the config was checked')
  monkeypatch.setattr(data, 'make_train_loader', no_heavy_work)
  monkeypatch.setattr(data, 'prepare', no_heavy_work)
  d = str(tmp_path / 'run')
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(tiny_config(synthetic_data_dir, override), d)
  msg = str(e.value)
  assert msg.startswith(f'config.{field}') and valid in msg and '\n' not in msg, msg
  assert not os.path.exists(d)  # nothing created


def test_workdir_of_a_different_config_is_refused(synthetic_data_dir, tmp_path):
  d = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(synthetic_data_dir), d)
  before = sorted(os.listdir(os.path.join(d, 'checkpoints')))
  with open(os.path.join(d, 'results.json')) as f:
    before_results = f.read()
  with pytest.raises(workdir_lib.WorkdirConfigError) as e:
    train.train_and_evaluate(tiny_config(synthetic_data_dir, 'opt.lr=0.5'), d)
  msg = str(e.value)
  assert d in msg and 'opt.lr: 0.05 (workdir) vs 0.5 (now)' in msg and '\n' not in msg
  assert sorted(os.listdir(os.path.join(d, 'checkpoints'))) == before
  with open(os.path.join(d, 'results.json')) as f:
    assert f.read() == before_results


def test_unreadable_newest_checkpoint_falls_back_to_the_previous_one(synthetic_data_dir, tmp_path):
  ref, d = str(tmp_path / 'ref'), str(tmp_path / 'run')
  config = tiny_config(synthetic_data_dir)
  r_ref = train.train_and_evaluate(config, ref)
  train.train_and_evaluate(config, d)
  # Corrupt every array file of the newest checkpoint (step 4) and its metadata.
  newest = os.path.join(d, 'checkpoints', '4')
  for root, _, files in os.walk(os.path.join(newest, 'state')):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  with open(os.path.join(d, 'results.json')) as f:
    r = json.load(f)
  r['final_error'], r['status'] = None, 'running'  # as if the run had died right after the save
  with open(os.path.join(d, 'results.json'), 'w') as f:
    json.dump(r, f)
  r2 = train.train_and_evaluate(config, d)
  assert os.path.isdir(newest + '.unreadable')
  assert r2['status'] == 'finished'
  assert comparable(r2) == comparable(r_ref)
  _, a = helpers.final_state(d)
  _, b = helpers.final_state(ref)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.array_equal(np.asarray(x), np.asarray(y))


def mark_running(workdir):
  """results.json as if the run had died right after its last checkpoint."""
  r = helpers.results(workdir)
  r['final_error'], r['status'] = None, 'running'
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(r, f)


# ------------------------------------------------------------------------------------------------
# Issue 18: corrupted checkpoints, the advice after a non-finite step, disk full
# ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings('ignore:Sharding info not provided')
def test_silently_corrupted_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_previous(
    synthetic_data_dir, tmp_path):
  ref, d = str(tmp_path / 'ref'), str(tmp_path / 'run')
  config = tiny_config(synthetic_data_dir)
  r_ref = train.train_and_evaluate(config, ref)
  train.train_and_evaluate(config, d)
  newest = os.path.join(d, 'checkpoints', '4')
  saved = ocp.PyTreeCheckpointer().restore(os.path.join(newest, 'state'))
  helpers.corrupt_silently(newest, saved)  # 3 bytes XORed: orbax alone restores other values
  mark_running(d)
  r2 = train.train_and_evaluate(config, d)
  assert os.path.isdir(newest + '.unreadable')
  assert r2['status'] == 'finished' and comparable(r2) == comparable(r_ref)
  _, a = helpers.final_state(d)
  _, b = helpers.final_state(ref)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.array_equal(np.asarray(x), np.asarray(y))


def strip_digest(checkpoint_dir):
  """Makes a checkpoint look written by an older version (no digest in its meta item)."""
  path = os.path.join(checkpoint_dir, 'meta', 'metadata')
  with open(path) as f:
    meta = json.load(f)
  del meta[checkpoints.DIGEST_KEY]
  with open(path, 'w') as f:
    json.dump(meta, f)


def test_nonfinite_right_after_resuming_an_unverified_checkpoint_does_not_advise_skip(
    synthetic_data_dir, tmp_path, monkeypatch):
  """The issue's case: a broken checkpoint that cannot be verified (no digest) gives a non-finite
  loss from the first step after it; the message must not call it good nor advise skip."""
  poison_loader(monkeypatch, np.nan, at=(1, 0))  # the first step after checkpoint 2
  d = str(tmp_path / 'run')
  config = tiny_config(synthetic_data_dir)
  with pytest.raises(train.NonFiniteError) as e:
    train.train_and_evaluate(config, d)
  ckpt = os.path.join(d, 'checkpoints', '2')
  assert f'Last good checkpoint: {ckpt} (step 2, verified), kept' in str(e.value)
  strip_digest(ckpt)
  with pytest.raises(train.NonFiniteError) as e:
    train.train_and_evaluate(config, d)
  msg = str(e.value)
  assert 'step 3 of 4' in msg and 'Last good checkpoint' not in msg and '\n' not in msg, msg
  assert (f'the first step after resuming from checkpoint {ckpt} (step 2), which was written '
          'without a digest') in msg and 'could not be verified' in msg, msg
  assert 'Do not rerun with --config.nan_policy=skip' in msg, msg
  assert f'rename it to {ckpt}.unreadable' in msg, msg
  assert helpers.results(d)['status'] == 'stopped_nonfinite'


def test_skip_stops_when_every_step_is_nonfinite_and_keeps_the_checkpoints(synthetic_data_dir,
                                                                         tmp_path, monkeypatch):
  """nan_policy=skip on a state that gives a non-finite loss on every batch: before, every step
  was skipped and the run 'finished' (exit 0) with the untrained net, rotating checkpoints away."""
  real = data.make_train_loader

  def make(*args, **kwargs):
    loader = real(*args, **kwargs)
    batches = loader.batches

    def poisoned(epoch, start_step=0):
      for b in batches(epoch, start_step):
        b = dict(b, x=b['x'].copy())
        b['x'][0, 100] = np.nan
        yield b
    loader.batches = poisoned
    return loader
  monkeypatch.setattr(data, 'make_train_loader', make)
  d = str(tmp_path / 'run')
  with pytest.raises(train.NonFiniteError) as e:
    train.train_and_evaluate(tiny_config(synthetic_data_dir, 'nan_policy=skip'), d)
  msg = str(e.value)
  ckpt = os.path.join(d, 'checkpoints', '2')
  assert msg.startswith(f'3 consecutive non-finite steps up to step 3 of 4 in {d}'), msg
  assert f'Last good checkpoint: {ckpt} (step 2, verified), kept' in msg and '\n' not in msg, msg
  r = helpers.results(d)
  assert r['status'] == 'stopped_nonfinite' and r['final_error'] is None and r['message'] == msg
  assert sorted(os.listdir(os.path.join(d, 'checkpoints'))) == ['2']


DISK_FULL = ValueError(
    'RESOURCE_EXHAUSTED: Error writing "params.fc7.dense.bias/0" in OCDBT database at local file '
    '"ckpt/4.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": Failed to write 829 '
    "bytes to file 22: No space left on device [os_error_code='28']")


def test_disk_full_while_checkpointing_is_one_error_and_loses_nothing(synthetic_data_dir,
                                                                     tmp_path, monkeypatch):
  d = str(tmp_path / 'run')
  config = tiny_config(synthetic_data_dir)
  real = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == 4:  # the disk fills up during the second checkpoint
      os.makedirs(os.path.join(d, 'checkpoints', '4.orbax-checkpoint-tmp', 'state'))
      raise DISK_FULL
    return real(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  with pytest.raises(checkpoints.CheckpointWriteError) as e:
    train.train_and_evaluate(config, d)
  msg = str(e.value)
  ckpt = os.path.join(d, 'checkpoints')
  assert msg.startswith(f'cannot write checkpoint {ckpt}/4: no space left on device'), msg
  assert f'resume from checkpoint {ckpt}/2 (step 2, kept)' in msg and '\n' not in msg, msg
  assert e.value.errno == errno.ENOSPC
  assert sorted(os.listdir(ckpt)) == ['2']
  r = helpers.results(d)  # still the valid results of the last finished epoch
  assert r['status'] == 'running' and r['step'] == 2
  monkeypatch.setattr(ocp.CheckpointManager, 'save', real)  # space freed: the rerun resumes
  r = train.train_and_evaluate(config, d)
  assert r['status'] == 'finished' and r['step'] == 4 and len(r['history']) == 2


LOG_LINE = re.compile(r'^[IW]\d{4} \d\d:\d\d:\d\d')


@pytest.mark.slow
def test_disk_full_while_checkpointing_prints_one_line_and_the_rerun_resumes(
    reference, synthetic_data_dir, env, tmp_path):
  """A real full disk (a 4 MiB tmpfs; needs root): orbax fails deep in its writer threads.

  Before: ~500 lines, 40 tracebacks, the last one `ImportError: sys.meta_path is None`."""
  mnt = tmp_path / 'small_disk'
  mnt.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', str(mnt)],
                    capture_output=True).returncode != 0:
    pytest.skip('cannot mount a small tmpfs (needs root)')
  try:
    d = str(mnt / 'run')
    with open(mnt / 'filler', 'wb') as f:  # room for one checkpoint (~190 KiB), not two
      f.write(b'\0' * (shutil.disk_usage(mnt).free - 300 * 1024))
    # No free-space check before writing (SPACE_MARGIN_BYTES covers the metadata): let orbax's
    # own writes fail, the hard case.
    wrapper = ('import runpy, sys; from intermix_jax import checkpoints; '
               'checkpoints.SPACE_MARGIN_BYTES = 0; sys.argv[0] = "main"; '
               'runpy.run_module("intermix_jax.main", run_name="__main__", alter_sys=True)')
    p = subprocess.run([sys.executable, '-c', wrapper] + command(d, synthetic_data_dir)[3:],
                       cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = [l for l in p.stderr.splitlines() if not LOG_LINE.match(l)]
    assert p.returncode == 1 and len(lines) == 1, p.stderr[-3000:]
    assert re.match(rf'error: cannot write checkpoint {d}/checkpoints/\d+: no space left on '
                    rf'device .*; free some space and rerun the same command to resume from '
                    rf'checkpoint {d}/checkpoints/\d+ \(step \d+, kept\)$', lines[0]), lines[0]
    assert 'Traceback' not in p.stderr
    kept = int(lines[0].split('(step ')[1].split(',')[0])
    r = helpers.results(d)  # valid, as written after the last checkpoint
    assert r['status'] == 'running' and r['step'] == kept
    assert [n for n in os.listdir(os.path.join(d, 'checkpoints')) if not n.isdigit()] == []
    os.remove(mnt / 'filler')
    run_to_end(d, synthetic_data_dir, env, str(tmp_path / 'rerun.log'))
    assert 'resuming' in open(tmp_path / 'rerun.log').read()
    assert_same_as_reference(d, reference)
  finally:
    subprocess.run(['umount', '-l', str(mnt)], capture_output=True)
