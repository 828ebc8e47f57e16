"""intermix_jax.report: fake workdirs -> the paper-format table, summary and plots; the paper's
values read from the package data file; names and protocol rows taken from their registries."""
import configparser
import importlib.resources
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import helpers
from intermix_jax import mixing
from intermix_jax import models
from intermix_jax import protocol
from intermix_jax import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST = '### Last epoch (the headline)'
BEST = '### ' + report.BEST_TITLE
section = helpers.section

CLASSES = ['dog', 'rain', 'sea_waves', 'crying_baby', 'clock_tick', 'sneezing', 'helicopter',
           'chainsaw', 'rooster', 'crackling_fire']


def fake_run(root, *, dataset='esc10', backbone='envnet', strategy='intermix', method=None, fold=1,
             seed=0, final_error=10.0, status='finished', strong_augment=False, num_folds=5,
             preds=None, labels=None, config=None, identity=None, folder=None):
  """A results.json under root/<dataset>/<backbone>/<folder or method>/seed<s>/fold<f>/; `config`:
  more config fields; `identity`: its dataset_identity (none by default). Its test error is
  `final_error` at the last epoch (2) and 1 point lower at epoch 1: best epoch = final_error - 1."""
  d = os.path.join(root, dataset, backbone, folder or method or strategy, f'seed{seed}',
                   f'fold{fold}')
  os.makedirs(d, exist_ok=True)
  labels = labels if labels is not None else list(range(10)) * 2
  preds = preds if preds is not None else labels
  r = dict(status=status, dataset=dataset, backbone=backbone, strategy=strategy,
           method=method or strategy, fold=fold, seed=seed, num_folds=num_folds,
           final_error=final_error if status == 'finished' else None, num_classes=10,
           class_names=CLASSES, config=dict(strong_augment=strong_augment, **(config or {})),
           history=[dict(epoch=1, train_error=50.0, test_error=final_error - 1.0),
                    dict(epoch=2, train_error=30.0, test_error=final_error)],
           predictions=dict(labels=labels, preds=preds,
                            filenames=[f'{fold}-{k}.wav' for k in range(len(labels))]))
  if identity is not None:
    r['dataset_identity'] = dict(identity, test_fold=fold, test_digest=f'test{fold}',
                                 train_digest=f'train{fold}')
  with open(os.path.join(d, 'results.json'), 'w') as f:
    json.dump(r, f)
  return d


def test_two_workdirs_give_the_expected_table(tmp_path):
  """Two workdirs (two seeds) of EnvNet + InterMix on ESC-10, five folds each."""
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  errs = {0: [10.0, 12.0, 8.0, 9.0, 11.0], 1: [11.0, 13.0, 9.0, 10.0, 12.0]}
  for seed, root in ((0, a), (1, b)):
    for fold, e in enumerate(errs[seed], 1):
      fake_run(root, seed=seed, fold=fold, final_error=e)
  out = str(tmp_path / 'out')
  result = report.write_report([a, b], out)
  # Per-seed CV errors 10.0 and 11.0: mean 10.5, sample std 0.7071; paper EnvNet/InterMix/ESC-10 = 9.1.
  (g,) = result['groups']
  assert g['cv_errors'] == {0: 10.0, 1: 11.0}
  np.testing.assert_allclose([g['mean'], g['std']], [10.5, np.std([10.0, 11.0], ddof=1)])
  assert g['std_over'] == 'seeds' and g['paper'] == 9.1 and not g['partial']
  md = result['markdown']
  assert '## ESC-10' in md
  assert g['best']['cv_errors'] == {0: 9.0, 1: 10.0} and g['best']['mean'] == 9.5
  assert '| model | intermix |' in section(md, LAST)
  # The last epoch is the headline, alone; the paper's value stands beside the best epoch only.
  assert '| EnvNet | 10.5 ± 0.7 |' in section(md, LAST)
  assert '| EnvNet | 9.5 ± 0.7 (9.1) |' in section(md, BEST)
  assert 'every 50 epochs' not in md and 'evaluated epochs only' in section(md, BEST)
  assert ('| esc10 | envnet | intermix | 0,1 | 1,2,3,4,5 | 10.50 | 0.71 | seeds | 9.50 | 0.71 | '
          '9.1 | +0.4 |') in md
  names = sorted(os.listdir(out))
  assert names == sorted(['report.md', 'summary.json', 'curves_esc10_envnet.png',
                          'confusion_esc10_envnet_intermix.png', 'errorbars_esc10.png'])
  for n in names:
    assert os.path.getsize(os.path.join(out, n)) > 0
  with open(os.path.join(out, 'summary.json')) as f:
    s = json.load(f)
  assert s['groups'][0]['mean'] == pytest.approx(10.5)


