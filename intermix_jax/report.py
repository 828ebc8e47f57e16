"""Paper-format tables and plots from finished runs.

    python -m intermix_jax.report DIR... [--out OUT]

Finds every `results.json` under the DIRs (one per run: one fold of one seed), groups the finished
runs by (dataset, backbone, method) and writes to OUT (default: DIR/report for a single DIR, else
./report):
  report.md          the paper's table 1 layout per dataset (error %, rows = backbones, columns =
                     strategies, the paper's value beside each cell), the table 2 ablation when
                     present, a detailed table, and the runs left out (unfinished, incomplete)
  summary.json       the same numbers, machine-readable
  curves_<dataset>_<backbone>.png      learning curves per method (test error, train error)
  confusion_<dataset>_<backbone>_<method>.png   per-class confusion matrix over all its runs
  errorbars_<dataset>.png             error mean +- std per backbone and method, paper values as x

Protocol (SPEC §5): a run's error is its LAST epoch's test-fold error (`final_error`); the
cross-validated error of a seed is the mean over the dataset's folds; the table shows mean +- std
over seeds (sample std, ddof=1) when there are several seeds, else mean +- std over the folds of the
single seed (marked "folds"). A seed missing folds is left out when another seed has them all;
when none has, the group is shown from the folds that ran, marked * (partial cross-validation).
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
from typing import Iterable

import numpy as np

# SPEC §6 (error %, ESC-50 / ESC-10 / US8K).
PAPER_TABLE1 = {
    'm18': {'standard': (31.5, 18.2, 28.8), 'bc': (26.7, 14.2, 26.5),
            'speechmix': (24.3, 12.4, 25.1), 'intermix': (25.4, 12.6, 25.1)},
    'soundnet5': {'standard': (33.8, 16.4, 33.3), 'bc': (27.4, 13.9, 30.2),
                  'speechmix': (25.6, 11.6, 27.4), 'intermix': (25.1, 10.6, 26.5)},
    'envnet': {'standard': (29.2, 12.8, 33.7), 'bc': (24.1, 11.3, 28.9),
               'speechmix': (22.5, 9.3, 26.5), 'intermix': (22.5, 9.1, 26.8)},
    'piczakcnn': {'standard': (27.6, 13.2, 25.3), 'bc': (23.1, 9.4, 23.5),
                  'speechmix': (22.1, 8.4, 22.1), 'intermix': (21.9, 8.3, 21.1)},
    'envnetv2': {'standard': (25.6, 14.2, 30.9), 'bc': (18.2, 10.6, 23.4),
                 'speechmix': (16.2, 8.5, 21.6), 'intermix': (15.8, 8.2, 21.4)},
    'envnetv2+aug': {'standard': (21.2, 10.9, 24.9), 'bc': (15.1, 8.6, 21.7),
                     'speechmix': (13.1, 7.1, 20.8), 'intermix': (12.9, 7.2, 20.5)},
}
# SPEC §3 ablation (paper table 2, EnvNet-v2 + strong augmentation): method label -> values.
PAPER_TABLE2 = {
    'intermix[layers=0,r-weighting]+aug': ('vanilla (input, r-weighting)', (13.6, 7.9, 21.0)),
    'intermix[r-weighting]+aug': ('+ hidden mixing', (13.3, 7.7, 20.8)),
    'intermix+aug': ('+ p-weighting (InterMix)', (12.9, 7.2, 20.5)),
}
DATASET_COLUMN = {'esc50': 0, 'esc10': 1, 'urbansound8k': 2}
DATASET_TITLE = {'esc50': 'ESC-50', 'esc10': 'ESC-10', 'urbansound8k': 'UrbanSound8K',
                 'synthetic': 'synthetic (not real audio)'}
BACKBONE_TITLE = {'m18': 'M18', 'soundnet5': 'SoundNet5', 'envnet': 'EnvNet',
                  'piczakcnn': 'PiczakCNN', 'envnetv2': 'EnvNet-v2',
                  'envnetv2+aug': 'EnvNet-v2 + strong aug'}
STRATEGY_ORDER = ('standard', 'mixup', 'bc', 'speechmix', 'intermix')
BACKBONE_ORDER = ('m18', 'soundnet5', 'envnet', 'piczakcnn', 'envnetv2', 'envnetv2+aug')


def find_results(paths: Iterable[str]) -> list[str]:
  """Every results.json under `paths` (files or directories), sorted."""
  found = set()
  for p in paths:
    if os.path.isfile(p):
      found.add(os.path.abspath(p))
      continue
    if not os.path.isdir(p):
      raise FileNotFoundError(f'report: {p} is neither a results.json nor a directory')
    for root, dirs, files in os.walk(p):
      dirs[:] = [d for d in dirs if d != 'checkpoints']
      if 'results.json' in files:
        found.add(os.path.abspath(os.path.join(root, 'results.json')))
  return sorted(found)


def load_runs(paths: Iterable[str]) -> list[dict]:
  runs = []
  for path in find_results(paths):
    with open(path) as f:
      try:
        r = json.load(f)
      except ValueError as e:
        raise ValueError(f'report: {path} is not valid JSON: {e}') from None
    r['_path'] = path
    runs.append(r)
  return runs


def row_key(run: dict) -> str:
  """Table row of a run: the backbone, '+aug' with strong augmentation."""
  aug = run.get('config', {}).get('strong_augment', False)
  return run['backbone'] + ('+aug' if aug else '')


def base_method(method: str) -> str:
  """'intermix[r-weighting]+aug' -> 'intermix'."""
  return method.split('[')[0].split('+')[0]


def paper_value(dataset: str, backbone: str, method: str) -> float | None:
  """The SPEC §6 / table 2 value for a cell, or None when the paper has none."""
  col = DATASET_COLUMN.get(dataset)
  if col is None:
    return None
  if method in PAPER_TABLE2 and backbone == 'envnetv2':
    return PAPER_TABLE2[method][1][col]
  if '[' in method:  # other option variants: no paper number
    return None
  row = backbone + ('+aug' if method.endswith('+aug') else '')
  values = PAPER_TABLE1.get(row, {}).get(base_method(method))
  return None if values is None else values[col]


def _std(values: list[float]) -> float:
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(runs: list[dict]) -> tuple[list[dict], list[str]]:
  """Groups finished runs; returns (groups, notes about runs left out).

  Each group: dataset, backbone, method, row, seeds {seed: {fold: error}}, cv_errors {seed: mean},
  mean, std, std_over ('seeds' | 'folds'), num_folds, paper, runs (the results dicts).
  """
  notes = []
  by_group = collections.defaultdict(list)
  for r in runs:
    if r.get('status') != 'finished' or r.get('final_error') is None:
      notes.append(f"{r['_path']}: status {r.get('status')!r}, left out")
      continue
    by_group[(r['dataset'], r['backbone'], r['method'])].append(r)
  groups = []
  for (dataset, backbone, method), members in sorted(by_group.items()):
    seeds = collections.defaultdict(dict)
    for r in members:
      fold, seed = int(r['fold']), int(r['seed'])
      if fold in seeds[seed]:
        notes.append(f'{r["_path"]}: second run of {dataset}/{backbone}/{method} seed {seed} '
                     f'fold {fold}; the first one found is used')
        continue
      seeds[seed][fold] = float(r['final_error'])
    expected = max(int(r.get('num_folds') or 0) for r in members) or None
    complete = {s: f for s, f in seeds.items()
                if expected is None or sorted(f) == list(range(1, expected + 1))}
    partial = not complete
    if partial:  # no seed has every fold: report what there is, marked as a partial CV
      complete = dict(seeds)
    else:
      for seed in sorted(set(seeds) - set(complete)):
        missing = sorted(set(range(1, expected + 1)) - set(seeds[seed]))
        notes.append(f'{dataset}/{backbone}/{method} seed {seed}: folds {missing} missing; '
                     f'seed left out of the table')
    cv = {s: float(np.mean(list(f.values()))) for s, f in complete.items()}
    if len(cv) > 1:
      mean, std, over = float(np.mean(list(cv.values()))), _std(list(cv.values())), 'seeds'
    else:
      (only,) = complete.values()
      mean, std, over = float(np.mean(list(only.values()))), _std(list(only.values())), 'folds'
    groups.append(dict(dataset=dataset, backbone=backbone, method=method,
                       row=backbone + ('+aug' if method.endswith('+aug') else ''),
                       seeds={s: dict(sorted(f.items())) for s, f in sorted(complete.items())},
                       cv_errors=cv, mean=mean, std=std, std_over=over, num_folds=expected,
                       partial=partial, paper=paper_value(dataset, backbone, method),
                       runs=[r for r in members if int(r['seed']) in complete]))
  return groups, notes


def _cell(g: dict | None) -> str:
  if g is None:
    return ''
  s = f"{g['mean']:.1f} ± {g['std']:.1f}"
  if g['std_over'] == 'folds':
    s += '†'
  if g['partial']:
    s += '*'
  if g['paper'] is not None:
    s += f" ({g['paper']:.1f})"
  return s


def markdown(groups: list[dict], notes: list[str]) -> str:
  """The report as markdown text."""
  lines = ['# Results', '',
           'Error % (lower is better): mean ± std over seeds of the cross-validated error (mean '
           'over folds of the LAST epoch\'s test-fold error). † = a single seed: ± std over its '
           'folds. * = partial cross-validation (not every fold has run). (x) = the paper\'s value '
           '(SPEC §6).', '']
  datasets = sorted({g['dataset'] for g in groups}, key=lambda d: (d not in DATASET_COLUMN, d))
  for dataset in datasets:
    gs = [g for g in groups if g['dataset'] == dataset and '[' not in g['method']]
    if gs:
      strategies = [s for s in STRATEGY_ORDER if any(base_method(g['method']) == s for g in gs)]
      rows = sorted({g['row'] for g in gs},
                    key=lambda r: BACKBONE_ORDER.index(r) if r in BACKBONE_ORDER else 99)
      lines += [f'## {DATASET_TITLE.get(dataset, dataset)}', '',
                '| model | ' + ' | '.join(strategies) + ' |',
                '|---|' + '---|' * len(strategies)]
      for row in rows:
        cells = []
        for s in strategies:
          match = [g for g in gs if g['row'] == row and base_method(g['method']) == s]
          cells.append(_cell(match[0] if match else None))
        lines.append(f'| {BACKBONE_TITLE.get(row, row)} | ' + ' | '.join(cells) + ' |')
      lines.append('')
    ablation = [g for g in groups if g['dataset'] == dataset and g['method'] in PAPER_TABLE2
                and g['backbone'] == 'envnetv2']
    if ablation:
      lines += [f'### Ablation (table 2), {DATASET_TITLE.get(dataset, dataset)}, EnvNet-v2 + strong aug',
                '', '| variant | error % |', '|---|---|']
      for method, (title, _) in PAPER_TABLE2.items():
        match = [g for g in ablation if g['method'] == method]
        if match:
          lines.append(f'| {title} | {_cell(match[0])} |')
      lines.append('')
  lines += ['## All groups', '',
            '| dataset | backbone | method | seeds | folds | error % | ± std | over | paper | Δ |',
            '|---|---|---|---|---|---|---|---|---|---|']
  for g in groups:
    paper = '' if g['paper'] is None else f"{g['paper']:.1f}"
    delta = '' if g['paper'] is None else f"{g['mean'] - g['paper']:+.1f}"
    folds = sorted({f for s in g['seeds'].values() for f in s})
    lines.append(f"| {g['dataset']} | {g['backbone']} | {g['method']} | "
                 f"{','.join(str(s) for s in sorted(g['seeds']))} | "
                 f"{','.join(str(f) for f in folds)}{'*' if g['partial'] else ''} | {g['mean']:.2f} | {g['std']:.2f} | "
                 f"{g['std_over']} | {paper} | {delta} |")
  lines.append('')
  if notes:
    lines += ['## Left out', ''] + [f'- {n}' for n in notes] + ['']
  return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
  return ''.join(ch if ch.isalnum() or ch in '-_.+' else '_' for ch in name)


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_learning_curves(groups: list[dict], out: str) -> list[str]:
  """One PNG per (dataset, backbone): test error (solid) and train error (dashed) per method."""
  plt = _plt()
  written = []
  for (dataset, backbone) in sorted({(g['dataset'], g['backbone']) for g in groups}):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, g in enumerate(x for x in groups if (x['dataset'], x['backbone']) == (dataset, backbone)):
      color = f'C{i % 10}'
      for key, style, label in (('test_error', '-', 'test'), ('train_error', '--', 'train')):
        per_epoch = collections.defaultdict(list)
        for r in g['runs']:
          for h in r.get('history', []):
            if h.get(key) is not None:
              per_epoch[h['epoch']].append(h[key])
        if per_epoch:
          epochs = sorted(per_epoch)
          ax.plot(epochs, [np.mean(per_epoch[e]) for e in epochs], style, color=color,
                  marker='o' if key == 'test_error' and len(epochs) < 30 else None, markersize=3,
                  label=f"{g['method']} ({label})")
    ax.set_xlabel('epoch')
    ax.set_ylabel('error %')
    ax.set_title(f'{DATASET_TITLE.get(dataset, dataset)}, {BACKBONE_TITLE.get(backbone, backbone)}: '
                 'mean over runs')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = os.path.join(out, f'curves_{_safe(dataset)}_{_safe(backbone)}.png')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
  return written


def confusion_matrix(runs: list[dict], num_classes: int) -> np.ndarray:
  """int64 (C, C) counts, rows = true class, columns = predicted, summed over `runs`."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  for r in runs:
    p = r.get('predictions') or {}
    for t, q in zip(p.get('labels', []), p.get('preds', [])):
      cm[int(t), int(q)] += 1
  return cm


