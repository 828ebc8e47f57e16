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

A run whose workdir already holds a final results.json is skipped with --run (so an interrupted sweep
resumes where it stopped; runs killed midway resume from their last checkpoint).
`python -m intermix_jax.report <root>` turns the finished runs into the paper-format tables.
"""
import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys

DATASETS = ('esc50', 'esc10', 'urbansound8k')
BACKBONES = ('m18', 'soundnet5', 'envnet', 'piczakcnn', 'envnetv2')
STRATEGIES = ('standard', 'bc', 'speechmix', 'intermix')
NUM_FOLDS = {'esc50': 5, 'esc10': 5, 'urbansound8k': 10, 'synthetic': 5}
# Table 2 (EnvNet-v2 + strong augmentation): vanilla InterMix mixes at the input with r-weighting,
# "+ hidden" mixes at hidden points with r-weighting, "+ p-weighting" is full InterMix.
ABLATION = {
    'vanilla': 'mixing.eligible_layers=(0,),mixing.p_weighting=False',
    'hidden': 'mixing.p_weighting=False',
    'full': '',
}


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


def run_spec(dataset, backbone, strategy, fold, seed, root, extra='', variant=None):
  overrides = [f'backbone={backbone}', f'strategy={strategy}', f'fold={fold}', f'seed={seed}']
  if extra:
    overrides.append(extra)
  name = strategy if variant is None else f'{strategy}-{variant}'
  workdir = os.path.join(root, dataset, backbone, name, f'seed{seed}', f'fold{fold}')
  cmd = ['python', '-m', 'intermix_jax.main',
         f'--config=configs/{dataset}.py:' + ','.join(overrides), f'--workdir={workdir}']
  return cmd, workdir


def expand(args):
  seeds = parse_range(args.seeds)
  if args.table == 1:
    for dataset, seed in itertools.product(DATASETS, seeds):
      folds = parse_range(args.folds) if args.folds else range(1, NUM_FOLDS[dataset] + 1)
      for backbone, strategy, fold in itertools.product(BACKBONES, STRATEGIES, folds):
        yield run_spec(dataset, backbone, strategy, fold, seed, args.root, args.extra)
      for strategy, fold in itertools.product(STRATEGIES, folds):  # EnvNet-v2 + strong augmentation
        extra = ','.join(e for e in ('strong_augment=True', args.extra) if e)
        yield run_spec(dataset, 'envnetv2', strategy, fold, seed, os.path.join(args.root, 'strong_aug'), extra)
    return
  if args.table == 2:
    for dataset, seed in itertools.product(DATASETS, seeds):
      folds = parse_range(args.folds) if args.folds else range(1, NUM_FOLDS[dataset] + 1)
      for (variant, overrides), fold in itertools.product(ABLATION.items(), folds):
        extra = ','.join(e for e in ('strong_augment=True', overrides, args.extra) if e)
        yield run_spec(dataset, 'envnetv2', 'intermix', fold, seed, args.root, extra, variant=variant)
    return
  for dataset, backbone, strategy, seed in itertools.product(
      parse_list(args.datasets), parse_list(args.backbones), parse_list(args.strategies), seeds):
    folds = parse_range(args.folds) if args.folds else range(1, NUM_FOLDS[dataset] + 1)
    for fold in folds:
      yield run_spec(dataset, backbone, strategy, fold, seed, args.root, args.extra)


def finished(workdir):
  path = os.path.join(workdir, 'results.json')
  if not os.path.exists(path):
    return False
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
  p.add_argument('--table', type=int, choices=(1, 2), help="expand every cell of the paper's table 1 or 2")
  p.add_argument('--run', action='store_true', help='run the commands one after another')
  p.add_argument('--index', type=int, default=None,
                 help='only the command with this 0-based index (e.g. $SLURM_ARRAY_TASK_ID in a job array)')
  args = p.parse_args(argv)
  runs = list(expand(args))
  if args.index is not None:
    if not 0 <= args.index < len(runs):
      p.error(f'--index {args.index} is out of range: the sweep has {len(runs)} commands (0..{len(runs) - 1})')
    runs = [runs[args.index]]
  for cmd, workdir in runs:
    line = shlex.join(cmd)
    if not args.run:
      print(line)
      continue
    if finished(workdir):
      print(f'[sweep] done already: {workdir}', flush=True)
      continue
    print(f'[sweep] {line}', flush=True)
    rc = subprocess.call([sys.executable] + cmd[1:])  # the interpreter running the sweep
    if rc != 0:
      print(f'[sweep] FAILED (exit {rc}): {line}', file=sys.stderr, flush=True)
      return rc
  return 0


if __name__ == '__main__':
  sys.exit(main())
