"""The paper's tables as configs and sweeps (configs/table1, configs/ablation, configs/table3.py,
launch/sweep.py --table=N): every generated command parses with the real config parser and
validates, cells map onto the paper's values; and the report's tables 1-3 (— for cells not run,
‡ for runs off the docs/method.md §5 protocol, table 3 from adversarial.json); the per-fold table,
the paired comparisons against standard training on hand-built clips, the learning curves, and
invalid results.json files skipped and named."""
import contextlib
import glob
import io
import json
import os
import runpy
import shlex
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

import helpers
from intermix_jax import config_checks, mixing, models, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = runpy.run_path(os.path.join(ROOT, 'launch', 'sweep.py'), run_name='sweep')
pytestmark = [
    pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning'),  # config_flags
    pytest.mark.filterwarnings('ignore:No artists with labels:UserWarning'),  # runs w/o history
]
FOLDS = {'esc50': 5, 'esc10': 5, 'urbansound8k': 10}
LAST = '### Last epoch (the headline)'
BEST = '### ' + report.BEST_TITLE
# docs/method.md §5 rows (standard training), written out here: (epochs, lr, schedule, warmup).
ENVNET_ROW = (600, 0.01, (0.5, 0.75), 0)
PROTOCOL_ROWS = {
    ('envnet', 'esc50'): ENVNET_ROW, ('envnet', 'esc10'): ENVNET_ROW,
    ('envnet', 'urbansound8k'): (400, 0.01, (0.5, 0.75), 0),
    ('envnetv2', 'esc50'): (1000, 0.1, (0.3, 0.6, 0.9), 10),
    ('envnetv2', 'esc10'): (600, 0.01, (0.5, 0.75), 0),
    ('envnetv2', 'urbansound8k'): (600, 0.1, (0.3, 0.6, 0.9), 10),
}
for _b in ('m18', 'soundnet5', 'piczakcnn'):  # configs/base.py: the EnvNet row (the paper has none)
  PROTOCOL_ROWS.update({(_b, 'esc50'): ENVNET_ROW, (_b, 'esc10'): ENVNET_ROW,
                        (_b, 'urbansound8k'): (400, 0.01, (0.5, 0.75), 0)})


def sweep_lines(capsys, *args):
  assert SWEEP['main'](list(args)) == 0
  return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def parse_config(flag):
  """The config of a `--config=FILE:ARGS` flag, through ml_collections' own flag parser."""
  fv = flags.FlagValues()
  argv = ['sweep', flag.replace('--config=', f'--config={ROOT}/', 1)]
  config_flags.DEFINE_config_file('config', flag_values=fv, sys_argv=argv)
  fv(argv)
  return fv.config


def train_commands(lines):
  out = []
  for cmd in lines:
    assert cmd[:2] == ['python', '-m'], cmd
    if cmd[2] == 'intermix_jax.main':
      (config_flag,) = [a for a in cmd if a.startswith('--config=')]
      (workdir,) = [a[len('--workdir='):] for a in cmd if a.startswith('--workdir=')]
      out.append((parse_config(config_flag), workdir))
  return out


def check_runnable(c):
  """What train.py checks before any work: fields, folds, mix points of the backbone, pairs."""
  model_cls = models.MODELS[c.backbone]
  strategy = mixing.get_strategy(c.strategy, **{k: c.mixing[k] for k in mixing.strategy_options(c.strategy)})
  config_checks.validate(c, num_folds=FOLDS[c.dataset], num_mix_points=model_cls.num_mix_points,
                         device_count=1, process_count=1, mixes=strategy.mixes)
  strategy.layers(model_cls.num_mix_points)  # the eligible points exist on this backbone
  return strategy


@pytest.fixture(scope='module')
def table1():
  """(config, workdir) of every training command of `sweep.py --table=1` (parsed once)."""
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    assert SWEEP['main'](['--table=1', '--root=R']) == 0
  return train_commands([shlex.split(x) for x in buf.getvalue().splitlines()])


