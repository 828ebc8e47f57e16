"""Several runs in ONE program (config.stack_runs=True; train._Loop with a run axis, multirun.py).

Tiny settings (helpers.TINY: EnvNet width 0.25, 2 steps of batch 8 per epoch, 1 epoch standard /
2 epochs intermix) on the synthetic dataset. Each run in the program must get what it gets trained
alone, in the same files and format; a resume after SIGTERM, or after a kill that left the runs'
checkpoints at different steps, must continue bitwise as the uninterrupted program; a non-finite
run must stop alone.

- fold=all of standard (the 5 folds: 5 runs of different training and test data),
  stack_method='vmap' (the accelerators' 'auto'), against the folds trained one after another.
  Tolerances (float32; the one-run step under jax.vmap, which XLA may sum in another order,
  multirun.py): train losses rtol 1e-5, parameters rtol 1e-4, the same predictions on every test
  clip.
- seeds=(0,1) of fold 1 of InterMix (2 runs), against each seed trained alone:
  stack_method='unroll' (each run's own step, K of them in the program; 'auto' on a CPU): bitwise
  (observed; tests/test_multirun.py says what is not guaranteed); stack_method='vmap': train
  losses rtol 1e-2. InterMix's gradient goes through sqrt(a b) of the two sounds' hidden
  activations, whose derivative is large where either is near zero, so a one-ulp change is
  amplified over the steps (observed: up to 2e-3 after 4 steps; tests/test_multirun.py shows the
  same size for a one-ulp perturbation of one run alone). Resume and the NaN test run the vmap
  program: bitwise against its uninterrupted run.
- config.data_on_device (the crops cut on the device from the host pipeline's own draws):
  bitwise the host pipeline's runs, stacked and alone; the resume test runs with it.
"""
import os
import shutil
import signal

import jax
import numpy as np
import pytest

import helpers
from intermix_jax import config_checks, data, summaries, train

FOLDS = 5  # the synthetic dataset
SEEDS = (0, 1)
REAL_TRAIN_LOADER = data.make_train_loader


def fold_all(data_dir, strategy, method=None):
  """fold=all of `strategy`; one fold after another (method None) or in one program."""
  c = helpers.tiny_config(data_dir, f'fold=all,strategy={strategy}')
  c.stack_runs, c.stack_method = method is not None, method or 'auto'
  return c


def two_seeds(data_dir, strategy, method='vmap'):
  """seeds=(0,1) of fold 1 in one program."""
  c = helpers.tiny_config(data_dir, f'fold=1,seeds={SEEDS},strategy={strategy}')
  c.stack_runs, c.stack_method = True, method
  return c


def on_device(config):
  """`config` with its training crops cut on the device (config.data_on_device)."""
  config.data_on_device = True
  return config


def fold_dirs(workdir):
  return [os.path.join(workdir, f'fold_{k}') for k in range(1, FOLDS + 1)]


