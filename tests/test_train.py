"""End to end (issue 5): train_and_evaluate with the real model, strategies, data, checkpoints.

Tiny settings (helpers.TINY: EnvNet width 0.25, fc 32, batch 8, 2 steps per epoch, 2 eval
crops) on the synthetic dataset (prepared once per session by the `synthetic_data_dir` fixture).
"""
import json
import os
import signal

import jax
import numpy as np
import pytest

import helpers
from intermix_jax import checkpoints, config_checks, data, mixing, summaries, train

def assert_trees_bitwise_equal(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert np.array_equal(x, y), 'arrays differ'


def without_timing(results):
  return {k: v for k, v in results.items() if k not in ('wall_time_s', 'versions', 'workdir')}


# intermix and bc (independent pairs) train end to end in test_interrupted_rerun_equals_uninterrupted
# _bitwise (a reference run and a resumed one); what is checked here does not depend on the strategy
# beyond the doubled epochs, which mixup and speechmix check.
@pytest.mark.parametrize('strategy', [s for s in mixing.STRATEGY_NAMES if s not in ('intermix', 'bc')])
def test_end_to_end_smoke_per_strategy(strategy, synthetic_data_dir, tmp_path):
  config = helpers.tiny_config(synthetic_data_dir, f'strategy={strategy}')
  workdir = str(tmp_path / strategy)
  r = train.train_and_evaluate(config, workdir)
  epochs = 1 if strategy == 'standard' else 2  # mixing doubles the epochs
  assert r['status'] == 'finished' and r['num_epochs'] == epochs and r['total_steps'] == 2 * epochs
  assert [h['epoch'] for h in r['history']] == list(range(1, epochs + 1))
  assert all(np.isfinite(h['train_loss']) and 0 <= h['train_error'] <= 100 for h in r['history'])
  # The reported error is the LAST epoch's test error, from every test clip exactly once.
  assert r['final_error'] == r['history'][-1]['test_error'] and r['final_epoch'] == epochs
  p = r['predictions']
  assert len(p['preds']) == len(p['labels']) == len(p['filenames']) == r['num_test_examples'] == 60
  assert sorted(p['filenames']) == sorted(set(p['filenames']))
  want = 100 * np.mean(np.asarray(p['preds']) != np.asarray(p['labels']))
  np.testing.assert_allclose(r['final_error'], want)
  with open(os.path.join(workdir, 'results.json')) as f:
    on_disk = json.load(f)
  assert on_disk['final_error'] == r['final_error'] and on_disk['status'] == 'finished'
  assert on_disk['config']['strategy'] == strategy and on_disk['versions']['jax'] == jax.__version__
  assert os.path.exists(os.path.join(workdir, 'config.json'))
  assert any(n.startswith('events.out.tfevents') for n in os.listdir(workdir))
  step, _ = helpers.final_state(workdir)
  assert step == 2 * epochs


@pytest.mark.parametrize('strategy', ['intermix', 'bc'])  # bc: independent pairs (2 sounds/example)
def test_interrupted_rerun_equals_uninterrupted_bitwise(strategy, synthetic_data_dir, tmp_path,
                                                        monkeypatch):
  """SIGTERM in the middle of epoch 2 (mid-epoch data position and metric sums), then rerun."""
  config = helpers.tiny_config(synthetic_data_dir, f'strategy={strategy}')  # 2 epochs x 2 steps
  ref = train.train_and_evaluate(config, str(tmp_path / 'ref'))

  real_loader = data.make_train_loader

  def loader_that_gets_preempted(*args, **kwargs):
    loader = real_loader(*args, **kwargs)
    real_batches = loader.batches

    def batches(epoch, start_step=0):
      for i, b in enumerate(real_batches(epoch, start_step), start_step):
        if (epoch, i) == (1, 0):
          os.kill(os.getpid(), signal.SIGTERM)  # handled by the trainer: save and return
        yield b
    loader.batches = batches
    return loader

  workdir = str(tmp_path / 'interrupted')
  monkeypatch.setattr(data, 'make_train_loader', loader_that_gets_preempted)
  first = train.train_and_evaluate(config, workdir)
  assert first['status'] == 'preempted' and first['step'] == 3  # epoch 2, batch 1 of 2 done
  assert helpers.final_state(workdir)[0] == 3 and len(first['history']) == 1
  monkeypatch.setattr(data, 'make_train_loader', real_loader)
  second = train.train_and_evaluate(config, workdir)
  assert second['status'] == 'finished'
  assert_trees_bitwise_equal(helpers.final_state(workdir),
                             helpers.final_state(str(tmp_path / 'ref')))
  assert without_timing(second) == without_timing(ref)
  # Rerunning a finished run changes nothing.
  third = train.train_and_evaluate(config, workdir)
  assert without_timing(third) == without_timing(ref)


def test_fold_all_runs_every_fold(synthetic_data_dir, tmp_path, monkeypatch):
  """fold=all: one workdir per fold and a summary (the training itself is stubbed out here)."""
  seen = []

  def fake_fold(config, workdir):
    seen.append((config.fold, workdir))
    return dict(status='finished', final_error=10.0 * config.fold, fold=config.fold,
                workdir=workdir)

  monkeypatch.setattr(train, '_train_fold', fake_fold)
  config = helpers.tiny_config(synthetic_data_dir, 'fold=all')
  out = train.train_and_evaluate(config, str(tmp_path))
  n = data.dataset_info(config).num_folds
  assert [f for f, _ in seen] == list(range(1, n + 1))
  assert [w for _, w in seen] == [str(tmp_path / f'fold_{k}') for k in range(1, n + 1)]
  assert out['status'] == 'finished' and out['mean_error'] == pytest.approx(10.0 * (n + 1) / 2)
  with open(tmp_path / 'cv_results.json') as f:
    assert json.load(f)['mean_error'] == pytest.approx(out['mean_error'])


def test_writer_and_store_are_closed_on_every_way_out(synthetic_data_dir, tmp_path, monkeypatch):
  """Finished, preempted, stopped by a non-finite step, or failed: the TensorBoard writer and the
  checkpoint store of the fold are closed (once each), and a failure keeps its own exception."""
  closed = []
  for cls in (summaries.SummaryWriter, checkpoints.CheckpointStore):
    def close(self, real=cls.close):
      closed.append(type(self).__name__)
      return real(self)
    monkeypatch.setattr(cls, 'close', close)
  real_loader = data.make_train_loader

  def loader_doing(what):
    def make(*args, **kwargs):
      loader = real_loader(*args, **kwargs)
      batches = loader.batches

      def batches_doing(epoch, start_step=0):
        for i, b in enumerate(batches(epoch, start_step), start_step):
          if (epoch, i) == (1, 0):
            if what == 'sigterm':
              os.kill(os.getpid(), signal.SIGTERM)
            elif what == 'nan':
              b = dict(b, x=np.full_like(b['x'], np.nan))
            else:
              raise OSError(5, 'Input/output error', 'the data')
          yield b
      loader.batches = batches_doing
      return loader
    return make

  config = helpers.tiny_config(synthetic_data_dir, 'strategy=bc')  # 2 epochs x 2 steps
  both = ['SummaryWriter', 'CheckpointStore']
  assert train.train_and_evaluate(config, str(tmp_path / 'done'))['status'] == 'finished'
  assert closed == both
  for what, raises in (('sigterm', None), ('nan', train.NonFiniteError), ('io', OSError)):
    closed.clear()
    monkeypatch.setattr(data, 'make_train_loader', loader_doing(what))
    if raises is None:
      assert train.train_and_evaluate(config, str(tmp_path / what))['status'] == 'preempted'
    else:
      with pytest.raises(raises) as e:
        train.train_and_evaluate(config, str(tmp_path / what))
      assert what != 'io' or e.value.filename == 'the data'
    assert closed == both, what


def test_closing_after_a_failure_keeps_the_failure(caplog):
  """train._close: with an exception on its way, a close that fails is logged in one line (the
  run's own exception stays the one reported); otherwise it is raised after every close ran."""
  class Failing:
    def close(self):
      raise OSError(28, 'No space left on device', 'events.out')

  class Closing:
    closed = False

    def close(self):
      self.closed = True

  later = Closing()
  train._close((Failing(), None, later), quietly=True)
  assert later.closed
  assert any('could not be closed' in r.getMessage() and '\n' not in r.getMessage()
             for r in caplog.records)
  later = Closing()
  with pytest.raises(OSError, match='No space left'):
    train._close((Failing(), later), quietly=False)
  assert later.closed


def test_seeds_lay_out_one_run_per_seed_and_fold(synthetic_data_dir, tmp_path, monkeypatch):
  """seeds=(3,5), fold=all: run (s, k) in workdir/seed_s/fold_k with seed s; cv_results.json per
  seed, seeds_results.json over the seeds (training stubbed out)."""
  seen = []

  def fake_fold(config, workdir):
    seen.append((config.seed, config.seeds, config.fold, workdir))
    return dict(status='finished', final_error=float(config.seed + config.fold), fold=config.fold,
                workdir=workdir)

  monkeypatch.setattr(train, '_train_fold', fake_fold)
  config = helpers.tiny_config(synthetic_data_dir, 'fold=all,seeds=(3,5)')
  out = train.train_and_evaluate(config, str(tmp_path))
  n = data.dataset_info(config).num_folds
  assert seen == [(s, None, k, str(tmp_path / f'seed_{s}' / f'fold_{k}'))
                  for s in (3, 5) for k in range(1, n + 1)]
  means = [s + (n + 1) / 2 for s in (3, 5)]
  for s, mean in zip((3, 5), means):
    cv = helpers.read_json(tmp_path / f'seed_{s}' / 'cv_results.json')
    assert cv['seed'] == s and cv['mean_error'] == pytest.approx(mean)
    assert helpers.read_json(tmp_path / f'seed_{s}' / 'config.json')['seed'] == s
  assert out == helpers.read_json(tmp_path / 'seeds_results.json')
  assert [s['error'] for s in out['seeds']] == pytest.approx(means)
  assert out['mean_error'] == pytest.approx(np.mean(means))
  assert out['std_error'] == pytest.approx(np.std(means, ddof=1))
  # One fold and seeds: workdir/seed_s is the run's workdir.
  seen.clear()
  config = helpers.tiny_config(synthetic_data_dir, 'fold=2,seeds=(0,1)')
  out = train.train_and_evaluate(config, str(tmp_path / 'one'))
  assert [w for *_, w in seen] == [str(tmp_path / 'one' / f'seed_{s}') for s in (0, 1)]
  assert [s['error'] for s in out['seeds']] == [2.0, 3.0] and out['status'] == 'finished'


@pytest.mark.parametrize('seeds', ['()', '(1,1)', '(-1,)'])
def test_bad_seeds_are_refused_in_one_line(synthetic_data_dir, tmp_path, seeds):
  config = helpers.tiny_config(synthetic_data_dir, f'fold=all,seeds={seeds}')
  with pytest.raises(config_checks.ConfigError, match=r'^config.seeds=.* must be distinct'):
    train.train_and_evaluate(config, str(tmp_path))


def test_eta_counts_evaluations_and_saves_once_the_wall_rate_is_known(monkeypatch):
  """The logged steps/s is training only; the ETA, from the second progress log on, is wall time
  since the first (compilation excluded), so slow saves or evaluations show in it."""
  clock = iter([100.0, 140.0])  # first log at t=100 s (step 50), second at t=140 s (step 100)
  monkeypatch.setattr(summaries.time, 'time', lambda: next(clock))
  pace = summaries.Pace()  # pylint: disable=protected-access
  assert pace.eta(50, 1050, train_rate=10.0) == '0:01:40'  # 1000 steps at the training rate
  # 50 steps in 40 s of wall time: 1.25 steps/s, although training alone ran at 10 steps/s.
  assert pace.eta(100, 1050, train_rate=10.0) == '0:12:40 at 1.25 steps/s overall'


def test_save_share_warns_once_when_checkpoints_take_most_of_the_time(monkeypatch):
  """As on the H200: 7 s of training, then a 26 s save, every period. One warning, naming the
  field and the numbers; a period where saves take less than half the time says nothing."""
  now = [0.0]
  monkeypatch.setattr(summaries.time, 'time', lambda: now[0])
  warnings = []
  monkeypatch.setattr(summaries.logging, 'warning', lambda msg, *a: warnings.append(msg % a))

  def period(share, train_s, save_s):
    now[0] += train_s
    share.timed(lambda: now.__setitem__(0, now[0] + save_s))
    share.check(every_epochs=10)

  quiet = summaries.SaveShare()  # pylint: disable=protected-access
  for _ in range(3):
    period(quiet, train_s=60.0, save_s=5.0)
  assert not warnings
  share = summaries.SaveShare()  # pylint: disable=protected-access
  period(share, train_s=60.0, save_s=5.0)
  assert not warnings
  period(share, train_s=7.0, save_s=26.0)
  assert warnings == ['checkpoints took 26 s of the last 33 s of training (79%): raise '
                      'config.checkpoint_every_epochs (now 10) so that saves take less; a SIGTERM '
                      'still saves first']
  period(share, train_s=7.0, save_s=26.0)
  assert len(warnings) == 1  # once
