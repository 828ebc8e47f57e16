"""fold='all' with config.stack_runs=True: every fold in ONE vmapped program (train._Together).

Tiny settings (helpers.TINY: EnvNet width 0.25, 2 steps of batch 8 per epoch, 1 epoch standard /
2 epochs intermix) on the synthetic dataset's 5 folds. The stacked program must give each fold what
it gets trained alone (`fold=all` one fold after another), in the same files and format; a resume
after SIGTERM, or after a kill that left the runs' checkpoints at different steps, must continue
bitwise as the uninterrupted program; a non-finite run must stop alone.

stack_method='unroll' (each run's own step, K of them in the program; 'auto' on a CPU): bitwise
equal to the folds trained alone (observed). stack_method='vmap' tolerances (float32; the stacked
step is the single-run step under jax.vmap, which XLA may sum in another order, multirun.py):
standard: train losses rtol 1e-5 and the same predictions on every
test clip. InterMix: train losses rtol 1e-2. Its gradient goes through sqrt(a b) of the two
sounds' hidden activations, whose derivative is large where either is near zero, so a one-ulp
change is amplified over the steps (observed here: 2e-3 after 4 steps; tests/test_multirun.py shows
the same size for a one-ulp perturbation of one run alone). Bitwise where the program is the same
(resume).
"""
import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest

import helpers
from intermix_jax import config_checks, data, train

FOLDS = 5  # the synthetic dataset
REAL_TRAIN_LOADER = data.make_train_loader


def config_for(data_dir, strategy, method=None):
  """fold=all of `strategy`; one fold after another (method None) or in one program."""
  c = helpers.tiny_config(data_dir, f'fold=all,strategy={strategy}')
  c.stack_runs = method is not None
  c.stack_method = method or 'auto'
  return c


def fold_dirs(workdir):
  return [os.path.join(workdir, f'fold_{k}') for k in range(1, FOLDS + 1)]


def state_leaves(workdir):
  step, state = helpers.final_state(workdir)
  return step, [np.asarray(x) for x in jax.tree.leaves(state)]


def assert_bitwise(a_dir, b_dir):
  (sa, la), (sb, lb) = state_leaves(a_dir), state_leaves(b_dir)
  assert sa == sb and len(la) == len(lb)
  for x, y in zip(la, lb):
    assert x.dtype == y.dtype and np.array_equal(x, y), a_dir


def without_run_facts(r):
  """results.json without what differs between any two runs of the same training (time, paths)."""
  return {k: v for k, v in r.items() if k not in ('wall_time_s', 'versions', 'workdir', 'config')}


@pytest.fixture(scope='module')
def trained(synthetic_data_dir, tmp_path_factory):
  """{(strategy, 'seq'|'vmap'|'unroll'): workdir} of fold=all trained one fold after another, and
  as one program of each method."""
  root = tmp_path_factory.mktemp('together')
  out = {}
  for strategy in ('standard', 'intermix'):
    for mode in ('seq', 'vmap', 'unroll'):
      workdir = str(root / f'{strategy}_{mode}')
      summary = train.train_and_evaluate(
          config_for(synthetic_data_dir, strategy, None if mode == 'seq' else mode), workdir)
      assert summary['status'] == 'finished'
      out[strategy, mode] = workdir
  return out


@pytest.mark.parametrize('strategy', ['standard', 'intermix'])
def test_unrolled_program_equals_the_folds_trained_one_after_another(trained, strategy):
  """stack_method='unroll' (the CPU's 'auto'): every fold's results and checkpoint bitwise those
  of the fold trained alone (observed; see tests/test_multirun.py for what is not guaranteed)."""
  seq, stacked = trained[strategy, 'seq'], trained[strategy, 'unroll']
  for a_dir, b_dir in zip(fold_dirs(seq), fold_dirs(stacked)):
    assert without_run_facts(helpers.results(a_dir)) == without_run_facts(helpers.results(b_dir))
    assert_bitwise(a_dir, b_dir)