def test_table_layout_single_seed_partial_unfinished_and_ablation(tmp_path):
  root = str(tmp_path)
  for fold in range(1, 6):  # EnvNet-v2 standard and BC, one seed: ± over folds (†)
    fake_run(root, backbone='envnetv2', strategy='standard', fold=fold, final_error=14.0 + fold)
    fake_run(root, backbone='envnetv2', strategy='bc', fold=fold, final_error=10.0)
    fake_run(root, backbone='envnetv2', strategy='intermix', method='intermix[r-weighting]+aug',
             fold=fold, final_error=7.0, strong_augment=True)
  fake_run(root, backbone='m18', strategy='bc', fold=1, final_error=20.0)  # partial CV (*)
  fake_run(root, backbone='envnet', strategy='bc', fold=1, status='running')  # left out
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  md = result['markdown']
  last, best = section(md, LAST), section(md, BEST)
  assert '| model | standard | bc |' in last
  assert '| EnvNet-v2 | 17.0 ± 1.6† | 10.0 ± 0.0† |' in last
  assert '| EnvNet-v2 | 16.0 ± 1.6† (14.2) | 9.0 ± 0.0† (10.6) |' in best
  assert '| M18 |  | 20.0 (n=1)†* |' in last and '| M18 |  | 19.0 (n=1)†* (14.2) |' in best
  assert '| + hidden mixing | 7.0 ± 0.0† |' in last
  assert '| + hidden mixing | 6.0 ± 0.0† (7.7) |' in best
  assert any('envnet' in n and "status 'running'" in n for n in result['notes'])


def test_a_single_run_has_no_spread_and_legends_count_runs(tmp_path):
  """One run is 'n=1', never '± 0.0' (issue 27 item 7); a legend says '1 run', not '1 runs'."""
  root = str(tmp_path)
  fake_run(root, backbone='envnet', strategy='bc', fold=3, final_error=20.0)
  for fold in (1, 2):  # two folds of equal error: a real spread of 0.0 over n=2
    fake_run(root, backbone='envnet', strategy='intermix', fold=fold, final_error=10.0)
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  bc, im = sorted(result['groups'], key=lambda g: g['method'])
  assert (bc['method'], bc['n'], bc['std'], bc['fold_std']) == ('bc', 1, None, {0: None})
  assert (im['n'], im['std']) == (2, 0.0)
  md = result['markdown']
  assert '| EnvNet | 20.0 (n=1)†* | 10.0 ± 0.0†* |' in section(md, LAST)
  assert '| EnvNet | 19.0 (n=1)†* (11.3) | 9.0 ± 0.0†* (9.1) |' in section(md, BEST)
  assert '± 0.0' not in md.replace('10.0 ± 0.0', '').replace('9.0 ± 0.0', '')
  assert '| bc | 0 | — | — | 20.00 | — | — | 20.00 | n=1 | folds | 19.00 | 11.3 |' in md
  assert '| esc10 | envnet | bc | 0 | 3* | 20.00 | n=1 | folds | 19.00 | n=1 | 11.3 | +7.7 |' in md
  with open(tmp_path / 'out' / 'summary.json') as f:
    assert json.load(f)['groups'][0]['std'] is None
  assert report.curve_label(bc) == 'bc (1 run)'
  assert report.curve_label(im) == 'intermix (2 runs)'
  one = dict(method='standard', runs=[dict(seed=0, fold=1, num_epochs=4)])
  assert report.curve_label(one) == 'standard (1 run, 4 epochs)'