def test_table1_sweep_covers_every_cell_once_with_the_spec_schedule(table1):
  # 6 rows x 4 strategies x (5 + 5 + 10) folds.
  assert len(table1) == 6 * 4 * 20
  assert len({wd for _, wd in table1}) == len(table1)
  cells = {}
  for c, _ in table1:
    check_runnable(c)
    assert (c.num_epochs, c.opt.lr, tuple(c.opt.schedule), c.opt.warmup_epochs) == PROTOCOL_ROWS[
        (c.backbone, c.dataset)]
    assert c.double_epochs_for_mixing and c.batch_size == 64 and c.model.width == 1.0
    assert c.model.fc_units is None and c.num_eval_crops == 10 and c.seed == 0
    method = mixing.method_label(c)
    row = c.backbone + ('+aug' if c.strong_augment else '')
    paper = report.paper_value(c.dataset, c.backbone, method)
    assert paper is not None, (c.dataset, row, method)
    assert report.protocol_deviations(dict(config=c.to_dict(), dataset=c.dataset,
                                           backbone=c.backbone, strategy=c.strategy)) == []
    cells.setdefault((c.dataset, row, c.strategy), set()).add(c.fold)
  assert len(cells) == 3 * 6 * 4
  assert all(folds == set(range(1, FOLDS[d] + 1)) for (d, _, _), folds in cells.items())
  # Spot checks against docs/method.md §6 itself.
  assert ('esc10', 'piczakcnn', 'speechmix') in cells
  assert report.paper_value('esc10', 'piczakcnn', 'speechmix') == 8.4
  assert report.paper_value('urbansound8k', 'envnetv2', 'intermix+aug') == 20.5


def test_table1_configs_equal_the_dataset_configs(table1):
  """configs/table1/<row>.py:dataset=D,strategy=S == configs/D.py:backbone=B,strategy=S[,aug]."""
  seen = set()
  for c, _ in table1:
    key = (c.dataset, c.backbone, c.strategy, c.strong_augment)
    if key in seen or c.fold != 1:
      continue
    seen.add(key)
    arg = f'backbone={c.backbone},strategy={c.strategy},fold=1,seed=0'
    if c.strong_augment:
      arg += ',strong_augment=True'
    ref = runpy.run_path(os.path.join(ROOT, 'configs', f'{c.dataset}.py'))['get_config'](arg)
    assert c.to_dict() == ref.to_dict(), key
  assert len(seen) == 3 * 6 * 4


def test_table2_ablation_variants(capsys):
  runs = train_commands(sweep_lines(capsys, '--table=2', '--root=R'))
  assert len(runs) == 3 * 20 and len({wd for _, wd in runs}) == len(runs)
  points = {}
  for c, wd in runs:
    strategy = check_runnable(c)
    assert (c.backbone, c.strategy, c.strong_augment) == ('envnetv2', 'intermix', True)
    assert (c.num_epochs, c.opt.lr, tuple(c.opt.schedule), c.opt.warmup_epochs) == PROTOCOL_ROWS[
        ('envnetv2', c.dataset)]
    variant = wd.split(os.sep)[3]
    points[variant] = (strategy.layers(models.MODELS['envnetv2'].num_mix_points),
                       c.mixing.p_weighting)
    assert report.paper_value(c.dataset, 'envnetv2', mixing.method_label(c)) == (
        report.PAPER_TABLE2[mixing.method_label(c)][1][report.DATASET_COLUMN[c.dataset]])
  # docs/method.md §3 ablation: vanilla = input with r; + hidden mixing = points 1..4 with r;
  # + p-weighting = InterMix.
  assert points == {'intermix-vanilla': ((0,), False), 'intermix-hidden': ((1, 2, 3, 4), False),
                    'intermix-full': ((1, 2, 3, 4), True)}
  assert report.paper_value('esc10', 'envnetv2', 'intermix[layers=0,r-weighting]+aug') == 7.9


def test_table3_trains_then_attacks_each_workdir(capsys):
  lines = sweep_lines(capsys, '--table=3', '--root=R', '--backbones=envnetv2,piczakcnn')
  assert len(lines) == 2 * 3 * 5 * 2
  runs = train_commands(lines)
  for (c, wd), attack in zip(runs, lines[1::2]):
    check_runnable(c)
    assert c.dataset == 'esc10' and c.strategy in ('standard', 'bc', 'intermix')
    assert attack == ['python', '-m', 'intermix_jax.adversarial', f'--workdir={wd}']
    assert (c.num_epochs, c.opt.lr) == PROTOCOL_ROWS[(c.backbone, 'esc10')][:2]
  assert {c.backbone for c, _ in runs} == {'envnetv2', 'piczakcnn'}