@pytest.mark.parametrize('strategy', ['standard', 'intermix'])
def test_vmapped_program_equals_the_folds_trained_one_after_another(trained, strategy):
  seq, stacked = trained[strategy, 'seq'], trained[strategy, 'vmap']
  rtol = 1e-5 if strategy == 'standard' else 1e-2
  for a_dir, b_dir in zip(fold_dirs(seq), fold_dirs(stacked)):
    a, b = helpers.results(a_dir), helpers.results(b_dir)
    # Same file, same format: every key, the config apart from stack_*, the clips in order.
    assert set(a) == set(b) and b['status'] == 'finished'
    assert dict(a['config'], stack_runs=True, stack_method='vmap') == b['config']
    assert a['predictions']['filenames'] == b['predictions']['filenames']
    assert a['predictions']['labels'] == b['predictions']['labels']
    assert [h['epoch'] for h in a['history']] == [h['epoch'] for h in b['history']]
    np.testing.assert_allclose([h['train_loss'] for h in b['history']],
                               [h['train_loss'] for h in a['history']], rtol=rtol)
    for key in ('num_train_examples', 'num_test_examples', 'total_steps', 'dataset_identity',
                'class_clips', 'nonfinite_steps', 'step'):
      assert a[key] == b[key], key
    if strategy == 'standard':
      assert a['predictions']['preds'] == b['predictions']['preds']
      assert a['final_error'] == b['final_error']
      (sa, la), (sb, lb) = state_leaves(a_dir), state_leaves(b_dir)
      assert sa == sb
      for x, y in zip(la, lb):
        if x.dtype.kind == 'f':
          np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)
        else:
          assert np.array_equal(x, y)
  summary = helpers.read_json(os.path.join(stacked, 'cv_results.json'))
  assert summary['status'] == 'finished' and len(summary['folds']) == FOLDS
  assert summary['mean_error'] == pytest.approx(
      np.mean([helpers.results(d)['final_error'] for d in fold_dirs(stacked)]))


def loader_with(what, at, folds):
  """data.make_train_loader whose batches do `what` ('sigterm' or 'nan') at (epoch, batch) `at`
  in the runs of `folds`."""
  def make(config, *args, **kwargs):
    loader = REAL_TRAIN_LOADER(config, *args, **kwargs)
    batches = loader.batches

    def doing(epoch, start_step=0):
      for i, b in enumerate(batches(epoch, start_step), start_step):
        if (epoch, i) == at and config.fold in folds:
          if what == 'sigterm':
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer saves every run and returns
          else:
            b = dict(b, x=np.full_like(b['x'], np.nan))
        yield b
    loader.batches = doing
    return loader
  return make


def test_resume_after_sigterm_and_after_a_kill_between_saves_is_bitwise(
    trained, synthetic_data_dir, tmp_path, monkeypatch):
  """SIGTERM in the middle of epoch 2: every run saves step 3 and stops. Then the checkpoints of
  step 3 of folds 3-5 are deleted, as a kill -9 between the runs' saves would leave them (folds 1-2
  at step 3, the others at step 2). The rerun resumes all from step 2 and ends bitwise where the
  uninterrupted program did."""
  config = config_for(synthetic_data_dir, 'intermix', 'vmap')  # 2 epochs x 2 steps
  workdir = str(tmp_path / 'run')
  monkeypatch.setattr(data, 'make_train_loader', loader_with('sigterm', (1, 0), {1}))
  first = train.train_and_evaluate(config, workdir)
  assert first['status'] == 'preempted'
  for d in fold_dirs(workdir):
    r = helpers.results(d)
    assert r['status'] == 'preempted' and r['step'] == 3 and len(r['history']) == 1
    assert sorted(os.listdir(os.path.join(d, 'checkpoints'))) == ['2', '3']
  monkeypatch.setattr(data, 'make_train_loader', REAL_TRAIN_LOADER)
  # A SIGTERM resume: same program, same steps.
  copy = str(tmp_path / 'killed')
  shutil.copytree(workdir, copy)
  second = train.train_and_evaluate(config, workdir)
  assert second['status'] == 'finished'
  ref = trained['intermix', 'vmap']
  for a_dir, b_dir in zip(fold_dirs(ref), fold_dirs(workdir)):
    assert_bitwise(a_dir, b_dir)
    assert without_run_facts(helpers.results(a_dir)) == without_run_facts(helpers.results(b_dir))
  # The kill between saves.
  for d in fold_dirs(copy)[2:]:
    shutil.rmtree(os.path.join(d, 'checkpoints', '3'))
  third = train.train_and_evaluate(config, copy)
  assert third['status'] == 'finished'
  for a_dir, b_dir in zip(fold_dirs(ref), fold_dirs(copy)):
    assert_bitwise(a_dir, b_dir)
    a, b = helpers.results(a_dir), helpers.results(b_dir)
    assert a['history'] == b['history'] and a['predictions'] == b['predictions']