def test_best_epoch_on_the_test_fold_reads_evaluated_epochs_only(tmp_path):
  """The best epoch is the minimum over the epochs evaluated (history test_error), never over
  epochs without one; a run without any has none (n/a), and the table says at which cadence."""
  root = str(tmp_path)
  for fold in range(1, 6):
    d = fake_run(root, strategy='standard', fold=fold, final_error=20.0,
                 config=dict(eval_every_epochs=50))
    path = os.path.join(d, 'results.json')
    with open(path) as f:
      r = json.load(f)
    r['history'] = [dict(epoch=1, train_error=1.0), dict(epoch=50, test_error=15.0 + fold),
                    dict(epoch=60, train_error=0.5, test_error=None),
                    dict(epoch=100, test_error=20.0)]
    with open(path, 'w') as f:
      json.dump(r, f)
    d = fake_run(root, strategy='bc', fold=fold, final_error=30.0,
                 config=dict(eval_every_epochs=50))
    path = os.path.join(d, 'results.json')
    with open(path) as f:
      r = json.load(f)
    del r['history']
    with open(path, 'w') as f:
      json.dump(r, f)
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  bc, std = sorted(result['groups'], key=lambda g: g['method'])
  assert bc['best'] is None and std['best']['seeds'] == {0: {f: 15.0 + f for f in range(1, 6)}}
  assert report.best_epoch_error(std['runs'][0]) == 16.0
  best = section(result['markdown'], BEST)
  assert '| EnvNet | 18.0 ± 1.6† (12.8) | n/a (11.3) |' in best
  assert 'every 50 epochs and the last' in best
  assert '| 20.0 ± 0.0† | 30.0 ± 0.0† |' in section(result['markdown'], LAST)
  assert '| esc10 | envnet | bc | 0 | 1,2,3,4,5 | 30.00 | 0.00 | folds | n/a | | 11.3 |  |' in (
      result['markdown'])


def test_confusion_matrix_counts():
  runs = [dict(predictions=dict(labels=[0, 0, 1, 2], preds=[0, 1, 1, 0])),
          dict(predictions=dict(labels=[2], preds=[2]))]
  cm = report.confusion_matrix(runs, 3)
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])


def test_paper_values_follow_spec_table():
  assert report.paper_value('esc50', 'envnetv2', 'intermix') == 15.8
  assert report.paper_value('urbansound8k', 'envnetv2', 'standard+aug') == 24.9
  assert report.paper_value('esc10', 'piczakcnn', 'speechmix') == 8.4
  assert report.paper_value('esc50', 'envnetv2', 'intermix[layers=0,r-weighting]+aug') == 13.6
  assert report.paper_value('esc50', 'envnet', 'mixup') is None
  assert report.paper_value('synthetic', 'envnet', 'intermix') is None


def test_command_line(tmp_path):
  d = fake_run(str(tmp_path / 'runs'), dataset='synthetic', num_folds=5, final_error=30.0)
  out = str(tmp_path / 'rep')
  p = subprocess.run([sys.executable, '-m', 'intermix_jax.report', str(tmp_path / 'runs'),
                      '--out', out, '--no-plots'], capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr
  assert '30.0 (n=1)†*' in p.stdout and os.path.exists(os.path.join(out, 'report.md'))
  p = subprocess.run([sys.executable, '-m', 'intermix_jax.report', str(tmp_path / 'nothing')],
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 1 and 'nothing' in p.stderr


def test_command_line_in_process_through_the_package(tmp_path, capsys):
  fake_run(str(tmp_path / 'runs'), dataset='esc10', backbone='piczakcnn', strategy='bc',
           final_error=12.5)
  assert report.main([str(tmp_path / 'runs'), '--out', str(tmp_path / 'rep'), '--no-plots']) == 0
  out = capsys.readouterr().out
  assert '| PiczakCNN | 12.5 (n=1)†* |' in section(out, LAST)
  assert '| PiczakCNN | 11.5 (n=1)†* (9.4) |' in section(out, BEST)
  assert report.main([str(tmp_path / 'nothing')]) == 1


def test_paper_values_file_is_package_data():
  """paper_values.json is found through the package (importlib.resources), and setup.cfg ships it
  with the package so an installed copy finds it too."""
  path = importlib.resources.files('intermix_jax.report').joinpath(report.PAPER_VALUES_FILE)
  assert path.is_file()
  values = json.loads(path.read_text('utf-8'))
  assert values == report.load_paper_values()
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, 'setup.cfg'))
  shipped = cfg['options.package_data']['intermix_jax.report'].split()
  assert report.PAPER_VALUES_FILE in shipped
  # The lookups are the file's numbers: table 1 rows in the paper's order, with their titles.
  rows = values['table1']['rows']
  assert report.BACKBONE_ORDER == tuple(r['row'] for r in rows)
  assert report.BACKBONE_ORDER == ('m18', 'soundnet5', 'envnet', 'piczakcnn', 'envnetv2',
                                   'envnetv2+aug')
  assert report.BACKBONE_TITLE['envnetv2+aug'] == 'EnvNet-v2 + strong aug'
  assert report.PAPER_TABLE1['envnetv2+aug']['intermix'] == (12.9, 7.2, 20.5)
  assert list(report.PAPER_TABLE2) == [r['method'] for r in values['table2']['rows']]
  assert report.PAPER_TABLE2['intermix[r-weighting]+aug'] == ('+ hidden mixing', (13.3, 7.7, 20.8))
  assert report.PAPER_TABLE3_EPS == (1e-2, 1e-3, 1e-4, 1e-5)
  assert report.PAPER_TABLE3['bc'] == (47.2, 28.7, 26.9, 26.8)
  assert [report.DATASET_TITLE[d] for d in report.DATASET_COLUMN] == [
      'ESC-50', 'ESC-10', 'UrbanSound8K']


