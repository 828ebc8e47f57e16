"""The report's PNG figures (matplotlib, Agg, imported on first use): each `plot_*` writes into
the directory `out` and returns the paths it wrote (file names: the command's help).
"""
from __future__ import annotations

import os

import numpy as np

from intermix_jax.report.aggregation import (  # pylint: disable=g-multiple-import
    count_text, eps_label, learning_curve, method_order, method_title, paper_adversarial, row_rank,
    strategy_rank,
)
from intermix_jax.report.paper import (  # pylint: disable=g-multiple-import
    BACKBONE_TITLE, DATASET_TITLE,
)


def _safe(name: str) -> str:
  """`name` with characters other than letters, digits and -_.+ as '_'."""
  return ''.join(ch if ch.isalnum() or ch in '-_.+' else '_' for ch in name)


def _plt():
  """matplotlib.pyplot on the Agg backend (files only, no display)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def _save(fig, out: str, *name: str) -> str:
  """Writes `fig` to out/<the `name` parts, each `_safe`, joined by '_'>.png and closes it;
  returns the path."""
  path = os.path.join(out, '_'.join(map(_safe, name)) + '.png')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  _plt().close(fig)
  return path


def curve_label(g: dict) -> str:
  """A learning curve's legend entry: 'intermix (5 runs, 1200 epochs)', '(1 run)' for one."""
  epochs = max((int(r.get('num_epochs') or 0) for r in g['runs']), default=0)
  return f"{method_title(g)} ({count_text(len(g['runs']), 'run')}" + (
      f', {epochs} epochs)' if epochs else ')')


def plot_learning_curves(groups: list[dict], out: str) -> list[str]:
  """One PNG per (dataset, backbone): each method's learning curves (what: the labels below)."""
  from matplotlib.patches import Patch
  written = []
  for (dataset, backbone) in sorted({(g['dataset'], g['backbone']) for g in groups}):
    gs = [x for x in groups if (x['dataset'], x['backbone']) == (dataset, backbone)]
    gs.sort(key=method_order)
    train_key = ('train_loss' if any(learning_curve(g['runs'], 'train_loss') for g in gs)
                 else 'train_error')
    fig, (ax_test, ax_train) = _plt().subplots(1, 2, figsize=(12, 4.5))
    for i, g in enumerate(gs):
      color = f'C{i % 10}'
      for ax, key in ((ax_test, 'test_error'), (ax_train, train_key)):
        c = learning_curve(g['runs'], key)
        if c is None:
          continue
        ax.plot(c['epoch'], c['mean'], '-', color=color,
                marker='o' if len(c['epoch']) < 30 else None, markersize=3, label=curve_label(g))
        ax.fill_between(c['epoch'], c['min'], c['max'], color=color, alpha=0.15, linewidth=0)
    seeds = sorted({s for g in gs for s in g['seeds']})
    over = 'folds' if len(seeds) == 1 else 'folds and seeds'
    for ax, ylabel in ((ax_test, 'test error % (10-crop, evaluated epochs)'),
                       (ax_train, 'train loss (mean over the epoch)' if train_key == 'train_loss'
                        else 'train error % (no train_loss recorded)')):
      ax.set(xlabel="epoch (each run's own schedule; mixing runs 2x the epochs of standard)",
             ylabel=ylabel)
      ax.grid(alpha=0.3)
      handles, _ = ax.get_legend_handles_labels()
      if handles:
        ax.legend(handles=handles + [Patch(color='gray', alpha=0.3,
                                           label=f'shaded: min–max over {over}')], fontsize=7)
    fig.suptitle(f'{DATASET_TITLE.get(dataset, dataset)}, {BACKBONE_TITLE.get(backbone, backbone)}'
                 f': mean over {over} (seed{"s" if len(seeds) > 1 else ""} '
                 f'{",".join(str(s) for s in seeds)})', fontsize=10)
    written.append(_save(fig, out, 'curves', dataset, backbone))
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
  """One PNG per group with per-clip predictions: its runs' `confusion_matrix`."""
  written = []
  for g in groups:
    num_classes = int(g['runs'][0].get('num_classes', 0))
    names = g['runs'][0].get('class_names') or [str(i) for i in range(num_classes)]
    cm = confusion_matrix(g['runs'], num_classes)
    if cm.sum() == 0:
      continue
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.28 * num_classes + 2.5)
    fig, ax = _plt().subplots(figsize=(size, size))
    im = ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
    ax.set(xticks=range(num_classes), yticks=range(num_classes), xlabel='predicted', ylabel='true')
    fs = 7 if num_classes <= 12 else 4
    ax.set_xticklabels(names, rotation=90, fontsize=fs)
    ax.set_yticklabels(names, fontsize=fs)
    for i, j in zip(*np.nonzero(cm)) if num_classes <= 12 else ():
      ax.text(j, i, str(cm[i, j]), ha='center', va='center', fontsize=7,
              color='white' if rates[i, j] > 0.5 else 'black')
    ax.set_title(f"{g['dataset']} {g['backbone']} {method_title(g)}\n{int(cm.sum())} test "
                 f"predictions, error {100 * (1 - np.trace(cm) / cm.sum()):.1f}%", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    written.append(_save(fig, out, 'confusion', g['dataset'], g['backbone'], g['method'],
                         *([g['variant']] if g['variant'] else [])))
  return written


def plot_error_bars(groups: list[dict], out: str) -> list[str]:
  """One PNG per dataset: per (row, method) bars, best epoch and paper (the legend's labels)."""
  written = []
  for dataset in sorted({g['dataset'] for g in groups}):
    gs = [g for g in groups if g['dataset'] == dataset]
    rows = sorted({g['row'] for g in gs}, key=row_rank)
    methods = sorted({method_title(g) for g in gs}, key=lambda m: (strategy_rank(m), m))
    width = 0.8 / max(len(methods), 1)
    fig, ax = _plt().subplots(figsize=(max(6, 1.6 * len(rows) * max(1, len(methods) / 3)), 4.5))
    for j, m in enumerate(methods):
      pts = [(i + (j - (len(methods) - 1) / 2) * width, g) for i, row in enumerate(rows)
             for g in [g for g in gs if g['row'] == row and method_title(g) == m][:1]]
      ax.bar([x for x, _ in pts], [g['mean'] for _, g in pts], width,
             yerr=[g['std'] or 0.0 for _, g in pts], capsize=3, color=f'C{j % 10}', label=m)
      best = [(x, g['best']['mean']) for x, g in pts if g['best'] is not None]
      paper = [(x, g['paper']) for x, g in pts if g['paper'] is not None]
      if best:
        ax.plot(*zip(*best), 'ko', markerfacecolor='none', markersize=6)
      if paper:
        ax.plot(*zip(*paper), 'kx', markersize=7)
    ax.plot([], [], 'ko', markerfacecolor='none', label='best epoch on the test fold (optimistic)')
    ax.plot([], [], 'kx', label='paper (compare with o)')
    ax.set(xticks=range(len(rows)), xticklabels=[BACKBONE_TITLE.get(r, r) for r in rows],
           ylabel='error %: bars last epoch (mean ± std)',
           title=DATASET_TITLE.get(dataset, dataset))
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out, 'errorbars', dataset))
  return written


