"""The paper's tables as configs and sweeps (configs/table1, configs/ablation, configs/table3.py,
launch/sweep.py --table=N): every generated command parses with the real config parser and
validates, cells map onto the paper's values; and the report's tables 1-3 (— for cells not run,
‡ for runs off the SPEC §5 protocol, table 3 from adversarial.json)."""
import contextlib
import glob
import io
import json
import os
import runpy
import shlex

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from intermix_jax import config_checks, mixing, models, report, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = runpy.run_path(os.path.join(ROOT, 'launch', 'sweep.py'), run_name='sweep')
pytestmark = [
    pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning'),  # config_flags
    pytest.mark.filterwarnings('ignore:No artists with labels:UserWarning'),  # runs w/o history
]
FOLDS = {'esc50': 5, 'esc10': 5, 'urbansound8k': 10}
# SPEC §5 rows (standard training), written out here: (epochs, lr, schedule, warmup).
ENVNET_ROW = (600, 0.01, (0.5, 0.75), 0)
SPEC_ROWS = {
    ('envnet', 'esc50'): ENVNET_ROW, ('envnet', 'esc10'): ENVNET_ROW,
    ('envnet', 'urbansound8k'): (400, 0.01, (0.5, 0.75), 0),
    ('envnetv2', 'esc50'): (1000, 0.1, (0.3, 0.6, 0.9), 10),
    ('envnetv2', 'esc10'): (600, 0.01, (0.5, 0.75), 0),
    ('envnetv2', 'urbansound8k'): (600, 0.1, (0.3, 0.6, 0.9), 10),
}
for _b in ('m18', 'soundnet5', 'piczakcnn'):  # configs/base.py: the EnvNet row (SPEC leaves it open)
  SPEC_ROWS.update({(_b, 'esc50'): ENVNET_ROW, (_b, 'esc10'): ENVNET_ROW,
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
  strategy = mixing.get_strategy(c.strategy, **c.mixing)
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
    assert (c.num_epochs, c.opt.lr, tuple(c.opt.schedule), c.opt.warmup_epochs) == SPEC_ROWS[
        (c.backbone, c.dataset)]
    assert c.double_epochs_for_mixing and c.batch_size == 64 and c.model.width == 1.0
    assert c.model.fc_units is None and c.num_eval_crops == 10 and c.seed == 0
    method = train.method_label(c)
    row = c.backbone + ('+aug' if c.strong_augment else '')
    paper = report.paper_value(c.dataset, c.backbone, method)
    assert paper is not None, (c.dataset, row, method)
    assert report.protocol_deviations(dict(config=c.to_dict(), dataset=c.dataset,
                                           backbone=c.backbone, strategy=c.strategy)) == []
    cells.setdefault((c.dataset, row, c.strategy), set()).add(c.fold)
  assert len(cells) == 3 * 6 * 4
  assert all(folds == set(range(1, FOLDS[d] + 1)) for (d, _, _), folds in cells.items())
  # Spot checks against SPEC §6 itself.
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
    assert (c.num_epochs, c.opt.lr, tuple(c.opt.schedule), c.opt.warmup_epochs) == SPEC_ROWS[
        ('envnetv2', c.dataset)]
    variant = wd.split(os.sep)[3]
    points[variant] = (strategy.layers(models.MODELS['envnetv2'].num_mix_points),
                       c.mixing.p_weighting)
    assert report.paper_value(c.dataset, 'envnetv2', train.method_label(c)) == (
        report.PAPER_TABLE2[train.method_label(c)][1][report.DATASET_COLUMN[c.dataset]])
  # SPEC §3 ablation: vanilla = input with r; + hidden mixing = points 1..4 with r; + p = InterMix.
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
    assert (c.num_epochs, c.opt.lr) == SPEC_ROWS[(c.backbone, 'esc10')][:2]
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


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(ROOT, 'configs', 'table1', '*.py')))
                         + sorted(glob.glob(os.path.join(ROOT, 'configs', 'ablation', '*.py')))
                         + [os.path.join(ROOT, 'configs', 'table3.py')])
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
    method = train.method_label(mod['get_config']())
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
      _write(os.path.join(root, s, f'fold{fold}', 'results.json'), dict(
          status='finished', dataset='esc10', backbone='piczakcnn', strategy=s, method=s,
          fold=fold, seed=0, num_folds=5, final_error=e, config=cfg, num_classes=10))
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
  # Table 1 (every cell): measured with † (one seed), ‡ (30 epochs), paper beside; — elsewhere.
  assert (f"| PiczakCNN | 30.0 ± {sd(clean['standard']):.1f}†‡ (13.2) | — (9.4) | — (8.4) | "
          f"20.0 ± {sd(clean['intermix']):.1f}†‡ (8.3) |") in md
  assert '| EnvNet-v2 + strong aug | — (10.9) | — (8.6) | — (7.1) | — (7.2) |' in md
  assert '| + p-weighting (InterMix) | — (12.9) | — (7.2) | — (20.5) |' in md
  # Table 3: eps 1e-2 = clean + 40 in every fold; 1e-5 = clean + fold (mean + 3).
  attacked_5 = [e + f for f, e in enumerate(clean['standard'], 1)]
  assert (f"| PiczakCNN | standard | 30.0 ± {sd(clean['standard']):.1f}†‡ | "
          f"70.0 ± {sd(clean['standard']):.1f}†‡ (64.5) | — (37.7) | — (36.5) | "
          f"{np.mean(attacked_5):.1f} ± {sd(attacked_5):.1f}†‡ (36.2) |") in md
  assert '| PiczakCNN | bc | — | — (47.2) | — (28.7) | — (26.9) | — (26.8) |' in md
  assert 'num_epochs 30 (SPEC 600)' in md and 'double_epochs_for_mixing False (SPEC True)' in md
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
