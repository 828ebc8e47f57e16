#!/usr/bin/env python3
"""Expands a sweep (backbones x strategies x datasets x folds x seeds) into training commands.

Each command is the one a user would type for a single run, with its own workdir:

    python -m intermix_jax.main --config=configs/<dataset>.py:backbone=B,strategy=S,fold=F,seed=K \
        --workdir=<root>/<dataset>/<backbone>/<strategy>/seed<K>/fold<F>

Usage:
  python launch/sweep.py --datasets=esc10 --backbones=envnet --strategies=standard,bc,speechmix,intermix \
      --folds=1-5 --seeds=0 --root=runs/sweep                      # print the commands
  python launch/sweep.py ... --run                                   # run them one after another here
  python launch/sweep.py ... --extra=num_epochs=40                   # extra config overrides for every run
  python launch/sweep.py --table=1 --root=runs/table1                # every cell of the paper's table 1
  python launch/sweep.py --table=2 --root=runs/table2                # table 2's ablation (EnvNet-v2 + aug)
  python launch/sweep.py --table=3 --root=runs/table3 [--backbones=envnetv2]   # table 3: train, then FGSM

The tables use their own config files (configs/table1/<row>.py, configs/ablation/<variant>.py,
configs/table3.py: each docstring gives the paper's numbers); --datasets, --folds, --seeds and
--extra narrow or adjust them (e.g. --table=1 --datasets=esc10 --folds=1). Table 3 adds, after each
training command, `python -m intermix_jax.adversarial --workdir=W` (writes W/adversarial.json); in a
job array (--index) run the attacks (odd indices) after their trainings (the even index before).

A run whose workdir already holds a final results.json is skipped with --run (so an interrupted sweep
resumes where it stopped; runs killed midway resume from their last checkpoint); so is an attack whose
adversarial.json exists.
`python -m intermix_jax.report <root>` turns the finished runs into the paper-format tables.
"""
import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys

from intermix_jax import protocol
from intermix_jax.data import catalog
from intermix_jax.report import paper

# The tables' cells are the paper's (intermix_jax/report/paper.py): its datasets, its table 1 rows
# (configs/table1/<row>.py: the backbone, '_aug' with strong augmentation) and strategies, and
# table 3's strategies and dataset.
DATASETS = protocol.PAPER_DATASETS
TABLE1_ROWS = tuple(row.replace('+aug', '_aug') for row in paper.PAPER_TABLE1)
STRATEGIES = tuple(dict.fromkeys(s for cells in paper.PAPER_TABLE1.values() for s in cells))
TABLE3_STRATEGIES = tuple(paper.PAPER_TABLE3)
TABLE3_DATASET = paper.TABLE3_DATASET
# Table 2 (EnvNet-v2 + strong augmentation): vanilla InterMix mixes at the input with r-weighting,
# "+ hidden" mixes at hidden points with r-weighting, "+ p-weighting" is full InterMix.
# The variants' settings live in configs/ablation/<variant>.py.
ABLATION = ('vanilla', 'hidden', 'full')


def parse_list(text):
  return [t for t in text.split(',') if t]


def parse_range(text):
  """'1-5' -> [1..5]; '1,3' -> [1, 3]."""
  out = []
  for part in parse_list(text):
    if '-' in part:
      lo, hi = part.split('-')
      out.extend(range(int(lo), int(hi) + 1))
    else:
      out.append(int(part))
  return out


def run_spec(dataset, backbone, strategy, fold, seed, root, extra='', variant=None, config_file=None):
  """(command, workdir) of one training run.

  Args:
    config_file: the config to use (default configs/<dataset>.py with backbone= and strategy=); with
      a table's config file the command names the dataset instead of the backbone, and the strategy
      unless `strategy` is None (the file fixes it).
  """
  if config_file is None:
    config_file = f'configs/{dataset}.py'
    overrides = [f'backbone={backbone}', f'strategy={strategy}']
  else:
    overrides = [f'dataset={dataset}'] + ([f'strategy={strategy}'] if strategy else [])
    if backbone is not None and config_file == TABLE3_CONFIG:
      overrides.append(f'backbone={backbone}')
  overrides += [f'fold={fold}', f'seed={seed}']
  if extra:
    overrides.append(extra)
  name = (strategy or 'intermix') if variant is None else f'{strategy or "intermix"}-{variant}'
  workdir = os.path.join(root, dataset, backbone or 'envnetv2', name, f'seed{seed}', f'fold{fold}')
  cmd = ['python', '-m', 'intermix_jax.main', f'--config={config_file}:' + ','.join(overrides),
         f'--workdir={workdir}']
  return cmd, workdir


TABLE3_CONFIG = 'configs/table3.py'
RESULTS_FILE = 'results.json'
ADVERSARIAL_FILE = 'adversarial.json'