def seed_dirs(workdir):
  return [os.path.join(workdir, f'seed_{s}') for s in SEEDS]


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
  """Workdirs: 'seq' / 'vmap': fold=all of standard one fold after another / in one program;
  'alone': [seed 0, seed 1] of fold 1 of InterMix trained alone; 'unroll' / 'intermix_vmap': both
  seeds in one program."""
  root = tmp_path_factory.mktemp('together')
  out = {}
  for mode in ('seq', 'vmap'):
    out[mode] = str(root / f'fold_all_{mode}')
    summary = train.train_and_evaluate(
        fold_all(synthetic_data_dir, 'standard', None if mode == 'seq' else mode), out[mode])
    assert summary['status'] == 'finished'
  out['alone'] = [str(root / f'seed{s}_alone') for s in SEEDS]
  # The share of wall time the periodic saves took is checked once per period: by each run alone,
  # by the program for runs together (InterMix: 2 epochs, a periodic save after the first).
  checks = out['save_checks'] = []
  real_check = summaries.SaveShare.check  # pylint: disable=protected-access

  def check(share, every_epochs):
    checks.append((name, share.saving))
    real_check(share, every_epochs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(summaries.SaveShare, 'check', check)  # pylint: disable=protected-access
    for s, workdir in zip(SEEDS, out['alone']):
      name = 'alone'
      train.train_and_evaluate(
          helpers.tiny_config(synthetic_data_dir, f'fold=1,seed={s},strategy=intermix'), workdir)
    for method, name in (('unroll', 'unroll'), ('vmap', 'intermix_vmap')):
      out[name] = str(root / name)
      summary = train.train_and_evaluate(two_seeds(synthetic_data_dir, 'intermix', method),
                                         out[name])
      assert summary['status'] == 'finished' and [s['seed'] for s in summary['seeds']] == list(SEEDS)
  return out


def test_the_saves_share_of_the_time_is_checked_once_per_period(trained):
  """One check per periodic save that is not the last: per run alone, per program together, with
  the time of every run's save counted (summaries.SaveShare; its warning: tests/test_train.py)."""
  names = [name for name, _ in trained['save_checks']]
  assert names == ['alone', 'alone', 'unroll', 'intermix_vmap']
  assert all(saving > 0 for _, saving in trained['save_checks'])


def test_fold_all_in_one_program_equals_the_folds_one_after_another(trained):
  """The issue's command: fold=all, one process, one compiled (vmapped) step; five per-fold
  workdirs in the format and to the tolerance above."""
  seq, stacked = trained['seq'], trained['vmap']
  for a_dir, b_dir in zip(fold_dirs(seq), fold_dirs(stacked)):
    a, b = helpers.results(a_dir), helpers.results(b_dir)
    # Same file, same format: every key, the config apart from stack_*, the clips in order.
    assert set(a) == set(b) and b['status'] == 'finished'
    assert dict(a['config'], stack_runs=True, stack_method='vmap') == b['config']
    assert a['predictions'] == b['predictions'] and a['final_error'] == b['final_error']
    assert [h['epoch'] for h in a['history']] == [h['epoch'] for h in b['history']]
    np.testing.assert_allclose([h['train_loss'] for h in b['history']],
                               [h['train_loss'] for h in a['history']], rtol=1e-5)
    for key in ('num_train_examples', 'num_test_examples', 'total_steps', 'dataset_identity',
                'class_clips', 'nonfinite_steps', 'step', 'fold', 'seed'):
      assert a[key] == b[key], key
    (sa, la), (sb, lb) = state_leaves(a_dir), state_leaves(b_dir)
    assert sa == sb
    for x, y in zip(la, lb):
      if x.dtype.kind == 'f':
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)
      else:
        assert np.array_equal(x, y)
  summary = helpers.read_json(os.path.join(stacked, 'cv_results.json'))
  assert summary == helpers.read_json(os.path.join(seq, 'cv_results.json'))
  assert summary['status'] == 'finished' and len(summary['folds']) == FOLDS


@pytest.mark.parametrize('method', ['unroll', 'vmap'])
def test_seeds_in_one_program_equal_each_seed_alone(trained, method):
  stacked = trained['unroll' if method == 'unroll' else 'intermix_vmap']
  for a_dir, b_dir in zip(trained['alone'], seed_dirs(stacked)):
    a, b = helpers.results(a_dir), helpers.results(b_dir)
    assert b['status'] == 'finished' and b['seed'] == a['seed']
    # The run's own config (seeds=None), apart from stack_*.
    assert dict(a['config'], stack_runs=True, stack_method=method) == b['config']
    if method == 'unroll':
      assert without_run_facts(a) == without_run_facts(b)
      assert_bitwise(a_dir, b_dir)
    else:
      assert set(a) == set(b)
      assert a['predictions']['filenames'] == b['predictions']['filenames']
      np.testing.assert_allclose([h['train_loss'] for h in b['history']],
                                 [h['train_loss'] for h in a['history']], rtol=1e-2)
  h0, h1 = (helpers.results(d)['history'] for d in trained['alone'])
  assert h0 != h1  # not vacuous: the seeds train differently
  summary = helpers.read_json(os.path.join(stacked, 'seeds_results.json'))
  assert summary['mean_error'] == pytest.approx(
      np.mean([helpers.results(d)['final_error'] for d in seed_dirs(stacked)]))


