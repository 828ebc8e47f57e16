"""launch/device/window.py: the accelerator-window plan (what is next, what fits, what it costs),
the guard that stops an item that cannot finish, the code's fingerprint, `collect` into a results
tree with a commit, and (slow) the whole path on this CPU: `bash launch/device/window.sh --cpu`
from an Ogg pack of a small ESC-50 layout, collect, and the report's EnvNet-v2 row with its paired
test."""
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

import fixtures_audio
import helpers
from intermix_jax import config_lib, mixing
from intermix_jax.data import layouts
from launch.device import table_row, window

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H200 = window.MEASURED_CARD


@pytest.fixture
def git_identity(monkeypatch):
  for k in ('AUTHOR', 'COMMITTER'):
    monkeypatch.setenv(f'GIT_{k}_NAME', 'test')
    monkeypatch.setenv(f'GIT_{k}_EMAIL', 'test@example.com')


def finished_run(path, item, seed, fold, final_error=10.0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(dict(status='finished', dataset='esc10', backbone=item.backbone,
                   strategy=item.strategy, method=item.method, fold=fold, seed=seed,
                   final_error=final_error, num_folds=5, versions=dict(git_commit='unknown')), f)


def test_the_plan_is_in_order_with_unambiguous_folders_and_labels():
  assert [i.key for i in window.PLAN] == [
      'envnetv2-standard', 'envnetv2-intermix', 'envnetv2-bc-independent-pairs',
      'envnetv2-speechmix', 'piczakcnn-standard', 'piczakcnn-intermix', 'piczakcnn-speechmix',
      'piczakcnn-bc-independent-pairs', 'piczakcnn-bc-shared-pairs']
  assert [i.part for i in window.PLAN] == list('aabbccccc')
  for item in window.PLAN:
    assert item.folder != 'bc'  # BC's pairing is in every BC folder's name
    arg = item.config_arg('/d', '/m', cpu=False)
    c = config_lib.experiment(arg, dataset='esc10')
    assert (c.backbone, c.strategy, c.fold) == (item.backbone, item.strategy, 'all')
    assert mixing.method_label(c) == item.method, item.key  # what collect checks and report shows
    assert c.checkpoint_every_epochs > 2 * c.num_epochs  # only the final checkpoint
    assert c.model.precision == item.precision
    assert (c.seeds, c.seed) == ((tuple(item.seeds), 0) if item.runs > 5 else (None, 0))
    assert item.steps == c.num_epochs * (2 if item.mixes else 1) * 5
  assert {i.study for i in window.PLAN} == {'esc10_envnetv2_gpu', 'esc10_protocol_gpu'}
  assert all(i.runs == 15 for i in window.PLAN if i.backbone == 'piczakcnn')


def test_the_next_items_come_from_the_results_tree_and_fill_the_budget(tmp_path):
  root = str(tmp_path)
  first, second = window.PLAN[0], window.PLAN[1]
  assert window.unfinished(root)[0] == first
  for seed, fold, rel in first.run_paths():
    finished_run(os.path.join(root, rel), first, seed, fold)
  assert window.unfinished(root)[0] == second
  seed, fold, rel = second.run_paths()[-1]
  finished_run(os.path.join(root, rel), second, seed, fold)  # 1 of 5: still unfinished
  assert window.done_runs(second, root) == 1 and window.unfinished(root)[0] == second
  todo = window.unfinished(root)
  # H200 rates: InterMix (~430 s) and a PiczakCNN standard program (~120 s) do not both fit in
  # 520 s: InterMix, then the first later item that still fits.
  take, skip = window.choose(todo, 520, H200)
  assert take[0] == second and all(t.backbone == 'piczakcnn' for t in take[1:])
  assert {i.key for i, _ in skip} >= {'envnetv2-bc-independent-pairs', 'envnetv2-speechmix'}
  take, _ = window.choose(todo, 60, H200)
  assert take == []
  assert [i.key for i in window.unfinished(root, {'piczakcnn-standard'})] == ['piczakcnn-standard']


def test_estimates_come_from_the_measured_rates_or_a_later_window_on_the_same_card():
  std, mix = window.ITEMS['envnetv2-standard'], window.ITEMS['envnetv2-intermix']
  e = window.estimate(std, H200)
  parts = e['parts']
  assert parts['train'] == pytest.approx(3000 / 23.76) and parts['save'] == pytest.approx(26.0)
  assert e['seconds'] == pytest.approx(sum(parts.values()) * window.MARGIN)
  assert window.estimate(mix, H200)['parts']['train'] == pytest.approx(6000 / 21.39)
  other = window.estimate(mix, 'NVIDIA H100 80GB HBM3')
  assert other['parts']['train'] == pytest.approx(6000 / 21.39 * window.OTHER_CARD)
  # Every item of (a) and (b) fits one call on the H200 by these numbers, with the deps and data.
  for item in window.PLAN[:4]:
    assert window.estimate(item, H200)['seconds'] + window.DEPS_S + window.PREPARE_S < 560
  seen = [dict(device='NVIDIA H100 80GB HBM3', window='w1', startup_s=50.0, end_s=30.0,
               wall_steps_per_s=20.0, item=dict(key='envnetv2-intermix', backbone='envnetv2',
                                                strategy='intermix', seeds=[0]))]
  got = window.estimate(window.ITEMS['envnetv2-speechmix'], 'NVIDIA H100 80GB HBM3', seen)
  assert got['seconds'] == pytest.approx((50 + 6000 / 20 + 30) * window.MARGIN)
  assert 'w1' in got['source']
  assert 'parts' in window.estimate(std, 'NVIDIA H100 80GB HBM3', seen)  # standard: not measured


def test_the_guard_stops_a_trainer_that_cannot_finish_and_lets_one_that_can(tmp_path):
  """A stand-in trainer printing the real log lines: 10 steps/s of 3000 cannot end within 4 s;
  the same at 1000 steps/s of 300 can. The rate counts from the line after the first evaluation."""
  def fake(total, pause):
    return [sys.executable, '-c',
            'import time, sys\n'
            f'print("epoch 1/2: test error 50.00%", flush=True)\n'
            f'for s in range(10, {total} + 1, 10):\n'
            f'  time.sleep({pause})\n'
            f'  print(f"epoch 1/2 step {{s}}/{total} | 5 runs: loss 1.0 | 9.00 steps/s", flush=True)\n']
  start = time.time()
  slow = window.train_guarded(fake(3000, 1.0), str(tmp_path / 'a.log'), dict(os.environ),
                              deadline=start + 8, end_s=1, check_after_s=2)
  assert slow['stopped'].startswith('projected to end') and time.time() - start < 7
  fast = window.train_guarded(fake(300, 0.01), str(tmp_path / 'b.log'), dict(os.environ),
                              deadline=time.time() + 30, end_s=1, check_after_s=0.1)
  assert fast['stopped'] is None and fast['rc'] == 0 and fast['progress'][-1][1:] == (300, 300)
  rates = window._rates(dict(fast, log=str(tmp_path / 'b.log')), None)  # pylint: disable=protected-access
  assert rates['steps_done'] == 300 and rates['train_steps_per_s'] == 9.0


def test_the_fingerprint_names_the_commit_whose_files_ran(tmp_path, git_identity):
  del git_identity
  repo = str(tmp_path)
  for rel, text in (('intermix_jax/a.py', 'a = 1\n'), ('configs/b.py', 'b = 2\n'),
                    ('launch/c.sh', 'echo\n'), ('README.md', 'not fingerprinted\n')):
    os.makedirs(os.path.dirname(os.path.join(repo, rel)) or repo, exist_ok=True)
    with open(os.path.join(repo, rel), 'w') as f:
      f.write(text)
  subprocess.run(['git', 'init', '-q', repo], check=True)
  subprocess.run(['git', '-C', repo, 'add', '.'], check=True)
  subprocess.run(['git', '-C', repo, 'commit', '-q', '-m', 'one'], check=True)
  head = subprocess.run(['git', '-C', repo, 'rev-parse', 'HEAD'], capture_output=True,
                        text=True).stdout.strip()
  prints = window.fingerprint(repo)
  assert sorted(prints) == ['configs/b.py', 'intermix_jax/a.py', 'launch/c.sh']
  assert window.matching_commit(prints, repo) == (head, [])
  with open(os.path.join(repo, 'configs', 'b.py'), 'a') as f:
    f.write('# changed\n')
  commit, differs = window.matching_commit(window.fingerprint(repo), repo)
  assert commit is None and differs == ['configs/b.py']
  subprocess.run(['git', '-C', repo, 'commit', '-q', '-am', 'two'], check=True)
  assert window.matching_commit(prints, repo)[0] == head  # an older commit still matches


def write_window(files_at, item, runs, window_id='20261201T0000Z-nvidia-h200', **rec):
  """A window's files as a device call returns them: window.json and <key>.tgz of `runs`."""
  os.makedirs(files_at, exist_ok=True)
  staging = os.path.join(files_at, 'staging')
  with tarfile.open(os.path.join(files_at, f'{item.key}.tgz'), 'w:gz') as tar:
    for seed, fold, kwargs in runs:
      path = os.path.join(staging, f'seed{seed}', f'fold{fold}', 'results.json')
      finished_run(path, item, seed, fold)
      if kwargs:
        with open(path) as f:
          r = dict(json.load(f), **kwargs)
        with open(path, 'w') as f:
          json.dump(r, f)
      tar.add(path, arcname=f'{item.key}/runs/seed{seed}/fold{fold}/results.json')
  record = dict(key=item.key, item=dict(vars(item), seeds=list(item.seeds)), status='finished',
                bundle=f'{item.key}.tgz', seconds=400.0, estimate_s=430, wall_steps_per_s=20.1,
                startup_s=50.0, end_s=30.0, **rec)
  with open(os.path.join(files_at, 'window.json'), 'w') as f:
    json.dump(dict(window=window_id, device='NVIDIA H200', machine='NVIDIA H200, ...',
                   command='bash launch/device/window.sh /out', code={}, items=[record]), f)


def test_collect_checks_copies_records_and_commits_only_its_paths(tmp_path, git_identity):
  del git_identity
  repo = str(tmp_path / 'repo')
  results = os.path.join(repo, 'results')
  os.makedirs(results)
  subprocess.run(['git', 'init', '-q', repo], check=True)
  with open(os.path.join(repo, 'other.txt'), 'w') as f:
    f.write('staged work of someone else\n')
  subprocess.run(['git', '-C', repo, 'add', 'other.txt'], check=True)
  item = window.ITEMS['envnetv2-intermix']
  kept = os.path.join(results, item.run_paths()[0][2])
  finished_run(kept, item, 0, 1, final_error=1.0)  # already committed by an earlier window
  files_at = str(tmp_path / 'files')
  write_window(files_at, item, [(0, 1, {}), (0, 2, {}), (0, 3, {'fold': 4}),
                                (0, 4, {'method': 'intermix[x]'}), (0, 5, {})])
  assert window.main(['collect', files_at, '--results', results]) == 1  # two runs refused
  written = [os.path.join(results, rel) for _, k, rel in item.run_paths() if k in (2, 5)]
  for path in written:
    with open(path) as f:
      r = json.load(f)
    assert r['status'] == 'finished' and r['versions']['window'] == '20261201T0000Z-nvidia-h200'
  assert not os.path.exists(os.path.join(results, item.run_paths()[2][2]))  # fold field 4
  assert not os.path.exists(os.path.join(results, item.run_paths()[3][2]))  # another method
  with open(kept) as f:
    assert json.load(f)['final_error'] == 1.0  # a finished run is never overwritten
  wdir = os.path.join(results, 'esc10_envnetv2_gpu', 'windows')
  with open(os.path.join(wdir, '20261201T0000Z-nvidia-h200.json')) as f:
    meta = json.load(f)
  assert meta['device'] == 'NVIDIA H200' and meta['command'].startswith('bash launch/device/window')
  assert len(meta['runs_written']) == 2 and len(meta['runs_refused']) == 2
  assert meta['items'][0]['wall_steps_per_s'] == 20.1
  readme = open(os.path.join(wdir, 'README.md')).read()
  assert '| 20261201T0000Z-nvidia-h200 | NVIDIA H200 |' in readme
  log = subprocess.run(['git', '-C', repo, 'log', '--name-only', '--format=%s'],
                       capture_output=True, text=True).stdout
  assert log.startswith('results/esc10_envnetv2_gpu: 2 runs from accelerator window '
                        '20261201T0000Z-nvidia-h200 (NVIDIA H200')
  assert 'other.txt' not in log and 'fold2/results.json' in log and 'README.md' in log
  status = subprocess.run(['git', '-C', repo, 'status', '--porcelain'], capture_output=True,
                          text=True).stdout
  assert 'A  other.txt' in status  # left staged, not committed
  # The measured item is what the next plan's estimate on that card uses.
  seen = window.measured(results)
  est = window.estimate(window.ITEMS['envnetv2-speechmix'], 'NVIDIA H200', seen)
  assert est['seconds'] == pytest.approx((50 + 6000 / 20.1 + 30) * window.MARGIN)
  assert 'window 20261201T0000Z-nvidia-h200 (envnetv2-intermix)' in est['source']


@pytest.mark.slow
def test_cpu_dry_run_from_the_pack_to_the_report(tmp_path, git_identity, dry_run_env):
  """`bash launch/device/window.sh --cpu` at tiny sizes (EnvNet-v2 width 0.3, one step, vmapped)
  on a packed 50-clip ESC-10 layout: one item (standard, five folds in one program); then collect
  into a results tree (committed) and the report's EnvNet-v2 ESC-10 cell beside the paper's. One
  item is enough for the script's path (pack, prepare, train, bundle, window.json, collect,
  report); collect's checks of several runs and its refusals:
  test_collect_checks_copies_records_and_commits_only_its_paths; the report's paired comparisons:
  tests/test_tables.py. 1-2 min on 2 shared cores (one compilation)."""
  del git_identity
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'src',
                                           targets=tuple(sorted(layouts.ESC10_TARGETS)))
  assert table_row.main(['pack', '--source', spec.root, '--dest', str(tmp_path / 'pack')]) == 0
  repo = tmp_path / 'repo'
  results = repo / 'results'
  results.mkdir(parents=True)
  subprocess.run(['git', 'init', '-q', str(repo)], check=True)
  out = tmp_path / 'out'
  env = dict(dry_run_env, PYTHON=sys.executable, SCRATCH=str(tmp_path / 'scratch'),
             PACKED=str(tmp_path / 'pack'), ITEMS='envnetv2-standard')
  proc = subprocess.run(['bash', os.path.join(REPO, 'launch', 'device', 'window.sh'), '--cpu',
                         str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  assert sorted(os.listdir(out)) == ['envnetv2-standard.tgz', 'window.json', 'window.log']
  with open(out / 'window.json') as f:
    w = json.load(f)
  assert w['device'] == 'cpu' and [r['status'] for r in w['items']] == ['finished']
  assert 'ITEMS=envnetv2-standard' in w['command']
  assert w['code']['launch/device/window.py']  # the fingerprint travels back
  assert window.main(['collect', str(out), '--results', str(results)]) == 0
  got = sorted(os.path.relpath(os.path.join(b, n), results) for b, _, names in os.walk(results)
               for n in names if n == 'results.json')
  assert got == sorted(rel for _, _, rel in window.ITEMS['envnetv2-standard'].run_paths())
  log = subprocess.run(['git', '-C', str(repo), 'log', '--format=%s'], capture_output=True,
                       text=True).stdout
  assert log.startswith('results/esc10_envnetv2_gpu: 5 runs from accelerator window ')
  report = subprocess.run([sys.executable, '-m', 'intermix_jax.report',
                           str(results / 'esc10_envnetv2_gpu'), '--no-plots'], cwd=REPO,
                          capture_output=True, text=True)
  assert report.returncode == 0, report.stderr
  assert '| model | standard |' in report.stdout
  best = helpers.section(report.stdout, "### Best epoch on the test fold (the reference codes' "
                         "selection; optimistic)")
  row = next(line for line in best.splitlines() if line.startswith('| EnvNet-v2 |'))
  assert '(14.2)' in row  # the paper's table 1 beside the comparable cell