def _datasets(args, default):
  return parse_list(args.datasets) if args.datasets_given else list(default)


def _folds(args, dataset):
  if args.folds:
    return parse_range(args.folds)
  folds = catalog.known_num_folds(dataset)
  if folds is None:
    sys.exit(f'sweep.py: the folds of dataset {dataset!r} are not known ahead; give --folds')
  return range(1, folds + 1)


def expand(args):
  """Yields (command, workdir, done-file) in run order; done-file names the output that marks it done."""
  seeds = parse_range(args.seeds)
  if args.table == 1:
    for dataset, seed in itertools.product(_datasets(args, DATASETS), seeds):
      for row, strategy, fold in itertools.product(TABLE1_ROWS, STRATEGIES, _folds(args, dataset)):
        backbone = row.removesuffix('_aug')
        root = os.path.join(args.root, 'strong_aug') if row != backbone else args.root
        cmd, wd = run_spec(dataset, backbone, strategy, fold, seed, root, args.extra,
                           config_file=f'configs/table1/{row}.py')
        yield cmd, wd, RESULTS_FILE
    return
  if args.table == 2:
    for dataset, seed in itertools.product(_datasets(args, DATASETS), seeds):
      for variant, fold in itertools.product(ABLATION, _folds(args, dataset)):
        cmd, wd = run_spec(dataset, 'envnetv2', None, fold, seed, args.root, args.extra,
                           variant=variant, config_file=f'configs/ablation/{variant}.py')
        yield cmd, wd, RESULTS_FILE
    return
  if args.table == 3:
    backbones = parse_list(args.backbones)
    for backbone, seed in itertools.product(backbones, seeds):
      for strategy, fold in itertools.product(TABLE3_STRATEGIES, _folds(args, TABLE3_DATASET)):
        cmd, wd = run_spec(TABLE3_DATASET, backbone, strategy, fold, seed, args.root, args.extra,
                           config_file=TABLE3_CONFIG)
        yield cmd, wd, RESULTS_FILE
        yield (['python', '-m', 'intermix_jax.adversarial', f'--workdir={wd}'], wd,
               ADVERSARIAL_FILE)
    return
  for dataset, backbone, strategy, seed in itertools.product(
      parse_list(args.datasets), parse_list(args.backbones), parse_list(args.strategies), seeds):
    for fold in _folds(args, dataset):
      cmd, wd = run_spec(dataset, backbone, strategy, fold, seed, args.root, args.extra)
      yield cmd, wd, RESULTS_FILE


def finished(workdir, done_file=RESULTS_FILE):
  """Whether `workdir` holds a final results.json (or, for an attack, its adversarial.json)."""
  path = os.path.join(workdir, done_file)
  if not os.path.exists(path):
    return False
  if done_file != RESULTS_FILE:
    return True
  try:
    with open(path) as f:
      return json.load(f).get('final_error') is not None
  except (OSError, ValueError):
    return False


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument('--datasets', default='esc50')
  p.add_argument('--backbones', default='envnetv2')
  p.add_argument('--strategies', default=','.join(STRATEGIES))
  p.add_argument('--folds', default='', help="e.g. '1-5' or '1,3'; default: every fold of the dataset")
  p.add_argument('--seeds', default='0')
  p.add_argument('--root', default='runs/sweep')
  p.add_argument('--extra', default='', help='extra overrides for every run, e.g. num_epochs=40')
  p.add_argument('--table', type=int, choices=(1, 2, 3),
                 help="expand every cell of the paper's table 1, 2 or 3 (3: train, then FGSM)")
  p.add_argument('--run', action='store_true', help='run the commands one after another')
  p.add_argument('--index', type=int, default=None,
                 help='only the command with this 0-based index (e.g. $SLURM_ARRAY_TASK_ID in a job array)')
  args = p.parse_args(argv)
  args.datasets_given = any(a == '--datasets' or a.startswith('--datasets=')
                            for a in (sys.argv[1:] if argv is None else argv))
  runs = list(expand(args))
  if args.index is not None:
    if not 0 <= args.index < len(runs):
      p.error(f'--index {args.index} is out of range: the sweep has {len(runs)} commands (0..{len(runs) - 1})')
    runs = [runs[args.index]]
  for cmd, workdir, done_file in runs:
    line = shlex.join(cmd)
    if not args.run:
      print(line)
      continue
    if finished(workdir, done_file):
      print(f'[sweep] done already: {os.path.join(workdir, done_file)}', flush=True)
      continue
    print(f'[sweep] {line}', flush=True)
    rc = subprocess.call([sys.executable] + cmd[1:])  # the interpreter running the sweep
    if rc != 0:
      print(f'[sweep] FAILED (exit {rc}): {line}', file=sys.stderr, flush=True)
      return rc
  return 0


if __name__ == '__main__':
  sys.exit(main())