def test_names_come_from_their_registries():
  assert report.STRATEGY_ORDER == mixing.STRATEGY_NAMES
  assert report.STRATEGY_ORDER == ('standard', 'mixup', 'bc', 'speechmix', 'intermix')
  assert tuple(report.DATASET_COLUMN) == protocol.PAPER_DATASETS
  assert list(report.DATASET_COLUMN.values()) == list(range(len(protocol.PAPER_DATASETS)))
  # The paper's rows, strategies and ablation labels name registered backbones and strategies.
  for row, errors in report.PAPER_TABLE1.items():
    assert row.replace('+aug', '') in models.MODELS, row
    assert set(errors) <= set(mixing.STRATEGY_NAMES), row
  assert report.TABLE2_BACKBONE in models.MODELS and report.TABLE2_ROW in report.PAPER_TABLE1
  assert {report.base_method(m) for m in report.PAPER_TABLE2} <= set(mixing.STRATEGY_NAMES)
  assert set(report.PAPER_TABLE3) <= set(mixing.STRATEGY_NAMES)
  assert report.TABLE3_DATASET in protocol.PAPER_DATASETS
  assert report.strategy_rank('speechmix+aug') == 3 and report.strategy_rank('other') == 99
  assert report.row_rank('envnetv2+aug') == 5 and report.row_rank('mynet') == 99


def _protocol_run(backbone, dataset, strategy='bc', **changes):
  row = protocol.optimisation_row(backbone, dataset)
  cfg = dict(num_epochs=row['num_epochs'], double_epochs_for_mixing=True, batch_size=64,
             opt=dict(lr=row['lr'], schedule=list(row['schedule']),
                      warmup_epochs=row['warmup_epochs']),
             model=dict(width=1.0, fc_units=None), num_eval_crops=10, steps_per_epoch=None)
  cfg.update(changes)
  return dict(dataset=dataset, backbone=backbone, strategy=strategy, config=cfg)


def test_protocol_deviations_read_intermix_jax_protocol():
  for backbone in ('m18', 'soundnet5', 'envnet', 'piczakcnn', 'envnetv2'):
    for dataset in protocol.PAPER_DATASETS:
      assert report.protocol_deviations(_protocol_run(backbone, dataset)) == [], (backbone, dataset)
  run = _protocol_run('envnetv2', 'esc50', num_epochs=30, batch_size=32,
                      model=dict(width=0.5, fc_units=None), steps_per_epoch=5,
                      double_epochs_for_mixing=False)
  assert report.protocol_deviations(run) == [
      'num_epochs 30 (protocol 1000)', 'batch_size 32 (protocol 64)',
      'model.width 0.5 (protocol 1.0)', 'steps_per_epoch 5 (protocol None)',
      'double_epochs_for_mixing False (protocol True)']
  # Standard training does not double; an older config without num_eval_crops is not flagged,
  # a model config without width is.
  run = _protocol_run('envnet', 'urbansound8k', strategy='standard',
                      double_epochs_for_mixing=False, model=dict(fc_units=None))
  del run['config']['num_eval_crops']
  assert report.protocol_deviations(run) == ['model.width None (protocol 1.0)']
  # Not a paper dataset, an unknown backbone or an incomplete config: cannot be told.
  assert report.protocol_deviations(_protocol_run('envnet', 'esc10') | dict(
      dataset='synthetic')) is None
  assert report.protocol_deviations(_protocol_run('envnet', 'esc10') | dict(
      backbone='mynet')) is None
  assert report.protocol_deviations(dict(dataset='esc10', backbone='envnet', config={})) is None