def plot_adversarial(adversarial: list[dict], out: str) -> list[str]:
  """One PNG per dataset: error (mean ± std) vs FGSM eps per (backbone, method); paper as x."""
  written = []
  for dataset in sorted({a['dataset'] for a in adversarial}):
    gs = [a for a in adversarial if a['dataset'] == dataset]
    eps_values = sorted({e for a in gs for e in a['eps']})
    labels = ['clean'] + [eps_label(e) for e in eps_values]
    fig, ax = _plt().subplots(figsize=(7, 4.5))
    for i, a in enumerate(gs):
      color = f'C{i % 10}'
      pts = [(x, st) for x, st in [(0, a['clean'])] + [
          (j + 1, a['attacked'].get(e)) for j, e in enumerate(eps_values)] if st is not None]
      ax.errorbar([x for x, _ in pts], [st['mean'] for _, st in pts],
                  yerr=[st['std'] or 0.0 for _, st in pts], color=color, marker='o', capsize=3,
                  label=f"{BACKBONE_TITLE.get(a['backbone'], a['backbone'])} {method_title(a)}")
      paper = [(j + 1, paper_adversarial(dataset, a['method'], e))
               for j, e in enumerate(eps_values)]
      if any(v is not None for _, v in paper):
        ax.plot(*zip(*[(x, v) for x, v in paper if v is not None]), 'x--', color=color, alpha=0.7)
    ax.plot([], [], 'kx--', label='paper (table 3)')
    ax.set(xticks=range(len(labels)), xticklabels=labels, xlabel='FGSM eps (normalised waveform)',
           ylabel='10-crop test error % (mean ± std)',
           title=f'{DATASET_TITLE.get(dataset, dataset)}: clean and attacked error')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out, 'adversarial', dataset))
  return written