def plot_confusion(groups: list[dict], out: str) -> list[str]:
  plt = _plt()
  written = []
  for g in groups:
    num_classes = int(g['runs'][0].get('num_classes', 0))
    names = g['runs'][0].get('class_names') or [str(i) for i in range(num_classes)]
    cm = confusion_matrix(g['runs'], num_classes)
    if cm.sum() == 0:
      continue
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.28 * num_classes + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
    ax.set_xticks(range(num_classes))
    ax.set_yticks(range(num_classes))
    fs = 7 if num_classes <= 12 else 4
    ax.set_xticklabels(names, rotation=90, fontsize=fs)
    ax.set_yticklabels(names, fontsize=fs)
    if num_classes <= 12:
      for i in range(num_classes):
        for j in range(num_classes):
          if cm[i, j]:
            ax.text(j, i, str(cm[i, j]), ha='center', va='center', fontsize=7,
                    color='white' if rates[i, j] > 0.5 else 'black')
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(f"{g['dataset']} {g['backbone']} {g['method']}\n{int(cm.sum())} test "
                 f"predictions, error {100 * (1 - np.trace(cm) / cm.sum()):.1f}%", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = os.path.join(out, f"confusion_{_safe(g['dataset'])}_{_safe(g['backbone'])}_"
                             f"{_safe(g['method'])}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
  return written


def plot_error_bars(groups: list[dict], out: str) -> list[str]:
  """One PNG per dataset: bars = mean error per (row, method), whiskers = std, x = paper value."""
  plt = _plt()
  written = []
  for dataset in sorted({g['dataset'] for g in groups}):
    gs = [g for g in groups if g['dataset'] == dataset]
    rows = sorted({g['row'] for g in gs},
                  key=lambda r: BACKBONE_ORDER.index(r) if r in BACKBONE_ORDER else 99)
    methods = sorted({g['method'] for g in gs},
                     key=lambda m: (STRATEGY_ORDER.index(base_method(m))
                                    if base_method(m) in STRATEGY_ORDER else 99, m))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows) * max(1, len(methods) / 3)), 4.5))
    for j, m in enumerate(methods):
      xs, ys, es, px, py = [], [], [], [], []
      for i, row in enumerate(rows):
        match = [g for g in gs if g['row'] == row and g['method'] == m]
        if match:
          xs.append(i + (j - (len(methods) - 1) / 2) * width)
          ys.append(match[0]['mean'])
          es.append(match[0]['std'])
          if match[0]['paper'] is not None:
            px.append(xs[-1])
            py.append(match[0]['paper'])
      ax.bar(xs, ys, width, yerr=es, capsize=3, color=f'C{j % 10}', label=m)
      if px:
        ax.plot(px, py, 'kx', markersize=7)
    ax.plot([], [], 'kx', label='paper (SPEC §6)')
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([BACKBONE_TITLE.get(r, r) for r in rows])
    ax.set_ylabel('error % (mean ± std)')
    ax.set_title(DATASET_TITLE.get(dataset, dataset))
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, f'errorbars_{_safe(dataset)}.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
  return written