def test_runs_in_one_program_rewrite_results_at_evaluations_and_checkpoints_only(
    trained, synthetic_data_dir, tmp_path, monkeypatch):
  """Runs in one program write results.json when training starts, at each evaluation, checkpoint
  and the end, not after every epoch (each write is the whole history, fsynced: on an accelerator
  it would outlast the epoch; train._Loop._end_epoch). The fixture's unrolled InterMix program (2
  epochs), three cadences: epoch 1 neither evaluated nor checkpointed (no write after it), epoch 1
  evaluated, epoch 1 checkpointed (a write after it); epoch 2, the last, is both, and every epoch
  is in the history."""
  del trained  # its unrolled program is compiled: these runs only train
  from intermix_jax import workdir as workdir_lib
  written = []
  real = workdir_lib.write_json_atomic

  def write(path, obj):
    if os.path.basename(path) == 'results.json':
      written.append((path, obj['status'], len(obj['history'])))
    real(path, obj)

  monkeypatch.setattr(workdir_lib, 'write_json_atomic', write)
  # (eval_every_epochs, checkpoint_every_epochs) -> the history lengths of the 'running' writes
  for case, (eval_every, ckpt_every, running) in enumerate([(3, 100, [0]), (1, 100, [0, 1]),
                                                            (3, 1, [0, 1])]):
    config = two_seeds(synthetic_data_dir, 'intermix', 'unroll')  # the loop's cadence: any method
    config.eval_every_epochs, config.checkpoint_every_epochs = eval_every, ckpt_every
    workdir = str(tmp_path / f'run{case}')
    assert train.train_and_evaluate(config, workdir)['status'] == 'finished'
    for d in seed_dirs(workdir):
      mine = [w[1:] for w in written if w[0] == os.path.join(d, 'results.json')]
      assert [n for status, n in mine if status == 'running'] == running, (case, mine)
      assert {w for w in mine if w[0] != 'running'} == {('finished', 2)}, (case, mine)
      r = helpers.results(d)
      assert [h['epoch'] for h in r['history']] == [1, 2]
      evaluated = [1, 2] if eval_every == 1 else [2]
      assert [h['epoch'] for h in r['history'] if 'test_error' in h] == evaluated


def loader_with_nan(at, seeds):
  """data.make_train_loader whose batch (epoch, batch) `at` is all NaN in the runs of `seeds`."""
  def make(config, *args, **kwargs):
    loader = REAL_TRAIN_LOADER(config, *args, **kwargs)
    batches = loader.batches

    def doing(epoch, start_step=0):
      for i, b in enumerate(batches(epoch, start_step), start_step):
        if (epoch, i) == at and config.seed in seeds:
          b = dict(b, x=np.full_like(b['x'], np.nan))
        yield b
    loader.batches = doing
    return loader
  return make


def test_resume_after_sigterm_and_after_a_kill_between_saves_is_bitwise(
    trained, synthetic_data_dir, tmp_path, monkeypatch):
  """SIGTERM in the middle of epoch 2: every run saves step 3 and stops. A copy of that state
  then loses seed 1's checkpoint of step 3, as a kill -9 between the runs' saves would leave it
  (seed 0 at step 3, seed 1 at step 2). Both reruns end bitwise where the uninterrupted program
  did: the second resumes every run from step 2 (seed 0's step 3 is deleted first).

  The program here cuts its crops on the device (config.data_on_device), the uninterrupted one
  read the host pipeline: the batch position is (epoch, step) in both, so the resumed runs also
  end bitwise where the host pipeline's did."""
  from intermix_jax.data import on_device as on_device_lib
  real_plan = on_device_lib.DeviceInputs.plan

  def plan(self, epoch, step):
    if (epoch, step) == (1, 0):
      os.kill(os.getpid(), signal.SIGTERM)  # the trainer saves every run and returns
    return real_plan(self, epoch, step)

  config = on_device(two_seeds(synthetic_data_dir, 'intermix'))  # 2 epochs x 2 steps
  workdir = str(tmp_path / 'run')
  monkeypatch.setattr(on_device_lib.DeviceInputs, 'plan', plan)
  first = train.train_and_evaluate(config, workdir)
  assert first['status'] == 'preempted'
  for d in seed_dirs(workdir):
    r = helpers.results(d)
    assert r['status'] == 'preempted' and r['step'] == 3 and len(r['history']) == 1
    assert sorted(os.listdir(os.path.join(d, 'checkpoints'))) == ['2', '3']
  monkeypatch.setattr(on_device_lib.DeviceInputs, 'plan', real_plan)
  killed = str(tmp_path / 'killed')
  shutil.copytree(workdir, killed)
  shutil.rmtree(os.path.join(killed, 'seed_1', 'checkpoints', '3'))
  ref = trained['intermix_vmap']
  for rerun in (workdir, killed):
    assert train.train_and_evaluate(config, rerun)['status'] == 'finished'
    for a_dir, b_dir in zip(seed_dirs(ref), seed_dirs(rerun)):
      assert_bitwise(a_dir, b_dir)
      a, b = helpers.results(a_dir), helpers.results(b_dir)
      assert dict(a['config'], data_on_device=True) == b['config']
      assert without_run_facts(a) == without_run_facts(b)


