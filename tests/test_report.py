"""intermix_jax.report: fake workdirs -> the paper-format table, summary and plots."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from intermix_jax import report

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
  assert '| M18 |  | 20.0 ± 0.0†* (14.2) |' in md
  assert '| + hidden mixing | 7.0 ± 0.0† (7.7) |' in md
  assert any('envnet' in n and "status 'running'" in n for n in result['notes'])


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
  assert '30.0 ± 0.0†*' in p.stdout and os.path.exists(os.path.join(out, 'report.md'))
  p = subprocess.run([sys.executable, '-m', 'intermix_jax.report', str(tmp_path / 'nothing')],
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 1 and 'nothing' in p.stderr