def test_plain_sweep_and_narrowing_still_parse(capsys):
  runs = train_commands(sweep_lines(capsys, '--datasets=esc10', '--backbones=m18,soundnet5',
                                    '--strategies=mixup,bc', '--folds=2', '--extra=num_epochs=3,'
                                    'mixing.eligible_layers=(0,)'))
  assert len(runs) == 4
  for c, _ in runs:
    check_runnable(c)
    assert c.num_epochs == 3 and tuple(c.mixing.eligible_layers) == (0,) and c.fold == 2
  narrowed = train_commands(sweep_lines(capsys, '--table=1', '--datasets=esc10', '--folds=1'))
  assert len(narrowed) == 24 and {c.dataset for c, _ in narrowed} == {'esc10'}


def test_run_skips_finished_trainings_and_attacks(tmp_path, capsys):
  root = str(tmp_path / 'r')
  for s in ('standard', 'bc', 'intermix'):
    wd = os.path.join(root, 'esc10', 'envnetv2', s, 'seed0', 'fold1')
    os.makedirs(wd)
    with open(os.path.join(wd, 'results.json'), 'w') as f:
      json.dump(dict(final_error=10.0), f)
    with open(os.path.join(wd, 'adversarial.json'), 'w') as f:
      json.dump({}, f)
  assert SWEEP['main'](['--table=3', '--folds=1', f'--root={root}', '--run']) == 0
  out = capsys.readouterr().out
  assert out.count('done already') == 6 and out.count('adversarial.json') == 3


_TABLE_CONFIGS = [p for p in sorted(glob.glob(os.path.join(ROOT, 'configs', 'table1', '*.py')))
                  + sorted(glob.glob(os.path.join(ROOT, 'configs', 'ablation', '*.py')))
                  if os.path.basename(p) != '__init__.py'] + [os.path.join(ROOT, 'configs', 'table3.py')]


@pytest.mark.parametrize('path', _TABLE_CONFIGS)
def test_table_configs_document_command_and_paper_numbers(path):
  mod = runpy.run_path(path)
  doc = mod['__doc__']
  rel = os.path.relpath(path, ROOT)
  assert 'python -m intermix_jax.main' in doc and rel in doc and 'launch/sweep.py --table=' in doc
  config_checks.validate(mod['get_config']())
  name = os.path.basename(path)[:-3]
  if '/table1/' in path:
    row = 'envnetv2+aug' if name == 'envnetv2_aug' else name
    for values in report.PAPER_TABLE1[row].values():
      assert ' / '.join(f'{v:.1f}' for v in values) in doc
  elif '/ablation/' in path:
    method = mixing.method_label(mod['get_config']())
    assert ' / '.join(f'{v:.1f}' for v in report.PAPER_TABLE2[method][1]) in doc
  else:
    for values in report.PAPER_TABLE3.values():
      assert ' / '.join(f'{v:.1f}' for v in values) in doc


# --- report: tables 1-3 with every cell -------------------------------------------------------
def _config(num_epochs=600, double=True, strategy='standard'):
  return dict(num_epochs=num_epochs, double_epochs_for_mixing=double, batch_size=64,
              strategy=strategy, opt=dict(lr=0.01, schedule=[0.5, 0.75], warmup_epochs=0),
              model=dict(width=1.0, fc_units=None), num_eval_crops=10, steps_per_epoch=None,
              strong_augment=False)


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f)