def test_adversarial_folds_from_the_runs_when_the_attack_does_not_record_them(tmp_path):
  """Table 3's partial mark (*) needs the fold count: the attack's num_folds, else its dataset's
  from the results.json runs."""
  records = [dict(dataset='esc10', backbone='envnet', method='bc', fold=f, seed=0,
                  clean_error=10.0, attacked_error={'0.01': 50.0}, _path=f'a{f}')
             for f in (1, 2, 3, 4)]
  runs = [dict(dataset='esc10', num_folds=5, _path='r')]
  (with_runs,), _, _ = report.aggregate_adversarial(records, runs)
  assert with_runs['clean']['partial'] and with_runs['attacked'][0.01]['partial']
  (alone,), _, _ = report.aggregate_adversarial(records)
  assert not alone['clean']['partial']
  recorded = [dict(r, num_folds=4) for r in records]
  (own,), _, _ = report.aggregate_adversarial(recorded, runs)
  assert not own['clean']['partial'] and own['clean']['folds'] == [1, 2, 3, 4]
  # A second attack of fold 1 with another result: neither counts, and the note says so.
  again = dict(records[0], clean_error=12.0, _path='b1')
  (g,), _, grouping = report.aggregate_adversarial(recorded + [again], runs)
  assert g['clean']['folds'] == [2, 3, 4] and g['num_records'] == 3
  assert grouping == ['esc10/envnet/bc seed 0 fold 1: 2 attacks of this experiment disagree; none '
                      "counted (move all but one out of the report's folders): a1, b1"]


# --- grouping by experiment (issue 27 item 2) -------------------------------------------------
IDENTITY = dict(dataset='esc10', builder='esc10', version='1.0.0', sample_rate=44100,
                class_names=CLASSES, num_folds=5, fold_clips={str(k): 80 for k in range(1, 6)},
                source_fingerprint='abc', skipped_files=0)


@pytest.mark.parametrize('short_folder', ['a_short', 'z_short'])
def test_runs_of_other_configs_are_never_averaged_together(tmp_path, short_folder, capsys):
  """A fold-1 run of 4 epochs beside a 5-fold run of 2 epochs: two experiments, two rows, the same
  numbers whichever folder name sorts first; the split is named in report.md and on the console,
  as is a run left out unfinished."""
  root = str(tmp_path / 'runs')
  for fold in range(1, 6):
    fake_run(root, strategy='standard', fold=fold, final_error=10.0 * fold,
             config=dict(num_epochs=2), folder='long')
  fake_run(root, strategy='standard', fold=1, final_error=99.0, config=dict(num_epochs=4),
           folder=short_folder)
  fake_run(root, strategy='standard', fold=2, status='running', config=dict(num_epochs=4),
           folder=short_folder)
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  two, four = result['groups']
  assert (two['variant'], two['mean'], two['n'], two['partial']) == ('num_epochs=2', 30.0, 5, False)
  assert (four['variant'], four['mean'], four['n'], four['partial']) == ('num_epochs=4', 99.0, 1,
                                                                         True)
  md = result['markdown']
  assert '| EnvNet {num_epochs=2} | 30.0 ± 15.8† |' in section(md, LAST)
  assert '| EnvNet {num_epochs=4} | 99.0 (n=1)†* |' in section(md, LAST)
  assert '| EnvNet {num_epochs=2} | 29.0 ± 15.8† (12.8) |' in section(md, BEST)
  assert '| EnvNet {num_epochs=4} | 98.0 (n=1)†* (12.8) |' in section(md, BEST)
  (line,) = result['grouping']
  assert line == ('esc10/envnet: 2 experiment setups, never averaged together, shown apart (their '
                  'configs differ in num_epochs): {num_epochs=2}: standard 5 runs; '
                  '{num_epochs=4}: standard 1 run')
  assert f'- {line}' in md.split('## Runs split or set aside')[1]
  assert 'first one found' not in md
  assert '| esc10 | envnet | standard {num_epochs=4} | 0 | 1* | 99.00 | n=1 | folds |' in md
  assert report.main([root, '--out', str(tmp_path / 'out2'), '--no-plots']) == 0
  out = capsys.readouterr().out
  assert f'- {line}' in section(out, '## Runs split or set aside')
  (running,) = [n for n in result['notes'] if "status 'running'" in n]
  assert f'- {running}' in section(out, '## Left out') and short_folder in running