def test_a_non_finite_run_stops_alone(trained, synthetic_data_dir, tmp_path, monkeypatch):
  """nan_policy=stop: seed 1's batch turns NaN in epoch 2. Seed 1 writes stopped_nonfinite (its
  last checkpoint, of step 2, kept); seed 0 trains to the end bitwise as in the program without
  the NaN; then NonFiniteError names seed 1's workdir, after seeds_results.json is written."""
  workdir = str(tmp_path / 'nan')
  monkeypatch.setattr(data, 'make_train_loader', loader_with_nan((1, 0), {1}))
  with pytest.raises(train.NonFiniteError, match=r'seed_1: non-finite loss'):
    train.train_and_evaluate(two_seeds(synthetic_data_dir, 'intermix'), workdir)
  ref0, _ = seed_dirs(trained['intermix_vmap'])
  got0, got1 = seed_dirs(workdir)
  assert helpers.results(got0)['status'] == 'finished'
  assert_bitwise(ref0, got0)
  r = helpers.results(got1)
  assert r['status'] == 'stopped_nonfinite' and 'step 3 of 4' in r['message']
  assert helpers.final_state(got1)[0] == 2
  summary = helpers.read_json(os.path.join(workdir, 'seeds_results.json'))
  assert summary['status'] == 'stopped_nonfinite' and summary['mean_error'] is None
  assert [s['status'] for s in summary['seeds']] == ['finished', 'stopped_nonfinite']


@pytest.mark.parametrize('nan_seeds', [(1,), (0, 1)], ids=['one_stops', 'all_stop'])
def test_log_lines_of_runs_in_one_program_name_their_run(nan_seeds, synthetic_data_dir, tmp_path,
                                                         monkeypatch):
  """Every run's test error line names its run (fold and seed); a run left out by a non-finite
  loss says the others go on only when some do (before: 'the other runs go on' when none did)."""
  lines = []
  for level in ('info', 'warning'):
    monkeypatch.setattr(train.logging, level,
                        lambda msg, *a, **k: lines.append(str(msg) % a if a else str(msg)))
  monkeypatch.setattr(data, 'make_train_loader', loader_with_nan((1, 0), set(nan_seeds)))
  workdir = str(tmp_path / 'run')
  config = two_seeds(synthetic_data_dir, 'intermix', 'unroll')
  config.eval_every_epochs = 1  # epoch 1 is evaluated too
  with pytest.raises(train.NonFiniteError):
    train.train_and_evaluate(config, workdir)
  errors = [l for l in lines if 'test error' in l and not l.startswith('finished')]
  for s in SEEDS:  # epoch 1 of 2 is evaluated for both runs
    assert sum(l.startswith(f'epoch 1/2 (fold 1, seed {s}): test error ') for l in errors) == 1, (
        errors)
  assert all(' (fold 1, seed ' in l for l in errors), errors
  left_out = [l for l in lines if 'left out of the program' in l]
  assert len(left_out) == len(nan_seeds), lines
  if nan_seeds == (1,):
    assert left_out[0].startswith(f'{workdir}/seed_1: left out of the program from step 3 (the '
                                  'other 1 run(s) go on)'), left_out
    assert any(l.startswith('epoch 2/2 (fold 1, seed 0): test error ') for l in errors), errors
  else:
    assert not any('go on' in l for l in lines), left_out
    assert all(l.endswith('no run of the program is left to train') for l in left_out), left_out


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

  def init(self, config, workdir, **kwargs):
    real(self, config, workdir, **kwargs)
    self.steps_per_epoch -= config.fold == 3  # as if fold 3's training split were smaller

  monkeypatch.setattr(train._Run, '__init__', init)  # pylint: disable=protected-access
  with pytest.raises(config_checks.ConfigError) as e:
    train.train_and_evaluate(fold_all(synthetic_data_dir, 'standard', 'auto'), str(tmp_path))
  msg = str(e.value)
  assert '\n' not in msg and msg.startswith('config.stack_runs: the folds give different steps')
  assert 'config.steps_per_epoch to at most 1' in msg
  assert not any(os.path.exists(os.path.join(d, 'checkpoints')) and
                 os.listdir(os.path.join(d, 'checkpoints')) for d in fold_dirs(str(tmp_path)))