def write_report(paths: list[str], out: str, plots: bool = True) -> dict:
  """Aggregates the runs under `paths` into `out`; returns {'markdown', 'groups', 'notes', 'files'}."""
  runs = load_runs(paths)
  if not runs:
    raise FileNotFoundError(f'report: no results.json under {", ".join(paths)}')
  groups, notes = aggregate(runs)
  os.makedirs(out, exist_ok=True)
  text = markdown(groups, notes)
  files = [os.path.join(out, 'report.md'), os.path.join(out, 'summary.json')]
  with open(files[0], 'w') as f:
    f.write(text)
  summary = [{k: v for k, v in g.items() if k != 'runs'} for g in groups]
  with open(files[1], 'w') as f:
    json.dump(dict(groups=summary, notes=notes), f, indent=1, sort_keys=True,
              default=lambda o: str(o))
  if plots and groups:
    files += plot_learning_curves(groups, out)
    files += plot_confusion(groups, out)
    files += plot_error_bars(groups, out)
  return dict(markdown=text, groups=groups, notes=notes, files=files)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m intermix_jax.report',
                              description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument('dirs', nargs='+', help='workdirs (or parents of workdirs) holding results.json')
  p.add_argument('--out', default=None, help='output directory (default: DIR/report or ./report)')
  p.add_argument('--no-plots', action='store_true', help='markdown and JSON only')
  args = p.parse_args(argv)
  out = args.out or (os.path.join(args.dirs[0], 'report') if len(args.dirs) == 1
                     and os.path.isdir(args.dirs[0]) else 'report')
  try:
    result = write_report(args.dirs, out, plots=not args.no_plots)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(result['markdown'])
  print(f'wrote {len(result["files"])} files to {out}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