def test_fields_that_do_not_define_an_experiment_do_not_split(tmp_path):
  """Run-local fields (NOT_DEFINING), a field added since (workdir.ADDED_FIELDS) and one removed
  (REMOVED_FIELDS) leave one group; a defining field, an option of the method's label or the
  dataset identity split it."""
  assert {'fold', 'seed', 'data_dir', 'manual_dir', 'log_every_steps', 'nan_policy', 'stack_runs',
          'stack_method', 'data_on_device', 'checkpoint_every_epochs'} <= set(report.NOT_DEFINING)
  assert 'eval_every_epochs' not in report.NOT_DEFINING and 'num_epochs' not in report.NOT_DEFINING
  # Values that would read alike are quoted: a variant never names two setups the same.
  assert report.setup_variants([dict(a='1', b=2), dict(a=1, b=2)]) == (['a'], ['a="1"', 'a=1'])
  assert report.setup_variants([dict(a='x'), dict(a='y')]) == (['a'], ['a=x', 'a=y'])
  root = str(tmp_path / 'runs')
  local = [dict(data_dir='/a', log_every_steps=1, model=dict(conv_impl='auto')),
           dict(data_dir='/b', checkpoint_every_epochs=5, nan_policy='skip',
                model=dict(precision='float32')),
           dict(manual_dir='/c', stack_runs=True, keep_checkpoints=1, eval_batch_size=4),
           dict(opt_defaults_from='envnet/esc10', seeds=[0, 1], data_on_device=True),
           dict(data_dir='/d'), dict(data_dir='/e')]
  for fold, cfg in enumerate(local[:5], 1):
    fake_run(root, strategy='bc', fold=fold, final_error=10.0, config=cfg, identity=IDENTITY)
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  (g,) = result['groups']
  assert (g['variant'], sorted(g['seeds'][0]), result['grouping']) == ('', [1, 2, 3, 4, 5], [])
  # Another eval cadence, a mixing option bc reads (its label), other data: three more groups.
  fake_run(root, strategy='bc', seed=1, config=dict(eval_every_epochs=10), identity=IDENTITY)
  fake_run(root, strategy='bc', seed=2,
           config=dict(strategy='bc', mixing=dict(p_weighting=False, pairing=None)),
           identity=IDENTITY, folder='bc_r')
  fake_run(root, strategy='bc', seed=3, identity=dict(IDENTITY, source_fingerprint='other'))
  fake_run(root, strategy='bc', seed=4)  # no dataset_identity recorded
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  titles = sorted(report.method_title(g) for g in result['groups'])
  fp = lambda i: report.setup_variants([dict(dataset_identity=None), dict(dataset_identity=i)])[
      1][1].split('dataset_identity=')[1]
  assert titles == sorted([
      f'bc {{dataset_identity={fp(IDENTITY)}, eval_every_epochs=<absent>}}',
      f'bc {{dataset_identity={fp(IDENTITY)}, eval_every_epochs=10}}',
      f'bc {{dataset_identity={fp(dict(IDENTITY, source_fingerprint="other"))}, '
      'eval_every_epochs=<absent>}',
      'bc {dataset_identity=unrecorded, eval_every_epochs=<absent>}',
      f'bc[r-weighting] {{dataset_identity={fp(IDENTITY)}, eval_every_epochs=<absent>}}'])
  (main,) = [g for g in result['groups'] if sorted(g['seeds']) == [0]]
  assert sorted(main['seeds'][0]) == [1, 2, 3, 4, 5] and main['mean'] == 10.0
  assert ('esc10/envnet: 1 run without a recorded dataset identity kept apart '
          '(dataset_identity=unrecorded): runs of the same config recorded several identities'
          ) in result['grouping']