# --- config.data_on_device: the same batches, cut on the devices (data/on_device.py) ------------


def test_data_on_device_trains_the_runs_bitwise_as_the_host_pipeline(trained, synthetic_data_dir,
                                                                     tmp_path):
  """The two InterMix seeds in one program (vmap: the resume test's compiled program), with their
  clips in one table on the device, end bitwise where the host pipeline's program ended (no strong
  augmentation: bitwise batches, tests/test_on_device.py); a single run (no stacking) too. The
  unrolled program on the device: test_bc_independent_pairs_stacked_on_device_equal_each_seed_alone.
  """
  workdir = str(tmp_path / 'stacked')
  train.train_and_evaluate(on_device(two_seeds(synthetic_data_dir, 'intermix')), workdir)
  for a_dir, b_dir in zip(seed_dirs(trained['intermix_vmap']), seed_dirs(workdir)):
    assert_bitwise(a_dir, b_dir)
    a, b = helpers.results(a_dir), helpers.results(b_dir)
    assert dict(a['config'], data_on_device=True) == b['config']
    assert without_run_facts(a) == without_run_facts(b)
  alone = str(tmp_path / 'alone')
  train.train_and_evaluate(on_device(helpers.tiny_config(
      synthetic_data_dir, f'fold=1,seed={SEEDS[0]},strategy=intermix')), alone)
  assert_bitwise(trained['alone'][0], alone)


def test_data_on_device_refuses_clips_over_half_the_device_in_one_line(
    synthetic_data_dir, tmp_path, monkeypatch):
  from intermix_jax.data import on_device as on_device_lib
  monkeypatch.setattr(on_device_lib, 'device_memory_bytes', lambda devices=None: 1 << 20)
  with pytest.raises(config_checks.ConfigError) as e:
    train.train_and_evaluate(on_device(helpers.tiny_config(synthetic_data_dir, 'fold=1')),
                             str(tmp_path))
  msg = str(e.value)
  assert '\n' not in msg and msg.startswith('config.data_on_device=True: the 240 training clips')
  assert msg.endswith('over half of its 1.0 MiB; set config.data_on_device=False (the host '
                      'pipeline)')


def test_bc_independent_pairs_stacked_on_device_equal_each_seed_alone(synthetic_data_dir, tmp_path):
  """BC's default, independent pairs (2 sounds per training example), through stacked runs with the
  crops cut on the device: each seed gets its run alone (the host pipeline). Unrolled BC may
  differ from its run alone in the loss's last bit (tests/test_multirun.py): losses rtol 1e-5,
  the same predictions on every test clip."""
  stacked = str(tmp_path / 'stacked')
  summary = train.train_and_evaluate(on_device(two_seeds(synthetic_data_dir, 'bc', 'unroll')), stacked)
  assert summary['status'] == 'finished'
  for s, b_dir in zip(SEEDS, seed_dirs(stacked)):
    alone = str(tmp_path / f'alone{s}')
    a = train.train_and_evaluate(helpers.tiny_config(synthetic_data_dir, f'fold=1,seed={s},strategy=bc'),
                                 alone)
    b = helpers.results(b_dir)
    assert a['method'] == b['method'] == 'bc' and b['status'] == 'finished'
    assert a['predictions'] == b['predictions']
    np.testing.assert_allclose([h['train_loss'] for h in b['history']],
                               [h['train_loss'] for h in a['history']], rtol=1e-5)