def test_a_non_finite_run_stops_alone(trained, synthetic_data_dir, tmp_path, monkeypatch):
  """nan_policy=stop: fold 2's batch turns NaN in epoch 2. Fold 2 writes stopped_nonfinite (its
  last checkpoint, of step 2, kept); the other folds train to the end bitwise as in the program
  without the NaN; then NonFiniteError names fold 2, after cv_results.json is written."""
  config = config_for(synthetic_data_dir, 'intermix', 'vmap')
  workdir = str(tmp_path / 'nan')
  monkeypatch.setattr(data, 'make_train_loader', loader_with('nan', (1, 0), {2}))
  with pytest.raises(train.NonFiniteError, match=r'fold_2: non-finite loss'):
    train.train_and_evaluate(config, workdir)
  ref = trained['intermix', 'vmap']
  for k, (a_dir, b_dir) in enumerate(zip(fold_dirs(ref), fold_dirs(workdir)), 1):
    r = helpers.results(b_dir)
    if k == 2:
      assert r['status'] == 'stopped_nonfinite' and 'step 3 of 4' in r['message']
      assert helpers.final_state(b_dir)[0] == 2
    else:
      assert r['status'] == 'finished'
      assert_bitwise(a_dir, b_dir)
  summary = helpers.read_json(os.path.join(workdir, 'cv_results.json'))
  assert summary['status'] == 'stopped_nonfinite' and summary['mean_error'] is None
  assert [f['status'] for f in summary['folds']] == ['finished', 'stopped_nonfinite'] + [
      'finished'] * 3


def test_seeds_of_one_fold_in_one_program_equal_their_separate_runs(
    trained, synthetic_data_dir, tmp_path):
  """seeds=(0,1), fold=2, stack_runs (vmap): workdir/seed_0 and seed_1 hold what fold 2 trained
  alone with seed 0 (from the `trained` fixture) and seed 1 gives (standard: rtol 1e-5, same
  predictions)."""
  config = helpers.tiny_config(synthetic_data_dir, 'fold=2,seeds=(0,1),strategy=standard')
  config.stack_runs, config.stack_method = True, 'vmap'
  summary = train.train_and_evaluate(config, str(tmp_path / 'both'))
  assert summary['status'] == 'finished' and [s['seed'] for s in summary['seeds']] == [0, 1]
  alone1 = str(tmp_path / 'seed1_alone')
  train.train_and_evaluate(
      helpers.tiny_config(synthetic_data_dir, 'fold=2,seed=1,strategy=standard'), alone1)
  refs = {0: os.path.join(trained['standard', 'seq'], 'fold_2'), 1: alone1}
  for seed, ref in refs.items():
    a, b = helpers.results(ref), helpers.results(str(tmp_path / 'both' / f'seed_{seed}'))
    assert b['seed'] == seed and b['fold'] == 2 and b['config']['seeds'] is None
    assert a['predictions'] == b['predictions']
    np.testing.assert_allclose([h['train_loss'] for h in b['history']],
                               [h['train_loss'] for h in a['history']], rtol=1e-5)
  assert helpers.results(alone1)['history'] != helpers.results(refs[0])['history']  # seeds differ


@pytest.mark.parametrize('arg', ['fold=2', 'fold=2,seeds=(4,)'])
def test_stack_runs_needs_several_runs(synthetic_data_dir, tmp_path, arg):
  config = helpers.tiny_config(synthetic_data_dir, arg)
  config.stack_runs = True
  with pytest.raises(config_checks.ConfigError, match=r"^config.stack_runs=True .* fold=all"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_folds_of_different_steps_per_epoch_are_refused_in_one_line(
    synthetic_data_dir, tmp_path, monkeypatch):
  real = train._Run.__init__  # pylint: disable=protected-access

  def init(self, config, workdir):
    real(self, config, workdir)
    self.steps_per_epoch -= config.fold == 3  # as if fold 3's training split were smaller

  monkeypatch.setattr(train._Run, '__init__', init)  # pylint: disable=protected-access
  config = config_for(synthetic_data_dir, 'standard', 'auto')
  with pytest.raises(config_checks.ConfigError) as e:
    train.train_and_evaluate(config, str(tmp_path))
  msg = str(e.value)
  assert '\n' not in msg and msg.startswith('config.stack_runs: the folds give different steps')
  assert 'config.steps_per_epoch to at most 1' in msg
  assert not any(os.path.exists(os.path.join(d, 'checkpoints', '0')) for d in fold_dirs(str(tmp_path)))