def test_runs_that_predate_the_dataset_identity_join_the_one_recorded(tmp_path):
  """Older runs record no dataset identity (unknown, not different): with one identity recorded
  by runs of the same config in the row they are one setup, so BC with independent pairs (newer
  code) is compared with standard and with BC with shared pairs (older code) on the same clips."""
  root = str(tmp_path / 'runs')
  for fold in range(1, 6):
    fake_run(root, strategy='standard', fold=fold, final_error=20.0)
    fake_run(root, strategy='bc', method='bc[shared-pairs]', fold=fold, final_error=20.0)
    fake_run(root, strategy='bc', fold=fold, final_error=10.0, identity=IDENTITY)
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  assert {g['variant'] for g in result['groups']} == {''} and len(result['groups']) == 3
  assert result['grouping'] == [
      'esc10/envnet: 10 runs without a recorded dataset identity (older code) counted with the runs '
      'of the same config that recorded one: same dataset name and config; paired comparisons '
      'also check the clips']
  assert {(x['method'], x['reference']) for x in result['comparisons']} == {
      ('bc', 'standard'), ('bc[shared-pairs]', 'standard'), ('bc[shared-pairs]', 'bc')}


def test_duplicate_runs_count_once_or_not_at_all_never_silently(tmp_path):
  """Two runs of one experiment, seed and fold: the same result counts once; different results
  count not at all (the seed then lacks that fold); one line each, whatever the folder names."""
  root = str(tmp_path / 'runs')
  for fold in range(1, 6):
    fake_run(root, strategy='standard', fold=fold, final_error=20.0)
    fake_run(root, strategy='standard', seed=1, fold=fold, final_error=30.0)
  fake_run(root, strategy='standard', fold=2, final_error=20.0, folder='again')  # same result
  fake_run(root, strategy='standard', seed=1, fold=3, final_error=31.0, folder='again')  # differs
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  (g,) = result['groups']
  assert sorted(g['seeds']) == [0] and g['mean'] == 20.0 and len(g['runs']) == 5
  same, differ, seed_out = result['grouping']
  assert same.startswith('esc10/envnet/standard seed 0 fold 2: 2 runs of this experiment with the '
                         'same result; counted once (')
  counted, other = same.split('; not: ')  # the first by path counts: again/ < standard/
  assert counted.endswith(os.path.join('again', 'seed0', 'fold2', 'results.json'))
  assert other.endswith(os.path.join('standard', 'seed0', 'fold2', 'results.json)'))
  assert differ.startswith('esc10/envnet/standard seed 1 fold 3: 2 runs of this experiment '
                           'disagree; none counted')
  assert seed_out.startswith('esc10/envnet/standard seed 1: folds [3] missing; seed left out')
  for line in result['grouping']:
    assert '\n' not in line and f'- {line}' in result['markdown']


def test_a_fold_whose_runs_read_other_clips_is_left_out(tmp_path):
  root = str(tmp_path / 'runs')
  for seed in (0, 1):
    for fold in range(1, 6):
      fake_run(root, strategy='bc', seed=seed, fold=fold, final_error=10.0 + seed,
               identity=IDENTITY)
  path = os.path.join(root, 'esc10', 'envnet', 'bc', 'seed1', 'fold2', 'results.json')
  with open(path) as f:
    r = json.load(f)
  r['dataset_identity']['test_digest'] = 'other'
  with open(path, 'w') as f:
    json.dump(r, f)
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  (g,) = result['groups']
  assert g['partial'] and sorted(g['seeds'][0]) == [1, 3, 4, 5]
  assert result['grouping'] == ['esc10/envnet/bc fold 2: its runs trained or tested on other clips '
                                '(seeds 1: train/test digests train2/other; 0: train/test digests '
                                'train2/test2); fold left out']


def test_paired_comparisons_stay_within_one_setup(tmp_path):
  """InterMix at another learning rate has no standard run of its setup: not compared."""
  root = str(tmp_path / 'runs')
  for fold in range(1, 6):
    fake_run(root, strategy='standard', fold=fold, config=dict(opt=dict(lr=0.01)))
    fake_run(root, strategy='intermix', fold=fold, config=dict(opt=dict(lr=0.01)))
    fake_run(root, strategy='intermix', fold=fold, config=dict(opt=dict(lr=0.05)), folder='lr')
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  assert [(x['method'], x['variant']) for x in result['comparisons']] == [
      ('intermix', 'opt.lr=0.01')]
  md = result['markdown']
  assert '| EnvNet {opt.lr=0.01} | 10.0 ± 0.0† | 10.0 ± 0.0† |' in section(md, LAST)
  assert '| EnvNet {opt.lr=0.05} |  | 10.0 ± 0.0† |' in section(md, LAST)
