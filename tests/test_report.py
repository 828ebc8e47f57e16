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

from intermix_jax import mixing
from intermix_jax import models
from intermix_jax import protocol
from intermix_jax import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLASSES = ['dog', 'rain', 'sea_waves', 'crying_baby', 'clock_tick', 'sneezing', 'helicopter',
           'chainsaw', 'rooster', 'crackling_fire']


def fake_run(root, *, dataset='esc10', backbone='envnet', strategy='intermix', method=None, fold=1,
             seed=0, final_error=10.0, status='finished', strong_augment=False, num_folds=5,
             preds=None, labels=None):
  d = os.path.join(root, dataset, backbone, method or strategy, f'seed{seed}', f'fold{fold}')
  os.makedirs(d, exist_ok=True)
  labels = labels if labels is not None else list(range(10)) * 2
  preds = preds if preds is not None else labels
  r = dict(status=status, dataset=dataset, backbone=backbone, strategy=strategy,
           method=method or strategy, fold=fold, seed=seed, num_folds=num_folds,
           final_error=final_error if status == 'finished' else None, num_classes=10,
           class_names=CLASSES, config=dict(strong_augment=strong_augment),
           history=[dict(epoch=1, train_error=50.0, test_error=final_error + 5),
                    dict(epoch=2, train_error=30.0, test_error=final_error)],
           predictions=dict(labels=labels, preds=preds, filenames=[f'{i}.wav' for i in labels]))
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
  assert '| model | intermix |' in md
  assert '| EnvNet | 10.5 ± 0.7 (9.1) |' in md
  assert '| esc10 | envnet | intermix | 0,1 | 1,2,3,4,5 | 10.50 | 0.71 | seeds | 9.1 | +1.4 |' in md
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
  assert '| model | standard | bc |' in md
  assert '| EnvNet-v2 | 17.0 ± 1.6† (14.2) | 10.0 ± 0.0† (10.6) |' in md
  assert '| M18 |  | 20.0 (n=1)†* (14.2) |' in md
  assert '| + hidden mixing | 7.0 ± 0.0† (7.7) |' in md
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
  assert '| EnvNet | 20.0 (n=1)†* (11.3) | 10.0 ± 0.0†* (9.1) |' in md
  assert '± 0.0' not in md.replace('10.0 ± 0.0', '')
  assert '| bc | 0 | — | — | 20.00 | — | — | 20.00 | n=1 | folds | 11.3 |' in md
  assert '| esc10 | envnet | bc | 0 | 3* | 20.00 | n=1 | folds |' in md
  with open(tmp_path / 'out' / 'summary.json') as f:
    assert json.load(f)['groups'][0]['std'] is None
  assert report.curve_label(bc) == 'bc (1 run)'
  assert report.curve_label(im) == 'intermix (2 runs)'
  one = dict(method='standard', runs=[dict(seed=0, fold=1, num_epochs=4)])
  assert report.curve_label(one) == 'standard (1 run, 4 epochs)'


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
  assert '| PiczakCNN | 12.5 (n=1)†* (9.4) |' in capsys.readouterr().out
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
  (with_runs,), _ = report.aggregate_adversarial(records, runs)
  assert with_runs['clean']['partial'] and with_runs['attacked'][0.01]['partial']
  (alone,), _ = report.aggregate_adversarial(records)
  assert not alone['clean']['partial']
  recorded = [dict(r, num_folds=4) for r in records]
  (own,), _ = report.aggregate_adversarial(recorded, runs)
  assert not own['clean']['partial'] and own['clean']['folds'] == [1, 2, 3, 4]