def _fake_study(root, adv_root, num_epochs):
  clean = {'standard': [30.0, 35.0, 40.0, 25.0, 20.0], 'intermix': [20.0, 25.0, 30.0, 15.0, 10.0]}
  for s, errs in clean.items():
    for fold, e in enumerate(errs, 1):
      cfg = _config(num_epochs, double=False, strategy=s)
      history = [dict(epoch=num_epochs // 2, test_error=e - 2.0),  # best epoch: 2 points lower
                 dict(epoch=num_epochs, test_error=e)]
      _write(os.path.join(root, s, f'fold{fold}', 'results.json'), dict(
          status='finished', dataset='esc10', backbone='piczakcnn', strategy=s, method=s,
          fold=fold, seed=0, num_folds=5, final_error=e, config=cfg, num_classes=10,
          history=history))
      _write(os.path.join(adv_root, s, f'fold{fold}', 'adversarial.json'), dict(
          dataset='esc10', backbone='piczakcnn', strategy=s, method=s, fold=fold, seed=0,
          num_folds=5, clean_error=e, results_final_error=e, run_status='finished', config=cfg,
          epsilons=[0.01, 1e-05], attacked_error={'0.01': e + 40.0, '1e-05': e + fold}))
  return clean


def test_report_tables_mark_missing_cells_deviations_and_table3(tmp_path):
  root, adv = str(tmp_path / 'runs'), str(tmp_path / 'adv')
  clean = _fake_study(root, adv, num_epochs=30)
  _write(os.path.join(adv, 'bad', 'adversarial.json'), dict(  # attack of an unfinished run
      dataset='esc10', backbone='piczakcnn', strategy='bc', method='bc', fold=1, seed=0,
      clean_error=50.0, results_final_error=None, run_status='running', attacked_error={}))
  result = report.write_report([root, adv], str(tmp_path / 'out'), plots=True)
  md = result['markdown']
  sd = lambda v: np.std(v, ddof=1)
  # Table 1 (every cell): the best epoch on the test fold (last - 2), with † (one seed), ‡ (30
  # epochs), the paper beside it; — elsewhere. The headline table: the last epoch, no paper.
  assert (f"| PiczakCNN | 28.0 ± {sd(clean['standard']):.1f}†‡ (13.2) | — (9.4) | — (8.4) | "
          f"18.0 ± {sd(clean['intermix']):.1f}†‡ (8.3) |") in md.split('## Against the paper')[1]
  assert (f"| PiczakCNN | 30.0 ± {sd(clean['standard']):.1f}†‡ | "
          f"20.0 ± {sd(clean['intermix']):.1f}†‡ |") in helpers.section(md, LAST)
  assert '| EnvNet-v2 + strong aug | — (10.9) | — (8.6) | — (7.1) | — (7.2) |' in md
  assert '| + p-weighting (InterMix) | — (12.9) | — (7.2) | — (20.5) |' in md
  # Table 3: eps 1e-2 = clean + 40 in every fold; 1e-5 = clean + fold (mean + 3).
  attacked_5 = [e + f for f, e in enumerate(clean['standard'], 1)]
  assert (f"| PiczakCNN | standard | 30.0 ± {sd(clean['standard']):.1f}†‡ | "
          f"70.0 ± {sd(clean['standard']):.1f}†‡ (64.5) | — (37.7) | — (36.5) | "
          f"{np.mean(attacked_5):.1f} ± {sd(attacked_5):.1f}†‡ (36.2) |") in md
  assert '| PiczakCNN | bc | — | — (47.2) | — (28.7) | — (26.9) | — (26.8) |' in md
  assert 'num_epochs 30 (protocol 600)' in md
  assert 'double_epochs_for_mixing False (protocol True)' in md
  assert any("status 'running'" in n and 'bad' in n for n in result['notes'])
  assert os.path.exists(str(tmp_path / 'out' / 'adversarial_esc10.png'))
  with open(tmp_path / 'out' / 'summary.json') as f:
    s = json.load(f)
  (std_group,) = [a for a in s['adversarial'] if a['method'] == 'standard']
  assert std_group['attacked']['1e-02']['mean'] == pytest.approx(70.0)
  assert std_group['attacked']['1e-02']['paper'] == 64.5


def test_report_full_protocol_has_no_mark_and_flags_a_stale_attack(tmp_path):
  root, adv = str(tmp_path / 'runs'), str(tmp_path / 'adv')
  _fake_study(root, adv, num_epochs=600)
  for s in ('standard', 'intermix'):  # protocol-conform runs: 600 epochs, doubled for mixing
    for fold in range(1, 6):
      for base in (root, adv):
        name = 'results.json' if base == root else 'adversarial.json'
        p = os.path.join(base, s, f'fold{fold}', name)
        with open(p) as f:
          r = json.load(f)
        r['config']['double_epochs_for_mixing'] = True
        if base == adv and s == 'intermix' and fold == 2:
          r['results_final_error'] = r['clean_error'] + 2.5  # not the run's last checkpoint
        _write(p, r)
  result = report.write_report([root, adv], str(tmp_path / 'out'), plots=False)
  assert '‡' not in result['markdown'].split('## Against the paper')[1].split('## All groups')[0]
  assert any('differs from the run' in n and 'intermix' in n for n in result['notes'])


# --- report: per-fold table, paired comparisons, learning curves, invalid files -----------------
# Hand-built ESC-10 PiczakCNN study, 4 clips per fold (clip i has label i): which clips each
# method gets wrong in each fold (seed 0).
WRONG = {'standard': {f: {0} for f in range(1, 6)},           # 25 % in every fold
         'bc': {f: {0} for f in range(1, 6)},                 # the same predictions as standard
         'speechmix': {f: set() for f in range(1, 6)},        # 0 %
         'intermix': {1: {1}, 2: {1}, 3: set(), 4: set(), 5: set()}}  # 25, 25, 0, 0, 0


def _clip_run(root, method, fold, wrong, seed=0, names=None):
  names = names or [f'{fold}-{i}.wav' for i in range(4)]
  labels = list(range(4))
  preds = [(t + 1) % 10 if i in wrong else t for i, t in enumerate(labels)]
  error = 100.0 * len(wrong) / 4
  history = [dict(epoch=e, step=e, train_loss=1.0 / e + fold, train_error=50.0, lr=0.01,
                  nonfinite_steps=0) for e in (1, 2, 3, 4)]
  history[1]['test_error'] = error + 10.0 * fold
  history[3]['test_error'] = error
  _write(os.path.join(root, method, f'seed{seed}', f'fold{fold}', 'results.json'), dict(
      status='finished', dataset='esc10', backbone='piczakcnn', strategy=method, method=method,
      fold=fold, seed=seed, num_folds=5, num_epochs=4, num_classes=10, final_error=error,
      config=dict(strong_augment=False), history=history,
      predictions=dict(filenames=names, labels=labels, preds=preds, epoch=4)))


def _clip_study(root, seeds=(0,)):
  for seed in seeds:
    for method, per_fold in WRONG.items():
      for fold, wrong in per_fold.items():
        if seed == 1 and method == 'intermix' and fold == 3:
          wrong = {2}  # seed 1: intermix 25, 25, 25, 0, 0
        _clip_run(root, method, fold, wrong, seed=seed)


def test_report_paired_comparisons_and_per_fold_table_by_hand(tmp_path):
  root = str(tmp_path / 'runs')
  _clip_study(root)
  for fold in range(1, 6):  # mixup: fold 5 tested other clips, so it cannot be paired
    _clip_run(root, 'mixup', fold, set(), names=['x.wav', 'y.wav', 'z.wav', 'w.wav']
              if fold == 5 else None)
  result = report.write_report([root], str(tmp_path / 'out'), plots=True)
  md = result['markdown']
  sd = np.std([25, 25, 0, 0, 0], ddof=1)
  # The last evaluated epoch is each run's best here: both tables hold the same numbers, the
  # paper's values in the best-epoch one only.
  assert (f'| PiczakCNN | 25.0 ± 0.0† | 0.0 ± 0.0† | 25.0 ± 0.0† | 0.0 ± 0.0† | '
          f'10.0 ± {sd:.1f}† |') in helpers.section(md, LAST)
  assert (f'| PiczakCNN | 25.0 ± 0.0† (13.2) | 0.0 ± 0.0† | 25.0 ± 0.0† (9.4) | '
          f'0.0 ± 0.0† (8.4) | 10.0 ± {sd:.1f}† (8.3) |') in helpers.section(md, BEST)
  assert 'every eval_every_epochs and the last' in helpers.section(md, BEST)
  # Per fold: rows = methods, columns = folds, mean, std over folds, best epoch, paper.
  assert ('| method | seed | fold 1 | fold 2 | fold 3 | fold 4 | fold 5 | mean | ± std | over | '
          'best epoch | paper |') in md
  assert (f'| intermix | 0 | 25.00 | 25.00 | 0.00 | 0.00 | 0.00 | 10.00 | {sd:.2f} | folds | '
          '10.00 | 8.3 |' in md)
  assert ('| standard | 0 | 25.00 | 25.00 | 25.00 | 25.00 | 25.00 | 25.00 | 0.00 | folds | 25.00 | '
          '13.2 |' in md)
  # Paired on the 20 clips: intermix b = 2 (clip 1 of folds 1, 2), c = 5 (clip 0 of every fold):
  # p = 2 * (1 + 7 + 21) / 2^7; Δ = 10 - 25. bc: identical predictions, Δ = 0, interval [0, 0].
  comp = {x['method']: x for x in result['comparisons']}
  assert set(comp) == {'mixup', 'bc', 'speechmix', 'intermix'}
  im = comp['intermix']
  assert (im['b'], im['c'], im['n'], im['folds'], im['reference']) == (2, 5, 20, [1, 2, 3, 4, 5],
                                                                       'standard')
  assert im['p'] == 0.453125 and im['diff'] == pytest.approx(-15.0)
  assert (im['ref_error'], im['error']) == pytest.approx((25.0, 10.0))
  assert im['low'] <= -15.0 <= im['high']
  assert (comp['bc']['b'], comp['bc']['c'], comp['bc']['p']) == (0, 0, 1.0)
  assert (comp['bc']['diff'], comp['bc']['low'], comp['bc']['high']) == (0.0, 0.0, 0.0)
  assert (comp['speechmix']['b'], comp['speechmix']['c'], comp['speechmix']['p']) == (0, 5, 0.0625)
  assert (comp['mixup']['folds'], comp['mixup']['unpaired_folds'], comp['mixup']['n']) == (
      [1, 2, 3, 4], [5], 16)
  assert any('mixup against standard seed 0 fold 5: not paired (the two runs tested different '
             'clips)' in n
             for n in result['paired_notes'])
  im_line = (f"| intermix | standard | 0 | 1,2,3,4,5 | 20 | 25.00 | 10.00 | -15.00 | "
             f"[{im['low']:+.2f}, {im['high']:+.2f}] | 2 | 5 | 0.4531 |")
  assert im_line in md
  assert ('| bc | standard | 0 | 1,2,3,4,5 | 20 | 25.00 | 25.00 | +0.00 | [+0.00, +0.00] | 0 | 0 | '
          '1.0000 |'
          in md)
  assert '| mixup | standard | 0 | 1,2,3,4* | 16 |' in md
  assert '§' not in md.split('## Paired comparisons')[1].split('## Against the paper')[0]
  assert 'SPEC' not in md  # users have no SPEC file: references point to docs/method.md
  # Learning curves: test error at the evaluated epochs, mean and min-max over the folds.
  (g,) = [x for x in result['groups'] if x['method'] == 'intermix']
  curve = report.learning_curve(g['runs'], 'test_error')
  fold_errors = [25, 25, 0, 0, 0]
  assert curve['epoch'] == [2, 4] and curve['n'] == [5, 5]
  assert curve['mean'] == pytest.approx([np.mean(fold_errors) + 30.0, np.mean(fold_errors)])
  # Epoch 2: error + 10 * fold = 35, 45, 30, 40, 50.
  assert (curve['min'], curve['max']) == ([30.0, 0.0], [50.0, 25.0])
  loss = report.learning_curve(g['runs'], 'train_loss')
  assert loss['epoch'] == [1, 2, 3, 4] and loss['min'][0] == 2.0 and loss['max'][0] == 6.0
  assert os.path.getsize(str(tmp_path / 'out' / 'curves_esc10_piczakcnn.png')) > 0
  with open(tmp_path / 'out' / 'summary.json') as f:
    s = json.load(f)
  assert {x['method'] for x in s['paired']} == set(comp)
  (sg,) = [x for x in s['groups'] if x['method'] == 'intermix']
  assert sg['test_error_curve']['epoch'] == [2, 4] and sg['seed_std'] is None
  assert sg['fold_std'] == {'0': pytest.approx(sd)}


def test_report_several_seeds_per_seed_and_pooled_comparison(tmp_path):
  root = str(tmp_path / 'runs')
  _clip_study(root, seeds=(0, 1))
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  (g,) = [x for x in result['groups'] if x['method'] == 'intermix']
  # Seed CV errors 10 and 15: the table shows mean ± std over seeds; both spreads are kept.
  assert g['cv_errors'] == {0: 10.0, 1: 15.0} and g['std_over'] == 'seeds'
  assert (g['mean'], g['seed_mean']) == (12.5, 12.5)
  assert g['std'] == g['seed_std'] == pytest.approx(np.std([10.0, 15.0], ddof=1))
  assert g['fold_std'] == {0: pytest.approx(np.std([25, 25, 0, 0, 0], ddof=1)),
                           1: pytest.approx(np.std([25, 25, 25, 0, 0], ddof=1))}
  md = result['markdown']
  assert (f"| intermix | mean of 2 | 25.00 | 25.00 | 12.50 | 0.00 | 0.00 | 12.50 | "
          f"{np.std([10.0, 15.0], ddof=1):.2f} | seeds | 12.50 | 8.3 |") in md
  comp = {(x['method'], x['seed']): x for x in result['comparisons']}
  # Seed 1: clip 2 of fold 3 too -> b = 3, c = 5: p = 2 * (1 + 8 + 28 + 56) / 2^8.
  assert (comp['intermix', 1]['b'], comp['intermix', 1]['c']) == (3, 5)
  assert comp['intermix', 1]['p'] == 2 * (1 + 8 + 28 + 56) / 256
  pooled = comp['intermix', 'all']
  assert pooled['seeds'] == [0, 1] and pooled['p'] is None and pooled['n'] == 20
  assert pooled['diff'] == pytest.approx(-12.5) and pooled['low'] <= -12.5 <= pooled['high']
  assert '| intermix | standard | all | 1,2,3,4,5 | 20 | 25.00 | 12.50 | -12.50 |' in md
  assert md.count('| — | — | — |') == 3  # bc, speechmix, intermix over all seeds


def test_option_variants_are_compared_with_their_strategy_default_on_the_same_clips(tmp_path):
  """bc[shared-pairs] against bc, intermix[no-normalize,stopgrad] against intermix (and both
  against standard), same table format; a variant whose default did not run: standard only."""
  root = str(tmp_path / 'runs')
  _clip_study(root)
  for fold in range(1, 6):
    _clip_run(root, 'bc[shared-pairs]', fold, {0, 1} if fold == 1 else {0})  # bc + clip 1 of fold 1
    _clip_run(root, 'intermix[no-normalize,stopgrad]', fold, set())  # intermix - clip 1 of f. 1, 2
    _clip_run(root, 'mixup[alpha=0.4]', fold, set())  # no mixup run: against standard only
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  comp = {(x['method'], x['reference']): x for x in result['comparisons']}
  assert set(comp) == {('bc', 'standard'), ('speechmix', 'standard'), ('intermix', 'standard'),
                       ('bc[shared-pairs]', 'standard'), ('bc[shared-pairs]', 'bc'),
                       ('intermix[no-normalize,stopgrad]', 'standard'),
                       ('intermix[no-normalize,stopgrad]', 'intermix'),
                       ('mixup[alpha=0.4]', 'standard')}
  # bc[shared-pairs] vs bc: b = 1 (clip 1 of fold 1), c = 0; Δ = +1/20 clips = +5 points.
  v = comp['bc[shared-pairs]', 'bc']
  assert (v['b'], v['c'], v['p'], v['n']) == (1, 0, 1.0, 20)
  assert (v['ref_error'], v['error'], v['diff']) == pytest.approx((25.0, 30.0, 5.0))
  # intermix[...] vs intermix: b = 0, c = 2 (clip 1 of folds 1, 2): p = 2 / 2^2; Δ = -10.
  v = comp['intermix[no-normalize,stopgrad]', 'intermix']
  assert (v['b'], v['c'], v['p']) == (0, 2, 0.5) and v['diff'] == pytest.approx(-10.0)
  v = comp['intermix[no-normalize,stopgrad]', 'standard']
  assert (v['b'], v['c'], v['p']) == (0, 5, 0.0625)
  md = result['markdown']
  against_std = helpers.section(md, '### Against standard training: ESC-10, PiczakCNN')
  variants = helpers.section(md, "### Option variants against their strategy's default: ESC-10, "
                                 'PiczakCNN')
  assert ('| method | reference | seed | folds | clips | reference error % | method error % | '
          'Δ (pp) | 95 % CI (pp) | b | c | p (McNemar) |') in against_std
  assert against_std.split('\n')[2] == variants.split('\n')[2]  # one table format
  assert '| bc[shared-pairs] | bc | 0 | 1,2,3,4,5 | 20 | 25.00 | 30.00 | +5.00 |' in variants
  assert ('| intermix[no-normalize,stopgrad] | intermix | 0 | 1,2,3,4,5 | 20 | 10.00 | 0.00 | '
          '-10.00 |') in variants
  assert '| bc[shared-pairs] | standard | 0 |' in against_std and 'mixup' not in variants
  assert '| bc | standard | 0 |' in against_std and '\n| bc |' not in variants
  # The headline tables show each variant in a column after its strategy's.
  assert ('| model | standard | mixup[alpha=0.4] | bc | bc[shared-pairs] | speechmix | intermix | '
          'intermix[no-normalize,stopgrad] |') in helpers.section(md, LAST)
  assert ('| PiczakCNN | 25.0 ± 0.0† | 0.0 ± 0.0† | 25.0 ± 0.0† | 30.0 ± 11.2† | 0.0 ± 0.0† |'
          ) in helpers.section(md, LAST)
  # The command prints both.
  assert report.main([root, '--out', str(tmp_path / 'out2'), '--no-plots']) == 0


def test_report_skips_invalid_results_and_the_command_prints_tables(tmp_path):
  root = str(tmp_path / 'runs')
  _clip_study(root)
  broken = os.path.join(root, 'bc', 'seed7', 'fold1', 'results.json')
  os.makedirs(os.path.dirname(broken))
  with open(broken, 'w') as f:
    f.write('{"status": "finished", "dataset": "esc1')  # cut short
  no_fold = os.path.join(root, 'bc', 'seed7', 'fold2', 'results.json')
  _write(no_fold, dict(status='finished', dataset='esc10', backbone='piczakcnn', method='bc',
                       seed=7, final_error=3.0))
  not_object = os.path.join(root, 'bc', 'seed7', 'fold3', 'results.json')
  _write(not_object, [1, 2])
  result = report.write_report([root], str(tmp_path / 'out'), plots=False)
  assert len(result['bad_files']) == 3
  for path, why in ((broken, 'not valid JSON'), (no_fold, "has no 'fold' field"),
                    (not_object, 'not a JSON object')):
    (line,) = [b for b in result['bad_files'] if b.startswith(path)]
    assert why in line and '\n' not in line and line in result['notes']
  assert len(result['groups']) == 4 and all(7 not in g['seeds'] for g in result['groups'])
  assert "has no 'fold' field" in result['markdown'].split('## Left out')[1]
  p = subprocess.run([sys.executable, '-m', 'intermix_jax.report', root, '--no-plots'],
                     capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert p.returncode == 0, p.stderr
  out = p.stdout
  sd = np.std([25, 25, 0, 0, 0], ddof=1)
  assert (f'| PiczakCNN | 25.0 ± 0.0† | 25.0 ± 0.0† | 0.0 ± 0.0† | '
          f'10.0 ± {sd:.1f}† |') in helpers.section(out, LAST)
  assert (f'| PiczakCNN | 25.0 ± 0.0† (13.2) | 25.0 ± 0.0† (9.4) | 0.0 ± 0.0† (8.4) | '
          f'10.0 ± {sd:.1f}† (8.3) |') in helpers.section(out, BEST)
  assert '### Against standard training: ESC-10, PiczakCNN' in out
  assert '| intermix | standard | 0 | 1,2,3,4,5 | 20 | 25.00 | 10.00 | -15.00 |' in out
  assert '## Against the paper' not in out  # the rest is in report.md
  warnings = [x for x in p.stderr.splitlines() if x.startswith('warning: ')]
  assert len(warnings) == 3 and any(broken in x for x in warnings)
  assert os.path.exists(os.path.join(root, 'report', 'report.md'))
  # Only invalid files: one error line naming the first, exit status 1.
  only_bad = str(tmp_path / 'bad')
  _write(os.path.join(only_bad, 'results.json'), [])
  p = subprocess.run([sys.executable, '-m', 'intermix_jax.report', only_bad, '--no-plots'],
                     capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
  assert 'no usable results.json' in p.stderr and only_bad in p.stderr
